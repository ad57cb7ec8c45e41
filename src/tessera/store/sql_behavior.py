"""SQL repository of behaviour baselines and drift findings (implements
``tessera.behavior.ports.BehaviourRepo`` over one connection and transaction)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select, update

from tessera.behavior.ports import StoredFinding
from tessera.clock import utc
from tessera.store import tables_behavior as tb

_B = tb.behavior_baselines
_F = tb.behavior_findings


def _finding(r: Row[Any]) -> StoredFinding:
    return StoredFinding(
        id=r.id,
        agent=r.agent,
        kind=r.kind,
        severity=r.severity,
        status=r.status,
        kl=float(r.kl),
        threshold=float(r.threshold),
        window=int(r.window),
        model_digest=r.model_digest,
        compared_to=r.compared_to,
        evidence=json.loads(r.evidence),
        remediation=r.remediation,
        created_at=utc(r.created_at),
        resolved_at=None if r.resolved_at is None else utc(r.resolved_at),
    )


class SqlBehaviourRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def save_state(
        self,
        kind: str,
        key: str,
        *,
        operator: str,
        model_digest: str,
        calls: int,
        level: str,
        state: Mapping[str, Any],
        now: datetime,
    ) -> None:
        """Upsert one agent's or peer group's state (update, else insert; same tx)."""
        values = {
            "operator": operator[:128],
            "model_digest": model_digest[:128],
            "calls": calls,
            "level": level,
            "generation": int(state.get("generation", 0)),
            "state": json.dumps(state, separators=(",", ":"), sort_keys=True),
            "updated_at": now,
        }
        done = self._c.execute(
            update(_B).where(_B.c.kind == kind, _B.c.key == key).values(**values)
        )
        if not done.rowcount:
            self._c.execute(_B.insert().values(kind=kind, key=key[:256], **values))

    def load_states(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self._c.execute(select(_B.c.key, _B.c.state).where(_B.c.kind == kind))
        return [(r.key, json.loads(r.state)) for r in rows]

    def get_state(self, kind: str, key: str) -> dict[str, Any] | None:
        row = self._c.execute(select(_B.c.state).where(_B.c.kind == kind, _B.c.key == key)).first()
        return None if row is None else dict(json.loads(row.state))

    def generations(self, keys: list[str]) -> dict[str, int]:
        """Stored re-baseline generations of these agents (absent: never stored)."""
        out: dict[str, int] = {}
        for i in range(0, len(keys), 500):
            rows = self._c.execute(
                select(_B.c.key, _B.c.generation).where(
                    _B.c.kind == "agent", _B.c.key.in_(keys[i : i + 500])
                )
            )
            out.update({r.key: int(r.generation) for r in rows})
        return out

    def summaries(self) -> list[dict[str, Any]]:
        rows = self._c.execute(
            select(_B.c.key, _B.c.operator, _B.c.model_digest, _B.c.calls, _B.c.level)
            .where(_B.c.kind == "agent")
            .order_by(_B.c.key)
        )
        return [dict(r._mapping) for r in rows]

    def open_finding(
        self,
        *,
        agent: str,
        kind: str,
        severity: str,
        kl: float,
        threshold: float,
        window: int,
        model_digest: str,
        compared_to: str,
        evidence: Mapping[str, Any],
        remediation: str,
        now: datetime,
    ) -> str:
        fid = "bfd_" + secrets.token_hex(10)
        self._c.execute(
            _F.insert().values(
                id=fid,
                agent=agent[:128],
                kind=kind,
                severity=severity,
                status="open",
                kl=kl,
                threshold=threshold,
                window=window,
                model_digest=model_digest[:128],
                compared_to=compared_to[:128],
                evidence=json.dumps(evidence, separators=(",", ":"), sort_keys=True),
                remediation=remediation,
                created_at=now,
            )
        )
        return fid

    def resolve_findings(self, agent: str, kind: str | None, now: datetime) -> int:
        cond = [_F.c.agent == agent, _F.c.status == "open"]
        if kind is not None:
            cond.append(_F.c.kind == kind)
        res = self._c.execute(update(_F).where(*cond).values(status="resolved", resolved_at=now))
        return int(res.rowcount or 0)

    def findings(
        self, *, agent: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[StoredFinding]:
        q = select(_F).order_by(_F.c.created_at.desc(), _F.c.id).limit(limit)
        if agent is not None:
            q = q.where(_F.c.agent == agent)
        if status is not None:
            q = q.where(_F.c.status == status)
        return [_finding(r) for r in self._c.execute(q)]
