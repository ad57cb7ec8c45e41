"""SQL repositories for sessions, budgets and the single-use jti cache."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, select, update
from sqlalchemy.exc import IntegrityError

from tessera.clock import utc
from tessera.store import tables as t
from tessera.store.fastsql import insert_replay, insert_session, take_budget
from tessera.tokens.sessions import SessionRecord

MAX_SUBTREE = 10_000


class SqlSessionRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def add(self, rec: SessionRecord, budgets: Mapping[str, int]) -> None:
        insert_session(
            self._c,
            {
                "sid": rec.sid,
                "jti": rec.jti,
                "token_hash": rec.token_hash,
                "agent_id": rec.agent_id,
                "user_id": rec.user_id,
                "operator_id": rec.operator_id,
                "model_id": rec.model_id,
                "model_digest": rec.model_digest,
                "parent_sid": rec.parent_sid,
                "root_sid": rec.root_sid,
                "depth": rec.depth,
                "audience": json.dumps(list(rec.audience)),
                "grant": dict(rec.grant),
                "act": rec.act,
                "cnf_jkt": rec.cnf_jkt,
                "issued_at": rec.issued_at,
                "expires_at": rec.expires_at,
                "status": rec.status,
            },
            budgets,
        )

    def get(self, sid: str) -> SessionRecord | None:
        row = self._c.execute(select(t.sessions).where(t.sessions.c.sid == sid)).first()
        return _row(row) if row else None

    def find_by_token_hash(self, token_hash: str) -> SessionRecord | None:
        row = self._c.execute(
            select(t.sessions).where(t.sessions.c.token_hash == token_hash)
        ).first()
        return _row(row) if row else None

    def query(
        self,
        *,
        agent_id: str | None = None,
        user_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[SessionRecord]:
        q = select(t.sessions).order_by(t.sessions.c.issued_at.desc()).limit(limit)
        if agent_id is not None:
            q = q.where(t.sessions.c.agent_id == agent_id)
        if user_id is not None:
            q = q.where(t.sessions.c.user_id == user_id)
        if status is not None:
            q = q.where(t.sessions.c.status == status)
        return [_row(r) for r in self._c.execute(q)]

    def remaining_budgets(self, sid: str) -> dict[str, int]:
        rows = self._c.execute(
            select(t.session_budgets.c.name, t.session_budgets.c.remaining).where(
                t.session_budgets.c.sid == sid
            )
        )
        return {r.name: int(r.remaining) for r in rows}

    def carve(self, parent_sid: str, amounts: Mapping[str, int]) -> bool:
        # INVARIANT: a conditional update per counter; units move, never appear.
        for name, amount in sorted(amounts.items()):
            if amount <= 0:
                continue
            # Driver SQL: the Core statement cost ~0.4 ms to build per call (hot path of
            # every gateway tools/call and AuthZEN evaluation).
            if not take_budget(self._c, parent_sid, name, amount):
                return False
        return True

    def _subtree(self, sid: str) -> list[str]:
        found = [sid]
        frontier = [sid]
        while frontier and len(found) < MAX_SUBTREE:
            rows = self._c.execute(
                select(t.sessions.c.sid).where(t.sessions.c.parent_sid.in_(frontier))
            ).all()
            frontier = [r.sid for r in rows]
            found.extend(frontier)
        return found

    def revoke_subtree(self, sid: str, reason: str, now: datetime) -> list[str]:
        return self._revoke(self._subtree(sid), reason, now)

    def revoke_where(
        self,
        *,
        agent_id: str | None = None,
        user_id: str | None = None,
        model_digest: str | None = None,
        operator_agents: list[str] | None = None,
        reason: str,
        now: datetime,
    ) -> list[str]:
        q = select(t.sessions.c.sid).where(t.sessions.c.status == "active")
        if agent_id is not None:
            q = q.where(t.sessions.c.agent_id == agent_id)
        if user_id is not None:
            q = q.where(t.sessions.c.user_id == user_id)
        if model_digest is not None:
            q = q.where(t.sessions.c.model_digest == model_digest)
        if operator_agents is not None:
            if not operator_agents:
                return []
            q = q.where(t.sessions.c.agent_id.in_(operator_agents))
        roots = [r.sid for r in self._c.execute(q)]
        every: list[str] = []
        for sid in roots:
            every.extend(self._subtree(sid))
        return self._revoke(sorted(set(every)), reason, now)

    def _revoke(self, sids: list[str], reason: str, now: datetime) -> list[str]:
        if not sids:
            return []
        active = [
            r.sid
            for r in self._c.execute(
                select(t.sessions.c.sid).where(
                    t.sessions.c.sid.in_(sids), t.sessions.c.status == "active"
                )
            )
        ]
        if active:
            self._c.execute(
                update(t.sessions)
                .where(t.sessions.c.sid.in_(active))
                .values(status="revoked", revoked_at=now, revoked_reason=reason[:200])
            )
        return sorted(active)


class SqlReplayCache:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def use_once(self, kind: str, jti: str, expires_at: datetime) -> bool:
        # A savepoint keeps the surrounding transaction usable when the insert collides.
        try:
            with self._c.begin_nested():
                self._c.execute(
                    t.replay_jtis.insert().values(kind=kind, jti=jti, expires_at=expires_at)
                )
        except IntegrityError:
            return False
        return True

    def use_all(self, items: list[tuple[str, str, datetime]]) -> bool:
        return _use_all(self._c, items)

    def used(self, items: list[tuple[str, str, datetime]]) -> list[tuple[str, str]]:
        return _used(self._c, items)

    def purge_expired(self, now: datetime) -> int:
        result = self._c.execute(delete(t.replay_jtis).where(t.replay_jtis.c.expires_at < now))
        return int(result.rowcount or 0)


def _row(r: Row[Any]) -> SessionRecord:
    return SessionRecord(
        sid=r.sid,
        jti=r.jti,
        token_hash=r.token_hash,
        agent_id=r.agent_id,
        user_id=r.user_id,
        operator_id=r.operator_id,
        model_id=r.model_id,
        model_digest=r.model_digest,
        parent_sid=r.parent_sid,
        root_sid=r.root_sid,
        depth=int(r.depth),
        audience=tuple(json.loads(r.audience)),
        grant=json.loads(r.grant),
        act=json.loads(r.act) if r.act else None,
        cnf_jkt=r.cnf_jkt,
        issued_at=utc(r.issued_at),
        expires_at=utc(r.expires_at),
        status=r.status,
        revoked_at=utc(r.revoked_at) if r.revoked_at else None,
        revoked_reason=r.revoked_reason,
    )


def _use_all(conn: Connection, items: list[tuple[str, str, datetime]]) -> bool:
    """Insert every (kind, jti, expires_at) in one statement; False if any was used."""
    if not items:
        return True
    return not insert_replay(conn, items)


def _used(conn: Connection, items: list[tuple[str, str, datetime]]) -> list[tuple[str, str]]:
    found = []
    for kind, jti, _ in items:
        row = conn.execute(
            select(t.replay_jtis.c.jti).where(
                t.replay_jtis.c.kind == kind, t.replay_jtis.c.jti == jti
            )
        ).first()
        if row is not None:
            found.append((kind, jti))
    return found
