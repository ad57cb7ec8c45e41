"""Per-call anomaly scores with explanations.

A score is the sum of named components (points, capped), each from one feature's rarity
under the agent's baseline (or its peer group's while the agent warms up). The components
that contributed at least ``MIN_NAMED`` points are the score's reasons, largest first, so a
reviewer sees *why* (``new_tool``, ``rate_spike``, ``volume_spike`` ...), not just a number.

Components (points; the calibration is documented in docs/behavior.md):

| code | feature | points |
|---|---|---|
| ``new_tool`` | tool never learned for the agent | 60 (30 if ≥ 1% of the peer group's calls) |
| ``rare_tool`` | -ln p(tool) above 4 nats | 12 per nat, ≤ 30 |
| ``rare_transition`` | -ln p(tool ‖ previous tool) above 4.5 nats | 10 per nat, ≤ 25 |
| ``new_resource_type`` | tool known, resource type never seen with it | 20 |
| ``broad_scope`` | wildcard resource id, never seen for the tool | 20 |
| ``volume_spike`` | z of ln(volume) above 2 | 18 per sd, ≤ 60 |
| ``after_external_content`` | z ≥ 2, ≤ 3 calls after external content | 25 + 12 per sd, ≤ 55 |
| ``rate_spike`` | z of ln(span of last 10 calls) below -2.5, ≥ 8x faster | 20 per sd, ≤ 70 |
| ``unusual_hour`` | hour of day with < 1% of the agent's calls | 12 |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from tessera.behavior.baseline import SEP, Baseline

MIN_NAMED: Final = 5.0
MIN_MOMENTS: Final = 10
SD_FLOOR_VOLUME: Final = 0.25
SD_FLOOR_SPAN: Final = 0.3
MIN_SPEEDUP: Final = math.log(8.0)


@dataclass(frozen=True, slots=True)
class CallFeatures:
    """The features of one decision event (issue 10 §1)."""

    agent: str
    operator: str
    model_digest: str
    session: str | None
    tool: str
    rtype: str
    wildcard: bool
    volume: int | None
    ts: float
    hour: int
    gap: float | None  # seconds since the session's previous call
    prev: str | None  # the session's previous tool (the transition's source)
    external: bool  # this call reads untrusted content
    after_external: bool  # the session read untrusted content within the last calls
    span: float | None  # seconds spanned by the session's last 10 calls, this one included

    @property
    def log_volume(self) -> float | None:
        return None if self.volume is None else math.log(self.volume + 1.0)

    @property
    def log_span(self) -> float | None:
        return None if self.span is None else math.log(max(self.span, 1e-3))


def _clamp(x: float, hi: float) -> float:
    return 0.0 if x <= 0 else (hi if x > hi else x)


def components(f: CallFeatures, b: Baseline, peer: Baseline | None) -> list[tuple[str, float]]:
    """The non-zero score components of one call against baseline ``b``."""
    out: list[tuple[str, float]] = []
    n = b.n
    c_tool = b.tools.get(f.tool, 0)
    if c_tool == 0:
        peer_share = peer.tools.get(f.tool, 0) / peer.n if peer is not None and peer.n else 0.0
        out.append(("new_tool", 30.0 if peer_share >= 0.01 else 60.0))
    else:
        s = -math.log((c_tool + 0.5) / (n + 1.0))
        pts = _clamp((s - 4.0) * 12.0, 30.0)
        if pts:
            out.append(("rare_tool", pts))
        if f.prev is not None:
            c_from = b.from_counts.get(f.prev, 0)
            if c_from:
                p_tool = (c_tool + 0.5) / (n + 1.0)
                c_tr = b.transitions.get(f.prev + SEP + f.tool, 0)
                s = -math.log((c_tr + 2.0 * p_tool) / (c_from + 2.0))
                pts = _clamp((s - 4.5) * 10.0, 25.0)
                if pts:
                    out.append(("rare_transition", pts))
        if b.resources.get(f.tool + SEP + f.rtype, 0) == 0:
            out.append(("new_resource_type", 20.0))
        if f.wildcard and b.wildcards.get(f.tool, 0) == 0:
            out.append(("broad_scope", 20.0))
    lv = f.log_volume
    if lv is not None:
        m = b.volume.get(f.tool)
        if (m is None or m.n < MIN_MOMENTS) and peer is not None:
            m = peer.volume.get(f.tool)  # a tool the agent rarely uses: its peers' volumes
        if m is not None and m.n >= MIN_MOMENTS:
            z = (lv - m.mean) / max(m.sd, SD_FLOOR_VOLUME)
            pts = _clamp((z - 2.0) * 18.0, 60.0)
            if pts:
                out.append(("volume_spike", pts))
            if f.after_external and not f.external and z >= 2.0:
                out.append(("after_external_content", 25.0 + _clamp((z - 2.0) * 12.0, 30.0)))
    ls = f.log_span
    if ls is not None and b.span.n >= MIN_MOMENTS and b.span.mean - ls >= MIN_SPEEDUP:
        # a burst is both unusual (z) and much faster than usual (≥ 8x): the second keeps
        # jittery machine-speed agents, whose spans vary widely, from flagging themselves
        z = (b.span.mean - ls) / max(b.span.sd, SD_FLOOR_SPAN)
        pts = _clamp((z - 2.5) * 20.0, 70.0)
        if pts:
            out.append(("rate_spike", pts))
    if n >= 100:
        h = f.hour
        near = b.hours[h] + 0.5 * (b.hours[(h - 1) % 24] + b.hours[(h + 1) % 24])
        if near / n < 0.01:
            out.append(("unusual_hour", 12.0))
    return out


def total(parts: list[tuple[str, float]]) -> int:
    return min(100, round(sum(p for _, p in parts)))


def named(parts: list[tuple[str, float]]) -> tuple[str, ...]:
    return tuple(c for c, p in sorted(parts, key=lambda x: -x[1]) if p >= MIN_NAMED)
