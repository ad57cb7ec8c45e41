"""Rich Authorization Requests (RFC 9396) of type ``tessera_session``.

A session request names, in one ``authorization_details`` object of type
``tessera_session``, what the task needs::

    [{"type": "tessera_session",
      "tools": ["fs/read", "web/*"], "deny": ["web/post"],
      "data_scope": ["doc:42"], "budgets": {"tool_calls": 20}}]

Reading of RFC 9396 applied here:

- §2 and §5: the server MUST refuse an unknown ``type`` and any object that does not conform
  to its type definition, with ``invalid_authorization_details``. The ``tessera_session``
  definition has exactly the members above, so any other member is refused.
- §2.2 common members (``locations``, ``actions``, ``datatypes``, ``identifier``,
  ``privileges``) are *refused*, not ignored: ignoring ``locations`` would silently drop a
  restriction the client believes it obtained. The audience comes from the RFC 8707
  ``resource`` or RFC 8693 ``audience`` parameters instead.
- Exactly one ``tessera_session`` object per request; several would need merge rules that
  a reader of the token could get wrong.
- Omitted ``tools`` or ``data_scope`` mean *nothing* (fail closed), see ``grant.py``.

Limits: the JSON text is at most ``MAX_DETAILS_BYTES``; each list at most ``MAX_LIST_ITEMS``;
at most ``MAX_BUDGET_COUNTERS`` budgets; at most ``MAX_AUDIENCES`` audiences.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from tessera.identity.ceiling import MAX_BUDGET, is_data_scope, is_tool
from tessera.tokens.oauth_errors import OAuthError

SESSION_DETAILS_TYPE: Final = "tessera_session"
MAX_DETAILS_BYTES: Final = 16 * 1024
MAX_DETAILS_OBJECTS: Final = 8
MAX_LIST_ITEMS: Final = 256
MAX_BUDGET_COUNTERS: Final = 64
MAX_AUDIENCES: Final = 16
MAX_AUDIENCE_LENGTH: Final = 512

# Same shape as ceiling budget names (kept in step with identity/ceiling.py).
_BUDGET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_AUDIENCE = re.compile(r"^[\x21-\x7e]+$")
_COMMON_MEMBERS = frozenset({"locations", "actions", "datatypes", "identifier", "privileges"})
_SESSION_MEMBERS = frozenset({"type", "tools", "deny", "data_scope", "budgets"})


def _empty_budgets() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True)
class SessionRequest:
    """What a client asks for one session (RFC 9396 details plus RFC 8707/8693 audience).

    ``lifetime`` is the requested lifetime in seconds, ``None`` for the default.
    """

    tools: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    data_scope: frozenset[str] = frozenset()
    budgets: Mapping[str, int] = field(default_factory=_empty_budgets, hash=False)
    audience: frozenset[str] = frozenset()
    lifetime: int | None = None


def _invalid(description: str, detail: str | None = None) -> OAuthError:
    return OAuthError("invalid_authorization_details", description, detail=detail)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("duplicate member name")
        out[key] = value
    return out


def _load(text: str | bytes) -> Any:
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_DETAILS_BYTES:
        raise _invalid(f"authorization_details is larger than {MAX_DETAILS_BYTES} bytes")
    try:
        return json.loads(
            raw, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys
        )
    except (ValueError, RecursionError) as exc:
        raise _invalid("authorization_details is not valid JSON", detail=str(exc)) from None


def _string_list(obj: Mapping[str, Any], name: str, valid: Any, shape: str) -> frozenset[str]:
    value = obj.get(name)
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise _invalid(f"{name} must be an array of strings")
    if len(value) > MAX_LIST_ITEMS:
        raise _invalid(f"{name} has more than {MAX_LIST_ITEMS} items")
    for item in value:
        if not isinstance(item, str) or not valid(item):
            raise _invalid(f"each {name} item must be {shape}")
    return frozenset(value)


def parse_budgets(value: Any, *, where: str = "budgets") -> Mapping[str, int]:
    """Validate an object of named non-negative integer counters."""
    if value is None:
        return _empty_budgets()
    if not isinstance(value, Mapping):
        raise _invalid(f"{where} must be an object of counters")
    if len(value) > MAX_BUDGET_COUNTERS:
        raise _invalid(f"{where} has more than {MAX_BUDGET_COUNTERS} counters")
    out: dict[str, int] = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not _BUDGET_NAME.fullmatch(name):
            raise _invalid(f"{where} names must be lower-case identifiers")
        if (
            isinstance(amount, bool)
            or not isinstance(amount, int)
            or not (0 <= amount <= MAX_BUDGET)
        ):
            raise _invalid(f"{where}.{name} must be an integer from 0 to {MAX_BUDGET}")
        out[name] = amount
    return MappingProxyType(out)


def _session_object(obj: Mapping[str, Any]) -> dict[str, Any]:
    common = sorted(_COMMON_MEMBERS & set(obj))
    if common:
        raise _invalid(
            f"{common[0]} is not supported in tessera_session; "
            "use the resource or audience parameter for the audience"
        )
    unknown = sorted(set(obj) - _SESSION_MEMBERS)
    if unknown:
        raise _invalid(
            "tessera_session has an unknown member", detail=f"unknown member {unknown[0][:64]!r}"
        )
    return {
        "tools": _string_list(obj, "tools", is_tool, "server/tool or server/*"),
        "deny": _string_list(obj, "deny", is_tool, "server/tool or server/*"),
        "data_scope": _string_list(obj, "data_scope", is_data_scope, "type:id or type:*"),
        "budgets": parse_budgets(obj.get("budgets")),
    }


def parse_audience(values: Collection[str] | str | None) -> frozenset[str]:
    """Validate RFC 8707 ``resource`` / RFC 8693 ``audience`` values (``invalid_target``).

    Whether a value names a registered service is checked by the token service.
    """
    if values is None:
        return frozenset()
    items = [values] if isinstance(values, str) else list(values)
    if len(items) > MAX_AUDIENCES:
        raise OAuthError("invalid_target", f"at most {MAX_AUDIENCES} audiences")
    for item in items:
        if (
            not isinstance(item, str)
            or not item
            or len(item) > MAX_AUDIENCE_LENGTH
            or not _AUDIENCE.fullmatch(item)
        ):
            raise OAuthError("invalid_target", "an audience or resource value is malformed")
    return frozenset(items)


def parse_session_request(
    authorization_details: str | bytes | list[Any] | None,
    *,
    audience: Collection[str] | str | None = None,
    lifetime: int | None = None,
) -> SessionRequest:
    """Parse ``authorization_details`` (RFC 9396 §2) into a :class:`SessionRequest`.

    ``authorization_details`` is the form parameter (JSON text) or an already decoded list;
    ``None`` (parameter absent) is an empty request, which grants no tools and no data.
    Raises ``OAuthError`` with ``invalid_authorization_details`` (RFC 9396 §5) on any
    malformed or unknown detail, ``invalid_target`` on a bad audience and
    ``invalid_request`` on a bad lifetime.
    """
    aud = parse_audience(audience)
    if lifetime is not None and (
        isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime <= 0
    ):
        raise OAuthError("invalid_request", "the requested lifetime must be a positive integer")
    if authorization_details is None:
        return SessionRequest(audience=aud, lifetime=lifetime)
    decoded = (
        _load(authorization_details)
        if isinstance(authorization_details, str | bytes)
        else authorization_details
    )
    if not isinstance(decoded, list) or not decoded:
        raise _invalid("authorization_details must be a non-empty JSON array of objects")
    if len(decoded) > MAX_DETAILS_OBJECTS:
        raise _invalid(f"authorization_details has more than {MAX_DETAILS_OBJECTS} objects")
    session: dict[str, Any] | None = None
    for obj in decoded:
        if not isinstance(obj, Mapping):
            raise _invalid("each authorization_details entry must be an object")
        kind = obj.get("type")
        if not isinstance(kind, str) or not kind:
            raise _invalid("each authorization_details object needs a string type")
        if kind != SESSION_DETAILS_TYPE:
            raise _invalid("unknown authorization_details type", detail=f"type {kind[:64]!r}")
        if session is not None:
            raise _invalid("only one tessera_session object is allowed")
        session = _session_object(obj)
    if session is None:  # pragma: no cover - a non-empty list always sets it or raises
        raise _invalid("authorization_details names no tessera_session object")
    return SessionRequest(
        tools=session["tools"],
        deny=session["deny"],
        data_scope=session["data_scope"],
        budgets=session["budgets"],
        audience=aud,
        lifetime=lifetime,
    )


def session_details_object(
    *,
    tools: Collection[str],
    deny: Collection[str],
    data_scope: Collection[str],
    budgets: Mapping[str, int],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``tessera_session`` object as it appears in a token (sorted, deterministic)."""
    out: dict[str, Any] = {
        "type": SESSION_DETAILS_TYPE,
        "tools": sorted(tools),
        "deny": sorted(deny),
        "data_scope": sorted(data_scope),
        "budgets": dict(sorted(budgets.items())),
    }
    if extra:
        out.update(extra)
    return out
