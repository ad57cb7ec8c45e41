"""SQL side of posture: the inventory snapshot (one read transaction), the audit usage
summary (one streaming pass over the ledger window) and the findings table."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, select, update

from tessera.clock import utc
from tessera.identity.ceiling import Ceiling
from tessera.identity.model import (
    Agent,
    AgentStatus,
    Credential,
    CredentialKind,
    CredentialStatus,
    User,
    UserStatus,
)
from tessera.posture.finding import Finding, Remediation, Severity, SubjectKind
from tessera.posture.inventory import ActorAction, Inventory, LiveSession, UsageSummary
from tessera.posture.ports import FindingQuery, StoredFinding
from tessera.store import tables as t
from tessera.store.engine import translate_db_errors
from tessera.store.fastsql import pg_paramstyle, sqlite_timestamp
from tessera.store.sql_identity import SqlModelRepo, SqlOperatorRepo
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
CHUNK = 500
WRITE_BATCH = 5000  # findings per write transaction


class SqlPostureInventory:
    """``InventorySource``: every identity, credential, model and live session, read in
    one transaction (a consistent snapshot) through the driver's cursor. Ceilings are
    parsed once per distinct text (fleets share a few templates). Posture's view of a
    credential carries no key material: no public key, no secret hash."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"

    def snapshot(self, now: datetime) -> Inventory:
        ceilings: dict[str, Ceiling] = {}

        def ceiling(text: str) -> Ceiling:
            found = ceilings.get(text)
            if found is None:
                found = Ceiling.from_dict(json.loads(text))
                if len(ceilings) < 100_000:
                    ceilings[text] = found
            return found

        at: Any = sqlite_timestamp(now) if self._sqlite else now
        with translate_db_errors(), self._engine.connect() as conn, conn.begin():
            operators = {r.id: SqlOperatorRepo._row(r) for r in conn.execute(select(t.operators))}
            models = {r.digest: SqlModelRepo._row(r) for r in conn.execute(select(t.models))}
            services = frozenset(r.id for r in conn.execute(select(t.services.c.id)))
            cur: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cur.execute(_INV["users"])
                users = {
                    r[0]: User(
                        r[0],
                        r[1],
                        r[2],
                        r[3],
                        UserStatus(r[4]),
                        ceiling(r[5]),
                        _ts(r[6]),
                        _ts(r[7]),
                    )
                    for r in cur.fetchall()
                }
                cur.execute(_INV["agents"])
                agents = [
                    Agent(
                        r[0],
                        r[1],
                        r[2],
                        r[3],
                        r[4],
                        _ts(r[5]),
                        ceiling(r[6]),
                        bool(r[7]),
                        AgentStatus(r[8]),
                        r[9],
                        _ts(r[10]),
                        _ts(r[11]),
                    )
                    for r in cur.fetchall()
                ]
                creds: dict[tuple[str, str], list[Credential]] = {}
                cur.execute(_INV["credentials"])
                for r in cur.fetchall():
                    c = Credential(
                        r[0],
                        r[1],
                        r[2],
                        CredentialKind(r[3]),
                        CredentialStatus(r[4]),
                        _ts(r[5]),
                        _ts(r[6]) if r[6] is not None else None,
                        _ts(r[7]) if r[7] is not None else None,
                    )
                    creds.setdefault((c.owner_kind, c.owner_id), []).append(c)
                cur.execute(_INV["live"] if self._sqlite else pg_paramstyle(_INV["live"]), (at,))
                live = [
                    LiveSession(r[0], r[1], r[2], r[3], int(r[4]), r[5], _ts(r[6]), _ts(r[7]))
                    for r in cur.fetchall()
                ]
                cur.execute(_INV["last"])
                last = {r[0]: _ts(r[1]) for r in cur.fetchall()}
            finally:
                cur.close()
        return Inventory(now, operators, users, agents, creds, models, live, last, services)


_INV = {
    "users": "SELECT id, username, display_name, email, status, grants, created_at, updated_at"
    " FROM users",
    "agents": "SELECT id, name, operator_id, owner_user_id, purpose, expires_at, ceiling,"
    " attestation_required, status, status_reason, created_at, updated_at FROM agents",
    "credentials": "SELECT id, owner_kind, owner_id, kind, status, created_at, expires_at,"
    " last_used_at FROM credentials",
    "live": "SELECT sid, agent_id, user_id, model_digest, depth, parent_sid, issued_at,"
    " expires_at FROM sessions WHERE status = 'active' AND expires_at > ?",
    "last": "SELECT agent_id, MAX(issued_at) FROM sessions GROUP BY agent_id",
}


