"""Identity registry operations: validation and rules here, storage behind ``IdentityStore``.

Every change writes its event in the same transaction (DESIGN 6); each operation returns the
changed record with the consistency token of its commit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from tessera.clock import Clock, utc
from tessera.crypto.hashing import hash_password_secret, hash_token, new_secret
from tessera.crypto.keys import validate_public_jwk
from tessera.errors import Conflict, InvalidInput, NotFound
from tessera.identity import lifecycle, narrowing
from tessera.identity.ceiling import Ceiling, is_model_digest
from tessera.identity.model import (
    SERVICE_SCOPES,
    Agent,
    AgentStatus,
    Credential,
    CredentialKind,
    CredentialStatus,
    ModelArtifact,
    ModelStatus,
    Operator,
    OperatorStatus,
    Service,
    ServiceStatus,
    User,
    UserStatus,
)
from tessera.identity.ports import IdentityStore, IdentityTx
from tessera.ids import is_valid_name, new_id

T = TypeVar("T")
LifecycleHook = Callable[[Any, str, str, dict[str, Any]], None]

_SPIFFE = re.compile(r"^spiffe://[a-z0-9.-]{1,255}(/[A-Za-z0-9._~!$&'()*+,;=:@%-]{1,255}){0,32}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


@dataclass(frozen=True)
class Written(Generic[T]):
    """A committed change and the consistency token of its commit."""

    value: T
    consistency_token: str | None


@dataclass(frozen=True)
class IssuedSecret:
    """A secret shown once at creation; only its hash is stored."""

    credential_id: str
    secret: str


@dataclass(frozen=True)
class AgentRegistration:
    agent: Agent
    credentials: list[Credential]
    secret: IssuedSecret | None


@dataclass(frozen=True)
class ServiceRegistration:
    service: Service
    credentials: list[Credential]
    api_key: IssuedSecret | None


@dataclass(frozen=True)
class IdentitySettings:
    agent_max_lifetime_days: int = 365


def _text(value: str, where: str, *, max_len: int = 200, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{where} must be a string")
    stripped = value.strip()
    if not stripped and not allow_empty:
        raise InvalidInput(f"{where} must not be empty")
    if len(stripped) > max_len or any(ord(c) < 32 for c in stripped):
        raise InvalidInput(f"{where} must be at most {max_len} printable characters")
    return stripped


def _name(value: str, where: str) -> str:
    if not isinstance(value, str) or not is_valid_name(value):
        raise InvalidInput(
            f"{where} must be a lower-case name: letters, digits, '.', '_', '-'"
            " (1 to 63 characters, starting with a letter or digit)"
        )
    return value


class IdentityService:
    def __init__(
        self,
        store: IdentityStore,
        clock: Clock,
        settings: IdentitySettings | None = None,
        cascade: LifecycleHook | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings or IdentitySettings()
        # Called inside the same transaction as a change that ends sessions, so the change
        # and its consequences commit together (the token service revokes sessions here).
        self._cascade = cascade

    def _emit(
        self, tx: IdentityTx, event: str, subject: str, payload: dict[str, Any], actor: str
    ) -> None:
        tx.events.append(event, subject, payload, actor)
        if self._cascade is not None:
            self._cascade(tx, event, subject, payload)

    # -- operators -------------------------------------------------------------------

    def create_operator(
        self, name: str, display_name: str | None, *, actor: str
    ) -> Written[Operator]:
        name = _name(name, "name")
        display = _text(display_name or name, "display_name")
        now = self._clock.now()
        op = Operator(new_id("operator"), name, display, OperatorStatus.ACTIVE, now, now)
        with self._store.write() as tx:
            if tx.operators.get(name) is not None:
                raise Conflict(f"operator {name!r} already exists", code="already_exists")
            tx.operators.add(op)
            tx.events.append("operator.created", op.id, {"name": name}, actor)
        return Written(op, tx.consistency_token)

    def list_operators(self) -> list[Operator]:
        with self._store.read() as tx:
            return tx.operators.list()

    def get_operator(self, ref: str) -> Operator:
        with self._store.read() as tx:
            return self._operator(tx, ref)

    def suspend_operator(self, ref: str, reason: str | None, *, actor: str) -> Written[Operator]:
        """Kill switch: every agent of a suspended operator is refused (DESIGN 1)."""
        return self._set_operator_status(ref, OperatorStatus.SUSPENDED, reason, actor)

    def resume_operator(self, ref: str, *, actor: str) -> Written[Operator]:
        return self._set_operator_status(ref, OperatorStatus.ACTIVE, None, actor)

    def _set_operator_status(
        self, ref: str, status: OperatorStatus, reason: str | None, actor: str
    ) -> Written[Operator]:
        reason = _text(reason, "reason", allow_empty=True) if reason else None
        now = self._clock.now()
        with self._store.write() as tx:
            op = self._operator(tx, ref)
            if op.status == status:
                raise Conflict(
                    f"operator {op.name!r} is already {status.value}", code="invalid_transition"
                )
            tx.operators.set_status(op.id, status, now)
            agents = [
                a.id
                for a in tx.agents.list(operator_id=op.id)
                if a.status != AgentStatus.DECOMMISSIONED
            ]
            kind = (
                "operator.suspended" if status == OperatorStatus.SUSPENDED else ("operator.resumed")
            )
            self._emit(tx, kind, op.id, {"agents": agents, "reason": reason}, actor)
            updated = replace(op, status=status, updated_at=now)
        return Written(updated, tx.consistency_token)

    # -- users -----------------------------------------------------------------------

    def create_user(
        self,
        username: str,
        *,
        display_name: str | None = None,
        email: str | None = None,
        grants: dict[str, Any] | None = None,
        actor: str,
    ) -> Written[User]:
        username = _name(username, "username")
        display = _text(display_name or username, "display_name")
        if email is not None and (not isinstance(email, str) or not _EMAIL.fullmatch(email)):
            raise InvalidInput("email is not a valid address")
        ceiling = Ceiling.from_dict(grants, where="grants")
        now = self._clock.now()
        user = User(new_id("user"), username, display, email, UserStatus.ACTIVE, ceiling, now, now)
        with self._store.write() as tx:
            if tx.users.get(username) is not None:
                raise Conflict(f"user {username!r} already exists", code="already_exists")
            tx.users.add(user)
            tx.events.append("user.created", user.id, {"username": username}, actor)
        return Written(user, tx.consistency_token)

    def list_users(self) -> list[User]:
        with self._store.read() as tx:
            return tx.users.list()

    def get_user(self, ref: str) -> User:
        with self._store.read() as tx:
            return self._user(tx, ref)

    def disable_user(self, ref: str, *, actor: str) -> Written[User]:
        """A disabled user's rights become empty; sessions on their behalf are revoked by the
        token service when it sees ``user.disabled``."""
        now = self._clock.now()
        with self._store.write() as tx:
            user = self._user(tx, ref)
            if user.status == UserStatus.DISABLED:
                raise Conflict(
                    f"user {user.username!r} is already disabled", code="invalid_transition"
                )
            tx.users.set_status(user.id, UserStatus.DISABLED, now)
            self._emit(tx, "user.disabled", user.id, {"username": user.username}, actor)
        return Written(
            replace(user, status=UserStatus.DISABLED, updated_at=now), tx.consistency_token
        )

    def set_user_grants(self, ref: str, grants: dict[str, Any], *, actor: str) -> Written[User]:
        ceiling = Ceiling.from_dict(grants, where="grants")
        now = self._clock.now()
        with self._store.write() as tx:
            user = self._user(tx, ref)
            tx.users.set_grants(user.id, ceiling, now)
            tx.events.append("user.grants_changed", user.id, {"grants": ceiling.to_dict()}, actor)
        return Written(replace(user, grants=ceiling, updated_at=now), tx.consistency_token)

    # -- services --------------------------------------------------------------------

    def register_service(
        self,
        name: str,
        *,
        description: str = "",
        scopes: list[str] | None = None,
        jwk: dict[str, Any] | None = None,
        api_key: bool = False,
        actor: str,
    ) -> Written[ServiceRegistration]:
        """A PEP, SSF receiver or introspection caller (DESIGN 6b)."""
        name = _name(name, "name")
        desc = _text(description, "description", max_len=500, allow_empty=True)
        scope_set = frozenset(scopes or [])
        unknown = sorted(scope_set - SERVICE_SCOPES)
        if unknown:
            raise InvalidInput(
                f"unknown scope {unknown[0]!r}; known: " + ", ".join(sorted(SERVICE_SCOPES))
            )
        if jwk is None and not api_key:
            raise InvalidInput("a service needs a public jwk (private_key_jwt) or an api key")
        now = self._clock.now()
        svc = Service(new_id("service"), name, desc, scope_set, ServiceStatus.ACTIVE, now, now)
        creds: list[Credential] = []
        issued: IssuedSecret | None = None
        if jwk is not None:
            creds.append(self._jwk_credential("service", svc.id, jwk, None, now))
        if api_key:
            plain = new_secret("tsk_")
            cred = Credential(
                new_id("credential"),
                "service",
                svc.id,
                CredentialKind.API_KEY,
                CredentialStatus.ACTIVE,
                now,
                None,
                None,
                secret_hash=hash_token(plain),
            )
            creds.append(cred)
            issued = IssuedSecret(cred.id, plain)
        with self._store.write() as tx:
            if tx.services.get(name) is not None:
                raise Conflict(f"service {name!r} already exists", code="already_exists")
            tx.services.add(svc)
            for cred in creds:
                tx.credentials.add(cred)
            tx.events.append(
                "service.registered",
                svc.id,
                {"name": name, "scopes": sorted(scope_set), "credentials": [c.id for c in creds]},
                actor,
            )
        return Written(ServiceRegistration(svc, creds, issued), tx.consistency_token)

    def list_services(self) -> list[Service]:
        with self._store.read() as tx:
            return tx.services.list()

    def get_service(self, ref: str) -> Service:
        with self._store.read() as tx:
            svc = tx.services.get(ref)
            if svc is None:
                raise NotFound(f"no service {ref!r}")
            return svc

    # -- models ----------------------------------------------------------------------

    def register_model(
        self,
        operator: str,
        name: str,
        version: str,
        digest: str,
        *,
        signature: str | None = None,
        spiffe_ids: list[str] | None = None,
        actor: str,
    ) -> Written[ModelArtifact]:
        """``spiffe_ids``: workloads the operator registers as running this model; a JWT-SVID
        of one of them attests the model (DESIGN flow A)."""
        name = _name(name, "name")
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            raise InvalidInput("version must be 1 to 64 characters: letters, digits, '.+-_'")
        if not isinstance(digest, str) or not is_model_digest(digest):
            raise InvalidInput("digest must be sha256:<64 lower-case hex digits>")
        if signature is not None:
            signature = _text(signature, "signature", max_len=4096)
        attestors = sorted(set(spiffe_ids or []))
        for sid in attestors:
            if not isinstance(sid, str) or not _SPIFFE.fullmatch(sid):
                raise InvalidInput("spiffe_ids: each must look like spiffe://trust-domain/path")
        now = self._clock.now()
        with self._store.write() as tx:
            op = self._operator(tx, operator)
            if tx.models.find_by_digest(digest) is not None:
                raise Conflict(
                    "a model with this digest is already registered", code="already_exists"
                )
            model = ModelArtifact(
                new_id("model"),
                op.id,
                name,
                version,
                digest,
                signature,
                ModelStatus.ACTIVE,
                now,
                now,
            )
            tx.models.add(model)
            for sid in attestors:
                if tx.models.find_by_attestor(sid) is not None:
                    raise Conflict(f"{sid} already attests another model", code="already_exists")
                tx.models.add_attestor(model.id, sid, now)
            tx.events.append(
                "model.registered",
                model.id,
                {
                    "operator_id": op.id,
                    "name": name,
                    "version": version,
                    "digest": digest,
                    "attestors": attestors,
                },
                actor,
            )
        return Written(model, tx.consistency_token)

    def list_models(self, operator: str | None = None) -> list[ModelArtifact]:
        with self._store.read() as tx:
            op_id = self._operator(tx, operator).id if operator else None
            return tx.models.list(operator_id=op_id)

    def get_model(self, ref: str) -> ModelArtifact:
        with self._store.read() as tx:
            return self._model(tx, ref)

    def revoke_model(
        self, ref: str, reason: str | None = None, *, actor: str
    ) -> Written[ModelArtifact]:
        """Sessions running a revoked digest are revoked by the token service on the event."""
        reason = _text(reason, "reason", allow_empty=True) if reason else None
        now = self._clock.now()
        with self._store.write() as tx:
            model = self._model(tx, ref)
            if model.status == ModelStatus.REVOKED:
                raise Conflict("model is already revoked", code="invalid_transition")
            tx.models.set_status(model.id, ModelStatus.REVOKED, now)
            self._emit(
                tx, "model.revoked", model.id, {"digest": model.digest, "reason": reason}, actor
            )
        return Written(
            replace(model, status=ModelStatus.REVOKED, updated_at=now), tx.consistency_token
        )

    # -- agents ----------------------------------------------------------------------

    def register_agent(
        self,
        name: str,
        *,
        operator: str,
        owner: str,
        purpose: str,
        expires_at: datetime | None = None,
        expires_in_days: int | None = None,
        ceiling: dict[str, Any] | None = None,
        attestation_required: bool = True,
        jwk: dict[str, Any] | None = None,
        spiffe_id: str | None = None,
        legacy_secret: bool = False,
        actor: str,
    ) -> Written[AgentRegistration]:
        name = _name(name, "name")
        purpose = _text(purpose, "purpose", max_len=500)
        cap = Ceiling.from_dict(ceiling)
        now = self._clock.now()
        expiry = self._agent_expiry(now, expires_at, expires_in_days)
        if jwk is None and spiffe_id is None and not legacy_secret:
            raise InvalidInput(
                "an agent needs a credential: a public jwk, a SPIFFE ID, or a legacy secret"
            )
        agent_id = new_id("agent")
        creds: list[Credential] = []
        if jwk is not None:
            creds.append(self._jwk_credential("agent", agent_id, jwk, expiry, now))
        if spiffe_id is not None:
            creds.append(self._spiffe_credential("agent", agent_id, spiffe_id, expiry, now))
        secret: IssuedSecret | None = None
        if legacy_secret:
            plain = new_secret()
            cred = Credential(
                new_id("credential"),
                "agent",
                agent_id,
                CredentialKind.LEGACY_SECRET,
                CredentialStatus.ACTIVE,
                now,
                expiry,
                None,
                secret_hash=hash_password_secret(plain),
            )
            creds.append(cred)
            secret = IssuedSecret(cred.id, plain)
        with self._store.write() as tx:
            op = self._operator(tx, operator)
            if op.status != OperatorStatus.ACTIVE:
                raise Conflict(f"operator {op.name!r} is suspended", code="operator_suspended")
            owner_user = self._user(tx, owner)
            if owner_user.status != UserStatus.ACTIVE:
                raise Conflict(f"owner {owner_user.username!r} is disabled", code="owner_disabled")
            if tx.agents.get(name) is not None:
                raise Conflict(f"agent {name!r} already exists", code="already_exists")
            for digest in sorted(cap.models):
                model = tx.models.find_by_digest(digest)
                if model is None or model.operator_id != op.id:
                    raise InvalidInput(
                        f"ceiling.models: {digest} is not a model registered"
                        f" by operator {op.name!r}"
                    )
            agent = Agent(
                agent_id,
                name,
                op.id,
                owner_user.id,
                purpose,
                expiry,
                cap,
                attestation_required,
                AgentStatus.ACTIVE,
                None,
                now,
                now,
            )
            tx.agents.add(agent)
            for cred in creds:
                tx.credentials.add(cred)
            tx.events.append(
                "agent.registered",
                agent.id,
                {
                    "name": name,
                    "operator_id": op.id,
                    "owner_user_id": owner_user.id,
                    "credentials": [c.id for c in creds],
                },
                actor,
            )
        return Written(AgentRegistration(agent, creds, secret), tx.consistency_token)

    def _agent_expiry(
        self, now: datetime, expires_at: datetime | None, expires_in_days: int | None
    ) -> datetime:
        limit = now + timedelta(days=self._settings.agent_max_lifetime_days)
        if expires_at is not None and expires_in_days is not None:
            raise InvalidInput("give expires_at or expires_in_days, not both")
        if expires_at is None and expires_in_days is None:
            raise InvalidInput("an agent needs an expiry (expires_at or expires_in_days)")
        if expires_in_days is not None:
            if (
                isinstance(expires_in_days, bool)
                or not isinstance(expires_in_days, int)
                or (expires_in_days < 1)
            ):
                raise InvalidInput("expires_in_days must be a positive integer")
            if expires_in_days > self._settings.agent_max_lifetime_days:
                raise InvalidInput(
                    "expiry is beyond the maximum agent lifetime of "
                    f"{self._settings.agent_max_lifetime_days} days"
                )
            return now + timedelta(days=expires_in_days)
        assert expires_at is not None  # noqa: S101 - narrowed by the checks above
        expiry = utc(expires_at)
        if expiry <= now:
            raise InvalidInput("expires_at must be in the future")
        if expiry > limit:
            raise InvalidInput(
                "expiry is beyond the maximum agent lifetime of "
                f"{self._settings.agent_max_lifetime_days} days"
            )
        return expiry

    def add_agent_credential(
        self,
        ref: str,
        *,
        jwk: dict[str, Any] | None = None,
        spiffe_id: str | None = None,
        actor: str,
    ) -> Written[Credential]:
        if (jwk is None) == (spiffe_id is None):
            raise InvalidInput("give exactly one of jwk or spiffe_id")
        now = self._clock.now()
        with self._store.write() as tx:
            agent = self._agent(tx, ref)
            if agent.status == AgentStatus.DECOMMISSIONED:
                raise Conflict("agent is decommissioned", code="invalid_transition")
            if jwk is not None:
                cred = self._jwk_credential("agent", agent.id, jwk, agent.expires_at, now)
            else:
                assert spiffe_id is not None  # noqa: S101 - checked above
                cred = self._spiffe_credential("agent", agent.id, spiffe_id, agent.expires_at, now)
            tx.credentials.add(cred)
            tx.events.append(
                "credential.added",
                cred.id,
                {"owner_kind": "agent", "owner_id": agent.id, "kind": cred.kind.value},
                actor,
            )
        return Written(cred, tx.consistency_token)

    def add_operator_key(self, ref: str, jwk: dict[str, Any], *, actor: str) -> Written[Credential]:
        """Register an operator's public key; it signs model attestations (DESIGN flow A)."""
        now = self._clock.now()
        with self._store.write() as tx:
            op = self._operator(tx, ref)
            cred = self._jwk_credential("operator", op.id, jwk, None, now)
            tx.credentials.add(cred)
            tx.events.append(
                "credential.added",
                cred.id,
                {"owner_kind": "operator", "owner_id": op.id, "kind": "jwk"},
                actor,
            )
        return Written(cred, tx.consistency_token)

    def list_credentials(self, owner_kind: str, ref: str) -> list[Credential]:
        with self._store.read() as tx:
            if owner_kind == "agent":
                owner_id = self._agent(tx, ref).id
            elif owner_kind == "service":
                svc = tx.services.get(ref)
                if svc is None:
                    raise NotFound(f"no service {ref!r}")
                owner_id = svc.id
            else:
                owner_id = self._operator(tx, ref).id
            return tx.credentials.list_for(owner_kind, owner_id)

    def list_agents(self, *, operator: str | None = None, status: str | None = None) -> list[Agent]:
        with self._store.read() as tx:
            op_id = self._operator(tx, operator).id if operator else None
            try:
                st = AgentStatus(status) if status else None
            except ValueError as exc:
                raise InvalidInput("status must be active, suspended or decommissioned") from exc
            return tx.agents.list(operator_id=op_id, status=st)

    def get_agent(self, ref: str) -> Agent:
        with self._store.read() as tx:
            return self._agent(tx, ref)

    def effective_agent_status(self, agent: Agent) -> AgentStatus:
        """An agent of a suspended operator is suspended whatever its own status says."""
        return self.effective_agent_statuses([agent])[0]

    def effective_agent_statuses(self, agents: list[Agent]) -> list[AgentStatus]:
        """``effective_agent_status`` for many agents, reading each operator once."""
        with self._store.read() as tx:
            ops = {
                op_id: tx.operators.get(op_id)
                for op_id in {a.operator_id for a in agents if a.status == AgentStatus.ACTIVE}
            }
        out: list[AgentStatus] = []
        for agent in agents:
            op = ops.get(agent.operator_id)
            if agent.status != AgentStatus.ACTIVE:
                out.append(agent.status)
            elif op is None or op.status != OperatorStatus.ACTIVE:
                out.append(AgentStatus.SUSPENDED)
            else:
                out.append(AgentStatus.ACTIVE)
        return out

    def suspend_agent(self, ref: str, reason: str | None = None, *, actor: str) -> Written[Agent]:
        return self._transition(ref, AgentStatus.SUSPENDED, reason, actor)

    def resume_agent(self, ref: str, *, actor: str) -> Written[Agent]:
        return self._transition(ref, AgentStatus.ACTIVE, None, actor)

    def decommission_agent(
        self, ref: str, reason: str | None = None, *, actor: str
    ) -> Written[Agent]:
        """Terminal. Disables every credential in the same transaction; the event lets the
        token, relationship and approval services finish the cascade. Safe to retry: a
        second call on a decommissioned agent changes nothing and returns it."""
        with self._store.read() as tx:
            agent = self._agent(tx, ref)
        if agent.status == AgentStatus.DECOMMISSIONED:
            return Written(agent, None)
        return self._transition(ref, AgentStatus.DECOMMISSIONED, reason, actor)

    def _transition(
        self, ref: str, target: AgentStatus, reason: str | None, actor: str
    ) -> Written[Agent]:
        reason = _text(reason, "reason", allow_empty=True) if reason else None
        now = self._clock.now()
        with self._store.write() as tx:
            agent = self._agent(tx, ref)
            event = lifecycle.transition(agent.status, target)
            tx.agents.set_status(agent.id, target, reason, now, expected=agent.status)
            payload: dict[str, Any] = {
                "from": agent.status.value,
                "to": target.value,
                "reason": reason,
                "operator_id": agent.operator_id,
            }
            if target == AgentStatus.DECOMMISSIONED:
                payload["credentials_disabled"] = tx.credentials.disable_all_for(
                    "agent", agent.id, now
                )
            self._emit(tx, event, agent.id, payload, actor)
        return Written(
            replace(agent, status=target, status_reason=reason, updated_at=now),
            tx.consistency_token,
        )

    # -- helpers ---------------------------------------------------------------------

    def _jwk_credential(
        self,
        owner_kind: str,
        owner_id: str,
        jwk: dict[str, Any],
        expires_at: datetime | None,
        now: datetime,
    ) -> Credential:
        public, thumb = validate_public_jwk(jwk)
        return Credential(
            new_id("credential"),
            owner_kind,
            owner_id,
            CredentialKind.JWK,
            CredentialStatus.ACTIVE,
            now,
            expires_at,
            None,
            public_jwk=public,
            jkt=thumb,
        )

    def _spiffe_credential(
        self,
        owner_kind: str,
        owner_id: str,
        spiffe_id: str,
        expires_at: datetime | None,
        now: datetime,
    ) -> Credential:
        if not isinstance(spiffe_id, str) or not _SPIFFE.fullmatch(spiffe_id):
            raise InvalidInput("spiffe_id must look like spiffe://trust-domain/path")
        return Credential(
            new_id("credential"),
            owner_kind,
            owner_id,
            CredentialKind.SPIFFE,
            CredentialStatus.ACTIVE,
            now,
            expires_at,
            None,
            spiffe_id=spiffe_id,
        )

    @staticmethod
    def _operator(tx: IdentityTx, ref: str) -> Operator:
        op = tx.operators.get(ref)
        if op is None:
            raise NotFound(f"no operator {ref!r}")
        return op

    @staticmethod
    def _user(tx: IdentityTx, ref: str) -> User:
        user = tx.users.get(ref)
        if user is None:
            raise NotFound(f"no user {ref!r}")
        return user

    @staticmethod
    def _agent(tx: IdentityTx, ref: str) -> Agent:
        agent = tx.agents.get(ref)
        if agent is None:
            raise NotFound(f"no agent {ref!r}")
        return agent

    @staticmethod
    def _model(tx: IdentityTx, ref: str) -> ModelArtifact:
        model = tx.models.get(ref)
        if model is None and is_model_digest(ref):
            model = tx.models.find_by_digest(ref)
        if model is None:
            raise NotFound(f"no model {ref!r}")
        return model

    # -- posture (issue 11): narrowing and credential remediation -----------------------

    def narrow_agent_ceiling(
        self, ref: str, ceiling: dict[str, Any], *, actor: str
    ) -> Written[Agent]:
        """Replace an agent's ceiling by one that lies within it (never wider: DESIGN 1,
        "delegation can only narrow", applied to the standing grant). Writes
        ``agent.ceiling_changed`` with what was removed; the lifecycle cascade revokes, in
        the same transaction, every live session whose grant exceeds the new ceiling."""
        new = Ceiling.from_dict(ceiling)
        now = self._clock.now()
        with self._store.write() as tx:
            agent = self._agent(tx, ref)
            if agent.status == AgentStatus.DECOMMISSIONED:
                raise Conflict("agent is decommissioned", code="invalid_transition")
            wider = narrowing.within(new, agent.ceiling)
            if wider:
                raise InvalidInput(
                    "the new ceiling must lie within the current one: " + "; ".join(wider[:5])
                )
            tx.agents.set_ceiling(agent.id, new, now)
            self._emit(
                tx,
                "agent.ceiling_changed",
                agent.id,
                {
                    "agent": agent.id,
                    "removed": narrowing.removed(agent.ceiling, new),
                },
                actor,
            )
        return Written(replace(agent, ceiling=new, updated_at=now), tx.consistency_token)

    def disable_credential(
        self, credential_id: str, reason: str | None = None, *, actor: str
    ) -> Written[Credential]:
        """Disable one credential (a stale key, a legacy secret); ``credential.disabled``.
        Safe to retry: an already disabled credential is returned unchanged."""
        reason = _text(reason, "reason", allow_empty=True) if reason else None
        now = self._clock.now()
        with self._store.write() as tx:
            cred = tx.credentials.get(credential_id)
            if cred is None:
                raise NotFound(f"no credential {credential_id!r}")
            if cred.status == CredentialStatus.DISABLED:
                return Written(cred, None)
            tx.credentials.disable(cred.id, now)
            self._emit(
                tx,
                "credential.disabled",
                cred.id,
                {"owner_kind": cred.owner_kind, "owner": cred.owner_id, "reason": reason},
                actor,
            )
        return Written(replace(cred, status=CredentialStatus.DISABLED), tx.consistency_token)


class StoredUserGrants:
    """``UserRightsSource`` (DESIGN 6b), first implementation: grants stored with the user.

    A disabled or unknown user has no rights (fail closed).
    """

    def __init__(self, store: IdentityStore) -> None:
        self._store = store

    def rights_for(self, user_id: str) -> Ceiling | None:
        with self._store.read() as tx:
            user = tx.users.get(user_id)
        if user is None or user.status != UserStatus.ACTIVE:
            return None
        return user.grants
