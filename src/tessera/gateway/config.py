"""The gateway configuration file (YAML or JSON; ``TESSERA_GATEWAY_CONFIG``).

::

    service: gateway              # the registered service the gateway acts as (id or name)
    approval_wait: 0              # seconds a tools/call waits for approval (0: answer now)
    upstreams:
      files:                      # served at /mcp/files
        url: http://127.0.0.1:9000/mcp
        timeout: 30
        credential:               # how the gateway authenticates to the upstream
          mode: exchange          # exchange | static | none
          audience: https://files.internal      # exchange: the upstream's audience
          # mode: static, env: FILES_TOKEN  (or file: /run/secrets/files)  [, header: X-Api-Key]
        resource: {type: mcp_server}            # default AuthZEN resource (id = server name)
        tools:
          read_file: {resource: {type: file, id_argument: path}}
          fetch_url: {untrusted_input: true}    # reading it taints the session
          send_email: {egress: true, sensitive: true}

Static secrets are read from the environment or a file at start, never from the
configuration file itself, and never logged (their ``repr`` is redacted).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from tessera.errors import ConfigError

_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_TOOL: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_HEADER: Final = re.compile(r"^[A-Za-z0-9-]{1,64}$")
MODES: Final = ("exchange", "static", "none")


@dataclass(frozen=True)
class ToolSpec:
    """Marks of one upstream tool (DESIGN 5) and how its AuthZEN resource is built."""

    untrusted_input: bool = False
    egress: bool = False
    sensitive: bool = False
    resource_type: str | None = None
    resource_id_argument: str | None = None


@dataclass(frozen=True)
class UpstreamCredential:
    mode: str
    audience: str | None = None
    header: str = "Authorization"
    secret: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never show a secret, even in a traceback
        return f"UpstreamCredential(mode={self.mode!r}, audience={self.audience!r})"


@dataclass(frozen=True)
class Upstream:
    name: str
    url: str
    credential: UpstreamCredential
    tools: Mapping[str, ToolSpec]
    resource_type: str = "mcp_server"
    timeout: float = 30.0

    def tool(self, name: str) -> ToolSpec:
        return self.tools.get(name) or ToolSpec()


@dataclass(frozen=True)
class GatewayConfig:
    service: str
    upstreams: Mapping[str, Upstream]
    approval_wait: float = 0.0


def _fail(path: Path, what: str) -> ConfigError:
    return ConfigError(f"TESSERA_GATEWAY_CONFIG: {path.name}: {what}")


def _bool(raw: Mapping[str, Any], key: str, path: Path, where: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise _fail(path, f"{where}.{key} must be true or false")
    return value


def _credential(raw: Any, path: Path, where: str, env: Mapping[str, str]) -> UpstreamCredential:
    if raw is None:
        return UpstreamCredential("none")
    if not isinstance(raw, dict):
        raise _fail(path, f"{where}.credential must be a mapping")
    mode = raw.get("mode", "none")
    if mode not in MODES:
        raise _fail(path, f"{where}.credential.mode must be one of {', '.join(MODES)}")
    header = raw.get("header", "Authorization")
    if not isinstance(header, str) or not _HEADER.fullmatch(header):
        raise _fail(path, f"{where}.credential.header must be an HTTP header name")
    if mode == "exchange":
        audience = raw.get("audience")
        if not isinstance(audience, str) or not audience:
            raise _fail(path, f"{where}.credential.audience is required for mode exchange")
        return UpstreamCredential("exchange", audience=audience, header=header)
    if mode == "static":
        secret: str | None = None
        if isinstance(raw.get("env"), str):
            secret = env.get(raw["env"])
            if not secret:
                raise _fail(path, f"{where}.credential: environment variable {raw['env']} is unset")
        elif isinstance(raw.get("file"), str):
            try:
                secret = Path(raw["file"]).expanduser().read_text().strip()
            except OSError:
                raise _fail(path, f"{where}.credential: cannot read the secret file") from None
        if not secret:
            raise _fail(path, f"{where}.credential: static mode needs env or file")
        if "value" in raw or "secret" in raw:
            raise _fail(path, f"{where}.credential: put secrets in env or file, not here")
        return UpstreamCredential("static", header=header, secret=secret)
    return UpstreamCredential("none")


def _tools(raw: Any, path: Path, where: str) -> dict[str, ToolSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(path, f"{where}.tools must be a mapping")
    out: dict[str, ToolSpec] = {}
    for name, marks in raw.items():
        if not isinstance(name, str) or not _TOOL.fullmatch(name):
            raise _fail(path, f"{where}.tools: {name!r} is not a tool name")
        m = marks if isinstance(marks, dict) else {}
        if marks is not None and not isinstance(marks, dict):
            raise _fail(path, f"{where}.tools.{name} must be a mapping")
        unknown = set(m) - {"untrusted_input", "egress", "sensitive", "resource"}
        if unknown:
            raise _fail(path, f"{where}.tools.{name}: unknown keys {sorted(unknown)}")
        res = m.get("resource") or {}
        if not isinstance(res, dict) or not all(
            isinstance(res.get(k, ""), str) for k in ("type", "id_argument")
        ):
            raise _fail(path, f"{where}.tools.{name}.resource: {{type, id_argument}} strings")
        out[name] = ToolSpec(
            untrusted_input=_bool(m, "untrusted_input", path, f"{where}.tools.{name}"),
            egress=_bool(m, "egress", path, f"{where}.tools.{name}"),
            sensitive=_bool(m, "sensitive", path, f"{where}.tools.{name}"),
            resource_type=res.get("type") or None,
            resource_id_argument=res.get("id_argument") or None,
        )
    return out


def parse_gateway_config(
    data: Any, path: Path, env: Mapping[str, str] | None = None
) -> GatewayConfig:
    env = os.environ if env is None else env
    if not isinstance(data, dict):
        raise _fail(path, "must be a mapping")
    unknown = set(data) - {"service", "upstreams", "approval_wait"}
    if unknown:
        raise _fail(path, f"unknown keys {sorted(unknown)}")
    service = data.get("service")
    if not isinstance(service, str) or not service:
        raise _fail(path, "service (the registered service the gateway acts as) is required")
    wait = data.get("approval_wait", 0)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 600:
        raise _fail(path, "approval_wait must be seconds from 0 to 600")
    raw_ups = data.get("upstreams")
    if not isinstance(raw_ups, dict) or not raw_ups:
        raise _fail(path, "upstreams must map server names to {url, ...}")
    upstreams: dict[str, Upstream] = {}
    for name, raw in raw_ups.items():
        where = f"upstreams.{name}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise _fail(path, f"{name!r} is not a server name (lower-case slug)")
        if not isinstance(raw, dict):
            raise _fail(path, f"{where} must be a mapping")
        unknown = set(raw) - {"url", "credential", "tools", "resource", "timeout"}
        if unknown:
            raise _fail(path, f"{where}: unknown keys {sorted(unknown)}")
        url = raw.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise _fail(path, f"{where}.url must be an http(s) URL")
        timeout = raw.get("timeout", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise _fail(path, f"{where}.timeout must be positive seconds")
        res = raw.get("resource") or {}
        rtype = res.get("type", "mcp_server") if isinstance(res, dict) else None
        if not isinstance(rtype, str) or not rtype:
            raise _fail(path, f"{where}.resource.type must be a string")
        upstreams[name] = Upstream(
            name=name,
            url=str(url),
            credential=_credential(raw.get("credential"), path, where, env),
            tools=_tools(raw.get("tools"), path, where),
            resource_type=rtype,
            timeout=float(timeout),
        )
    return GatewayConfig(service=service, upstreams=upstreams, approval_wait=float(wait))


def load_gateway_config(path: Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the file; every problem is a one-line ``ConfigError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise ConfigError(f"TESSERA_GATEWAY_CONFIG: cannot read {path}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _fail(path, f"not YAML/JSON ({str(exc)[:120]})") from None
    return parse_gateway_config(data, path, env)
