"""tessera.crypto.nonce: stateless DPoP server nonces (DESIGN 6b)."""

from __future__ import annotations

import re

import pytest

from tessera.crypto.nonce import DpopNonceIssuer
from tessera.errors import ConfigError

SECRET = bytes(range(32))
T0 = 1_800_000_000  # a multiple of 300: the start of a window


def test_nonce_is_accepted_in_its_window_and_the_next() -> None:
    issuer = DpopNonceIssuer(SECRET, window_seconds=300)
    nonce = issuer.issue(T0)
    assert issuer.check(nonce, T0)
    assert issuer.check(nonce, T0 + 299)
    assert issuer.check(nonce, T0 + 300)  # previous window
    assert issuer.check(nonce, T0 + 599)
    assert not issuer.check(nonce, T0 + 600)
    assert not issuer.check(nonce, T0 - 1)  # a nonce from the future window


def test_same_window_same_nonce_next_window_new_nonce() -> None:
    issuer = DpopNonceIssuer(SECRET)
    assert issuer.issue(T0) == issuer.issue(T0 + 299)
    assert issuer.issue(T0) != issuer.issue(T0 + 300)


def test_another_node_with_the_same_secret_agrees() -> None:
    assert DpopNonceIssuer(SECRET).check(DpopNonceIssuer(SECRET).issue(T0), T0 + 10)


def test_another_secret_refuses() -> None:
    other = DpopNonceIssuer(bytes(32))
    assert not DpopNonceIssuer(SECRET).check(other.issue(T0), T0)


@pytest.mark.parametrize("nonce", [None, "", "x", "A" * 32, "A" * 200])
def test_garbage_is_refused(nonce: str | None) -> None:
    assert not DpopNonceIssuer(SECRET).check(nonce, T0)


def test_modified_nonce_is_refused() -> None:
    issuer = DpopNonceIssuer(SECRET)
    nonce = issuer.issue(T0)
    flipped = nonce[:-1] + ("A" if nonce[-1] != "A" else "B")
    assert not issuer.check(flipped, T0)


def test_nonce_is_valid_nqchar() -> None:
    # RFC 9449 §8.1: nonce = 1*NQCHAR (%x21 / %x23-5B / %x5D-7E).
    nonce = DpopNonceIssuer(SECRET).issue(T0)
    assert re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", nonce)


def test_short_secret_or_bad_window_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        DpopNonceIssuer(b"short")
    with pytest.raises(ConfigError):
        DpopNonceIssuer(SECRET, window_seconds=0)
