"""The audit CLI run in-process against a fresh data directory (SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tessera.cli.audit import app as cli_app


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TESSERA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TESSERA_DATABASE_URL", raising=False)
    monkeypatch.delenv("TESSERA_KEK", raising=False)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(cli_app, list(args))
        assert result.exit_code == code, (args, result.output, result.stderr)
        return result.stdout

    return invoke
