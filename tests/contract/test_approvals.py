"""Human approvals over the in-process HTTP edge and the service (issue 8), on SQLite and
PostgreSQL: CIBA backchannel + grant, one-shot tokens honoured once by the PDP, dual
control, who may approve, fatigue guards, expiry, the gateway port, the lifecycle hook and
the audit events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from tests.contract.approvals_world import ApprovalWorld, arg_hash, build_world

from tessera.approvals.model import ApprovalStateError
from tessera.approvals.ports import CallToApprove

PUBLISH = {"title": "Q3 plan", "password": "hunter2"}


@pytest.fixture
def w(engine: Engine, tmp_path: Path) -> Iterator[ApprovalWorld]:
    world = build_world(engine, tmp_path)
    yield world
    world.close()


def _codes(body: dict[str, object]) -> list[str]:
    return [r["code"] for r in body["context"]["reasons"]]  # type: ignore[index]


def test_metadata_advertises_ciba(w: ApprovalWorld) -> None:
    md = w.http.get("/.well-known/oauth-authorization-server").json()
    assert md["backchannel_authentication_endpoint"].endswith("/oauth/backchannel")
    assert md["backchannel_token_delivery_modes_supported"] == ["poll", "ping", "push"]
    assert "urn:openid:params:grant-type:ciba" in md["grant_types_supported"]
    assert md["backchannel_user_code_parameter_supported"] is False


def test_pdp_answers_approval_required_for_annotated_and_ruled_actions(w: ApprovalWorld) -> None:
    token = w.session()
    read = w.evaluate(token, "docs/read", "1", {})
    assert "approval_rule" not in _codes(read)  # no relation tuples: denied by ReBAC
    publish = w.evaluate(token, "docs/publish", "7", PUBLISH)
    assert publish["decision"] is False
    assert publish["context"]["approval_required"] is True
    assert _codes(publish) == ["approval_rule"]
    assert "policy:publish-with-approval" in publish["context"]["reasons"][0]["message"]
    transfer = w.evaluate(token, "finance/transfer", "acct-1", {"amount": 5})
    assert transfer["context"]["verdict"] == "approval_required"
    assert "rule:0" in transfer["context"]["reasons"][0]["message"]


def test_full_poll_flow_one_shot_token_works_once(w: ApprovalWorld) -> None:
    token = w.session()
    r = w.backchannel(token, "docs/publish", "7", PUBLISH)
    assert r.status_code == 200, r.text
    ack = r.json()
    assert set(ack) == {"auth_req_id", "expires_in", "interval"}
    assert ack["expires_in"] == 300
    rid = ack["auth_req_id"]
    pending = w.agent.poll(rid)
    assert pending.status_code == 400
    assert pending.json()["error"] == "authorization_pending"
    assert w.agent.poll(rid).json()["error"] == "slow_down"  # polled within the interval
    w.clock.advance(10)
    assert w.agent.poll(rid).json()["error"] == "authorization_pending"
    req = w.t.approvals.get(rid)
    assert req.arguments == {"title": "Q3 plan", "password": "[redacted]"}
    assert req.candidates == (w.users["alice"],)  # the user the agent acts for
    assert req.binding_message.startswith("docs/publish ")
    assert "hunter2" not in req.binding_message
    # Only the approver may decide; the admin may not where a passkey is required.
    with pytest.raises(ApprovalStateError) as exc:
        w.t.approvals.decide(rid, w.users["bob"], "approve", "", method="passkey")
    assert exc.value.code == "not_an_approver"
    with pytest.raises(ApprovalStateError) as exc:
        w.t.approvals.decide(rid, "admin:root", "approve", "", method="admin")
    assert exc.value.code == "passkey_required"
    w.t.approvals.decide(rid, w.users["alice"], "approve", "looks right", method="passkey")
    w.clock.advance(10)
    got = w.agent.poll(rid)
    assert got.status_code == 200, got.text
    one_shot = got.json()
    assert one_shot["token_type"] == "DPoP"
    assert one_shot["expires_in"] <= 300
    (details,) = one_shot["authorization_details"]
    assert details["type"] == "tessera_approved_call"
    assert details["argument_hash"] == arg_hash("docs/publish", PUBLISH)
    # The auth_req_id is spent: polling again is invalid_grant.
    w.clock.advance(10)
    assert w.agent.poll(rid).json()["error"] == "invalid_grant"
    # The PDP honours it once, for exactly this call.
    ctx_token = one_shot["access_token"]
    wrong = w.evaluate(
        token, "docs/publish", "7", {**PUBLISH, "title": "other"}, approval_token=ctx_token
    )
    assert wrong["context"]["verdict"] == "approval_required"
    other_doc = w.evaluate(token, "docs/publish", "8", PUBLISH, approval_token=ctx_token)
    assert other_doc["context"]["verdict"] == "approval_required"
    ok = w.evaluate(token, "docs/publish", "7", PUBLISH, approval_token=ctx_token)
    assert ok["decision"] is True
    assert _codes(ok) == ["approved_call"]
    again = w.evaluate(token, "docs/publish", "7", PUBLISH, approval_token=ctx_token)
    assert again["decision"] is False
    assert again["context"]["verdict"] == "approval_required"
    # A different session of the same agent cannot use someone else's approval.
    assert (
        w.evaluate(w.session(), "docs/publish", "7", PUBLISH, approval_token=ctx_token)["decision"]
        is False
    )
    events = [e.type for e in w.t.store.read_events_after(0, 10_000) if e.subject == rid]
    assert events == ["approval.requested", "approval.approved"]


def test_a_bad_token_never_loosens_a_denial(w: ApprovalWorld) -> None:
    token = w.session()
    rid = w.backchannel(token, "docs/publish", "7", PUBLISH).json()["auth_req_id"]
    w.t.approvals.decide(rid, w.users["alice"], "approve", "", method="passkey")
    one = w.agent.poll(rid).json()["access_token"]
    # docs/read is denied by ReBAC; an approval token for something else changes nothing.
    denied = w.evaluate(token, "docs/read", "7", PUBLISH, approval_token=one)
    assert denied["context"]["verdict"] == "deny"
    garbage = w.evaluate(token, "docs/publish", "7", PUBLISH, approval_token="x.y.z")
    assert garbage["context"]["verdict"] == "approval_required"


def test_denial_and_expiry_give_ciba_errors(w: ApprovalWorld) -> None:
    token = w.session()
    rid = w.backchannel(token, "docs/publish", "7", PUBLISH).json()["auth_req_id"]
    w.t.approvals.decide(rid, w.users["alice"], "deny", "not today", method="passkey")
    assert w.agent.poll(rid).json()["error"] == "access_denied"
    rid2 = w.backchannel(token, "docs/publish", "9", PUBLISH, requested_expiry="60").json()
    assert rid2["expires_in"] == 60
    w.clock.advance(61)
    assert w.agent.poll(rid2["auth_req_id"]).json()["error"] == "expired_token"
    types = [
        e.type for e in w.t.store.read_events_after(0, 10_000) if e.type.startswith("approval")
    ]
    assert types.count("approval.expired") == 1
    assert types.count("approval.denied") == 1
    unknown = w.agent.poll("areq_nope")
    assert unknown.json()["error"] == "invalid_grant"


def test_wrong_dpop_key_or_other_client_cannot_poll(w: ApprovalWorld) -> None:
    from tessera.crypto.keys import generate_signing_key

    token = w.session()
    rid = w.backchannel(token, "docs/publish", "7", PUBLISH).json()["auth_req_id"]
    r = w.agent.poll(rid, dpop=generate_signing_key())
    assert r.json()["error"] == "invalid_dpop_proof"


def test_dual_control_needs_two_distinct_approvers_first_denial_denies(w: ApprovalWorld) -> None:
    token = w.session()
    args = {"amount": 1200, "to": "acme-supplies", "iban": "DE00123"}
    rid = w.backchannel(token, "finance/transfer", "acct-1", args).json()["auth_req_id"]
    req = w.t.approvals.get(rid)
    assert req.required == 2
    assert set(req.candidates) == {w.users["alice"], w.users["bob"]}
    assert req.arguments["iban"] == "[redacted]"
    w.t.approvals.decide(rid, w.users["alice"], "approve", "", method="passkey")
    with pytest.raises(ApprovalStateError):
        w.t.approvals.decide(rid, w.users["alice"], "approve", "", method="passkey")
    w.clock.advance(10)
    assert w.agent.poll(rid).json()["error"] == "authorization_pending"
    w.t.approvals.decide(rid, w.users["bob"], "approve", "", method="passkey")
    w.clock.advance(10)
    assert w.agent.poll(rid).status_code == 200
    rid2 = w.backchannel(token, "finance/transfer", "acct-2", args).json()["auth_req_id"]
    w.t.approvals.decide(rid2, w.users["alice"], "approve", "", method="passkey")
    w.t.approvals.decide(rid2, w.users["bob"], "deny", "no", method="passkey")
    assert w.t.approvals.status(rid2).status == "denied"


def test_login_hint_must_name_an_approver(w: ApprovalWorld) -> None:
    token = w.session()
    bad = w.backchannel(token, "docs/publish", "7", PUBLISH, login_hint="bob")
    assert bad.status_code == 400
    assert bad.json()["error"] == "unknown_user_id"
    good = w.backchannel(token, "docs/publish", "7", PUBLISH, login_hint="alice")
    assert good.status_code == 200
    mismatch = w.backchannel(token, "docs/publish", "8", PUBLISH, binding_message="trust me")
    assert mismatch.json()["error"] == "invalid_binding_message"
    outside = w.backchannel(token, "mail/send", "8", {})
    assert outside.status_code == 403
    assert outside.json()["error"] == "access_denied"


def test_autonomous_agent_is_approved_by_its_owner(w: ApprovalWorld) -> None:
    token = w.session(on_behalf=False)
    rid = w.backchannel(token, "docs/publish", "7", PUBLISH).json()["auth_req_id"]
    assert w.t.approvals.get(rid).candidates == (w.users["alice"],)  # owner


def test_identical_requests_are_grouped_and_repeated_denials_auto_deny(w: ApprovalWorld) -> None:
    token = w.session()
    first = w.backchannel(token, "docs/publish", "7", PUBLISH).json()["auth_req_id"]
    second = w.backchannel(token, "docs/publish", "7", PUBLISH).json()["auth_req_id"]
    assert first == second
    assert w.t.approvals.get(first).repeats == 2
    for i in range(3):
        rid = w.backchannel(token, "docs/publish", f"d{i}", PUBLISH).json()["auth_req_id"]
        w.t.approvals.decide(rid, w.users["alice"], "deny", "", method="passkey")
    auto = w.backchannel(token, "docs/publish", "d9", PUBLISH).json()["auth_req_id"]
    req = w.t.approvals.get(auto)
    assert req.status == "denied"
    assert req.outcome == "auto_denied: repeated denials"
    assert w.agent.poll(auto).json()["error"] == "access_denied"


def test_per_approver_rate_limit(engine: Engine, tmp_path: Path) -> None:
    w = build_world(engine, tmp_path)
    try:
        token = w.session()
        for i in range(20):
            assert w.backchannel(token, "docs/publish", f"r{i}", {"n": i}).json()["auth_req_id"]
        over = w.backchannel(token, "docs/publish", "r99", {"n": 99}).json()["auth_req_id"]
        req = w.t.approvals.get(over)
        assert req.status == "denied"
        assert req.outcome == "auto_denied: approver rate limit"
    finally:
        w.close()


def _call(w: ApprovalWorld, token: str, args: dict[str, object]) -> CallToApprove:
    from tessera.tokens.proofs import read_session_token

    claims, _ = read_session_token(
        token, keys=w.t.keyring.lookup, issuer=w.t.config.issuer, now=w.clock.timestamp()
    )
    return CallToApprove(
        session_id=claims.sid,
        agent_id=claims.client_id,
        user_id=w.users["alice"],
        act_chain=tuple(claims.actors),
        action="docs/publish",
        resource={"type": "document", "id": "7"},
        arguments=args,
        argument_hash=arg_hash("docs/publish", dict(args)),
        dpop_jkt=w.agent.jkt,
        decision_id="dec_x",
        reasons=({"stage": "approval", "code": "approval_rule"},),
        risk=None,
    )


def test_gateway_port_redeems_once_and_then_the_grant_is_invalid(w: ApprovalWorld) -> None:
    token = w.session()
    call = _call(w, token, PUBLISH)
    ticket = w.t.approvals.request_for_call(call, request_id="req-1")
    assert ticket.status == "pending"
    assert ticket.expires_in == 300
    assert w.t.approvals.redeem_for_call(ticket.auth_req_id, call) is False  # not approved yet
    w.t.approvals.decide(ticket.auth_req_id, w.users["alice"], "approve", "", method="passkey")
    assert w.t.approvals.status(ticket.auth_req_id).status == "approved"
    other = _call(w, token, {**PUBLISH, "title": "x"})
    assert w.t.approvals.redeem_for_call(ticket.auth_req_id, other) is False
    assert w.t.approvals.redeem_for_call(ticket.auth_req_id, call) is True
    assert w.t.approvals.redeem_for_call(ticket.auth_req_id, call) is False
    assert w.agent.poll(ticket.auth_req_id).json()["error"] == "invalid_grant"
    with pytest.raises(Exception, match="argument_hash"):
        w.t.approvals.request_for_call(
            CallToApprove(**{**call.__dict__, "argument_hash": "sha256:" + "0" * 64})
        )


@pytest.mark.parametrize("how", ["suspend", "decommission"])
def test_lifecycle_cancels_open_approvals_in_the_same_transaction(
    w: ApprovalWorld, how: str
) -> None:
    token = w.session()
    pending = w.backchannel(token, "docs/publish", "7", PUBLISH).json()["auth_req_id"]
    approved = w.backchannel(token, "docs/publish", "8", PUBLISH).json()["auth_req_id"]
    w.t.approvals.decide(approved, w.users["alice"], "approve", "", method="passkey")
    if how == "suspend":
        written = w.t.identity.suspend_agent("planner", reason="drill", actor="test")
    else:
        written = w.t.identity.decommission_agent("planner", actor="test")
    assert written.consistency_token
    for rid in (pending, approved):
        assert w.t.approvals.status(rid).status == "cancelled"
    events = w.t.store.read_events_after(0, 10_000)
    seqs = {e.subject: e.seq for e in events if e.type == "approval.cancelled"}
    change = next(
        e.seq
        for e in events
        if e.type == f"agent.{how}ed".replace("decommissioned", "decommissioned")
    )
    assert set(seqs) == {pending, approved}
    assert all(s > change for s in seqs.values())


def test_a_replayed_poll_is_refused(w: ApprovalWorld) -> None:
    from tessera.crypto.dpop import create_proof
    from tessera.sdk import client_assertion

    token = w.session()
    rid = w.backchannel(token, "docs/publish", "7", PUBLISH).json()["auth_req_id"]
    now = w.clock.timestamp()
    form = {
        "grant_type": "urn:openid:params:grant-type:ciba",
        "auth_req_id": rid,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": client_assertion(
            w.agent.key, w.agent.client_id, w.t.config.issuer, now=now
        ),
    }
    proof = create_proof(w.agent.dpop, htm="POST", htu=w.t.config.issuer + "/oauth/token", iat=now)
    first = w.http.post("/oauth/token", data=form, headers={"DPoP": proof})
    assert first.json()["error"] == "authorization_pending"
    replay = w.http.post("/oauth/token", data=form, headers={"DPoP": proof})
    assert replay.status_code in (400, 401)
    assert replay.json()["error"] in ("invalid_client", "invalid_dpop_proof")


class _Receiver:
    """A client notification endpoint on loopback (CIBA ping/push), recording requests."""

    def __init__(self) -> None:
        import http.server
        import json as _json
        import threading

        self.hits: list[tuple[str, dict[str, object]]] = []
        self.failing = False
        hits = self.hits
        receiver = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("content-length", "0"))
                hits.append(
                    (self.headers.get("authorization", ""), _json.loads(self.rfile.read(n)))
                )
                self.send_response(503 if receiver.failing else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cb"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.parametrize("mode", ["ping", "push"])
def test_ping_and_push_delivery(engine: Engine, tmp_path: Path, mode: str) -> None:
    w = build_world(engine, tmp_path, TESSERA_OUTBOUND_ALLOW_PRIVATE="1")
    rx = _Receiver()
    try:
        w.t.approval_edges.ciba.set_client(w.agent.client_id, mode, rx.url)
        token = w.session()
        missing = w.backchannel(token, "docs/publish", "7", PUBLISH)
        assert missing.json()["error"] == "invalid_request"  # needs client_notification_token
        ack = w.backchannel(token, "docs/publish", "7", PUBLISH, client_notification_token="cnt-1")
        assert ack.status_code == 200, ack.text
        rid = ack.json()["auth_req_id"]
        assert ("interval" in ack.json()) is (mode == "ping")
        w.t.approvals.decide(rid, w.users["alice"], "approve", "", method="passkey")
        (auth, body), *_ = rx.hits
        assert auth == "Bearer cnt-1"
        assert body["auth_req_id"] == rid
        if mode == "ping":
            assert set(body) == {"auth_req_id"}
            assert w.agent.poll(rid).status_code == 200  # the client then fetches the token
        else:
            assert body["token_type"] == "DPoP"
            assert body["authorization_details"][0]["type"] == "tessera_approved_call"
            assert w.agent.poll(rid).json()["error"] == "invalid_grant"  # no polling in push
            ok = w.evaluate(
                token, "docs/publish", "7", PUBLISH, approval_token=body["access_token"]
            )
            assert ok["decision"] is True
    finally:
        rx.close()
        w.close()


def test_group_webhook_is_notified_of_new_requests(engine: Engine, tmp_path: Path) -> None:
    from tests.contract.approvals_world import BUNDLE

    from tessera.policy.bundle import read_bundle_dir

    w = build_world(engine, tmp_path, TESSERA_OUTBOUND_ALLOW_PRIVATE="1")
    rx = _Receiver()
    try:
        files = read_bundle_dir(BUNDLE)
        files["bundle.yaml"] = files["bundle.yaml"].replace(
            "finance-approvers: {members: [alice, bob]}",
            f"finance-approvers: {{members: [alice, bob], webhook: '{rx.url}'}}",
        )
        w.t.pdp.policies.apply(files, actor="test")
        w.clock.advance(2)  # the active bundle is re-read at most once a second
        token = w.session()
        rid = w.backchannel(token, "finance/transfer", "acct-1", {"amount": 3}).json()[
            "auth_req_id"
        ]
        ((auth, body),) = rx.hits
        assert auth == ""
        assert body["type"] == "approval.requested"
        assert body["auth_req_id"] == rid
        assert body["group"] == "finance-approvers"
        assert "arguments" not in body  # only the (redacted) binding message
        assert body["binding_message"] == w.t.approvals.get(rid).binding_message
        assert body["console"].endswith("/console/approvals")
    finally:
        rx.close()
        w.close()


def test_concurrent_redemptions_succeed_exactly_once(w: ApprovalWorld) -> None:
    from concurrent.futures import ThreadPoolExecutor

    token = w.session()
    call = _call(w, token, PUBLISH)
    ticket = w.t.approvals.request_for_call(call)
    w.t.approvals.decide(ticket.auth_req_id, w.users["alice"], "approve", "", method="passkey")
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda _: w.t.approvals.redeem_for_call(ticket.auth_req_id, call), range(16))
        )
    assert results.count(True) == 1


def test_concurrent_token_use_succeeds_exactly_once(w: ApprovalWorld) -> None:
    from concurrent.futures import ThreadPoolExecutor

    token = w.session()
    rid = w.backchannel(token, "docs/publish", "7", PUBLISH).json()["auth_req_id"]
    w.t.approvals.decide(rid, w.users["alice"], "approve", "", method="passkey")
    one = w.agent.poll(rid).json()["access_token"]
    ciba = w.t.approval_edges.ciba
    claims_sid = w.t.approvals.get(rid).session_id

    def use(_: int) -> bool:
        ok, _why = ciba.redeem_token(
            one,
            sid=claims_sid,
            agent_id=w.agent.client_id,
            jkt=w.agent.jkt,
            action="docs/publish",
            resource={"type": "document", "id": "7"},
            arguments=PUBLISH,
        )
        return ok

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(use, range(16)))
    assert results.count(True) == 1


def test_failed_push_is_retried_with_a_fresh_token(engine: Engine, tmp_path: Path) -> None:
    w = build_world(engine, tmp_path, TESSERA_OUTBOUND_ALLOW_PRIVATE="1")
    rx = _Receiver()
    try:
        w.t.approval_edges.ciba.set_client(w.agent.client_id, "push", rx.url)
        token = w.session()
        ack = w.backchannel(token, "docs/publish", "7", PUBLISH, client_notification_token="c")
        rid = ack.json()["auth_req_id"]
        rx.failing = True
        w.t.approvals.decide(rid, w.users["alice"], "approve", "", method="passkey")
        lost = rx.hits[-1][1]["access_token"]
        delivery = w.t.approval_edges.delivery
        assert delivery.retry_undelivered() == 1  # the client answered 503: not delivered
        rx.failing = False
        assert delivery.retry_undelivered() == 1
        fresh = rx.hits[-1][1]["access_token"]
        assert fresh != lost
        assert delivery.retry_undelivered() == 0  # delivered now
        void = w.evaluate(token, "docs/publish", "7", PUBLISH, approval_token=lost)
        assert void["decision"] is False  # the undelivered token was replaced
        ok = w.evaluate(token, "docs/publish", "7", PUBLISH, approval_token=fresh)
        assert ok["decision"] is True
    finally:
        rx.close()
        w.close()
