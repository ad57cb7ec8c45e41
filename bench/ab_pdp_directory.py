"""A/B: what the store-backed directory and the pinned-model check add to one in-process
decision (a user subject, the demo bundle, a 3-hop ReBAC check, SQLite, the node's tailer
running). Alternates the two setups in rounds and reports CPU time (``process_time``)
medians, then the cost of each added call alone.

    .venv/bin/python bench/ab_pdp_directory.py

A: ``StoredDirectory`` (memory, fed by the event tailer; ``ensure_fresh`` on each read)
   and the ``model_mismatch`` check (``RebacService.active_model_digest``).
B: ``MemoryAttributes`` with the same entries and no check (the code before issue 5).
"""

from __future__ import annotations

import statistics
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tessera.app import build, initialise
from tessera.clock import SystemClock
from tessera.config import load_config
from tessera.pdp import pipeline
from tessera.pdp.agents import Caller
from tessera.pdp.model import parse_evaluation
from tessera.pdp.ports import MemoryAttributes
from tessera.policy.bundle import read_bundle_dir
from tessera.rebac.ports import RelationTuple

BUNDLE = Path(__file__).resolve().parents[1] / "examples" / "policy-bundle"
ENTRIES = {"document": {"1": {"classification": "internal"}}, "user": {"alice": {"team": "eng"}}}
ROUNDS, N = 10, 2000


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    env = {"TESSERA_DATA_DIR": str(tmp / "d"), "TESSERA_KEK": "a" * 64, "TESSERA_BEHAVIOUR": "off"}
    config = load_config(env)
    initialise(config, clock=SystemClock())
    t = build(config)
    t.pdp.policies.apply(read_bundle_dir(BUNDLE), actor="bench", with_model=True)
    rows = [
        ("document:1", "parent", "folder:eng"),
        ("folder:eng", "viewer", "team:eng#member"),
        ("team:eng", "member", "user:alice"),
    ]
    t.rebac.write_tuples([RelationTuple(*r) for r in rows], actor="bench")
    assert t.directory is not None  # app.build wires it
    t.directory.load(ENTRIES, actor="bench")
    t.tailer.start()
    req = parse_evaluation(
        {
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": "docs/read"},
            "resource": {"type": "document", "id": "1"},
        }
    )
    caller = Caller("svc", "pep", "token")
    point = t.pdp.point
    stored, memory = point.attributes, MemoryAttributes(ENTRIES)
    check = pipeline.model_mismatch

    def setup_a() -> None:
        point.attributes, pipeline.model_mismatch = stored, check

    def setup_b() -> None:
        point.attributes = memory
        pipeline.model_mismatch = lambda bundle, relations: None

    if point.decide(req, caller).verdict != "allow":
        raise RuntimeError("the benchmark request is not allowed")
    runs: dict[str, list[float]] = {"A": [], "B": []}
    order: list[tuple[str, Callable[[], None]]] = [("A", setup_a), ("B", setup_b)]
    for r in range(ROUNDS):
        for name, setup in order if r % 2 == 0 else order[::-1]:
            setup()
            for _ in range(200):
                point.decide(req, caller)
            start = time.process_time()
            for _ in range(N):
                point.decide(req, caller)
            runs[name].append((time.process_time() - start) / N * 1e6)
    setup_a()
    a, b = statistics.median(runs["A"]), statistics.median(runs["B"])
    print(f"A store directory + model check: median {a:.1f} us CPU per decision")
    print(f"B memory directory, no check:    median {b:.1f} us CPU per decision")
    print(
        f"A/B {a / b:.3f} ({a - b:+.1f} us); rounds A {_spread(runs['A'])} B {_spread(runs['B'])}"
    )
    active = point.bundles.active()
    bundle: Any = active.bundle if active is not None else None
    for label, fn in [
        ("StoredDirectory.attributes", lambda: stored.attributes("document", "1")),
        ("MemoryAttributes.attributes", lambda: memory.attributes("document", "1")),
        ("model_mismatch check", lambda: check(bundle, point.relations)),  # type: ignore[arg-type]
    ]:
        best = min(timeit.repeat(fn, number=20_000, repeat=5)) / 20_000 * 1e6
        print(f"{label}: {best:.2f} us per call (best of 5 x 20,000)")
    t.close()


def _spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


if __name__ == "__main__":
    main()
