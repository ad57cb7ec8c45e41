"""The upstream half of the gateway: forwarding one MCP message over the streamable HTTP
transport and relaying the answer (JSON or SSE), the GET stream and DELETE; never the
agent's token, never a header outside the allow-list. Used by ``tessera.http.gateway``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tessera.gateway.config import Upstream
from tessera.gateway.service import Admission, McpGateway
from tessera.gateway.transport import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    UPSTREAM_ERROR,
    SseEvent,
    dumps,
    rpc_error,
    sse_events,
)
from tessera.http.gateway_calls import _evidence, _failed, _rpc, _unrecorded
from tessera.http.gateway_client import UpstreamClient, UpstreamError, UpstreamResponse

log = logging.getLogger("tessera.gateway")
MAX_UPSTREAM_JSON: Final = 16 * 1024 * 1024
CONNECT_TIMEOUT: Final = 5.0
LIVENESS_EVERY: Final = 1.0
_FORWARD: Final = frozenset({"accept", "content-type", "last-event-id", "mcp-protocol-version"})
_JSON: Final = "application/json"
_SSE: Final = "text/event-stream"


def _upstream_headers(
    adm: Admission, headers: Mapping[str, str], upstream_sid: str | None
) -> dict[str, str]:
    out = {k: v for k, v in headers.items() if k in _FORWARD or k in ("mcp-method", "mcp-name")}
    out.setdefault("accept", f"{_JSON}, {_SSE}")
    if upstream_sid:
        out["mcp-session-id"] = upstream_sid
    if adm.credential is not None:
        out[adm.credential[0]] = adm.credential[1]
    return out


def _client(gw: McpGateway) -> UpstreamClient:
    client: UpstreamClient | None = getattr(gw, "_http", None)
    if client is None or client.closed:
        client = UpstreamClient(connect_timeout=CONNECT_TIMEOUT)
        gw._http = client  # type: ignore[attr-defined]
    return client


def _client_session_headers(
    gw: McpGateway, server: str, adm: Admission, upstream: UpstreamResponse
) -> dict[str, str]:
    out: dict[str, str] = {}
    sid = upstream.headers.get("mcp-session-id")
    if sid:
        out["mcp-session-id"] = gw.binder.wrap(server, adm.auth.agent.agent, sid)
    version = upstream.headers.get("mcp-protocol-version")
    if version:
        out["mcp-protocol-version"] = version
    return out


async def _forward(
    gw: McpGateway,
    up: Upstream,
    adm: Admission,
    headers: Mapping[str, str],
    upstream_sid: str | None,
    raw: bytes,
    msg_id: Any,
    rpc_method: str | None,
    request: Request,
) -> Response:
    client = _client(gw)
    out = _upstream_headers(adm, headers, upstream_sid)
    out["content-type"] = _JSON
    try:
        # Only a request nothing was decided for (a list, a handshake) may be sent twice
        # (the stale keep-alive race); never a decided call, a notification or a response.
        safe = adm.verdict is None and msg_id is not None
        resp = await client.request(
            "POST", up.url, out, raw, read_timeout=up.timeout, retry_safe=safe
        )
    except UpstreamError as exc:
        log.warning("gateway: upstream %s unreachable: %s", up.name, exc.kind)
        await _failed(gw, adm, request, "unreachable")
        if msg_id is None:
            return Response(b"", 502)
        return _rpc(rpc_error(msg_id, UPSTREAM_ERROR, "the upstream server is unavailable"), 502)
    back = _client_session_headers(gw, up.name, adm, resp)
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if resp.status == 202 or (msg_id is None and resp.status < 300):
        await resp.aclose()
        return Response(b"", 202 if resp.status == 202 else resp.status, headers=back)
    if ctype == _JSON and msg_id is not None and resp.status < 500:
        # One JSON-RPC message; an error answer may come with a 4xx status (it is the
        # upstream's answer to an allowed request, so it is relayed with its status).
        body = b""
        try:
            body = await resp.read(MAX_UPSTREAM_JSON, up.timeout)
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError, UpstreamError):
            message = None
        finally:
            await resp.aclose()
        if isinstance(message, dict) and message.get("id") == msg_id:
            changed = await _transform(gw, up, adm, rpc_method, msg_id, message, request)
            if not await _evidence(adm):
                return _unrecorded(msg_id)
            # Only a tools/list answer is rewritten; any other is relayed as it came.
            answer = dumps(changed) if rpc_method == "tools/list" else body
            return Response(answer, resp.status, headers=back, media_type=_JSON)
        await _failed(gw, adm, request, f"bad_response_{resp.status}")
        if resp.status == 404 and upstream_sid:
            return _rpc(rpc_error(msg_id, INVALID_REQUEST, "session expired"), 404)
        return _rpc(rpc_error(msg_id, UPSTREAM_ERROR, "the upstream server failed"), 502)
    if resp.status == 404 and upstream_sid:
        await resp.aclose()
        await _failed(gw, adm, request, "session_expired")
        return _rpc(rpc_error(msg_id, INVALID_REQUEST, "session expired"), 404)
    if resp.status >= 300 or ctype != _SSE:
        await resp.aclose()
        log.warning("gateway: upstream %s answered %s", up.name, resp.status)
        await _failed(gw, adm, request, f"http_{resp.status}")
        if msg_id is None:
            return Response(b"", 502)
        return _rpc(rpc_error(msg_id, UPSTREAM_ERROR, "the upstream server failed"), 502)
    return StreamingResponse(
        _relay(gw, up, adm, resp, rpc_method, msg_id, request),
        200,
        headers={**back, "cache-control": "no-cache"},
        media_type=_SSE,
    )


async def _transform(
    gw: McpGateway,
    up: Upstream,
    adm: Admission,
    rpc_method: str | None,
    msg_id: Any,
    message: Any,
    request: Request,
) -> Any:
    """Act on the upstream's answer to our request: filter ``tools/list``; release the
    reservation when a decided call came back as a JSON-RPC error (it did not run)."""
    if not isinstance(message, dict) or message.get("id") != msg_id:
        return message
    if rpc_method == "tools/list" and isinstance(message.get("result"), dict):
        tools = message["result"].get("tools")
        if isinstance(tools, list):
            names = [t.get("name") for t in tools if isinstance(t, dict)]
            visible = await run_in_threadpool(
                gw.gate.visible_tools,
                up.name,
                adm.auth.agent,
                [n for n in names if isinstance(n, str)],
            )
            message["result"]["tools"] = [
                t for t in tools if isinstance(t, dict) and t.get("name") in visible
            ]
    elif adm.verdict is not None and "error" in message:
        await _failed(gw, adm, request, "rpc_error")
    return message


async def _relay(
    gw: McpGateway,
    up: Upstream,
    adm: Admission,
    resp: UpstreamResponse,
    rpc_method: str | None,
    msg_id: Any,
    request: Request,
) -> AsyncIterator[bytes]:
    answered = False
    if not await _evidence(adm):
        await resp.aclose()
        answered = True  # the call ran; only its evidence failed
        yield SseEvent().encode(dumps(rpc_error(msg_id, INTERNAL_ERROR, "unrecorded")).decode())
        return
    try:
        async for event in sse_events(resp.iter_body(up.timeout)):
            data = "\n".join(event.data)
            if msg_id is not None and not answered and data:
                try:
                    message = json.loads(data)
                except ValueError:
                    message = None
                if (
                    isinstance(message, dict)
                    and message.get("id") == msg_id
                    and ("result" in message or "error" in message)
                ):
                    answered = True
                    message = await _transform(gw, up, adm, rpc_method, msg_id, message, request)
                    yield event.encode(dumps(message).decode())
                    continue
            yield event.encode()
    except UpstreamError as exc:
        log.warning("gateway: upstream %s stream broke: %s", up.name, exc.kind)
    finally:
        await resp.aclose()
        if not answered and adm.verdict is not None:
            await _failed(gw, adm, request, "no_response")


async def _get(
    gw: McpGateway,
    up: Upstream,
    adm: Admission,
    headers: Mapping[str, str],
    upstream_sid: str | None,
) -> Response:
    if _SSE not in headers.get("accept", ""):
        return Response(b"", 406)
    client = _client(gw)
    out = _upstream_headers(adm, headers, upstream_sid)
    out["accept"] = _SSE
    try:
        resp = await client.request("GET", up.url, out, read_timeout=up.timeout, retry_safe=True)
    except UpstreamError:
        return Response(b"", 502)
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if resp.status != 200 or ctype != _SSE:
        await resp.aclose()
        return Response(b"", resp.status if resp.status in (404, 405) else 502)

    async def stream() -> AsyncIterator[bytes]:
        checked = time.monotonic()
        try:
            async for event in sse_events(resp.iter_body(None)):
                if time.monotonic() - checked >= LIVENESS_EVERY:
                    checked = time.monotonic()
                    if not await run_in_threadpool(gw.still_live, adm.auth):
                        return  # INVARIANT: a revoked session gets nothing more
                yield event.encode()
        except UpstreamError:
            return
        finally:
            await resp.aclose()

    back = _client_session_headers(gw, up.name, adm, resp)
    return StreamingResponse(
        stream(), 200, headers={**back, "cache-control": "no-cache"}, media_type=_SSE
    )


async def _delete(
    gw: McpGateway, up: Upstream, adm: Admission, upstream_sid: str | None
) -> Response:
    if upstream_sid is None:
        return Response(b"", 400)
    try:
        resp = await _client(gw).request(
            "DELETE", up.url, _upstream_headers(adm, {}, upstream_sid), read_timeout=up.timeout
        )
        await resp.read(MAX_UPSTREAM_JSON, up.timeout)
    except UpstreamError:
        return Response(b"", 502)
    return Response(b"", resp.status if resp.status in (200, 204, 404, 405) else 502)
