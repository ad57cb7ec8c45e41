"""Introspection (RFC 7662), revocation (RFC 7009) and administrative session revocation.

A token is active only if its signature verifies *and* its stored session is live (every
identity layer checked now); revoking any token revokes its whole delegation subtree.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tessera.clock import Clock
from tessera.crypto.hashing import hash_token
from tessera.crypto.keyring import KeyRing
from tessera.errors import NotFound
from tessera.signals.tailer import StaleState
from tessera.tokens.client_auth import AuthenticatedClient
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.ports import TokenStore, TokenTx
from tessera.tokens.proofs import read_session_token
from tessera.tokens.service import TokenService
from tessera.tokens.sessions import SessionRecord

INACTIVE: dict[str, Any] = {"active": False}
log = logging.getLogger("tessera.tokens")


class SessionAuthority:
    def __init__(
        self, store: TokenStore, clock: Clock, keyring: KeyRing, tokens: TokenService
    ) -> None:
        self._store = store
        self._clock = clock
        self._keyring = keyring
        self._tokens = tokens

    def _lookup(
        self, tx: TokenTx, token: str, now: datetime
    ) -> tuple[dict[str, Any], SessionRecord] | None:
        try:
            _, claims = read_session_token(
                token, keys=self._keyring.lookup, issuer=self._tokens.issuer, now=now.timestamp()
            )
        except OAuthError:
            return None
        rec = tx.sessions.find_by_token_hash(hash_token(token))
        if rec is None:
            return None
        return claims, rec

    def introspect(self, form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
        """RFC 7662 §2: only services with the ``introspect`` scope may ask."""
        now = self._clock.now()
        with self._store.write() as raw:
            tx = self._tokens.view(raw)
            caller = self._tokens.authenticate(tx, form, authorization)
            tx.flush()
            _require_scope(caller, "introspect")
            token = form.get("token")
            if not token:
                raise OAuthError("invalid_request", "token is required")
            try:
                self._tokens.tailer.ensure_fresh()
            except StaleState:
                # DESIGN 6: a node that cannot follow the event log fails closed.
                log.warning("introspection answered inactive: stale_state")
                return dict(INACTIVE)
            found = self._lookup(tx, token, now)
            if found is None:
                return dict(INACTIVE)
            claims, rec = found
            live, _reason = self._tokens.session_is_live(tx, rec, now)
            if not live:
                return dict(INACTIVE)
            body = dict(claims)
            body.update(
                {
                    "active": True,
                    "token_type": "DPoP" if rec.cnf_jkt else "Bearer",
                    "budgets_remaining": tx.sessions.remaining_budgets(rec.sid),
                }
            )
            return body

    def revoke(self, form: Mapping[str, str], authorization: str | None) -> list[str]:
        """RFC 7009 §2: the client a token was issued to (or an ancestor in its delegation
        chain) may revoke it; an unknown or invalid token is not an error (§2.2)."""
        now = self._clock.now()
        with self._store.write() as raw:
            tx = self._tokens.view(raw)
            caller = self._tokens.authenticate(tx, form, authorization)
            tx.flush()
            token = form.get("token")
            if not token:
                raise OAuthError("invalid_request", "token is required")
            found = self._lookup(tx, token, now)
            if found is None:
                return []
            _claims, rec = found
            if caller.client_id not in self._chain_clients(tx, rec):
                raise OAuthError("unauthorized_client", "the token was not issued to this client")
            revoked = tx.sessions.revoke_subtree(rec.sid, "revoked by client", now)
            if revoked:
                tx.events.append(
                    "session.revoked",
                    rec.sid,
                    {"sessions": revoked, "reason": "revoked by client"},
                    caller.client_id,
                )
            return list(revoked)

    @staticmethod
    def _chain_clients(tx: TokenTx, rec: SessionRecord) -> set[str]:
        clients = {rec.agent_id}
        current = rec
        while current.parent_sid is not None:
            parent = tx.sessions.get(current.parent_sid)
            if parent is None:
                break
            clients.add(parent.agent_id)
            current = parent
        return clients

    def revoke_session(self, sid: str, reason: str, *, actor: str) -> list[str]:
        now = self._clock.now()
        with self._store.write() as tx:
            if tx.sessions.get(sid) is None:
                raise NotFound(f"no session {sid!r}")
            revoked = tx.sessions.revoke_subtree(sid, reason, now)
            if revoked:
                tx.events.append(
                    "session.revoked", sid, {"sessions": revoked, "reason": reason}, actor
                )
            return list(revoked)

    def list_sessions(
        self, *, agent: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[SessionRecord]:
        with self._store.read() as tx:
            agent_id = None
            if agent is not None:
                a = tx.agents.get(agent)
                if a is None:
                    raise NotFound(f"no agent {agent!r}")
                agent_id = a.id
            return list(tx.sessions.query(agent_id=agent_id, status=status, limit=limit))

    def get_session(self, sid: str) -> tuple[SessionRecord, dict[str, int], bool, str]:
        now = self._clock.now()
        with self._store.read() as tx:
            rec = tx.sessions.get(sid)
            if rec is None:
                raise NotFound(f"no session {sid!r}")
            live, reason = self._tokens.session_is_live(tx, rec, now)
            return rec, tx.sessions.remaining_budgets(sid), live, reason


def _require_scope(client: AuthenticatedClient, scope: str) -> None:
    if client.service is None or scope not in client.service.scopes:
        raise OAuthError("unauthorized_client", f"the {scope} scope is required", status=403)


class LifecycleCascade:
    """Revokes sessions in the same transaction as the identity change that ends them
    (agent suspended or decommissioned, operator suspended, user disabled, model revoked)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def __call__(self, tx: Any, event: str, subject: str, payload: Mapping[str, Any]) -> None:
        now = self._clock.now()
        revoked: list[str] = []
        if event in ("agent.suspended", "agent.decommissioned"):
            revoked = tx.sessions.revoke_where(agent_id=subject, reason=event, now=now)
        elif event == "operator.suspended":
            revoked = tx.sessions.revoke_where(
                operator_agents=list(payload.get("agents", [])), reason=event, now=now
            )
        elif event == "user.disabled":
            revoked = tx.sessions.revoke_where(user_id=subject, reason=event, now=now)
        elif event == "model.revoked":
            revoked = tx.sessions.revoke_where(
                model_digest=str(payload.get("digest")), reason=event, now=now
            )
        if revoked:
            tx.events.append(
                "session.revoked", subject, {"sessions": revoked, "reason": event}, "system"
            )
