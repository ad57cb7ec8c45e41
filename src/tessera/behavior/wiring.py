"""Wiring of the behaviour engine from configuration (called by ``app.py`` only)."""

from __future__ import annotations

from typing import Any

from tessera.behavior.engine import BehaviourSettings
from tessera.behavior.pdp import PipelineBehaviour
from tessera.behavior.ports import SessionRevoker
from tessera.behavior.service import BehaviourService
from tessera.clock import Clock
from tessera.config import Config
from tessera.store.sql_behavior import SqlBehaviourRepo


def settings_from(config: Config) -> BehaviourSettings:
    return BehaviourSettings(
        warmup_calls=config.behaviour_warmup_calls,
        window=config.behaviour_window,
        drift_threshold=config.behaviour_drift_threshold,
    )


def build_behaviour(
    config: Config, store: Any, clock: Clock, revoker: SessionRevoker
) -> tuple[BehaviourService | None, PipelineBehaviour | None]:
    """The service (persistence, CLI reads) and the PDP adapter; (None, None) when
    ``TESSERA_BEHAVIOUR=off`` (the PDP then scores every request 0)."""
    if not config.behaviour_enabled:
        return None, None
    # stored baselines load on first use (first decision, flush or CLI read), not here
    service = BehaviourService(store, clock, SqlBehaviourRepo, settings_from(config), revoker)
    scorer = PipelineBehaviour(
        service,
        clock,
        deadline_ms=config.behaviour_deadline_ms,
        revoke_on_high=config.behaviour_revoke_on_high,
    )
    return service, scorer
