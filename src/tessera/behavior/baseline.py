"""Baselines: what an agent (or a peer group: same operator and model) normally does.

A ``Baseline`` holds incremental counts and running moments, updated one call at a time in
O(1) (plain dicts: a single lookup is cheaper than any numpy call); the drift statistics
turn them into numpy vectors only when they compare whole distributions.

``Reference`` is the frozen reference window: the first ``reference_calls`` learned calls
of an agent, then never updated (until an operator re-baselines), so slow creep that the
live baseline gradually absorbs still shows up as drift against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

SEP: Final = "\t"  # transition key "<from>\t<to>"; tool names never contain a tab


@dataclass(slots=True)
class Moments:
    """Welford running mean/variance (of a log quantity)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)

    @property
    def sd(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0

    def to_list(self) -> list[float]:
        return [self.n, self.mean, self.m2]

    @classmethod
    def from_list(cls, v: Any) -> Moments:
        return cls(int(v[0]), float(v[1]), float(v[2]))


@dataclass(slots=True)
class Baseline:
    """Counts and moments of learned calls. ``n`` is the number of learned calls."""

    n: int = 0
    tools: dict[str, int] = field(default_factory=dict)
    transitions: dict[str, int] = field(default_factory=dict)
    from_counts: dict[str, int] = field(default_factory=dict)
    resources: dict[str, int] = field(default_factory=dict)  # "<tool>\t<resource type>"
    wildcards: dict[str, int] = field(default_factory=dict)  # tool → wildcard-scope calls
    hours: list[int] = field(default_factory=lambda: [0] * 24)
    volume: dict[str, Moments] = field(default_factory=dict)  # tool → ln(bytes + 1)
    span: Moments = field(default_factory=Moments)  # ln(seconds spanned by the last 10 calls)
    first_ts: float = 0.0
    last_ts: float = 0.0

    def learn(
        self,
        tool: str,
        prev: str | None,
        rtype: str,
        wildcard: bool,
        hour: int,
        log_volume: float | None,
        log_span: float | None,
        ts: float,
    ) -> None:
        self.n += 1
        self.tools[tool] = self.tools.get(tool, 0) + 1
        if prev is not None:
            key = prev + SEP + tool
            self.transitions[key] = self.transitions.get(key, 0) + 1
            self.from_counts[prev] = self.from_counts.get(prev, 0) + 1
        rkey = tool + SEP + rtype
        self.resources[rkey] = self.resources.get(rkey, 0) + 1
        if wildcard:
            self.wildcards[tool] = self.wildcards.get(tool, 0) + 1
        self.hours[hour] += 1
        if log_volume is not None:
            m = self.volume.get(tool)
            if m is None:
                m = self.volume[tool] = Moments()
            m.add(log_volume)
        if log_span is not None:
            self.span.add(log_span)
        if not self.first_ts:
            self.first_ts = ts
        self.last_ts = max(self.last_ts, ts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "tools": self.tools,
            "transitions": self.transitions,
            "from": self.from_counts,
            "resources": self.resources,
            "wildcards": self.wildcards,
            "hours": self.hours,
            "volume": {k: m.to_list() for k, m in self.volume.items()},
            "span": self.span.to_list(),
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Baseline:
        hours = [int(x) for x in d.get("hours", [])][:24]
        return cls(
            n=int(d.get("n", 0)),
            tools={str(k): int(v) for k, v in d.get("tools", {}).items()},
            transitions={str(k): int(v) for k, v in d.get("transitions", {}).items()},
            from_counts={str(k): int(v) for k, v in d.get("from", {}).items()},
            resources={str(k): int(v) for k, v in d.get("resources", {}).items()},
            wildcards={str(k): int(v) for k, v in d.get("wildcards", {}).items()},
            hours=hours + [0] * (24 - len(hours)),
            volume={str(k): Moments.from_list(v) for k, v in d.get("volume", {}).items()},
            span=Moments.from_list(d.get("span", [0, 0, 0])),
            first_ts=float(d.get("first_ts", 0.0)),
            last_ts=float(d.get("last_ts", 0.0)),
        )

    def top_tools(self, k: int = 10) -> list[tuple[str, float]]:
        total = max(self.n, 1)
        return [(t, c / total) for t, c in sorted(self.tools.items(), key=lambda x: -x[1])[:k]]

    def top_transitions(self, k: int = 10) -> list[tuple[str, float]]:
        total = max(sum(self.transitions.values()), 1)
        items = sorted(self.transitions.items(), key=lambda x: -x[1])[:k]
        return [(key.replace(SEP, " → "), c / total) for key, c in items]


@dataclass(slots=True)
class Reference:
    """The frozen reference window of tool and transition counts."""

    tools: dict[str, int] = field(default_factory=dict)
    transitions: dict[str, int] = field(default_factory=dict)
    n: int = 0
    frozen: bool = False
    frozen_at: float = 0.0

    def add(self, tool: str, prev: str | None) -> None:
        self.n += 1
        self.tools[tool] = self.tools.get(tool, 0) + 1
        if prev is not None:
            key = prev + SEP + tool
            self.transitions[key] = self.transitions.get(key, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "tools": self.tools,
            "transitions": self.transitions,
            "n": self.n,
            "frozen": self.frozen,
            "frozen_at": self.frozen_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reference:
        return cls(
            {str(k): int(v) for k, v in d.get("tools", {}).items()},
            {str(k): int(v) for k, v in d.get("transitions", {}).items()},
            int(d.get("n", 0)),
            bool(d.get("frozen", False)),
            float(d.get("frozen_at", 0.0)),
        )
