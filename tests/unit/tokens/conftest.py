"""Fixtures for the token rule tests."""

from __future__ import annotations

import pytest
from tests.unit.tokens.tokens_helpers import DIGEST, ceiling, request, root_claims

from tessera.tokens.claims import SessionClaims
from tessera.tokens.grant import compute_session_grant


@pytest.fixture
def parent_claims() -> SessionClaims:
    cap = ceiling(
        tools=["fs/*", "web/search", "mail/send"],
        data_scopes=["doc:*", "crm:7"],
        budgets={"tool_calls": 100, "external_calls": 10},
        may_delegate_to=["agt_child"],
        max_session_lifetime=3600,
    )
    grant = compute_session_grant(
        request(
            tools=["fs/*", "web/search", "mail/send"],
            deny=["fs/delete"],
            data_scope=["doc:*", "crm:7"],
            audience=["svc-a", "svc-b"],
            lifetime=3600,
        ),
        cap,
        None,
        model_digest=DIGEST,
    )
    return root_claims(grant)
