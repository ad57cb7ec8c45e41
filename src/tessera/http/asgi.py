"""The ASGI application: admin API, health, JWKS, request limits and problem+json errors."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tessera import __version__
from tessera.app import Tessera
from tessera.audit.webhook import webhook_of
from tessera.errors import PayloadTooLarge, TesseraError
from tessera.http import admin, oauth, rebac
from tessera.http.problems import install_problem_handlers, problem
from tessera.http.ratelimit import RateLimit
from tessera.http.schemas import Health, Readiness
from tessera.ids import unique_hex

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def declared_too_large(scope: Scope, max_bytes: int) -> bool:
    """Whether the request's ``Content-Length`` is over ``max_bytes`` (or not a number)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value) > max_bytes
            except ValueError:
                return True
    return False


def too_large(max_bytes: int) -> JSONResponse:
    """The body limit's 413 problem."""
    return problem(
        413,
        "payload_too_large",
        "Payload too large",
        f"request bodies are limited to {max_bytes} bytes",
    )


class BodyLimit:
    """Refuse request bodies over the configured size with 413, before any handler runs."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_too_large(scope, self.max_bytes):
            await too_large(self.max_bytes)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(f"request bodies are limited to {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


def request_id(scope: Scope) -> str:
    """The request's well-formed ``X-Request-ID``, or a new one; kept in the scope's state."""
    rid = ""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            rid = value.decode("latin-1")
            break
    if not _REQUEST_ID.fullmatch(rid):
        rid = unique_hex(8)  # unique, not secret: no urandom per request (tessera/ids.py)
    scope.setdefault("state", {})["request_id"] = rid
    return rid


class RequestId:
    """Echo a well-formed ``X-Request-ID`` or assign one (pure ASGI: no extra task)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = (b"x-request-id", request_id(scope).encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


class TesseraApp(FastAPI):
    """FastAPI with a front door (decisions.md 93): a request that ``front`` claims (the
    AuthZEN ``POST`` endpoints, the hottest Tessera has) is answered by it directly, before
    the middleware stack and the router; ``front`` applies the same body and rate limits,
    request id and error handling itself. Everything else goes through FastAPI."""

    front: Any = None  # an ``authzen.AuthzenApi``: ``claims(scope)`` and an ASGI call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if front is not None and front.claims(scope):
            await front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(tessera: Tessera) -> TesseraApp:
    app = TesseraApp(
        title="Tessera",
        version=__version__,
        description="Identity and access management control plane for AI agents.",
    )
    app.state.tessera = tessera
    install_problem_handlers(app)
    app.include_router(admin.router)
    app.include_router(rebac.router)
    __import__("tessera.http.directory").http.directory.install(app)  # PDP directory (#5)
    # AuthZEN PDP: routes and the shortcut to them, inside every middleware added below
    __import__("tessera.http.authzen").http.authzen.install(app, tessera)
    from tessera.http import audit  # audit API, request ids in records, chainer lifecycle

    audit.install(app, tessera)
    __import__("tessera.http.posture").http.posture.install(app, tessera)  # posture, reviews
    oauth.install(app)
    if tessera.behaviour is not None:  # flush learned baselines, findings, events at exit
        app.router.on_shutdown.append(tessera.behaviour.close)
    __import__("tessera.http.console").http.console.install(app)  # approver console (#8)
    if tessera.config.gateway_config_file is not None or tessera.gateway is not None:
        from tessera.gateway.wiring import attach_gateway  # MCP gateway: /mcp/<server>
        from tessera.http import gateway

        gateway.install(app, attach_gateway(tessera))
    if tessera.config.dev_mode:  # the demo's upstream MCP server (examples/gateway)
        __import__("tessera.http.demo_upstream").http.demo_upstream.install(app)
    __import__("tessera.http.signals").http.signals.install(app, tessera)  # tailer, SSF

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers (on the event loop: no worker thread)."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=Readiness,
        tags=["health"],
        responses={503: {"description": "not ready"}},
        response_model_exclude_none=True,
    )
    def readyz() -> Any:
        """Readiness: the store answers, a signing key is available and the node follows the
        event log within the staleness bound."""
        try:
            tessera.store.ping()
            tessera.keyring.active_key()
        except TesseraError as exc:
            return problem(503, "not_ready", "Not ready", exc.message)
        if tessera.tailer.running and not tessera.tailer.is_fresh():  # signals: fail closed
            return problem(503, "stale_state", "Not ready", "the event log is not being followed")
        webhook = webhook_of(tessera.audit.sink)
        if webhook is not None:  # visible, but never a reason to stop serving (docs/audit.md)
            state = webhook.status()
            behind = f"behind: {state['pending']} undelivered"
            return {
                "status": "ready",
                "audit_checkpoint_webhook": "ok" if state["healthy"] else behind,
            }
        return {"status": "ready"}

    @app.get("/.well-known/jwks.json", tags=["keys"])
    def jwks() -> JSONResponse:
        """Tessera's public signing keys (RFC 7517), including retired keys until their
        tokens have expired."""
        return JSONResponse(
            tessera.keyring.jwks(), headers={"Cache-Control": "public, max-age=300"}
        )

    app.add_middleware(RequestId)
    # Per client address and endpoint: rate per second, bursts of twice that (0 disables).
    app.add_middleware(
        RateLimit,
        prefixes=(
            "/oauth/",
            "/access/",
            "/console/api/",
            "/mcp/",
            "/ssf/",
        ),  # /ssf/: pushed SETs are audited
        rate=float(tessera.config.rate_limit),
        burst=float(2 * tessera.config.rate_limit),
    )
    app.add_middleware(BodyLimit, max_bytes=tessera.config.max_request_bytes)
    return app
