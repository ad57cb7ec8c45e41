"""The event → SET mapping (decisions.md 30), row by row, and subject identifiers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tessera.errors import InvalidInput
from tessera.signals.caep import (
    ACCOUNT_DISABLED,
    ASSURANCE_LEVEL_CHANGE,
    CREDENTIAL_CHANGE,
    SESSION_REVOKED,
    TOKEN_CLAIMS_CHANGE,
    drafts_for,
    set_claims,
    subject_ids,
)
from tessera.signals.events import Event
from tessera.signals.model import check_subject, subject_key

ISS = "https://tessera.example"
WHEN = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class Directory:
    def session_owner(self, sid: str) -> tuple[str, str | None] | None:
        return {"ses_obo": ("agt_a", "usr_u"), "ses_auto": ("agt_a", None)}.get(sid)

    def user_email(self, user_id: str) -> str | None:
        return "u@example.com" if user_id == "usr_u" else None


def _e(type_: str, subject: str, payload: dict[str, Any], actor: str = "admin:tok") -> Event:
    return Event(7, type_, subject, payload, actor, WHEN)


def _one(e: Event) -> tuple[str, dict[str, Any], dict[str, Any]]:
    (d,) = drafts_for(e, ISS, Directory())
    return d.event_type, d.sub_id, d.event


def agent(ident: str) -> dict[str, Any]:
    return {"format": "iss_sub", "iss": ISS, "sub": ident}


USER = {
    "format": "aliases",
    "identifiers": [agent("usr_u"), {"format": "email", "email": "u@example.com"}],
}


def test_session_revoked_is_one_set_per_session_with_a_complex_subject() -> None:
    e = _e("session.revoked", "ses_obo", {"sessions": ["ses_obo", "ses_auto", "ses_gone"]})
    drafts = drafts_for(e, ISS, Directory())
    assert [d.event_type for d in drafts] == [SESSION_REVOKED] * 3
    obo, auto, gone = (d.sub_id for d in drafts)
    assert obo == {
        "format": "complex",
        "session": {"format": "opaque", "id": "ses_obo"},
        "user": USER,
        "application": agent("agt_a"),
    }
    assert auto == {
        "format": "complex",
        "session": {"format": "opaque", "id": "ses_auto"},
        "user": agent("agt_a"),
    }
    assert gone == {"format": "complex", "session": {"format": "opaque", "id": "ses_gone"}}
    assert {d.txn for d in drafts} == {"tessera-event-7"}
    assert drafts[0].event == {
        "event_timestamp": int(WHEN.timestamp()),
        "initiating_entity": "admin",
    }


@pytest.mark.parametrize(
    ("event", "expected_type", "expected_subject"),
    [
        (_e("agent.suspended", "agt_a", {"reason": "r"}), SESSION_REVOKED, agent("agt_a")),
        (_e("agent.decommissioned", "agt_a", {}), ACCOUNT_DISABLED, agent("agt_a")),
        (_e("user.disabled", "usr_u", {"username": "u"}), ACCOUNT_DISABLED, USER),
        (_e("user.disabled", "usr_x", {"username": "x"}), ACCOUNT_DISABLED, agent("usr_x")),
        (
            _e("agent.ceiling_changed", "agt_a", {"agent": "agt_a", "removed": {"tools": ["x"]}}),
            TOKEN_CLAIMS_CHANGE,
            agent("agt_a"),
        ),
        (_e("user.grants_changed", "usr_u", {"grants": {}}), TOKEN_CLAIMS_CHANGE, USER),
        (
            _e(
                "credential.added",
                "cred_1",
                {"owner_kind": "agent", "owner_id": "agt_a", "kind": "jwk"},
            ),
            CREDENTIAL_CHANGE,
            agent("agt_a"),
        ),
        (
            _e(
                "credential.disabled",
                "cred_1",
                {"owner_kind": "agent", "owner": "agt_a", "reason": "dormant"},
            ),
            CREDENTIAL_CHANGE,
            agent("agt_a"),
        ),
        (
            _e("model.revoked", "mdl_1", {"digest": "sha256:" + "a" * 64}),
            ASSURANCE_LEVEL_CHANGE,
            {"format": "opaque", "id": "sha256:" + "a" * 64},
        ),
    ],
)
def test_each_mapped_event(event: Event, expected_type: str, expected_subject: Any) -> None:
    event_type, sub_id, _body = _one(event)
    assert event_type == expected_type
    assert sub_id == expected_subject


def test_event_payload_members_follow_caep() -> None:
    _, _, added = _one(
        _e("credential.added", "c", {"owner_kind": "agent", "owner_id": "agt_a", "kind": "jwk"})
    )
    assert (added["credential_type"], added["change_type"]) == ("jwk", "create")
    _, _, off = _one(
        _e("credential.disabled", "c", {"owner": "agt_a", "reason": "dormant"}, "system")
    )
    assert (off["change_type"], off["reason_admin"], off["initiating_entity"]) == (
        "revoke",
        {"en": "dormant"},
        "system",
    )
    _, sub, risk = _one(
        _e(
            "risk.level_changed",
            "agt_a",
            {
                "agent": "agt_a",
                "session": "ses_1",
                "level": "high",
                "previous": "low",
                "reasons": ["drift", "volume"],
            },
        )
    )
    assert risk["principal"] == "SESSION"
    assert (risk["current_level"], risk["previous_level"]) == ("HIGH", "LOW")
    assert risk["risk_reason"] == "drift,volume"
    assert sub["session"] == {"format": "opaque", "id": "ses_1"}
    _, _, model = _one(_e("model.revoked", "m", {"digest": "sha256:x"}))
    assert model["namespace"] == "tessera-model-status"
    assert (model["previous_level"], model["current_level"], model["change_direction"]) == (
        "active",
        "revoked",
        "decrease",
    )
    _, _, claims = _one(_e("agent.ceiling_changed", "agt_a", {"removed": {"tools": ["a/b"]}}))
    assert claims["claims"] == {"tessera_ceiling_removed": {"tools": ["a/b"]}}


@pytest.mark.parametrize(
    "kind",
    ["session.issued", "agent.registered", "rebac.tuples_written", "policy.applied", "key.rotated"],
)
def test_events_without_a_signal_map_to_nothing(kind: str) -> None:
    assert drafts_for(_e(kind, "x", {}), ISS, Directory()) == []


def test_set_claims_follow_ssf_and_rfc8417() -> None:
    (draft,) = drafts_for(_e("agent.decommissioned", "agt_a", {}), ISS, Directory())
    claims = set_claims(draft, issuer=ISS, audience="svc_r", jti="j1", now=WHEN)
    assert set(claims) == {"iss", "aud", "iat", "jti", "txn", "sub_id", "events"}
    assert claims["events"] == {ACCOUNT_DISABLED: draft.event}


def test_subject_identifiers_flatten_and_validate() -> None:
    complex_ = {"format": "complex", "session": {"format": "opaque", "id": "s"}, "user": USER}
    assert subject_ids(complex_) == [
        {"format": "opaque", "id": "s"},
        agent("usr_u"),
        {"format": "email", "email": "u@example.com"},
    ]
    assert check_subject(complex_) == complex_
    assert subject_key(agent("a")) == subject_key({"sub": "a", "iss": ISS, "format": "iss_sub"})
    for bad in ({"format": "email"}, {"format": "nope", "id": "x"}, "x", {"format": "complex"}):
        with pytest.raises(InvalidInput):
            check_subject(bad)
