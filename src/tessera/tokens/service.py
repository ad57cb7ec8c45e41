"""The token endpoint (RFC 6749 §3.2): sessions by ``client_credentials`` and RFC 8693 token
exchange (on-behalf-of a user, or delegation to a sub-agent), bound to DPoP keys (RFC 9449),
as RFC 9068 JWT access tokens carrying every identity layer (DESIGN 4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tessera.clock import Clock
from tessera.crypto.hashing import hash_token, sha256_b64url
from tessera.crypto.jws import sign_jwt
from tessera.crypto.keyring import KeyRing
from tessera.crypto.nonce import DpopNonceIssuer
from tessera.identity.lifecycle import agent_unusable_reason
from tessera.identity.model import UserStatus
from tessera.ids import new_id
from tessera.signals.tailer import EventTailer
from tessera.tokens.attestation import resolve_model_digest
from tessera.tokens.cache import CachedIdentity, IdentityCache
from tessera.tokens.claims import build_session_claims
from tessera.tokens.client_auth import AuthenticatedClient, ClientDirectory, authenticate
from tessera.tokens.delegation import act_chain, derive_child_grant
from tessera.tokens.grant import SessionGrant, compute_session_grant
from tessera.tokens.issuers import ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE, TrustedIssuers
from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.ports import TokenStore, TokenTx
from tessera.tokens.proofs import ACCESS_TOKEN_TYP, check_dpop, read_session_token
from tessera.tokens.rar import parse_session_request
from tessera.tokens.sessions import SessionRecord
from tessera.tokens.spiffe import SpiffeBundles
from tessera.tokens.subject import verify_actor_token

CLIENT_CREDENTIALS = "client_credentials"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN, not a secret
SERVICE_TOKEN_LIFETIME = 900


@dataclass(frozen=True)
class TokenRequest:
    form: Mapping[str, str]
    resources: tuple[str, ...]  # repeated resource / audience parameters
    authorization: str | None
    dpop: str | None


@dataclass(frozen=True)
class TokenResponse:
    body: dict[str, Any]
    session_id: str | None


class TokenService:
    def __init__(
        self,
        store: TokenStore,
        clock: Clock,
        keyring: KeyRing,
        *,
        issuer: str,
        trusted: TrustedIssuers,
        nonces: DpopNonceIssuer | None,
        spiffe_bundles: SpiffeBundles | None = None,
        tailer: EventTailer | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._keyring = keyring
        self.issuer = issuer
        self.token_endpoint = f"{issuer}/oauth/token"
        self._trusted = trusted
        self.nonces = nonces
        # One tailer per node (app.py); a service built alone follows the log inline.
        self.tailer = tailer or EventTailer(store, clock)
        self._cache = IdentityCache(self.tailer, on_key_change=keyring.invalidate)
        self.spiffe_bundles = spiffe_bundles

    def view(self, raw_tx: Any) -> CachedIdentity:
        """The request's identity reads (memory first) over its write transaction."""
        return self._cache.view(raw_tx)

    # -- helpers bound to one transaction ----------------------------------------------

    def directory(self, tx: TokenTx) -> ClientDirectory:
        return ClientDirectory(
            find_agent=tx.agents.get,
            find_agent_by_spiffe_id=lambda sid: _agent_by_spiffe_id(tx, sid),
            spiffe_bundles=self.spiffe_bundles,
            find_service=tx.services.get,
            credentials_of=tx.credentials.list_for,
            find_operator=tx.operators.get,
            use_jti_once=lambda jti, exp: tx.replay.use_once("client_assertion", jti, exp),
        )

    def authenticate(
        self, tx: TokenTx, form: Mapping[str, str], authorization: str | None
    ) -> AuthenticatedClient:
        return authenticate(
            form,
            authorization,
            directory=self.directory(tx),
            issuer=self.issuer,
            token_endpoint=self.token_endpoint,
            now=self._clock.now(),
        )

    # -- the token endpoint ------------------------------------------------------------

    def token(self, req: TokenRequest, *, actor_note: str = "") -> TokenResponse:
        grant_type = req.form.get("grant_type")
        if grant_type not in (CLIENT_CREDENTIALS, TOKEN_EXCHANGE):
            raise OAuthError("unsupported_grant_type", "grant_type not supported")
        now = self._clock.now()
        with self._store.write() as raw:
            tx = self._cache.view(raw)
            client = self.authenticate(tx, req.form, req.authorization)
            if client.kind == "service":
                if grant_type != CLIENT_CREDENTIALS:
                    raise OAuthError("unauthorized_client", "services use client_credentials")
                return self._service_token(tx, client, req, now)
            agent = client.agent
            assert agent is not None  # noqa: S101 - kind "agent" always carries one
            proof = check_dpop(
                req.dpop,
                htm="POST",
                htu=self.token_endpoint,
                now=now.timestamp(),
                nonces=self.nonces,
                use_jti_once=lambda j, e: tx.replay.use_once("dpop", j, e),
            )
            if proof is None and agent.ceiling.dpop_required:
                raise OAuthError("invalid_dpop_proof", "a DPoP proof is required")
            if proof is None and client.method == "spiffe_jwt":
                # DESIGN 6b: a reusable JWT-SVID is accepted only with a single-use proof.
                raise OAuthError("invalid_dpop_proof", "a JWT-SVID needs a DPoP proof")
            if grant_type == CLIENT_CREDENTIALS:
                resp = self._root_session(
                    tx, client, req, proof.jkt if proof else None, user=None, now=now
                )
            elif req.form.get("subject_token_type") == ACCESS_TOKEN_TYPE and (
                req.form.get("actor_token") is not None
            ):
                resp = self._delegate(tx, client, req, proof.jkt if proof else None, now)
            else:
                resp = self._on_behalf_of(tx, client, req, proof.jkt if proof else None, now)
        return resp

    def _service_token(
        self, tx: CachedIdentity, client: AuthenticatedClient, req: TokenRequest, now: datetime
    ) -> TokenResponse:
        svc = client.service
        assert svc is not None  # noqa: S101
        requested = set((req.form.get("scope") or "").split())
        if not requested <= svc.scopes:
            raise OAuthError("invalid_scope", "a requested scope is not granted to the service")
        scopes = sorted(requested or svc.scopes)
        iat = int(now.timestamp())
        claims = {
            "iss": self.issuer,
            "sub": svc.id,
            "aud": self.issuer,
            "client_id": svc.id,
            "iat": iat,
            "exp": iat + SERVICE_TOKEN_LIFETIME,
            "jti": new_id("session"),
            "scope": " ".join(scopes),
            "token_use": "service",
        }
        tx.flush()
        token = sign_jwt(claims, self._keyring.active_key(), typ=ACCESS_TOKEN_TYP)
        tx.events.append(
            "service_token.issued", svc.id, {"jti": claims["jti"], "scope": claims["scope"]}, svc.id
        )
        return TokenResponse(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": SERVICE_TOKEN_LIFETIME,
                "scope": claims["scope"],
            },
            None,
        )

    def _request(self, req: TokenRequest) -> Any:
        lifetime_raw = req.form.get("requested_lifetime")
        lifetime: int | None = None
        if lifetime_raw is not None:
            if not lifetime_raw.isdigit() or len(lifetime_raw) > 6:
                raise OAuthError("invalid_request", "requested_lifetime must be seconds")
            lifetime = int(lifetime_raw)
        return parse_session_request(
            req.form.get("authorization_details"),
            audience=list(req.resources) or None,
            lifetime=lifetime,
        )

    def _check_audience(self, tx: CachedIdentity, grant: SessionGrant) -> None:
        for aud in grant.audience:
            if aud.startswith(("https://", "http://")):
                continue
            if tx.services.get(aud) is None:
                raise OAuthError(
                    "invalid_target",
                    "an audience is not a registered service",
                    detail=f"audience {aud!r}",
                )

    def _model(
        self,
        tx: CachedIdentity,
        agent: Any,
        *,
        attestation: str | None,
        self_asserted: str | None,
        bound_jkt: str | None,
        now: datetime,
        spiffe_id: str | None = None,
    ) -> Any:
        """The registered, active model ``agent`` proved it runs (DESIGN flow A)."""
        if spiffe_id is not None and attestation is None and self_asserted is None:
            # DESIGN flow A: the workload's own JWT-SVID (verified, DPoP-bound) attests the
            # model when the operator registered its SPIFFE ID for that model.
            model = tx.models.find_by_attestor(spiffe_id)
            if model is None or model.operator_id != agent.operator_id:
                raise OAuthError(
                    "invalid_grant",
                    "the model attestation was not accepted",
                    detail=f"{spiffe_id} attests no model of the operator",
                )
            if model.status.value != "active":
                raise OAuthError(
                    "invalid_grant",
                    "the model attestation was not accepted",
                    detail=f"model {model.digest} is revoked",
                )
            return model
        return resolve_model_digest(
            agent,
            attestation=attestation,
            self_asserted=self_asserted,
            bound_jkt=bound_jkt,
            issuer=self.issuer,
            now=now,
            operator_keys=tx.credentials.list_for("operator", agent.operator_id),
            find_model=tx.models.find_by_digest,
            use_jti_once=lambda j, e: tx.replay.use_once("attestation", j, e),
        )

    def _cap_lifetime(
        self, grant: SessionGrant, agent_expiry: datetime, now: datetime
    ) -> SessionGrant:
        # A session never outlives the agent that holds it.
        left = int((agent_expiry - now).total_seconds())
        if left <= 0:
            raise OAuthError("invalid_client", "client authentication failed")
        return (
            replace(grant, lifetime=min(grant.lifetime, left)) if left < grant.lifetime else grant
        )

    def _root_session(
        self,
        tx: CachedIdentity,
        client: AuthenticatedClient,
        req: TokenRequest,
        dpop_jkt: str | None,
        *,
        user: Any,
        now: datetime,
    ) -> TokenResponse:
        agent = client.agent
        assert agent is not None  # noqa: S101
        bound = dpop_jkt or client.key_jkt
        model = self._model(
            tx,
            agent,
            attestation=req.form.get("model_attestation"),
            self_asserted=req.form.get("model_digest"),
            bound_jkt=bound,
            now=now,
            spiffe_id=client.spiffe_id,
        )
        grant = compute_session_grant(
            self._request(req),
            agent.ceiling,
            user.grants if user is not None else None,
            model_digest=model.digest,
        )
        self._check_audience(tx, grant)
        grant = self._cap_lifetime(grant, agent.expires_at, now)
        act = {"sub": agent.id} if user is not None else None
        return self._issue(
            tx,
            grant,
            subject=user.id if user is not None else agent.id,
            agent=agent,
            user_id=user.id if user is not None else None,
            model=model,
            jkt=dpop_jkt,
            act=act,
            parent=None,
            now=now,
            carve=None,
        )

    def _on_behalf_of(
        self,
        tx: CachedIdentity,
        client: AuthenticatedClient,
        req: TokenRequest,
        dpop_jkt: str | None,
        now: datetime,
    ) -> TokenResponse:
        subject = req.form.get("subject_token")
        stype = req.form.get("subject_token_type")
        if not subject or stype not in (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE):
            raise OAuthError(
                "invalid_request", "subject_token and a supported subject_token_type are required"
            )
        if req.form.get("actor_token") or req.form.get("actor_token_type"):
            raise OAuthError("invalid_request", "actor_token is only for delegation")
        assertion = self._trusted.verify(
            subject, stype, tessera_issuer=self.issuer, now=now.timestamp()
        )
        user = tx.users.get(assertion.user_ref)
        if user is None or user.status != UserStatus.ACTIVE:
            raise OAuthError(
                "invalid_grant",
                "the subject token's user is not active",
                detail=f"user {assertion.user_ref!r} unknown or disabled",
            )
        return self._root_session(tx, client, req, dpop_jkt, user=user, now=now)

    def _delegate(
        self,
        tx: CachedIdentity,
        client: AuthenticatedClient,
        req: TokenRequest,
        dpop_jkt: str | None,
        now: datetime,
    ) -> TokenResponse:
        """DESIGN flow C: the parent sends; the child is named by its signed actor token."""
        parent_token = req.form.get("subject_token") or ""
        parent, _ = read_session_token(
            parent_token, keys=self._keyring.lookup, issuer=self.issuer, now=now.timestamp()
        )
        record = tx.sessions.find_by_token_hash(hash_token(parent_token))
        if record is None or not self.session_is_live(tx, record, now)[0]:
            raise OAuthError("invalid_grant", "the subject token is not active")
        if parent.client_id != client.client_id:
            raise OAuthError("invalid_grant", "only the holder of a session may delegate it")
        if parent.jkt is not None and parent.jkt != dpop_jkt:
            raise OAuthError(
                "invalid_dpop_proof", "the DPoP proof does not match the subject token's key"
            )
        parent_agent = client.agent
        assert parent_agent is not None  # noqa: S101
        if req.form.get("actor_token_type") != JWT_TOKEN_TYPE:
            raise OAuthError("invalid_request", "actor_token_type must be jwt")
        child, child_jkt, actor_claims = verify_actor_token(
            req.form.get("actor_token") or "",
            tx=tx,
            issuer=self.issuer,
            now=now,
            directory=self.directory(tx),
        )
        model = self._model(
            tx,
            child,
            attestation=req.form.get("model_attestation"),
            self_asserted=actor_claims.get("model_digest"),
            bound_jkt=child_jkt,
            now=now,
        )
        # may_delegate_to may name the child by id or by name; the rules see only ids.
        allowed = frozenset(
            child.id if x == child.name else x for x in parent_agent.ceiling.may_delegate_to
        )
        derived = derive_child_grant(
            parent,
            child.ceiling,
            self._request(req),
            parent_ceiling=replace(parent_agent.ceiling, may_delegate_to=allowed),
            parent_remaining_budgets=tx.sessions.remaining_budgets(record.sid),
            now=int(now.timestamp()),
            child_agent_id=child.id,
            child_model_digest=model.digest,
        )
        grant = self._cap_lifetime(derived.grant, child.expires_at, now)
        grant = replace(
            grant, lifetime=min(grant.lifetime, max(1, derived.exp - int(now.timestamp())))
        )
        self._check_audience(tx, grant)
        if not tx.sessions.carve(record.sid, derived.carve):
            raise OAuthError("invalid_grant", "the parent session's budget is exhausted")
        return self._issue(
            tx,
            grant,
            subject=derived.subject,
            agent=child,
            user_id=record.user_id,
            model=model,
            jkt=child_jkt,
            act=derived.act,
            parent=(sha256_b64url(parent_token), record),
            now=now,
            carve=derived.carve,
        )

    def _issue(
        self,
        tx: CachedIdentity,
        grant: SessionGrant,
        *,
        subject: str,
        agent: Any,
        user_id: str | None,
        model: Any,
        jkt: str | None,
        act: Any,
        parent: tuple[str, SessionRecord] | None,
        now: datetime,
        carve: Mapping[str, int] | None,
    ) -> TokenResponse:
        tx.flush()  # every single-use id of the request, in one statement
        sid, jti = new_id("session"), new_id("session").replace("ses_", "jti_")
        iat = int(now.timestamp())
        claims = build_session_claims(
            grant,
            issuer=self.issuer,
            subject=subject,
            client_id=agent.id,
            jti=jti,
            iat=iat,
            sid=sid,
            operator=agent.operator_id,
            model_id=model.id,
            jkt=jkt,
            act=act,
            parent=parent[0] if parent else None,
        )
        token = sign_jwt(claims, self._keyring.active_key(), typ=ACCESS_TOKEN_TYP)
        details = claims["authorization_details"][0]
        parent_rec = parent[1] if parent else None
        rec = SessionRecord(
            sid=sid,
            jti=jti,
            token_hash=hash_token(token),
            agent_id=agent.id,
            user_id=user_id,
            operator_id=agent.operator_id,
            model_id=model.id,
            model_digest=model.digest,
            parent_sid=parent_rec.sid if parent_rec else None,
            root_sid=parent_rec.root_sid if parent_rec else sid,
            depth=grant.depth,
            audience=tuple(sorted(grant.audience)),
            grant=details,
            act=claims.get("act"),
            cnf_jkt=jkt,
            issued_at=now,
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            status="active",
        )
        tx.sessions.add(rec, dict(grant.budgets))
        tx.events.append(
            "session.issued",
            sid,
            {
                "agent_id": agent.id,
                "user_id": user_id,
                "jti": jti,
                "depth": grant.depth,
                "parent_sid": rec.parent_sid,
                "model_digest": model.digest,
                "carved": dict(carve or {}),
                "actor_layers": {
                    "operator": agent.operator_id,
                    "agent": agent.id,
                    "model_digest": model.digest,
                    "session": sid,
                    "user": user_id,
                    "act": act_chain(claims.get("act")),
                },
            },
            agent.id,
        )
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "DPoP" if jkt else "Bearer",
            "expires_in": grant.lifetime,
            "authorization_details": [details],
        }
        if parent is not None or user_id is not None:
            body["issued_token_type"] = ACCESS_TOKEN_TYPE
        return TokenResponse(body, sid)

    # -- live state --------------------------------------------------------------------

    def session_is_live(self, tx: TokenTx, rec: SessionRecord, now: datetime) -> tuple[bool, str]:
        """Is the stored session usable right now? Checks every layer, not just ``exp``."""
        if rec.status != "active":
            return False, f"session {rec.status}"
        if rec.expires_at is None or rec.expires_at <= now:
            return False, "session expired"
        agent = tx.agents.get(rec.agent_id)
        if agent is None:
            return False, "agent not found"
        why = agent_unusable_reason(agent, tx.operators.get(agent.operator_id), now)
        if why is not None:
            return False, why
        if rec.user_id is not None:
            user = tx.users.get(rec.user_id)
            if user is None or user.status != UserStatus.ACTIVE:
                return False, "user disabled"
        if rec.model_digest is not None:
            model = tx.models.find_by_digest(rec.model_digest)
            if model is None or model.status.value != "active":
                return False, "model revoked"
        return True, "active"

    def purge_replay_cache(self) -> int:
        with self._store.write() as raw:
            return int(raw.replay.purge_expired(self._clock.now() - timedelta(seconds=60)))


def _agent_by_spiffe_id(tx: TokenTx, spiffe_id: str) -> Any:
    """The agent holding an active SPIFFE credential for ``spiffe_id``, if exactly one."""
    creds = [
        c
        for c in tx.credentials.find_by_spiffe_id(spiffe_id)
        if c.owner_kind == "agent" and c.status.value == "active"
    ]
    if len(creds) != 1:
        return None
    return tx.agents.get(creds[0].owner_id)
