from __future__ import annotations

import json
from typing import Any

import pytest

from tessera.tokens.oauth_errors import OAuthError
from tessera.tokens.rar import (
    MAX_DETAILS_BYTES,
    MAX_LIST_ITEMS,
    SESSION_DETAILS_TYPE,
    parse_session_request,
    session_details_object,
)


def details(**kw: Any) -> list[dict[str, Any]]:
    return [{"type": SESSION_DETAILS_TYPE, **kw}]


def refused(value: Any, code: str = "invalid_authorization_details", **kw: Any) -> OAuthError:
    with pytest.raises(OAuthError) as info:
        parse_session_request(value, **kw)
    assert info.value.code == code
    return info.value


def test_parses_json_text() -> None:
    text = json.dumps(
        details(
            tools=["fs/read", "web/*"],
            deny=["web/post"],
            data_scope=["doc:42"],
            budgets={"tool_calls": 20},
        )
    )
    req = parse_session_request(text, audience=["svc-a"], lifetime=600)
    assert req.tools == {"fs/read", "web/*"}
    assert req.deny == {"web/post"}
    assert req.data_scope == {"doc:42"}
    assert dict(req.budgets) == {"tool_calls": 20}
    assert req.audience == {"svc-a"}
    assert req.lifetime == 600


def test_parses_a_decoded_list_and_bytes() -> None:
    assert parse_session_request(details(tools=["fs/read"])).tools == {"fs/read"}
    raw = json.dumps(details(tools=["fs/read"])).encode()
    assert parse_session_request(raw).tools == {"fs/read"}


def test_absent_parameter_is_an_empty_request() -> None:
    req = parse_session_request(None, audience="svc-a")
    assert req.tools == frozenset()
    assert req.data_scope == frozenset()
    assert req.audience == {"svc-a"}


def test_omitted_members_are_empty() -> None:
    req = parse_session_request(details())
    assert (req.tools, req.deny, req.data_scope, dict(req.budgets)) == (
        frozenset(),
        frozenset(),
        frozenset(),
        {},
    )


def test_budgets_are_read_only() -> None:
    req = parse_session_request(details(budgets={"tool_calls": 1}))
    with pytest.raises(TypeError):
        req.budgets["tool_calls"] = 5  # type: ignore[index]


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        "{",
        "[1,]",
        '{"type": "tessera_session"}',
        "[]",
        "[1]",
        '["x"]',
        '[{"type": "tessera_session", "tools": NaN}]',
        '[{"type": "tessera_session", "type": "tessera_session"}]',
    ],
)
def test_malformed_json_or_shape(value: str) -> None:
    refused(value)


def test_deeply_nested_json_is_refused_cleanly() -> None:
    refused("[" * 5000 + "]" * 5000)


def test_size_limit() -> None:
    err = refused("[" + " " * MAX_DETAILS_BYTES + "]")
    assert str(MAX_DETAILS_BYTES) in err.error_description


def test_unknown_type_is_refused_without_echoing_it() -> None:
    err = refused([{"type": "payment_initiation"}])
    assert "payment_initiation" not in err.error_description
    assert err.detail is not None
    assert "payment_initiation" in err.detail


@pytest.mark.parametrize("obj", [{}, {"type": 3}, {"type": ""}])
def test_missing_or_bad_type(obj: dict[str, Any]) -> None:
    refused([obj])


def test_two_session_objects_are_refused() -> None:
    refused(details(tools=["fs/read"]) + details(tools=["web/*"]))


@pytest.mark.parametrize(
    "member", ["locations", "actions", "datatypes", "identifier", "privileges"]
)
def test_common_rar_members_are_refused(member: str) -> None:
    err = refused(details(**{member: ["x"]}))
    assert member in err.error_description


def test_unknown_member_is_refused() -> None:
    refused(details(tools=["fs/read"], extra=True))


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("tools", "fs/read"),
        ("tools", ["fs"]),
        ("tools", ["fs/read/x"]),
        ("tools", [1]),
        ("tools", ["*/read"]),
        ("deny", ["bad"]),
        ("data_scope", ["doc"]),
        ("data_scope", ["doc:"]),
        ("data_scope", [None]),
        ("data_scope", {"doc": 1}),
    ],
)
def test_malformed_lists(member: str, value: Any) -> None:
    refused(details(**{member: value}))


def test_list_size_limit() -> None:
    refused(details(tools=[f"s/t{i}" for i in range(MAX_LIST_ITEMS + 1)]))
    ok = parse_session_request(details(tools=[f"s/t{i}" for i in range(MAX_LIST_ITEMS)]))
    assert len(ok.tools) == MAX_LIST_ITEMS


@pytest.mark.parametrize(
    "budgets",
    [
        [1],
        {"tool_calls": -1},
        {"tool_calls": 1.5},
        {"tool_calls": True},
        {"Tool": 1},
        {"tool_calls": "3"},
        {"tool_calls": 10**10},
    ],
)
def test_malformed_budgets(budgets: Any) -> None:
    refused(details(budgets=budgets))


def test_too_many_budget_counters() -> None:
    refused(details(budgets={f"c{i}": 1 for i in range(65)}))


@pytest.mark.parametrize(
    "audience", [[""], ["has space"], ["x" * 513], [f"a{i}" for i in range(17)], [3]]
)
def test_bad_audience_is_invalid_target(audience: Any) -> None:
    refused(None, code="invalid_target", audience=audience)


@pytest.mark.parametrize("lifetime", [0, -5, True, "60"])
def test_bad_lifetime_is_invalid_request(lifetime: Any) -> None:
    refused(None, code="invalid_request", lifetime=lifetime)


def test_details_object_is_sorted_and_round_trips() -> None:
    obj = session_details_object(
        tools={"b/x", "a/y"}, deny=set(), data_scope={"doc:2"}, budgets={"z": 1, "a": 2}
    )
    assert obj["tools"] == ["a/y", "b/x"]
    assert list(obj["budgets"]) == ["a", "z"]
    again = parse_session_request([obj])
    assert again.tools == {"a/y", "b/x"}
