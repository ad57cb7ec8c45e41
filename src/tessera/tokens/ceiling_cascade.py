"""Sessions that outgrow their agent's ceiling end with it (posture, issue 11).

A lifecycle hook: on ``agent.ceiling_changed`` it revokes, inside the identity change's
transaction, every active session of the agent whose stored grant reaches beyond the new
ceiling, with its delegation subtree, and writes one ``session.revoked`` event. The change
and its consequences commit together, as for suspension (``LifecycleCascade``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tessera.clock import Clock
from tessera.identity.narrowing import grant_exceeds

REASON = "agent.ceiling_changed"
MAX_SESSIONS = 10_000


class CeilingCascade:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def __call__(self, tx: Any, event: str, subject: str, payload: Mapping[str, Any]) -> None:
        if event != REASON:
            return
        agent = tx.agents.get(subject)
        if agent is None:
            return
        now = self._clock.now()
        revoked: set[str] = set()
        for rec in tx.sessions.query(agent_id=subject, status="active", limit=MAX_SESSIONS):
            if rec.sid in revoked or rec.expires_at is None or rec.expires_at <= now:
                continue
            if grant_exceeds(rec.grant, agent.ceiling):
                revoked.update(tx.sessions.revoke_subtree(rec.sid, REASON, now))
        if revoked:
            tx.events.append(
                "session.revoked",
                subject,
                {"sessions": sorted(revoked), "reason": REASON},
                "system",
            )
