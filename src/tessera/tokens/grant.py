"""The effective session grant: request ∩ agent ceiling ∩ user rights (DESIGN 1, 2A, 6b).

Rules (each one fails closed):

- **Explicit items** (``fs/read``, ``doc:42``) must lie inside every bound (the ceiling and,
  on behalf of a user, the user's rights); one outside is refused with RFC 9396
  ``invalid_authorization_details`` (DESIGN 6b).
- **Wildcards** (``fs/*``, ``doc:*``) are narrowed silently to the intersection of the
  patterns: ``fs/*`` ∩ ceiling [``fs/read``, ``web/*``] = [``fs/read``]; ``fs/*`` ∩ [``fs/*``]
  = [``fs/*``]; a wildcard with nothing inside the bounds yields nothing.
- **Omitted** ``tools`` / ``data_scope`` grant *nothing*, never "everything allowed": an
  agent must name what its task needs.
- ``deny`` is carried unchanged and always wins over ``tools``.
- **Budgets**: the ceiling names every counter the agent may have. A requested counter the
  ceiling does not name is refused; a requested amount above the ceiling's (or the user's)
  cap is refused; a counter the ceiling caps but the request omits is granted at the cap, so
  a session always carries every counter its ceiling caps (no budget becomes unlimited by
  omission). A user's budget caps apply when the user's grants name that counter.
- **Lifetime**: min(requested or ``default_lifetime``, ceiling ``max_session_lifetime``,
  ``max_lifetime``), silently.
- **Model**: the attested digest must be in the ceiling's ``models``, else
  ``unauthorized_client``.
- **Depth**: a root session has depth 0 and ``max_depth`` = min(ceiling
  ``max_delegation_depth``, ``depth_limit``); delegation can only lower it.
- ``user_rights=None`` means *no user* (an autonomous session), not "unknown rights"; a
  service that cannot load a user's rights must pass an empty ``Ceiling()`` instead.
  Of the user's grants only tools, data scopes and budgets apply; models, delegation and
  lifetime are properties of the agent.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from tessera.identity.ceiling import (
    DEFAULT_DELEGATION_DEPTH,
    DEFAULT_SESSION_LIFETIME,
    MAX_SESSION_LIFETIME,
    Ceiling,
    covered_by_any,
    scope_covered,
    tool_covered,
)
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.rar import SessionRequest

Kind = Literal["tool", "scope"]
_SEPARATOR: Final[dict[str, str]] = {"tool": "/", "scope": ":"}


def _empty_budgets() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True)
class SessionGrant:
    """What one session may do; every field ends up in the token and the stored session."""

    tools: frozenset[str]
    deny: frozenset[str]
    data_scope: frozenset[str]
    budgets: Mapping[str, int] = field(hash=False)
    audience: frozenset[str]
    lifetime: int
    model_digest: str
    depth: int = 0
    max_depth: int = DEFAULT_DELEGATION_DEPTH

    def allows_tool(self, tool: str) -> bool:
        """DESIGN 5: the tool is in ``tools`` and not in ``deny`` (deny wins)."""
        return covered_by_any(self.tools, tool, kind="tool") and not any(
            _overlaps(d, tool, "tool") for d in self.deny
        )

    def allows_scope(self, scope: str) -> bool:
        return covered_by_any(self.data_scope, scope, kind="scope")


def is_wildcard(item: str, kind: Kind) -> bool:
    return item.partition(_SEPARATOR[kind])[2] == "*"


def _covered(outer: str, inner: str, kind: Kind) -> bool:
    return tool_covered(outer, inner) if kind == "tool" else scope_covered(outer, inner)


def _overlaps(a: str, b: str, kind: Kind) -> bool:
    return _covered(a, b, kind) or _covered(b, a, kind)


def meet(a: str, b: str, kind: Kind) -> str | None:
    """The intersection of two patterns: the narrower one when they overlap, else None."""
    if _covered(a, b, kind):
        return b
    if _covered(b, a, kind):
        return a
    return None


def minimize(items: Iterable[str], kind: Kind) -> frozenset[str]:
    """Drop items already covered by another, different item of the set."""
    pool = set(items)
    return frozenset(x for x in pool if not any(y != x and _covered(y, x, kind) for y in pool))


def intersect_patterns(a: Iterable[str], b: Iterable[str], kind: Kind) -> frozenset[str]:
    """Pattern-set intersection: every item covered by both ``a`` and ``b``."""
    b_list = list(b)
    out = {m for x in a for y in b_list if (m := meet(x, y, kind)) is not None}
    return minimize(out, kind)


def narrow(
    requested: Iterable[str],
    bounds: Iterable[tuple[str, Collection[str]]],
    kind: Kind,
    *,
    forbidden: Collection[str] = (),
) -> frozenset[str]:
    """Apply DESIGN 6b to one dimension.

    ``bounds`` are (name, patterns) pairs the result must lie inside. An explicit item outside
    a bound, or covered by a ``forbidden`` (inherited deny) pattern, is refused; a wildcard is
    narrowed to the intersection. Raises ``OAuthError(invalid_authorization_details)``.
    """
    bound_list = list(bounds)
    label = "tool" if kind == "tool" else "data scope"
    out: set[str] = set()
    for item in sorted(requested):
        if is_wildcard(item, kind):
            current: frozenset[str] = frozenset({item})
            for _, patterns in bound_list:
                current = intersect_patterns(current, patterns, kind)
            out |= current
            continue
        for bound_name, patterns in bound_list:
            if not covered_by_any(patterns, item, kind=kind):
                raise OAuthError(
                    "invalid_authorization_details", f"{label} {item} is outside the {bound_name}"
                )
        if any(_covered(d, item, kind) for d in forbidden):
            raise OAuthError(
                "invalid_authorization_details", f"{label} {item} is denied by the parent session"
            )
        out.add(item)
    return minimize(out, kind)


def narrow_budgets(
    requested: Mapping[str, int],
    caps: Iterable[tuple[str, Mapping[str, int]]],
    *,
    defaults: Mapping[str, int],
) -> dict[str, int]:
    """Budgets for a root session; see the module docstring for the rules."""
    cap_list = list(caps)
    for name in sorted(requested):
        if name not in defaults:
            raise OAuthError(
                "invalid_authorization_details", f"budget {name} is not available to this agent"
            )
    out: dict[str, int] = {}
    for name, default in defaults.items():
        amount = requested.get(name, default)
        limit = default
        for cap_name, cap in [("agent ceiling", defaults), *cap_list]:
            if name in cap:
                limit = min(limit, cap[name])
                if name in requested and amount > cap[name]:
                    raise OAuthError(
                        "invalid_authorization_details", f"budget {name} exceeds the {cap_name}"
                    )
        # INVARIANT: never above the ceiling's or the user's cap.
        out[name] = min(amount, limit)
    return out


def effective_lifetime(
    requested: int | None, *, default_lifetime: int, limits: Iterable[int]
) -> int:
    lifetime = requested if requested is not None else default_lifetime
    for limit in limits:
        lifetime = min(lifetime, limit)
    if lifetime <= 0:
        raise OAuthError("invalid_request", "the requested lifetime must be positive")
    return lifetime


def compute_session_grant(
    request: SessionRequest,
    ceiling: Ceiling,
    user_rights: Ceiling | None,
    *,
    model_digest: str,
    default_lifetime: int = DEFAULT_SESSION_LIFETIME,
    max_lifetime: int = MAX_SESSION_LIFETIME,
    depth_limit: int = DEFAULT_DELEGATION_DEPTH,
    default_audience: Collection[str] = (),
) -> SessionGrant:
    """Effective grant of a root session: request ∩ ceiling ∩ user rights (DESIGN 2A, 6b).

    Errors: ``unauthorized_client`` when the model digest is not allowed by the ceiling;
    ``invalid_authorization_details`` (RFC 9396 §5) for explicit items or budgets beyond a
    bound; ``invalid_target`` (RFC 8707 §2) when no audience is given or defaulted.
    """
    # INVARIANT: the model that authenticated is one the ceiling allows.
    if not ceiling.allows_model(model_digest):
        raise OAuthError(
            "unauthorized_client",
            "the model is not allowed for this client",
            detail=f"model digest {model_digest} not in ceiling",
        )
    tool_bounds: list[tuple[str, Collection[str]]] = [("agent ceiling", ceiling.tools)]
    scope_bounds: list[tuple[str, Collection[str]]] = [("agent ceiling", ceiling.data_scopes)]
    budget_caps: list[tuple[str, Mapping[str, int]]] = []
    if user_rights is not None:
        tool_bounds.append(("user's rights", user_rights.tools))
        scope_bounds.append(("user's rights", user_rights.data_scopes))
        budget_caps.append(("user's rights", user_rights.budgets))
    tools = narrow(request.tools, tool_bounds, "tool")
    data_scope = narrow(request.data_scope, scope_bounds, "scope")
    budgets = narrow_budgets(request.budgets, budget_caps, defaults=ceiling.budgets)
    audience = request.audience or frozenset(default_audience)
    if not audience:
        raise OAuthError("invalid_target", "a resource or audience is required")
    lifetime = effective_lifetime(
        request.lifetime,
        default_lifetime=default_lifetime,
        limits=(ceiling.max_session_lifetime, max_lifetime),
    )
    return SessionGrant(
        tools=tools,
        deny=frozenset(request.deny),
        data_scope=data_scope,
        budgets=MappingProxyType(budgets),
        audience=audience,
        lifetime=lifetime,
        model_digest=model_digest,
        depth=0,
        max_depth=max(0, min(ceiling.max_delegation_depth, depth_limit)),
    )
