"""One way for tests to drive the ``tessera`` CLI in-process (typer's runner) against a fresh
SQLite data directory. Each CLI test module asks for it with the environment it needs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import pytest
from typer.testing import CliRunner

from tessera.cli.main import _register_extra_commands, app


class Run(Protocol):
    def __call__(self, *args: str, code: int = 0, answer: str | None = None) -> str: ...


def cli_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    env: Mapping[str, str] | None = None,
    unset: tuple[str, ...] = (),
    stdout_codes: tuple[int, ...] = (0, 1),
) -> Run:
    """``run(*args, code=0, answer=None)`` invokes the CLI, checks the exit code and returns
    stdout (for exit codes in ``stdout_codes``) or stderr. ``answer`` is typed at prompts."""
    _register_extra_commands()
    monkeypatch.setenv("TESSERA_DATA_DIR", str(tmp_path / "data"))
    for name in ("TESSERA_DATABASE_URL", "TESSERA_KEK", *unset):
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0, answer: str | None = None) -> str:
        result = runner.invoke(app, list(args), input=answer)
        assert result.exit_code == code, (args, result.output, result.stderr)
        return result.stdout if code in stdout_codes else result.stderr

    return invoke
