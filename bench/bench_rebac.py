"""Relationship engine: in-process check latency, list_objects, memory per million tuples.

Model: document → parent folder → group#member → user (the 3-hop chain of the issue).
Data: groups of 20 users, folders viewed by 2 groups, documents in folders; a share of
documents also has a direct viewer. Sizes: 100k tuples (quick) and 1M (full).
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections.abc import Iterator
from typing import Any

from harness import Row, latency_row, time_each

from tessera.clock import SystemClock
from tessera.rebac import MemoryTupleIndex, RebacEngine, RelationTuple, parse_dsl

MODEL = parse_dsl("""
model
  schema 1.1
type user
type group
  relations
    define member: [user, group#member]
type folder
  relations
    define viewer: [user, group#member]
type document
  relations
    define parent: [folder]
    define viewer: [user] or viewer from parent
type report
  relations
    define parent: [folder]
    define viewer: [user] or viewer from parent
""")


def tuples(n: int, seed: int = 7) -> Iterator[RelationTuple]:
    """About ``n`` tuples: 20% memberships, 10% folder grants, the rest documents."""
    rng = random.Random(seed)
    groups = max(10, n // 100)  # 20 members each -> 20% of n
    folders = max(10, n // 20)  # 2 groups each -> 10% of n
    users = max(100, n // 10)
    for g in range(groups):
        for _ in range(20):
            yield RelationTuple(f"group:g{g}", "member", f"user:u{rng.randrange(users)}")
    for f in range(folders):
        for _ in range(2):
            yield RelationTuple(f"folder:f{f}", "viewer", f"group:g{rng.randrange(groups)}#member")
    docs = n - groups * 20 - folders * 2
    for d in range(docs):
        if d % 10 == 0:
            yield RelationTuple(f"document:d{d}", "viewer", f"user:u{rng.randrange(users)}")
        else:
            yield RelationTuple(f"document:d{d}", "parent", f"folder:f{rng.randrange(folders)}")


def _pick(
    index: MemoryTupleIndex, rng: random.Random, n: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Queries that are true directly, true over 3 hops, and false after a full walk."""
    direct, hop3, deny = [], [], []
    docs = [o for o in index.objects_of_type("document")]
    rng.shuffle(docs)
    for doc in docs:
        users = index.users(doc, "viewer")
        parents = index.users(doc, "parent")
        if users and len(direct) < n:
            direct.append((doc, next(iter(users))))
        elif parents and len(hop3) < n:
            folder = next(iter(parents))
            sets = index.usersets(folder, "viewer")
            if sets:
                group = next(iter(sets)).partition("#")[0]
                members = index.users(group, "member")
                if members:
                    hop3.append((doc, next(iter(members))))
                    deny.append((doc, "user:nobody"))
        if len(direct) >= n and len(hop3) >= n:
            break
    return direct, hop3, deny[:n]


def _checks(
    engine: RebacEngine, queries: list[tuple[str, str]], n: int, expect: bool
) -> list[float]:
    it = iter(queries * (n // max(1, len(queries)) + 1))

    def one() -> None:
        doc, user = next(it)
        if engine.check(doc, "viewer", user) is not expect:
            raise AssertionError((doc, user))

    return time_each(one, n)


def _check_rows(size: int, n: int, label: str) -> list[Row]:
    index = MemoryTupleIndex(tuples(size))
    engine = RebacEngine(MODEL, index, SystemClock())
    direct, hop3, deny = _pick(index, random.Random(1), 500)
    note = f"{len(index):,} tuples"
    return [
        latency_row(f"check direct ({label})", _checks(engine, direct, n, True), note),
        latency_row(
            f"check 3-hop doc>folder>group ({label})", _checks(engine, hop3, n, True), note
        ),
        latency_row(f"check full-traversal deny ({label})", _checks(engine, deny, n, False), note),
    ]


def _list_objects_row(quick: bool) -> Row:
    # 10k report candidates, each in one of 500 folders; the user's group views 25 folders.
    index = MemoryTupleIndex()
    index.write(RelationTuple("group:g0", "member", "user:anne") for _ in range(1))
    index.write(RelationTuple(f"folder:f{f}", "viewer", "group:g0#member") for f in range(25))
    index.write(
        RelationTuple(f"folder:f{f}", "viewer", f"group:g{f}#member") for f in range(1, 500)
    )
    index.write(
        RelationTuple(f"report:r{r}", "parent", f"folder:f{r % 500}") for r in range(10_000)
    )
    engine = RebacEngine(MODEL, index, SystemClock())
    found = engine.list_objects("report", "viewer", "user:anne")
    if len(found.items) != 500 or not found.complete:
        raise AssertionError(len(found.items))
    samples = time_each(
        lambda: engine.list_objects("report", "viewer", "user:anne"), 5 if quick else 20, warmup=1
    )
    return latency_row("list_objects over 10k candidates", samples, "500 found")


def _memory_row(size: int) -> Row:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = MemoryTupleIndex(tuples(size))
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per_million = used / len(index) * 1_000_000 / 2**20
    return Row(
        "index memory per 1M tuples",
        "MB",
        per_million,
        None,
        len(index),
        f"tracemalloc over {len(index):,} tuples",
    )


HTTP_CONCURRENCY = 32


def _http_check_rows(size: int, n: int) -> list[Row]:
    """``POST /rebac/v1/check`` against ``tessera serve`` (one uvicorn worker, SQLite,
    loopback, 32 connections): a mix of direct, 3-hop and deny checks over ``size`` tuples
    written through the service (the server loads its index from the store)."""
    import asyncio
    import json
    import os
    import socket
    import statistics
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    import httpx
    from harness import percentile

    from tessera.app import build
    from tessera.config import load_config
    from tessera.rebac import render_dsl

    tessera_bin = str(Path(sys.executable).parent / "tessera")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
        env.update({"TESSERA_DATA_DIR": str(Path(tmp) / "data"), "TESSERA_PORT": str(port)})
        init = subprocess.run(
            [tessera_bin, "init", "--json"], env=env, capture_output=True, check=True, text=True
        )
        admin = json.loads(init.stdout)["admin_token"]
        t = build(load_config(env))
        t.rebac.apply_model(render_dsl(MODEL), actor="bench")
        unique = list({tup.key: tup for tup in tuples(size)}.values())  # a batch has no repeats
        for start in range(0, len(unique), 10_000):
            t.rebac.write_tuples(unique[start : start + 10_000], actor="bench")
        index = MemoryTupleIndex(tuples(size))
        direct, hop3, deny = _pick(index, random.Random(1), 200)
        t.close()
        queries = [(doc, user) for doc, user in direct + hop3 + deny]
        bodies = [
            {"user": user, "relation": "viewer", "object": doc}
            for doc, user in (queries * (n // len(queries) + 1))[:n]
        ]
        proc = subprocess.Popen(
            [tessera_bin, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {admin}"}
        try:
            for _ in range(200):
                try:
                    httpx.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            # the first check loads the index from the store
            first = httpx.post(
                f"{base}/rebac/v1/check", json=bodies[0], headers=headers, timeout=120
            )
            first.raise_for_status()

            async def fire(path: str, payloads: list[Any]) -> tuple[list[float], float, int]:
                limits = httpx.Limits(
                    max_connections=HTTP_CONCURRENCY, max_keepalive_connections=HTTP_CONCURRENCY
                )
                lat: list[float] = []
                errors = 0
                queue = list(reversed(payloads))
                async with httpx.AsyncClient(limits=limits, timeout=60, headers=headers) as c:

                    async def worker() -> None:
                        nonlocal errors
                        while queue:
                            body = queue.pop()
                            t0 = time.perf_counter()
                            if body is None:
                                r = await c.get(f"{base}{path}")
                            else:
                                r = await c.post(f"{base}{path}", json=body)
                            lat.append((time.perf_counter() - t0) * 1e6)
                            errors += r.status_code != 200

                    t0 = time.perf_counter()
                    await asyncio.gather(*(worker() for _ in range(HTTP_CONCURRENCY)))
                    elapsed = time.perf_counter() - t0
                return lat, len(payloads) / elapsed, errors

            lat, rate, errors = asyncio.run(fire("/rebac/v1/check", bodies))
            ref_lat, ref_rate, ref_errors = asyncio.run(fire("/healthz", [None] * len(bodies)))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    return [
        Row(
            f"HTTP check ({size // 1000}k tuples)",
            "µs/op",
            statistics.median(lat),
            percentile(lat, 99),
            len(lat),
            f"{rate:,.0f} checks/s, {HTTP_CONCURRENCY} conns, 1 worker, {errors} errors",
        ),
        Row(
            "  GET /healthz on the same server (reference)",
            "µs/op",
            statistics.median(ref_lat),
            percentile(ref_lat, 99),
            len(ref_lat),
            f"{ref_rate:,.0f} req/s, {ref_errors} errors",
        ),
    ]


def run(quick: bool) -> list[Row]:
    rows = _check_rows(100_000, 2_000 if quick else 20_000, "100k")
    if not quick:
        rows += _check_rows(1_000_000, 20_000, "1M")
    rows.append(_list_objects_row(quick))
    rows.append(_memory_row(100_000 if quick else 1_000_000))
    rows += _http_check_rows(10_000 if quick else 100_000, 1_000 if quick else 5_000)
    return rows
