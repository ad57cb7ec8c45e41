from __future__ import annotations

import tessera.tokens as tokens


def test_all_names_exist_and_are_sorted() -> None:
    assert tokens.__all__ == sorted(tokens.__all__, key=lambda n: (not n.isupper(), n))
    for name in tokens.__all__:
        assert hasattr(tokens, name), name


def test_public_surface_is_what_we_document() -> None:
    assert set(tokens.__all__) == {
        "SESSION_DETAILS_TYPE",
        "ChildGrant",
        "OAuthError",
        "SessionClaims",
        "SessionClaimsError",
        "SessionGrant",
        "SessionRequest",
        "act_chain",
        "build_session_claims",
        "compute_session_grant",
        "derive_child_grant",
        "nest_act",
        "parse_session_claims",
        "parse_session_request",
    }
