"""OpenID AuthZEN Authorization API 1.0 over HTTP: PDP metadata (§9), access evaluation
(§6), access evaluations (§7) and the search APIs (§8). These are the hottest endpoints
Tessera has, so the ``POST /access/v1/*`` endpoints are one pure ASGI handler
(``AuthzenApi``, docs/decisions.md 77) at the application's front door (``TesseraApp``,
decisions.md 93): it answers them before the middleware stack and the router, and applies
what those middlewares would (the body limit, the rate limit, the request id, the audit
request id, problem+json for an unexpected error) itself. Other methods on these paths go
to the router (405).

Callers authenticate as services (``Authorization: Bearer <service token | API key>``).
Errors are problem+json: 400 for a malformed request, 401/403 for the caller; a request
that parses always gets a decision (errors inside the pipeline are denies).
``X-Request-ID`` is echoed (the request-id middleware) and passed to the audit record.
A decision is answered only once its audit record is durable (``record_async``: the
audit group commit, awaited on the event loop instead of in a blocked worker thread).
On an embedded SQLite store a single evaluation is decided on the event loop and awaits
its budget unit (decisions.md 91); otherwise its stages run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from tessera.app import Tessera
from tessera.audit.record import current_request_id
from tessera.errors import InvalidInput, PayloadTooLarge, TesseraError, Unauthenticated
from tessera.http import signals
from tessera.http.asgi import declared_too_large, request_id, too_large
from tessera.http.problems import problem
from tessera.http.ratelimit import TokenBucket, client_key, too_many
from tessera.pdp.agents import Caller
from tessera.pdp.model import Decision, EvaluationRequest, parse_evaluation, parse_evaluations
from tessera.pdp.ports import DecisionRecord
from tessera.pdp.search import search

log = logging.getLogger("tessera.authzen")
MAX_BODY: Final = 1024 * 1024
# Worker threads for decisions (a decision may wait for its budget group commit): as many
# as anyio's default thread limiter, which served these endpoints before.
WORKERS: Final = 40
_NO_STORE = {"Cache-Control": "no-store"}
_JSON_HEADERS: Final = ((b"content-type", b"application/json"), (b"cache-control", b"no-store"))
T = TypeVar("T")


class _Disconnected(Exception):
    """The client went away before its request body arrived: nothing to answer."""


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if not fut.done():
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class DecisionThreads:
    """Worker threads for the blocking part of a request (the pipeline: its budget group
    commit, store reads on cache misses). Lighter than ``run_in_executor`` or anyio's
    limiter: one queue put per call, one ``call_soon_threadsafe`` per answer."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if len(self._threads) < self._workers:
            self._start()
        # the request's context variables (the audit request id) travel with the call
        self._queue.put((loop, fut, contextvars.copy_context(), fn))
        return fut

    def _start(self) -> None:
        with self._lock:
            while len(self._threads) < self._workers:
                t = threading.Thread(
                    target=self._loop, name=f"tessera-pdp-{len(self._threads)}", daemon=True
                )
                t.start()
                self._threads.append(t)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            loop, fut, ctx, fn = item
            try:
                ok, value = True, ctx.run(fn)
            except BaseException as exc:  # handed to the awaiting request
                ok, value = False, exc
            try:
                loop.call_soon_threadsafe(_settle, fut, ok, value)
            except RuntimeError:  # the loop was closed: nobody is waiting any more
                log.debug("a decision finished after its event loop closed")

    def close(self) -> None:
        with self._lock:
            for _ in self._threads:
                self._queue.put(None)
            self._threads = []


def _fail(exc: TesseraError) -> Response:
    headers = dict(_NO_STORE)
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="tessera"'
    if exc.status >= 500:
        log.warning("pdp unavailable: %s", exc.detail or exc.message)
    return problem(exc.status, exc.code, exc.title, exc.message, headers=headers)


def _dumps(content: Any) -> bytes:
    # What Starlette's JSONResponse renders, byte for byte.
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request bodies are limited to {max_bytes} bytes")


