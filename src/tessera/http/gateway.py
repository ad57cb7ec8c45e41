"""The MCP gateway over HTTP: the streamable HTTP transport (MCP "Transports") as a proxy in
front of each configured upstream, at ``/mcp/<server>``, plus its RFC 9728 metadata.

- ``POST`` carries one JSON-RPC message. Requests are answered with JSON or an SSE stream,
  as the upstream answers; notifications and responses get 202. Batches are refused
  (removed from the protocol in 2025-06-18).
- ``GET`` relays the upstream's server-to-client SSE stream; the session behind it is
  re-checked about once a second and the stream ends when it is revoked.
- ``DELETE`` ends the upstream session.
- Every request is authenticated (``tessera.gateway.resource``); ``tools/call``,
  ``resources/read`` and ``prompts/get`` are decided by the pipeline; ``tools/list`` is
  filtered; methods the gateway does not know are refused (fail closed).
- A refusal is JSON-RPC error ``-32001`` with ``{reason, decision_id}`` only; the upstream
  never sees a refused call, and never sees the agent's token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tessera.errors import TesseraError
from tessera.gateway.authorize import CallVerdict, call_record
from tessera.gateway.config import Upstream
from tessera.gateway.resource import Unauthorized
from tessera.gateway.service import Admission, McpGateway
from tessera.gateway.transport import (
    DENIED,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UPSTREAM_ERROR,
    SseEvent,
    dumps,
    rpc_error,
    sse_events,
)

log = logging.getLogger("tessera.gateway")
MAX_BODY: Final = 4 * 1024 * 1024
MAX_UPSTREAM_JSON: Final = 16 * 1024 * 1024
LIVENESS_EVERY: Final = 1.0
# Methods relayed after authentication alone (lists, handshakes, utilities). Anything not
# here and not decided (tools/call, resources/read, prompts/get) is refused.
PASS_METHODS: Final = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
        "completion/complete",
        "logging/setLevel",
        "resources/unsubscribe",
    }
)
_FORWARD: Final = frozenset({"accept", "content-type", "last-event-id", "mcp-protocol-version"})
_JSON: Final = "application/json"
_SSE: Final = "text/event-stream"


def _gateway(request: Request) -> McpGateway:
    gw = getattr(request.app.state.tessera, "gateway", None)
    if gw is None:  # pragma: no cover - routes are installed only with a gateway
        raise RuntimeError("no gateway configured")
    return gw  # type: ignore[no-any-return]


def _request_id(request: Request) -> str | None:
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else None


def _rpc(
    body: dict[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(dumps(body), status, headers=dict(headers or {}), media_type=_JSON)


def _unauthorized(gw: McpGateway, server: str, err: Unauthorized) -> Response:
    status = 403 if err.error == "insufficient_scope" else 401
    headers = gw.unauthorized_headers(server, err)
    body = {"error": err.error or "invalid_token", "error_description": err.description}
    resp = Response(dumps(body) if err.error else b"", status, media_type=_JSON)
    for name, value in headers:
        resp.headers.append(name, value)
    if err.error == "use_dpop_nonce":
        nonces = gw.guard.nonces
        if nonces is not None:
            resp.headers["DPoP-Nonce"] = nonces.issue(time.time())
    return resp


def _unavailable(exc: Exception, msg_id: Any) -> Response:
    log.warning("gateway: cannot decide now: %s", getattr(exc, "message", type(exc).__name__))
    body = rpc_error(msg_id, INTERNAL_ERROR, "the gateway cannot decide right now")
    return _rpc(body, 503, headers={"Retry-After": "1"})


async def metadata(request: Request) -> Response:
    """RFC 9728 §3: ``GET /.well-known/oauth-protected-resource/mcp/<server>``."""
    gw = _gateway(request)
    server = request.path_params["server"]
    if gw.upstream(server) is None:
        return JSONResponse({"error": "not_found"}, 404)
    return JSONResponse(gw.metadata(server), headers={"Cache-Control": "public, max-age=300"})


async def mcp_endpoint(request: Request) -> Response:
    gw = _gateway(request)
    server = request.path_params["server"]
    up = gw.upstream(server)
    if up is None:
        return JSONResponse({"error": "not_found"}, 404)
    headers = {k.lower(): v for k, v in request.headers.items()}
    origin = headers.get("origin")
    if origin is not None and origin.rstrip("/") != _origin(gw.base_url):
        # MCP transports, security warning: validate Origin against DNS rebinding.
        return JSONResponse({"error": "forbidden_origin"}, 403)
    if request.method == "POST":
        return await _post(gw, up, request, headers)
    try:
        adm = await run_in_threadpool(gw.admit, request.method, server, headers, None, None)
    except Unauthorized as err:
        return _unauthorized(gw, server, err)
    except Exception as exc:
        return _unavailable(exc, None)
    valid, upstream_sid = _upstream_session(gw, server, adm, headers)
    if not valid:
        return Response(b"", 404)
    if request.method == "DELETE":
        return await _delete(gw, up, adm, upstream_sid)
    return await _get(gw, up, adm, headers, upstream_sid)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _upstream_session(
    gw: McpGateway, server: str, adm: Admission, headers: Mapping[str, str]
) -> tuple[bool, str | None]:
    """(valid, upstream session id): the id is None when the request names none; not valid
    when it names one this agent was not given (the transport's 404: start over)."""
    value = headers.get("mcp-session-id")
    if value is None:
        return True, None
    found = gw.binder.unwrap(server, adm.auth.agent.agent, value)
    return found is not None, found


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


def _client(gw: McpGateway) -> httpx.AsyncClient:
    client: httpx.AsyncClient | None = getattr(gw, "_http", None)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )
        gw._http = client  # type: ignore[attr-defined]
    return client


