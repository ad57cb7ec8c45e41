from __future__ import annotations

import pytest

from tessera.errors import TesseraError
from tessera.tokens.oauth_errors import OAUTH_ERROR_STATUS, OAuthError, safe_description


def test_is_a_tessera_error_with_code_and_status() -> None:
    err = OAuthError("invalid_authorization_details", "tool fs/x is outside the ceiling")
    assert isinstance(err, TesseraError)
    assert err.code == err.error == "invalid_authorization_details"
    assert err.status == 400
    assert err.error_description == "tool fs/x is outside the ceiling"


def test_invalid_client_is_401() -> None:
    assert OAuthError("invalid_client").status == 401


def test_every_registered_code_has_a_default_description() -> None:
    for code in OAUTH_ERROR_STATUS:
        err = OAuthError(code)  # type: ignore[arg-type]
        assert err.error_description
        assert err.status in (400, 401)


def test_status_can_be_overridden_for_a_resource_server() -> None:
    assert OAuthError("use_dpop_nonce", status=401).status == 401


def test_unknown_code_is_refused() -> None:
    with pytest.raises(TesseraError) as info:
        OAuthError("server_error")  # type: ignore[arg-type]
    assert not isinstance(info.value, OAuthError)


def test_detail_is_private_and_not_in_str_or_repr() -> None:
    err = OAuthError("invalid_grant", "the grant is invalid", detail="token=eyJsecret")
    assert err.detail == "token=eyJsecret"
    assert "eyJsecret" not in str(err)
    assert "eyJsecret" not in repr(err)
    assert "eyJsecret" not in err.error_description


def test_description_is_limited_to_rfc6749_characters() -> None:
    text = 'bad "quote" \\ back\nnewline é'
    cleaned = safe_description(text)
    assert '"' not in cleaned
    assert "\\" not in cleaned
    assert "\n" not in cleaned
    assert all(" " <= ch <= "~" for ch in cleaned)


def test_description_is_truncated() -> None:
    assert len(OAuthError("invalid_request", "x" * 5000).error_description) <= 300
