"""SSF 1.0 transmitter and receiver over HTTP on SQLite and PostgreSQL: metadata, stream
management with ssf.manage service tokens, poll delivery with acks (RFC 8936), subjects,
verification, status, push delivery with retries (RFC 8935, a real HTTP receiver on
loopback), and the receiver's checks, idempotency and effects."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tests.contract.test_token_service import DETAILS, World, world  # noqa: F401

from tessera.audit.ports import AuditQuery
from tessera.clock import ManualClock, SystemClock
from tessera.crypto.jws import JwksKeys, sign_jwt, verify_jwt
from tessera.crypto.keys import SigningKey, generate_signing_key
from tessera.sdk import client_assertion
from tessera.signals.caep import ACCOUNT_DISABLED, CREDENTIAL_CHANGE, SESSION_REVOKED, VERIFICATION
from tessera.signals.delivery import DeliverySettings, PushWorker
from tessera.signals.model import POLL, PUSH, SsfSettings
from tessera.signals.receiver import SsfReceiver, Transmitter
from tessera.signals.streams import SsfTransmitter
from tessera.store.sql_signals import SqlSignalsStore
from tessera.tokens.peek import unverified_claim

ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OBO = dict(DETAILS, tools=["docs/*"])  # on behalf of alice: within her grants


def _audit(w: World, event_type: str, n: int) -> list[dict[str, Any]]:
    """Audit records of a type once at least ``n`` are chained (generous deadline)."""
    end = time.monotonic() + 20
    records: list[dict[str, Any]] = []
    while time.monotonic() < end:
        records = w.t.audit.query(AuditQuery(event_type=event_type, limit=100))
        if len(records) >= n:
            return records
        time.sleep(0.05)
    raise AssertionError(f"only {len(records)} {event_type} records")


def _service(w: World, name: str, scopes: list[str]) -> tuple[str, str]:
    key = generate_signing_key()
    svc = w.t.identity.register_service(
        name, scopes=scopes, jwk=key.public_jwk(), actor="test"
    ).value.service
    r = w.http.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "scope": " ".join(scopes),
            "client_assertion_type": ASSERTION,
            "client_assertion": client_assertion(key, svc.id, f"{w.t.config.issuer}/oauth/token"),
        },
    )
    assert r.status_code == 200, r.text
    return svc.id, str(r.json()["access_token"])


class Receiver:
    def __init__(self, w: World) -> None:
        self.w = w
        self.id, token = _service(w, "recv-" + secrets.token_hex(3), ["ssf.manage"])
        self.auth = {"Authorization": f"Bearer {token}"}

    def post(self, path: str, body: Any) -> Any:
        return self.w.http.post(path, json=body, headers=self.auth)

    def poll_stream(self, events: list[str]) -> str:
        r = self.post("/ssf/streams", {"delivery": {"method": POLL}, "events_requested": events})
        assert r.status_code == 201, r.text
        return str(r.json()["stream_id"])

    def poll(self, stream_id: str, **body: Any) -> dict[str, Any]:
        body.setdefault("returnImmediately", True)
        r = self.post(f"/ssf/poll/{stream_id}", body)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def recv(world: World) -> Receiver:  # noqa: F811
    world.t.signals.push.stop()  # tests drive delivery rounds themselves
    return Receiver(world)


def _claims(w: World, token: str, aud: str) -> dict[str, Any]:
    return verify_jwt(
        token,
        keys=JwksKeys.from_jwks(w.t.keyring.jwks()),
        algorithms=["ES256"],
        typ="secevent+jwt",
        issuer=w.t.config.issuer,
        audience=aud,
        now=time.time(),
        require=("iat", "jti"),
    ).claims


def test_metadata_advertises_endpoints_and_delivery_methods(world: World) -> None:  # noqa: F811
    md = world.http.get("/.well-known/ssf-configuration").json()
    iss = world.t.config.issuer
    assert md["issuer"] == iss
    assert md["spec_version"] == "1_0"
    assert md["jwks_uri"] == f"{iss}/.well-known/jwks.json"
    assert set(md["delivery_methods_supported"]) == {PUSH, POLL}
    assert md["configuration_endpoint"] == f"{iss}/ssf/streams"
    for name in ("status", "add_subject", "remove_subject", "verification"):
        assert md[f"{name}_endpoint"].startswith(iss)


def test_stream_endpoints_need_an_ssf_manage_service_token(world: World) -> None:  # noqa: F811
    body = {"delivery": {"method": POLL}}
    r = world.http.post("/ssf/streams", json=body)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    _, pdp_token = _service(world, "pep-only", ["pdp.evaluate"])
    r = world.http.post("/ssf/streams", json=body, headers={"Authorization": f"Bearer {pdp_token}"})
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")


def test_stream_create_read_update_replace_delete(recv: Receiver) -> None:
    w = recv.w
    r = recv.post(
        "/ssf/streams",
        {
            "delivery": {"method": POLL},
            "events_requested": [SESSION_REVOKED, "https://example.com/unknown"],
            "description": "first",
        },
    )
    assert r.status_code == 201, r.text
    cfg = r.json()
    sid = cfg["stream_id"]
    assert cfg["aud"] == recv.id
    assert cfg["events_delivered"] == [SESSION_REVOKED]
    assert cfg["delivery"]["endpoint_url"] == f"{w.t.config.issuer}/ssf/poll/{sid}"
    got = w.http.get("/ssf/streams", params={"stream_id": sid}, headers=recv.auth).json()
    assert got == cfg
    listed = w.http.get("/ssf/streams", headers=recv.auth).json()
    assert [s["stream_id"] for s in listed] == [sid]
    patched = w.http.patch(
        "/ssf/streams",
        json={"stream_id": sid, "events_requested": [SESSION_REVOKED, ACCOUNT_DISABLED]},
        headers=recv.auth,
    ).json()
    assert patched["events_delivered"] == [SESSION_REVOKED, ACCOUNT_DISABLED]
    assert patched["description"] == "first"  # PATCH keeps what it does not name
    replaced = w.http.put(
        "/ssf/streams",
        json={"stream_id": sid, "delivery": {"method": POLL}, "events_requested": []},
        headers=recv.auth,
    ).json()
    assert replaced["events_delivered"] == []
    assert "description" not in replaced  # PUT replaces the whole configuration
    # a push URL on a host nobody configured is refused (DESIGN 9), nothing changes
    bad = w.http.put(
        "/ssf/streams",
        json={
            "stream_id": sid,
            "delivery": {"method": PUSH, "endpoint_url": "https://evil.example/ssf"},
        },
        headers=recv.auth,
    )
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_input"
    other = Receiver(w)
    assert (
        w.http.get("/ssf/streams", params={"stream_id": sid}, headers=other.auth).status_code == 404
    )
    r = w.http.delete("/ssf/streams", params={"stream_id": sid}, headers=recv.auth)
    assert r.status_code == 204
    assert (
        w.http.get("/ssf/streams", params={"stream_id": sid}, headers=recv.auth).status_code == 404
    )


def test_malformed_stream_requests_are_400_problems(recv: Receiver) -> None:
    w = recv.w
    for body in (
        [],
        {"delivery": {"method": "smoke-signals"}},
        {"delivery": {"method": POLL}, "events_requested": "all"},
        {"delivery": {"method": PUSH}},
        {"delivery": {"method": POLL, "authorization_header": "Bearer x"}},
    ):
        r = recv.post("/ssf/streams", body)
        assert r.status_code == 400, body
        assert r.headers["content-type"].startswith("application/problem+json")
    r = w.http.post("/ssf/streams", content=b"{nope", headers=recv.auth)
    assert r.status_code == 400


def test_poll_delivery_of_signed_sets_with_acknowledgements(recv: Receiver) -> None:
    w = recv.w
    stream = recv.poll_stream([SESSION_REVOKED, ACCOUNT_DISABLED])
    assert recv.poll(stream) == {"sets": {}, "moreAvailable": False}
    agent = w.t.identity.get_agent("reader").id
    w.t.identity.suspend_agent("reader", "compromised", actor="test")
    w.t.signals.transmitter.pump()
    answer = recv.poll(stream, maxEvents=10)
    assert len(answer["sets"]) == 1
    ((jti, token),) = answer["sets"].items()
    claims = _claims(w, token, recv.id)
    assert claims["jti"] == jti
    assert "sub" not in claims  # SSF 1.0 §4.1
    assert "exp" not in claims
    assert claims["sub_id"] == {"format": "iss_sub", "iss": w.t.config.issuer, "sub": agent}
    event = claims["events"][SESSION_REVOKED]
    assert event["reason_admin"] == {"en": "compromised"}
    assert event["initiating_entity"] == "policy"
    # at-least-once: unacknowledged SETs come again; acknowledged ones never
    assert list(recv.poll(stream)["sets"]) == [jti]
    assert recv.poll(stream, ack=[jti]) == {"sets": {}, "moreAvailable": False}
    # pumping again maps nothing twice
    assert w.t.signals.transmitter.pump() == 0
    # decommissioning: RISC account-disabled
    w.t.identity.decommission_agent("reader", actor="test")
    w.t.signals.transmitter.pump()
    sets = recv.poll(stream)["sets"]
    types = {next(iter(_claims(w, s, recv.id)["events"])) for s in sets.values()}
    assert ACCOUNT_DISABLED in types
    err = {j: {"err": "invalid_request", "description": "test"} for j in sets}
    assert recv.poll(stream, setErrs=err)["sets"] == {}


def test_session_revocation_sets_name_the_session_and_its_agent(recv: Receiver) -> None:
    w = recv.w
    stream = recv.poll_stream([SESSION_REVOKED])
    body = w.root()
    sid = unverified_claim(body["access_token"], "sid")
    assert sid is not None
    w.t.sessions.revoke_session(sid, "done", actor="admin:test")
    w.t.signals.transmitter.pump()
    (token,) = recv.poll(stream)["sets"].values()
    claims = _claims(w, token, recv.id)
    agent = w.t.identity.get_agent("planner").id
    assert claims["sub_id"]["format"] == "complex"
    assert claims["sub_id"]["session"] == {"format": "opaque", "id": sid}
    assert claims["sub_id"]["user"]["sub"] == agent  # autonomous session: the agent
    assert claims["events"][SESSION_REVOKED]["initiating_entity"] == "admin"
    assert claims["txn"].startswith("tessera-event-")


def test_removed_subjects_receive_nothing_until_added_again(recv: Receiver) -> None:
    w = recv.w
    stream = recv.poll_stream([SESSION_REVOKED])
    agent = w.t.identity.get_agent("reader").id
    subject = {"format": "iss_sub", "iss": w.t.config.issuer, "sub": agent}
    r = recv.post("/ssf/subjects:remove", {"stream_id": stream, "subject": subject})
    assert r.status_code == 204
    w.t.identity.suspend_agent("reader", actor="test")
    w.t.signals.transmitter.pump()
    assert recv.poll(stream)["sets"] == {}
    r = recv.post("/ssf/subjects:add", {"stream_id": stream, "subject": subject})
    assert r.status_code == 200
    w.t.identity.resume_agent("reader", actor="test")
    w.t.identity.suspend_agent("reader", actor="test")
    w.t.signals.transmitter.pump()
    assert len(recv.poll(stream)["sets"]) == 1
    bad = recv.post("/ssf/subjects:add", {"stream_id": stream, "subject": {"format": "x"}})
    assert bad.status_code == 400


def test_verification_and_status(recv: Receiver) -> None:
    w = recv.w
    stream = recv.poll_stream([SESSION_REVOKED])
    r = recv.post("/ssf/verify", {"stream_id": stream, "state": "abc123"})
    assert r.status_code == 204
    again = recv.post("/ssf/verify", {"stream_id": stream})
    assert again.status_code == 429  # min_verification_interval
    (token,) = recv.poll(stream)["sets"].values()
    claims = _claims(w, token, recv.id)
    assert claims["events"] == {VERIFICATION: {"state": "abc123"}}
    assert claims["sub_id"] == {"format": "opaque", "id": stream}
    st = w.http.get("/ssf/status", params={"stream_id": stream}, headers=recv.auth).json()
    assert st == {"stream_id": stream, "status": "enabled"}
    r = recv.post("/ssf/status", {"stream_id": stream, "status": "paused", "reason": "maint"})
    assert r.json() == {"stream_id": stream, "status": "paused", "reason": "maint"}
    assert recv.poll(stream)["sets"] == {}  # held while paused
    recv.post("/ssf/status", {"stream_id": stream, "status": "enabled"})
    assert len(recv.poll(stream)["sets"]) == 1  # delivered once enabled again
    assert recv.post("/ssf/status", {"stream_id": stream, "status": "gone"}).status_code == 400


class _Sink(BaseHTTPRequestHandler):
    answers: list[tuple[int, bytes]]
    received: list[tuple[str, bytes]]
    auth: list[str | None]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.received.append((self.headers.get("content-type", ""), body))
        self.auth.append(self.headers.get("authorization"))
        status, answer = self.answers.pop(0) if self.answers else (202, b"")
        self.send_response(status)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[tuple[str, type[_Sink]]]:
    handler = type("Sink", (_Sink,), {"answers": [], "received": [], "auth": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/events", handler
    server.shutdown()


def test_push_delivery_retries_with_backoff_then_delivers(
    recv: Receiver, sink: tuple[str, type[_Sink]]
) -> None:
    w = recv.w
    url, handler = sink
    clock = ManualClock(SystemClock().now())
    store = SqlSignalsStore(w.t.store)
    settings = SsfSettings(w.t.config.issuer, frozenset({"127.0.0.1"}), allow_private=True)
    transmitter = SsfTransmitter(
        store, clock, w.t.keyring.active_key, settings, secret_key=secrets.token_bytes(32)
    )
    worker = PushWorker(transmitter, store, clock, DeliverySettings(max_attempts=3))
    push = {"method": PUSH, "endpoint_url": url, "authorization_header": "Bearer rcv-secret"}
    stream = transmitter.create(recv.id, {"delivery": push, "events_requested": [SESSION_REVOKED]})
    assert "authorization_header" not in stream["delivery"]  # write-only
    with store.read() as tx:
        sealed = tx.signals.get_stream(stream["stream_id"]).auth_sealed
    assert sealed is not None
    assert "rcv-secret" not in sealed  # stored sealed, never in clear
    handler.answers += [(503, b""), (202, b"")]
    w.t.identity.suspend_agent("reader", actor="test")
    assert worker.run_once() == 0  # 503: kept for a retry
    assert worker.run_once() == 0  # not due yet (backoff), nothing sent
    assert len(handler.received) == 1
    clock.advance(2)
    assert worker.run_once() == 1
    assert len(handler.received) == 2
    ctype, body = handler.received[-1]
    assert ctype == "application/secevent+jwt"
    assert handler.received[0][1] == body  # the same SET again (at-least-once)
    assert handler.auth == ["Bearer rcv-secret"] * 2
    assert _claims(w, body.decode(), recv.id)["events"][SESSION_REVOKED]
    # a receiver's 400 with an RFC 8935 error code is final
    handler.answers.append((400, json.dumps({"err": "invalid_audience"}).encode()))
    w.t.identity.resume_agent("reader", actor="test")
    w.t.identity.suspend_agent("reader", actor="test")
    assert worker.run_once() == 0
    clock.advance(3600)
    assert worker.run_once() == 0
    with store.read() as tx:
        counts = tx.signals.delivery_states(stream["stream_id"])
    assert counts == {"delivered": 1, "failed": 1}
    clock.advance(8 * 86400)  # finished deliveries are forgotten after the retention
    worker.run_once()
    with store.read() as tx:
        assert tx.signals.delivery_states(stream["stream_id"]) == {}


# -- receiver ---------------------------------------------------------------------------


class Upstream:
    """An external transmitter (an IdP) with its own key."""

    def __init__(self, w: World, key: SigningKey | None = None) -> None:
        self.w = w
        self.iss = "https://idp.example"
        self.key = key or generate_signing_key()
        self.aud = "tessera-receiver"

    def transmitter(self) -> Transmitter:
        return Transmitter(
            self.iss,
            JwksKeys([self.key.public_jwk()]),
            ("ES256",),
            frozenset({self.aud}),
            frozenset({self.iss}),
        )

    def set(
        self,
        event: str,
        sub_id: dict[str, Any],
        *,
        key: SigningKey | None = None,
        typ: str = "secevent+jwt",
        **over: Any,
    ) -> str:
        claims: dict[str, Any] = {
            "iss": self.iss,
            "aud": self.aud,
            "iat": int(time.time()),
            "jti": secrets.token_hex(8),
            "sub_id": sub_id,
            "events": {event: {"event_timestamp": int(time.time())}},
        }
        claims.update(over)
        claims = {k: v for k, v in claims.items() if v is not None}
        return sign_jwt(claims, key or self.key, typ=typ)


@pytest.fixture
def upstream(world: World) -> Upstream:  # noqa: F811
    up = Upstream(world)
    store = SqlSignalsStore(world.t.store)
    world.t.signals.receiver = SsfReceiver(
        store, world.t.clock, [up.transmitter()], issuer=world.t.config.issuer, audit=world.t.audit
    )
    return up


def _push(w: World, token: str, ctype: str = "application/secevent+jwt") -> Any:
    return w.http.post("/ssf/events", content=token.encode(), headers={"Content-Type": ctype})


def test_a_session_revoked_set_for_a_user_revokes_their_agents_sessions_once(
    upstream: Upstream,
) -> None:
    w = upstream.w
    on_behalf = w.root(details=OBO, subject_token=w.user_token())
    autonomous = w.root()
    alice = w.t.identity.get_user("alice")
    token = upstream.set(
        SESSION_REVOKED, {"format": "iss_sub", "iss": upstream.iss, "sub": "alice"}
    )
    r = _push(w, token)
    assert r.status_code == 202, r.text
    assert w.introspect(on_behalf["access_token"])["active"] is False
    assert w.introspect(autonomous["access_token"])["active"] is True  # not alice's
    head = w.t.store.event_head()
    assert _push(w, token).status_code == 202  # duplicate: acknowledged...
    assert w.t.store.event_head() == head  # ...and not applied twice
    records = _audit(w, "ssf.set_received", 2)
    assert [r["outcome"][:7] for r in records] == ["applied", "duplica"]
    assert alice.id in records[0]["outcome"]


def test_credential_change_for_an_agent_revokes_its_sessions(upstream: Upstream) -> None:
    w = upstream.w
    body = w.root()
    agent = w.t.identity.get_agent("planner").id
    token = upstream.set(
        CREDENTIAL_CHANGE, {"format": "iss_sub", "iss": w.t.config.issuer, "sub": agent}
    )
    assert _push(w, token).status_code == 202
    assert w.introspect(body["access_token"])["active"] is False


def test_spoofed_and_malformed_sets_are_refused_with_rfc8935_codes_and_recorded(
    upstream: Upstream,
) -> None:
    w = upstream.w
    sub = {"format": "iss_sub", "iss": upstream.iss, "sub": "alice"}
    good = upstream.set(SESSION_REVOKED, sub)
    header, payload, sig = good.split(".")
    tampered_sig = sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")
    cases = {
        "invalid_request": [
            (good, "application/json"),
            ("not a jwt", "application/secevent+jwt"),
            (upstream.set(SESSION_REVOKED, sub, typ="JWT"), "application/secevent+jwt"),
            (upstream.set(SESSION_REVOKED, sub, events={}), "application/secevent+jwt"),
            (upstream.set(SESSION_REVOKED, sub, jti=None), "application/secevent+jwt"),
        ],
        "invalid_issuer": [(upstream.set(SESSION_REVOKED, sub, iss="https://evil.example"), None)],
        "invalid_key": [(Upstream(w).set(SESSION_REVOKED, sub), None)],
        "authentication_failed": [(f"{header}.{payload}.{tampered_sig}", None)],
        "invalid_audience": [(upstream.set(SESSION_REVOKED, sub, aud="someone-else"), None)],
    }
    on_behalf = w.root(details=OBO, subject_token=w.user_token())
    n = 0
    for err, items in cases.items():
        for token, ctype in items:
            r = _push(w, token, ctype or "application/secevent+jwt")
            assert r.status_code == 400, (err, r.text)
            assert r.json()["err"] == err, (err, r.json())
            assert set(r.json()) == {"err", "description"}
            n += 1
    assert w.introspect(on_behalf["access_token"])["active"] is True  # nothing applied
    rejected = _audit(w, "ssf.set_rejected", n)
    assert len(rejected) == n
    assert {r["reasons"][0] for r in rejected} == set(cases)