def _client_session_headers(
    gw: McpGateway, server: str, adm: Admission, upstream: httpx.Response
) -> dict[str, str]:
    out: dict[str, str] = {}
    sid = upstream.headers.get("mcp-session-id")
    if sid:
        out["mcp-session-id"] = gw.binder.wrap(server, adm.auth.agent.agent, sid)
    version = upstream.headers.get("mcp-protocol-version")
    if version:
        out["mcp-protocol-version"] = version
    return out


# -- POST ------------------------------------------------------------------------------


async def _post(
    gw: McpGateway, up: Upstream, request: Request, headers: Mapping[str, str]
) -> Response:
    server = up.name
    raw = await request.body()
    msg: Any = None
    parse_problem: dict[str, Any] | None = None
    if len(raw) > MAX_BODY:
        parse_problem = rpc_error(None, INVALID_REQUEST, "the message is too large")
    else:
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            parse_problem = rpc_error(None, PARSE_ERROR, "the body is not JSON")
    rpc_method = msg.get("method") if isinstance(msg, dict) else None
    params = msg.get("params") if isinstance(msg, dict) else None
    try:
        adm = await run_in_threadpool(
            gw.admit,
            "POST",
            server,
            headers,
            rpc_method if isinstance(rpc_method, str) and "id" in msg else None,
            params,
        )
    except Unauthorized as err:
        return _unauthorized(gw, server, err)
    except Exception as exc:  # store or pool trouble: fail closed, never a 500
        return _unavailable(exc, msg.get("id") if isinstance(msg, dict) else None)
    if parse_problem is not None:
        return _rpc(parse_problem, 400)
    if isinstance(msg, list):
        return _rpc(rpc_error(None, INVALID_REQUEST, "JSON-RPC batches are not supported"), 400)
    if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
        return _rpc(rpc_error(None, INVALID_REQUEST, "not a JSON-RPC 2.0 message"), 400)
    valid, upstream_sid = _upstream_session(gw, server, adm, headers)
    if not valid:
        await _failed(gw, adm, request, "unknown_session")
        return _rpc(rpc_error(msg.get("id"), INVALID_REQUEST, "unknown session"), 404)
    is_request = "id" in msg and isinstance(rpc_method, str)
    if not is_request:  # a notification, or the client's answer to a server request
        if "method" in msg and not (
            isinstance(rpc_method, str) and rpc_method.startswith("notifications/")
        ):
            # INVARIANT: nothing undecided reaches the upstream: a "tools/call" sent as a
            # notification (no id) would otherwise bypass the decision.
            return _rpc(rpc_error(None, INVALID_REQUEST, "only notifications/* may omit id"), 400)
        if "method" not in msg and not ("id" in msg and ("result" in msg or "error" in msg)):
            return _rpc(rpc_error(None, INVALID_REQUEST, "not a JSON-RPC 2.0 message"), 400)
        return await _forward(gw, up, adm, headers, upstream_sid, raw, None, None, request)
    msg_id = msg["id"]
    if headers.get("mcp-method") not in (None, rpc_method):
        await _failed(gw, adm, request, "mcp_method_mismatch")
        return _rpc(rpc_error(msg_id, INVALID_REQUEST, "Mcp-Method does not match the body"), 400)
    if adm.invalid_params is not None:
        return _rpc(rpc_error(msg_id, INVALID_PARAMS, adm.invalid_params))
    if adm.verdict is not None and adm.call is not None:
        name_header = headers.get("mcp-name")
        if name_header is not None and name_header != adm.call.name:
            await _failed(gw, adm, request, "mcp_name_mismatch")
            return _rpc(rpc_error(msg_id, INVALID_REQUEST, "Mcp-Name does not match the body"), 400)
        refused = await _enforce(gw, up, adm, msg_id, request)
        if refused is not None:
            return refused
        return await _forward(gw, up, adm, headers, upstream_sid, raw, msg_id, rpc_method, request)
    if rpc_method not in PASS_METHODS:
        return _rpc(rpc_error(msg_id, METHOD_NOT_FOUND, f"method {rpc_method!r} is not available"))
    return await _forward(gw, up, adm, headers, upstream_sid, raw, msg_id, rpc_method, request)


