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
from tessera.pdp.agents import Caller
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


def test_the_authzen_front_door_applies_the_same_limits(limited: TestClient) -> None:
    """AuthZEN POSTs are answered before the middleware stack (decisions.md 93): the
    front door itself applies the rate limit, the body limit and the request id."""
    url = "/access/v1/evaluation"
    codes = [limited.post(url, json={}).status_code for _ in range(8)]
    assert codes[:4] == [401, 401, 401, 401]  # no caller credential; burst of 2 x rate
    r = limited.post(url, json={}, headers={"X-Request-ID": "pep-7"})
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["cache-control"] == "no-store"
    assert r.json() == {
        "error": "temporarily_unavailable",
        "error_description": "rate limit exceeded",
    }
    assert r.headers["x-request-id"] == "pep-7"
    # another path has its own bucket, as with the RateLimit middleware
    assert limited.post("/access/v1/evaluations", json={}).status_code == 401


def test_the_front_door_refuses_large_bodies_and_hides_unexpected_errors(
    tmp_path: Path, clock: ManualClock
) -> None:
    config = make_config(tmp_path, TESSERA_MAX_REQUEST_BYTES="2048")
    engine: Engine = make_engine(config.database_url)
    initialise(config, clock=clock, engine=engine)
    app = create_app(build(config, clock=clock, engine=engine))
    with TestClient(app, raise_server_exceptions=False) as c:
        url = "/access/v1/evaluation"
        r = c.post(url, content=b"x" * 4096)  # by Content-Length, before anything else
        assert r.status_code == 413
        assert r.json()["code"] == "payload_too_large"
        assert r.headers["content-type"] == "application/problem+json"
        assert len(r.headers["x-request-id"]) == 16

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b"x" * 1500
            yield b"x" * 1500

        callers = app.front.tessera.pdp.callers
        callers.cached = lambda *_: Caller("svc_1", "gw", "token")  # the body is read after
        r = c.post(url, content=chunks())
        assert r.status_code == 413
        assert "2048 bytes" in r.json()["detail"]

        def broken(*_: object) -> None:
            raise RuntimeError("secret internals")

        callers.cached = broken
        r = c.post(url, json={}, headers={"Authorization": "Bearer x", "X-Request-ID": "r-1"})
        assert r.status_code == 500
        assert r.json()["code"] == "internal_error"
        assert "secret" not in r.text
        assert r.headers["x-request-id"] == "r-1"
    engine.dispose()
