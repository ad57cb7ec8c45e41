"""Agents whose ceiling exceeds their owner's rights.

On behalf of a user the effective rights are user ∩ ceiling ∩ session (DESIGN 1), but an
autonomous session (``client_credentials``) has no user to intersect with: an agent whose
ceiling reaches beyond its owner's grants lets the owner act through it beyond their own
rights. The suggested ceiling keeps what the owner may do: items the owner's grants cover,
the owner's narrower items inside an agent pattern, and budgets capped at the owner's."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from tessera.identity.ceiling import Ceiling, covered_by_any, scope_covered, tool_covered
from tessera.identity.model import AgentStatus, UserStatus
from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import Inventory, UsageSummary
from tessera.posture.settings import PostureSettings


def _narrow(mine: frozenset[str], owner: frozenset[str], kind: str) -> frozenset[str]:
    inside = tool_covered if kind == "tool" else scope_covered
    keep = {p for p in mine if covered_by_any(owner, p, kind=kind)}
    for p in mine - keep:
        keep.update(o for o in owner if inside(p, o))
    return frozenset(keep)


def owner_bounded(ceiling: Ceiling, grants: Ceiling) -> Ceiling:
    budgets = {
        n: min(cap, grants.budgets[n]) if n in grants.budgets else cap
        for n, cap in ceiling.budgets.items()
    }
    return replace(
        ceiling,
        tools=_narrow(ceiling.tools, grants.tools, "tool"),
        data_scopes=_narrow(ceiling.data_scopes, grants.data_scopes, "scope"),
        budgets=budgets,
    )


class CeilingExceedsOwner:
    id = "ceiling_exceeds_owner"
    title = "Agent ceiling exceeds its owner's rights"

    def evaluate(
        self, inv: Inventory, usage: UsageSummary, settings: PostureSettings
    ) -> Iterator[Finding]:
        # Agents share ceiling templates and owners share grants: judge each distinct
        # (ceiling, grants) pair once (the inventory hands out one object per text).
        memo: dict[tuple[int, int], _Verdict | None] = {}
        for agent in inv.agents:
            if agent.status == AgentStatus.DECOMMISSIONED:
                continue
            owner = inv.users.get(agent.owner_user_id)
            if owner is None or owner.status != UserStatus.ACTIVE:
                continue  # orphaned: its own finding
            pair = (id(agent.ceiling), id(owner.grants))
            if pair not in memo:
                memo[pair] = _judge(agent.ceiling, owner.grants)
            verdict = memo[pair]
            if verdict is None:
                continue
            yield Finding(
                self.id,
                Severity.HIGH,
                SubjectKind.AGENT,
                agent.id,
                f"agent {agent.name} may do more than its owner {owner.username}",
                {"name": agent.name, "owner": owner.username, **verdict.evidence},
                Remediation.NARROW_CEILING,
                {"ceiling": verdict.suggested},
                agent=agent.id,
            )


@dataclass(frozen=True)
class _Verdict:
    evidence: dict[str, Any]
    suggested: dict[str, Any]


def _judge(c: Ceiling, g: Ceiling) -> _Verdict | None:
    tools = sorted(t for t in c.tools if not g.allows_tool(t))
    scopes = sorted(s for s in c.data_scopes if not g.allows_scope(s))
    budgets = sorted(n for n, cap in c.budgets.items() if cap > g.budgets.get(n, cap))
    if not (tools or scopes or budgets):
        return None
    return _Verdict(
        {
            "tools_beyond_owner": tools,
            "data_scopes_beyond_owner": scopes,
            "budgets_beyond_owner": budgets,
        },
        owner_bounded(c, g).to_dict(),
    )
