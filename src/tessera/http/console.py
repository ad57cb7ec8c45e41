"""The approver console (issue 8): ``/console/approvals`` and its JSON API.

Approvers are users who sign in with a passkey (WebAuthn); each decision is a fresh
assertion over the request's binding data (``approvals/passkeys.py``), so the session
cookie alone approves nothing. The cookie is ``HttpOnly``, ``SameSite=Strict``, scoped to
``/console``; every POST needs ``X-Tessera-Console: 1`` (a custom header, so a cross-site
form cannot send it). Pages carry a strict CSP (scripts and styles from this origin only).
Errors are ``application/problem+json``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from tessera.app import Tessera
from tessera.approvals.passkeys import ConsoleSession
from tessera.approvals.service import describe
from tessera.errors import Forbidden, InvalidInput, NotFound, TesseraError, Unauthenticated
from tessera.http.problems import problem
from tessera.tokens.issuers import JWT_TOKEN_TYPE

COOKIE: Final = "tessera_approver"
CONSOLE: Final = Path(__file__).resolve().parents[1] / "console"
STATIC: Final = {"approvals.js": "text/javascript", "console.css": "text/css"}
HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
MAX_BODY: Final = 32 * 1024

_env = Environment(
    loader=FileSystemLoader(str(CONSOLE / "templates")),
    autoescape=select_autoescape(["html"]),
    auto_reload=False,
)


def _t(request: Request) -> Tessera:
    tessera: Tessera = request.app.state.tessera
    return tessera


def _session(request: Request) -> ConsoleSession:
    return _t(request).approval_edges.passkeys.session(request.cookies.get(COOKIE))


def _render(name: str, **ctx: Any) -> str:
    return _env.get_template(name).render(**ctx)


def _rp_is_ip(tessera: Tessera) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(tessera.approval_edges.passkeys.rp_id)
    except ValueError:
        return False
    return True


def _html(text: str) -> HTMLResponse:
    return HTMLResponse(text, headers=HEADERS)


def _set_cookie(request: Request, resp: Response, token: str) -> Response:
    resp.set_cookie(
        COOKIE,
        token,
        max_age=3600,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=_t(request).config.issuer.startswith("https://"),
    )
    return resp


def _err(exc: TesseraError) -> Response:
    status = exc.status if 400 <= exc.status < 500 else 503
    return problem(status, exc.code, exc.title, exc.message, headers={"Cache-Control": "no-store"})


async def _json(request: Request) -> Any:
    if request.headers.get("x-tessera-console") != "1":
        raise Forbidden("console requests need the X-Tessera-Console header")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise InvalidInput("the request body is too large")
    try:
        return json.loads(body or b"{}")
    except ValueError:
        raise InvalidInput("the request body is not JSON") from None


def _view(tessera: Tessera, session: ConsoleSession) -> tuple[list[dict[str, Any]], str]:
    """Pending requests this approver may decide, with every identity layer."""
    now = tessera.clock.now()
    reqs = tessera.approvals.list(status="pending", user_id=session.user_id)
    items = []
    names: dict[str, str] = {}

    def name(kind: str, ref: str | None) -> str:
        if not ref:
            return ""
        if ref not in names:
            try:
                got = (
                    tessera.identity.get_agent(ref).name
                    if kind == "agent"
                    else tessera.identity.get_user(ref).username
                )
            except NotFound:
                got = ref
            names[ref] = got
        return names[ref]

    for r in reqs:
        d = describe(r, now)
        with tessera.store.read() as tx:
            rec = tx.sessions.get(r.session_id)
        d["layers"] = {
            "agent_name": name("agent", r.agent_id),
            "operator": rec.operator_id if rec else "",
            "model_digest": rec.model_digest if rec else "",
            "user_name": name("user", r.user_id),
            "act_names": [name("agent", a) for a in r.act_chain],
        }
        d["arguments_json"] = json.dumps(r.arguments, indent=2, sort_keys=True)
        mine = [v for v in r.votes if v.approver == session.user_id]
        d["mine_voted"] = mine[0].decision if mine else ""
        items.append(d)
    sig_src = json.dumps(
        [(i["auth_req_id"], i["status"], len(i["votes"]), i["mine_voted"]) for i in items]
    )
    return items, hashlib.sha256(sig_src.encode()).hexdigest()[:16]


# -- pages --------------------------------------------------------------------------------


async def approvals_page(request: Request) -> Response:
    tessera = _t(request)
    dev = tessera.config.dev_mode
    try:
        session = await run_in_threadpool(_session, request)
    except Unauthenticated:
        return _html(
            _render(
                "login.html",
                title="Approvals",
                page="login",
                dev_mode=dev,
                rp_is_ip=_rp_is_ip(tessera),
            )
        )
    items, sig = await run_in_threadpool(_view, tessera, session)
    return _html(
        _render(
            "approvals.html",
            title="Approvals",
            page="approvals",
            session=session,
            items=items,
            signature=sig,
            dev_mode=dev,
        )
    )


async def enroll_page(request: Request) -> Response:
    tessera = _t(request)
    token = request.path_params["token"]
    try:
        user = await run_in_threadpool(tessera.approval_edges.passkeys.enrolling, token)
    except TesseraError:
        return _html(_render("base.html", title="Link not valid", page="none"))
    return _html(
        _render(
            "enroll.html",
            title="Register a passkey",
            page="enroll",
            token=token,
            username=user.username,
            dev_mode=tessera.config.dev_mode,
            rp_is_ip=_rp_is_ip(tessera),
        )
    )


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        return problem(404, "not_found", "Not found")
    return FileResponse(
        CONSOLE / "static" / name,
        media_type=STATIC[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


# -- JSON API -----------------------------------------------------------------------------


async def api(request: Request) -> Response:
    """One dispatcher for the console's POST/GET API (small, explicit table below)."""
    tessera = _t(request)
    passkeys = tessera.approval_edges.passkeys
    op = request.path_params["op"]
    try:
        if op == "approvals" and request.method == "GET":
            session = await run_in_threadpool(_session, request)
            items, sig = await run_in_threadpool(_view, tessera, session)
            html = "".join(_render("request.html", r=r) for r in items) or (
                '<p class="empty">Nothing waits for you.</p>'
            )
            return JSONResponse(
                {"method": session.method, "items": items, "html": html, "signature": sig},
                headers={"Cache-Control": "no-store"},
            )
        body = await _json(request)
        if op == "login/options":
            return _raw_json(await run_in_threadpool(passkeys.login_options))
        if op == "login/verify":
            token = await run_in_threadpool(passkeys.login, body)
            return _set_cookie(request, JSONResponse({"ok": True}), token)
        if op == "dev-login":
            return await _dev_login(request, tessera, body)
        if op == "logout":
            resp = JSONResponse({"ok": True})
            if request.cookies.get(COOKIE):
                await run_in_threadpool(passkeys.logout, request.cookies[COOKIE])
            resp.delete_cookie(COOKIE, path="/console")
            return resp
        raise NotFound("no such console operation")
    except TesseraError as exc:
        return _err(exc)


