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


# The last second ``iso`` formatted: (year, month, day, hour, minute, second) and its text
# "YYYY-MM-DDTHH:MM:SS". One tuple, replaced whole, so threads never see half an update.
_ISO_SECOND: tuple[tuple[int, ...], str] = ((), "")


def iso(dt: datetime) -> str:
    """``dt`` in UTC as RFC 3339 text with a ``Z``: "2026-01-02T03:04:05.678901Z", or
    "2026-01-02T03:04:05Z" when it has no microseconds (what ``isoformat`` gives). The
    text up to the second is kept from the previous call: audit records and tokens format
    the current time many times a second, and ``isoformat`` costs more than the rest."""
    global _ISO_SECOND
    if dt.tzinfo is not UTC:
        dt = utc(dt)
    key = (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
    cached = _ISO_SECOND
    if cached[0] == key:
        text = cached[1]
    else:
        text = dt.replace(microsecond=0, tzinfo=None).isoformat()
        _ISO_SECOND = (key, text)
    us = dt.microsecond
    return f"{text}.{us:06d}Z" if us else text + "Z"
