"""A cooperative deadline and a circuit breaker around the scorer (DESIGN 5).

Python cannot pre-empt a running call, so the deadline is cooperative: the adapter checks
the elapsed time after each step and discards a result that arrived late, exactly as if
the engine had failed. After ``failures`` consecutive failures or timeouts the breaker
opens and the engine is not called at all for ``cooldown`` seconds; then one trial call
(half-open) decides whether it closes again. Either way the deterministic decision stands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class BehaviourTimeout(Exception):
    """The scorer overran its deadline; its answer is discarded."""


class Deadline:
    def __init__(self, budget_s: float, timer: Callable[[], float]) -> None:
        self._timer = timer
        self._end = timer() + budget_s

    def check(self) -> None:
        if self._timer() > self._end:
            raise BehaviourTimeout


class CircuitBreaker:
    def __init__(
        self,
        failures: int = 5,
        cooldown: float = 30.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self._timer = timer
        self._count = 0
        self._opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._timer() - self._opened_at >= self.cooldown else "open"

    def allow(self) -> bool:
        """May the engine be called now? In half-open state, one caller at a time."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._timer() - self._opened_at < self.cooldown or self._trial:
                return False
            self._trial = True
            return True

    def success(self) -> None:
        with self._lock:
            self._count, self._opened_at, self._trial = 0, None, False

    def failure(self) -> None:
        with self._lock:
            self._count += 1
            if self._trial or self._count >= self.failures:
                self._opened_at = self._timer()
            self._trial = False
