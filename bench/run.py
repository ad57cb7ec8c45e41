"""Run every bench/bench_*.py module and print a table of medians and p99s."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Row  # noqa: E402


def machine_line() -> str:
    """How fast this machine runs plain Python and SHA-256 (medians of 5), printed above
    the table: figures from different machines compare only after scaling by these."""
    import hashlib
    import os
    import statistics
    import time

    def loop() -> float:
        t0 = time.perf_counter()
        x = 0
        for i in range(1_000_000):
            x += i
        return (time.perf_counter() - t0) * 1000  # ns per iteration

    def sha() -> float:
        data = b"x" * (1 << 20)
        t0 = time.perf_counter()
        for _ in range(32):
            hashlib.sha256(data).digest()
        return 32 / (time.perf_counter() - t0)  # MB/s

    ns = statistics.median(loop() for _ in range(5))
    mbs = statistics.median(sha() for _ in range(5))
    return (
        f"machine: {os.cpu_count()} CPUs, a Python loop {ns:.0f} ns/iteration, "
        f"SHA-256 {mbs:.0f} MB/s (medians of 5)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="run only modules whose name contains this")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args()
    rows: list[tuple[str, Row]] = []
    for path in sorted(HERE.glob("bench_*.py")):
        if args.only and args.only not in path.stem:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec
        assert spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"running {path.stem} ...", file=sys.stderr, flush=True)
        for row in module.run(args.quick):
            rows.append((path.stem.removeprefix("bench_"), row))
    print(machine_line())
    header = (
        f"{'suite':<10} {'benchmark':<52} {'median':>12} {'p99':>12} {'unit':<7} {'n':>6}  note"
    )
    print(header)
    print("-" * len(header))
    for suite, r in rows:
        p99 = f"{r.p99:12.1f}" if r.p99 is not None else f"{'':>12}"
        print(f"{suite:<10} {r.name:<52} {r.median:12.1f} {p99} {r.unit:<7} {r.n:>6}  {r.note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
