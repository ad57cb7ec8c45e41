"""Identity registry: agent registrations and lookups per second on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
import statistics
import tempfile
import time
from pathlib import Path

from harness import Row, percentile
from sqlalchemy import create_engine, text

from tessera.clock import SystemClock
from tessera.crypto.keys import generate_signing_key
from tessera.identity.service import IdentityService
from tessera.store.engine import make_engine, migrate
from tessera.store.sql_store import SqlStore

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _measure(backend: str, engine_url: str, schema: str | None, n: int) -> list[Row]:
    engine = make_engine(engine_url, schema=schema)
    migrate(engine)
    ident = IdentityService(SqlStore(engine, SystemClock()), SystemClock())
    ident.create_operator("bench", None, actor="bench")
    ident.create_user("owner", actor="bench")
    jwks = [generate_signing_key().public_jwk() for _ in range(n)]
    lat: list[float] = []
    t0 = time.perf_counter()
    for i in range(n):
        s = time.perf_counter_ns()
        ident.register_agent(
            f"a{i}",
            operator="bench",
            owner="owner",
            purpose="bench",
            expires_in_days=30,
            jwk=jwks[i],
            actor="bench",
        )
        lat.append((time.perf_counter_ns() - s) / 1000)
    reg_rate = n / (time.perf_counter() - t0)
    look: list[float] = []
    t0 = time.perf_counter()
    for i in range(n * 4):
        s = time.perf_counter_ns()
        ident.get_agent(f"a{i % n}")
        look.append((time.perf_counter_ns() - s) / 1000)
    look_rate = n * 4 / (time.perf_counter() - t0)
    engine.dispose()
    return [
        Row(
            f"agent registration ({backend})",
            "µs/op",
            statistics.median(lat),
            percentile(lat, 99),
            n,
            f"{reg_rate:,.0f}/s, one writer, each its own commit",
        ),
        Row(
            f"agent lookup by name ({backend})",
            "µs/op",
            statistics.median(look),
            percentile(look, 99),
            n * 4,
            f"{look_rate:,.0f}/s",
        ),
    ]


def run(quick: bool) -> list[Row]:
    n = 200 if quick else 2000
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += _measure("sqlite", f"sqlite:///{Path(tmp) / 'b.db'}", None, n)
    schema = "bench_" + secrets.token_hex(4)
    try:
        admin = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # PostgreSQL not running: report, don't fail
        rows.append(Row("postgresql", "-", float("nan"), None, 0, f"skipped: {exc!s:.60}"))
        return rows
    try:
        rows += _measure("postgresql", PG_URL, schema, n)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    return rows
