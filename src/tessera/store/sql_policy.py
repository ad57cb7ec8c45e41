"""SQL repository of policy bundle versions (implements ``tessera.policy.service.PolicyRepo``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select, update

from tessera.clock import utc
from tessera.policy.service import StoredBundle
from tessera.store import tables as t

_P = t.policy_bundles


def _stored(row: Row[Any]) -> StoredBundle:
    return StoredBundle(
        row.version,
        row.name,
        row.digest,
        json.loads(row.files),
        bool(row.active),
        utc(row.created_at),
        row.actor,
    )


class SqlPolicyRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def add_version(
        self, name: str, digest: str, files: dict[str, str], created_at: datetime, actor: str
    ) -> int:
        """Insert a new version and make it the only active one (same transaction)."""
        self._c.execute(update(_P).where(_P.c.active.is_(True)).values(active=False))
        result = self._c.execute(
            _P.insert().values(
                name=name,
                digest=digest,
                files=json.dumps(files, sort_keys=True),
                active=True,
                created_at=created_at,
                actor=actor,
            )
        )
        key = result.inserted_primary_key
        if key is None:
            raise RuntimeError("no version assigned")
        return int(key[0])

    def activate(self, version: int) -> bool:
        if self._c.execute(select(_P.c.version).where(_P.c.version == version)).first() is None:
            return False
        self._c.execute(update(_P).where(_P.c.active.is_(True)).values(active=False))
        self._c.execute(update(_P).where(_P.c.version == version).values(active=True))
        return True

    def active_version(self) -> int | None:
        return self._c.execute(select(func.max(_P.c.version)).where(_P.c.active.is_(True))).scalar()

    def get(self, version: int) -> StoredBundle | None:
        row = self._c.execute(select(_P).where(_P.c.version == version)).first()
        return None if row is None else _stored(row)

    def list(self, limit: int = 50) -> list[StoredBundle]:
        rows = self._c.execute(select(_P).order_by(_P.c.version.desc()).limit(limit)).all()
        return [_stored(r) for r in rows]
