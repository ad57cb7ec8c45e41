"""CIBA Core 1.0 on the OAuth edge (issue 8): the backchannel authentication endpoint (§7)
and the CIBA grant at the token endpoint (§10.1). Plain Starlette routes, OAuth error JSON
(§13: 400, 401 ``invalid_client``, 403 ``access_denied``), ``Cache-Control: no-store``."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tessera.app import Tessera
from tessera.approvals.ciba import CIBA_GRANT, CibaRequest
from tessera.errors import TesseraError
from tessera.tokens.oauth_errors import OAuthError

DELIVERY_MODES = ["poll", "ping", "push"]


def metadata(tessera: Tessera) -> dict[str, Any]:
    """CIBA §4 authorization server metadata (merged into RFC 8414 metadata)."""
    return {
        "backchannel_authentication_endpoint": f"{tessera.config.issuer}/oauth/backchannel",
        "backchannel_token_delivery_modes_supported": DELIVERY_MODES,
        "backchannel_user_code_parameter_supported": False,
    }


async def ciba_grant(request: Request, form: dict[str, str]) -> dict[str, Any]:
    tessera: Tessera = request.app.state.tessera
    req = CibaRequest(form, request.headers.get("authorization"), request.headers.get("dpop"))
    body: dict[str, Any] = await run_in_threadpool(tessera.approval_edges.ciba.grant, req)
    return body


async def backchannel_endpoint(request: Request) -> Response:
    from tessera.http.oauth import _NO_STORE, _error, _read_form

    tessera: Tessera = request.app.state.tessera
    try:
        form, resources = await _read_form(request)
        if resources:
            raise OAuthError("invalid_request", "resource is not used here")
        req = CibaRequest(form, request.headers.get("authorization"), request.headers.get("dpop"))
        body = await run_in_threadpool(tessera.approval_edges.ciba.backchannel, req)
    except OAuthError as exc:
        resp = _error(exc, tessera)
        if exc.error == "access_denied":
            resp.status_code = 403  # CIBA §13
        return resp
    except TesseraError as exc:
        return _error(exc, tessera)
    return JSONResponse(body, headers=_NO_STORE)


def install(app: Any) -> None:
    tessera: Tessera = app.state.tessera
    app.router.on_startup.append(tessera.approvals.start_sweeper)
    app.router.on_shutdown.append(tessera.approvals.stop_sweeper)
    app.add_route(
        "/oauth/backchannel", backchannel_endpoint, methods=["POST"], include_in_schema=False
    )


__all__ = ["CIBA_GRANT", "backchannel_endpoint", "ciba_grant", "install", "metadata"]
