"""``tessera gateway``: configuration mistakes are one line and exit 2, before serving."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tessera.cli.main import _register_extra_commands, app

_register_extra_commands()
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "gateway" / "gateway.yaml"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TESSERA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TESSERA_DATABASE_URL", raising=False)
    monkeypatch.delenv("TESSERA_KEK", raising=False)
    monkeypatch.delenv("TESSERA_GATEWAY_CONFIG", raising=False)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.output, result.stderr)
        return result.stdout if code in (0, 1) else result.stderr

    return invoke


def test_gateway_needs_a_config_and_a_registered_service(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("init")
    assert "--config" in run("gateway", code=2)
    assert "no such file" in run("gateway", "--config", str(tmp_path / "nope.yaml"), code=2)
    err = run("gateway", "--config", str(EXAMPLE), code=2)
    assert "service 'mcp-gateway'" in err
    assert "tessera service register mcp-gateway --scope pdp.evaluate" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("service: gw\nupstreams: {tools: {url: ftp://x}}\n")
    assert "url must be an http(s) URL" in run("gateway", "--config", str(bad), code=2)
