"""Behaviour settings from the environment, and the engine switched off."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.app import build, initialise
from tessera.behavior.pdp import PipelineBehaviour
from tessera.behavior.wiring import settings_from
from tessera.config import load_config
from tessera.errors import ConfigError
from tessera.pdp.ports import NeutralBehaviour


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"TESSERA_DATA_DIR": str(tmp_path / "data"), "TESSERA_KEK": "a" * 64, **extra}


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    config = load_config(
        _env(
            tmp_path,
            TESSERA_BEHAVIOUR_DEADLINE_MS="0.5",
            TESSERA_BEHAVIOUR_WARMUP_CALLS="50",
            TESSERA_BEHAVIOUR_WINDOW="200",
            TESSERA_BEHAVIOUR_DRIFT_THRESHOLD="0.25",
            TESSERA_BEHAVIOUR_REVOKE_ON_HIGH="false",
        )
    )
    s = settings_from(config)
    assert (s.warmup_calls, s.window, s.drift_threshold) == (50, 200, 0.25)
    assert config.behaviour_deadline_ms == 0.5
    assert config.behaviour_revoke_on_high is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TESSERA_BEHAVIOUR_DRIFT_THRESHOLD", "nan"),
        ("TESSERA_BEHAVIOUR_DRIFT_THRESHOLD", "-1"),
        ("TESSERA_BEHAVIOUR_DEADLINE_MS", "fast"),
        ("TESSERA_BEHAVIOUR_WINDOW", "10"),
        ("TESSERA_BEHAVIOUR", "maybe"),
    ],
)
def test_bad_settings_name_the_variable(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config(_env(tmp_path, **{name: value}))


def test_the_engine_can_be_switched_off(tmp_path: Path) -> None:
    on = load_config(_env(tmp_path))
    initialise(on)
    t = build(on)
    assert isinstance(t.pdp.point.behaviour, PipelineBehaviour)
    assert t.pdp.point.observer is t.pdp.point.behaviour
    t.close()
    off = build(load_config(_env(tmp_path, TESSERA_BEHAVIOUR="off")))
    assert off.behaviour is None
    assert isinstance(off.pdp.point.behaviour, NeutralBehaviour)
    assert off.pdp.point.observer is None
    off.close()
