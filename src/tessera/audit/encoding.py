"""The exact bytes a record is hashed over: RFC 8785 canonical JSON, computed fast.

``rfc8785`` (``tessera.crypto.canonical``) is correct for every JSON value but slow in pure
Python. Records have one known shape, so a template writes them with the keys already in
canonical order; other float-free values go through ``json.dumps(sort_keys=True)``, which
yields the same bytes; anything else (floats, non-ASCII keys) takes the full encoder. A
property test checks all three against ``rfc8785``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any

from tessera.crypto.canonical import canonical_json
from tessera.errors import InvalidInput

SAFE_INT = 2**53 - 1
_SAFE_INT = SAFE_INT


def _plain(value: object) -> bool:
    """True when ``json.dumps(sort_keys)`` already yields RFC 8785 bytes for ``value``.

    That holds without floats (ES6 number formatting differs), for integers within
    ±2^53, and for ASCII keys (UTF-16 and code point order then agree). Strings need no
    check: both escape exactly '"', '\\' and control characters, in lower-case hex.
    Exact types only: a subclass takes the slow, always-correct path.
    """
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return -_SAFE_INT <= value <= _SAFE_INT  # type: ignore[operator]
    if kind is dict:
        for key, inner in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or not key.isascii():
                return False
            if type(inner) is not str and not _plain(inner):
                return False
        return True
    if kind is list or kind is tuple:
        return all(type(inner) is str or _plain(inner) for inner in value)  # type: ignore[attr-defined]
    return False


def record_bytes(record: Mapping[str, Any]) -> bytes:
    """RFC 8785 canonical JSON of a record: a template for the record shape of this
    module, ``json.dumps`` for other float-free values, the full RFC 8785 encoder else."""
    try:
        fast = _record_template(record) if record.keys() == _RECORD_KEYS else None
        if fast is None and _plain(record):
            fast = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if fast is not None:
            return fast.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: not valid JSON text
        raise InvalidInput("audit record holds an invalid string") from exc
    try:
        return canonical_json(record)
    except Exception as exc:  # rfc8785 raises its own types for NaN, huge ints, surrogates
        raise InvalidInput("audit record is not canonicalisable JSON") from exc


_RECORD_KEYS = frozenset(
    [
        "action",
        "actor",
        "details",
        "event_type",
        "jti",
        "outcome",
        "policy_version",
        "prev_hash",
        "reasons",
        "request_id",
        "resource",
        "seq",
        "time",
        "v",
    ]
)
_ACTOR_KEYS = frozenset(
    ["act", "agent", "model_digest", "operator", "principal", "session", "user"]
)
_quote = encode_basestring  # escapes exactly '"', '\\' and controls, as RFC 8785 §3.2.2.2


def _opt(value: object) -> str:
    if value is None:
        return "null"
    if type(value) is not str:
        raise _NotTemplate
    return _quote(value)


def _strings(values: object) -> str:
    if not isinstance(values, list) or type(values) is not list:
        raise _NotTemplate
    if any(type(v) is not str for v in values):
        raise _NotTemplate
    return "[" + ",".join(map(_quote, values)) + "]"


class _NotTemplate(Exception):
    """The record does not have the exact shape the template encodes."""


def _record_template(r: Mapping[str, Any]) -> str | None:
    """Canonical JSON with the keys already in RFC 8785 order (all ASCII, so UTF-16 order
    is code point order); None when any value is not of the expected type."""
    actor, details, seq, v = r["actor"], r["details"], r["seq"], r["v"]
    if type(actor) is not dict or actor.keys() != _ACTOR_KEYS or type(details) is not dict:
        return None
    if type(seq) is not int or type(v) is not int or not 0 <= seq <= _SAFE_INT or not 0 <= v < 100:
        return None
    if not details:
        details_text = "{}"
    elif _plain(details):
        details_text = json.dumps(
            details, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    else:
        return None
    try:
        return (
            f'{{"action":{_opt(r["action"])},"actor":{{"act":{_strings(actor["act"])},'
            f'"agent":{_opt(actor["agent"])},"model_digest":{_opt(actor["model_digest"])},'
            f'"operator":{_opt(actor["operator"])},"principal":{_opt(actor["principal"])},'
            f'"session":{_opt(actor["session"])},"user":{_opt(actor["user"])}}},'
            f'"details":{details_text},"event_type":{_opt(r["event_type"])},'
            f'"jti":{_opt(r["jti"])},"outcome":{_opt(r["outcome"])},'
            f'"policy_version":{_opt(r["policy_version"])},"prev_hash":{_opt(r["prev_hash"])},'
            f'"reasons":{_strings(r["reasons"])},"request_id":{_opt(r["request_id"])},'
            f'"resource":{_opt(r["resource"])},"seq":{seq},"time":{_opt(r["time"])},"v":{v}}}'
        )
    except _NotTemplate:
        return None
