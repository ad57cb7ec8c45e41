"""``GET /admin/v1/audit``: query the audit ledger; plus the server's audit wiring.

``install(app, tessera)`` adds the router, a middleware that hands the request id to the
records written while serving the request, and the server lifecycle of the background
chainer (started with the app, stopped at shutdown with a final checkpoint).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera.app import Tessera
from tessera.audit.ports import MAX_PAGE, AuditQuery
from tessera.audit.record import current_request_id
from tessera.audit.webhook import webhook_of
from tessera.clock import utc
from tessera.errors import InvalidInput
from tessera.http.admin import Actor, TesseraDep

router = APIRouter(prefix="/admin/v1/audit", tags=["audit"])

_FILTER = r"^[^\x00-\x1f\x7f]*$"
Filter = Annotated[str | None, Query(max_length=200, pattern=_FILTER)]


class AuditActorOut(BaseModel):
    principal: str
    operator: str | None
    agent: str | None
    model_digest: str | None
    session: str | None
    user: str | None
    act: list[str]


class AuditRecordOut(BaseModel):
    seq: int
    time: str
    event_type: str
    actor: AuditActorOut
    action: str
    resource: str
    outcome: str
    reasons: list[str]
    policy_version: str | None
    request_id: str | None
    jti: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str
    v: int


class AuditPage(BaseModel):
    records: list[AuditRecordOut]
    next_after: int | None = Field(
        description="pass as `after` for the next page (oldest first); null on the last page"
    )
    head: int = Field(description="sequence number of the newest chained record")
    pending: int = Field(description="entries committed but not chained yet")


def _aware(value: datetime | None) -> datetime | None:
    return utc(value) if value is not None else None


@router.get("", response_model=AuditPage)
def search_audit(
    tessera: TesseraDep,
    _actor: Actor,
    agent: Filter = None,
    session: Filter = None,
    user: Filter = None,
    event_type: Filter = None,
    outcome: Filter = None,
    since: Annotated[datetime | None, Query(description="records at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="records before (ISO 8601)")] = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> dict[str, Any]:
    """Audit records, oldest first, filtered by agent, session, user, event type, outcome
    (e.g. ``allow``/``deny``/``success``) and time range; page with ``after``."""
    try:
        q = AuditQuery(
            agent=agent,
            session=session,
            user=user,
            event_type=event_type,
            outcome=outcome,
            since=_aware(since),
            until=_aware(until),
            after=after,
            limit=limit,
        )
    except (OverflowError, ValueError) as exc:
        raise InvalidInput("invalid time range") from exc
    records = tessera.audit.query(q)
    return {
        "records": records,
        "next_after": records[-1]["seq"] if len(records) == limit else None,
        "head": tessera.audit.head().size,
        "pending": tessera.audit.pending(),
    }


class RequestIdToAudit:
    """Expose the request id (assigned by the outer ``RequestId`` middleware) to audit
    records written while the request is served."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = scope.get("state", {}).get("request_id")
        token = current_request_id.set(rid if isinstance(rid, str) else None)
        try:
            await self.app(scope, receive, send)
        finally:
            current_request_id.reset(token)


@router.get("/checkpoint-sink")
def checkpoint_sink(tessera: TesseraDep, _actor: Actor) -> dict[str, Any]:
    """Where checkpoints go, and the webhook's delivery state (undelivered checkpoints,
    the last error, when it delivered last); never the webhook's secret, path or query."""
    sink = tessera.audit.sink
    webhook = webhook_of(sink)
    return {
        "directory": str(sink.directory) if sink is not None else None,
        "webhook": webhook.status() if webhook is not None else None,
    }


def install(app: FastAPI, tessera: Tessera) -> None:
    """Wire the audit API and the background chainer into the server app."""
    app.include_router(router)
    app.add_middleware(RequestIdToAudit)
    app.router.on_startup.append(tessera.audit.start)
    app.router.on_shutdown.append(tessera.audit.stop)
    webhook = webhook_of(tessera.audit.sink)
    if webhook is not None:  # after the chainer's stop: delivers the shutdown checkpoint
        app.router.on_startup.append(webhook.start)
        app.router.on_shutdown.append(webhook.stop)
