"""Shared Signals on the wire, and the server lifecycle of the node's event tailer.

Transmitter (OpenID SSF 1.0): ``GET /.well-known/ssf-configuration`` (§7.1); stream
management at ``/ssf/streams`` (POST create 201, GET read one or all, PATCH update, PUT
replace, DELETE 204; §8.1.1), ``/ssf/status`` (GET/POST, §8.1.2), ``/ssf/subjects:add``
(200) and ``/ssf/subjects:remove`` (204, §8.1.3), ``/ssf/verify`` (204, §8.1.4), and RFC
8936 poll delivery at ``/ssf/poll/{stream_id}``. These require ``Authorization: Bearer``
with a Tessera service token carrying scope ``ssf.manage`` (or an API key of a service with
that scope; decisions.md 12, 17); errors are problem+json.

Receiver: ``POST /ssf/events`` accepts a pushed SET (RFC 8935 §2): ``202`` on success,
``400`` with ``{"err", "description"}`` (§2.3) when it is refused.

``install`` also starts the node's event tailer and the SET push worker with the server and
stops them at shutdown.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tessera.app import Tessera
from tessera.errors import InvalidInput, TesseraError, Unauthenticated
from tessera.http.admin import Actor, TesseraDep
from tessera.http.problems import problem
from tessera.pdp.callers import ServiceAuthenticator
from tessera.signals.events import decode_consistency_token
from tessera.signals.receiver import MAX_SET_BYTES, SetRejected

SSF_SCOPE = "ssf.manage"
MAX_BODY = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store"}


def _tessera(request: Request) -> Tessera:
    t: Tessera = request.app.state.tessera
    return t


def _fail(exc: TesseraError) -> Response:
    headers = dict(_NO_STORE)
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="tessera"'
    return problem(exc.status, exc.code, exc.title, exc.message, headers=headers)


async def _json(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise InvalidInput(f"request bodies are limited to {MAX_BODY} bytes")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the request body is not JSON") from None


def _managed(
    fn: Callable[[Tessera, str, Request, Any], Any], *, status: int = 200
) -> Callable[[Request], Any]:
    """A stream-management endpoint: authenticate the receiver, parse JSON, run ``fn``."""

    async def endpoint(request: Request) -> Response:
        t = _tessera(request)
        try:
            auth: ServiceAuthenticator = request.app.state.ssf_callers
            caller = await run_in_threadpool(
                auth.authenticate, request.headers.get("authorization"), t.clock.timestamp()
            )
            body = await _json(request) if request.method in ("POST", "PATCH", "PUT") else {}
            result = await run_in_threadpool(fn, t, caller.service_id, request, body)
        except TesseraError as exc:
            return _fail(exc)
        if status == 204 or result is None:
            return Response(status_code=204 if status == 204 else 200, headers=_NO_STORE)
        return JSONResponse(result, status_code=status, headers=_NO_STORE)

    return endpoint


def _stream_id(request: Request) -> str | None:
    value = request.query_params.get("stream_id")
    if value is not None and not 0 < len(value) <= 64:
        raise InvalidInput("stream_id is malformed")
    return value


def _create(t: Tessera, svc: str, _r: Request, body: Any) -> Any:
    return t.signals.transmitter.create(svc, body)


def _read(t: Tessera, svc: str, r: Request, _b: Any) -> Any:
    return t.signals.transmitter.read(svc, _stream_id(r))


def _patch(t: Tessera, svc: str, _r: Request, body: Any) -> Any:
    return t.signals.transmitter.update(svc, body, replace_all=False)


def _put(t: Tessera, svc: str, _r: Request, body: Any) -> Any:
    return t.signals.transmitter.update(svc, body, replace_all=True)


def _delete(t: Tessera, svc: str, r: Request, _b: Any) -> Any:
    t.signals.transmitter.delete(svc, _stream_id(r))


def _status(t: Tessera, svc: str, r: Request, body: Any) -> Any:
    if r.method == "GET":
        return t.signals.transmitter.status(svc, _stream_id(r))
    return t.signals.transmitter.set_status(svc, body)


def _add_subject(t: Tessera, svc: str, _r: Request, body: Any) -> Any:
    t.signals.transmitter.set_subject(svc, body, included=True)


def _remove_subject(t: Tessera, svc: str, _r: Request, body: Any) -> Any:
    t.signals.transmitter.set_subject(svc, body, included=False)


def _verify(t: Tessera, svc: str, _r: Request, body: Any) -> Any:
    t.signals.transmitter.verify(svc, body)
    t.signals.push.wake()


def _poll(t: Tessera, svc: str, r: Request, body: Any) -> Any:
    return t.signals.transmitter.poll(svc, r.path_params["stream_id"], body)


_STREAMS = {
    "POST": _managed(_create, status=201),
    "GET": _managed(_read),
    "PATCH": _managed(_patch),
    "PUT": _managed(_put),
    "DELETE": _managed(_delete, status=204),
}


async def streams(request: Request) -> Response:
    """SSF 1.0 §8.1.1: stream configuration (create, read, update, replace, delete)."""
    result: Response = await _STREAMS[request.method](request)
    return result


async def configuration(request: Request) -> Response:
    """SSF 1.0 §7.1: transmitter configuration metadata."""
    return JSONResponse(_tessera(request).signals.transmitter.metadata())


async def receive(request: Request) -> Response:
    """RFC 8935 §2.2: a transmitter pushes one SET."""
    t = _tessera(request)
    raw = await request.body()
    if len(raw) > MAX_SET_BYTES:
        return _set_error("invalid_request", "the SET is too large")
    if not t.signals.receiver.enabled:
        return _set_error("access_denied", "this Tessera accepts no SETs")
    rid = getattr(request.state, "request_id", None)
    try:
        await run_in_threadpool(
            t.signals.receiver.receive, raw, request.headers.get("content-type"), rid
        )
    except SetRejected as exc:
        return _set_error(exc.code, exc.message)
    except TesseraError as exc:  # the store is down: the transmitter retries later
        return _fail(exc)
    return Response(status_code=202)


def at_least(tessera: Tessera, body: Any) -> None:
    """A PEP that wrote something (e.g. revoked a session) may send the write's consistency
    token as ``context.consistency_token``: the decision waits until this node's tailer has
    reached it (bounded by the staleness bound), else the request is refused
    (``invalid_consistency_token`` 400 / ``stale_state`` 503)."""
    ctx = body.get("context") if isinstance(body, dict) else None
    token = ctx.get("consistency_token") if isinstance(ctx, dict) else None
    if token is not None:
        tessera.tailer.ensure_fresh(decode_consistency_token(token))


def _set_error(err: str, description: str) -> Response:
    return JSONResponse({"err": err, "description": description}, status_code=400)


router = APIRouter(prefix="/admin/v1/signals", tags=["signals"])


class TailerOut(BaseModel):
    seq: int = Field(description="last event sequence applied to this node's caches")
    age: float = Field(description="seconds since the last complete read of the log")
    fresh: bool = Field(description="false: this node denies with stale_state")
    staleness_bound: float
    running: bool
    wakeups: int = Field(description="LISTEN/NOTIFY wake-ups received")


@router.get("/tailer", response_model=TailerOut)
def tailer_state(tessera: TesseraDep, _actor: Actor) -> dict[str, Any]:
    """This node's position in the event log and its freshness (DESIGN 6)."""
    t = tessera.tailer
    age = t.age()
    return {
        "seq": t.seq,
        "age": age if age != float("inf") else 1e9,
        "fresh": t.is_fresh(),
        "staleness_bound": t.settings.staleness,
        "running": t.running,
        "wakeups": t.wakeups,
    }


