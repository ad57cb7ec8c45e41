"""Policy bundle versions: validate, apply atomically as a new version, serve the active
one to the decision point (DESIGN 6b: one active bundle version at a time).

The decision point reads the active bundle from memory; a node looks for a newer active
version at most once per ``refresh_interval`` seconds, so a bundle applied by the CLI
(another process) reaches a running server within that bound.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tessera.clock import Clock
from tessera.errors import ConfigError, NotFound
from tessera.policy.bundle import PolicyBundle, bundle_digest, load_bundle
from tessera.rebac.dsl import parse_dsl
from tessera.rebac.errors import ModelMismatch as ModelMismatch  # raised here too
from tessera.rebac.jsonmodel import model_digest, model_from_json
from tessera.rebac.service import PinnedModel

POLICY_APPLIED = "policy.applied"


@dataclass(frozen=True)
class StoredBundle:
    version: int
    name: str
    digest: str
    files: Mapping[str, str]
    active: bool
    created_at: datetime
    actor: str

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "digest": self.digest,
            "active": self.active,
            "created_at": self.created_at.isoformat(),
            "actor": self.actor,
            "files": sorted(self.files),
        }


class PolicyRepo(Protocol):
    def add_version(
        self, name: str, digest: str, files: dict[str, str], created_at: datetime, actor: str
    ) -> int: ...

    def activate(self, version: int) -> bool: ...

    def active_version(self) -> int | None: ...

    def get(self, version: int) -> StoredBundle | None: ...

    def list(self, limit: int = 50) -> list[StoredBundle]: ...


class PolicyTx(Protocol):
    @property
    def policy(self) -> PolicyRepo: ...

    @property
    def events(self) -> Any: ...

    @property
    def rebac(self) -> Any: ...  # ``active_model()``: the pinned-model check (decisions.md 85)


class PinnedModelWriter(Protocol):
    """Makes a bundle's pinned model the active ReBAC model inside the bundle's write
    transaction (``RebacService.apply_model_in``)."""

    def apply_model_in(self, tx: Any, source: str, *, actor: str) -> Any: ...


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:19] + "…"


class PolicyStore(Protocol):
    def read(self) -> AbstractContextManager[Any]: ...

    def write(self) -> AbstractContextManager[Any]: ...


@dataclass(frozen=True)
class ActiveBundle:
    bundle: PolicyBundle
    version: int | None


class PolicyService:
    """Bundle versions in the store; implements the decision point's ``BundleSource``."""

    def __init__(
        self,
        store: PolicyStore,
        clock: Clock,
        refresh_interval: float = 1.0,
        *,
        models: PinnedModelWriter | None = None,
    ) -> None:
        self._store = store
        self.models = models  # app.py: the ReBAC service (``apply(with_model=True)``)
        self._clock = clock
        self._interval = refresh_interval
        self._active: ActiveBundle | None = None
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def apply(
        self, files: Mapping[str, str], *, actor: str, with_model: bool = False
    ) -> StoredBundle:
        """Validate every part, then store it as a new active version in one transaction.

        A bundle that pins a ReBAC model (``*.fga``) is refused (``ModelMismatch``) unless
        that model is the active ReBAC model, or ``with_model`` makes it the active one in
        the same transaction (decisions.md 85)."""
        bundle = load_bundle(files)
        if with_model and bundle.rebac_model_text is not None and self.models is None:
            raise ConfigError("this policy service cannot apply ReBAC models")
        now = self._clock.now()
        with self._store.write() as tx:
            version = tx.policy.add_version(
                bundle.name, bundle.digest, dict(bundle.files), now, actor
            )
            payload: dict[str, Any] = {
                "version": version,
                "name": bundle.name,
                "digest": bundle.digest,
            }
            if bundle.rebac_model_digest is not None:
                payload["rebac_model"] = bundle.rebac_model_digest
            # The event comes first: on PostgreSQL it takes the event-log lock, which every
            # model write also takes, so the model read below cannot be overtaken.
            tx.events.append(POLICY_APPLIED, f"policy:{version}", payload, actor)
            self._check_pinned_model(tx, bundle, actor, with_model)
            stored: StoredBundle | None = tx.policy.get(version)
        with self._lock:
            self._active = ActiveBundle(bundle, version)
            self._checked = self._clock.timestamp()
        if stored is None:
            raise NotFound("the applied version vanished")
        return stored

    def _check_pinned_model(
        self, tx: Any, bundle: PolicyBundle, actor: str, with_model: bool
    ) -> None:
        pinned = bundle.rebac_model_digest
        if pinned is None or bundle.rebac_model_text is None:
            return
        self._check_model_text(tx, bundle.rebac_model_text, pinned, actor, with_model)

    def _check_model_text(
        self, tx: Any, text: str, pinned: str, actor: str, with_model: bool
    ) -> None:
        stored = tx.rebac.active_model()
        active = (
            None if stored is None else model_digest(model_from_json(stored.json, validate=False))
        )
        if active == pinned:
            return
        if with_model and self.models is not None:
            self.models.apply_model_in(tx, text, actor=actor)
            return
        raise ModelMismatch(
            f"the bundle pins ReBAC model {_short(pinned)} but the active model is "
            f"{_short(active)}; apply it with --with-model (the model and the bundle in one "
            "transaction) or pin the active model"
        )

    def pinned_model_in(self, tx: Any) -> PinnedModel | None:
        """The ReBAC model the active bundle version pins, read in the caller's transaction
        (``RebacService.apply_model`` refuses another model, decisions.md 89)."""
        version = tx.policy.active_version()
        stored = None if version is None else tx.policy.get(version)
        if stored is None:
            return None
        pinned = _stored_model(stored)
        return None if pinned is None else PinnedModel(stored.version, pinned[1])

    def on_events(self, _tx: Any, events: Sequence[Any]) -> None:
        """Event tailer subscriber: a ``policy.applied`` on any node re-reads the active
        version on the next decision instead of after the refresh interval."""
        if any(e.type == POLICY_APPLIED for e in events):
            self._checked = float("-inf")

    def activate(self, version: int, *, actor: str, with_model: bool = False) -> None:
        """Roll back (or forward) to a stored version. The same rule as ``apply``: a
        version pinning a ReBAC model other than the active one is refused
        (``ModelMismatch``, nothing changes) unless ``with_model`` makes its model the
        active one in the same transaction (decisions.md 85, 96)."""
        with self._store.write() as tx:
            stored = tx.policy.get(version)
            if stored is None or not tx.policy.activate(version):
                raise NotFound(f"no policy version {version}")
            tx.events.append(POLICY_APPLIED, f"policy:{version}", {"version": version}, actor)
            pinned = _stored_model(stored)
            if pinned is not None:
                self._check_model_text(tx, *pinned, actor, with_model)
        self._checked = float("-inf")

    def versions(self, limit: int = 50) -> list[StoredBundle]:
        with self._store.read() as tx:
            return list(tx.policy.list(limit))

    def get(self, version: int) -> StoredBundle:
        with self._store.read() as tx:
            found: StoredBundle | None = tx.policy.get(version)
        if found is None:
            raise NotFound(f"no policy version {version}")
        return found

    def active(self) -> ActiveBundle | None:
        """The active bundle, re-read when another node or the CLI applied a new one."""
        now = self._clock.timestamp()
        if now - self._checked < self._interval:
            return self._active
        with self._lock:
            if now - self._checked < self._interval:
                return self._active
            with self._store.read() as tx:
                version = tx.policy.active_version()
                current = self._active.version if self._active else None
                if version != current:
                    stored = tx.policy.get(version) if version is not None else None
                    self._active = (
                        None
                        if stored is None
                        else ActiveBundle(load_bundle(stored.files), stored.version)
                    )
            self._checked = now
            return self._active


def _stored_model(stored: StoredBundle) -> tuple[str, str] | None:
    """The ReBAC model a stored version pins, as ``(text, digest)``; None without one. Only
    its ``.fga`` file is read: a stored bundle was validated when it was applied."""
    texts = [text for name, text in stored.files.items() if name.endswith(".fga")]
    if len(texts) != 1:
        return None
    return texts[0], model_digest(parse_dsl(texts[0]))


__all__ = ["ActiveBundle", "ModelMismatch", "PolicyService", "StoredBundle", "bundle_digest"]
