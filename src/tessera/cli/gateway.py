"""``tessera gateway --config FILE``: serve Tessera with the MCP gateway mounted at
``/mcp/<server>`` (the same process as the decision point, so a decision costs no network
hop). ``tessera serve`` does the same when ``TESSERA_GATEWAY_CONFIG`` is set."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from tessera.app import build
from tessera.cli.main import _config, app
from tessera.cli.output import cli_errors, console, fail


@app.command("gateway")
def gateway(
    config_file: Annotated[
        Path | None, typer.Option("--config", help="Gateway configuration (YAML or JSON).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Serve the MCP gateway (and the rest of the HTTP API) from one process."""
    import uvicorn

    from tessera.gateway.wiring import attach_gateway
    from tessera.http.asgi import create_app

    config = _config()
    path = config_file or config.gateway_config_file
    if path is None:
        fail("give --config FILE or set TESSERA_GATEWAY_CONFIG")
    if not path.is_file():
        fail(f"--config: no such file {path}")
    with cli_errors():
        tessera = build(replace(config, gateway_config_file=path.resolve()))
        gw = attach_gateway(tessera)
        asgi = create_app(tessera)
    bind_host, bind_port = host or config.host, port or config.port
    for name in gw.config.upstreams:
        console.print(f"mcp server {name}: {gw.resource_uri(name)}", markup=False)
    console.print(f"serving on http://{bind_host}:{bind_port}", markup=False)
    uvicorn.run(
        asgi, host=bind_host, port=bind_port, log_level="info", http="httptools", access_log=False
    )
