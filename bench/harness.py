"""Shared helpers for benchmarks: timing, medians, percentiles, rows for the table."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Row:
    name: str
    unit: str  # what median/p99 measure, e.g. "µs/op" or "ops/s"
    median: float
    p99: float | None = None
    n: int = 0
    note: str = ""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def time_each(fn: Callable[[], object], n: int, warmup: int = 10) -> list[float]:
    """Per-call latency in microseconds for ``n`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def latency_row(name: str, samples_us: list[float], note: str = "") -> Row:
    return Row(
        name,
        "µs/op",
        statistics.median(samples_us),
        percentile(samples_us, 99),
        len(samples_us),
        note,
    )


def throughput_row(name: str, rounds: list[float], note: str = "") -> Row:
    """``rounds`` are operations per second measured over several rounds."""
    return Row(name, "ops/s", statistics.median(rounds), None, len(rounds), note)


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, every thread) of a process so far; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
