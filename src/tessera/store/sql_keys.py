"""SQL repositories for signing keys and admin tokens."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select, update

from tessera.clock import utc
from tessera.crypto.keyring import KeyRecord
from tessera.identity.admin_tokens import AdminTokenRecord
from tessera.store import tables as t


class SqlSigningKeyRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def add(self, rec: KeyRecord) -> None:
        self._c.execute(
            t.signing_keys.insert().values(
                kid=rec.kid,
                alg=rec.alg,
                sealed=rec.sealed,
                public_jwk=json.dumps(rec.public_jwk),
                status=rec.status,
                created_at=rec.created_at,
                retired_at=rec.retired_at,
                publish_until=rec.publish_until,
            )
        )

    def list(self) -> list[KeyRecord]:
        rows = self._c.execute(select(t.signing_keys).order_by(t.signing_keys.c.created_at))
        return [self._row(r) for r in rows]

    def retire(self, kid: str, now: datetime, publish_until: datetime) -> None:
        self._c.execute(
            update(t.signing_keys)
            .where(t.signing_keys.c.kid == kid)
            .values(status="retired", retired_at=now, publish_until=publish_until)
        )

    @staticmethod
    def _row(r: Row[Any]) -> KeyRecord:
        return KeyRecord(
            r.kid,
            r.alg,
            bytes(r.sealed),
            json.loads(r.public_jwk),
            r.status,
            utc(r.created_at),
            utc(r.retired_at) if r.retired_at else None,
            utc(r.publish_until) if r.publish_until else None,
        )


class SqlAdminTokenRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def add(self, rec: AdminTokenRecord) -> None:
        self._c.execute(
            t.admin_tokens.insert().values(
                id=rec.id,
                token_hash=rec.token_hash,
                label=rec.label,
                status=rec.status,
                created_at=rec.created_at,
            )
        )

    def find_by_hash(self, token_hash: str) -> AdminTokenRecord | None:
        row = self._c.execute(
            select(t.admin_tokens).where(t.admin_tokens.c.token_hash == token_hash)
        ).first()
        if row is None:
            return None
        return AdminTokenRecord(row.id, row.token_hash, row.label, row.status, utc(row.created_at))

    def count_active(self) -> int:
        return len(
            self._c.execute(
                select(t.admin_tokens.c.id).where(t.admin_tokens.c.status == "active")
            ).all()
        )
