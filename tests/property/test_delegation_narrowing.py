"""Delegation never widens (DESIGN 1, 2C, 10).

For random parents, child ceilings and requests, an issued child never exceeds its parent or
its own ceiling in any dimension; ``act`` only grows by the new actor; carved budgets are
conserved across any tree of delegations. Refusals must be ``OAuthError`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tessera.identity.ceiling import Ceiling
from tessera.tokens.claims import SessionClaims, build_session_claims, parse_session_claims
from tessera.tokens.delegation import act_chain, act_from_chain, derive_child_grant, nest_act
from tessera.tokens.grant import SessionGrant, compute_session_grant
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.rar import SessionRequest

SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SERVERS = ["fs", "web", "mail"]
NAMES = ["read", "write", "post"]
CONCRETE_TOOLS = [f"{s}/{n}" for s in SERVERS for n in NAMES]
TOOL_PATTERNS = CONCRETE_TOOLS + [f"{s}/*" for s in SERVERS]
TYPES = ["doc", "crm"]
CONCRETE_SCOPES = [f"{t}:{i}" for t in TYPES for i in ("1", "2", "3")]
SCOPE_PATTERNS = CONCRETE_SCOPES + [f"{t}:*" for t in TYPES]
COUNTERS = ["tool_calls", "external_calls", "emails"]
AUDIENCES = ["svc-a", "svc-b", "svc-c"]
DIGEST = "sha256:" + "a" * 64
CHILD = "agt_child"
NOW = 1_800_000_000

tool_sets = st.frozensets(st.sampled_from(TOOL_PATTERNS), max_size=5)
scope_sets = st.frozensets(st.sampled_from(SCOPE_PATTERNS), max_size=4)
budget_maps = st.dictionaries(st.sampled_from(COUNTERS), st.integers(0, 50), max_size=3)
audience_sets = st.frozensets(st.sampled_from(AUDIENCES), max_size=3)


@st.composite
def ceilings(draw: st.DrawFn) -> Ceiling:
    return Ceiling(
        tools=draw(tool_sets),
        data_scopes=draw(scope_sets),
        models=frozenset({DIGEST}),
        budgets=draw(budget_maps),
        max_session_lifetime=draw(st.integers(60, 3600)),
        max_delegation_depth=draw(st.integers(0, 6)),
    )


@st.composite
def parents(draw: st.DrawFn) -> SessionClaims:
    """A random, well-formed parent session at any depth."""
    depth = draw(st.integers(0, 4))
    on_behalf = draw(st.booleans())
    actors = [f"agt_{i}" for i in range(depth + (1 if on_behalf else 0))]
    client_id = actors[0] if actors else "agt_root"
    subject = "usr_alice" if on_behalf else ("agt_root" if depth else client_id)
    lifetime = draw(st.integers(1, 3600))
    grant = SessionGrant(
        tools=draw(tool_sets),
        deny=draw(st.frozensets(st.sampled_from(TOOL_PATTERNS), max_size=3)),
        data_scope=draw(scope_sets),
        budgets=draw(budget_maps),
        audience=draw(audience_sets.filter(bool)),
        lifetime=lifetime,
        model_digest=DIGEST,
        depth=depth,
        max_depth=draw(st.integers(depth, 6)),
    )
    claims = build_session_claims(
        grant,
        issuer="https://tessera.test",
        subject=subject,
        client_id=client_id,
        jti="j",
        iat=NOW,
        sid="s",
        operator="op",
        model_id="m",
        jkt=None,
        act=act_from_chain(actors),
        parent="sha256:p" if depth else None,
    )
    return parse_session_claims(claims)


@st.composite
def requests(draw: st.DrawFn, parent: SessionGrant | None = None) -> SessionRequest:
    tools = draw(tool_sets)
    if parent is not None and draw(st.booleans()):
        # Bias towards plausible requests so that many derivations succeed.
        tools = frozenset(
            draw(st.lists(st.sampled_from(sorted(parent.tools) or ["fs/*"]), max_size=3))
        )
    return SessionRequest(
        tools=tools,
        deny=draw(st.frozensets(st.sampled_from(TOOL_PATTERNS), max_size=2)),
        data_scope=draw(scope_sets),
        budgets=draw(budget_maps),
        audience=draw(audience_sets),
        lifetime=draw(st.none() | st.integers(1, 4000)),
    )


def _check_child(
    parent: SessionClaims, child_cap: Ceiling, remaining: Mapping[str, int], now: int, child: Any
) -> None:
    pg, cg = parent.grant, child.grant
    # tools: every concrete tool the child may call, the parent and the child ceiling allow
    for tool in CONCRETE_TOOLS:
        if cg.allows_tool(tool):
            assert pg.allows_tool(tool), tool
            assert child_cap.allows_tool(tool), tool
    for pattern in cg.tools:
        assert any(_covered_tool(p, pattern) for p in pg.tools)
        assert child_cap.allows_tool(pattern)
    assert cg.deny >= pg.deny
    for scope in CONCRETE_SCOPES:
        if cg.allows_scope(scope):
            assert pg.allows_scope(scope), scope
            assert child_cap.allows_scope(scope), scope
    for pattern in cg.data_scope:
        assert pg.allows_scope(pattern)
        assert child_cap.allows_scope(pattern)
    assert cg.audience
    assert cg.audience <= pg.audience
    for name, granted in pg.budgets.items():
        # INVARIANT: a metered parent never yields an unmetered child
        assert name in cg.budgets
        assert cg.budgets[name] == child.carve[name]
        assert 0 <= child.carve[name] <= min(remaining.get(name, 0), granted)
        if name in child_cap.budgets:
            assert cg.budgets[name] <= child_cap.budgets[name]
    for name, amount in cg.budgets.items():
        if name not in pg.budgets:
            assert amount <= child_cap.budgets[name]
            assert name not in child.carve
    assert set(child.carve) == set(pg.budgets)
    assert now < child.exp <= parent.exp
    assert cg.lifetime == child.exp - now <= child_cap.max_session_lifetime
    assert cg.depth == pg.depth + 1 <= pg.max_depth
    assert cg.depth <= cg.max_depth <= pg.max_depth
    assert act_chain(child.act) == [CHILD, *act_chain(parent.act)]
    assert child.subject == parent.subject
    # the child's token is one we would read back
    parse_session_claims(
        build_session_claims(
            cg,
            issuer="https://tessera.test",
            subject=child.subject,
            client_id=CHILD,
            jti="c",
            iat=now,
            sid="s2",
            operator="op",
            model_id="m",
            jkt=None,
            act=child.act,
            parent="sha256:parent",
        )
    )


def _covered_tool(outer: str, inner: str) -> bool:
    return outer == inner or (outer.endswith("/*") and outer[:-1] == inner[: len(outer) - 1])


@st.composite
def plausible_requests(
    draw: st.DrawFn, parent: SessionGrant, child_cap: Ceiling, remaining: Mapping[str, int]
) -> SessionRequest:
    """Requests built to lie inside both bounds, so that most derivations succeed."""
    safe_tools = [
        t
        for t in CONCRETE_TOOLS
        if parent.allows_tool(t)
        and not any(_covered_tool(d, t) for d in parent.deny)
        and child_cap.allows_tool(t)
    ]
    safe_scopes = [
        s for s in CONCRETE_SCOPES if parent.allows_scope(s) and child_cap.allows_scope(s)
    ]
    wild_tools = [f"{s}/*" for s in SERVERS]
    wild_scopes = [f"{t}:*" for t in TYPES]
    tools = draw(st.frozensets(st.sampled_from(wild_tools + safe_tools), max_size=4))
    scopes = draw(st.frozensets(st.sampled_from(wild_scopes + safe_scopes), max_size=3))
    budgets: dict[str, int] = {}
    for name, granted in parent.budgets.items():
        cap = min(remaining.get(name, 0), granted, child_cap.budgets.get(name, granted))
        if draw(st.booleans()):
            budgets[name] = draw(st.integers(0, max(cap, 0)))
    for name, cap in child_cap.budgets.items():
        if name not in parent.budgets and draw(st.booleans()):
            budgets[name] = draw(st.integers(0, cap))
    audience = draw(st.frozensets(st.sampled_from(sorted(parent.audience))))
    return SessionRequest(
        tools=tools,
        deny=draw(st.frozensets(st.sampled_from(TOOL_PATTERNS), max_size=2)),
        data_scope=scopes,
        budgets=budgets,
        audience=audience,
        lifetime=draw(st.none() | st.integers(1, 4000)),
    )


@SETTINGS
@given(data=st.data(), parent=parents(), child_cap=ceilings(), plausible=st.booleans())
def test_child_never_exceeds_parent_or_child_ceiling(
    data: st.DataObject, parent: SessionClaims, child_cap: Ceiling, plausible: bool
) -> None:
    pg = parent.grant
    if plausible:
        remaining = {n: data.draw(st.integers(0, g)) for n, g in pg.budgets.items()}
        age = data.draw(st.integers(0, parent.exp - NOW - 1))
        request = data.draw(plausible_requests(pg, child_cap, remaining))
        parent_depth = data.draw(st.integers(1, 6))
    else:
        remaining = data.draw(budget_maps)
        age = data.draw(st.integers(0, 3700))
        request = data.draw(requests(pg))
        parent_depth = data.draw(st.integers(0, 6))
    parent_cap = Ceiling(may_delegate_to=frozenset({CHILD}), max_delegation_depth=parent_depth)
    now = NOW + age
    try:
        child = derive_child_grant(
            parent,
            child_cap,
            request,
            parent_ceiling=parent_cap,
            parent_remaining_budgets=remaining,
            now=now,
            child_agent_id=CHILD,
            child_model_digest=DIGEST,
        )
    except OAuthError as exc:
        event(f"refused: {exc.code}")
        return
    event("derived")
    _check_child(parent, child_cap, remaining, now, child)


@SETTINGS
@given(cap=ceilings(), user=st.none() | ceilings(), data=st.data())
def test_root_grant_never_exceeds_ceiling_or_user(
    cap: Ceiling, user: Ceiling | None, data: st.DataObject
) -> None:
    request = data.draw(requests())
    if not request.audience:
        request = SessionRequest(
            tools=request.tools,
            deny=request.deny,
            data_scope=request.data_scope,
            budgets=request.budgets,
            audience=frozenset({"svc-a"}),
            lifetime=request.lifetime,
        )
    try:
        grant = compute_session_grant(request, cap, user, model_digest=DIGEST)
    except OAuthError as exc:
        event(f"refused: {exc.code}")
        return
    event("granted")
    for tool in CONCRETE_TOOLS:
        if grant.allows_tool(tool):
            assert cap.allows_tool(tool)
            assert user is None or user.allows_tool(tool)
            assert any(_covered_tool(r, tool) for r in request.tools)
        if any(_covered_tool(d, tool) for d in request.deny):
            assert not grant.allows_tool(tool)
    for scope in CONCRETE_SCOPES:
        if grant.allows_scope(scope):
            assert cap.allows_scope(scope)
            assert user is None or user.allows_scope(scope)
    assert set(grant.budgets) == set(cap.budgets)
    for name, amount in grant.budgets.items():
        assert amount <= cap.budgets[name]
        if user is not None and name in user.budgets:
            assert amount <= user.budgets[name]
    assert grant.lifetime <= min(cap.max_session_lifetime, 3600)
    assert grant.max_depth <= cap.max_delegation_depth


@SETTINGS
@given(
    chain=st.lists(st.text("abc_", min_size=1, max_size=4), max_size=10),
    actor=st.text("xyz", min_size=1, max_size=4),
)
def test_act_only_appends(chain: list[str], actor: str) -> None:
    prev = act_from_chain(chain)
    assert act_chain(prev) == chain
    assert act_chain(nest_act(prev, actor)) == [actor, *chain]


@SETTINGS
@given(
    root_budgets=st.dictionaries(
        st.sampled_from(COUNTERS), st.integers(0, 40), min_size=1, max_size=3
    ),
    steps=st.lists(st.tuples(st.integers(0, 20), budget_maps), min_size=1, max_size=12),
)
def test_carved_budgets_are_conserved(
    root_budgets: dict[str, int], steps: list[tuple[int, dict[str, int]]]
) -> None:
    """Any tree of delegations: carves move units, never create them."""
    names = [f"agt_{i}" for i in range(len(steps) + 1)]
    cap = Ceiling(
        tools=frozenset({"fs/*"}),
        models=frozenset({DIGEST}),
        may_delegate_to=frozenset(names),
        budgets=root_budgets,
        max_session_lifetime=3600,
        max_delegation_depth=25,
    )
    root_grant = compute_session_grant(
        SessionRequest(tools=frozenset({"fs/*"}), audience=frozenset({"svc-a"}), lifetime=3600),
        cap,
        None,
        model_digest=DIGEST,
        depth_limit=25,
    )
    root = parse_session_claims(
        build_session_claims(
            root_grant,
            issuer="i",
            subject=names[0],
            client_id=names[0],
            jti="j",
            iat=NOW,
            sid="s0",
            operator="op",
            model_id="m",
            jkt=None,
        )
    )
    nodes: list[SessionClaims] = [root]
    remaining: list[dict[str, int]] = [dict(root_grant.budgets)]
    for index, (pick, ask) in enumerate(steps, start=1):
        parent_index = pick % len(nodes)
        parent = nodes[parent_index]
        request = SessionRequest(tools=frozenset({"fs/*"}), budgets=ask)
        try:
            child = derive_child_grant(
                parent,
                cap,
                request,
                parent_ceiling=cap,
                parent_remaining_budgets=remaining[parent_index],
                now=NOW + index,
                child_agent_id=names[index],
                child_model_digest=DIGEST,
                depth_limit=25,
            )
        except OAuthError:
            event("a delegation was refused")
            continue
        for name, units in child.carve.items():
            # the store's conditional update: remaining >= units
            assert remaining[parent_index][name] >= units
            remaining[parent_index][name] -= units
        nodes.append(
            parse_session_claims(
                build_session_claims(
                    child.grant,
                    issuer="i",
                    subject=child.subject,
                    client_id=names[index],
                    jti=f"j{index}",
                    iat=NOW + index,
                    sid=f"s{index}",
                    operator="op",
                    model_id="m",
                    jkt=None,
                    act=child.act,
                    parent=f"sha256:{index}",
                )
            )
        )
        remaining.append({n: child.grant.budgets[n] for n in root_budgets})
    for name, total in root_budgets.items():
        assert all(r[name] >= 0 for r in remaining)
        assert sum(r[name] for r in remaining) == total