async def _release(gw: McpGateway, adm: Admission) -> None:
    if adm.verdict is not None and adm.verdict.reserved:
        await run_in_threadpool(gw.gate.release, adm.auth.agent.claims.sid, adm.verdict)


async def _record(
    gw: McpGateway, adm: Admission, outcome: str, request: Request, **extra: Any
) -> bool:
    """The ``gateway.call`` record, durable before the gateway acts (fail closed)."""
    if adm.call is None or adm.verdict is None:
        return True  # nothing was decided, so there is no call to record
    entry = call_record(
        call=adm.call,
        agent=adm.auth.agent,
        verdict=adm.verdict,
        outcome=outcome,
        service_id=gw.service_id,
        request_id=_request_id(request),
        upstream_jti=adm.credential_jti,
        extra=extra or None,
    )
    try:
        await gw.audit.record_async(entry)
    except TesseraError as exc:
        log.warning("gateway: audit record failed: %s", exc.message)
        return False
    return True


def _denied(msg_id: Any, verdict: CallVerdict) -> Response:
    data = {"reason": verdict.reason_code, "decision_id": verdict.decision.decision_id}
    return _rpc(rpc_error(msg_id, DENIED, "denied", data))


async def _enforce(
    gw: McpGateway, up: Upstream, adm: Admission, msg_id: Any, request: Request
) -> Response | None:
    """Apply the decision: None to forward the call, else the answer to the agent."""
    verdict = adm.verdict
    if verdict is None or adm.call is None:
        return None
    if verdict.verdict == "approval_required":
        return await _approval(gw, up, adm, msg_id, request)
    if not verdict.decision.allowed:
        if not await _record(gw, adm, verdict.verdict, request):
            return _rpc(rpc_error(msg_id, INTERNAL_ERROR, "the call cannot be recorded"))
        return _denied(msg_id, verdict)
    # The allow record is written while the upstream works; the agent gets no answer before
    # it is durable (decisions.md 45), and a ledger failure turns the answer into an error.
    adm.evidence = asyncio.ensure_future(_record(gw, adm, "allow", request))
    return None


async def _evidence(adm: Admission) -> bool:
    """Wait for the allow record of this call, if one is being written."""
    task = adm.evidence
    return True if task is None else bool(await task)


def _unrecorded(msg_id: Any) -> Response:
    return _rpc(rpc_error(msg_id, INTERNAL_ERROR, "the call cannot be recorded"), 503)


