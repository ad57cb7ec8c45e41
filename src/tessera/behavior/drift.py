"""Drift: KL divergence between a recent window and a baseline distribution.

``D_KL(P || Q) = Σ p_i ln(p_i / q_i)`` (Kullback and Leibler, 1951) in nats, where ``P`` is
the recent window's empirical distribution and ``Q`` the baseline's, smoothed with a
Dirichlet(½) prior over the union of both supports so that a category the baseline never
saw has a small, finite probability instead of an infinite divergence. The plug-in
estimate is biased upwards by about ``(K - 1) / 2n`` for ``K`` observed categories in ``n``
samples (Miller, 1955), and by about as much again for a baseline estimated from ``m``
samples; both terms are subtracted, so a benign window of a few hundred calls
over a few dozen transitions does not cross a 0.1 threshold by sampling noise alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

PRIOR = 0.5


@dataclass(frozen=True, slots=True)
class Divergence:
    kl: float  # bias-corrected, never negative
    raw: float  # plug-in estimate
    n: int
    top: tuple[tuple[str, float, float], ...]  # (category, recent share, baseline share)


def divergence(recent: Mapping[str, int], baseline: Mapping[str, int], top: int = 3) -> Divergence:
    """KL(recent ‖ baseline) with Dirichlet smoothing of the baseline and Miller-Madow
    bias correction; ``top`` names the categories contributing most."""
    keys = sorted(set(recent) | set(baseline))
    if not keys:
        return Divergence(0.0, 0.0, 0, ())
    p = np.fromiter((recent.get(k, 0) for k in keys), dtype=float, count=len(keys))
    q = np.fromiter((baseline.get(k, 0) for k in keys), dtype=float, count=len(keys))
    n = float(p.sum())
    if n <= 0:
        return Divergence(0.0, 0.0, 0, ())
    p /= n
    q_counts = q
    q = (q + PRIOR) / (q.sum() + PRIOR * len(keys))
    nz = p > 0
    terms = np.zeros_like(p)
    terms[nz] = p[nz] * np.log(p[nz] / q[nz])
    raw = float(terms.sum())
    m = float(q_counts.sum())
    k = int(nz.sum()) - 1
    bias = k / (2.0 * n) + (k / (2.0 * m) if m > 0 else 0.0)
    corrected = max(0.0, raw - bias)
    order = np.argsort(-terms)[:top]
    named = tuple(
        (keys[i], round(float(p[i]), 4), round(float(q[i]), 4)) for i in order if terms[i] > 0
    )
    return Divergence(round(corrected, 5), round(raw, 5), int(n), named)


def counts(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items:
        out[it] = out.get(it, 0) + 1
    return out