async def _read_body(receive: Receive, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        if size > MAX_BODY:
            raise InvalidInput(f"request bodies are limited to {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the request body is not JSON") from None


def _explain(scope: Scope, body: Any) -> bool:
    opts = body.get("options") if isinstance(body, dict) else None
    if isinstance(opts, dict) and opts.get("explain") is True:
        return True
    query = scope.get("query_string", b"")
    if not query:
        return False
    values = parse_qs(query.decode("latin-1")).get("explain", [])
    return bool(values) and values[-1] in ("1", "true")


def _consistency_token(body: Any) -> bool:
    ctx = body.get("context") if isinstance(body, dict) else None
    return isinstance(ctx, dict) and ctx.get("consistency_token") is not None


class AuthzenApi:
    """``POST /access/v1/evaluation``, ``/evaluations`` and ``/search/{kind}`` as one ASGI
    handler: the same checks, answers and errors as FastAPI routes and the server's
    middlewares, without their per request layers (ten ASGI layers, routing over every
    route, ``Request`` objects, anyio's thread limiter)."""

    def __init__(self, tessera: Tessera) -> None:
        self.tessera = tessera
        config = tessera.config
        self.max_bytes = config.max_request_bytes  # what the BodyLimit middleware applies
        # the RateLimit middleware's rule (per client address and path), for these paths
        self.bucket = TokenBucket(float(config.rate_limit), float(2 * config.rate_limit))
        self.routes: dict[str, Callable[[Scope, Receive], Awaitable[bytes]]] = {
            "/access/v1/evaluation": self._evaluation,
            "/access/v1/evaluations": self._evaluations,
        }
        for kind in ("subject", "resource", "action"):
            self.routes[f"/access/v1/search/{kind}"] = functools.partial(self._search, kind)
        self._threads = DecisionThreads(WORKERS)
        # decisions.md 91: on an embedded SQLite store a single evaluation is decided on
        # the event loop (its reads take microseconds) and awaits its budget unit; on a
        # store across the network its stages run in a worker thread.
        self._inline = getattr(tessera.store, "backend", "") == "sqlite"

    def route(self, scope: Scope) -> Callable[[Scope, Receive], Awaitable[bytes]] | None:
        """The endpoint for this request's path (under the app's ``root_path``, if any)."""
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        return self.routes.get(path)

    def claims(self, scope: Scope) -> bool:
        """Whether the front door answers this request (``TesseraApp``)."""
        return scope["type"] == "http" and scope["method"] == "POST" and bool(self.route(scope))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.route(scope)
        if handler is None:  # only reachable through the router, which matched the path
            raise RuntimeError(f"no AuthZEN endpoint at {scope['path']!r}")
        rid = request_id(scope)
        rid_header = (b"x-request-id", rid.encode())
        refused = self._refuse(scope)
        if refused is not None:
            refused.headers["x-request-id"] = rid
            await refused(scope, receive, send)
            return
        token = current_request_id.set(rid)  # the audit records written for this request
        try:
            payload = await handler(scope, receive)
        except _Disconnected:
            return
        except TesseraError as exc:
            failed = _fail(exc)
            failed.headers["x-request-id"] = rid
            await failed(scope, receive, send)
            return
        except Exception:  # what the server's error middleware would answer
            log.exception("unexpected error")
            failed = problem(
                500, "internal_error", "Internal error", "the server could not complete the request"
            )
            failed.headers["x-request-id"] = rid
            await failed(scope, receive, send)
            return
        finally:
            current_request_id.reset(token)
        headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode()), rid_header]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def _refuse(self, scope: Scope) -> Response | None:
        """The body limit's 413 (by ``Content-Length``) and the rate limit's 429, as the
        ``BodyLimit`` and ``RateLimit`` middlewares answer them."""
        if declared_too_large(scope, self.max_bytes):
            return too_large(self.max_bytes)
        if self.bucket.rate > 0:
            wait = self.bucket.take(client_key(scope), time.monotonic())
            if wait > 0:
                return too_many(wait)
        return None

    def close(self) -> None:
        self._threads.close()

    # -- the endpoints ---------------------------------------------------------------

    async def _evaluation(self, scope: Scope, receive: Receive) -> bytes:
        """AuthZEN §6: one decision; an allowed one spends its session budget unit."""
        caller, body, rid = await self._begin(scope, receive)
        req = parse_evaluation(body)
        await self._at_least(body)
        point = self.tessera.pdp.point
        offload = None if self._inline else self._thread
        decision = await point.decide_async(req, caller, consume=True, offload=offload)
        await self._record(DecisionRecord("evaluation", caller.service_id, rid, ((req, decision),)))
        return _dumps(decision.to_authzen(explain=_explain(scope, body)))

    async def _evaluations(self, scope: Scope, receive: Receive) -> bytes:
        """AuthZEN §7: a batch (§7.1.2 semantics) is one audit record listing its decisions."""
        caller, body, rid = await self._begin(scope, receive)
        reqs, semantic = parse_evaluations(body)
        await self._at_least(body)
        if self._inline:
            point = self.tessera.pdp.point
            decisions = await point.decide_many_async(reqs, caller, semantic=semantic)
        else:
            decisions = await self._thread(functools.partial(self._batch, reqs, semantic, caller))
        pairs = tuple(zip(reqs, decisions, strict=False))
        await self._record(DecisionRecord("evaluations", caller.service_id, rid, pairs))
        explain = _explain(scope, body)
        return _dumps({"evaluations": [d.to_authzen(explain=explain) for d in decisions]})

    async def _search(self, kind: str, scope: Scope, receive: Receive) -> bytes:
        """AuthZEN §8 (recorded by ``search`` itself)."""
        caller, body, rid = await self._begin(scope, receive)
        point = self.tessera.pdp.point
        run = functools.partial(search, point, kind, body, caller, request_id=rid)
        return _dumps(await self._thread(run))

    # -- shared steps ----------------------------------------------------------------

    async def _begin(self, scope: Scope, receive: Receive) -> tuple[Caller, Any, str | None]:
        """The caller (before the body is read), the parsed body, the request id."""
        tessera = self.tessera
        authorization = _header(scope, b"authorization")
        now = tessera.clock.timestamp()
        callers = tessera.pdp.callers
        caller = callers.cached(authorization, now)
        if caller is None:  # a miss reads the store: not on the event loop
            caller = await self._thread(functools.partial(callers.authenticate, authorization, now))
        body = _json(await _read_body(receive, self.max_bytes))
        rid = scope.get("state", {}).get("request_id")
        return caller, body, rid if isinstance(rid, str) else _header(scope, b"x-request-id")

    async def _at_least(self, body: Any) -> None:
        """Wait for ``context.consistency_token`` (signals.at_least) when one is given."""
        if _consistency_token(body):
            await self._thread(functools.partial(signals.at_least, self.tessera, body))

    def _batch(
        self, reqs: Sequence[EvaluationRequest], semantic: str, caller: Caller
    ) -> list[Decision]:
        # decide_many stops after the first deny (or permit) for the short-circuit
        # semantics: an evaluation after it is never decided, so it spends no budget.
        return self.tessera.pdp.point.decide_many(reqs, caller, semantic=semantic)

    async def _record(self, record: DecisionRecord) -> None:
        """Returns once the record is durable; ``StoreUnavailable`` (503) otherwise, and
        then the decision is not answered (fail closed)."""
        recorder = self.tessera.pdp.point.recorder
        record_async = getattr(recorder, "record_async", None)
        if record_async is not None:
            await record_async(record)
        else:
            await self._thread(functools.partial(recorder.record, record))

    async def _thread(self, fn: Callable[[], T]) -> T:
        return await self._threads.run(fn)


async def configuration(request: Request) -> Response:
    """AuthZEN §9: PDP metadata."""
    iss = request.app.state.tessera.config.issuer
    return JSONResponse(
        {
            "policy_decision_point": iss,
            "access_evaluation_endpoint": f"{iss}/access/v1/evaluation",
            "access_evaluations_endpoint": f"{iss}/access/v1/evaluations",
            "search_subject_endpoint": f"{iss}/access/v1/search/subject",
            "search_resource_endpoint": f"{iss}/access/v1/search/resource",
            "search_action_endpoint": f"{iss}/access/v1/search/action",
        },
        headers={"Cache-Control": "public, max-age=300"},
    )


def install(app: Any, tessera: Tessera) -> None:
    """Routes (the router answers 405 for other methods and serves the metadata) and the
    front door (``TesseraApp.front``) for the ``POST`` endpoints."""
    api = AuthzenApi(tessera)
    app.front = api
    app.add_route(
        "/.well-known/authzen-configuration",
        configuration,
        methods=["GET"],
        include_in_schema=False,
    )
    for path in api.routes:
        app.add_route(path, api, methods=["POST"], include_in_schema=False)
    app.router.on_shutdown.append(api.close)
