"""Enforcing a gateway decision: the ``gateway.call`` evidence, budget release, refusals and
the approval wait (DESIGN flow B; COORDINATION approvals contract). Used by
``tessera.http.gateway``."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tessera.errors import TesseraError
from tessera.gateway.authorize import CallVerdict, call_record
from tessera.gateway.config import Upstream
from tessera.gateway.service import Admission, McpGateway
from tessera.gateway.transport import DENIED, INTERNAL_ERROR, dumps, rpc_error

log = logging.getLogger("tessera.gateway")
_JSON: Final = "application/json"
_T = TypeVar("_T")
ADMIT_THREADS: Final = max(4, min(32, (os.cpu_count() or 1) * 4))


def _executor(gw: McpGateway) -> ThreadPoolExecutor:
    pool: ThreadPoolExecutor | None = getattr(gw, "_pool", None)
    if pool is None:
        pool = ThreadPoolExecutor(ADMIT_THREADS, thread_name_prefix="tessera-gateway")
        gw._pool = pool  # type: ignore[attr-defined]
    return pool


async def _off_loop(gw: McpGateway, fn: Callable[..., _T], *args: Any) -> _T:
    """Run the synchronous half (store, PDP) of a request.

    When it is the only POST in flight it runs right here, on the loop: there is nothing
    else for the loop to do meanwhile, and two thread wake-ups (there and back) cost more
    than the work itself on a busy machine (decisions.md 68). With others in flight it
    goes to the gateway's own threads, so a store lock wait never stalls the other
    requests: a plain executor hop (the context travels, for the request id), cheaper than
    anyio's worker threads and their shared capacity limiter."""
    if getattr(gw, "_posts", 0) <= 1:
        return fn(*args)
    ctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_executor(gw), ctx.run, fn, *args)


def _request_id(request: Request) -> str | None:
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else None


def _rpc(
    body: dict[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(dumps(body), status, headers=dict(headers or {}), media_type=_JSON)


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
