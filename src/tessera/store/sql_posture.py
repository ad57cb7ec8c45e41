"""SQL side of posture: the inventory snapshot (one read transaction), the audit usage
summary (one streaming pass over the ledger window) and the findings table."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, bindparam, func, select, update

from tessera.clock import parse_iso, utc
from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import ActorAction, Inventory, LiveSession, UsageSummary
from tessera.posture.ports import FindingQuery, StoredFinding
from tessera.store import tables as t
from tessera.store.engine import translate_db_errors
from tessera.store.fastsql import pg_paramstyle, sqlite_timestamp
from tessera.store.sql_identity import (
    SqlAgentRepo,
    SqlCredentialRepo,
    SqlModelRepo,
    SqlOperatorRepo,
    SqlUserRepo,
)
from tessera.store.sql_store import SqlStore
from tessera.store.tables_posture import posture_findings, posture_scans

# Ledger records that changed the registry or relationships: an agent as their actor is
# self-escalation.
REGISTRY_EVENTS = (
    "agent.registered",
    "agent.resumed",
    "user.created",
    "user.grants_changed",
    "operator.created",
    "operator.resumed",
    "service.registered",
    "model.registered",
    "credential.added",
    "rebac.tuples_written",
    "rebac.model_applied",
    "policy.applied",
)
CLIENT_AUTH_FAILED = "oauth.client_auth_failed"
USAGE_EVENTS = ("session.issued", "pdp.evaluation", "pdp.evaluations", CLIENT_AUTH_FAILED)
BATCH = 5000
_USAGE_SQL = (
    "SELECT event_type, outcome, principal, agent_id, time, body FROM audit_ledger"
    " WHERE time >= ? AND time <= ? AND event_type IN"
)


class SqlPostureInventory:
    """``InventorySource``: every identity, credential, model and live session, read in
    one transaction (a consistent snapshot)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def snapshot(self, now: datetime) -> Inventory:
        with translate_db_errors(), self._engine.connect() as conn, conn.begin():
            operators = {r.id: SqlOperatorRepo._row(r) for r in conn.execute(select(t.operators))}
            users = {r.id: SqlUserRepo._row(r) for r in conn.execute(select(t.users))}
            agents = [SqlAgentRepo._row(r) for r in conn.execute(select(t.agents))]
            creds: dict[tuple[str, str], list[Any]] = {}
            for r in conn.execute(select(t.credentials)):
                c = SqlCredentialRepo._row(r)
                creds.setdefault((c.owner_kind, c.owner_id), []).append(c)
            models = {r.digest: SqlModelRepo._row(r) for r in conn.execute(select(t.models))}
            services = frozenset(r.id for r in conn.execute(select(t.services.c.id)))
            s = t.sessions.c
            live = [
                LiveSession(
                    r.sid,
                    r.agent_id,
                    r.user_id,
                    r.model_digest,
                    int(r.depth),
                    r.parent_sid,
                    utc(r.issued_at),
                    utc(r.expires_at),
                )
                for r in conn.execute(
                    select(
                        s.sid,
                        s.agent_id,
                        s.user_id,
                        s.model_digest,
                        s.depth,
                        s.parent_sid,
                        s.issued_at,
                        s.expires_at,
                    ).where(s.status == "active", s.expires_at > now)
                )
            ]
            last = {
                r[0]: utc(r[1])
                for r in conn.execute(
                    select(s.agent_id, func.max(s.issued_at)).group_by(s.agent_id)
                )
            }
        return Inventory(now, operators, users, agents, creds, models, live, last, services)


def _is_agent(principal: str | None) -> str | None:
    if not principal:
        return None
    if principal.startswith("agent:"):
        principal = principal[6:]
    return principal if principal.startswith("agt_") else None


