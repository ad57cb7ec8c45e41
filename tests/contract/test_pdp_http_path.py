"""The AuthZEN HTTP path (issue 5, docs/decisions.md 77-79): the pure ASGI handler keeps
the wire format, errors and limits of the routes it replaces; budgets spent at decision
time are written in groups without ever overspending; cached callers are forgotten when
their credential changes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from tests.contract.test_pdp_agents import Pdp, pdp  # noqa: F401
from tests.contract.test_token_service import world  # noqa: F401

from tessera.errors import StoreUnavailable, Unauthenticated
from tessera.pdp.budgets import GroupedSessionBudgets


def _request(pdp: Pdp, token: str, doc: str = "1") -> dict[str, Any]:  # noqa: F811
    return {
        "subject": {
            "type": "agent",
            "id": pdp.t.identity.get_agent("planner").id,
            "properties": {"token": token, "jkt": pdp.w.parent.dpop_jkt},
        },
        "action": {"name": "docs/read"},
        "resource": {"type": "document", "id": doc},
    }


def _auth(pdp: Pdp) -> dict[str, str]:  # noqa: F811
    return {"Authorization": f"Bearer {pdp.service_token}"}


def test_wire_format_request_id_and_explain(pdp: Pdp) -> None:  # noqa: F811
    body = _request(pdp, pdp.session())
    r = pdp.w.http.post("/access/v1/evaluation", json=body, headers=_auth(pdp))
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert len(r.headers["x-request-id"]) == 16  # assigned when the PEP sends none
    assert r.json()["decision"] is True
    assert "trace" not in r.json()["context"]
    assert pdp.recorder.records[-1].request_id == r.headers["x-request-id"]
    r = pdp.w.http.post("/access/v1/evaluation?explain=1", json=body, headers=_auth(pdp))
    assert r.json()["context"]["trace"][0]["stage"] == "token"


def test_errors_stay_problem_json_and_limits_apply(pdp: Pdp) -> None:  # noqa: F811
    http = pdp.w.http
    r = http.post("/access/v1/evaluation", content=b"{not json", headers=_auth(pdp))
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "invalid_input"
    r = http.post("/access/v1/evaluations", json={"evaluations": 3}, headers=_auth(pdp))
    assert r.status_code == 400
    r = http.post("/access/v1/evaluation", json=_request(pdp, "x"))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="tessera"'
    big = b"[" + b"1," * 40_000 + b"1]"  # over TESSERA_MAX_REQUEST_BYTES (64 KiB)
    r = http.post("/access/v1/evaluation", content=big, headers=_auth(pdp))
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"
    # other methods fall through to the router
    assert http.get("/access/v1/evaluation", headers=_auth(pdp)).status_code == 405
    r = http.post("/access/v1/search/action", json={"subject": 1}, headers=_auth(pdp))
    assert r.status_code == 400


def test_a_batch_of_distinct_documents_spends_one_unit_per_allowed_decision(
    pdp: Pdp,  # noqa: F811
) -> None:
    token = pdp.session()
    sid = pdp.t.sessions.list_sessions(agent="planner")[0].sid
    granted = pdp.t.sessions.get_session(sid)[1]["tool_calls"]
    docs = ["1", "3", "2"] * 6  # 1 and 2 allowed, 3 denied (no relation)
    body = {
        "subject": _request(pdp, token)["subject"],
        "action": {"name": "docs/read"},
        "evaluations": [{"resource": {"type": "document", "id": d}} for d in docs],
    }
    r = pdp.w.http.post("/access/v1/evaluations", json=body, headers=_auth(pdp))
    answers = r.json()["evaluations"]
    allowed = [a["decision"] for a in answers]
    assert allowed.count(True) == granted  # 12 would be allowed, the budget has 10
    codes = [a["context"]["reasons"][0]["code"] for a in answers]
    related = [c for d, c in zip(docs, codes, strict=True) if d != "3"]
    assert related[granted:] == ["budget_exhausted"] * (len(related) - granted)
    assert {c for d, c in zip(docs, codes, strict=True) if d == "3"} == {"no_relation"}
    assert pdp.t.sessions.get_session(sid)[1]["tool_calls"] == 0
    assert len(pdp.recorder.records[-1].decisions) == len(docs)


def test_grouped_budgets_never_overspend_under_concurrency(pdp: Pdp) -> None:  # noqa: F811
    pdp.session()
    sid = pdp.t.sessions.list_sessions(agent="planner")[0].sid
    granted = pdp.t.sessions.get_session(sid)[1]["tool_calls"]
    budgets = GroupedSessionBudgets(pdp.t.store)
    results: list[bool] = []
    start = threading.Barrier(3 * granted)

    def spend() -> None:
        start.wait()
        results.append(budgets.consume(sid, {"tool_calls": 1}))

    threads = [threading.Thread(target=spend) for _ in range(3 * granted)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == granted
    assert pdp.t.sessions.get_session(sid)[1]["tool_calls"] == 0
    # several counters are all or nothing: external_calls is not granted, so nothing moves
    pdp.session()
    sid2 = next(s.sid for s in pdp.t.sessions.list_sessions(agent="planner") if s.sid != sid)
    left = pdp.t.sessions.get_session(sid2)[1]["tool_calls"]
    assert budgets.consume(sid2, {"tool_calls": 1, "external_calls": 1}) is False
    assert pdp.t.sessions.get_session(sid2)[1]["tool_calls"] == left


def test_grouped_budget_write_is_one_driver_transaction(pdp: Pdp) -> None:  # noqa: F811
    """``SqlStore.take_budgets`` (the grouped write through the raw driver): each ask its
    own answer in order; a driver error anywhere rolls back the whole group."""
    pdp.session()
    sid = pdp.t.sessions.list_sessions(agent="planner")[0].sid
    left = pdp.t.sessions.get_session(sid)[1]["tool_calls"]
    store = pdp.t.store
    asks = [(sid, "tool_calls", 1), (sid, "tool_calls", left), (sid, "missing", 1)]
    asks += [(sid, "tool_calls", left - 1), ("ses_nope", "tool_calls", 1)]
    assert store.take_budgets(asks) == [True, False, False, True, False]
    assert pdp.t.sessions.get_session(sid)[1]["tool_calls"] == 0
    pdp.session()
    sid2 = next(s.sid for s in pdp.t.sessions.list_sessions(agent="planner") if s.sid != sid)
    left2 = pdp.t.sessions.get_session(sid2)[1]["tool_calls"]
    with pytest.raises(StoreUnavailable):  # the second ask cannot be bound by the driver
        store.take_budgets([(sid2, "tool_calls", 1), (sid2, "tool_calls", object())])  # type: ignore[list-item]
    assert pdp.t.sessions.get_session(sid2)[1]["tool_calls"] == left2  # nothing spent
    assert store.take_budgets([(sid2, "tool_calls", 1)]) == [True]  # the store still works
    assert pdp.t.sessions.get_session(sid2)[1]["tool_calls"] == left2 - 1


def test_coroutines_and_threads_share_the_budget_groups(pdp: Pdp) -> None:  # noqa: F811
    """``consume_async`` (decisions.md 91) queues beside the threads: together they never
    spend more than was granted, whoever leads a group (a thread or the writer thread)."""
    pdp.session()
    sid = pdp.t.sessions.list_sessions(agent="planner")[0].sid
    granted = pdp.t.sessions.get_session(sid)[1]["tool_calls"]
    budgets = GroupedSessionBudgets(pdp.t.store)
    from_threads: list[bool] = []

    def spend() -> None:
        for _ in range(granted):
            from_threads.append(budgets.consume(sid, {"tool_calls": 1}))

    async def spend_async() -> list[bool]:
        return list(
            await asyncio.gather(
                *(budgets.consume_async(sid, {"tool_calls": 1}) for _ in range(2 * granted))
            )
        )

    threads = [threading.Thread(target=spend) for _ in range(2)]
    for t in threads:
        t.start()
    from_loop = asyncio.run(spend_async())
    for t in threads:
        t.join()
    assert (from_threads + from_loop).count(True) == granted
    assert pdp.t.sessions.get_session(sid)[1]["tool_calls"] == 0
    assert asyncio.run(budgets.consume_async(sid, {"tool_calls": 1})) is False
    # several counters: all or nothing, alone (external_calls is not granted)
    pdp.session()
    sid2 = next(s.sid for s in pdp.t.sessions.list_sessions(agent="planner") if s.sid != sid)
    left = pdp.t.sessions.get_session(sid2)[1]["tool_calls"]
    both = {"tool_calls": 1, "external_calls": 1}
    assert asyncio.run(budgets.consume_async(sid2, both)) is False
    assert asyncio.run(budgets.consume_async(sid2, {"tool_calls": 1})) is True
    assert pdp.t.sessions.get_session(sid2)[1]["tool_calls"] == left - 1


class _BrokenStore:
    @contextmanager
    def write(self) -> Iterator[Any]:
        raise StoreUnavailable("the store is down")
        yield  # pragma: no cover


def test_grouped_budgets_fail_closed() -> None:
    budgets = GroupedSessionBudgets(_BrokenStore())
    with pytest.raises(StoreUnavailable):
        budgets.consume("ses_x", {"tool_calls": 1})
    assert budgets.consume("ses_x", {}) is True  # nothing asked, nothing to write

    async def spend() -> list[Any]:
        asks = (budgets.consume_async("ses_x", {"tool_calls": 1}) for _ in range(5))
        return list(await asyncio.gather(*asks, return_exceptions=True))

    assert all(isinstance(r, StoreUnavailable) for r in asyncio.run(spend()))


def test_cached_callers_are_forgotten_on_credential_events(pdp: Pdp) -> None:  # noqa: F811
    reg = pdp.t.identity.register_service("pep2", scopes=["pdp.evaluate"], api_key=True, actor="t")
    assert reg.value.api_key is not None
    auth = f"Bearer {reg.value.api_key.secret}"
    callers = pdp.t.pdp.callers
    pdp.t.tailer.ensure_fresh()  # service.registered has reached the node's caches
    now = time.time()  # fixed: the API key TTL never runs out in this test
    assert callers.authenticate(auth, now).service_id == reg.value.service.id
    assert callers.cached(auth, now) is not None
    cred = pdp.t.identity.list_credentials("service", "pep2")[0]
    pdp.t.identity.disable_credential(cred.id, actor="t")
    # the node's event tailer delivers credential.disabled to the cache (app wiring)
    pdp.t.tailer.ensure_fresh()
    assert callers.cached(auth, now) is None
    with pytest.raises(Unauthenticated):
        callers.authenticate(auth, now)
    # events about other things keep the cache
    other = pdp.t.pdp.callers
    other.authenticate(f"Bearer {pdp.service_token}", now)
    other.on_events(None, [SimpleNamespace(type="service_token.issued")])
    assert other.cached(f"Bearer {pdp.service_token}", now) is not None


def test_the_shortcut_honours_a_root_path(pdp: Pdp) -> None:  # noqa: F811
    from fastapi.testclient import TestClient

    behind_proxy = TestClient(pdp.w.http.app, root_path="/pdp")
    body = _request(pdp, pdp.session())
    # servers differ on whether ``path`` includes ``root_path`` (ASGI spec: it does)
    for path in ("/pdp/access/v1/evaluation", "/access/v1/evaluation"):
        r = behind_proxy.post(path, json=body, headers=_auth(pdp))
        assert r.status_code == 200, r.text
        assert r.json()["decision"] is True
