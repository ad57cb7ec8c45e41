"""The ASGI application: admin API, health, JWKS, request limits and problem+json errors."""

from __future__ import annotations

import re
import secrets
from typing import Any

from fastapi import FastAPI, Request
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tessera import __version__
from tessera.app import Tessera
from tessera.errors import PayloadTooLarge, TesseraError
from tessera.http import admin, oauth
from tessera.http.problems import install_problem_handlers, problem
from tessera.http.schemas import Health

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class BodyLimit:
    """Refuse request bodies over the configured size with 413, before any handler runs."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    await problem(
                        413,
                        "payload_too_large",
                        "Payload too large",
                        f"request bodies are limited to {self.max_bytes} bytes",
                    )(scope, receive, send)
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


class RequestId(BaseHTTPMiddleware):
    """Echo a well-formed ``X-Request-ID`` or assign one."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        rid = request.headers.get("x-request-id", "")
        if not _REQUEST_ID.fullmatch(rid):
            rid = secrets.token_hex(8)
        request.state.request_id = rid
        response = await call_next(request)
        response.headers["X-Request-ID"] = rid
        return response


def create_app(tessera: Tessera) -> FastAPI:
    app = FastAPI(
        title="Tessera",
        version=__version__,
        description="Identity and access management control plane for AI agents.",
    )
    app.state.tessera = tessera
    install_problem_handlers(app)
    app.include_router(admin.router)
    from tessera.http import audit  # audit API, request ids in records, chainer lifecycle

    audit.install(app, tessera)
    oauth.install(app)

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["health"],
        responses={503: {"description": "not ready"}},
    )
    def readyz() -> Any:
        """Readiness: the store answers and a signing key is available."""
        try:
            tessera.store.ping()
            tessera.keyring.active_key()
        except TesseraError as exc:
            return problem(503, "not_ready", "Not ready", exc.message)
        return {"status": "ready"}

    @app.get("/.well-known/jwks.json", tags=["keys"])
    def jwks() -> JSONResponse:
        """Tessera's public signing keys (RFC 7517), including retired keys until their
        tokens have expired."""
        return JSONResponse(
            tessera.keyring.jwks(), headers={"Cache-Control": "public, max-age=300"}
        )

    app.add_middleware(RequestId)
    app.add_middleware(BodyLimit, max_bytes=tessera.config.max_request_bytes)
    return app
