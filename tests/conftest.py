"""Shared fixtures: clocks, real SQLite and PostgreSQL stores (one schema per test on
PostgreSQL so runs never collide), and a wired Tessera instance."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from tessera.app import Tessera, build, initialise
from tessera.clock import ManualClock
from tessera.config import Config, load_config
from tessera.store.engine import make_engine, migrate
from tessera.store.sql_store import SqlStore

PG_URL = os.environ.get("TESSERA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("TESSERA_REQUIRE_SERVICES", "") in {"1", "true", "yes"}
CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"

_pg_checked: tuple[bool, str] | None = None


def postgres_available() -> tuple[bool, str]:
    global _pg_checked
    if _pg_checked is None:
        try:
            eng = create_engine(PG_URL, connect_args={"connect_timeout": 3})
            with eng.connect() as conn:
                conn.execute(text("SELECT 1"))
            eng.dispose()
            _pg_checked = (True, "")
        except Exception as exc:  # any failure means "not reachable here"
            _pg_checked = (False, f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}")
    return _pg_checked


def require_postgres() -> None:
    ok, why = postgres_available()
    if not ok:
        if REQUIRE_SERVICES:
            pytest.fail(f"TESSERA_REQUIRE_SERVICES=1 but {why}")
        pytest.skip(why)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tessera.db'}"


@pytest.fixture
def pg_schema_url() -> Iterator[tuple[str, str]]:
    """A fresh PostgreSQL schema for one test; dropped afterwards."""
    require_postgres()
    schema = "t_" + secrets.token_hex(6)
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield PG_URL, schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _engine_for(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'tessera.db'}")
    else:
        url, schema = request.getfixturevalue("pg_schema_url")
        engine = make_engine(url, schema=schema)
    migrate(engine)
    return engine


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated engine on each backend (the contract suite runs on both)."""
    eng = _engine_for(request.param, request, tmp_path)
    yield eng
    eng.dispose()


@pytest.fixture
def store(engine: Engine, clock: ManualClock) -> SqlStore:
    return SqlStore(engine, clock)


def make_config(tmp_path: Path, **extra: str) -> Config:
    env = {"TESSERA_DATA_DIR": str(tmp_path / "data"), "TESSERA_KEK": "a" * 64, **extra}
    return load_config(env)


@pytest.fixture
def tessera(engine: Engine, clock: ManualClock, tmp_path: Path) -> Iterator[Tessera]:
    """A fully initialised Tessera on each backend."""
    config = make_config(tmp_path)
    initialise(config, clock=clock, engine=engine)
    t = build(config, clock=clock, engine=engine)
    yield t
    t.close()  # before the engine fixture drops its schema: no flusher outlives it


@pytest.fixture
def sqlite_tessera(tmp_path: Path, clock: ManualClock) -> Iterator[Tessera]:
    config = make_config(tmp_path)
    eng = make_engine(config.database_url)
    initialise(config, clock=clock, engine=eng)
    t = build(config, clock=clock, engine=eng)
    yield t
    t.close()  # also disposes the engine
