"""Over-privileged agents: ceiling tools and data scopes never used in the audit window.

Usage is what the ledger says the agent was *allowed* to do (``pdp.evaluation`` and
``pdp.evaluations`` records). Only agents older than the window that ran at least one
session in it are judged (one that ran none is dormant, a different finding). The finding
carries the suggested narrower ceiling: the current one without the unused items, which
``narrow_agent_ceiling`` accepts because it lies within the current one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

from tessera.identity.ceiling import scope_covered, tool_covered
from tessera.identity.model import AgentStatus
from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import Inventory, UsageSummary
from tessera.posture.settings import PostureSettings


def used_scope(resource: str, scope_types: dict[str, str]) -> str:
    rtype, _, rid = resource.partition(":")
    return f"{scope_types.get(rtype, rtype)}:{rid}"


class OverPrivilegedAgents:
    id = "over_privileged_agent"
    title = "Ceiling grants never used in the audit window"

    def evaluate(
        self, inv: Inventory, usage: UsageSummary, settings: PostureSettings
    ) -> Iterator[Finding]:
        born_before = inv.now - timedelta(days=settings.usage_window_days)
        types = dict(settings.scope_types)
        for agent in inv.agents:
            if agent.status != AgentStatus.ACTIVE or agent.created_at > born_before:
                continue
            if usage.sessions.get(agent.id, 0) == 0:
                continue
            tools = usage.tools_used.get(agent.id, set())
            scopes = {used_scope(r, types) for r in usage.resources_used.get(agent.id, set())}
            ceiling = agent.ceiling
            unused_tools = sorted(
                p for p in ceiling.tools if not any(tool_covered(p, t) for t in tools)
            )
            unused_scopes = sorted(
                p for p in ceiling.data_scopes if not any(scope_covered(p, s) for s in scopes)
            )
            if not unused_tools and not unused_scopes:
                continue
            suggested = replace(
                ceiling,
                tools=ceiling.tools - frozenset(unused_tools),
                data_scopes=ceiling.data_scopes - frozenset(unused_scopes),
            )
            share = (len(unused_tools) + len(unused_scopes)) / max(
                1, len(ceiling.tools) + len(ceiling.data_scopes)
            )
            yield Finding(
                self.id,
                Severity.HIGH if share > 0.5 else Severity.MEDIUM,
                SubjectKind.AGENT,
                agent.id,
                f"agent {agent.name}: {len(unused_tools)} tool(s) and {len(unused_scopes)}"
                f" data scope(s) unused in {settings.usage_window_days} days",
                {
                    "name": agent.name,
                    "unused_tools": unused_tools,
                    "unused_data_scopes": unused_scopes,
                    "used_tools": sorted(tools)[:100],
                    "sessions_in_window": usage.sessions.get(agent.id, 0),
                    "window_days": settings.usage_window_days,
                },
                Remediation.NARROW_CEILING,
                {"ceiling": suggested.to_dict()},
                agent=agent.id,
            )
