"""``/admin/v1/directory``: the decision point's directory (attributes of subjects and
resources, ``pdp/directory.py``). The same operations as ``tessera directory``, behind an
admin token; writes answer ``Tessera-Consistency-Token`` (pass it as
``context.consistency_token`` to an AuthZEN request to be decided on at least that state).
Errors are RFC 9457 problem+json like the rest of the admin API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from tessera.app import Tessera
from tessera.http.admin import CT_HEADER, Actor, TesseraDep
from tessera.pdp.directory import MAX_ID, MAX_TYPE, DirectoryService

router = APIRouter(
    prefix="/admin/v1/directory",
    tags=["directory"],
    responses={
        400: {"description": "invalid input (problem+json)"},
        401: {"description": "admin token required"},
        404: {"description": "no such entry"},
        413: {"description": "attributes or load too large"},
    },
)

_TYPE = r"^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*$"
_ID = r"^[^\x00-\x1f\x7f]+$"
TypePath = Annotated[str, Path(max_length=MAX_TYPE, pattern=_TYPE)]
IdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID, pattern=_ID)]


class EntryOut(BaseModel):
    type: str
    id: str
    attributes: dict[str, Any]
    updated_at: str
    updated_by: str


class EntryPage(BaseModel):
    entries: list[EntryOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class EntrySet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attributes: dict[str, Any] = Field(description="JSON object; replaces the stored one")


class DirectoryLoad(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entries: dict[str, dict[str, dict[str, Any]]] = Field(
        description="{type: {id: attributes}}, set in one transaction"
    )
    replace: bool = Field(False, description="also delete every entry not in `entries`")


class LoadOut(BaseModel):
    set: int
    deleted: int


def _service(tessera: Tessera) -> DirectoryService:
    if tessera.directory is None:  # pragma: no cover - app.build always wires it
        raise RuntimeError("no directory")
    return tessera.directory


def _ct(response: Response, token: str | None) -> None:
    if token:
        response.headers[CT_HEADER] = token


@router.get("", response_model=EntryPage)
def list_entries(
    tessera: TesseraDep,
    _actor: Actor,
    etype: Annotated[str | None, Query(alias="type", max_length=MAX_TYPE, pattern=_TYPE)] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Entries in (type, id) order, optionally of one type."""
    page = _service(tessera).list(etype, cursor=cursor, limit=limit)
    return {"entries": [e.to_dict() for e in page.entries], "next_cursor": page.next_cursor}


@router.post("/load", response_model=LoadOut)
def load(
    body: DirectoryLoad, tessera: TesseraDep, actor: Actor, response: Response
) -> dict[str, Any]:
    """Set every entry of a document in one transaction (all or nothing)."""
    w = _service(tessera).load(body.entries, actor=actor, replace=body.replace)
    _ct(response, w.consistency_token)
    return w.value.to_dict()


@router.get("/{etype}/{eid:path}", response_model=EntryOut)
def get_entry(
    etype: TypePath,
    eid: IdPath,
    tessera: TesseraDep,
    _actor: Actor,
) -> dict[str, Any]:
    return _service(tessera).get(etype, eid).to_dict()


@router.put("/{etype}/{eid:path}", response_model=EntryOut)
def set_entry(
    etype: TypePath,
    eid: IdPath,
    body: EntrySet,
    tessera: TesseraDep,
    actor: Actor,
    response: Response,
) -> dict[str, Any]:
    """Create or replace an entry's attributes."""
    w = _service(tessera).set(etype, eid, body.attributes, actor=actor)
    _ct(response, w.consistency_token)
    return w.value.to_dict()


@router.delete("/{etype}/{eid:path}", status_code=204)
def delete_entry(
    etype: TypePath,
    eid: IdPath,
    tessera: TesseraDep,
    actor: Actor,
) -> Response:
    w = _service(tessera).delete(etype, eid, actor=actor)
    response = Response(status_code=204)
    _ct(response, w.consistency_token)
    return response


def install(app: FastAPI) -> None:
    app.include_router(router)
