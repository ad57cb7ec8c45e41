"""Composition root: config → store → services → edges. Only this module wires things."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from tessera.clock import Clock, SystemClock
from tessera.config import Config
from tessera.crypto.keyring import KeyRing
from tessera.crypto.keys import new_kek
from tessera.errors import ConfigError
from tessera.identity.admin_tokens import AdminTokens
from tessera.identity.service import IdentityService, IdentitySettings, StoredUserGrants
from tessera.store.engine import make_engine, migrate, schema_is_current
from tessera.store.sql_store import SqlStore

ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a name, not a secret


@dataclass
class Tessera:
    config: Config
    clock: Clock
    store: SqlStore
    identity: IdentityService
    keyring: KeyRing
    admin_tokens: AdminTokens
    user_rights: StoredUserGrants

    def close(self) -> None:
        self.store.engine.dispose()


def build(
    config: Config,
    *,
    clock: Clock | None = None,
    engine: Engine | None = None,
    check_schema: bool = True,
) -> Tessera:
    """Wire a Tessera instance. The schema must have been created by ``tessera init``."""
    clock = clock or SystemClock()
    engine = engine or make_engine(config.database_url)
    if check_schema and not schema_is_current(engine):
        raise ConfigError(
            "TESSERA_DATABASE_URL: the database is not initialised or not "
            "migrated; run `tessera init`"
        )
    store = SqlStore(engine, clock)
    identity = IdentityService(store, clock, IdentitySettings(config.agent_max_lifetime_days))
    return Tessera(
        config=config,
        clock=clock,
        store=store,
        identity=identity,
        keyring=KeyRing(store, clock, config.load_kek()),
        admin_tokens=AdminTokens(store, clock),
        user_rights=StoredUserGrants(store),
    )


@dataclass(frozen=True)
class InitResult:
    created_kek: bool
    kid: str
    admin_token: str | None  # shown once; None when the store already had one
    admin_token_file: Path | None


def _write_private(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    path.chmod(0o600)


def initialise(
    config: Config,
    *,
    clock: Clock | None = None,
    new_admin_token: bool = False,
    engine: Engine | None = None,
) -> InitResult:
    """``tessera init``: data dir, KEK file, schema, first signing key, first admin token.

    Safe to run again: it creates only what is missing."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    created_kek = False
    if config.kek is None and not config.kek_file.exists():
        config.kek_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(config.kek_file, new_kek() + "\n")
        created_kek = True
    engine = engine or make_engine(config.database_url)
    migrate(engine)
    app = build(config, clock=clock, engine=engine)
    kid = app.keyring.ensure_active(config.signing_alg, actor="init")  # type: ignore[arg-type]
    token: str | None = None
    token_file: Path | None = None
    if new_admin_token or not app.admin_tokens.any_exist():
        _, token = app.admin_tokens.create("init", actor="init")
        if config.dev_mode:
            # Development only (make run): a plain copy the demo walkthrough reads.
            token_file = config.data_dir / ADMIN_TOKEN_FILE
            _write_private(token_file, token + "\n")
    return InitResult(created_kek, kid, token, token_file)
