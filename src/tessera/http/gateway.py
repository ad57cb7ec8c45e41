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

import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera.audit.record import current_request_id
from tessera.gateway.config import Upstream
from tessera.gateway.resource import Unauthorized
from tessera.gateway.service import Admission, McpGateway
from tessera.gateway.transport import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    dumps,
    rpc_error,
)
from tessera.http.gateway_calls import _enforce, _failed, _off_loop, _rpc
from tessera.http.gateway_upstream import _delete, _forward, _get

log = logging.getLogger("tessera.gateway")
MAX_BODY: Final = 4 * 1024 * 1024
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
_JSON: Final = "application/json"


def _gateway(request: Request) -> McpGateway:
    gw = getattr(request.app.state.tessera, "gateway", None)
    if gw is None:  # pragma: no cover - routes are installed only with a gateway
        raise RuntimeError("no gateway configured")
    return gw  # type: ignore[no-any-return]


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
        adm = await _off_loop(gw, gw.admit, request.method, server, headers, None, None)
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
        adm = await _off_loop(
            gw,
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
    if adm.verdict is not None and adm.verdict.token_refused:
        # Authentication passed, the decision found the session ended: the agent gets the
        # 401 invalid_token it would have got a moment later (RFC 6750 §3.1), so a client
        # that renews its token does; the call is recorded as the deny it was.
        await _failed(gw, adm, request, "invalid_token")
        return _unauthorized(
            gw, server, Unauthorized("invalid_token", "the access token is not valid")
        )
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


# -- GET and DELETE --------------------------------------------------------------------


class GatewayFastPath:
    """ASGI: ``/mcp/<server>`` and its metadata answered here, without walking the
    application's route table (about a hundred routes) and the exception middleware per
    call. It sits inside the request-id, rate-limit and body-limit middleware, so those
    still apply. The routes stay registered (same matching, ``405`` for other methods,
    trailing-slash redirects); this only takes the exact matches first. An exception a
    handler raises gets the application's handler for its type, as through the router."""

    def __init__(self, app: ASGIApp, gw: McpGateway) -> None:
        self.app = app
        self.gw = gw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            endpoint: Any = None
            if path.startswith("/mcp/") and scope["method"] in ("POST", "GET", "DELETE"):
                endpoint = mcp_endpoint
                server = path[5:]
            elif path.startswith(_WELL_KNOWN) and scope["method"] == "GET":
                endpoint = metadata
                server = path[len(_WELL_KNOWN) :]
            if endpoint is not None and server and "/" not in server:
                scope["path_params"] = {"server": server}
                await self._serve(endpoint, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, endpoint: Any, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        rid = scope.get("state", {}).get("request_id")
        token = current_request_id.set(rid if isinstance(rid, str) else None)
        post = scope["method"] == "POST"
        gw: Any = self.gw
        if post:  # POSTs in flight, until their answer (JSON or SSE) is sent: see _off_loop
            gw._posts = getattr(gw, "_posts", 0) + 1
        try:
            try:
                response = await endpoint(request)
            except Exception as exc:
                handler = _handler_for(scope.get("app"), exc)
                if handler is None:
                    raise
                response = await handler(request, exc)
            await response(scope, receive, send)
        finally:
            if post:
                gw._posts -= 1
            current_request_id.reset(token)


_WELL_KNOWN: Final = "/.well-known/oauth-protected-resource/mcp/"


def _handler_for(app: Any, exc: Exception) -> Any:
    """The application's exception handler for ``exc`` (as ``ExceptionMiddleware`` finds
    it), but not the catch-all for ``Exception``: that one stays with the outer
    ``ServerErrorMiddleware``."""
    handlers = getattr(app, "exception_handlers", None) or {}
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None


def install(app: Any, gw: McpGateway) -> None:
    app.add_middleware(GatewayFastPath, gw=gw)
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
        pool = getattr(gw, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    app.router.on_shutdown.append(close_upstreams)


__all__ = ["install"]
