"""A/B of the AuthZEN HTTP path between source trees: the same fixture (data directory,
bundle, session) served in turn by each tree's code (``PYTHONPATH=<tree>/src``),
alternating for several rounds; per run the throughput, latencies and the server's CPU per
decision (utime + stime of all its threads, from ``/proc/<pid>/stat``).

    .venv/bin/python bench/ab_pdp_http.py A=/tmp/base B=. --rounds 3 --n 3000 --batches 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pdp import DOCUMENTS, PdpFixture, _fire, _serve, make_bundle
from harness import percentile, process_cpu


def _cpu(pid: int) -> float:
    cpu = process_cpu(pid)
    if cpu is None:
        raise SystemExit("server CPU time needs /proc (Linux)")
    return cpu


def _serve_tree(fx: PdpFixture, tree: Path) -> subprocess.Popen[bytes]:
    extra = os.environ.get("AB_PYTHONPATH_EXTRA")  # e.g. a sitecustomize that profiles
    path = f"{extra}:{tree / 'src'}" if extra else str(tree / "src")
    return _serve(fx, {**fx.env, "PYTHONPATH": path})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs="+", help="LABEL=PATH")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--only", choices=("e", "b"), help="single evaluations or batches only")
    args = ap.parse_args()
    trees = [(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve()) for t in args.trees]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results: dict[str, dict[str, list[tuple[float, float, float, float]]]] = {
        label: {"e": [], "b": []} for label, _ in trees
    }
    with tempfile.TemporaryDirectory() as tmp:
        fx = PdpFixture(Path(tmp) / "data", port, make_bundle(Path(tmp) / "b100", 100))
        token: str | None = None
        for _ in range(args.rounds):
            for label, tree in trees:
                proc = _serve_tree(fx, tree)
                try:
                    token = token or fx.session_token()
                    auth = fx.service_token()
                    singles = [fx.request(token, f"doc-{i % DOCUMENTS}") for i in range(args.n)]
                    batch = fx.batch(token)
                    url = f"{fx.base}/access/v1/"
                    asyncio.run(_fire(url + "evaluation", singles[:200], auth))
                    asyncio.run(_fire(url + "evaluations", [batch] * 4, auth, expect=DOCUMENTS))
                    for key, bodies, per in (
                        ("e", singles, 1),
                        ("b", [batch] * args.batches, DOCUMENTS),
                    ):
                        if args.only and key != args.only:
                            continue
                        c0 = _cpu(proc.pid)
                        lat, rate, errors = asyncio.run(
                            _fire(
                                url + ("evaluation" if key == "e" else "evaluations"),
                                bodies,
                                auth,
                                expect=per,
                            )
                        )
                        cpu = (_cpu(proc.pid) - c0) / (len(bodies) * per) * 1e6
                        if errors:
                            print(f"{label} {key}: {errors} errors", file=sys.stderr)
                        results[label][key].append(
                            (
                                rate * per,
                                statistics.median(lat) / 1000,
                                percentile(lat, 99) / 1000,
                                cpu,
                            )
                        )
                finally:
                    if os.environ.get("AB_PYTHONPATH_EXTRA"):
                        os.kill(proc.pid, signal.SIGUSR1)  # the profiling hook's dump
                        time.sleep(3)
                    proc.terminate()
                    proc.wait(timeout=20)
    print(f"load average {os.getloadavg()}")
    for key, what in (("e", "single evaluation"), ("b", "batch of 100")):
        for label, _ in trees:
            runs = results[label][key]
            if not runs:
                continue
            rates = ", ".join(f"{r[0]:,.0f}" for r in runs)
            cpus = ", ".join(f"{r[3]:,.0f}" for r in runs)
            print(
                f"{what:18} {label}: decisions/s [{rates}] median "
                f"{statistics.median(r[0] for r in runs):,.0f}; p50 "
                f"{statistics.median(r[1] for r in runs):.1f} ms, p99 "
                f"{statistics.median(r[2] for r in runs):.1f} ms; CPU µs/decision [{cpus}]"
            )


if __name__ == "__main__":
    main()
