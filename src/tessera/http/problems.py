"""RFC 9457 problem+json bodies for the admin API; no internals, no input echoed."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from tessera.errors import TesseraError, Unauthenticated

log = logging.getLogger("tessera.http")

PROBLEM_JSON = "application/problem+json"


def problem(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:tessera:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors()[:20]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        # Only location and message: the offending value may be a secret.
        out.append({"field": loc or "(body)", "message": str(err.get("msg", "invalid"))[:200]})
    return out


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(TesseraError)
    async def _tessera_error(_req: Request, exc: TesseraError) -> JSONResponse:
        headers = (
            {"WWW-Authenticate": 'Bearer realm="tessera"'}
            if isinstance(exc, Unauthenticated)
            else None
        )
        if exc.status >= 500:
            log.warning("request failed: %s (%s)", exc.code, exc.detail or exc.message)
        return problem(exc.status, exc.code, exc.title, exc.message, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(
            400,
            "invalid_input",
            "Invalid input",
            "the request does not match the schema",
            {"errors": _validation_errors(exc)},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
            415: "unsupported_media_type",
        }.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem(
            exc.status_code,
            code,
            detail or code.replace("_", " "),
            None,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return problem(
            500, "internal_error", "Internal error", "the server could not complete the request"
        )
