"""OpenID AuthZEN Authorization API 1.0 over HTTP: PDP metadata (§9), access evaluation
(§6), access evaluations (§7) and the search APIs (§8). Plain Starlette routes: these
are the hottest endpoints Tessera has.

Callers authenticate as services (``Authorization: Bearer <service token | API key>``).
Errors are problem+json: 400 for a malformed request, 401/403 for the caller; a request
that parses always gets a decision (errors inside the pipeline are denies).
``X-Request-ID`` is echoed (the request-id middleware) and passed to the audit record.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tessera.app import Tessera
from tessera.errors import InvalidInput, TesseraError, Unauthenticated
from tessera.http import signals
from tessera.http.problems import problem
from tessera.pdp.agents import Caller
from tessera.pdp.model import parse_evaluation, parse_evaluations
from tessera.pdp.search import search

log = logging.getLogger("tessera.authzen")
MAX_BODY = 1024 * 1024
_NO_STORE = {"Cache-Control": "no-store"}


def _request_id(request: Request) -> str | None:
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else request.headers.get("x-request-id")


async def _body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise InvalidInput(f"request bodies are limited to {MAX_BODY} bytes")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the request body is not JSON") from None


def _caller(tessera: Tessera, request: Request) -> Caller:
    return tessera.pdp.callers.authenticate(
        request.headers.get("authorization"), tessera.clock.timestamp()
    )


def _explain(request: Request, body: Any) -> bool:
    opts = body.get("options") if isinstance(body, dict) else None
    flag = isinstance(opts, dict) and opts.get("explain") is True
    return flag or request.query_params.get("explain") in ("1", "true")


def _fail(exc: TesseraError) -> Response:
    headers = dict(_NO_STORE)
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="tessera"'
    if exc.status >= 500:
        log.warning("pdp unavailable: %s", exc.detail or exc.message)
    return problem(exc.status, exc.code, exc.title, exc.message, headers=headers)


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


async def evaluation(request: Request) -> Response:
    tessera: Tessera = request.app.state.tessera
    try:
        caller = _caller(tessera, request)
        body = await _body(request)
        req = parse_evaluation(body)
        await run_in_threadpool(signals.at_least, tessera, body)  # context.consistency_token
        # in a worker thread: the answer waits for its audit record to be durable
        decision = await run_in_threadpool(
            tessera.pdp.point.evaluate, req, caller, request_id=_request_id(request)
        )
        return JSONResponse(decision.to_authzen(explain=_explain(request, body)), headers=_NO_STORE)
    except TesseraError as exc:
        return _fail(exc)


async def evaluations(request: Request) -> Response:
    tessera: Tessera = request.app.state.tessera
    try:
        caller = _caller(tessera, request)
        body = await _body(request)
        reqs, semantic = parse_evaluations(body)
        await run_in_threadpool(signals.at_least, tessera, body)  # context.consistency_token
        decisions = await run_in_threadpool(
            tessera.pdp.point.evaluate_many,
            reqs,
            semantic,
            caller,
            request_id=_request_id(request),
        )
        explain = _explain(request, body)
        return JSONResponse(
            {"evaluations": [d.to_authzen(explain=explain) for d in decisions]},
            headers=_NO_STORE,
        )
    except TesseraError as exc:
        return _fail(exc)


def _search(kind: str) -> Any:
    async def endpoint(request: Request) -> Response:
        tessera: Tessera = request.app.state.tessera
        try:
            caller = _caller(tessera, request)
            body = await _body(request)
            result = await run_in_threadpool(
                search, tessera.pdp.point, kind, body, caller, request_id=_request_id(request)
            )
            return JSONResponse(result, headers=_NO_STORE)
        except TesseraError as exc:
            return _fail(exc)

    return endpoint


def install(app: Any) -> None:
    app.add_route(
        "/.well-known/authzen-configuration",
        configuration,
        methods=["GET"],
        include_in_schema=False,
    )
    app.add_route("/access/v1/evaluation", evaluation, methods=["POST"], include_in_schema=False)
    app.add_route("/access/v1/evaluations", evaluations, methods=["POST"], include_in_schema=False)
    for kind in ("subject", "resource", "action"):
        app.add_route(
            f"/access/v1/search/{kind}", _search(kind), methods=["POST"], include_in_schema=False
        )
