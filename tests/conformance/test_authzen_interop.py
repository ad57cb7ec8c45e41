"""AuthZEN interop scenarios over HTTP (in-process ASGI): the Todo scenario's 40
evaluation and 3 evaluations cases, and the Search scenario's 198 cases, against the
example bundles in ``examples/``. The directories (users, records) of the corpus are
written to a file and loaded with ``tessera directory load`` into the store, which the
running server follows through its event log (the production path: ``StoredDirectory``);
the expected answers are only compared, never used to decide."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.cli_harness import cli_run
from tests.conftest import make_config

from tessera.app import build, initialise
from tessera.clock import SystemClock
from tessera.http.asgi import create_app
from tessera.pdp.directory import StoredDirectory
from tessera.policy.bundle import read_bundle_dir
from tessera.signals.events import decode_consistency_token

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpora" / "authzen"
pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"AuthZEN corpus not found at {CORPUS}")


def _client(tmp_path: Path, bundle: str, data: dict[str, Any]) -> Iterator[TestClient]:
    config = make_config(tmp_path)
    initialise(config, clock=SystemClock())
    t = build(config)
    t.pdp.policies.apply(read_bundle_dir(ROOT / "examples" / bundle), actor="test")
    assert isinstance(t.pdp.attributes, StoredDirectory)
    reg = t.identity.register_service("pep", scopes=["pdp.evaluate"], api_key=True, actor="test")
    assert reg.value.api_key is not None
    key = reg.value.api_key.secret
    document = tmp_path / "directory.json"
    document.write_text(json.dumps(data))
    with (
        TestClient(create_app(t), raise_server_exceptions=False) as http,
        pytest.MonkeyPatch.context() as mp,
    ):
        # The CLI writes to the store (another SqlStore, as a separate process would); the
        # server follows the event log up to the write's consistency token.
        run = cli_run(tmp_path, mp, env={"TESSERA_KEK": "a" * 64})
        loaded = json.loads(run("directory", "load", str(document), "--json"))
        assert loaded["set"] == sum(len(items) for items in data.values())
        t.tailer.ensure_fresh(decode_consistency_token(loaded["consistency_token"]))
        for etype, items in data.items():
            assert sorted(t.pdp.attributes.ids_of_type(etype)) == sorted(items)
        http.headers["Authorization"] = f"Bearer {key}"
        yield http
    t.close()


@pytest.fixture(scope="module")
def todo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    directory = json.loads((CORPUS / "todo" / "directory.json").read_text())
    yield from _client(tmp_path_factory.mktemp("todo"), "authzen-todo", {"user": directory})


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    users = json.loads((CORPUS / "search" / "users.json").read_text())
    recs = json.loads((CORPUS / "search" / "records.json").read_text())
    data = {"user": {u["id"]: u for u in users}, "record": {r["id"]: r for r in recs}}
    yield from _client(tmp_path_factory.mktemp("search"), "authzen-search", data)


def _todo_cases(kind: str) -> list[Any]:
    path = CORPUS / "todo" / "decisions.json"
    return json.loads(path.read_text())[kind] if path.exists() else []


def _search_cases() -> list[Any]:
    out = []
    for kind in ("subject", "resource", "action"):
        path = CORPUS / "search" / kind / "results.json"
        if path.exists():
            out += [(kind, c) for c in json.loads(path.read_text())["evaluation"]]
    return out


def test_corpus_sizes() -> None:
    assert len(_todo_cases("evaluation")) == 40
    assert len(_todo_cases("evaluations")) == 3
    assert len(_search_cases()) == 198


@pytest.mark.parametrize("case", _todo_cases("evaluation"))
def test_todo_evaluation(todo: TestClient, case: dict[str, Any]) -> None:
    r = todo.post("/access/v1/evaluation", json=case["request"])
    assert r.status_code == 200, r.text
    assert r.json()["decision"] is case["expected"]


@pytest.mark.parametrize("case", _todo_cases("evaluations"))
def test_todo_evaluations(todo: TestClient, case: dict[str, Any]) -> None:
    r = todo.post("/access/v1/evaluations", json=case["request"])
    assert r.status_code == 200, r.text
    got = [{"decision": e["decision"]} for e in r.json()["evaluations"]]
    assert got == case["expected"]


def _key(item: dict[str, Any]) -> str:
    return json.dumps(item, sort_keys=True)


@pytest.mark.parametrize("case", _search_cases())
def test_search(records: TestClient, case: tuple[str, dict[str, Any]]) -> None:
    kind, c = case
    r = records.post(f"/access/v1/search/{kind}", json=c["request"])
    assert r.status_code == 200, r.text
    got = sorted(map(_key, r.json()["results"]))
    assert got == sorted(map(_key, c["expected"]["results"]))
