"""The relationship service: models and tuples in the store, queries from memory.

Writes go to the store in one transaction with ONE ``rebac.tuples_written`` event per batch
(the outbox, DESIGN 6); the event's consistency token is the write's acknowledgement.
Queries are answered by a ``RebacEngine`` over a ``MemoryTupleIndex`` that is loaded once
and then kept fresh by the node's event tailer (``tessera.signals.tailer``), which hands it
every batch of events after the index's sequence (DESIGN 5: reads never wait on disk in
the common case):

* a query that carries ``at_least`` (a consistency token) waits until the tailer reached it;
* a query on a node whose tailer could not read the log within ``staleness`` seconds fails
  closed (``RebacStale``, 503 ``stale_state``);
* a node's own writes are visible to its next query (the tailer catches up to them).

Agent subjects: an agent appears in tuples as ``agent:<agent id>`` (the OAuth ``client_id``,
``agt_...``). Decommissioning an agent deletes every tuple whose user is that agent (or a
userset of it) or whose object is that agent, in the identity change's transaction
(``on_lifecycle``).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from tessera.clock import Clock
from tessera.errors import InvalidInput, NotFound, PayloadTooLarge, StoreUnavailable
from tessera.identity.service import Written
from tessera.rebac.dsl import parse_dsl
from tessera.rebac.engine import Limits, ListResult, RebacEngine
from tessera.rebac.errors import ConditionError, InvalidTuple, ModelMismatch
from tessera.rebac.jsonmodel import model_digest, model_from_json, model_to_json
from tessera.rebac.memory import MemoryTupleIndex
from tessera.rebac.model import AuthorizationModel
from tessera.rebac.ports import RelationTuple
from tessera.rebac.render import render_dsl
from tessera.rebac.storage import (
    MAX_OBJECT,
    MAX_RELATION,
    MAX_USER,
    MODEL_APPLIED,
    TUPLES_WRITTEN,
    RebacStore,
    RebacTx,
    StoredModel,
    TupleFilter,
    changes_of,
    check_tuple_fields,
    decode_cursor,
    encode_cursor,
    is_printable,
    record_changes,
)
from tessera.signals.events import Event, decode_consistency_token, encode_consistency_token
from tessera.signals.tailer import EventTailer, StaleState, TailerSettings

AGENT_TYPE = "agent"

MAX_BATCH = 10_000  # tuples per transaction
MAX_MODEL_CHARS = 256 * 1024


class RebacStale(StaleState):
    """The in-memory index could not be brought up to date: fail closed (DESIGN 6)."""

    title = "Relationship state is stale"


class NoModel(NotFound):
    code = "rebac_no_model"
    title = "No authorization model"

    def __init__(self) -> None:
        super().__init__("no authorization model has been applied")


@dataclass(frozen=True)
class TupleChanges:
    written: int
    deleted: int


@dataclass(frozen=True)
class TuplePage:
    tuples: list[RelationTuple]
    next_cursor: str | None


@dataclass(frozen=True)
class CheckResult:
    """A check answer and the log position of the index that gave it."""

    allowed: bool
    consistency_token: str | None


@dataclass(frozen=True)
class ListAnswer:
    result: ListResult
    consistency_token: str | None


def _filter_value(value: str | None, what: str, limit: int) -> str | None:
    if value is None or value == "":
        return None
    if not is_printable(value, limit):
        raise InvalidInput(f"{what} must be at most {limit} printable characters")
    return value


def _model_text(text: str) -> None:
    flat = text.replace("\n", " ").replace("\t", " ").replace("\r", " ")
    if not is_printable(flat, MAX_MODEL_CHARS):
        raise InvalidInput("the model text holds control or unencodable characters")


def _model_id() -> str:
    return "rbm_" + secrets.token_hex(10)


@dataclass(frozen=True)
class PinnedModel:
    """The ReBAC model the active policy bundle pins: its version and ``model_digest``."""

    version: int
    digest: str


class ModelPins(Protocol):
    """Who pins a model (the policy service, app.py): read in the model write's own
    transaction, so a concurrent ``policy apply`` cannot slip between check and write."""

    def pinned_model_in(self, tx: Any) -> PinnedModel | None: ...


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:19] + "…"


class RebacService:
    """Models, tuples and queries (OpenFGA's Write/Read/Check/ListObjects/ListUsers APIs
    over Tessera's store and event log)."""

    def __init__(
        self,
        store: RebacStore,
        clock: Clock,
        *,
        limits: Limits | None = None,
        staleness: float = 1.0,
        tailer: EventTailer | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._limits = limits or Limits()
        # One tailer per node (app.py); a service built alone follows the log inline.
        self._tailer = tailer or EventTailer(
            store, clock, TailerSettings(staleness=staleness, poll_interval=staleness / 5)
        )
        self._index: MemoryTupleIndex | None = None
        self._engine: RebacEngine | None = None
        self._model_id: str | None = None
        self._digest: str | None = None
        self._seq = 0
        self._validator: tuple[str, RebacEngine] | None = None
        self._tailer.subscribe("rebac-index", self.on_events)
        # app.py: the policy service; None (a service built alone) checks no pin
        self.pins: ModelPins | None = None

    # -- models ---------------------------------------------------------------------------

    def apply_model(
        self, source: str | Mapping[str, Any], *, actor: str, force: bool = False
    ) -> Written[StoredModel]:
        """Validate a model (DSL text or OpenFGA JSON) and make it the active one.

        Fails closed (decisions.md 89): when the active policy bundle pins another model,
        the write is refused with ``ModelMismatch`` (409 ``policy_model_mismatch``), since
        every relation-mapped decision would then deny with ``model_mismatch``
        (decisions.md 85). ``force`` writes it anyway."""
        stored, types = self._prepare_model(source)
        with self._store.write() as tx:
            self._write_model(tx, stored, types, actor)
            # After the event append: on PostgreSQL that holds the event-log lock, which
            # ``policy apply`` takes too, so the pin read here is the one we commit against.
            if not force:
                self._refuse_unpinned(tx, stored)
        return Written(stored, tx.consistency_token)

    def pinned_model_mismatch(self, model: StoredModel) -> PinnedModel | None:
        """The active bundle's pin when it is not ``model`` (None: no pin, or the same)."""
        if self.pins is None:
            return None
        with self._store.read() as tx:
            pin = self.pins.pinned_model_in(tx)
        digest = model_digest(model_from_json(model.json, validate=False))
        return None if pin is None or pin.digest == digest else pin

    def _refuse_unpinned(self, tx: Any, stored: StoredModel) -> None:
        pin = None if self.pins is None else self.pins.pinned_model_in(tx)
        if pin is None:
            return
        digest = model_digest(model_from_json(stored.json, validate=False))
        if pin.digest != digest:
            raise ModelMismatch(
                f"the active policy bundle (version {pin.version}) pins ReBAC model "
                f"{_short(pin.digest)}, not this model ({_short(digest)}): every decision on "
                "an action mapped to a relation would deny with model_mismatch. Apply a "
                "bundle pinning this model (tessera policy apply DIR --with-model), or "
                "force the model (--force; HTTP ?force=true)"
            )

    def apply_model_in(self, tx: Any, source: str, *, actor: str) -> StoredModel:
        """Validate a model and make it the active one inside the caller's write
        transaction (``tessera policy apply --with-model``: the bundle and the model it
        pins commit together or not at all, decisions.md 85)."""
        stored, types = self._prepare_model(source)
        self._write_model(tx, stored, types, actor)
        return stored

    def _write_model(self, tx: Any, stored: StoredModel, types: int, actor: str) -> None:
        seq = tx.events.append(MODEL_APPLIED, stored.id, {"id": stored.id, "types": types}, actor)
        tx.rebac.add_model(stored, seq)

    def _prepare_model(self, source: str | Mapping[str, Any]) -> tuple[StoredModel, int]:
        if isinstance(source, str):
            if len(source) > MAX_MODEL_CHARS:
                raise PayloadTooLarge(f"a model is limited to {MAX_MODEL_CHARS} characters")
            _model_text(source)
            model = parse_dsl(source)
            dsl = source
        else:
            model = model_from_json(source)
            dsl = render_dsl(model)
            _model_text(dsl)
        RebacEngine(model, MemoryTupleIndex(), self._clock)  # conditions compile
        return StoredModel(_model_id(), dsl, model_to_json(model), self._clock.now()), len(
            model.types
        )

    def active_model(self) -> StoredModel:
        with self._store.read() as tx:
            model = tx.rebac.active_model()
        if model is None:
            raise NoModel()
        return model

    def active_model_digest(self) -> str | None:
        """``model_digest`` of the model this node's queries use (None: no model), at least
        as fresh as the staleness bound (``RebacStale`` otherwise). The decision point
        compares it with the bundle's pinned model before checking relations."""
        try:
            self._fresh(None)
        except NoModel:
            return None
        return self._digest

    def list_models(self, limit: int = 50) -> list[StoredModel]:
        with self._store.read() as tx:
            return tx.rebac.list_models(limit)

    # -- tuples ---------------------------------------------------------------------------

    def write_tuples(
        self,
        writes: Iterable[RelationTuple] = (),
        deletes: Iterable[RelationTuple] = (),
        *,
        actor: str,
    ) -> Written[TupleChanges]:
        """Write and delete tuples in one transaction, all or nothing (OpenFGA Write).

        Every written tuple must fit the active model (``InvalidTuple`` otherwise); writing
        an existing key replaces its condition and expiry; deleting a missing key is a no-op.
        Deletes are not checked against the model, so tuples a newer model no longer allows
        can still be removed."""
        writes, deletes = list(writes), list(deletes)
        if not writes and not deletes:
            raise InvalidInput("nothing to write or delete")
        if len(writes) + len(deletes) > MAX_BATCH:
            raise PayloadTooLarge(f"a batch is limited to {MAX_BATCH} tuples")
        seen: set[tuple[str, str, str]] = set()
        for t in (*writes, *deletes):
            check_tuple_fields(t)
            if t.key in seen:
                raise InvalidTuple(f"tuple {t.object}#{t.relation}@{t.user} appears twice")
            seen.add(t.key)
        now = self._clock.now()
        with self._store.write() as tx:
            stored = tx.rebac.active_model()
            if stored is None:
                raise NoModel()
            validator = self._validator_for(stored)
            for t in writes:
                validator.validate_tuple(t)
            removed = tx.rebac.delete([t.key for t in deletes]) if deletes else []
            if writes:
                tx.rebac.upsert(writes, now)
            if writes or removed:
                record_changes(tx, "rebac", writes, removed, actor)
        return Written(TupleChanges(len(writes), len(removed)), tx.consistency_token)

    def delete_tuples(
        self, deletes: Iterable[RelationTuple], *, actor: str
    ) -> Written[TupleChanges]:
        return self.write_tuples((), deletes, actor=actor)

    def read_tuples(
        self,
        *,
        object: str | None = None,
        relation: str | None = None,
        user: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> TuplePage:
        """Stored tuples in key order, from the store (OpenFGA Read); ``object`` may be a
        bare ``type:``."""
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000")
        where = TupleFilter(
            _filter_value(object, "object", MAX_OBJECT),
            _filter_value(relation, "relation", MAX_RELATION),
            _filter_value(user, "user", MAX_USER),
        )
        after = decode_cursor(cursor) if cursor else None
        with self._store.read() as tx:
            rows = tx.rebac.read(where, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return TuplePage(rows, encode_cursor(rows[-1].key) if more and rows else None)

    def _validator_for(self, stored: StoredModel) -> RebacEngine:
        cached = self._validator
        if cached is not None and cached[0] == stored.id:
            return cached[1]
        engine = RebacEngine(self._model(stored), MemoryTupleIndex(), self._clock)
        self._validator = (stored.id, engine)
        return engine

    @staticmethod
    def _model(stored: StoredModel) -> AuthorizationModel:
        return model_from_json(stored.json, validate=False)

    # -- lifecycle ------------------------------------------------------------------------

    def on_lifecycle(self, tx: Any, event: str, subject: str, payload: Mapping[str, Any]) -> None:
        """Identity cascade hook, called inside the identity change's transaction: a
        decommissioned agent's tuples are deleted in the same commit."""
        if event != "agent.decommissioned":
            return
        removed = tx.rebac.delete_for_subject(f"{AGENT_TYPE}:{subject}")
        if removed:
            record_changes(tx, subject, [], removed, "system", reason=event)

    # -- queries --------------------------------------------------------------------------

    def check(
        self,
        user: str,
        relation: str,
        object: str,
        *,
        context: Mapping[str, Any] | None = None,
        contextual_tuples: Sequence[RelationTuple] = (),
        at_least: str | None = None,
    ) -> CheckResult:
        """OpenFGA Check over the in-memory index, at least as fresh as ``at_least``."""
        engine, seq = self._fresh(at_least, contextual_tuples)
        try:  # as ``_condition_overflow``, inline: the check is on every decision's path
            allowed = engine.check(
                object, relation, user, context=context, contextual_tuples=contextual_tuples
            )
        except OverflowError:
            raise _overflow() from None
        return CheckResult(allowed, _token(seq))

    def list_objects(
        self,
        user: str,
        relation: str,
        object_type: str,
        *,
        context: Mapping[str, Any] | None = None,
        contextual_tuples: Sequence[RelationTuple] = (),
        max_results: int | None = None,
        at_least: str | None = None,
    ) -> ListAnswer:
        engine, seq = self._fresh(at_least, contextual_tuples)
        with _condition_overflow():
            result = engine.list_objects(
                object_type,
                relation,
                user,
                context=context,
                contextual_tuples=contextual_tuples,
                max_results=max_results,
            )
        return ListAnswer(result, _token(seq))

    def list_users(
        self,
        object: str,
        relation: str,
        user_filters: Sequence[str],
        *,
        context: Mapping[str, Any] | None = None,
        contextual_tuples: Sequence[RelationTuple] = (),
        max_results: int | None = None,
        at_least: str | None = None,
    ) -> ListAnswer:
        engine, seq = self._fresh(at_least, contextual_tuples)
        with _condition_overflow():
            result = engine.list_users(
                object,
                relation,
                user_filters,
                context=context,
                contextual_tuples=contextual_tuples,
                max_results=max_results,
            )
        return ListAnswer(result, _token(seq))

    # -- index freshness ------------------------------------------------------------------

    @property
    def index_seq(self) -> int:
        """The last event sequence applied to the in-memory index."""
        return self._seq

    def refresh(self) -> int:
        """Catch up with the event log now; return the index's sequence."""
        self._fresh(None)
        return self._seq

    def _fresh(
        self, at_least: str | None, contextual: Sequence[RelationTuple] = ()
    ) -> tuple[RebacEngine, int]:
        for t in contextual:
            check_tuple_fields(t)
        want = decode_consistency_token(at_least) if at_least else 0
        try:
            # INVARIANT: never answer from state older than the bound or older than what
            # the caller asked for (the tailer raises StaleState / invalid token).
            self._tailer.ensure_fresh(want)
            if self._index is None:
                with self._tailer.exclusive():
                    if self._index is None:
                        self._load()
        except RebacStale:
            raise
        except (StaleState, StoreUnavailable) as exc:
            raise RebacStale(
                "relationship state could not be refreshed", detail=exc.detail or exc.message
            ) from exc
        engine = self._engine
        if engine is None:
            raise NoModel()
        return engine, self._seq

    def on_events(self, tx: RebacTx, events: Sequence[Event]) -> None:
        """Event tailer subscriber: apply model and tuple changes after the index's sequence."""
        if self._index is None:
            return  # not loaded yet: the load reads a snapshot that includes these
        for e in events:
            if e.seq <= self._seq:
                continue
            self._apply(tx, e)
            self._seq = e.seq

    def _load(self) -> None:
        # Called under the tailer's lock: no batch is dispatched meanwhile, and every event
        # up to the head is in this snapshot; the tailer delivers the later ones.
        with self._store.read() as tx:
            head = tx.events.head()
            stored = tx.rebac.active_model()
            index = MemoryTupleIndex(tx.rebac.scan())
        self._index = index
        self._seq = head
        self._set_model(stored)

    def _set_model(self, stored: StoredModel | None) -> None:
        if stored is None or self._index is None:
            return
        model = self._model(stored)
        self._engine = RebacEngine(model, self._index, self._clock, self._limits)
        self._model_id = stored.id
        self._digest = model_digest(model)

    def _apply(self, tx: RebacTx, e: Event) -> None:
        index = self._index
        if index is None:  # pragma: no cover - _load ran first
            return
        if e.type == MODEL_APPLIED:
            self._set_model(tx.rebac.get_model(e.subject))
        elif e.type == TUPLES_WRITTEN:
            for op, t in changes_of(tx, e):
                if op == "write":
                    index.write((t,))
                else:
                    index.delete((t,))


@contextmanager
def _condition_overflow() -> Iterator[None]:
    # A condition parameter too large for its type (e.g. a duration of 10^12 hours)
    # overflows while being converted; that is bad input, never a server error.
    try:
        yield
    except OverflowError:
        raise _overflow() from None


def _overflow() -> ConditionError:
    return ConditionError(
        "a condition parameter is out of range", code="rebac_condition_parameter_type"
    )


@functools.lru_cache(maxsize=16)
def _token(seq: int) -> str | None:
    """The consistency token of ``seq`` (a pure function of it: the last few are kept,
    since every check at the same index position answers the same token)."""
    return encode_consistency_token(seq) if seq > 0 else None
