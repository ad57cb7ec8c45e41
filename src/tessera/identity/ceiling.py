"""Ceilings and grants: the shape of what an agent (or a user) may ever be given.

Vocabulary (DESIGN 6b):
- a tool is ``server/tool``; a tool pattern may be ``server/*`` (every tool of a server);
- a data scope is ``type:id`` or ``type:*``; a scope is inside another when equal or covered
  by the wildcard;
- budgets are named non-negative integer counters (``tool_calls``, ``external_calls``...).

A user's grants have the same shape as an agent's ceiling (DESIGN 6b ``UserRightsSource``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tessera.errors import InvalidInput

DEFAULT_SESSION_LIFETIME = 900
MAX_SESSION_LIFETIME = 3600
DEFAULT_DELEGATION_DEPTH = 5
MAX_DELEGATION_DEPTH = 25
MAX_ITEMS = 1000
MAX_BUDGET = 10**9

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_TOOL = re.compile(rf"^{_SEGMENT}/(\*|{_SEGMENT})$")
_SCOPE = re.compile(rf"^{_SEGMENT}:(\*|[A-Za-z0-9][A-Za-z0-9._@/+=-]{{0,255}})$")
_BUDGET = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_AGENT_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def is_tool(value: str) -> bool:
    return bool(_TOOL.fullmatch(value))


def is_data_scope(value: str) -> bool:
    return bool(_SCOPE.fullmatch(value))


def is_model_digest(value: str) -> bool:
    return bool(_DIGEST.fullmatch(value))


def tool_covered(pattern: str, tool: str) -> bool:
    """True when ``tool`` (itself possibly ``server/*``) lies inside ``pattern``."""
    if pattern == tool:
        return True
    p_server, _, p_name = pattern.partition("/")
    t_server, _, _ = tool.partition("/")
    return p_name == "*" and p_server == t_server


def scope_covered(outer: str, inner: str) -> bool:
    """DESIGN 6b: ``inner`` is inside ``outer`` when equal or covered by ``type:*``."""
    if outer == inner:
        return True
    o_type, _, o_id = outer.partition(":")
    i_type, _, _ = inner.partition(":")
    return o_id == "*" and o_type == i_type


def covered_by_any(patterns: Iterable[str], item: str, *, kind: str) -> bool:
    check = tool_covered if kind == "tool" else scope_covered
    return any(check(p, item) for p in patterns)


@dataclass(frozen=True)
class Ceiling:
    """The most an agent may ever be granted (DESIGN 6b); also the shape of user grants."""

    tools: frozenset[str] = frozenset()
    data_scopes: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()
    may_delegate_to: frozenset[str] = frozenset()
    budgets: Mapping[str, int] = field(default_factory=dict)
    max_session_lifetime: int = DEFAULT_SESSION_LIFETIME
    max_delegation_depth: int = DEFAULT_DELEGATION_DEPTH
    dpop_required: bool = True

    def allows_tool(self, tool: str) -> bool:
        return covered_by_any(self.tools, tool, kind="tool")

    def allows_scope(self, scope: str) -> bool:
        return covered_by_any(self.data_scopes, scope, kind="scope")

    def allows_model(self, digest: str) -> bool:
        return digest in self.models

    def to_dict(self) -> dict[str, Any]:
        return {
            "tools": sorted(self.tools),
            "data_scopes": sorted(self.data_scopes),
            "models": sorted(self.models),
            "may_delegate_to": sorted(self.may_delegate_to),
            "budgets": dict(sorted(self.budgets.items())),
            "max_session_lifetime": self.max_session_lifetime,
            "max_delegation_depth": self.max_delegation_depth,
            "dpop_required": self.dpop_required,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, where: str = "ceiling") -> Ceiling:
        """Validate and build; any malformed field raises ``InvalidInput`` naming it."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidInput(f"{where} must be an object")
        known = {
            "tools",
            "data_scopes",
            "models",
            "may_delegate_to",
            "budgets",
            "max_session_lifetime",
            "max_delegation_depth",
            "dpop_required",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"{where}: unknown field {unknown[0]!r}")
        return cls(
            tools=_strings(data.get("tools"), f"{where}.tools", is_tool, "server/tool or server/*"),
            data_scopes=_strings(
                data.get("data_scopes"), f"{where}.data_scopes", is_data_scope, "type:id or type:*"
            ),
            models=_strings(
                data.get("models"), f"{where}.models", is_model_digest, "sha256:<64 hex digits>"
            ),
            may_delegate_to=_strings(
                data.get("may_delegate_to"),
                f"{where}.may_delegate_to",
                lambda v: bool(_AGENT_REF.fullmatch(v)),
                "an agent id",
            ),
            budgets=_budgets(data.get("budgets"), f"{where}.budgets"),
            max_session_lifetime=_int(
                data.get("max_session_lifetime"),
                f"{where}.max_session_lifetime",
                DEFAULT_SESSION_LIFETIME,
                60,
                MAX_SESSION_LIFETIME,
            ),
            max_delegation_depth=_int(
                data.get("max_delegation_depth"),
                f"{where}.max_delegation_depth",
                DEFAULT_DELEGATION_DEPTH,
                0,
                MAX_DELEGATION_DEPTH,
            ),
            dpop_required=_bool(data.get("dpop_required"), f"{where}.dpop_required", True),
        )


def _strings(value: Any, where: str, ok: Any, shape: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list | tuple | set | frozenset):
        raise InvalidInput(f"{where} must be a list of strings")
    if len(value) > MAX_ITEMS:
        raise InvalidInput(f"{where} has more than {MAX_ITEMS} items")
    out = set()
    for item in value:
        if not isinstance(item, str) or not ok(item):
            raise InvalidInput(f"{where}: each item must be {shape}")
        out.add(item)
    return frozenset(out)


def _budgets(value: Any, where: str) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where} must be an object of counters")
    if len(value) > 64:
        raise InvalidInput(f"{where} has more than 64 counters")
    out: dict[str, int] = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not _BUDGET.fullmatch(name):
            raise InvalidInput(f"{where}: counter names are lower-case identifiers")
        if (
            isinstance(amount, bool)
            or not isinstance(amount, int)
            or not (0 <= amount <= MAX_BUDGET)
        ):
            raise InvalidInput(f"{where}.{name} must be an integer from 0 to {MAX_BUDGET}")
        out[name] = amount
    return out


def _int(value: Any, where: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not (low <= value <= high):
        raise InvalidInput(f"{where} must be an integer from {low} to {high}")
    return value


def _bool(value: Any, where: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInput(f"{where} must be true or false")
    return value