async def _approval(
    gw: McpGateway, up: Upstream, adm: Admission, msg_id: Any, request: Request
) -> Response | None:
    """``approval_required``: ask the approval port (CIBA), wait up to ``approval_wait``
    polling its status without blocking the loop, then redeem; else tell the agent how to
    get the approval (COORDINATION contract)."""
    verdict, call, agent = adm.verdict, adm.call, adm.auth.agent
    if verdict is None or call is None:
        return None
    data: dict[str, Any] = {
        "reason": "approval_required",
        "decision_id": verdict.decision.decision_id,
    }
    approvals = gw.approvals
    if approvals is None:
        await _record(gw, adm, "approval_required", request)
        return _rpc(rpc_error(msg_id, DENIED, "approval required", data))
    to_approve = gw.gate.approval_call(call, agent, adm.auth.jkt, verdict)
    try:
        ticket = await run_in_threadpool(
            approvals.request_for_call, to_approve, request_id=_request_id(request)
        )
    except TesseraError as exc:
        log.warning("gateway: approval request failed: %s", exc.message)
        await _record(gw, adm, "approval_required", request, approval="unavailable")
        return _rpc(rpc_error(msg_id, DENIED, "approval required", data))
    deadline = time.monotonic() + gw.config.approval_wait
    while ticket.status == "pending" and time.monotonic() < deadline:
        await asyncio.sleep(max(0.05, min(float(ticket.interval), deadline - time.monotonic())))
        ticket = await run_in_threadpool(approvals.status, ticket.auth_req_id)
    if ticket.status == "approved":
        redeemed = await run_in_threadpool(
            approvals.redeem_for_call, ticket.auth_req_id, to_approve
        )
        if redeemed and await run_in_threadpool(gw.gate.reserve_approved, agent, verdict):
            await run_in_threadpool(gw.credential_for, up, adm, call.action)
            if await _record(gw, adm, "allow", request, approval=ticket.auth_req_id):
                return None
            await _release(gw, adm)
            return _rpc(rpc_error(msg_id, INTERNAL_ERROR, "the call cannot be recorded"))
        data["reason"] = "budget_exhausted" if redeemed else "approval_denied"
        await _record(gw, adm, "deny", request, approval=ticket.auth_req_id)
        return _rpc(rpc_error(msg_id, DENIED, "denied", data))
    if ticket.status in ("denied", "expired", "cancelled"):
        data["reason"] = f"approval_{ticket.status}"
        await _record(gw, adm, "deny", request, approval=ticket.auth_req_id)
        return _rpc(rpc_error(msg_id, DENIED, "denied", data))
    data.update(
        {
            "auth_req_id": ticket.auth_req_id,
            "expires_in": ticket.expires_in,
            "interval": ticket.interval,
            "grant_type": "urn:openid:params:grant-type:ciba",
            "token_endpoint": gw.token_endpoint,
        }
    )
    await _record(gw, adm, "approval_required", request, approval=ticket.auth_req_id)
    return _rpc(rpc_error(msg_id, DENIED, "approval required", data))


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
        req = client.build_request("POST", up.url, content=raw, headers=out, timeout=up.timeout)
        resp = await client.send(req, stream=True)
    except httpx.HTTPError as exc:
        log.warning("gateway: upstream %s unreachable: %s", up.name, type(exc).__name__)
        await _failed(gw, adm, request, "unreachable")
        if msg_id is None:
            return Response(b"", 502)
        return _rpc(rpc_error(msg_id, UPSTREAM_ERROR, "the upstream server is unavailable"), 502)
    back = _client_session_headers(gw, up.name, adm, resp)
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if resp.status_code == 202 or (msg_id is None and resp.status_code < 300):
        await resp.aclose()
        return Response(b"", 202 if resp.status_code == 202 else resp.status_code, headers=back)
    if ctype == _JSON and msg_id is not None and resp.status_code < 500:
        # One JSON-RPC message; an error answer may come with a 4xx status (it is the
        # upstream's answer to an allowed request, so it is relayed with its status).
        try:
            message = json.loads(await _read_limited(resp))
        except (ValueError, UnicodeDecodeError, httpx.HTTPError):
            message = None
        finally:
            await resp.aclose()
        if isinstance(message, dict) and message.get("id") == msg_id:
            message = await _transform(gw, up, adm, rpc_method, msg_id, message, request)
            if not await _evidence(adm):
                return _unrecorded(msg_id)
            return Response(dumps(message), resp.status_code, headers=back, media_type=_JSON)
        await _failed(gw, adm, request, f"bad_response_{resp.status_code}")
        if resp.status_code == 404 and upstream_sid:
            return _rpc(rpc_error(msg_id, INVALID_REQUEST, "session expired"), 404)
        return _rpc(rpc_error(msg_id, UPSTREAM_ERROR, "the upstream server failed"), 502)
    if resp.status_code == 404 and upstream_sid:
        await resp.aclose()
        await _failed(gw, adm, request, "session_expired")
        return _rpc(rpc_error(msg_id, INVALID_REQUEST, "session expired"), 404)
    if resp.status_code >= 300 or ctype != _SSE:
        await resp.aclose()
        log.warning("gateway: upstream %s answered %s", up.name, resp.status_code)
        await _failed(gw, adm, request, f"http_{resp.status_code}")
        if msg_id is None:
            return Response(b"", 502)
        return _rpc(rpc_error(msg_id, UPSTREAM_ERROR, "the upstream server failed"), 502)
    return StreamingResponse(
        _relay(gw, up, adm, resp, rpc_method, msg_id, request),
        200,
        headers={**back, "cache-control": "no-cache"},
        media_type=_SSE,
    )


