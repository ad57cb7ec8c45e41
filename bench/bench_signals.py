"""Signals: revocation propagation across nodes and SET push throughput.

Propagation: three ``tessera serve`` nodes on one PostgreSQL (the multi-node test's
cluster); for each revocation a fresh session is minted through node A, warmed on B and C
(their liveness caches hold "live"), revoked through node A's admin API, and B and C are
polled back to back until they deny *because of the revocation*; the latency runs from the
revoke's acknowledgement to the first such deny, per node. With LISTEN/NOTIFY wake-ups and
with notifications disabled (the 200 ms poll alone). The probe's own round trip (one
AuthZEN evaluation on loopback, ~2-4 ms) is part of every figure.

Push throughput: one node on SQLite maps N ``session.revoked`` events to SETs (CAEP
``session-revoked``), signs them (ES256) and pushes them one by one (RFC 8935) to a
receiver on loopback that answers 202.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from harness import Row, percentile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG_URL = os.environ.get("TESSERA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _propagation(notify: bool, n: int) -> tuple[list[float], list[float], list[float]]:
    """(revoke→deny ms, revoke→tailer applied ms, probe round trip ms)."""
    from sqlalchemy import create_engine, text
    from tests.e2e.cluster import Cluster

    schema = "bench_" + secrets.token_hex(4)
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cluster = Cluster(
                Path(tmp),
                f"{PG_URL}?options=-csearch_path%3D{schema}",
                base_env={"TESSERA_EVENT_NOTIFY": "1" if notify else "0"},
            )
            cluster.start()
            try:
                deny = _rounds(cluster, n)
                applied = _applied(cluster, max(20, n // 2))
                rtt = _probe_rtt(cluster)
                return deny, applied, rtt
            finally:
                cluster.stop()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _rounds(cluster: Any, n: int) -> list[float]:
    _a, b, c = cluster.nodes
    out: list[float] = []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(n):
            token, sid = cluster.session()
            for node in (b, c):
                cluster.wait_for(node, token, "allow")
            cluster.admin_post(f"/sessions/{sid}/revoke")
            t0 = time.perf_counter()
            waits = [pool.submit(_until_revoked, cluster, node, token, t0) for node in (b, c)]
            out += [w.result() for w in waits]
    return out


def _position(cluster: Any, node: Any) -> int:
    r = node.http.get(f"{node.base}/admin/v1/signals/tailer", headers=cluster.admin)
    r.raise_for_status()
    return int(r.json()["seq"])


def _applied(cluster: Any, n: int) -> list[float]:
    """Revoke → the node's tailer has applied the revocation's event (its position reached
    the sequence in the revoke's consistency token)."""
    _a, b, c = cluster.nodes
    out: list[float] = []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(n):
            _token, sid = cluster.session()
            seq = cluster.admin_post(f"/sessions/{sid}/revoke")
            t0 = time.perf_counter()
            if seq is None:
                raise RuntimeError("the revocation returned no consistency token")

            def reached(node: Any, t0: float = t0, seq: int = seq) -> float:
                while _position(cluster, node) < seq:
                    if time.perf_counter() - t0 > 30:
                        raise RuntimeError(f"node {node.name} never applied the revocation")
                return (time.perf_counter() - t0) * 1000

            out += list(pool.map(reached, (b, c)))
    return out


def _probe_rtt(cluster: Any) -> list[float]:
    token, _sid = cluster.session()
    b = cluster.nodes[1]
    out = []
    for _ in range(50):
        t0 = time.perf_counter()
        cluster.ask(b, token)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _until_revoked(cluster: Any, node: Any, token: str, t0: float) -> float:
    deadline = t0 + 30
    while time.perf_counter() < deadline:
        answer = cluster.ask(node, token)
        if answer == "revoked":
            return (time.perf_counter() - t0) * 1000
        if answer not in ("allow",):
            raise RuntimeError(f"node {node.name} answered {answer!r}")
    raise RuntimeError(f"node {node.name} never denied")


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real receiver
    count = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        type(self).count += 1
        self.send_response(202)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def _push_throughput(n: int) -> tuple[float, float]:
    """(SETs per second end to end, mapping+signing SETs per second)."""
    from tessera.app import build, initialise
    from tessera.config import load_config
    from tessera.signals.caep import EVENTS_SUPPORTED
    from tessera.signals.model import PUSH

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/events"
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "TESSERA_DATA_DIR": tmp,
            "TESSERA_KEK": "ee" * 32,
            "TESSERA_SSF_PUSH_HOSTS": "127.0.0.1",
            "TESSERA_OUTBOUND_ALLOW_PRIVATE": "1",
        }
        config = load_config(env)
        initialise(config)
        t = build(config)
        try:
            svc = t.identity.register_service(
                "bench", scopes=["ssf.manage"], api_key=True, actor="b"
            )
            t.signals.transmitter.create(
                svc.value.service.id,
                {
                    "delivery": {"method": PUSH, "endpoint_url": url},
                    "events_requested": list(EVENTS_SUPPORTED),
                },
            )
            with t.store.write() as tx:
                for i in range(n):
                    tx.events.append("session.revoked", f"ses_{i}", {"sessions": [f"ses_{i}"]}, "b")
            t0 = time.perf_counter()
            mapped = 0
            while True:
                made = t.signals.transmitter.pump()
                if not made:
                    break
                mapped += made
            t_map = time.perf_counter() - t0
            t1 = time.perf_counter()
            sent = t.signals.push.run_once()
            t_send = time.perf_counter() - t1
        finally:
            t.close()
            server.shutdown()
    if mapped != n or sent != n or _Sink.count != n:
        raise RuntimeError(f"mapped {mapped}, sent {sent}, received {_Sink.count} of {n}")
    return n / (t_map + t_send), n / t_map


