"""Posture scan at scale: 100k identities (80k agents, 20k users) with their credentials and
20k live sessions, and 1M audit ledger records in the window; total scan time (aim <= 30 s)
and the cost of each phase and rule. The fixture is built with bulk inserts (driver
executemany; ledger rows carry placeholder hashes: the scan reads, never verifies)."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import Row

from tessera.app import build, initialise
from tessera.clock import ManualClock
from tessera.config import load_config
from tessera.store.engine import make_engine
from tessera.store.fastsql import sqlite_timestamp
from tessera.store.sql_posture import SqlFindingStore

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32
USERS, AGENTS, SESSIONS, RECORDS = 20_000, 80_000, 20_000, 1_000_000
TOOLS = ["docs/read", "docs/search", "mail/send", "web/fetch", "finance/pay", "crm/query"]


def _ts(dt: datetime) -> str:
    return sqlite_timestamp(dt)


def _ceiling(i: int) -> str:
    return json.dumps(
        {
            "tools": TOOLS[: 2 + i % 4],
            "data_scopes": ["doc:*", "ledger:*"] if i % 3 else ["doc:*"],
            "models": [DIGEST],
            "may_delegate_to": [],
            "budgets": {"tool_calls": 50},
            "max_session_lifetime": 900,
            "max_delegation_depth": 2,
            "dpop_required": True,
        }
    )


def _fixture(engine: Any, scale: float) -> tuple[int, int]:
    users, agents = int(USERS * scale), int(AGENTS * scale)
    sessions, records = int(SESSIONS * scale), int(RECORDS * scale)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        old = _ts(NOW - timedelta(days=200))
        cur.execute(
            "INSERT INTO operators VALUES (?,?,?,?,?,?)",
            ("op_bench", "bench", "Bench", "active", old, old),
        )
        cur.execute(
            "INSERT INTO models VALUES (?,?,?,?,?,?,?,?,?)",
            ("mdl_bench", "op_bench", "llm", "1", DIGEST, None, "active", old, old),
        )
        grants = json.dumps({"tools": TOOLS[:4], "data_scopes": ["doc:*"]})
        cur.executemany(
            "INSERT INTO users VALUES (?,?,?,?,?,?,?,?)",
            [
                (
                    f"usr_{i:016d}",
                    f"user{i}",
                    f"User {i}",
                    None,
                    "disabled" if i % 97 == 0 else "active",
                    grants,
                    old,
                    old,
                )
                for i in range(users)
            ],
        )
        expires = _ts(NOW + timedelta(days=100))
        cur.executemany(
            "INSERT INTO agents VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    f"agt_{i:016d}",
                    f"agent{i}",
                    "op_bench",
                    f"usr_{i % users:016d}",
                    "bench",
                    expires,
                    _ceiling(i),
                    i % 11 != 0,
                    "active",
                    None,
                    old,
                    old,
                )
                for i in range(agents)
            ],
        )
        cur.executemany(
            "INSERT INTO credentials (id, owner_kind, owner_id, kind, status, public_jwk, jkt,"
            " spiffe_id, secret_hash, created_at, expires_at, last_used_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    f"cred_{i:016d}",
                    "agent",
                    f"agt_{i:016d}",
                    "legacy_secret" if i % 50 == 0 else "jwk",
                    "active",
                    None if i % 50 == 0 else '{"kty":"EC"}',
                    None if i % 50 == 0 else f"jkt{i}",
                    None,
                    f"h{i}" if i % 50 == 0 else None,
                    old,
                    expires,
                    None,
                )
                for i in range(agents)
            ],
        )
        issued = NOW - timedelta(minutes=5)
        cur.executemany(
            "INSERT INTO sessions (sid, jti, token_hash, agent_id, user_id, operator_id,"
            ' model_id, model_digest, parent_sid, root_sid, depth, audience, "grant", act,'
            " cnf_jkt, issued_at, expires_at, status) VALUES"
            " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    f"ses_{i:016d}",
                    f"jti_{i}",
                    f"th_{i}",
                    f"agt_{(i * 7) % agents:016d}",
                    None,
                    "op_bench",
                    "mdl_bench",
                    DIGEST,
                    None,
                    f"ses_{i:016d}",
                    0,
                    '["gw"]',
                    '{"tools":["docs/read"]}',
                    None,
                    None,
                    _ts(issued),
                    _ts(issued + timedelta(seconds=900 if i % 40 else 7200)),
                    "active",
                )
                for i in range(sessions)
            ],
        )
        batch: list[tuple[Any, ...]] = []
        for i in range(records):
            when = _ts(NOW - timedelta(seconds=(records - i) * 2))
            agent = f"agt_{(i * 13) % agents:016d}"
            kind = i % 20
            if kind < 12:  # pdp.evaluation
                verdict = "allow" if kind < 10 else "deny"
                tool = TOOLS[i % 3]
                body = {
                    "v": 1,
                    "time": when,
                    "event_type": "pdp.evaluation",
                    "actor": {
                        "principal": f"agent:{agent}",
                        "agent": agent,
                        "session": f"ses_{i % sessions:016d}",
                    },
                    "action": tool,
                    "resource": f"document:{i % 5000}",
                    "outcome": verdict,
                    "details": {
                        "caller": "svc_gw",
                        "count": 1,
                        "decisions": [
                            {
                                "agent": agent,
                                "decision_id": f"dec_{i}",
                                "subject": f"agent:{agent}",
                                "action": tool,
                                "resource": f"document:{i % 5000}",
                                "verdict": verdict,
                                "reasons": [] if verdict == "allow" else ["rebac_denied"],
                            }
                        ],
                    },
                }
                row = ("pdp.evaluation", verdict, f"agent:{agent}", agent, body)
            elif kind < 16:
                body = {"v": 1, "event_type": "session.issued", "actor": {"agent": agent}}
                row = ("session.issued", "success", agent, agent, body)
            elif kind < 17:
                cid = f"agt_shadow{i % 300:010d}"
                body = {
                    "v": 1,
                    "event_type": "oauth.client_auth_failed",
                    "details": {
                        "client_id": cid,
                        "method": "private_key_jwt",
                        "reason": "unknown agent",
                    },
                }
                row = ("oauth.client_auth_failed", "failure", f"client:{cid}", None, body)
            elif kind < 18:
                body = {"v": 1, "event_type": "rebac.tuples_written", "resource": "x"}
                row = ("rebac.tuples_written", "success", "admin:tok_1", None, body)
            else:  # records no rule reads
                body = {"v": 1, "event_type": "key.rotated"}
                row = ("key.rotated", "success", "system", None, body)
            etype, outcome, principal, agent_col, b = row
            batch.append(
                (
                    i + 1,
                    when,
                    etype,
                    outcome,
                    principal,
                    agent_col,
                    None,
                    None,
                    None,
                    json.dumps(b, separators=(",", ":")).encode(),
                    "0" * 64,
                )
            )
            if len(batch) >= 50_000:
                _ledger(cur, batch)
                batch = []
        _ledger(cur, batch)
        raw.commit()
    finally:
        raw.close()
    return users + agents + 1, records


def _ledger(cur: Any, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        cur.executemany(
            "INSERT INTO audit_ledger (seq, time, event_type, outcome, principal, agent_id,"
            " session_id, user_id, outbox_id, body, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )


def run(quick: bool) -> list[Row]:
    scale = 0.1 if quick else 1.0
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config({"TESSERA_DATA_DIR": tmp, "TESSERA_KEK": "b" * 64})
        engine = make_engine(f"sqlite:///{Path(tmp) / 'tessera.db'}")
        clock = ManualClock(NOW)
        initialise(config, clock=clock, engine=engine)
        t0 = time.perf_counter()
        identities, records = _fixture(engine, scale)
        built = time.perf_counter() - t0
        app = build(config, clock=clock, engine=engine)
        assert app.posture is not None
        totals: list[float] = []
        cpu: list[float] = []
        phases: dict[str, list[float]] = {}
        findings = 0
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = app.posture.scanner.scan()
            totals.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            findings = len(result.findings)
            for name, sec in result.seconds.items():
                phases.setdefault(name, []).append(sec)
        store = SqlFindingStore(app.store)

        def persist(scan_id: str) -> float:
            t0 = time.perf_counter()
            store.record(
                result.findings,
                scan_id=scan_id,
                started=NOW,
                now=NOW,
                stats=result.stats(),
                actor="bench",
            )
            return time.perf_counter() - t0

        persisted = persist("scan_bench_1")
        again = persist("scan_bench_2")  # the same findings: last_seen updates only
        engine.dispose()
    label = f"{identities // 1000}k identities, {records // 1000}k records"
    rows = [
        Row(
            f"scan ({label})",
            "s",
            statistics.median(totals),
            None,
            repeats,
            f"{findings} findings; aim <= 30 s; fixture built in {built:.0f} s",
        ),
        Row(
            f"scan CPU time ({label})",
            "s",
            statistics.median(cpu),
            None,
            repeats,
            "process CPU: the wall time above includes waiting for a shared CPU",
        ),
        Row("persist findings (all new)", "s", persisted, None, 1, "5000 per transaction"),
        Row("persist findings (unchanged)", "s", again, None, 1, "5000 per transaction"),
    ]
    for name, values in sorted(phases.items(), key=lambda kv: -statistics.median(kv[1])):
        rows.append(Row(f"  {name}", "ms", statistics.median(values) * 1000, None, repeats))
    return rows


if __name__ == "__main__":
    import sys

    for row in run("--quick" in sys.argv):
        print(f"{row.name:<48} {row.median:10.3f} {row.unit:<3} {row.note}")
