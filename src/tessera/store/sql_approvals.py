"""SQL for human approvals (``store/tables_approvals.py``), bound to one connection.

State changes are conditional updates (``WHERE status = 'pending'`` ...), so two nodes or
two approvers racing on one request cannot both win; the caller checks the row count."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, func, or_, select, update

from tessera.approvals.model import ApprovalRequest, Vote
from tessera.clock import utc
from tessera.store import tables_approvals as a


def _ts(value: Any) -> datetime | None:
    return None if value is None else utc(value)


class SqlApprovalRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    # -- requests -------------------------------------------------------------------------

    def add(self, r: ApprovalRequest) -> None:
        self._c.execute(
            a.approval_requests.insert().values(
                auth_req_id=r.auth_req_id,
                status=r.status,
                origin=r.origin,
                agent_id=r.agent_id,
                session_id=r.session_id,
                user_id=r.user_id,
                act_chain=json.dumps(list(r.act_chain)),
                action=r.action,
                resource=json.dumps(dict(r.resource), sort_keys=True),
                arguments=json.dumps(dict(r.arguments), sort_keys=True, default=str),
                argument_hash=r.argument_hash,
                dpop_jkt=r.dpop_jkt,
                decision_id=r.decision_id,
                reasons=json.dumps([dict(x) for x in r.reasons]),
                risk=None if r.risk is None else json.dumps(dict(r.risk)),
                binding_message=r.binding_message,
                required=r.required,
                group_name=r.group_name,
                passkey_required=r.passkey_required,
                delivery=r.delivery,
                notify_token=r.notify_token,
                group_key=r.group_key,
                repeats=r.repeats,
                interval=r.interval,
                next_poll_at=r.next_poll_at,
                created_at=r.created_at,
                expires_at=r.expires_at,
                outcome=r.outcome,
            )
        )
        if r.candidates:
            self._c.execute(
                a.approval_candidates.insert(),
                [
                    {"auth_req_id": r.auth_req_id, "user_id": u, "created_at": r.created_at}
                    for u in r.candidates
                ],
            )

    def get(self, auth_req_id: str, *, for_update: bool = False) -> ApprovalRequest | None:
        q = select(a.approval_requests).where(a.approval_requests.c.auth_req_id == auth_req_id)
        if for_update and self._c.dialect.name == "postgresql":
            q = q.with_for_update()
        row = self._c.execute(q).first()
        if row is None:
            return None
        return self._hydrate([row])[0]

    def _hydrate(self, rows: Sequence[Row[Any]]) -> list[ApprovalRequest]:
        ids = [r.auth_req_id for r in rows]
        if not ids:
            return []
        votes: dict[str, list[Vote]] = {}
        for v in self._c.execute(
            select(a.approval_votes)
            .where(a.approval_votes.c.auth_req_id.in_(ids))
            .order_by(a.approval_votes.c.created_at)
        ):
            votes.setdefault(v.auth_req_id, []).append(
                Vote(v.approver, v.decision, v.method, v.note, utc(v.created_at))
            )
        cands: dict[str, list[str]] = {}
        for c in self._c.execute(
            select(a.approval_candidates).where(a.approval_candidates.c.auth_req_id.in_(ids))
        ):
            cands.setdefault(c.auth_req_id, []).append(c.user_id)
        return [
            ApprovalRequest(
                auth_req_id=r.auth_req_id,
                status=r.status,
                origin=r.origin,
                agent_id=r.agent_id,
                session_id=r.session_id,
                user_id=r.user_id,
                act_chain=tuple(json.loads(r.act_chain)),
                action=r.action,
                resource=json.loads(r.resource),
                arguments=json.loads(r.arguments),
                argument_hash=r.argument_hash,
                dpop_jkt=r.dpop_jkt,
                decision_id=r.decision_id,
                reasons=tuple(json.loads(r.reasons)),
                risk=None if r.risk is None else json.loads(r.risk),
                binding_message=r.binding_message,
                required=int(r.required),
                group_name=r.group_name,
                passkey_required=bool(r.passkey_required),
                delivery=r.delivery,
                group_key=r.group_key,
                repeats=int(r.repeats),
                interval=int(r.interval),
                created_at=utc(r.created_at),
                expires_at=utc(r.expires_at),
                candidates=tuple(sorted(cands.get(r.auth_req_id, []))),
                votes=tuple(votes.get(r.auth_req_id, [])),
                next_poll_at=_ts(r.next_poll_at),
                decided_at=_ts(r.decided_at),
                token_jti=r.token_jti,
                token_issued_at=_ts(r.token_issued_at),
                redeemed_at=_ts(r.redeemed_at),
                outcome=r.outcome,
                notify_token=r.notify_token,
            )
            for r in rows
        ]

    def find_pending_group(self, key: str, now: datetime) -> ApprovalRequest | None:
        t = a.approval_requests
        row = self._c.execute(
            select(t)
            .where(t.c.group_key == key, t.c.status == "pending", t.c.expires_at > now)
            .order_by(t.c.created_at)
            .limit(1)
        ).first()
        return None if row is None else self._hydrate([row])[0]

    def bump_repeats(self, auth_req_id: str) -> None:
        t = a.approval_requests
        self._c.execute(
            update(t).where(t.c.auth_req_id == auth_req_id).values(repeats=t.c.repeats + 1)
        )

    def transition(
        self,
        auth_req_id: str,
        frm: Sequence[str],
        to: str,
        now: datetime,
        *,
        outcome: str | None = None,
        expires_at: datetime | None = None,
        unspent: bool = False,
    ) -> bool:
        """Conditional state change; True when this caller made it."""
        t = a.approval_requests
        cond = [t.c.auth_req_id == auth_req_id, t.c.status.in_(list(frm))]
        if unspent:
            cond += [t.c.token_issued_at.is_(None), t.c.redeemed_at.is_(None)]
        values: dict[str, Any] = {"status": to, "decided_at": now}
        if outcome is not None:
            values["outcome"] = outcome[:200]
        if expires_at is not None:
            values["expires_at"] = expires_at
        res = self._c.execute(update(t).where(and_(*cond)).values(**values))
        return bool(res.rowcount)

    def add_vote(self, auth_req_id: str, vote: Vote) -> None:
        self._c.execute(
            a.approval_votes.insert().values(
                auth_req_id=auth_req_id,
                approver=vote.approver,
                decision=vote.decision,
                method=vote.method,
                note=vote.note[:500],
                created_at=vote.at,
            )
        )

    def mark_token_issued(self, auth_req_id: str, jti: str, now: datetime) -> bool:
        t = a.approval_requests
        res = self._c.execute(
            update(t)
            .where(
                t.c.auth_req_id == auth_req_id,
                t.c.status == "approved",
                t.c.token_issued_at.is_(None),
                t.c.redeemed_at.is_(None),
                t.c.expires_at > now,
            )
            .values(token_jti=jti, token_issued_at=now)
        )
        return bool(res.rowcount)

    def reissue_token(self, auth_req_id: str, jti: str, now: datetime) -> bool:
        """Push mode: a token whose delivery never succeeded is replaced (new jti; the old
        one can then never be redeemed, since redemption needs the recorded jti)."""
        t = a.approval_requests
        res = self._c.execute(
            update(t)
            .where(
                t.c.auth_req_id == auth_req_id,
                t.c.status == "approved",
                t.c.redeemed_at.is_(None),
                t.c.notified_at.is_(None),
                t.c.expires_at > now,
            )
            .values(token_jti=jti, token_issued_at=now)
        )
        return bool(res.rowcount)

    def mark_notified(self, auth_req_id: str, now: datetime) -> None:
        t = a.approval_requests
        self._c.execute(update(t).where(t.c.auth_req_id == auth_req_id).values(notified_at=now))

    def undelivered(self, since: datetime, limit: int = 100) -> list[ApprovalRequest]:
        """Decided ping/push requests whose notification has not succeeded yet."""
        t = a.approval_requests
        q = (
            select(t)
            .where(
                t.c.delivery.in_(["ping", "push"]),
                t.c.status != "pending",
                t.c.notified_at.is_(None),
                t.c.notify_token.is_not(None),
                t.c.decided_at > since,
            )
            .limit(limit)
        )
        return self._hydrate(list(self._c.execute(q)))

    def mark_redeemed(self, auth_req_id: str, now: datetime, *, jti: str | None) -> bool:
        """Spend an approved request once: directly (gateway, no token issued yet) or by
        the one-shot token whose jti it recorded."""
        t = a.approval_requests
        cond = [
            t.c.auth_req_id == auth_req_id,
            t.c.status == "approved",
            t.c.redeemed_at.is_(None),
        ]
        if jti is None:
            cond += [t.c.token_issued_at.is_(None), t.c.expires_at > now]
        else:
            cond.append(t.c.token_jti == jti)
        res = self._c.execute(update(t).where(and_(*cond)).values(redeemed_at=now))
        return bool(res.rowcount)

    def set_poll(self, auth_req_id: str, next_poll_at: datetime, interval: int) -> None:
        t = a.approval_requests
        self._c.execute(
            update(t)
            .where(t.c.auth_req_id == auth_req_id)
            .values(next_poll_at=next_poll_at, interval=interval)
        )

    def search(
        self, *, status: str | None = None, user_id: str | None = None, limit: int = 100
    ) -> list[ApprovalRequest]:
        t = a.approval_requests
        q = select(t).order_by(t.c.created_at.desc()).limit(limit)
        if status is not None:
            q = q.where(t.c.status == status)
        if user_id is not None:
            q = q.where(
                t.c.auth_req_id.in_(
                    select(a.approval_candidates.c.auth_req_id).where(
                        a.approval_candidates.c.user_id == user_id
                    )
                )
            )
        return self._hydrate(list(self._c.execute(q)))

    def due(self, now: datetime, limit: int = 500) -> list[ApprovalRequest]:
        """Pending requests past expiry, and approved ones never collected in time."""
        t = a.approval_requests
        q = (
            select(t)
            .where(
                t.c.expires_at <= now,
                or_(
                    t.c.status == "pending",
                    and_(
                        t.c.status == "approved",
                        t.c.token_issued_at.is_(None),
                        t.c.redeemed_at.is_(None),
                        t.c.outcome.is_(None),
                    ),
                ),
            )
            .limit(limit)
        )
        return self._hydrate(list(self._c.execute(q)))

    def mark_outcome(self, auth_req_id: str, outcome: str) -> None:
        t = a.approval_requests
        self._c.execute(update(t).where(t.c.auth_req_id == auth_req_id).values(outcome=outcome))

    def open_for_agent(self, agent_id: str) -> list[ApprovalRequest]:
        t = a.approval_requests
        q = select(t).where(
            t.c.agent_id == agent_id,
            or_(
                t.c.status == "pending",
                and_(t.c.status == "approved", t.c.redeemed_at.is_(None)),
            ),
        )
        return self._hydrate(list(self._c.execute(q)))

    def routed_since(self, user_id: str, since: datetime) -> int:
        c = a.approval_candidates.c
        q = select(func.count()).where(c.user_id == user_id, c.created_at > since)
        return int(self._c.execute(q).scalar_one())

    def denials_since(self, agent_id: str, action: str, since: datetime) -> int:
        t = a.approval_requests.c
        q = select(func.count()).where(
            t.agent_id == agent_id,
            t.action == action,
            t.status == "denied",
            t.decided_at > since,
        )
        return int(self._c.execute(q).scalar_one())

    # -- passkeys, enrollment links, console sessions ---------------------------------

    def add_passkey(
        self, credential_id: str, user_id: str, public_key: bytes, sign_count: int, now: datetime
    ) -> None:
        self._c.execute(
            a.approver_passkeys.insert().values(
                credential_id=credential_id,
                user_id=user_id,
                public_key=public_key,
                sign_count=sign_count,
                created_at=now,
            )
        )

    def passkey(self, credential_id: str) -> Row[Any] | None:
        t = a.approver_passkeys
        return self._c.execute(select(t).where(t.c.credential_id == credential_id)).first()

    def passkeys_for(self, user_id: str) -> list[Row[Any]]:
        t = a.approver_passkeys
        return list(self._c.execute(select(t).where(t.c.user_id == user_id)))

    def use_passkey(self, credential_id: str, old: int, new: int, now: datetime) -> bool:
        """Advance the signature counter (WebAuthn §6.1.1); a counter that did not grow
        (when the authenticator keeps one) loses the race and the assertion is refused."""
        t = a.approver_passkeys
        res = self._c.execute(
            update(t)
            .where(t.c.credential_id == credential_id, t.c.sign_count == old)
            .values(sign_count=new, last_used_at=now)
        )
        return bool(res.rowcount)

    def add_enrollment(
        self, token_hash: str, user_id: str, actor: str, now: datetime, expires_at: datetime
    ) -> None:
        self._c.execute(
            a.approver_enrollments.insert().values(
                token_hash=token_hash,
                user_id=user_id,
                created_by=actor,
                created_at=now,
                expires_at=expires_at,
            )
        )

    def enrollment(self, token_hash: str, now: datetime) -> str | None:
        t = a.approver_enrollments
        row = self._c.execute(
            select(t.c.user_id).where(
                t.c.token_hash == token_hash, t.c.used_at.is_(None), t.c.expires_at > now
            )
        ).first()
        return None if row is None else str(row.user_id)

    def use_enrollment(self, token_hash: str, now: datetime) -> bool:
        t = a.approver_enrollments
        res = self._c.execute(
            update(t)
            .where(t.c.token_hash == token_hash, t.c.used_at.is_(None), t.c.expires_at > now)
            .values(used_at=now)
        )
        return bool(res.rowcount)

    def add_session(
        self, token_hash: str, user_id: str, method: str, now: datetime, expires_at: datetime
    ) -> None:
        self._c.execute(
            a.approver_sessions.insert().values(
                token_hash=token_hash,
                user_id=user_id,
                method=method,
                created_at=now,
                expires_at=expires_at,
            )
        )

    def session(self, token_hash: str, now: datetime) -> tuple[str, str] | None:
        t = a.approver_sessions
        row = self._c.execute(
            select(t.c.user_id, t.c.method).where(
                t.c.token_hash == token_hash, t.c.expires_at > now
            )
        ).first()
        return None if row is None else (str(row.user_id), str(row.method))

    def purge_sessions(self, now: datetime) -> int:
        """Forget expired console sessions and spent or expired enrollment links."""
        t, e = a.approver_sessions, a.approver_enrollments
        n = self._c.execute(delete(t).where(t.c.expires_at <= now)).rowcount or 0
        n += self._c.execute(delete(e).where(e.c.expires_at <= now)).rowcount or 0
        return int(n)

    def end_session(self, token_hash: str) -> None:
        t = a.approver_sessions
        self._c.execute(delete(t).where(t.c.token_hash == token_hash))

    # -- CIBA client delivery settings ------------------------------------------------

    def set_client(self, client_id: str, mode: str, endpoint: str | None, now: datetime) -> None:
        t = a.ciba_clients
        self._c.execute(delete(t).where(t.c.client_id == client_id))
        self._c.execute(
            t.insert().values(
                client_id=client_id,
                delivery_mode=mode,
                notification_endpoint=endpoint,
                updated_at=now,
            )
        )

    def client(self, client_id: str) -> tuple[str, str | None]:
        t = a.ciba_clients
        row = self._c.execute(select(t).where(t.c.client_id == client_id)).first()
        return ("poll", None) if row is None else (row.delivery_mode, row.notification_endpoint)
