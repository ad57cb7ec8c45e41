"""Pure approval rules (issue 8): the state machine's tally, vote checks, who may approve,
redaction, binding messages, the decision challenge and the bundle's approval rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tessera.approvals.model import (
    ApprovalRequest,
    ApprovalStateError,
    Vote,
    approval_challenge,
    binding_message,
    check_vote,
    eligible_approvers,
    group_key,
    redact,
    tally,
)
from tessera.policy.approval_rules import (
    DEFAULT_REDACT,
    annotation_approvers,
    parse_approval_policy,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _req(**kw: object) -> ApprovalRequest:
    base = ApprovalRequest(
        auth_req_id="areq_1",
        status="pending",
        origin="gateway",
        agent_id="agt_1",
        session_id="ses_1",
        user_id="usr_a",
        act_chain=("agt_1", "agt_0"),
        action="docs/publish",
        resource={"type": "document", "id": "7"},
        arguments={},
        argument_hash="sha256:" + "a" * 64,
        dpop_jkt="jkt",
        decision_id="dec_1",
        reasons=(),
        risk=None,
        binding_message="m",
        required=2,
        group_name=None,
        passkey_required=True,
        delivery="poll",
        group_key="k",
        repeats=1,
        interval=2,
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=5),
        candidates=("usr_a", "usr_b"),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _v(who: str, decision: str) -> Vote:
    return Vote(who, decision, "passkey", "", NOW)  # type: ignore[arg-type]


def test_tally_needs_n_distinct_approvers_and_the_first_denial_denies() -> None:
    r = _req()
    assert tally(r, [_v("usr_a", "approve")]) == "pending"
    assert tally(r, [_v("usr_a", "approve"), _v("usr_a", "approve")]) == "pending"
    assert tally(r, [_v("usr_a", "approve"), _v("usr_b", "approve")]) == "approved"
    assert tally(r, [_v("usr_a", "approve"), _v("usr_b", "deny")]) == "denied"
    assert tally(replace(r, required=1), [_v("usr_b", "deny")]) == "denied"


@pytest.mark.parametrize(
    ("req", "who", "method", "decision", "code"),
    [
        (_req(status="approved"), "usr_a", "passkey", "approve", "not_pending"),
        (_req(expires_at=NOW), "usr_a", "passkey", "approve", "expired"),
        (_req(), "agt_0", "admin", "approve", "not_an_approver"),  # in the act chain
        (_req(), "usr_c", "passkey", "approve", "not_an_approver"),
        (_req(), "admin:cli", "admin", "approve", "passkey_required"),
        (_req(), "usr_a", "dev", "approve", "passkey_required"),  # not a dev server
        (_req(votes=(_v("usr_a", "approve"),)), "usr_a", "passkey", "deny", "already_voted"),
    ],
)
def test_votes_that_may_not_count(
    req: ApprovalRequest, who: str, method: str, decision: str, code: str
) -> None:
    with pytest.raises(ApprovalStateError) as exc:
        check_vote(req, who, method, decision, NOW)
    assert exc.value.code == code


def test_admin_may_deny_and_may_approve_without_a_passkey_rule() -> None:
    check_vote(_req(), "admin:cli", "admin", "deny", NOW)
    check_vote(_req(passkey_required=False), "admin:cli", "admin", "approve", NOW)
    check_vote(_req(), "usr_a", "dev", "approve", NOW, accept_dev=True)


def test_who_may_approve() -> None:
    kw = {"group_members": None, "excluded": ("agt_1",)}
    assert eligible_approvers(required=1, user_id="usr_u", owner_id="usr_o", **kw) == ["usr_u"]
    assert eligible_approvers(required=1, user_id=None, owner_id="usr_o", **kw) == ["usr_o"]
    assert eligible_approvers(required=2, user_id="usr_u", owner_id="usr_o", **kw) == [
        "usr_u",
        "usr_o",
    ]
    assert eligible_approvers(required=2, user_id="usr_o", owner_id="usr_o", **kw) == ["usr_o"]
    group = eligible_approvers(
        required=2,
        user_id="usr_u",
        owner_id="usr_o",
        group_members=["usr_g1", "usr_g2", "agt_1"],
        excluded=("agt_1",),
    )
    assert group == ["usr_g1", "usr_g2"]


def test_redaction_is_deep_and_case_insensitive() -> None:
    shown = redact(
        {"Password": "x", "nested": [{"api_key": "k", "ok": 1}], "title": "t"}, DEFAULT_REDACT
    )
    assert shown == {
        "Password": "[redacted]",
        "nested": [{"api_key": "[redacted]", "ok": 1}],
        "title": "t",
    }


def test_binding_message_is_short_plain_and_names_the_action_and_hash() -> None:
    h = "sha256:" + "4f2a91c0" + "0" * 56
    msg = binding_message("finance/transfer", {"to": "acme\n", "amount": 1200, "x": "y" * 200}, h)
    assert msg.startswith("finance/transfer amount=1200")
    assert msg.endswith("[4F2A91C0]")
    assert len(msg) <= 80
    assert all(" " <= c <= "~" for c in msg)


def test_challenge_binds_every_part_of_the_decision() -> None:
    base = approval_challenge("areq_1", "sha256:a", "approve", "", "n")
    assert len(base) == 32
    for other in [
        approval_challenge("areq_2", "sha256:a", "approve", "", "n"),
        approval_challenge("areq_1", "sha256:b", "approve", "", "n"),
        approval_challenge("areq_1", "sha256:a", "deny", "", "n"),
        approval_challenge("areq_1", "sha256:a", "approve", "note", "n"),
        approval_challenge("areq_1", "sha256:a", "approve", "", "m"),
    ]:
        assert other != base


def test_group_key_ignores_resource_properties_but_not_the_call() -> None:
    a = group_key("agt", "ses", "x/y", {"type": "d", "id": "1", "properties": {"p": 1}}, "h", "j")
    assert a == group_key("agt", "ses", "x/y", {"type": "d", "id": "1"}, "h", "j")
    assert a != group_key("agt", "ses", "x/y", {"type": "d", "id": "2"}, "h", "j")
    assert a != group_key("agt", "ses", "x/y", {"type": "d", "id": "1"}, "h", "other-key")


def test_bundle_rules_parse_and_choose_the_requirement() -> None:
    problems: list[str] = []
    policy = parse_approval_policy(
        {
            "groups": {"fin": {"members": ["bob", "carol"], "webhook": "https://hooks.example/a"}},
            "rules": [
                {
                    "actions": ["finance/*"],
                    "approvers": 1,
                    "group": "fin",
                    "high_risk_approvers": 2,
                },
            ],
            "redact": ["IBAN"],
        },
        problems,
    )
    assert problems == []
    assert "iban" in policy.redact
    need = policy.requirement("finance/transfer")
    assert need is not None
    assert (need.approvers, need.group, need.source) == (1, "fin", "rule:0")
    high = policy.requirement("finance/transfer", risk_level="high")
    assert high is not None
    assert high.approvers == 2
    assert policy.requirement("docs/read") is None
    annotated = policy.requirement("docs/publish", annotated=[("p1", 2)])
    assert annotated is not None
    assert (annotated.approvers, annotated.source) == (2, "policy:p1")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"rules": [{"actions": []}]}, "actions"),
        ({"rules": [{"actions": ["a/b"], "approvers": 9}]}, "approvers"),
        ({"rules": [{"actions": ["a/b"], "group": "nope"}]}, "not defined"),
        ({"groups": {"g": {"members": "bob"}}}, "members"),
        ({"expiry": 5}, "expiry"),
        ({"surprise": 1}, "unknown keys"),
    ],
)
def test_bad_rules_are_reported(raw: dict[str, object], problem: str) -> None:
    problems: list[str] = []
    parse_approval_policy(raw, problems)
    assert any(problem in p for p in problems), problems


def test_annotation_values() -> None:
    assert annotation_approvers("required") == 1
    assert annotation_approvers("2") == 2
    assert annotation_approvers("9") is None
    assert annotation_approvers(None) is None
