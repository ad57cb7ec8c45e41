"""AuthZEN §8 search APIs: subjects, resources or actions a request would allow.

Candidates come from the PDP's attribute directory (subjects and resources of the asked
type) or the bundle's action mapping (actions); each candidate is one full evaluation,
so search answers never disagree with ``evaluation``. Results are sorted by id; a page
token is the opaque base64url of the last id returned.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from tessera.errors import InvalidInput
from tessera.pdp.agents import Caller
from tessera.pdp.model import (
    Action,
    Entity,
    EvaluationRequest,
    parse_action,
    parse_entity,
)
from tessera.pdp.pipeline import DecisionPoint
from tessera.pdp.ports import DecisionRecord

DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 1000
KINDS: Final = ("subject", "resource", "action")


def _page(body: Mapping[str, Any]) -> tuple[str | None, int]:
    page = body.get("page") or {}
    if not isinstance(page, Mapping):
        raise InvalidInput("page must be an object")
    limit = page.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"page.limit must be an integer from 1 to {MAX_LIMIT}")
    token = page.get("token")
    if token in (None, ""):
        return None, limit
    if not isinstance(token, str) or len(token) > 1024:
        raise InvalidInput("page.token is not valid")
    try:
        padded = token + "=" * (-len(token) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode(), limit
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("page.token is not valid") from None


def _token(last: str) -> str:
    return base64.urlsafe_b64encode(last.encode()).decode().rstrip("=")


def _candidate(kind: str, base: EvaluationRequest, i: str) -> EvaluationRequest:
    if kind == "subject":
        return replace(base, subject=Entity(base.subject.type, i, base.subject.properties))
    if kind == "resource":
        return replace(base, resource=Entity(base.resource.type, i, base.resource.properties))
    return replace(base, action=Action(i))


def _emit(kind: str, base: EvaluationRequest, i: str) -> dict[str, str]:
    if kind == "action":
        return {"name": i}
    entity = base.subject if kind == "subject" else base.resource
    return {"type": entity.type, "id": i}


def search(
    pdp: DecisionPoint, kind: str, body: Any, caller: Caller, *, request_id: str | None = None
) -> dict[str, Any]:
    """Run one search (``kind`` is subject, resource or action); AuthZEN §8.3 response."""
    if kind not in KINDS or not isinstance(body, Mapping):
        raise InvalidInput("request must be a JSON object")
    context = body.get("context") or {}
    if not isinstance(context, Mapping):
        raise InvalidInput("context must be a JSON object")
    after, limit = _page(body)
    subject = parse_entity(body.get("subject"), "subject", need_id=kind != "subject")
    resource = parse_entity(body.get("resource"), "resource", need_id=kind != "resource")
    action = parse_action(body.get("action")) if kind != "action" else Action("-")
    base = EvaluationRequest(subject, action, resource, context)
    if kind == "action":
        active = pdp.bundles.active()
        ids = sorted(active.bundle.actions) if active else []
    else:
        ids = list(pdp.attributes.ids_of_type(subject.type if kind == "subject" else resource.type))
    ids.sort()
    results: list[dict[str, Any]] = []
    decided = []
    next_token = ""
    for i in ids:
        if after is not None and i <= after:
            continue
        req = _candidate(kind, base, i)
        d = pdp.decide(req, caller)
        decided.append((req, d))
        if d.allowed:
            if len(results) == limit:
                next_token = _token(results[-1]["id" if kind != "action" else "name"])
                break
            results.append(_emit(kind, base, i))
    pdp.recorder.record(
        DecisionRecord(f"search.{kind}", caller.service_id, request_id, tuple(decided))
    )
    page: dict[str, Any] = {"next_token": next_token, "count": len(results)}
    return {"results": results, "page": page}
