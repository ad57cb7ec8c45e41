"""The SSF 1.0 transmitter: stream management (§8.1), subjects, verification, and the SET
outbox that turns the event log into addressed, signed SETs (RFC 8417).

A stream belongs to the registered service (the receiver) that created it with a service
token carrying ``ssf.manage``; another service sees 404. ``aud`` of every SET is that
service's id (SSF 1.0 §8.1.1: transmitter-supplied). ``default_subjects`` is ``ALL``:
every event reaches an enabled stream unless its subject was removed with
``remove_subject``; ``add_subject`` undoes a removal.

The outbox: one durable cursor (table ``ssf_cursor``) over the event log, moved by
compare-and-set in the same transaction that inserts the deliveries, so every event is
mapped exactly once across all nodes even when they race, and events written while every
node was down are mapped on restart. Each delivery row is one SET for one stream; push
deliveries are sent by ``signals.delivery``; poll deliveries wait for the receiver's ack
(RFC 8936). Paused streams keep their deliveries until enabled (SSF 1.0 §8.1.2); disabled
streams receive nothing.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Final

from tessera.clock import Clock
from tessera.crypto.jws import sign_jwt
from tessera.crypto.keys import SigningKey, open_secret, seal_secret
from tessera.errors import Conflict, InvalidInput, NotFound, TesseraError
from tessera.outbound import OutboundRefused, check_url
from tessera.signals.caep import (
    EVENTS_SUPPORTED,
    SET_TYP,
    VERIFICATION,
    SetDraft,
    drafts_for,
    opaque,
    set_claims,
    subject_ids,
)
from tessera.signals.model import (
    KEEP,
    POLL,
    PUSH,
    STATUSES,
    DeliveryRow,
    SignalsStore,
    SsfSettings,
    StreamRow,
    auth_header,
    check_subject,
    subject_key,
)

OUTBOX: Final = "outbox"
EVENTS_PER_PUMP: Final = 500
MAX_PUMP_ROUNDS: Final = 20
MAX_STREAMS_PER_SERVICE: Final = 20
MAX_EVENTS_REQUESTED: Final = 50
MIN_VERIFICATION_INTERVAL: Final = 5


class SsfTransmitter:
    """Stream management and the SET outbox over the signals store."""

    def __init__(
        self,
        store: SignalsStore,
        clock: Clock,
        signer: Callable[[], SigningKey],
        settings: SsfSettings,
        *,
        secret_key: bytes | None = None,
    ) -> None:
        self._secret_key = secret_key  # seals push Authorization headers (None: refused)
        self._store = store
        self._clock = clock
        self._signer = signer
        self.settings = settings
        self._arrived = threading.Condition()  # poll requests wait on it (RFC 8936 §2.4)

    # -- metadata (SSF 1.0 §7.1) -------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        iss = self.settings.issuer
        return {
            "spec_version": "1_0",
            "issuer": iss,
            "jwks_uri": f"{iss}/.well-known/jwks.json",
            "delivery_methods_supported": [PUSH, POLL],
            "configuration_endpoint": f"{iss}/ssf/streams",
            "status_endpoint": f"{iss}/ssf/status",
            "add_subject_endpoint": f"{iss}/ssf/subjects:add",
            "remove_subject_endpoint": f"{iss}/ssf/subjects:remove",
            "verification_endpoint": f"{iss}/ssf/verify",
            "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6749"}],
            "default_subjects": "ALL",
        }

    # -- streams (SSF 1.0 §8.1.1) --------------------------------------------------------------

    def _wire(self, row: Any) -> dict[str, Any]:
        cfg = row.config
        delivery: dict[str, Any] = {"method": row.method}
        if row.method == PUSH:
            delivery["endpoint_url"] = row.endpoint_url
        else:
            delivery["endpoint_url"] = f"{self.settings.issuer}/ssf/poll/{row.id}"
        out = {
            "stream_id": row.id,
            "iss": self.settings.issuer,
            "aud": row.service_id,
            "delivery": delivery,
            "events_supported": list(EVENTS_SUPPORTED),
            "events_requested": cfg.get("events_requested", []),
            "events_delivered": cfg.get("events_delivered", []),
            "min_verification_interval": MIN_VERIFICATION_INTERVAL,
        }
        if cfg.get("description"):
            out["description"] = cfg["description"]
        return out

    def _config(
        self, body: Mapping[str, Any], current: Any | None
    ) -> tuple[dict[str, Any], str, str | None, str | None]:
        if not isinstance(body, Mapping):
            raise InvalidInput("the stream configuration must be a JSON object")
        cfg: dict[str, Any] = dict(current.config) if current is not None else {}
        method = current.method if current is not None else PUSH
        endpoint = current.endpoint_url if current is not None else None
        auth: str | None = KEEP
        if "delivery" in body:
            d = body["delivery"]
            if not isinstance(d, Mapping) or d.get("method") not in (PUSH, POLL):
                raise InvalidInput(f"delivery.method must be {PUSH} or {POLL}")
            auth = auth_header(d.get("authorization_header"), self._secret_key is not None)
            method = str(d["method"])
            if method == PUSH:
                url = d.get("endpoint_url")
                if not isinstance(url, str) or not url or len(url) > 2048:
                    raise InvalidInput("push delivery needs delivery.endpoint_url")
                try:
                    check_url(url, self.settings.push_policy)
                except OutboundRefused as exc:
                    raise InvalidInput(
                        "delivery.endpoint_url is not allowed", detail=exc.detail
                    ) from None
                endpoint = url
            else:
                if d.get("authorization_header") is not None:
                    raise InvalidInput("delivery.authorization_header is only for push")
                endpoint, auth = None, None
        elif current is None:
            raise InvalidInput("delivery is required")
        if "events_requested" in body:
            ev = body["events_requested"]
            if (
                not isinstance(ev, list)
                or len(ev) > MAX_EVENTS_REQUESTED
                or not all(isinstance(x, str) and 0 < len(x) <= 256 for x in ev)
            ):
                raise InvalidInput("events_requested must be a list of event type URIs")
            cfg["events_requested"] = list(dict.fromkeys(ev))
        cfg.setdefault("events_requested", [])
        cfg["events_delivered"] = [e for e in EVENTS_SUPPORTED if e in cfg["events_requested"]]
        if "description" in body:
            desc = body["description"]
            if desc is not None and (not isinstance(desc, str) or len(desc) > 256):
                raise InvalidInput("description must be a string of at most 256 characters")
            cfg["description"] = desc
        return cfg, method, endpoint, auth

    def create(self, service_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """SSF 1.0 §8.1.1.1: create a stream; the transmitter assigns ``stream_id``."""
        cfg, method, endpoint, auth = self._config(body, None)
        now = self._clock.now()
        with self._store.write() as tx:
            mine = tx.signals.list_streams(service_id)
            if len(mine) >= MAX_STREAMS_PER_SERVICE:
                raise Conflict(f"a receiver may hold at most {MAX_STREAMS_PER_SERVICE} streams")
            head = tx.events.head()
            if not tx.signals.list_streams():
                # the first stream: the outbox starts here (nothing earlier is delivered)
                cur = tx.signals.cursor(OUTBOX)
                if cur is None:
                    tx.signals.init_cursor(OUTBOX, head)
                elif cur < head:
                    tx.signals.move_cursor(OUTBOX, cur, head)
            stream_id = "ssf_" + secrets.token_hex(10)
            row = StreamRow(
                stream_id,
                service_id,
                cfg,
                method,
                endpoint,
                "enabled",
                None,
                head,
                now,
                now,
                self._seal(stream_id, auth),
            )
            tx.signals.add_stream(row)
        return self._wire(row)

    def _mine(self, tx: Any, service_id: str, stream_id: Any) -> Any:
        if not isinstance(stream_id, str) or not stream_id:
            raise InvalidInput("stream_id is required")
        row = tx.signals.get_stream(stream_id)
        if row is None or row.service_id != service_id:
            raise NotFound("no such stream")
        return row

    def read(self, service_id: str, stream_id: str | None) -> dict[str, Any] | list[dict[str, Any]]:
        """SSF 1.0 §8.1.1.2: one stream, or every stream of this receiver."""
        with self._store.read() as tx:
            if stream_id is None:
                return [self._wire(r) for r in tx.signals.list_streams(service_id)]
            return self._wire(self._mine(tx, service_id, stream_id))

    def update(
        self, service_id: str, body: Mapping[str, Any], *, replace_all: bool
    ) -> dict[str, Any]:
        """SSF 1.0 §8.1.1.3 (PATCH: given members change) and §8.1.1.4 (PUT: replace)."""
        if not isinstance(body, Mapping):
            raise InvalidInput("the stream configuration must be a JSON object")
        with self._store.write() as tx:
            row = self._mine(tx, service_id, body.get("stream_id"))
            if replace_all:
                if "delivery" not in body:
                    raise InvalidInput("a replacement needs delivery")
                base = replace(row, config={})
                cfg, method, endpoint, auth = self._config(body, base)
                if "description" not in body:
                    cfg.pop("description", None)
            else:
                cfg, method, endpoint, auth = self._config(body, row)
            sealed = row.auth_sealed if auth is KEEP else self._seal(row.id, auth)
            row = replace(
                row,
                config=cfg,
                method=method,
                endpoint_url=endpoint,
                auth_sealed=sealed,
                updated_at=self._clock.now(),
            )
            tx.signals.save_stream(row)
        return self._wire(row)

    def delete(self, service_id: str, stream_id: str | None) -> None:
        """SSF 1.0 §8.1.1.5: the stream and its undelivered SETs are gone."""
        with self._store.write() as tx:
            self._mine(tx, service_id, stream_id)
            tx.signals.delete_stream(str(stream_id))

    def list_all(self) -> list[dict[str, Any]]:
        """Every stream with its delivery counts (operators: ``tessera signals streams``)."""
        with self._store.read() as tx:
            return [
                {
                    **self._wire(r),
                    "status": r.status,
                    "deliveries": tx.signals.delivery_states(r.id),
                }
                for r in tx.signals.list_streams()
            ]

    def delete_any(self, stream_id: str) -> None:
        with self._store.write() as tx:
            if not tx.signals.delete_stream(stream_id):
                raise NotFound("no such stream")

    def _seal(self, stream_id: str, auth: str | None) -> str | None:
        if auth is None or auth is KEEP or self._secret_key is None:
            return None
        return seal_secret(auth, self._secret_key, stream_id)

    def authorization(self, item: DeliveryRow) -> str | None:
        """The push ``Authorization`` header of a delivery's stream, if it has one."""
        if item.auth_sealed is None or self._secret_key is None:
            return None
        return open_secret(item.auth_sealed, self._secret_key, item.stream_id)

    # -- status (SSF 1.0 §8.1.2) -----------------------------------------------------------------

    def status(self, service_id: str, stream_id: str | None) -> dict[str, Any]:
        with self._store.read() as tx:
            row = self._mine(tx, service_id, stream_id)
        out: dict[str, Any] = {"stream_id": row.id, "status": row.status}
        if row.status_reason:
            out["reason"] = row.status_reason
        return out

    def set_status(self, service_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise InvalidInput("the status request must be a JSON object")
        status = body.get("status")
        if status not in STATUSES:
            raise InvalidInput("status must be enabled, paused or disabled")
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 256):
            raise InvalidInput("reason must be a string of at most 256 characters")
        with self._store.write() as tx:
            row = self._mine(tx, service_id, body.get("stream_id"))
            row = replace(row, status=status, status_reason=reason, updated_at=self._clock.now())
            tx.signals.save_stream(row)
        self.wake_pollers()
        return self.status(service_id, row.id)

    # -- subjects (SSF 1.0 §8.1.3) -----------------------------------------------------------------

    def set_subject(self, service_id: str, body: Mapping[str, Any], *, included: bool) -> None:
        if not isinstance(body, Mapping):
            raise InvalidInput("the subject request must be a JSON object")
        subject = check_subject(body.get("subject"))
        with self._store.write() as tx:
            row = self._mine(tx, service_id, body.get("stream_id"))
            for part in subject_ids(subject):
                tx.signals.set_subject(row.id, subject_key(part), part, included, self._clock.now())

    # -- verification (SSF 1.0 §8.1.4) -------------------------------------------------------------

    def verify(self, service_id: str, body: Mapping[str, Any]) -> None:
        """Queue a verification SET for the stream (delivered like any other)."""
        if not isinstance(body, Mapping):
            raise InvalidInput("the verification request must be a JSON object")
        state = body.get("state")
        if state is not None and (not isinstance(state, str) or len(state) > 256):
            raise InvalidInput("state must be a string of at most 256 characters")
        now = self._clock.now()
        with self._store.write() as tx:
            row = self._mine(tx, service_id, body.get("stream_id"))
            last = tx.signals.last_delivery_at(row.id, VERIFICATION)
            if last is not None and (now - last).total_seconds() < MIN_VERIFICATION_INTERVAL:
                raise TooManyVerifications(
                    f"at most one verification every {MIN_VERIFICATION_INTERVAL} s"
                )
            event: dict[str, Any] = {} if state is None else {"state": state}
            draft = SetDraft(VERIFICATION, opaque(row.id), event, "verification")
            tx.signals.add_deliveries(
                [self._delivery(row, draft, f"verify:{secrets.token_hex(8)}", 0, now)]
            )
        self.wake_pollers()

    # -- the outbox ------------------------------------------------------------------------------

    def _delivery(self, row: Any, draft: SetDraft, key: str, seq: int, now: Any) -> dict[str, Any]:
        jti = secrets.token_hex(16)
        claims = set_claims(
            draft, issuer=self.settings.issuer, audience=row.service_id, jti=jti, now=now
        )
        return {
            "stream_id": row.id,
            "dedupe": f"{row.id}:{key}"[:96],
            "jti": jti,
            "event_seq": seq,
            "event_type": draft.event_type,
            "set_jwt": sign_jwt(claims, self._signer(), typ=SET_TYP),
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }

    def pump(self) -> int:
        """Map every event after the outbox cursor to deliveries (in rounds of
        ``EVENTS_PER_PUMP`` events); the number of SETs created. Safe on every node at
        once: one node maps a range, the others skip it."""
        with self._store.read() as tx:
            if not tx.signals.list_streams():
                return 0
        created = 0
        for _ in range(MAX_PUMP_ROUNDS):
            made, read = self._pump_once()
            created += made
            if read < EVENTS_PER_PUMP:
                break
        if created:
            self.wake_pollers()
        return created

    def _pump_once(self) -> tuple[int, int]:
        try:
            with self._store.write() as tx:
                if not tx.signals.try_lock_outbox():
                    return 0, 0  # another node is mapping right now
                cur = tx.signals.cursor(OUTBOX)
                if cur is None:
                    tx.signals.init_cursor(OUTBOX, tx.events.head())
                    return 0, 0
                events = tx.events.read_after(cur, EVENTS_PER_PUMP)
                if not events:
                    return 0, 0
                streams = [s for s in tx.signals.list_streams() if s.status != "disabled"]
                excluded = tx.signals.excluded_subjects()
                directory = _TxDirectory(tx)
                now = self._clock.now()
                rows: list[dict[str, Any]] = []
                for e in events:
                    drafts = drafts_for(e, self.settings.issuer, directory) if streams else []
                    for st in streams:
                        if e.seq <= st.created_seq:
                            continue
                        delivered = st.config.get("events_delivered", [])
                        skip = excluded.get(st.id, set())
                        for i, d in enumerate(drafts):
                            if d.event_type not in delivered:
                                continue
                            if skip and any(subject_key(x) in skip for x in subject_ids(d.sub_id)):
                                continue
                            rows.append(self._delivery(st, d, f"{e.seq}:{i}", e.seq, now))
                if not tx.signals.move_cursor(OUTBOX, cur, events[-1].seq):
                    raise _CursorMoved  # another node mapped this range: roll back
                return int(tx.signals.add_deliveries(rows)), len(events)
        except _CursorMoved:
            return 0, 0

    # -- poll delivery (RFC 8936) -----------------------------------------------------------

    def wake_pollers(self) -> None:
        with self._arrived:
            self._arrived.notify_all()

    def poll(
        self, service_id: str, stream_id: str, body: Mapping[str, Any], *, max_wait: float = 10.0
    ) -> dict[str, Any]:
        """RFC 8936 §2.4: acknowledge (``ack``), report errors (``setErrs``), then return up
        to ``maxEvents`` unacknowledged SETs; without ``returnImmediately`` wait (bounded)
        for one to arrive."""
        if not isinstance(body, Mapping):
            raise InvalidInput("the poll request must be a JSON object")
        max_events = body.get("maxEvents", 100)
        if (
            not isinstance(max_events, int)
            or isinstance(max_events, bool)
            or not 0 <= max_events <= 1000
        ):
            raise InvalidInput("maxEvents must be an integer between 0 and 1000")
        immediate = body.get("returnImmediately", False)
        if not isinstance(immediate, bool):
            raise InvalidInput("returnImmediately must be a boolean")
        acks = body.get("ack", [])
        errs = body.get("setErrs", {})
        if (
            not isinstance(acks, list)
            or not all(isinstance(a, str) for a in acks)
            or len(acks) > 1000
        ):
            raise InvalidInput("ack must be a list of jti strings")
        if not isinstance(errs, Mapping) or len(errs) > 1000:
            raise InvalidInput("setErrs must be an object keyed by jti")
        now = self._clock.now()
        with self._store.write() as tx:
            row = self._mine(tx, service_id, stream_id)
            if row.method != POLL:
                raise InvalidInput("this stream is delivered by push")
            tx.signals.acknowledge(row.id, acks, "acked", now, None)
            for jti, err in errs.items():
                desc = json.dumps(err)[:300] if isinstance(err, Mapping) else "error"
                tx.signals.acknowledge(row.id, [str(jti)], "failed", now, desc)
        deadline = self._clock.timestamp() + max_wait
        while True:
            with self._store.read() as tx:
                row = self._mine(tx, service_id, stream_id)
                sets = (
                    []
                    if row.status != "enabled"
                    else tx.signals.pending_for_poll(row.id, max_events + 1)
                )
            if sets or immediate or max_events == 0 or self._clock.timestamp() >= deadline:
                break
            with self._arrived:
                self._arrived.wait(timeout=min(1.0, max(0.0, deadline - self._clock.timestamp())))
        more = len(sets) > max_events
        return {"sets": dict(sets[:max_events]), "moreAvailable": more}


class TooManyVerifications(TesseraError):
    """SSF 1.0 §8.1.4.2: verification requests faster than ``min_verification_interval``."""

    code = "too_many_requests"
    status = 429
    title = "Too many verification requests"


class _CursorMoved(Exception):
    pass


class _TxDirectory:
    """``caep.Directory`` over the mapping's transaction."""

    def __init__(self, tx: Any) -> None:
        self._tx = tx

    def session_owner(self, sid: str) -> tuple[str, str | None] | None:
        rec = self._tx.sessions.get(sid)
        return None if rec is None else (rec.agent_id, rec.user_id)

    def user_email(self, user_id: str) -> str | None:
        user = self._tx.users.get(user_id)
        return None if user is None else user.email