class SqlAuditUsage:
    """``UsageSource``: one pass over the ledger records of the window, through the
    driver's cursor (no ORM row mapping); only records a rule reads are decoded."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"

    def summary(self, since: datetime, until: datetime) -> UsageSummary:
        out = UsageSummary(since, until)
        types = USAGE_EVENTS + REGISTRY_EVENTS
        marks = ",".join("?" for _ in types)
        # Only "?" placeholders are interpolated; every value is a bound parameter.
        sql = f"{_USAGE_SQL} ({marks})"
        lo: Any = sqlite_timestamp(since) if self._sqlite else since
        hi: Any = sqlite_timestamp(until) if self._sqlite else until
        with translate_db_errors(), self._engine.connect() as conn, conn.begin():
            cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql if self._sqlite else pg_paramstyle(sql), (lo, hi, *types))
                while True:
                    rows = cursor.fetchmany(BATCH)
                    if not rows:
                        break
                    for row in rows:
                        _account(out, row)
            finally:
                cursor.close()
        return out


def _when(value: Any) -> datetime:
    return utc(value) if isinstance(value, datetime) else parse_iso(str(value))


def _account(out: UsageSummary, row: Sequence[Any]) -> None:
    event_type, _outcome, principal, agent_id, when, body = row
    out.records += 1
    if event_type == "session.issued":
        agent = agent_id or _is_agent(principal)
        if agent:
            out.saw_session(agent, _when(when))
        return
    if event_type in REGISTRY_EVENTS:
        actor = _is_agent(principal)
        if actor is None:
            return
        record = json.loads(bytes(body))
        self_grant = False
        if event_type == "rebac.tuples_written":
            writes = (record.get("details") or {}).get("writes") or []
            self_grant = any(
                isinstance(w, dict) and w.get("user") == f"agent:{actor}" for w in writes
            )
        out.actor_actions.append(
            ActorAction(actor, event_type, str(record.get("resource", "")), _when(when), self_grant)
        )
        return
    record = json.loads(bytes(body))
    details = record.get("details") or {}
    if event_type == CLIENT_AUTH_FAILED:
        client = details.get("client_id")
        if isinstance(client, str) and client:
            out.client_failed(client, _when(when), "token_endpoint", details.get("reason"))
        return
    for item in details.get("decisions") or []:
        if not isinstance(item, dict):
            continue
        subject = str(item.get("subject", ""))
        agent = item.get("agent") or (subject[6:] if subject.startswith("agent:") else None)
        if not agent:
            continue
        verdict = item.get("verdict")
        if verdict == "allow":
            out.used(str(agent), str(item.get("action", "")), str(item.get("resource", "")))
        elif "invalid_token" in (item.get("reasons") or []) and not item.get("agent"):
            out.client_failed(str(agent), _when(when), "pdp", "invalid_token")


# -- findings ------------------------------------------------------------------------------


_F = posture_findings.c
_SEVERITIES = [s.value for s in Severity]


class SqlFindingStore:
    """Findings and scan log. Writes go through ``SqlStore.write`` (one writer at a time
    per process on SQLite, like every other write)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._engine = store.engine

    def record(
        self,
        findings: Iterable[Finding],
        *,
        scan_id: str,
        started: datetime,
        now: datetime,
        stats: dict[str, Any],
        actor: str,
        keep_rules: frozenset[str] = frozenset(),
    ) -> dict[str, int]:
        """Upsert this scan's findings, resolve open ones it no longer reports (except for
        ``keep_rules``: rules that failed this time), and log the scan; one transaction.
        Returns counts: new, still open, resolved."""
        current = {f.key: f for f in findings}
        with self._store.write() as tx:
            conn = tx.connection
            known = {
                r.key: r.status
                for r in conn.execute(select(_F.key, _F.status, _F.rule))
                if r.rule not in keep_rules or r.key in current
            }
            fresh = [k for k in current if k not in known]
            seen = [k for k in current if k in known]
            gone = [k for k, st in known.items() if st == "open" and k not in current]
            if fresh:
                conn.execute(
                    posture_findings.insert(),
                    [_row(current[k], scan_id, now, first_seen=now) for k in fresh],
                )
            if seen:
                stmt = (
                    update(posture_findings)
                    .where(_F.key == bindparam("b_key"))
                    .values(
                        severity=bindparam("severity"),
                        summary=bindparam("summary"),
                        evidence=bindparam("evidence"),
                        remediation=bindparam("remediation"),
                        remediation_args=bindparam("remediation_args"),
                        agent_id=bindparam("agent_id"),
                        status="open",
                        last_seen=bindparam("last_seen"),
                        resolved_at=None,
                        scan_id=scan_id,
                    )
                )
                rows = []
                for k in seen:
                    r = _row(current[k], scan_id, now, first_seen=now)
                    rows.append(
                        {
                            "b_key": k,
                            **{
                                c: r[c]
                                for c in (
                                    "severity",
                                    "summary",
                                    "evidence",
                                    "remediation",
                                    "remediation_args",
                                    "agent_id",
                                    "last_seen",
                                )
                            },
                        }
                    )
                conn.execute(stmt, rows)
            for i in range(0, len(gone), 500):
                conn.execute(
                    update(posture_findings)
                    .where(_F.key.in_(gone[i : i + 500]))
                    .values(status="resolved", resolved_at=now)
                )
            conn.execute(
                posture_scans.insert().values(
                    id=scan_id,
                    started_at=started,
                    finished_at=now,
                    findings=len(current),
                    stats=json.dumps(stats, sort_keys=True),
                    actor=actor[:128],
                )
            )
        return {"new": len(fresh), "open": len(current), "resolved": len(gone)}

    def query(self, q: FindingQuery) -> list[StoredFinding]:
        stmt = select(posture_findings).order_by(_F.key).limit(q.limit)
        if q.status is not None:
            stmt = stmt.where(_F.status == q.status)
        if q.severity is not None:
            worse = _SEVERITIES[_SEVERITIES.index(q.severity) :]
            stmt = stmt.where(_F.severity.in_(worse))
        for col, value in ((_F.rule, q.rule), (_F.agent_id, q.agent)):
            if value is not None:
                stmt = stmt.where(col == value)
        if q.subject_kind is not None:
            stmt = stmt.where(_F.subject_kind == q.subject_kind)
        if q.after is not None:
            stmt = stmt.where(_F.key > q.after)
        with translate_db_errors(), self._engine.connect() as conn:
            return [_stored(r) for r in conn.execute(stmt)]

    def get(self, key: str) -> StoredFinding | None:
        with translate_db_errors(), self._engine.connect() as conn:
            row = conn.execute(select(posture_findings).where(_F.key == key)).first()
        return _stored(row) if row else None

    def last_scan(self) -> dict[str, Any] | None:
        c = posture_scans.c
        with translate_db_errors(), self._engine.connect() as conn:
            row = conn.execute(select(posture_scans).order_by(c.started_at.desc()).limit(1)).first()
        if row is None:
            return None
        return {
            "id": row.id,
            "started_at": utc(row.started_at),
            "finished_at": utc(row.finished_at),
            "findings": row.findings,
            "stats": json.loads(row.stats),
        }

    def mark_resolved(self, key: str, now: datetime) -> None:
        with self._store.write() as tx:
            tx.connection.execute(
                update(posture_findings)
                .where(and_(_F.key == key, _F.status == "open"))
                .values(status="resolved", resolved_at=now)
            )


