"""SQL repository of the PDP's directory (implements ``tessera.pdp.directory.DirectoryRepo``
on one connection, SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tessera.clock import utc
from tessera.pdp.directory import DirectoryEntry, Key, frozen_attributes
from tessera.store import tables_directory

_D = tables_directory.directory_entries
_KEY = (_D.c.etype, _D.c.eid)
_CHUNK = 500


def _entry(row: Row[Any]) -> DirectoryEntry:
    return DirectoryEntry(
        row.etype, row.eid, frozen_attributes(row.attributes), utc(row.updated_at), row.updated_by
    )


class SqlDirectoryRepo:
    def __init__(self, conn: Connection) -> None:
        self._c = conn

    def get(self, etype: str, eid: str) -> DirectoryEntry | None:
        row = self._c.execute(select(_D).where(_D.c.etype == etype, _D.c.eid == eid)).first()
        return None if row is None else _entry(row)

    def get_many(self, keys: Sequence[Key]) -> list[DirectoryEntry]:
        out: list[DirectoryEntry] = []
        for start in range(0, len(keys), _CHUNK):
            chunk = list(keys[start : start + _CHUNK])
            out += [_entry(r) for r in self._c.execute(select(_D).where(tuple_(*_KEY).in_(chunk)))]
        return out

    def upsert(self, entries: Sequence[tuple[str, str, str]], now: datetime, actor: str) -> None:
        insert = sqlite_insert if self._c.dialect.name == "sqlite" else pg_insert
        for start in range(0, len(entries), _CHUNK):
            rows = [
                {"etype": t, "eid": i, "attributes": a, "updated_at": now, "updated_by": actor}
                for t, i, a in entries[start : start + _CHUNK]
            ]
            stmt = insert(_D)
            stmt = stmt.on_conflict_do_update(
                index_elements=[_D.c.etype, _D.c.eid],
                set_={
                    "attributes": stmt.excluded.attributes,
                    "updated_at": stmt.excluded.updated_at,
                    "updated_by": stmt.excluded.updated_by,
                },
            )
            self._c.execute(stmt, rows)

    def delete(self, keys: Sequence[Key]) -> list[Key]:
        existed: set[Key] = set()
        for start in range(0, len(keys), _CHUNK):
            chunk = list(keys[start : start + _CHUNK])
            rows = self._c.execute(select(*_KEY).where(tuple_(*_KEY).in_(chunk)))
            existed.update((r.etype, r.eid) for r in rows)
            self._c.execute(delete(_D).where(tuple_(*_KEY).in_(chunk)))
        return [k for k in keys if k in existed]

    def all_keys(self) -> list[Key]:
        return [(r.etype, r.eid) for r in self._c.execute(select(*_KEY).order_by(*_KEY))]

    def page(self, etype: str | None, after: Key | None, limit: int) -> list[DirectoryEntry]:
        q = select(_D)
        if etype is not None:
            q = q.where(_D.c.etype == etype)
        if after is not None:
            q = q.where(tuple_(*_KEY) > tuple_(*after))
        return [_entry(r) for r in self._c.execute(q.order_by(*_KEY).limit(limit))]

    def scan(self, batch: int = 5000) -> Iterator[DirectoryEntry]:
        after: Key | None = None
        while True:
            q = select(_D).order_by(*_KEY).limit(batch)
            if after is not None:
                q = q.where(tuple_(*_KEY) > tuple_(*after))
            rows = [_entry(r) for r in self._c.execute(q)]
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].key
