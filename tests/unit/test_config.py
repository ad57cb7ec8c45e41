from __future__ import annotations

from pathlib import Path

import pytest

from tessera.config import load_config
from tessera.errors import ConfigError


def test_defaults(tmp_path: Path) -> None:
    cfg = load_config({"TESSERA_DATA_DIR": str(tmp_path)})
    assert cfg.database_url == f"sqlite:///{tmp_path / 'tessera.db'}"
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8080)
    assert cfg.issuer == "http://127.0.0.1:8080"
    assert cfg.kek is None
    assert cfg.kek_file == tmp_path / "kek"
    assert cfg.is_sqlite
    assert not cfg.dev_mode


def test_postgres_url_uses_psycopg3() -> None:
    cfg = load_config({"TESSERA_DATABASE_URL": "postgresql://u@db/x"})
    assert cfg.database_url == "postgresql+psycopg://u@db/x"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TESSERA_PORT", "eighty"),
        ("TESSERA_PORT", "70000"),
        ("TESSERA_DATABASE_URL", "mysql://root@localhost/x"),
        ("TESSERA_ISSUER", "ftp://example.com"),
        ("TESSERA_ISSUER", "http://example.com"),
        ("TESSERA_ISSUER", "https://example.com/?q=1"),
        ("TESSERA_KEK", "too-short"),
        ("TESSERA_DEV_MODE", "maybe"),
        ("TESSERA_SIGNING_ALG", "HS256"),
        ("TESSERA_AGENT_MAX_LIFETIME_DAYS", "0"),
    ],
)
def test_invalid_values_name_the_variable_in_one_line(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({name: value})
    assert info.value.message.startswith(name + ":")
    assert "\n" not in info.value.message


def test_kek_from_env_or_file(tmp_path: Path) -> None:
    cfg = load_config({"TESSERA_KEK": "ab" * 32})
    assert cfg.load_kek() == bytes.fromhex("ab" * 32)
    missing = load_config({"TESSERA_DATA_DIR": str(tmp_path)})
    with pytest.raises(ConfigError, match="TESSERA_KEK_FILE"):
        missing.load_kek()
    (tmp_path / "kek").write_text("nonsense")
    with pytest.raises(ConfigError, match="TESSERA_KEK_FILE"):
        missing.load_kek()
