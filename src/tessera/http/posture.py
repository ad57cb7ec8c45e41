"""``/admin/v1/posture`` (findings, scans) and ``/admin/v1/reviews`` (access reviews), plus
the server lifecycle of the scheduled posture scan (started with the app, like the audit
chainer; ``TESSERA_POSTURE_INTERVAL`` seconds, 0 disables it).

Errors are RFC 9457 problem+json like the rest of the admin API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tessera.app import Tessera
from tessera.clock import iso, utc
from tessera.errors import NotFound, StoreUnavailable
from tessera.http.admin import Actor, TesseraDep
from tessera.posture.ports import MAX_PAGE, FindingQuery
from tessera.posture.review import ReviewService
from tessera.posture.service import PostureService

router = APIRouter(prefix="/admin/v1", tags=["posture"])

_NAME = r"^[a-z][a-z0-9_]{0,63}$"
_REF = r"^[A-Za-z0-9_.:-]{1,128}$"
_KEY = r"^[0-9a-f]{32}$"


class FindingOut(BaseModel):
    key: str
    rule: str
    severity: Literal["low", "medium", "high", "critical"]
    subject_kind: str
    subject: str
    agent: str | None
    summary: str
    evidence: dict[str, Any]
    remediation: str
    remediation_args: dict[str, Any]
    status: Literal["open", "resolved"]
    first_seen: str
    last_seen: str
    resolved_at: str | None


class FindingPage(BaseModel):
    findings: list[FindingOut]
    next_after: str | None = Field(description="pass as `after` for the next page")
    last_scan: dict[str, Any] | None = Field(description="when and how the last scan ran")


class ScanOut(BaseModel):
    scan_id: str
    started: str
    finished: str
    counts: dict[str, int]
    stats: dict[str, Any]


class CampaignOut(BaseModel):
    id: str
    name: str
    status: str
    on_expiry: str
    created_at: str
    deadline: str
    closed_at: str | None
    created_by: str
    items: dict[str, int]


class CampaignCreate(BaseModel):
    name: str | None = Field(default=None, max_length=200)
    deadline: datetime | None = Field(default=None, description="ISO 8601; default 14 days")
    on_expiry: Literal["revoke", "keep"] | None = None


class ItemOut(BaseModel):
    id: str
    campaign_id: str
    agent_id: str
    owner_user_id: str
    field: str
    item: str
    state: str
    answered_by: str | None
    answered_at: str | None
    note: str | None


class ItemPage(BaseModel):
    items: list[ItemOut]
    next_after: str | None


class Answer(BaseModel):
    decision: Literal["confirm", "revoke"]
    note: str | None = Field(default=None, max_length=500)


class CloseRequest(BaseModel):
    force: bool = False


def _posture(t: Tessera) -> PostureService:
    if t.posture is None:
        raise StoreUnavailable("posture is not configured", code="not_configured")
    return t.posture


def _reviews(t: Tessera) -> ReviewService:
    if t.reviews is None:
        raise StoreUnavailable("access reviews are not configured", code="not_configured")
    return t.reviews


def _last_scan(p: PostureService) -> dict[str, Any] | None:
    last = p.last_scan()
    if last is None:
        return None
    return {**last, "started_at": iso(last["started_at"]), "finished_at": iso(last["finished_at"])}


@router.get("/posture/findings", response_model=FindingPage)
def list_findings(
    tessera: TesseraDep,
    _actor: Actor,
    status: Annotated[Literal["open", "resolved"] | None, Query()] = "open",
    severity: Annotated[
        Literal["low", "medium", "high", "critical"] | None,
        Query(description="this severity or worse"),
    ] = None,
    rule: Annotated[str | None, Query(pattern=_NAME)] = None,
    agent: Annotated[str | None, Query(pattern=_REF)] = None,
    subject_kind: Annotated[
        Literal["agent", "credential", "session", "client"] | None, Query()
    ] = None,
    after: Annotated[str | None, Query(pattern=_KEY)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> dict[str, Any]:
    """Posture findings recorded by the scheduled (or a manual) scan, with first-seen and
    last-seen times; filter by status, severity (or worse), rule, agent and subject kind;
    page with ``after``."""
    p = _posture(tessera)
    rows = p.findings(
        FindingQuery(
            status=status,
            severity=severity,
            rule=rule,
            agent=agent,
            subject_kind=subject_kind,
            after=after,
            limit=limit,
        )
    )
    return {
        "findings": [r.to_dict() for r in rows],
        "next_after": rows[-1].finding.key if len(rows) == limit else None,
        "last_scan": _last_scan(p),
    }


@router.get("/posture/findings/{key}", response_model=FindingOut)
def get_finding(key: str, tessera: TesseraDep, _actor: Actor) -> dict[str, Any]:
    found = _posture(tessera).finding(key) if len(key) == 32 else None
    if found is None:
        raise NotFound("no such finding")
    return found.to_dict()


@router.post("/posture/scans", response_model=ScanOut, status_code=201)
async def run_scan(tessera: TesseraDep, actor: Actor) -> dict[str, Any]:
    """Scan now and record the findings (no remediation: that is ``posture scan --apply``)."""
    p = _posture(tessera)
    await run_in_threadpool(tessera.audit.chain_pending)
    recorded = await run_in_threadpool(lambda: p.scan(actor=actor))
    return {
        "scan_id": recorded.scan_id,
        "started": iso(recorded.result.started),
        "finished": iso(recorded.result.finished),
        "counts": recorded.counts,
        "stats": recorded.result.stats(),
    }


# -- access reviews ----------------------------------------------------------------------


@router.get("/reviews", response_model=list[CampaignOut])
def list_reviews(
    tessera: TesseraDep,
    _actor: Actor,
    status: Annotated[Literal["open", "closed"] | None, Query()] = None,
) -> list[dict[str, Any]]:
    return [c.to_dict() for c in _reviews(tessera).campaigns(status)]


@router.post("/reviews", response_model=CampaignOut, status_code=201)
def start_review(body: CampaignCreate, tessera: TesseraDep, actor: Actor) -> dict[str, Any]:
    """Open a campaign over every agent in service: one item per ceiling grant."""
    r = _reviews(tessera)
    deadline = utc(body.deadline) if body.deadline is not None else None
    campaign, _count = r.start(
        name=body.name, deadline=deadline, on_expiry=body.on_expiry, actor=actor
    )
    return r.get(campaign.id).to_dict()


@router.get("/reviews/{campaign_id}", response_model=CampaignOut)
def get_review(campaign_id: str, tessera: TesseraDep, _actor: Actor) -> dict[str, Any]:
    return _reviews(tessera).get(campaign_id[:64]).to_dict()


@router.get("/reviews/{campaign_id}/items", response_model=ItemPage)
def review_items(
    campaign_id: str,
    tessera: TesseraDep,
    _actor: Actor,
    owner: Annotated[str | None, Query(pattern=_REF, description="user id or username")] = None,
    state: Annotated[
        Literal["pending", "confirmed", "revoked", "expired_revoked", "expired_kept", "void"]
        | None,
        Query(),
    ] = None,
    after: Annotated[str | None, Query(pattern=_REF)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    items = _reviews(tessera).items(
        campaign_id[:64], owner=owner, state=state, limit=limit, after=after
    )
    return {
        "items": [i.to_dict() for i in items],
        "next_after": items[-1].id if len(items) == limit else None,
    }


@router.post("/reviews/{campaign_id}/items/{item_id}", response_model=ItemOut)
def answer_item(
    campaign_id: str, item_id: str, body: Answer, tessera: TesseraDep, actor: Actor
) -> dict[str, Any]:
    """The owner's answer: ``confirm`` keeps the grant; ``revoke`` narrows the agent's
    ceiling now (live sessions beyond it are revoked). A second answer is 409."""
    return (
        _reviews(tessera)
        .answer(campaign_id[:64], item_id[:64], body.decision, note=body.note, actor=actor)
        .to_dict()
    )


@router.post("/reviews/{campaign_id}/close", response_model=CampaignOut)
def close_review(
    campaign_id: str, body: CloseRequest, tessera: TesseraDep, actor: Actor
) -> dict[str, Any]:
    """Settle unanswered items by the campaign's ``on_expiry`` rule and close it (before
    the deadline only with ``force``); closing a closed campaign changes nothing."""
    return _reviews(tessera).close(campaign_id[:64], actor=actor, force=body.force).to_dict()


def install(app: FastAPI, tessera: Tessera) -> None:
    """Wire the posture and review API and the scheduled scan into the server app."""
    app.include_router(router)
    if tessera.posture is not None:
        app.router.on_startup.append(tessera.posture.start)
        app.router.on_shutdown.append(tessera.posture.stop)
