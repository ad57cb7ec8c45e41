from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from tests.conftest import make_config

from tessera.app import build, initialise
from tessera.clock import ManualClock
from tessera.http.asgi import create_app
from tessera.http.ratelimit import TokenBucket
from tessera.store.engine import make_engine


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.take("a", 0.0) for _ in range(3)] == [0, 0, 0]
    assert bucket.take("a", 0.0) == pytest.approx(0.5)
    assert bucket.take("b", 0.0) == 0  # buckets are per key
    assert bucket.take("a", 1.0) == 0  # one second later: two more tokens


@pytest.fixture
def limited(tmp_path: Path, clock: ManualClock) -> Iterator[TestClient]:
    config = make_config(tmp_path, TESSERA_RATE_LIMIT="2")
    engine: Engine = make_engine(config.database_url)
    initialise(config, clock=clock, engine=engine)
    with TestClient(create_app(build(config, clock=clock, engine=engine))) as c:
        yield c
    engine.dispose()


def test_token_endpoint_answers_429_with_retry_after(limited: TestClient) -> None:
    codes = [limited.post("/oauth/token", data={"grant_type": "x"}).status_code for _ in range(8)]
    assert codes[:4] == [400, 400, 400, 400]  # burst of 2 x rate
    assert 429 in codes
    r = limited.post("/oauth/token", data={"grant_type": "x"})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"] == "temporarily_unavailable"
    assert limited.get("/healthz").status_code == 200  # other paths are not limited