def _row(f: Finding, scan_id: str, now: datetime, *, first_seen: datetime) -> dict[str, Any]:
    return {
        "key": f.key,
        "rule": f.rule,
        "severity": f.severity.value,
        "subject_kind": f.subject_kind.value,
        "subject": f.subject[:256],
        "agent_id": f.agent,
        "summary": f.summary[:500],
        "evidence": json.dumps(dict(f.evidence), sort_keys=True, default=str),
        "remediation": f.remediation.value,
        "remediation_args": json.dumps(dict(f.remediation_args), sort_keys=True),
        "status": "open",
        "first_seen": first_seen,
        "last_seen": now,
        "resolved_at": None,
        "scan_id": scan_id,
    }


def _stored(r: Any) -> StoredFinding:
    finding = Finding(
        rule=r.rule,
        severity=Severity(r.severity),
        subject_kind=SubjectKind(r.subject_kind),
        subject=r.subject,
        summary=r.summary,
        evidence=json.loads(r.evidence),
        remediation=Remediation(r.remediation),
        remediation_args=json.loads(r.remediation_args),
        agent=r.agent_id,
    )
    return StoredFinding(
        finding,
        r.status,
        utc(r.first_seen),
        utc(r.last_seen),
        utc(r.resolved_at) if r.resolved_at else None,
    )
