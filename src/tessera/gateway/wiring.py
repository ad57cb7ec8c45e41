"""How the gateway plugs into a wired ``Tessera`` (called from ``app.py`` and the ASGI app;
kept here so the shared composition root only gains two lines)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any, Final

from tessera.errors import ConfigError
from tessera.gateway.authorize import CallGate
from tessera.gateway.config import load_gateway_config
from tessera.gateway.resource import ResourceGuard
from tessera.gateway.service import AgentDpopPolicy, McpGateway, replay_once
from tessera.gateway.transport import SessionBinder
from tessera.store.sql_gateway import SqlBudgetReservations, SqlSessionTaint
from tessera.tokens.upstream import UpstreamTokenExchange

GATEWAY_SCOPE: Final = "pdp.evaluate"


def _head(app: Any) -> Any:
    """What the gateway's caches compare to know the log moved: the node's event tailer's
    position, fresh within the staleness bound (``StaleState`` otherwise: fail closed)."""
    return app.tailer.ensure_fresh


def durable_taint(app: Any) -> SqlSessionTaint:
    """``SessionTaint`` over the store (replaces the node-local ``MemoryTaint``)."""
    return SqlSessionTaint(app.store, _head(app))


def build_gateway(app: Any, path: Path) -> McpGateway:
    """The gateway for the configuration file at ``path``. The service it acts as must be
    registered (``tessera service register NAME --scope pdp.evaluate``) and active."""
    config = load_gateway_config(path)
    with app.store.read() as tx:
        svc = tx.services.get(config.service)
    if svc is None or svc.status.value != "active" or GATEWAY_SCOPE not in svc.scopes:
        raise ConfigError(
            f"TESSERA_GATEWAY_CONFIG: service {config.service!r} is not an active registered "
            f"service with scope {GATEWAY_SCOPE} (tessera service register "
            f"{config.service} --scope {GATEWAY_SCOPE})"
        )
    kek = app.config.load_kek()
    session_key = hmac.new(kek, b"tessera mcp session v1", hashlib.sha256).digest()
    head = _head(app)
    guard = ResourceGuard(
        app.pdp.point.agents,
        now=app.clock.timestamp,
        use_jti_once=replay_once(app.store),
        dpop_required=AgentDpopPolicy(app.store, app.tokens, head),
        nonces=app.tokens.nonces,
    )
    return McpGateway(
        config,
        base_url=app.config.issuer,
        issuer=app.config.issuer,
        service_id=svc.id,
        service_name=svc.name,
        guard=guard,
        gate=CallGate(app.pdp.point, SqlBudgetReservations(app.store)),
        exchange=UpstreamTokenExchange(
            app.config.issuer, app.keyring.active_key, app.clock.timestamp, service_id=svc.id
        ),
        binder=SessionBinder(session_key),
        audit=app.audit,
        approvals=app.approvals,  # tessera.approvals.service.ApprovalService
        # the PDP's own session-liveness cache: one per node, fed by the event tailer
        liveness=app.pdp.point.agents.liveness,
        token_endpoint=app.tokens.token_endpoint,
    )


def attach_gateway(app: Any) -> McpGateway:
    """The app's gateway, built from ``TESSERA_GATEWAY_CONFIG`` on first use."""
    if app.gateway is None:
        if app.config.gateway_config_file is None:
            raise ConfigError("TESSERA_GATEWAY_CONFIG is not set")
        app.gateway = build_gateway(app, app.config.gateway_config_file)
    return app.gateway  # type: ignore[no-any-return]
