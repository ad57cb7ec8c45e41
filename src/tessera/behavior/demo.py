"""Demo baselines: a few days of plausible history for the demo agents, so that
``tessera behavior show research-assistant`` has something to show right after
``tessera demo load``. Synthetic and deterministic (seeded), like the generator."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from tessera.behavior.service import BehaviourService

DAY: Final = 86_400.0


@dataclass(frozen=True)
class DemoAgent:
    agent: str
    operator: str
    model_digest: str
    tools: Mapping[str, tuple[float, int, bool]]  # tool → (share, median bytes, external)


RESEARCH: Final = {
    "docs/search": (0.35, 3_000, False),
    "docs/read": (0.45, 24_000, False),
    "web/fetch": (0.20, 40_000, True),
}
SUMMARIZER: Final = {"docs/read": (1.0, 16_000, False)}


def seed_baselines(
    service: BehaviourService, agents: Sequence[DemoAgent], *, end: float, calls: int = 650
) -> int:
    """Feed ``calls`` historical calls per agent (sessions of 8-16 calls, 20 s apart, on
    working hours over the days before ``end``) through score-then-observe, and flush."""
    rng = np.random.Generator(np.random.PCG64(2026))
    total = 0
    for a in agents:
        names = list(a.tools)
        cum = np.cumsum([a.tools[n][0] for n in names])
        ts = end - 4 * DAY
        n = 0
        session = 0
        while n < calls:
            session += 1
            day_start = math.floor(ts / DAY) * DAY
            ts = max(ts, day_start + 9 * 3600) + float(rng.uniform(600, 3600))
            if ts - day_start > 18 * 3600:
                ts = day_start + DAY + 9 * 3600
            for _ in range(int(rng.integers(8, 17))):
                i = min(
                    int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(names) - 1
                )
                tool = names[i]
                _, median, external = a.tools[tool]
                ts += 20.0 * math.exp(float(rng.normal(0, 0.6)))
                f = service.engine.features(
                    agent=a.agent,
                    operator=a.operator,
                    model_digest=a.model_digest,
                    session=f"demo-{a.agent}-{session}",
                    tool=tool,
                    rtype="document",
                    resource_id=f"d{int(rng.integers(1, 30))}",
                    volume=int(median * math.exp(float(rng.normal(0, 0.5)))),
                    external=external,
                    ts=min(ts, end - 1),
                )
                service.engine.observe(f, service.engine.score(f), allowed=True)
                service.engine.check_drift_due()
                n += 1
        total += n
    service.engine.take_notices()  # history is not news: no events for it
    service.flush()
    return total
