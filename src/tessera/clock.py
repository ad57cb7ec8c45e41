"""Time. Nothing else in Tessera reads the wall clock: services take a ``Clock``."""

from __future__ import annotations

import threading
import time as _time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""

    def timestamp(self) -> float:
        """Current time as seconds since the epoch."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def timestamp(self) -> float:
        return _time.time()


class ManualClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def timestamp(self) -> float:
        return self.now().timestamp()

    def advance(self, seconds: float = 0, **kwargs: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds, **kwargs)

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        with self._lock:
            self._now = when


def utc(dt: datetime) -> datetime:
    """Normalise a datetime read back from a store (SQLite drops tzinfo) to aware UTC."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_iso(value: str) -> datetime:
    """Parse an ISO 8601 timestamp; a naive value is taken as UTC."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return utc(dt)


def iso(dt: datetime) -> str:
    return utc(dt).isoformat().replace("+00:00", "Z")
