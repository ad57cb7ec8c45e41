"""Human approvals (issue 8), in process on SQLite: creating an approval request for a call
(approvers, fatigue guards, request row, ``approval.requested`` event + audit outbox, one
transaction) and CIBA polls through the ASGI app (client assertion, DPoP proof, replay
cache, state read, ``authorization_pending``)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from harness import Row, latency_row, throughput_row, time_each

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.contract.approvals_world import BUNDLE, arg_hash, build_world  # noqa: E402

from tessera.approvals.ports import CallToApprove  # noqa: E402
from tessera.policy.bundle import read_bundle_dir  # noqa: E402
from tessera.store.engine import make_engine, migrate  # noqa: E402
from tessera.tokens.proofs import read_session_token  # noqa: E402


def run(quick: bool) -> list[Row]:
    n = 200 if quick else 1000
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        migrate(engine)
        w = build_world(engine, Path(tmp))
        files = read_bundle_dir(BUNDLE)
        files["bundle.yaml"] = files["bundle.yaml"].replace(
            "max_per_approver: 20", "max_per_approver: 10000"
        )
        w.t.pdp.policies.apply(files, actor="bench")
        w.clock.advance(2)
        token = w.session()
        claims, _ = read_session_token(
            token, keys=w.t.keyring.lookup, issuer=w.t.config.issuer, now=w.clock.timestamp()
        )
        counter = iter(range(10**9))

        def create() -> None:
            args = {"title": f"doc {next(counter)}"}
            w.t.approvals.request_for_call(
                CallToApprove(
                    session_id=claims.sid,
                    agent_id=claims.client_id,
                    user_id=w.users["alice"],
                    act_chain=tuple(claims.actors),
                    action="docs/publish",
                    resource={"type": "document", "id": "7"},
                    arguments=args,
                    argument_hash=arg_hash("docs/publish", args),
                    dpop_jkt=w.agent.jkt,
                    decision_id="dec_bench",
                    reasons=({"stage": "approval", "code": "approval_rule"},),
                    risk=None,
                )
            )

        rows = [latency_row("approval request for a call (SQLite)", time_each(create, n))]
        rounds = []
        for _ in range(5):
            token = w.session()  # 80 polls x 3 s would outlive one session
            rid = w.backchannel(token, "docs/publish", "9", {"n": next(counter)}).json()
            rid = rid["auth_req_id"]
            polls = 50 if quick else 80
            t0 = time.perf_counter()
            for _ in range(polls):
                w.clock.advance(3)  # respect the interval: authorization_pending each time
                r = w.agent.poll(rid)
                if r.json().get("error") != "authorization_pending":
                    raise RuntimeError(r.text)
            rounds.append(polls / (time.perf_counter() - t0))
        rows.append(throughput_row("CIBA poll (authorization_pending, in-process ASGI)", rounds))
        w.http.close()
        engine.dispose()
    return rows
