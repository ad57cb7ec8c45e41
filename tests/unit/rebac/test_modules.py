"""Modular models: fga.mod manifest, module files, and a store test file using them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.clock import ManualClock
from tessera.rebac import (
    MemoryTupleIndex,
    ModelError,
    RebacEngine,
    RelationTuple,
    combine_modules,
    run_store_file,
)

CORE = """module core

type user

type group
  relations
    define member: [user]
"""

DOCS = """module docs

type document
  relations
    define viewer: [group#member]

extend type group
  relations
    define admin: [user with on_call]

condition on_call(active: bool) {
  active
}
"""


def test_combined_model_answers_queries() -> None:
    model = combine_modules({"core.fga": CORE, "docs/docs.fga": DOCS})
    assert model.schema_version == "1.2"
    admin = model.types["group"].relations["admin"]
    assert admin.source is not None
    assert (admin.source.module, admin.source.file) == ("docs", "docs/docs.fga")
    engine = RebacEngine(
        model,
        MemoryTupleIndex(
            [
                RelationTuple("group:eng", "member", "user:anne"),
                RelationTuple("document:d", "viewer", "group:eng#member"),
                RelationTuple("group:eng", "admin", "user:bob", "on_call"),
            ]
        ),
        ManualClock(),
    )
    assert engine.check("document:d", "viewer", "user:anne")
    assert engine.check("group:eng", "admin", "user:bob", context={"active": True})
    assert not engine.check("group:eng", "admin", "user:bob", context={"active": False})


def test_errors_name_the_file() -> None:
    broken = DOCS.replace("[group#member]", "[group#nope]")
    with pytest.raises(ModelError) as info:
        combine_modules({"core.fga": CORE, "docs.fga": broken})
    [issue] = info.value.issues
    assert (issue.file, issue.line, issue.kind) == ("docs.fga", 4, "invalid-relation-type")


def test_store_file_with_fga_mod(tmp_path: Path) -> None:
    (tmp_path / "fga.mod").write_text("schema: '1.2'\ncontents:\n  - core.fga\n  - docs.fga\n")
    (tmp_path / "core.fga").write_text(CORE)
    (tmp_path / "docs.fga").write_text(DOCS)
    (tmp_path / "store.fga.yaml").write_text(
        "model_file: fga.mod\n"
        "tuples:\n"
        "  - {user: user:anne, relation: member, object: group:eng}\n"
        "  - {user: 'group:eng#member', relation: viewer, object: document:d}\n"
        "tests:\n"
        "  - name: t\n"
        "    check:\n"
        "      - user: user:anne\n"
        "        object: document:d\n"
        "        assertions: {viewer: true}\n"
    )
    report = run_store_file(tmp_path / "store.fga.yaml", ManualClock())
    assert report.passed
    assert len(report.results) == 1
