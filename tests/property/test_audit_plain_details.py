"""The one-pass details check (``record.plain_details``) agrees with the full one.

``plain_details`` is a fast path: when it says True, ``_check_details`` must accept the value
(nothing it refuses — a secret-named key, a lone surrogate, a huge integer, a float that is
not finite, too deep a nesting — may slip through) and ``json.dumps(sort_keys)`` must be the
value's RFC 8785 text. When the value holds no secret-named key, the full check accepting
it and ``_plain`` holding means the fast path must cover it too (else it would never help).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.audit.encoding import SAFE_INT, _plain
from tessera.audit.record import _SECRET_KEYS, REDACTED, _check_details, plain_details
from tessera.crypto.canonical import canonical_json
from tessera.errors import InvalidInput

_keys = st.one_of(
    st.text(max_size=6),
    st.sampled_from(sorted(_SECRET_KEYS)),
    st.sampled_from(["Token", "PASSWORD", "Api_Key", "prev_hash", "seq", "é", "\ud800"]),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-SAFE_INT - 2, max_value=SAFE_INT + 2),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from([REDACTED, "\udc80", "a\ud800b", '\x00\x1f"\\', "😀"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(_keys, inner, max_size=4),
    ),
    max_leaves=40,
)


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"k": value}
    return value


def _accepted(value: object) -> bool:
    try:
        _check_details(value, 0)
    except InvalidInput:
        return False
    return True


def _secret_named(value: object) -> bool:
    if isinstance(value, dict):
        return any(
            (isinstance(k, str) and k.lower() in _SECRET_KEYS) or _secret_named(v)
            for k, v in value.items()
        )
    if isinstance(value, list | tuple):
        return any(_secret_named(v) for v in value)
    return False


def _check(details: object) -> None:
    fast = plain_details(details)
    if fast:
        assert _accepted(details)
        assert _plain(details)
        text = json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert text.encode() == canonical_json(details)
    elif type(details) is dict and not _secret_named(details):
        assert not (_accepted(details) and _plain(details))


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=5))
def test_plain_details_implies_the_full_check(details: dict[str, Any]) -> None:
    _check(details)


@given(_values)
def test_plain_details_on_any_value(value: object) -> None:
    _check(value)
    if type(value) is not dict:
        assert not plain_details(value)


def test_depth_limit_is_the_full_checks() -> None:
    for depth in range(12):
        value = {"d": _deep(depth)}
        assert plain_details(value) == _accepted(value)
    assert not plain_details({"token": REDACTED})  # legal, but the full check decides
    assert _accepted({"token": REDACTED})