def install(app: FastAPI, tessera: Tessera) -> None:
    """Wire the tailer and push-worker lifecycle and the SSF routes into the server app."""
    app.include_router(router)
    app.state.ssf_callers = ServiceAuthenticator(
        tessera.keyring.lookup, tessera.config.issuer, tessera.store, scope=SSF_SCOPE
    )
    app.router.on_startup.append(tessera.tailer.start)
    app.router.on_startup.append(tessera.signals.start)
    app.router.on_shutdown.append(tessera.signals.stop)
    app.router.on_shutdown.append(tessera.tailer.stop)
    add = app.add_route
    add("/.well-known/ssf-configuration", configuration, methods=["GET"], include_in_schema=False)
    add(
        "/ssf/streams",
        streams,
        methods=["POST", "GET", "PATCH", "PUT", "DELETE"],
        include_in_schema=False,
    )
    add("/ssf/status", _managed(_status), methods=["GET", "POST"], include_in_schema=False)
    add("/ssf/subjects:add", _managed(_add_subject), methods=["POST"], include_in_schema=False)
    add(
        "/ssf/subjects:remove",
        _managed(_remove_subject, status=204),
        methods=["POST"],
        include_in_schema=False,
    )
    add("/ssf/verify", _managed(_verify, status=204), methods=["POST"], include_in_schema=False)
    add("/ssf/poll/{stream_id}", _managed(_poll), methods=["POST"], include_in_schema=False)
    add("/ssf/events", receive, methods=["POST"], include_in_schema=False)
