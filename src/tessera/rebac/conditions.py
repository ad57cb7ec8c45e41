"""CEL conditions on tuples (OpenFGA conditional relationship tuples).

Each condition is compiled once per model. At evaluation the tuple's stored context and
the request context are merged (the tuple's values win, as in OpenFGA), converted to the
declared parameter types, and the expression is run with the ``cel`` module. A parameter
the expression needs but nobody supplied is a ``ConditionError`` with code
``rebac_condition_missing_parameters``; the engine turns that into an error only when the
answer depends on it.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import cel

from tessera.rebac.errors import ConditionError, ModelError, ModelIssue
from tessera.rebac.model import Condition, ConditionParam

_DURATION_PART = re.compile(r"(-?\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _in_cidr(ip: object, cidr: object) -> bool:
    try:
        return ipaddress.ip_address(str(ip)) in ipaddress.ip_network(str(cidr), strict=False)
    except ValueError as exc:
        raise ValueError(f"in_cidr: {exc}") from None


_FUNCTIONS: dict[str, Callable[..., object]] = {"in_cidr": _in_cidr}


def parse_duration(text: str) -> timedelta:
    """Go/CEL duration text (``1h30m``, ``2.5s``, ``-10ms``)."""
    pos = 0
    total = 0.0
    if not text:
        raise ValueError("empty duration")
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"invalid duration {text!r}")
    try:
        return timedelta(seconds=total)
    except OverflowError:  # beyond what a duration can express: bad input, not a crash
        raise ValueError(f"duration {text[:40]!r} out of range") from None


def _convert(value: Any, type_name: str, generic: str | None) -> Any:
    """JSON value → Python value of the declared CEL type; raises ValueError."""
    if type_name == "any":
        return value
    if type_name == "bool":
        if isinstance(value, bool):
            return value
    elif type_name in ("int", "uint"):
        if isinstance(value, bool):
            raise ValueError("expected a number")
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            iv = int(value)
            if type_name == "uint" and iv < 0:
                raise ValueError("expected an unsigned integer")
            return iv
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return _convert(int(value), type_name, None)
    elif type_name == "double":
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            fv = float(value)
            if not math.isfinite(fv):
                raise ValueError("double out of range")
            return fv
    elif type_name == "string":
        if isinstance(value, str):
            return value
    elif type_name == "bytes":
        if isinstance(value, str):
            return value.encode()
    elif type_name == "timestamp":
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, str):
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    elif type_name == "duration":
        if isinstance(value, timedelta):
            return value
        if isinstance(value, str):
            return parse_duration(value)
    elif type_name == "ipaddress":
        if isinstance(value, str):
            ipaddress.ip_address(value)
            return value
    elif type_name == "list":
        if isinstance(value, list):
            return [_convert(v, generic or "any", None) for v in value]
    elif type_name == "map" and isinstance(value, Mapping):
        return {str(k): _convert(v, generic or "any", None) for k, v in value.items()}
    raise ValueError(f"expected a value of type {type_name}")


class CompiledCondition:
    """A condition ready to evaluate; ``evaluate`` returns a bool or raises
    ``ConditionError``."""

    __slots__ = ("condition", "name", "params", "program", "required", "variables")

    def __init__(self, condition: Condition) -> None:
        self.condition = condition
        self.name = condition.name
        self.params: dict[str, ConditionParam] = condition.params
        try:
            self.program = cel.compile(condition.expression)
        except ValueError as exc:
            raise ModelError(
                [
                    ModelIssue(
                        "invalid-condition",
                        f"condition {condition.name!r}: {exc}",
                        condition.pos.line,
                        condition.pos.column,
                        condition.pos.end,
                    )
                ]
            ) from None
        self.variables = frozenset(self.program.variables())
        # OpenFGA requires every declared parameter the expression reads, even when
        # short-circuiting would not need it.
        self.required = tuple(sorted(self.variables & set(self.params)))

    def evaluate(
        self, tuple_context: Mapping[str, Any] | None, request_context: Mapping[str, Any] | None
    ) -> bool:
        """OpenFGA: conditions §evaluation — merged context, typed parameters."""
        values: dict[str, Any] = {}
        for name, param in self.params.items():
            if tuple_context is not None and name in tuple_context:
                raw = tuple_context[name]
            elif request_context is not None and name in request_context:
                raw = request_context[name]
            else:
                continue
            try:
                values[name] = _convert(raw, param.type_name, param.generic)
            except (ValueError, TypeError) as exc:
                raise ConditionError(
                    f"condition {self.name!r}: parameter {name!r}: {exc}",
                    code="rebac_condition_parameter_type",
                ) from None
        missing = [p for p in self.required if p not in values]
        if missing:
            raise ConditionError(
                f"condition {self.name!r} is missing context parameters {', '.join(missing)}",
                code="rebac_condition_missing_parameters",
            )
        try:
            result = self.program.execute(cel.Context(values, _FUNCTIONS))
        except RuntimeError as exc:
            missing = sorted(v for v in self.variables if v not in values)
            if missing and "Undefined variable" in str(exc):
                raise ConditionError(
                    f"condition {self.name!r} is missing context parameters {', '.join(missing)}",
                    code="rebac_condition_missing_parameters",
                ) from None
            raise ConditionError(
                f"condition {self.name!r} failed: {exc}", code="rebac_condition_evaluation_error"
            ) from None
        except (ValueError, TypeError) as exc:
            raise ConditionError(
                f"condition {self.name!r} failed: {exc}", code="rebac_condition_evaluation_error"
            ) from None
        if not isinstance(result, bool):
            raise ConditionError(
                f"condition {self.name!r} did not return a bool",
                code="rebac_condition_evaluation_error",
            )
        return result


def compile_conditions(conditions: Mapping[str, Condition]) -> dict[str, CompiledCondition]:
    return {name: CompiledCondition(c) for name, c in conditions.items()}
