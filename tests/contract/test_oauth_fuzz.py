"""Random input to the OAuth endpoints: always an OAuth error JSON (or success), never a 5xx,
never an echo of what was sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tessera.app import Tessera
from tessera.http.asgi import create_app

KEYS = [
    "grant_type",
    "client_assertion",
    "client_assertion_type",
    "client_id",
    "resource",
    "authorization_details",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "model_attestation",
    "model_digest",
    "token",
    "scope",
    "requested_lifetime",
    "token_type_hint",
]
VALUES = st.one_of(
    st.sampled_from(
        [
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
            "urn:ietf:params:oauth:token-type:jwt",
            "eyJhbGciOiJub25lIn0.e30.",
            "eyJ.eyJ.sig",
            '[{"type":"tessera_session"}]',
            "[]",
            "{}",
            "-1",
            "99999999999",
            "agt_x",
            "svc_x",
            "sha256:" + "0" * 64,
        ]
    ),
    st.text(max_size=60),
)


@pytest.fixture
def http(sqlite_tessera: Tessera) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_tessera), raise_server_exceptions=False) as c:
        yield c


@seed(7)
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    path=st.sampled_from(["/oauth/token", "/oauth/introspect", "/oauth/revoke"]),
    form=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8),
    dpop=st.one_of(st.none(), VALUES),
    auth=st.one_of(st.none(), st.sampled_from(["Basic !!!", "Basic YTpi", "Bearer x"])),
)
def test_oauth_endpoints_never_fail_with_a_server_error(
    http: TestClient, path: str, form: dict[str, str], dpop: str | None, auth: str | None
) -> None:
    headers = {}
    if dpop is not None and dpop.isprintable() and dpop.isascii():
        headers["DPoP"] = dpop
    if auth is not None:
        headers["Authorization"] = auth
    r = http.post(path, data=form, headers=headers)
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        body = r.json()
        assert set(body) <= {"error", "error_description"}
        for value in form.values():
            if len(value) > 12:
                assert value not in r.text
