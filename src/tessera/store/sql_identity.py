"""SQL repositories for the identity registry (one transaction's connection each)."""

from __future__ import annotations

import builtins
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, or_, select, update

from tessera.clock import utc
from tessera.errors import Conflict
from tessera.identity.ceiling import Ceiling
from tessera.identity.model import (
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
from tessera.store import tables as t


def _dt(value: datetime | None) -> datetime | None:
    return utc(value) if value is not None else None


def _req_dt(value: datetime) -> datetime:
    return utc(value)


class SqlOperatorRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def add(self, op: Operator) -> None:
        self._c.execute(
            t.operators.insert().values(
                id=op.id,
                name=op.name,
                display_name=op.display_name,
                status=op.status.value,
                created_at=op.created_at,
                updated_at=op.updated_at,
            )
        )

    def get(self, ref: str) -> Operator | None:
        row = self._c.execute(
            select(t.operators).where(or_(t.operators.c.id == ref, t.operators.c.name == ref))
        ).first()
        return self._row(row) if row else None

    def list(self) -> list[Operator]:
        rows = self._c.execute(select(t.operators).order_by(t.operators.c.name))
        return [self._row(r) for r in rows]

    def set_status(self, op_id: str, status: OperatorStatus, now: datetime) -> None:
        self._c.execute(
            update(t.operators)
            .where(t.operators.c.id == op_id)
            .values(status=status.value, updated_at=now)
        )

    @staticmethod
    def _row(r: Row[Any]) -> Operator:
        return Operator(
            r.id,
            r.name,
            r.display_name,
            OperatorStatus(r.status),
            _req_dt(r.created_at),
            _req_dt(r.updated_at),
        )


class SqlUserRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def add(self, user: User) -> None:
        self._c.execute(
            t.users.insert().values(
                id=user.id,
                username=user.username,
                display_name=user.display_name,
                email=user.email,
                status=user.status.value,
                grants=json.dumps(user.grants.to_dict()),
                created_at=user.created_at,
                updated_at=user.updated_at,
            )
        )

    def get(self, ref: str) -> User | None:
        row = self._c.execute(
            select(t.users).where(or_(t.users.c.id == ref, t.users.c.username == ref))
        ).first()
        return self._row(row) if row else None

    def list(self) -> list[User]:
        return [self._row(r) for r in self._c.execute(select(t.users).order_by(t.users.c.username))]

    def set_status(self, user_id: str, status: UserStatus, now: datetime) -> None:
        self._c.execute(
            update(t.users)
            .where(t.users.c.id == user_id)
            .values(status=status.value, updated_at=now)
        )

    def set_grants(self, user_id: str, grants: Ceiling, now: datetime) -> None:
        self._c.execute(
            update(t.users)
            .where(t.users.c.id == user_id)
            .values(grants=json.dumps(grants.to_dict()), updated_at=now)
        )

    @staticmethod
    def _row(r: Row[Any]) -> User:
        return User(
            r.id,
            r.username,
            r.display_name,
            r.email,
            UserStatus(r.status),
            Ceiling.from_dict(json.loads(r.grants), where="grants"),
            _req_dt(r.created_at),
            _req_dt(r.updated_at),
        )


class SqlServiceRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def add(self, svc: Service) -> None:
        self._c.execute(
            t.services.insert().values(
                id=svc.id,
                name=svc.name,
                description=svc.description,
                scopes=json.dumps(sorted(svc.scopes)),
                status=svc.status.value,
                created_at=svc.created_at,
                updated_at=svc.updated_at,
            )
        )

    def get(self, ref: str) -> Service | None:
        row = self._c.execute(
            select(t.services).where(or_(t.services.c.id == ref, t.services.c.name == ref))
        ).first()
        return self._row(row) if row else None

    def list(self) -> list[Service]:
        return [
            self._row(r) for r in self._c.execute(select(t.services).order_by(t.services.c.name))
        ]

    @staticmethod
    def _row(r: Row[Any]) -> Service:
        return Service(
            r.id,
            r.name,
            r.description,
            frozenset(json.loads(r.scopes)),
            ServiceStatus(r.status),
            _req_dt(r.created_at),
            _req_dt(r.updated_at),
        )


class SqlAgentRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def add(self, agent: Agent) -> None:
        self._c.execute(
            t.agents.insert().values(
                id=agent.id,
                name=agent.name,
                operator_id=agent.operator_id,
                owner_user_id=agent.owner_user_id,
                purpose=agent.purpose,
                expires_at=agent.expires_at,
                ceiling=json.dumps(agent.ceiling.to_dict()),
                attestation_required=agent.attestation_required,
                status=agent.status.value,
                status_reason=agent.status_reason,
                created_at=agent.created_at,
                updated_at=agent.updated_at,
            )
        )

    def get(self, ref: str) -> Agent | None:
        row = self._c.execute(
            select(t.agents).where(or_(t.agents.c.id == ref, t.agents.c.name == ref))
        ).first()
        return self._row(row) if row else None

    def list(
        self,
        *,
        operator_id: str | None = None,
        status: AgentStatus | None = None,
        owner_user_id: str | None = None,
    ) -> list[Agent]:
        q = select(t.agents).order_by(t.agents.c.name)
        if operator_id is not None:
            q = q.where(t.agents.c.operator_id == operator_id)
        if status is not None:
            q = q.where(t.agents.c.status == status.value)
        if owner_user_id is not None:
            q = q.where(t.agents.c.owner_user_id == owner_user_id)
        return [self._row(r) for r in self._c.execute(q)]

    def set_status(
        self,
        agent_id: str,
        status: AgentStatus,
        reason: str | None,
        now: datetime,
        *,
        expected: AgentStatus | None = None,
    ) -> None:
        cond = t.agents.c.id == agent_id
        if expected is not None:
            # INVARIANT: a transition applies only to the state it was decided on, so two
            # concurrent transitions cannot both succeed.
            cond = and_(cond, t.agents.c.status == expected.value)
        result = self._c.execute(
            update(t.agents)
            .where(cond)
            .values(status=status.value, status_reason=reason, updated_at=now)
        )
        if result.rowcount != 1:
            raise Conflict("the agent changed concurrently; retry", code="concurrent_change")

    def set_ceiling(self, agent_id: str, ceiling: Ceiling, now: datetime) -> None:
        self._c.execute(
            update(t.agents)
            .where(t.agents.c.id == agent_id)
            .values(ceiling=json.dumps(ceiling.to_dict()), updated_at=now)
        )

    @staticmethod
    def _row(r: Row[Any]) -> Agent:
        return Agent(
            r.id,
            r.name,
            r.operator_id,
            r.owner_user_id,
            r.purpose,
            _req_dt(r.expires_at),
            Ceiling.from_dict(json.loads(r.ceiling)),
            bool(r.attestation_required),
            AgentStatus(r.status),
            r.status_reason,
            _req_dt(r.created_at),
            _req_dt(r.updated_at),
        )


class SqlModelRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def add(self, model: ModelArtifact) -> None:
        self._c.execute(
            t.models.insert().values(
                id=model.id,
                operator_id=model.operator_id,
                name=model.name,
                version=model.version,
                digest=model.digest,
                signature=model.signature,
                status=model.status.value,
                created_at=model.created_at,
                updated_at=model.updated_at,
            )
        )

    def get(self, ref: str) -> ModelArtifact | None:
        row = self._c.execute(select(t.models).where(t.models.c.id == ref)).first()
        return self._row(row) if row else None

    def find_by_digest(self, digest: str) -> ModelArtifact | None:
        row = self._c.execute(select(t.models).where(t.models.c.digest == digest)).first()
        return self._row(row) if row else None

    def list(self, *, operator_id: str | None = None) -> list[ModelArtifact]:
        q = select(t.models).order_by(t.models.c.name, t.models.c.version)
        if operator_id is not None:
            q = q.where(t.models.c.operator_id == operator_id)
        return [self._row(r) for r in self._c.execute(q)]

    def add_attestor(self, model_id: str, spiffe_id: str, now: datetime) -> None:
        self._c.execute(
            t.model_attestors.insert().values(
                spiffe_id=spiffe_id, model_id=model_id, created_at=now
            )
        )

    def find_by_attestor(self, spiffe_id: str) -> ModelArtifact | None:
        row = self._c.execute(
            select(t.models)
            .join(t.model_attestors, t.model_attestors.c.model_id == t.models.c.id)
            .where(t.model_attestors.c.spiffe_id == spiffe_id)
        ).first()
        return self._row(row) if row else None

    def attestors_of(self, model_id: str) -> builtins.list[str]:
        rows = self._c.execute(
            select(t.model_attestors.c.spiffe_id)
            .where(t.model_attestors.c.model_id == model_id)
            .order_by(t.model_attestors.c.spiffe_id)
        )
        return [r.spiffe_id for r in rows]

    def set_status(self, model_id: str, status: ModelStatus, now: datetime) -> None:
        self._c.execute(
            update(t.models)
            .where(t.models.c.id == model_id)
            .values(status=status.value, updated_at=now)
        )

    @staticmethod
    def _row(r: Row[Any]) -> ModelArtifact:
        return ModelArtifact(
            r.id,
            r.operator_id,
            r.name,
            r.version,
            r.digest,
            r.signature,
            ModelStatus(r.status),
            _req_dt(r.created_at),
            _req_dt(r.updated_at),
        )


class SqlCredentialRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def add(self, cred: Credential) -> None:
        self._c.execute(
            t.credentials.insert().values(
                id=cred.id,
                owner_kind=cred.owner_kind,
                owner_id=cred.owner_id,
                kind=cred.kind.value,
                status=cred.status.value,
                public_jwk=json.dumps(cred.public_jwk) if cred.public_jwk is not None else None,
                jkt=cred.jkt,
                spiffe_id=cred.spiffe_id,
                secret_hash=cred.secret_hash,
                created_at=cred.created_at,
                expires_at=cred.expires_at,
                last_used_at=cred.last_used_at,
            )
        )

    def get(self, cred_id: str) -> Credential | None:
        row = self._c.execute(select(t.credentials).where(t.credentials.c.id == cred_id)).first()
        return self._row(row) if row else None

    def list_for(self, owner_kind: str, owner_id: str) -> list[Credential]:
        q = (
            select(t.credentials)
            .where(t.credentials.c.owner_kind == owner_kind, t.credentials.c.owner_id == owner_id)
            .order_by(t.credentials.c.created_at, t.credentials.c.id)
        )
        return [self._row(r) for r in self._c.execute(q)]

    def find_by_spiffe_id(self, spiffe_id: str) -> list[Credential]:
        rows = self._c.execute(select(t.credentials).where(t.credentials.c.spiffe_id == spiffe_id))
        return [self._row(r) for r in rows]

    def find_by_secret_hash(self, secret_hash: str) -> Credential | None:
        row = self._c.execute(
            select(t.credentials).where(t.credentials.c.secret_hash == secret_hash)
        ).first()
        return self._row(row) if row else None

    def disable_all_for(self, owner_kind: str, owner_id: str, now: datetime) -> list[str]:
        ids = [
            r.id
            for r in self._c.execute(
                select(t.credentials.c.id).where(
                    t.credentials.c.owner_kind == owner_kind,
                    t.credentials.c.owner_id == owner_id,
                    t.credentials.c.status == CredentialStatus.ACTIVE.value,
                )
            )
        ]
        if ids:
            self._c.execute(
                update(t.credentials)
                .where(t.credentials.c.id.in_(ids))
                .values(status=CredentialStatus.DISABLED.value)
            )
        return sorted(ids)

    def disable(self, cred_id: str, now: datetime) -> None:
        self._c.execute(
            update(t.credentials)
            .where(t.credentials.c.id == cred_id)
            .values(status=CredentialStatus.DISABLED.value)
        )

    def touch(self, cred_id: str, now: datetime) -> None:
        self._c.execute(
            update(t.credentials).where(t.credentials.c.id == cred_id).values(last_used_at=now)
        )

    @staticmethod
    def _row(r: Row[Any]) -> Credential:
        return Credential(
            r.id,
            r.owner_kind,
            r.owner_id,
            CredentialKind(r.kind),
            CredentialStatus(r.status),
            _req_dt(r.created_at),
            _dt(r.expires_at),
            _dt(r.last_used_at),
            public_jwk=json.loads(r.public_jwk) if r.public_jwk else None,
            jkt=r.jkt,
            spiffe_id=r.spiffe_id,
            secret_hash=r.secret_hash,
        )
