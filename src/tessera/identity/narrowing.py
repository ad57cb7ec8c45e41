"""Narrowing a ceiling: is one ceiling inside another, and what does narrowing remove.

DESIGN 6b: a ceiling is tools, data scopes, models, may-delegate-to, budgets, the maximum
session lifetime and delegation depth, and ``dpop_required``. A ceiling ``new`` lies
*within* ``old`` when every item of ``new`` is covered by an item of ``old`` (a pattern
covers its narrower items), every counter of ``new`` is capped at most as high as in
``old`` (and no counter of ``old`` is dropped: a dropped counter would become unlimited),
the limits are no higher, and ``dpop_required`` is not switched off.
"""

from __future__ import annotations

from typing import Any

from tessera.identity.ceiling import Ceiling, covered_by_any


def within(new: Ceiling, old: Ceiling) -> list[str]:
    """The reasons ``new`` is wider than ``old``; empty when it lies within."""
    wider: list[str] = []
    wider += [f"tools: {t}" for t in sorted(new.tools) if not old.allows_tool(t)]
    wider += [f"data_scopes: {s}" for s in sorted(new.data_scopes) if not old.allows_scope(s)]
    wider += [f"models: {m}" for m in sorted(new.models - old.models)]
    wider += [f"may_delegate_to: {a}" for a in sorted(new.may_delegate_to - old.may_delegate_to)]
    for name, cap in sorted(old.budgets.items()):
        if name not in new.budgets:
            wider.append(f"budgets: {name} dropped (would become unlimited)")
        elif new.budgets[name] > cap:
            wider.append(f"budgets: {name} above {cap}")
    wider += [f"budgets: {n} is new" for n in sorted(set(new.budgets) - set(old.budgets))]
    if new.max_session_lifetime > old.max_session_lifetime:
        wider.append("max_session_lifetime is higher")
    if new.max_delegation_depth > old.max_delegation_depth:
        wider.append("max_delegation_depth is higher")
    if old.dpop_required and not new.dpop_required:
        wider.append("dpop_required switched off")
    return wider


def removed(old: Ceiling, new: Ceiling) -> dict[str, Any]:
    """What narrowing ``old`` to ``new`` takes away (the ``agent.ceiling_changed`` payload)."""
    out: dict[str, Any] = {
        "tools": sorted(old.tools - new.tools),
        "data_scopes": sorted(old.data_scopes - new.data_scopes),
        "models": sorted(old.models - new.models),
        "may_delegate_to": sorted(old.may_delegate_to - new.may_delegate_to),
        "budgets": {
            n: {"from": cap, "to": new.budgets[n]}
            for n, cap in sorted(old.budgets.items())
            if new.budgets.get(n, cap) < cap
        },
    }
    if new.max_session_lifetime < old.max_session_lifetime:
        out["max_session_lifetime"] = {
            "from": old.max_session_lifetime,
            "to": new.max_session_lifetime,
        }
    if new.max_delegation_depth < old.max_delegation_depth:
        out["max_delegation_depth"] = {
            "from": old.max_delegation_depth,
            "to": new.max_delegation_depth,
        }
    return out


def grant_exceeds(grant: dict[str, Any] | Any, ceiling: Ceiling) -> bool:
    """Does a stored session grant (RAR ``tessera_session`` object) reach beyond ``ceiling``?"""
    tools = grant.get("tools") or []
    scopes = grant.get("data_scope") or []
    budgets = grant.get("budgets") or {}
    if any(not covered_by_any(ceiling.tools, str(t), kind="tool") for t in tools):
        return True
    if any(not covered_by_any(ceiling.data_scopes, str(s), kind="scope") for s in scopes):
        return True
    for name, amount in budgets.items():
        cap = ceiling.budgets.get(str(name))
        if cap is None or (isinstance(amount, int) and amount > cap):
            return True
    depth = grant.get("max_depth")
    return isinstance(depth, int) and depth > ceiling.max_delegation_depth


def intersect(suggested: Ceiling, current: Ceiling) -> Ceiling:
    """A ceiling within both: used when a suggestion was computed from an older ceiling
    (two findings narrowing the same agent in one ``--apply``)."""
    tools = {t for t in suggested.tools if current.allows_tool(t)}
    tools |= {t for t in current.tools if suggested.allows_tool(t)}
    scopes = {s for s in suggested.data_scopes if current.allows_scope(s)}
    scopes |= {s for s in current.data_scopes if suggested.allows_scope(s)}
    budgets = {
        n: min(cap, suggested.budgets.get(n, cap)) for n, cap in sorted(current.budgets.items())
    }
    return Ceiling(
        tools=frozenset(tools),
        data_scopes=frozenset(scopes),
        models=suggested.models & current.models,
        may_delegate_to=suggested.may_delegate_to & current.may_delegate_to,
        budgets=budgets,
        max_session_lifetime=min(suggested.max_session_lifetime, current.max_session_lifetime),
        max_delegation_depth=min(suggested.max_delegation_depth, current.max_delegation_depth),
        dpop_required=suggested.dpop_required or current.dpop_required,
    )
