"""Delegation by token exchange (DESIGN 2C): a child's grant only narrows its parent's.

For every dimension the child receives a subset of both the parent session and the child
agent's ceiling:

- ``tools`` / ``data_scope``: DESIGN 6b rules of ``grant.narrow`` against the parent session
  and the child ceiling; an explicit tool the parent denies is refused.
- ``deny`` accumulates: the union of the parent's deny and the requested deny.
- ``audience``: requested values must be among the parent's (else ``invalid_target``);
  none requested inherits the parent's audience.
- ``budgets`` are *carved* out of the parent's remaining units. For a counter the parent
  carries, the child gets what it asks for (at most min(parent remaining, child ceiling
  cap)); a counter it does not ask for is carved at **0**, so the parent never loses units
  silently and the child is never unmetered where the parent was metered. A counter only the
  child ceiling caps is granted as for a root session (requested or the cap) and carves
  nothing. ``ChildGrant.carve`` says how many units the store moves in one transaction.
- ``exp`` ≤ the parent's exp; lifetime also ≤ the child ceiling's max and ``max_lifetime``.
- ``depth`` = parent depth + 1 ≤ min(parent ``max_depth``, parent depth + parent ceiling
  ``max_delegation_depth``, ``depth_limit``); the child's ``max_depth`` never exceeds the
  parent's (a ceiling's ``max_delegation_depth`` counts levels below that agent's session).
- the child must be in the parent ceiling's ``may_delegate_to`` (``unauthorized_client``),
  and its model digest in its own ceiling.
- ``act`` nests per RFC 8693 §4.1: the new ``act`` is ``{"sub": child, "act": previous}``.
  :func:`act_chain` lists actors outermost (most recent) first, so a child's chain is
  ``[child] + parent's chain``: the parent's chain is always a suffix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from tessera.identity.ceiling import (
    DEFAULT_DELEGATION_DEPTH,
    DEFAULT_SESSION_LIFETIME,
    MAX_DELEGATION_DEPTH,
    MAX_SESSION_LIFETIME,
    Ceiling,
)
from tessera.tokens.grant import SessionGrant, effective_lifetime, narrow
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.rar import SessionRequest

if TYPE_CHECKING:
    from tessera.tokens.claims import SessionClaims

# One more than the deepest chain: an on-behalf-of root already carries one actor.
MAX_ACT_DEPTH: Final = MAX_DELEGATION_DEPTH + 1
MAX_ACTOR_LENGTH: Final = 256


def _bad_act(detail: str) -> OAuthError:
    return OAuthError("invalid_grant", "the token's act claim is malformed", detail=detail)


def act_chain(act: Mapping[str, Any] | None) -> list[str]:
    """Actors of an RFC 8693 §4.1 ``act`` claim, outermost (current actor) first.

    Each level must be an object with a non-empty string ``sub`` and optionally a nested
    ``act``; any other member, or more than ``MAX_ACT_DEPTH`` levels, is refused
    (``invalid_grant``). ``None`` is the empty chain.
    """
    chain: list[str] = []
    node: Any = act
    while node is not None:
        if len(chain) >= MAX_ACT_DEPTH:
            raise _bad_act(f"act nests deeper than {MAX_ACT_DEPTH}")
        if not isinstance(node, Mapping):
            raise _bad_act("act level is not an object")
        if set(node) - {"sub", "act"}:
            raise _bad_act("act level has members other than sub and act")
        sub = node.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > MAX_ACTOR_LENGTH:
            raise _bad_act("act.sub must be a non-empty string")
        chain.append(sub)
        if "act" in node and node["act"] is None:
            raise _bad_act("act.act must be an object when present")
        node = node.get("act")
    return chain


def act_from_chain(chain: list[str]) -> dict[str, Any] | None:
    """Inverse of :func:`act_chain` (outermost first); the empty chain is ``None``."""
    act: dict[str, Any] | None = None
    for sub in reversed(chain):
        act = {"sub": sub} if act is None else {"sub": sub, "act": act}
    return act


def nest_act(prev_act: Mapping[str, Any] | None, actor_sub: str) -> dict[str, Any]:
    """RFC 8693 §4.1: ``{"sub": actor_sub, "act": prev_act}`` (``act`` left out when none).

    The previous claim is validated and rebuilt, so the result never shares structure with
    (or smuggles extra members from) its input.
    """
    chain = [actor_sub, *act_chain(prev_act)]
    if len(chain) > MAX_ACT_DEPTH:
        raise _bad_act(f"act would nest deeper than {MAX_ACT_DEPTH}")
    act_chain({"sub": actor_sub})  # validates the new actor the same way
    result = act_from_chain(chain)
    if result is None:  # pragma: no cover - chain has at least one element
        raise _bad_act("empty act chain")
    return result


def _empty() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True)
class ChildGrant:
    """A derived session: its grant, the new ``act``, ``exp`` and the units to carve."""

    grant: SessionGrant
    subject: str
    client_id: str
    exp: int
    act: Mapping[str, Any] = field(hash=False)
    carve: Mapping[str, int] = field(default_factory=_empty, hash=False)


def _carve_budgets(
    parent: SessionGrant,
    child_ceiling: Ceiling,
    request: SessionRequest,
    remaining: Mapping[str, int],
) -> tuple[dict[str, int], dict[str, int]]:
    budgets: dict[str, int] = {}
    carve: dict[str, int] = {}
    for name in sorted(request.budgets):
        if name not in parent.budgets and name not in child_ceiling.budgets:
            raise OAuthError(
                "invalid_authorization_details", f"budget {name} is not available to the child"
            )
    for name, granted in parent.budgets.items():
        # A counter missing from the store's remaining view counts as spent (fail closed).
        available = max(0, min(remaining.get(name, 0), granted))
        cap = min(available, child_ceiling.budgets.get(name, available))
        amount = request.budgets.get(name, 0)
        if amount > cap:
            where = "parent's remaining budget" if amount > available else "child agent ceiling"
            raise OAuthError("invalid_authorization_details", f"budget {name} exceeds the {where}")
        # INVARIANT: carve[name] <= parent's remaining units.
        budgets[name] = carve[name] = amount
    for name, cap in child_ceiling.budgets.items():
        if name in parent.budgets:
            continue
        amount = request.budgets.get(name, cap)
        if amount > cap:
            raise OAuthError(
                "invalid_authorization_details", f"budget {name} exceeds the child agent ceiling"
            )
        budgets[name] = amount
    return budgets, carve


def derive_child_grant(
    parent: SessionClaims,
    child_ceiling: Ceiling,
    request: SessionRequest,
    *,
    parent_ceiling: Ceiling,
    parent_remaining_budgets: Mapping[str, int],
    now: int,
    child_agent_id: str,
    child_model_digest: str,
    depth_limit: int = DEFAULT_DELEGATION_DEPTH,
    default_lifetime: int = DEFAULT_SESSION_LIFETIME,
    max_lifetime: int = MAX_SESSION_LIFETIME,
) -> ChildGrant:
    """Grant for a sub-agent from its parent's verified session (DESIGN 2C, RFC 8693 §2.1).

    ``parent`` is the verified subject token (as stored); ``parent_ceiling`` is the parent
    agent's *current* ceiling; ``parent_remaining_budgets`` the store's counters.
    """
    pg = parent.grant
    if child_agent_id not in parent_ceiling.may_delegate_to:
        raise OAuthError(
            "unauthorized_client",
            "delegation to this agent is not allowed",
            detail=f"{child_agent_id} not in may_delegate_to of {parent.client_id}",
        )
    if parent.exp <= now:
        raise OAuthError("invalid_grant", "the subject token has expired")
    if not child_ceiling.allows_model(child_model_digest):
        raise OAuthError(
            "unauthorized_client",
            "the model is not allowed for the child agent",
            detail=f"model digest {child_model_digest} not in child ceiling",
        )
    depth = pg.depth + 1
    limit = min(
        pg.max_depth,
        pg.depth + parent_ceiling.max_delegation_depth,
        depth_limit,
        MAX_DELEGATION_DEPTH,
    )
    if depth > limit:
        raise OAuthError(
            "invalid_grant",
            "the delegation depth limit is reached",
            detail=f"depth {depth} > limit {limit}",
        )
    tools = narrow(
        request.tools,
        [("parent session", pg.tools), ("child agent ceiling", child_ceiling.tools)],
        "tool",
        forbidden=pg.deny,
    )
    data_scope = narrow(
        request.data_scope,
        [("parent session", pg.data_scope), ("child agent ceiling", child_ceiling.data_scopes)],
        "scope",
    )
    if request.audience and not request.audience <= pg.audience:
        raise OAuthError("invalid_target", "an audience is outside the parent session")
    audience = request.audience or pg.audience
    budgets, carve = _carve_budgets(pg, child_ceiling, request, parent_remaining_budgets)
    lifetime = effective_lifetime(
        request.lifetime,
        default_lifetime=default_lifetime,
        limits=(child_ceiling.max_session_lifetime, max_lifetime, parent.exp - now),
    )
    act = nest_act(parent.act, child_agent_id)
    grant = SessionGrant(
        tools=tools,
        deny=pg.deny | request.deny,
        data_scope=data_scope,
        budgets=MappingProxyType(budgets),
        audience=audience,
        lifetime=lifetime,
        model_digest=child_model_digest,
        depth=depth,
        max_depth=min(limit, depth + child_ceiling.max_delegation_depth),
    )
    # INVARIANT: exp <= parent's exp, because lifetime <= parent.exp - now.
    return ChildGrant(
        grant=grant,
        subject=parent.subject,
        client_id=child_agent_id,
        exp=now + lifetime,
        act=act,
        carve=MappingProxyType(carve),
    )
