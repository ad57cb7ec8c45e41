"""The .fga.yaml store test runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.clock import ManualClock
from tessera.rebac import StoreFileError, run_store_file

STORE = """
name: demo
model_file: ./model.fga
tuples:
  - user: user:anne
    relation: member
    object: group:eng
  - user: group:eng#member
    relation: viewer
    object: doc:1
  - user: user:temp
    relation: viewer
    object: doc:1
    expires_at: "2025-01-01T00:00:00Z"
tests:
  - name: members view
    tuples:
      - user: user:bob
        relation: viewer
        object: doc:2
    check:
      - user: user:anne
        object: doc:1
        assertions:
          viewer: true
      - user: user:temp
        object: doc:1
        assertions:
          viewer: true
      - user: user:carl
        object: doc:1
        context: {}
        contextual_tuples:
          - user: user:carl
            relation: member
            object: group:eng
        assertions:
          viewer: true
    list_objects:
      - user: user:bob
        type: doc
        assertions:
          viewer: [doc:2]
    list_users:
      - object: doc:1
        user_filter:
          - type: user
        assertions:
          viewer:
            users: [user:anne]
      - object: doc:1
        user_filter:
          - type: nope
        assertions:
          viewer:
            users: []
"""

MODEL = """model
  schema 1.1
type user
type group
  relations
    define member: [user]
type doc
  relations
    define viewer: [user, group#member]
"""


def test_runs_and_reports_each_assertion(tmp_path: Path) -> None:
    (tmp_path / "model.fga").write_text(MODEL)
    path = tmp_path / "store.fga.yaml"
    path.write_text(STORE)
    report = run_store_file(path, ManualClock())
    assert report.name == "demo"
    assert [(r.kind, r.passed) for r in report.results] == [
        ("check", True),
        ("check", False),  # the expired tuple is invisible: a real failure, reported
        ("check", True),
        ("list_objects", True),
        ("list_users", True),
        ("list_users", False),  # unknown type: an error result, not an exception
    ]
    assert report.failures[0].actual is False
    assert report.failures[1].error is not None
    assert report.failures[1].error.startswith("rebac_unknown_type")
    assert not report.passed


def test_malformed_file_lists_problems(tmp_path: Path) -> None:
    path = tmp_path / "store.fga.yaml"
    path.write_text("tests:\n  - name: x\n    chek: []\n")
    with pytest.raises(StoreFileError) as info:
        run_store_file(path)
    assert len(info.value.problems) == 2  # no model, unknown key 'chek'
