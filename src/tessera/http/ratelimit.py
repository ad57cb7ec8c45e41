"""Per-client rate limits on the hot endpoints (DESIGN 9): a token bucket per client address
and path prefix, in memory on each node. Over the limit: 429 with ``Retry-After`` and an OAuth
style error body (these endpoints speak OAuth/AuthZEN, not problem+json)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

MAX_CLIENTS = 50_000


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str, now: float) -> float:
        """0 when allowed, else the seconds until a request would be allowed."""
        with self._lock:
            tokens, last = self._state.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._state[key] = (tokens - 1, now)
                wait = 0.0
            else:
                self._state[key] = (tokens, now)
                wait = (1 - tokens) / self.rate
            while len(self._state) > MAX_CLIENTS:
                self._state.popitem(last=False)
            return wait


def client_key(scope: Scope) -> str:
    """A bucket per client address and path."""
    client = scope.get("client") or ("unknown", 0)
    return f"{client[0]}|{scope.get('path', '')}"


class RateLimit:
    def __init__(
        self, app: ASGIApp, *, prefixes: tuple[str, ...], rate: float, burst: float
    ) -> None:
        self.app = app
        self.prefixes = prefixes
        self.bucket = TokenBucket(rate, burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or self.bucket.rate <= 0 or not path.startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        wait = self.bucket.take(client_key(scope), time.monotonic())
        if wait == 0:
            await self.app(scope, receive, send)
            return
        await too_many(wait)(scope, receive, send)


def too_many(wait: float) -> Response:
    """429 with ``Retry-After`` and an OAuth style error body."""
    return JSONResponse(
        {"error": "temporarily_unavailable", "error_description": "rate limit exceeded"},
        status_code=429,
        headers={"cache-control": "no-store", "retry-after": str(max(1, int(wait + 0.999)))},
    )
