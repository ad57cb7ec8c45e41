"""Shared builders for the token rule tests."""

from __future__ import annotations

from typing import Any

from tessera.identity.ceiling import Ceiling
from tessera.tokens.claims import SessionClaims, build_session_claims, parse_session_claims
from tessera.tokens.grant import SessionGrant
from tessera.tokens.rar import SessionRequest

DIGEST = "sha256:" + "a" * 64
CHILD_DIGEST = "sha256:" + "b" * 64
JKT = "A" * 43
NOW = 1_800_000_000


def ceiling(**kw: Any) -> Ceiling:
    kw.setdefault("models", [DIGEST])
    return Ceiling.from_dict(kw)


def request(**kw: Any) -> SessionRequest:
    kw.setdefault("audience", ["svc-gateway"])
    for name in ("tools", "deny", "data_scope", "audience"):
        if name in kw:
            kw[name] = frozenset(kw[name])
    return SessionRequest(**kw)


def root_claims(
    grant: SessionGrant,
    *,
    subject: str = "usr_alice",
    client_id: str = "agt_parent",
    iat: int = NOW,
) -> SessionClaims:
    act = {"sub": client_id} if subject != client_id else None
    claims = build_session_claims(
        grant,
        issuer="https://tessera.test",
        subject=subject,
        client_id=client_id,
        jti="jti-1",
        iat=iat,
        sid="ses_1",
        operator="op_1",
        model_id="mdl_1",
        jkt=JKT,
        act=act,
    )
    return parse_session_claims(claims)
