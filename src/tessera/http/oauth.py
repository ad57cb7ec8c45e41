"""OAuth endpoints: RFC 8414 metadata, token (RFC 6749/8693/9449), introspection (RFC 7662)
and revocation (RFC 7009). Plain Starlette routes: these are hot paths.

Errors are OAuth error JSON (RFC 6749 §5.2) with ``Cache-Control: no-store``; never a 500,
never the reason a credential failed (that goes to the event log / audit detail).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tessera.app import Tessera
from tessera.errors import TesseraError
from tessera.http import ciba as _ciba
from tessera.tokens.auth_failures import client_auth_failure
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.service import CLIENT_CREDENTIALS, TOKEN_EXCHANGE, TokenRequest

log = logging.getLogger("tessera.oauth")
FORM = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 32 * 1024
_REPEATABLE = {"resource", "audience"}
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class _FormError(Exception):
    pass


async def _read_form(request: Request) -> tuple[dict[str, str], tuple[str, ...]]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != FORM:
        raise OAuthError("invalid_request", f"the request body must be {FORM}")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise OAuthError("invalid_request", "the request body is too large")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=64
        )
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the request body is not a valid form") from None
    form: dict[str, str] = {}
    resources: list[str] = []
    for key, value in pairs:
        if key in _REPEATABLE:
            resources.append(value)
            continue
        # RFC 6749 §3.2: request parameters must not be included more than once.
        if key in form:
            raise OAuthError("invalid_request", f"parameter {key[:40]!r} is repeated")
        form[key] = value
    return form, tuple(resources)


def _error(exc: TesseraError, tessera: Tessera) -> JSONResponse:
    headers = dict(_NO_STORE)
    if isinstance(exc, OAuthError):
        # The precise reason is for operators (and the audit ledger), never the client.
        log.info("oauth %s: %s", exc.error, exc.detail or exc.error_description)
        body: dict[str, Any] = {"error": exc.error}
        if exc.error_description:
            body["error_description"] = exc.error_description
        status = exc.status
        if exc.error == "invalid_client":
            headers["WWW-Authenticate"] = 'Basic realm="tessera"'
    elif exc.status >= 500:
        log.warning("token endpoint unavailable: %s", exc.detail or exc.message)
        body, status = (
            {"error": "temporarily_unavailable", "error_description": "try again later"},
            503,
        )
    else:
        body, status = {"error": "invalid_request", "error_description": exc.message[:200]}, 400
    _nonce_header(headers, tessera)
    return JSONResponse(body, status_code=status, headers=headers)


def _nonce_header(headers: dict[str, str], tessera: Tessera) -> None:
    nonces = tessera.tokens.nonces
    if nonces is not None:
        headers["DPoP-Nonce"] = nonces.issue(tessera.clock.timestamp())


def metadata(tessera: Tessera) -> dict[str, Any]:
    """RFC 8414 §2 authorization server metadata."""
    iss = tessera.config.issuer
    auth_methods = ["private_key_jwt", "client_secret_basic"]
    algs = ["ES256", "EdDSA"]
    return {
        "issuer": iss,
        "token_endpoint": f"{iss}/oauth/token",
        "introspection_endpoint": f"{iss}/oauth/introspect",
        "revocation_endpoint": f"{iss}/oauth/revoke",
        "jwks_uri": f"{iss}/.well-known/jwks.json",
        "grant_types_supported": [CLIENT_CREDENTIALS, TOKEN_EXCHANGE, _ciba.CIBA_GRANT],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt"],
        "introspection_endpoint_auth_signing_alg_values_supported": algs,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": algs,
        "dpop_signing_alg_values_supported": algs,
        "authorization_details_types_supported": ["tessera_session", "tessera_approved_call"],
        "code_challenge_methods_supported": [],
        **_ciba.metadata(tessera),  # CIBA Core 1.0 §4 (issue 8)
    }


async def metadata_endpoint(request: Request) -> Response:
    return JSONResponse(
        metadata(request.app.state.tessera), headers={"Cache-Control": "public, max-age=300"}
    )


async def token_endpoint(request: Request) -> Response:
    tessera: Tessera = request.app.state.tessera
    req: TokenRequest | None = None
    try:
        form, resources = await _read_form(request)
        if form.get("grant_type") == _ciba.CIBA_GRANT:  # one handler per grant (issue 8)
            body = await _ciba.ciba_grant(request, form)
            return JSONResponse(body, headers=_NO_STORE)
        req = TokenRequest(
            form, resources, request.headers.get("authorization"), request.headers.get("dpop")
        )
        result = await run_in_threadpool(tessera.tokens.token, req)
    except TesseraError as exc:
        if req is not None and isinstance(exc, OAuthError) and exc.error == "invalid_client":
            await _record_client_failure(tessera, req, exc)
        return _error(exc, tessera)
    headers = dict(_NO_STORE)
    _nonce_header(headers, tessera)
    return JSONResponse(result.body, headers=headers)


async def _record_client_failure(tessera: Tessera, req: TokenRequest, exc: OAuthError) -> None:
    """Failed client authentication is evidence (shadow agents, posture); if the ledger
    cannot take it the client still gets its ``invalid_client``, and the log says so."""
    entry = client_auth_failure(req.form, req.authorization, exc.detail, endpoint="token")
    try:
        await tessera.audit.record_async(entry)
    except TesseraError as failure:
        log.warning("could not record a failed client authentication: %s", failure.message)


async def introspection_endpoint(request: Request) -> Response:
    tessera: Tessera = request.app.state.tessera
    try:
        form, _ = await _read_form(request)
        body = await run_in_threadpool(
            tessera.sessions.introspect, form, request.headers.get("authorization")
        )
    except TesseraError as exc:
        return _error(exc, tessera)
    return JSONResponse(body, headers=_NO_STORE)


async def revocation_endpoint(request: Request) -> Response:
    tessera: Tessera = request.app.state.tessera
    try:
        form, _ = await _read_form(request)
        hint = form.get("token_type_hint")
        if hint not in (None, "access_token"):
            raise OAuthError("unsupported_token_type", "only access tokens can be revoked")
        await run_in_threadpool(tessera.sessions.revoke, form, request.headers.get("authorization"))
    except TesseraError as exc:
        return _error(exc, tessera)
    return Response(status_code=200, headers=_NO_STORE)


def install(app: Any) -> None:
    app.add_route(
        "/.well-known/oauth-authorization-server",
        metadata_endpoint,
        methods=["GET"],
        include_in_schema=False,
    )
    app.add_route("/oauth/token", token_endpoint, methods=["POST"], include_in_schema=False)
    app.add_route(
        "/oauth/introspect", introspection_endpoint, methods=["POST"], include_in_schema=False
    )
    app.add_route("/oauth/revoke", revocation_endpoint, methods=["POST"], include_in_schema=False)
    _ciba.install(app)
