"""Audit entries (what a caller records) and their canonical bytes (RFC 8785).

An ``AuditEntry`` is a fact before it joins the chain: event type, the acting identity's four
layers, action, resource, outcome with reasons, policy version, request id and token ``jti``.
The chainer turns it into a *record* by adding ``seq`` and ``prev_hash``; the record's hash
is ``sha256(prev_hash || canonical_json(record))`` (see ``chain.py``).

Never a token or a secret: only a token's ``jti``. ``details`` refuses keys that name
secrets, so a careless caller fails loudly instead of leaking into evidence kept forever.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tessera.audit.encoding import SAFE_INT as _SAFE_INT
from tessera.clock import iso
from tessera.errors import InvalidInput

RECORD_VERSION = 1
MAX_FIELD = 512
MAX_ACT = 32
REDACTED = "[redacted]"
# Keys that name secrets; a record holding any of them is refused (DESIGN section 9).
_SECRET_KEYS = frozenset(
    {
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "subject_token",
        "actor_token",
        "client_secret",
        "secret",
        "password",
        "api_key",
        "private_key",
        "private_jwk",
        "assertion",
        "client_assertion",
        "authorization",
    }
)
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")

# The request id of the HTTP request being served (set by ``tessera.http.audit``); records
# written during the request carry it so an operator can join logs and evidence.
current_request_id: ContextVar[str | None] = ContextVar("tessera_request_id", default=None)


@dataclass(frozen=True)
class ActorLayers:
    """Who acted, layer by layer (DESIGN section 1); every layer is optional."""

    principal: str  # "admin:<token id>", "cli", "agent:<id>", "service:<id>", "system"
    operator: str | None = None
    agent: str | None = None
    model_digest: str | None = None
    session: str | None = None
    user: str | None = None
    act: tuple[str, ...] = ()  # delegation chain, outermost actor first

    def check(self) -> None:
        _short(self.principal, "actor principal")
        for value in (self.operator, self.agent, self.model_digest, self.session, self.user):
            if value is not None:
                _short(value, "actor layer")
        if len(self.act) > MAX_ACT:
            raise InvalidInput(f"audit act chain longer than {MAX_ACT}")
        for value in self.act:
            _short(value, "act chain entry")

    def to_dict(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "operator": self.operator,
            "agent": self.agent,
            "model_digest": self.model_digest,
            "session": self.session,
            "user": self.user,
            "act": list(self.act),
        }


@dataclass(frozen=True)
class AuditEntry:
    """One fact to record. ``time`` is filled from the clock when the entry is written."""

    event_type: str
    actor: ActorLayers
    action: str
    resource: str
    outcome: str  # "success", "failure", "allow", "deny", ...
    reasons: tuple[str, ...] = ()
    policy_version: str | None = None
    request_id: str | None = None
    jti: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def body(self, time: datetime) -> dict[str, Any]:
        """The record without ``seq``, ``prev_hash`` and ``hash`` (validated)."""
        self.check()
        return {
            "v": RECORD_VERSION,
            "time": iso(time),
            "event_type": self.event_type,
            "actor": self.actor.to_dict(),
            "action": self.action,
            "resource": self.resource,
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "policy_version": self.policy_version,
            "request_id": self.request_id
            if self.request_id is not None
            else current_request_id.get(),
            "jti": self.jti,
            "details": dict(self.details),
        }

    def check(self) -> None:
        """Refuse what a record may not hold or could not encode (``InvalidInput``)."""
        self.check_plain()

    def check_plain(self) -> bool:
        """``check``, answering whether ``details`` is *plain* as well: exact JSON types
        only, no float, no secret-named key, so ``json.dumps(sort_keys)`` of it is its
        RFC 8785 text (``encoding._plain``). The common case takes one pass over
        ``details`` (``plain_details``); anything else the full check."""
        if self._plainly_valid():
            if plain_details(self.details):
                return True
            _check_details(self.details, 0)
            return False
        self._check_each()  # raises the precise error
        return False

    def _plainly_valid(self) -> bool:
        """The common case in one pass: every field an exact ``str`` within bounds, and one
        UTF-8 encoding of them all (a lone surrogate anywhere fails it; joining strings
        never pairs surrogates). False sends the entry through ``_check_each``."""
        a = self.actor
        if len(a.act) > MAX_ACT or _EVENT_TYPE.fullmatch(self.event_type) is None:
            return False
        fields = [self.action, self.resource, self.outcome, a.principal, *self.reasons, *a.act]
        for value in (
            self.policy_version,
            self.request_id,
            self.jti,
            a.operator,
            a.agent,
            a.model_digest,
            a.session,
            a.user,
        ):
            if value is not None:
                fields.append(value)
        for value in fields:
            if type(value) is not str or len(value) > MAX_FIELD:
                return False
        try:
            "".join(fields).encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True

    def _check_each(self) -> None:
        if not _EVENT_TYPE.fullmatch(self.event_type):
            raise InvalidInput("audit event_type must be a dotted lower-case name")
        for name in ("action", "resource", "outcome"):
            _short(getattr(self, name), name)
        for value in (self.policy_version, self.request_id, self.jti):
            if value is not None:
                _short(value, "audit field")
        for reason in self.reasons:
            _short(reason, "reason")
        self.actor.check()
        # Everything that could make the record impossible to encode is refused here, in
        # the caller, so one bad entry can never fail a whole group or block the chainer.
        _check_details(self.details, 0)


# Event payloads may carry the acting identity's layers under this key (see entry_from_event).
ACTOR_LAYERS_KEY = "actor_layers"


def entry_from_event(
    event_type: str, subject: str, payload: Mapping[str, Any], actor: str
) -> AuditEntry:
    """The audit entry for an event-log append: every state change becomes evidence.

    Event payloads come from Tessera's own code and must never make a change fail, so a
    value under a secret-named key is replaced by ``"[redacted]"`` and a number JSON cannot
    carry exactly becomes a string (entries built by callers are refused instead)."""
    layers = payload.get(ACTOR_LAYERS_KEY)
    actor_layers = ActorLayers(principal=actor)
    if isinstance(layers, Mapping):
        # A writer that knows the acting identity's layers (the token service) passes them
        # under this key; anything malformed is simply not used.
        def text(name: str) -> str | None:
            value = layers.get(name)
            return value if isinstance(value, str) and len(value) <= MAX_FIELD else None

        act = layers.get("act")
        actor_layers = ActorLayers(
            principal=actor,
            operator=text("operator"),
            agent=text("agent"),
            model_digest=text("model_digest"),
            session=text("session"),
            user=text("user"),
            act=tuple(a for a in act if isinstance(a, str))[:MAX_ACT]
            if isinstance(act, list | tuple)
            else (),
        )
    jti = payload.get("jti")
    return AuditEntry(
        event_type=event_type,
        actor=actor_layers,
        action=event_type,
        resource=subject,
        outcome="success",
        jti=jti if isinstance(jti, str) and len(jti) <= MAX_FIELD else None,
        details=_redacted({k: v for k, v in payload.items() if k != ACTOR_LAYERS_KEY}, 0),  # type: ignore[arg-type]
    )


def _redacted(value: object, depth: int) -> object:
    if depth > 8:
        return "[too deep]"
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if str(k).lower() in _SECRET_KEYS else _redacted(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redacted(v, depth + 1) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and -_SAFE_INT <= value <= _SAFE_INT:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    return str(value)


def _short(value: object, name: str) -> None:
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        raise InvalidInput(f"audit {name} must be a string of at most {MAX_FIELD} characters")
    _encodable(value)


def _encodable(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate is not JSON text
        raise InvalidInput("audit strings must be valid Unicode text") from exc


def plain_details(details: object) -> bool:
    """True only when ``_check_details(details, 0)`` accepts ``details`` *and* it is plain
    (``encoding._plain``): exact ``dict`` with ASCII ``str`` keys, ``list``, ``tuple``,
    ``str``, ``bool``, ``None``, ``int`` within ±(2^53 - 1), nested at most as deep as
    ``_check_details`` allows, no key naming a secret (even redacted), and every key and
    string valid Unicode (one UTF-8 encode of them all, as ``_plainly_valid``). False
    says nothing: the caller runs the full check. A property test checks the implication
    on arbitrary values."""
    if type(details) is not dict:
        return False
    if not details:
        return True
    texts: list[str] = []
    if not _plain_walk(details, 0, texts):
        return False
    try:
        "".join(texts).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain_walk(value: object, depth: int, texts: list[str]) -> bool:
    # Mirrors _check_details' depth rule: a value at depth > 8 is refused there.
    if depth > 8:
        return False
    kind = type(value)
    if kind is str:
        texts.append(value)  # type: ignore[arg-type]
        return True
    if (kind is dict or kind is list or kind is tuple) and depth >= 8 and value:
        return False  # its members would sit deeper than _check_details allows
    if kind is dict:
        secret = _SECRET_KEYS
        for key, inner in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or not key.isascii() or key.lower() in secret:
                return False
            texts.append(key)
            if type(inner) is str:
                texts.append(inner)
            elif not _plain_walk(inner, depth + 1, texts):
                return False
        return True
    if kind is list or kind is tuple:
        for inner in value:  # type: ignore[attr-defined]
            if type(inner) is str:
                texts.append(inner)
            elif not _plain_walk(inner, depth + 1, texts):
                return False
        return True
    if kind is int:
        return -_SAFE_INT <= value <= _SAFE_INT  # type: ignore[operator]
    return kind is bool or value is None


def _check_details(value: object, depth: int) -> None:
    if depth > 8:
        raise InvalidInput("audit details nest too deeply")
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if not isinstance(key, str):
                raise InvalidInput("audit details keys must be strings")
            if key.lower() in _SECRET_KEYS and inner != REDACTED:
                raise InvalidInput(f"audit details may not hold {key!r}: never a secret")
            _encodable(key)
            _check_details(inner, depth + 1)
    elif isinstance(value, list | tuple):
        for inner in value:
            _check_details(inner, depth + 1)
    elif isinstance(value, str):
        _encodable(value)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -_SAFE_INT <= value <= _SAFE_INT:
            raise InvalidInput("audit details: integers must be within ±(2^53 - 1)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput("audit details: numbers must be finite")
    else:
        raise InvalidInput("audit details must be JSON values")
