"""Schemathesis against /openapi.json in-process: no input may cause a server error.

Fixed seed and a bounded number of cases per operation (a few hundred in all), so the run
is repeatable and fits the CI budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis.checks import not_a_server_error
from tests.conftest import make_config

from tessera.app import build, initialise
from tessera.cli.demo import load_demo
from tessera.clock import SystemClock
from tessera.http.asgi import create_app
from tessera.store.engine import make_engine

_STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp: Path = tmp_path_factory.mktemp("openapi")
    config = make_config(tmp)
    engine = make_engine(config.database_url)
    initialise(config, clock=SystemClock(), engine=engine)
    tessera = build(config, engine=engine)
    load_demo(tessera)
    _, token = tessera.admin_tokens.create("schemathesis", actor="test")
    _STATE["token"] = token
    yield create_app(tessera)
    engine.dispose()


def test_no_input_causes_a_server_error(api: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api)
    headers = {"Authorization": f"Bearer {_STATE['token']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    cases = 0
    for operation in operations:

        @seed(20261123)
        @settings(
            max_examples=12,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            nonlocal cases
            cases += 1
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        try:
            run()
        except Exception as exc:
            raise AssertionError(f"{operation.label}: {exc}") from exc
    assert cases >= 200