async def _read_limited(resp: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > MAX_UPSTREAM_JSON:
            raise ValueError("upstream response too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def _failed(gw: McpGateway, adm: Admission, request: Request, why: str) -> None:
    """An allowed call did not run: release its reservation and say so in the ledger."""
    if adm.verdict is None or adm.call is None:
        return
    await _evidence(adm)
    await _release(gw, adm)
    allowed = adm.verdict.decision.allowed
    await _record(
        gw, adm, "not_executed" if allowed else adm.verdict.verdict, request, upstream=why
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
    resp: httpx.Response,
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
        async for event in sse_events(resp.aiter_raw()):
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
    except httpx.HTTPError as exc:
        log.warning("gateway: upstream %s stream broke: %s", up.name, type(exc).__name__)
    finally:
        await resp.aclose()
        if not answered and adm.verdict is not None:
            await _failed(gw, adm, request, "no_response")


# -- GET and DELETE --------------------------------------------------------------------


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
        req = client.build_request(
            "GET", up.url, headers=out, timeout=httpx.Timeout(None, connect=5.0)
        )
        resp = await client.send(req, stream=True)
    except httpx.HTTPError:
        return Response(b"", 502)
    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    if resp.status_code != 200 or ctype != _SSE:
        await resp.aclose()
        return Response(b"", resp.status_code if resp.status_code in (404, 405) else 502)

    async def stream() -> AsyncIterator[bytes]:
        checked = time.monotonic()
        try:
            async for event in sse_events(resp.aiter_raw()):
                if time.monotonic() - checked >= LIVENESS_EVERY:
                    checked = time.monotonic()
                    if not await run_in_threadpool(gw.still_live, adm.auth):
                        return  # INVARIANT: a revoked session gets nothing more
                yield event.encode()
        except httpx.HTTPError:
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
            "DELETE", up.url, headers=_upstream_headers(adm, {}, upstream_sid), timeout=up.timeout
        )
    except httpx.HTTPError:
        return Response(b"", 502)
    return Response(b"", resp.status_code if resp.status_code in (200, 204, 404, 405) else 502)


def install(app: Any, gw: McpGateway) -> None:
    app.add_route(
        "/.well-known/oauth-protected-resource/mcp/{server}",
        metadata,
        methods=["GET"],
        include_in_schema=False,
    )
    app.add_route(
        "/mcp/{server}", mcp_endpoint, methods=["POST", "GET", "DELETE"], include_in_schema=False
    )

    async def close_upstreams() -> None:
        client = getattr(gw, "_http", None)
        if client is not None:
            await client.aclose()

    app.router.on_shutdown.append(close_upstreams)


__all__ = ["SseEvent", "install"]
