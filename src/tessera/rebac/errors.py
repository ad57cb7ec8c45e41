"""Errors of the relationship engine.

TesseraError
├── InvalidInput
│   ├── ModelError               the model text or JSON is not a valid model
│   │                            (``issues`` lists every problem with line/column)
│   ├── InvalidRequest           a check/list request names an unknown type,
│   │                            relation or malformed user (OpenFGA 2000/2021/2022)
│   ├── InvalidTuple             a tuple does not fit the model (OpenFGA 2027)
│   └── ConditionError           a condition could not be evaluated: missing or
│                                ill-typed parameters, CEL failure (OpenFGA 2000)
├── Conflict
│   └── ModelMismatch            the active policy bundle pins another model than the
│                                one being made active (409 ``policy_model_mismatch``,
│                                decisions.md 85 and 89)
└── ResolutionLimitError      depth or work budget exhausted (OpenFGA 2002); the
                                 engine never answers when it could be wrong
"""

from __future__ import annotations

from dataclasses import dataclass

from tessera.errors import Conflict, InvalidInput, TesseraError


@dataclass(frozen=True, slots=True)
class ModelIssue:
    """One problem in a model. ``line`` and ``column`` are 0-based (as OpenFGA's own
    language tooling reports them); ``end_column`` is exclusive."""

    kind: str
    message: str
    line: int = 0
    column: int = 0
    end_column: int = 0
    file: str | None = None  # set for modular models

    def __str__(self) -> str:
        where = f"{self.file}:" if self.file else ""
        return f"{where}{self.line + 1}:{self.column + 1}: {self.kind}: {self.message}"


class ModelError(InvalidInput):
    code = "rebac_invalid_model"
    title = "Invalid authorization model"

    def __init__(self, issues: list[ModelIssue]) -> None:
        self.issues = issues
        first = issues[0] if issues else ModelIssue("syntax", "empty model")
        super().__init__(f"invalid model: {first}", detail="; ".join(map(str, issues)))


class InvalidRequest(InvalidInput):
    code = "rebac_invalid_request"
    title = "Invalid relationship request"


class UnknownType(InvalidRequest):
    code = "rebac_unknown_type"
    title = "Type not defined in the model"


class UnknownRelation(InvalidRequest):
    code = "rebac_unknown_relation"
    title = "Relation not defined in the model"


class InvalidTuple(InvalidInput):
    code = "rebac_invalid_tuple"
    title = "Tuple does not fit the model"


class ConditionError(InvalidInput):
    code = "rebac_condition_error"
    title = "Condition could not be evaluated"


class ModelMismatch(Conflict):
    """A bundle pinning a model that is not the active one (``tessera policy apply``), or a
    model that is not the one the active bundle pins (``tessera rebac model apply``)."""

    code = "policy_model_mismatch"
    title = "Pinned model is not the active model"


class ResolutionLimitError(TesseraError):
    code = "rebac_resolution_limit"
    status = 422
    title = "Relationship resolution exceeded its depth or work budget"