async def enroll_api(request: Request) -> Response:
    passkeys = _t(request).approval_edges.passkeys
    token, op = request.path_params["token"], request.path_params["op"]
    try:
        body = await _json(request)
        if op == "options":
            return _raw_json(await run_in_threadpool(passkeys.registration_options, token))
        if op == "verify":
            session = await run_in_threadpool(passkeys.register, token, body)
            return _set_cookie(request, JSONResponse({"ok": True}), session)
        raise NotFound("no such console operation")
    except TesseraError as exc:
        return _err(exc)


async def decision_api(request: Request) -> Response:
    tessera = _t(request)
    passkeys = tessera.approval_edges.passkeys
    rid, op = request.path_params["auth_req_id"], request.path_params["op"]
    try:
        body = await _json(request)
        session = await run_in_threadpool(_session, request)
        decision, note = body.get("decision"), body.get("note", "")
        if decision not in ("approve", "deny") or not isinstance(note, str):
            raise InvalidInput("decision must be approve or deny; note a string")
        if op == "options":
            opts = await run_in_threadpool(passkeys.decision_options, session, rid, decision, note)
            return JSONResponse(opts, headers={"Cache-Control": "no-store"})
        if op == "decide":
            nonce = body.get("nonce")
            if not isinstance(nonce, str):
                raise InvalidInput("nonce is required")
            req = await run_in_threadpool(
                passkeys.decide, session, rid, decision, note, nonce, body.get("credential")
            )
            return JSONResponse({"auth_req_id": rid, "status": req.status})
        if op == "dev-decide":
            if not tessera.config.dev_mode or session.method != "dev":
                raise Forbidden("development decisions are disabled")
            req = await run_in_threadpool(
                tessera.approvals.decide, rid, session.user_id, decision, note, method="dev"
            )
            return JSONResponse({"auth_req_id": rid, "status": req.status})
        raise NotFound("no such console operation")
    except TesseraError as exc:
        return _err(exc)


async def _dev_login(request: Request, tessera: Tessera, body: Any) -> Response:
    """Development only: a session from ``tessera dev user-token USER``."""
    issuers = tessera.approval_edges.dev_issuers
    if not tessera.config.dev_mode or issuers is None:
        raise Forbidden("development sign-in is disabled")
    token = body.get("user_token")
    if not isinstance(token, str) or not token:
        raise InvalidInput("user_token is required")
    try:
        assertion = issuers.verify(
            token,
            JWT_TOKEN_TYPE,
            tessera_issuer=tessera.config.issuer,
            now=tessera.clock.timestamp(),
        )
    except TesseraError:
        raise Unauthenticated("the development token is not valid") from None
    user = tessera.identity.get_user(assertion.user_ref)
    session = await run_in_threadpool(tessera.approval_edges.passkeys.dev_session, user.id)
    return _set_cookie(request, JSONResponse({"ok": True, "dev": True}), session)


def _raw_json(text: str) -> Response:
    return Response(text, media_type="application/json", headers={"Cache-Control": "no-store"})


def install(app: Any) -> None:
    app.add_route("/console/approvals", approvals_page, methods=["GET"], include_in_schema=False)
    app.add_route("/console/enroll/{token}", enroll_page, methods=["GET"], include_in_schema=False)
    app.add_route("/console/static/{name}", static, methods=["GET"], include_in_schema=False)
    app.add_route(
        "/console/api/enroll/{token}/{op}", enroll_api, methods=["POST"], include_in_schema=False
    )
    app.add_route(
        "/console/api/approvals/{auth_req_id}/{op}",
        decision_api,
        methods=["POST"],
        include_in_schema=False,
    )
    app.add_route("/console/api/{op:path}", api, methods=["GET", "POST"], include_in_schema=False)