def _ts(value: Any) -> datetime:
    """A driver timestamp: PostgreSQL hands out aware datetimes, SQLite the naive UTC text
    SQLAlchemy stored."""
    if isinstance(value, datetime):
        return utc(value)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def _is_agent(principal: str | None) -> str | None:
    if not principal:
        return None
    if principal.startswith("agent:"):
        principal = principal[6:]
    return principal if principal.startswith("agt_") else None


class SqlAuditUsage:
    """``UsageSource``: one pass over the ledger records of the window, partitioned by
    record type so that each record is read once and the common ones never reach Python:
    sessions issued and allowed single evaluations are aggregated by the database (the
    query columns, and the action and resource read from the record body); the rare records
    a rule reads in full (batches, failed client authentication, unverified PDP subjects,
    registry changes made by agents) are decoded here, streamed through the driver's cursor.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"

    def summary(self, since: datetime, until: datetime) -> UsageSummary:
        out = UsageSummary(since, until)
        lo: Any = sqlite_timestamp(since) if self._sqlite else since
        hi: Any = sqlite_timestamp(until) if self._sqlite else until
        sql = _SQLITE_SQL if self._sqlite else _PG_SQL
        with translate_db_errors(), self._engine.connect() as conn, conn.begin():
            cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql["sessions"], (lo, hi))
                for agent, count, last in cursor.fetchall():
                    agent = _is_agent(agent)
                    if agent:
                        out.sessions[agent] = out.sessions.get(agent, 0) + int(count)
                        when = _when(last)
                        if agent not in out.last_session or when > out.last_session[agent]:
                            out.last_session[agent] = when
                        out.records += int(count)
                cursor.execute(sql["used"], (lo, hi))
                for agent, action, resource, count in cursor.fetchall():
                    out.used(str(agent), str(action or ""), str(resource or ""))
                    out.records += int(count)
                cursor.execute(sql["rest"], (lo, hi, *REGISTRY_EVENTS))
                while True:
                    rows = cursor.fetchmany(BATCH)
                    if not rows:
                        break
                    for row in rows:
                        _account(out, row)
            finally:
                cursor.close()
        return out


def _queries(sqlite: bool) -> dict[str, str]:
    # Only constants and "?" placeholders are joined here (S608 does not apply); every
    # value is a bound parameter.
    window = "time >= ? AND time <= ?"
    if sqlite:
        used = (
            "SELECT agent_id, json_extract(b, '$.action'), json_extract(b, '$.resource'),"  # noqa: S608
            " COUNT(*) FROM (SELECT agent_id, CAST(body AS TEXT) AS b FROM audit_ledger"
            f" WHERE event_type = 'pdp.evaluation' AND outcome = 'allow' AND {window}"
            " AND agent_id IS NOT NULL) GROUP BY 1, 2, 3"
        )
    else:
        used = (
            "SELECT agent_id, j->>'action', j->>'resource', COUNT(*) FROM (SELECT agent_id,"  # noqa: S608
            " convert_from(body, 'UTF8')::jsonb AS j FROM audit_ledger"
            f" WHERE event_type = 'pdp.evaluation' AND outcome = 'allow' AND {window}"
            " AND agent_id IS NOT NULL) AS allowed GROUP BY 1, 2, 3"
        )
    marks = ",".join("?" for _ in REGISTRY_EVENTS)
    queries = {
        "sessions": (
            "SELECT COALESCE(agent_id, principal), COUNT(*), MAX(time) FROM audit_ledger"  # noqa: S608
            f" WHERE event_type = 'session.issued' AND {window} GROUP BY 1"
        ),
        "used": used,
        "rest": (
            "SELECT event_type, outcome, principal, agent_id, time, body FROM audit_ledger"  # noqa: S608
            f" WHERE {window} AND (event_type IN ('pdp.evaluations', '{CLIENT_AUTH_FAILED}')"
            " OR (event_type = 'pdp.evaluation' AND agent_id IS NULL)"
            f" OR (event_type IN ({marks}) AND (principal LIKE 'agt!_%' ESCAPE '!'"
            " OR principal LIKE 'agent:%')))"
        ),
    }
    # psycopg reads "%" as a placeholder: the LIKE patterns double it.
    return (
        queries if sqlite else {k: pg_paramstyle(v.replace("%", "%%")) for k, v in queries.items()}
    )


# Fixed text (no value is interpolated: every value is a bound parameter).
_SQLITE_SQL = _queries(True)
_PG_SQL = _queries(False)


def _when(value: Any) -> datetime:
    return _ts(value)


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
        ``keep_rules``: rules that failed this time), and log the scan. Returns counts:
        new, still open, resolved.

        Writes go in transactions of ``WRITE_BATCH`` rows so a fleet with 10^5 findings
        never holds the (SQLite) write lock for long; the resolutions and the scan log
        commit last. A crash in between leaves some findings with this scan's last_seen
        and the rest with the previous one: the next scan completes it. Inserts ignore a
        key another node inserted meanwhile (several nodes scan)."""
        current = {f.key: f for f in findings}
        sqlite = self._engine.dialect.name == "sqlite"
        at: Any = sqlite_timestamp(now) if sqlite else now

        def sql(text: str) -> str:
            return text if sqlite else pg_paramstyle(text)

        known: dict[str, tuple[str, tuple[Any, ...]]] = {}
        with self._store.read() as tx:
            for r in tx.connection.exec_driver_sql(_KNOWN_SQL):
                key, status, rule = r[0], r[1], r[2]
                if rule in keep_rules and key not in current:
                    continue
                known[key] = (status, tuple(r[3:]))
        fresh: list[tuple[Any, ...]] = []
        touched: list[tuple[Any, ...]] = []
        changed: list[tuple[Any, ...]] = []
        for key, f in current.items():
            content = _content(f)
            if key not in known:
                fresh.append((key, f.rule, f.subject_kind.value, *content, at, at, scan_id))
            elif known[key][0] == "open" and known[key][1] == content:
                touched.append((at, scan_id, key))
            else:
                changed.append((*content, at, scan_id, key))
        gone = [k for k, (st, _) in known.items() if st == "open" and k not in current]
        for text, rows in ((_INSERT_SQL, fresh), (_CHANGE_SQL, changed), (_TOUCH_SQL, touched)):
            for i in range(0, len(rows), WRITE_BATCH):
                with self._store.write() as tx:
                    tx.connection.exec_driver_sql(sql(text), rows[i : i + WRITE_BATCH])
        with self._store.write() as tx:
            conn = tx.connection
            for i in range(0, len(gone), CHUNK):
                conn.execute(
                    update(posture_findings)
                    .where(_F.key.in_(gone[i : i + CHUNK]), _F.status == "open")
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


# The content columns (subject, severity, agent_id, summary, evidence, remediation,
# remediation_args) in this order, in _content, _KNOWN_SQL, _INSERT_SQL and _CHANGE_SQL.
_KNOWN_SQL = (
    "SELECT key, status, rule, subject, severity, agent_id, summary, evidence, remediation,"
    " remediation_args FROM posture_findings"
)
_INSERT_SQL = (
    "INSERT INTO posture_findings (key, rule, subject_kind, subject, severity, agent_id,"
    " summary, evidence, remediation, remediation_args, status, first_seen, last_seen,"
    " resolved_at, scan_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, NULL, ?)"
    " ON CONFLICT (key) DO NOTHING"
)
_TOUCH_SQL = "UPDATE posture_findings SET last_seen = ?, scan_id = ? WHERE key = ?"
_CHANGE_SQL = (
    "UPDATE posture_findings SET subject = ?, severity = ?, agent_id = ?, summary = ?,"
    " evidence = ?, remediation = ?, remediation_args = ?, status = 'open', last_seen = ?,"
    " resolved_at = NULL, scan_id = ? WHERE key = ?"
)


def _content(f: Finding) -> tuple[Any, ...]:
    """(subject, severity, agent, summary, evidence, remediation, args) as stored."""
    return (
        f.subject[:256],
        f.severity.value,
        f.agent,
        f.summary[:500],
        json.dumps(dict(f.evidence), sort_keys=True, default=str),
        f.remediation.value,
        json.dumps(dict(f.remediation_args), sort_keys=True),
    )


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
