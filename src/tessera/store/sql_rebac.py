"""SQL repository of the relationship engine: models, tuples and large-batch change records.

Implements ``tessera.rebac.storage.RebacRepo`` on one connection (SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, delete, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tessera.clock import utc
from tessera.rebac.ports import RelationTuple
from tessera.rebac.storage import ChangeOp, StoredModel, TupleFilter
from tessera.store import tables as t

_T = t.rebac_tuples
_KEY = (_T.c.object, _T.c.relation, _T.c.user)
_CHUNK = 500


def _tuple_values(x: RelationTuple) -> dict[str, Any]:
    return {
        "object": x.object,
        "relation": x.relation,
        "user": x.user,
        "condition": x.condition,
        "context": json.dumps(dict(x.context), sort_keys=True) if x.context else None,
        "expires_at": x.expires_at,
    }


def _tuple(row: Row[Any]) -> RelationTuple:
    m = row._mapping
    return RelationTuple(
        m["object"],
        m["relation"],
        m["user"],
        m["condition"],
        json.loads(m["context"]) if m["context"] else None,
        utc(m["expires_at"]) if m["expires_at"] is not None else None,
    )


def _model(row: Row[Any]) -> StoredModel:
    return StoredModel(row.id, row.dsl, json.loads(row.json), utc(row.created_at), row.active)


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SqlRebacRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    # -- models -------------------------------------------------------------------------

    def active_model(self) -> StoredModel | None:
        row = self._c.execute(
            select(t.rebac_models)
            .where(t.rebac_models.c.active.is_(True))
            .order_by(t.rebac_models.c.seq.desc())
            .limit(1)
        ).first()
        return _model(row) if row else None

    def get_model(self, model_id: str) -> StoredModel | None:
        row = self._c.execute(select(t.rebac_models).where(t.rebac_models.c.id == model_id)).first()
        return _model(row) if row else None

    def list_models(self, limit: int) -> list[StoredModel]:
        rows = self._c.execute(
            select(t.rebac_models).order_by(t.rebac_models.c.seq.desc()).limit(limit)
        )
        return [_model(r) for r in rows]

    def add_model(self, model: StoredModel, seq: int) -> None:
        self._c.execute(
            update(t.rebac_models).where(t.rebac_models.c.active.is_(True)).values(active=False)
        )
        self._c.execute(
            t.rebac_models.insert().values(
                id=model.id,
                dsl=model.dsl,
                json=json.dumps(model.json, sort_keys=True),
                active=True,
                created_at=model.created_at,
                seq=seq,
            )
        )

    # -- tuples -------------------------------------------------------------------------

    def upsert(self, tuples: Sequence[RelationTuple], now: datetime) -> None:
        insert = sqlite_insert if self._c.dialect.name == "sqlite" else pg_insert
        for start in range(0, len(tuples), _CHUNK):
            rows = [{**_tuple_values(x), "written_at": now} for x in tuples[start : start + _CHUNK]]
            stmt = insert(_T)
            stmt = stmt.on_conflict_do_update(
                index_elements=[_T.c.object, _T.c.relation, _T.c.user],
                set_={
                    "condition": stmt.excluded.condition,
                    "context": stmt.excluded.context,
                    "expires_at": stmt.excluded.expires_at,
                    "written_at": stmt.excluded.written_at,
                },
            )
            self._c.execute(stmt, rows)

    def delete(self, keys: Sequence[tuple[str, str, str]]) -> list[RelationTuple]:
        found: dict[tuple[str, str, str], RelationTuple] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            rows = self._c.execute(select(_T).where(tuple_(*_KEY).in_(chunk)))
            for row in rows:
                x = _tuple(row)
                found[x.key] = x
            self._c.execute(delete(_T).where(tuple_(*_KEY).in_(chunk)))
        return [found[k] for k in keys if k in found]

    def delete_for_subject(self, subject: str) -> list[RelationTuple]:
        pattern = _like_escape(subject) + "#%"
        rows = self._c.execute(
            select(_T).where(
                or_(
                    _T.c.user == subject,
                    _T.c.object == subject,
                    _T.c.user.like(pattern, escape="\\"),
                )
            )
        )
        # SQLite's LIKE ignores ASCII case: keep exact matches only.
        gone = [
            x
            for x in map(_tuple, rows)
            if subject in (x.user, x.object) or x.user.startswith(subject + "#")
        ]
        keys = [x.key for x in gone]
        for start in range(0, len(keys), _CHUNK):
            self._c.execute(delete(_T).where(tuple_(*_KEY).in_(keys[start : start + _CHUNK])))
        return gone

    def read(
        self, where: TupleFilter, after: tuple[str, str, str] | None, limit: int
    ) -> list[RelationTuple]:
        q = select(_T)
        conds: list[ColumnElement[bool]] = []
        if where.object is not None:
            if where.object.endswith(":"):
                type_prefix = _like_escape(where.object) + "%"
                conds.append(_T.c.object.like(type_prefix, escape="\\"))
            else:
                conds.append(_T.c.object == where.object)
        if where.relation is not None:
            conds.append(_T.c.relation == where.relation)
        if where.user is not None:
            conds.append(_T.c.user == where.user)
        if after is not None:
            conds.append(tuple_(*_KEY) > tuple_(*after))
        if conds:
            q = q.where(and_(*conds))
        rows = self._c.execute(q.order_by(*_KEY).limit(limit))
        out = [_tuple(r) for r in rows]
        if where.object is not None and where.object.endswith(":"):
            out = [x for x in out if x.object.startswith(where.object)]  # LIKE ignores case
        return out

    def scan(self, batch: int = 5000) -> Iterator[RelationTuple]:
        after: tuple[str, str, str] | None = None
        while True:
            q = select(_T).order_by(*_KEY).limit(batch)
            if after is not None:
                q = q.where(tuple_(*_KEY) > tuple_(*after))
            rows = [_tuple(r) for r in self._c.execute(q)]
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].key

    # -- change records -----------------------------------------------------------------

    def add_changes(self, seq: int, changes: Sequence[tuple[ChangeOp, RelationTuple]]) -> None:
        rows = [
            {"seq": seq, "idx": i, "op": op, **_tuple_values(x)}
            for i, (op, x) in enumerate(changes)
        ]
        for start in range(0, len(rows), _CHUNK):
            self._c.execute(t.rebac_changes.insert(), rows[start : start + _CHUNK])

    def changes(self, seq: int) -> list[tuple[ChangeOp, RelationTuple]]:
        rows = self._c.execute(
            select(t.rebac_changes)
            .where(t.rebac_changes.c.seq == seq)
            .order_by(t.rebac_changes.c.idx)
        )
        return [(r.op, _tuple(r)) for r in rows]
