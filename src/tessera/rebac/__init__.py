"""Relationship-based access control: OpenFGA schema 1.1 models, tuples, and the
check / list-objects / list-users engine.

Stages are separate and pure: ``parse_dsl`` (text → model, with validation) or
``model_from_json`` (modular models: ``parse_fga_mod`` + ``combine_modules``); a
``TupleReader`` (``MemoryTupleIndex`` in production); and
``RebacEngine`` answering queries. ``run_store_file`` runs ``.fga.yaml`` test files.
"""

from tessera.rebac.dsl import parse_dsl
from tessera.rebac.engine import Limits, ListResult, RebacEngine
from tessera.rebac.errors import (
    ConditionError,
    InvalidRequest,
    InvalidTuple,
    ModelError,
    ModelIssue,
    ResolutionLimitError,
    UnknownRelation,
    UnknownType,
)
from tessera.rebac.jsonmodel import model_from_json, model_to_json
from tessera.rebac.memory import MemoryTupleIndex
from tessera.rebac.model import AuthorizationModel, Source
from tessera.rebac.modules import combine_modules, load_modular_model, parse_fga_mod
from tessera.rebac.ports import RelationTuple, TupleMeta, TupleReader, is_valid_object_id
from tessera.rebac.render import render_dsl, render_modules
from tessera.rebac.testfile import (
    AssertionResult,
    StoreFileError,
    StoreTestReport,
    run_store,
    run_store_file,
)
from tessera.rebac.validate import model_issues, validate_model

__all__ = [
    "AssertionResult",
    "AuthorizationModel",
    "ConditionError",
    "InvalidRequest",
    "InvalidTuple",
    "Limits",
    "ListResult",
    "MemoryTupleIndex",
    "ModelError",
    "ModelIssue",
    "RebacEngine",
    "RelationTuple",
    "ResolutionLimitError",
    "Source",
    "StoreFileError",
    "StoreTestReport",
    "TupleMeta",
    "TupleReader",
    "UnknownRelation",
    "UnknownType",
    "combine_modules",
    "is_valid_object_id",
    "load_modular_model",
    "model_from_json",
    "model_issues",
    "model_to_json",
    "parse_dsl",
    "parse_fga_mod",
    "render_dsl",
    "render_modules",
    "run_store",
    "run_store_file",
    "validate_model",
]