def _postgres() -> bool:
    from sqlalchemy import create_engine, text

    try:
        eng = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
        eng.dispose()
    except Exception:  # no PostgreSQL here: the propagation rows are skipped
        print("bench_signals: PostgreSQL not reachable, propagation skipped", file=sys.stderr)
        return False
    return True


def run(quick: bool) -> list[Row]:
    n = 40 if quick else 200
    rows: list[Row] = []
    for notify in (True, False) if _postgres() else ():
        lat, applied, rtt = _propagation(notify, n)
        label = "notify" if notify else "poll only"
        rows.append(
            Row(
                f"revoke → deny on B, C ({label})",
                "ms",
                percentile(lat, 50),
                percentile(lat, 99),
                len(lat),
                f"{n} revocations x 2 nodes; max {max(lat):.1f} ms",
            )
        )
        rows.append(
            Row(
                f"revoke → tailer applied on B, C ({label})",
                "ms",
                percentile(applied, 50),
                percentile(applied, 99),
                len(applied),
                "position read over HTTP (admin)",
            )
        )
        rows.append(
            Row(
                f"probe: one AuthZEN evaluation ({label} run)",
                "ms",
                percentile(rtt, 50),
                percentile(rtt, 99),
                len(rtt),
                "the deny probe's own round trip",
            )
        )
    m = 300 if quick else 2000
    end_to_end, mapping = _push_throughput(m)
    rows.append(Row("SET push throughput (map, sign, POST, 202)", "SETs/s", end_to_end, None, m))
    rows.append(Row("SET outbox mapping + ES256 signing", "SETs/s", mapping, None, m))
    return rows


if __name__ == "__main__":
    for r in run("--quick" in sys.argv):
        p99 = f"{r.p99:.1f}" if r.p99 is not None else "-"
        print(f"{r.name:<55} median {r.median:9.1f} {r.unit:<7} p99 {p99:>8}  n={r.n}  {r.note}")
