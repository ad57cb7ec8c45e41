"""The gateway configuration file: the example parses; every mistake is one clear line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tessera.errors import ConfigError
from tessera.gateway.config import load_gateway_config, parse_gateway_config

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "gateway" / "gateway.yaml"
P = Path("gw.yaml")


def _cfg(**upstream: Any) -> dict[str, Any]:
    return {"service": "gw", "upstreams": {"tools": {"url": "http://127.0.0.1:1/mcp", **upstream}}}


def test_the_example_parses() -> None:
    cfg = load_gateway_config(EXAMPLE)
    up = cfg.upstreams["tools"]
    assert cfg.service == "mcp-gateway"
    assert up.credential.mode == "exchange"
    assert up.credential.audience == "https://tools.internal.example"
    assert up.tool("fetch_url").untrusted_input
    assert up.tool("send_email").egress
    assert up.tool("send_email").sensitive
    assert up.tool("read_file").resource_type == "file"
    assert up.tool("read_file").resource_id_argument == "path"
    assert up.tool("unknown") == up.tool("other")  # unmarked tools have no marks


def test_static_secrets_come_from_env_or_file_and_never_show(tmp_path: Path) -> None:
    cfg = parse_gateway_config(
        _cfg(credential={"mode": "static", "env": "UP_TOKEN"}), P, {"UP_TOKEN": "s3cr3t"}
    )
    cred = cfg.upstreams["tools"].credential
    assert cred.secret == "s3cr3t"
    assert "s3cr3t" not in repr(cred)
    assert "s3cr3t" not in repr(cfg)
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    cfg = parse_gateway_config(
        _cfg(credential={"mode": "static", "file": str(secret), "header": "X-Api-Key"}), P, {}
    )
    assert cfg.upstreams["tools"].credential.secret == "from-file"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a mapping"),
        ({"upstreams": {}}, "service"),
        ({"service": "gw", "upstreams": {}}, "upstreams must map"),
        ({"service": "gw", "extra": 1, "upstreams": {}}, "unknown keys"),
        ({"service": "gw", "upstreams": {"Bad Name": {"url": "http://x"}}}, "not a server name"),
        (_cfg(url="ftp://x"), "url must be an http(s) URL"),
        (_cfg(timeout=0), "timeout"),
        (_cfg(credential={"mode": "magic"}), "credential.mode"),
        (_cfg(credential={"mode": "exchange"}), "audience is required"),
        (_cfg(credential={"mode": "static", "env": "MISSING"}), "MISSING is unset"),
        (_cfg(credential={"mode": "static"}), "needs env or file"),
        (_cfg(tools={"t": {"egress": "yes"}}), "must be true or false"),
        (_cfg(tools={"t": {"colour": "red"}}), "unknown keys"),
        (_cfg(tools={"bad name!": {}}), "not a tool name"),
        ({**_cfg(), "approval_wait": -1}, "approval_wait"),
    ],
)
def test_mistakes_are_one_line_errors(data: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_gateway_config(data, P, {})
    assert message in info.value.message
    assert info.value.message.startswith("TESSERA_GATEWAY_CONFIG: gw.yaml: ")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_gateway_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("service: [unclosed")
    with pytest.raises(ConfigError, match="not YAML/JSON"):
        load_gateway_config(bad)
