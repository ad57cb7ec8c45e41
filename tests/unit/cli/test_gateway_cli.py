"""``tessera gateway``: configuration mistakes are one line and exit 2, before serving."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli_harness import Run, cli_run

from tessera.cli.main import _register_extra_commands

_register_extra_commands()
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "gateway" / "gateway.yaml"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    run = cli_run(tmp_path, monkeypatch, unset=("TESSERA_GATEWAY_CONFIG",))
    return run


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
