"""The identity registry and event log behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from tessera.app import Tessera
from tessera.clock import ManualClock
from tessera.crypto.hashing import hash_token
from tessera.crypto.keys import generate_signing_key
from tessera.errors import Conflict, InvalidInput, NotFound
from tessera.identity.model import AgentStatus, CredentialStatus, ModelStatus
from tessera.signals.events import decode_consistency_token

DIGEST = "sha256:" + "ab" * 32


def _base(t: Tessera) -> None:
    t.identity.create_operator("acme", "Acme", actor="test")
    t.identity.create_user("alice", grants={"tools": ["fs/*"]}, actor="test")
    t.identity.register_model("acme", "llm", "1.0", DIGEST, actor="test")


def _agent(t: Tessera, name: str = "bot", **kw: object) -> str:
    args: dict[str, object] = {
        "operator": "acme",
        "owner": "alice",
        "purpose": "testing",
        "expires_in_days": 30,
        "jwk": generate_signing_key().public_jwk(),
    }
    args.update(kw)
    return t.identity.register_agent(name, actor="test", **args).value.agent.id  # type: ignore[arg-type]


def test_every_write_appends_an_event_and_returns_its_consistency_token(tessera: Tessera) -> None:
    head = tessera.store.event_head()
    w = tessera.identity.create_operator("acme", None, actor="test")
    assert w.consistency_token is not None
    seq = decode_consistency_token(w.consistency_token)
    assert seq == head + 1
    events = tessera.store.read_events_after(head)
    assert [(e.seq, e.type, e.subject, e.actor) for e in events] == [
        (seq, "operator.created", w.value.id, "test")
    ]


def test_event_sequence_is_gapless_and_ordered(tessera: Tessera) -> None:
    _base(tessera)
    for i in range(5):
        _agent(tessera, f"bot{i}")
    events = tessera.store.read_events_after(0, limit=1000)
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # paging with read_after returns the rest exactly once
    first = tessera.store.read_events_after(0, limit=3)
    rest = tessera.store.read_events_after(first[-1].seq, limit=1000)
    assert [e.seq for e in first + rest] == seqs


def test_lookups_by_id_and_name(tessera: Tessera) -> None:
    _base(tessera)
    agent_id = _agent(tessera)
    assert tessera.identity.get_agent(agent_id).name == "bot"
    assert tessera.identity.get_agent("bot").id == agent_id
    assert tessera.identity.get_user("alice").grants.tools == frozenset({"fs/*"})
    assert tessera.identity.get_model(DIGEST).version == "1.0"
    with pytest.raises(NotFound):
        tessera.identity.get_agent("nobody")


def test_duplicate_names_conflict_and_write_nothing(tessera: Tessera) -> None:
    _base(tessera)
    _agent(tessera)
    head = tessera.store.event_head()
    with pytest.raises(Conflict):
        _agent(tessera)  # same name
    with pytest.raises(Conflict):
        tessera.identity.create_operator("acme", None, actor="test")
    assert tessera.store.event_head() == head
    with tessera.store.read() as tx:
        creds = [c for a in tx.agents.list() for c in tx.credentials.list_for("agent", a.id)]
    assert len(creds) == 1


def test_failed_registration_leaves_no_partial_write(tessera: Tessera) -> None:
    _base(tessera)
    head = tessera.store.event_head()
    with pytest.raises(InvalidInput):
        _agent(tessera, ceiling={"models": ["sha256:" + "cd" * 32]})  # unregistered digest
    with pytest.raises(NotFound):
        _agent(tessera, owner="mallory")
    assert tessera.store.event_head() == head
    assert tessera.identity.list_agents() == []


def test_lifecycle_state_machine(tessera: Tessera) -> None:
    _base(tessera)
    _agent(tessera)
    assert tessera.identity.suspend_agent("bot", "investigating", actor="t").value.status == (
        AgentStatus.SUSPENDED
    )
    with pytest.raises(Conflict):
        tessera.identity.suspend_agent("bot", actor="t")
    assert tessera.identity.resume_agent("bot", actor="t").value.status == AgentStatus.ACTIVE
    w = tessera.identity.decommission_agent("bot", "retired", actor="t")
    assert w.value.status == AgentStatus.DECOMMISSIONED
    for op in (tessera.identity.resume_agent, tessera.identity.suspend_agent):
        with pytest.raises(Conflict):
            op("bot", actor="t")
    # retrying a decommission is safe and writes nothing
    head = tessera.store.event_head()
    again = tessera.identity.decommission_agent("bot", actor="t")
    assert again.value.status == AgentStatus.DECOMMISSIONED
    assert again.consistency_token is None
    assert tessera.store.event_head() == head


def test_decommission_disables_every_credential_in_the_same_transaction(tessera: Tessera) -> None:
    _base(tessera)
    agent_id = _agent(tessera, spiffe_id="spiffe://acme.example/bot")
    tessera.identity.add_agent_credential("bot", jwk=generate_signing_key().public_jwk(), actor="t")
    w = tessera.identity.decommission_agent("bot", actor="t")
    creds = tessera.identity.list_credentials("agent", agent_id)
    assert len(creds) == 3
    assert {c.status for c in creds} == {CredentialStatus.DISABLED}
    event = tessera.store.read_events_after(decode_consistency_token(w.consistency_token) - 1)[0]
    assert event.type == "agent.decommissioned"
    assert sorted(event.payload["credentials_disabled"]) == sorted(c.id for c in creds)


def test_operator_suspension_is_a_kill_switch(tessera: Tessera) -> None:
    _base(tessera)
    _agent(tessera, "a1")
    _agent(tessera, "a2")
    w = tessera.identity.suspend_operator("acme", "incident", actor="t")
    event = tessera.store.read_events_after(decode_consistency_token(w.consistency_token) - 1)[0]
    assert event.type == "operator.suspended"
    assert len(event.payload["agents"]) == 2
    for agent in tessera.identity.list_agents():
        assert agent.status == AgentStatus.ACTIVE  # own status untouched
        assert tessera.identity.effective_agent_status(agent) == AgentStatus.SUSPENDED
    with pytest.raises(Conflict):
        _agent(tessera, "a3")  # no new agents under a suspended operator
    tessera.identity.resume_operator("acme", actor="t")
    agent = tessera.identity.get_agent("a1")
    assert tessera.identity.effective_agent_status(agent) == AgentStatus.ACTIVE


def test_agent_expiry_is_mandatory_and_bounded(tessera: Tessera, clock: ManualClock) -> None:
    _base(tessera)
    with pytest.raises(InvalidInput):
        _agent(tessera, expires_in_days=None)
    with pytest.raises(InvalidInput):
        _agent(tessera, expires_in_days=10_000)
    with pytest.raises(InvalidInput):
        _agent(tessera, expires_in_days=None, expires_at=clock.now() - timedelta(seconds=1))
    _agent(tessera, expires_in_days=None, expires_at=clock.now() + timedelta(days=2))
    agent = tessera.identity.get_agent("bot")
    assert agent.expires_at == clock.now() + timedelta(days=2)
    assert not agent.is_expired(clock.now())
    clock.advance(days=3)
    assert tessera.identity.get_agent("bot").is_expired(clock.now())


def test_model_revocation(tessera: Tessera) -> None:
    _base(tessera)
    w = tessera.identity.revoke_model(DIGEST, "weights leaked", actor="t")
    assert w.value.status == ModelStatus.REVOKED
    with pytest.raises(Conflict):
        tessera.identity.revoke_model(DIGEST, actor="t")
    with pytest.raises(Conflict):
        tessera.identity.register_model("acme", "llm", "1.1", DIGEST, actor="t")


def test_secrets_are_stored_only_as_hashes(tessera: Tessera) -> None:
    _base(tessera)
    reg = tessera.identity.register_agent(
        "legacy",
        operator="acme",
        owner="alice",
        purpose="old client",
        expires_in_days=5,
        legacy_secret=True,
        actor="t",
    ).value
    svc = tessera.identity.register_service(
        "gw", scopes=["pdp.evaluate"], api_key=True, actor="t"
    ).value
    assert reg.secret is not None
    assert svc.api_key is not None
    with tessera.store.read() as tx:
        raw = tx.connection.exec_driver_sql(
            "SELECT secret_hash FROM credentials WHERE secret_hash IS NOT NULL"
        ).all()
        events = tx.connection.exec_driver_sql("SELECT payload FROM events").all()
    stored = {r[0] for r in raw}
    assert reg.secret.secret not in stored
    assert svc.api_key.secret not in stored
    assert hash_token(svc.api_key.secret) in stored
    assert all(s.startswith(("scrypt$", "sha256:")) for s in stored)
    for (payload,) in events:
        assert reg.secret.secret not in payload
        assert svc.api_key.secret not in payload


def test_user_rights_source_fails_closed(tessera: Tessera) -> None:
    _base(tessera)
    alice = tessera.identity.get_user("alice")
    assert tessera.user_rights.rights_for(alice.id) == alice.grants
    tessera.identity.disable_user("alice", actor="t")
    assert tessera.user_rights.rights_for(alice.id) is None
    assert tessera.user_rights.rights_for("usr_unknown") is None


def test_concurrent_transitions_apply_once(tessera: Tessera) -> None:
    _base(tessera)
    _agent(tessera)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def suspend() -> None:
        barrier.wait()
        try:
            tessera.identity.suspend_agent("bot", actor="t")
            results.append("ok")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=suspend) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results.count("ok") == 1
    suspended = [e for e in tessera.store.read_events_after(0) if e.type == "agent.suspended"]
    assert len(suspended) == 1


def test_key_rotation_keeps_old_keys_published_until_their_tokens_expire(
    tessera: Tessera, clock: ManualClock
) -> None:
    first = tessera.keyring.active_key()
    rec = tessera.keyring.rotate("EdDSA", actor="t")
    assert tessera.keyring.active_key().kid == rec.kid != first.kid
    kids = [k["kid"] for k in tessera.keyring.jwks()["keys"]]
    assert kids == [rec.kid, first.kid]
    assert all("d" not in k for k in tessera.keyring.jwks()["keys"])
    clock.advance(seconds=3600 + 61)
    assert [k["kid"] for k in tessera.keyring.jwks()["keys"]] == [rec.kid]


def test_admin_tokens_verify_only_the_issued_token(tessera: Tessera) -> None:
    token_id, plain = tessera.admin_tokens.create("ops", actor="t")
    assert tessera.admin_tokens.verify(plain) == token_id
    assert tessera.admin_tokens.verify(plain + "x") is None
    assert tessera.admin_tokens.verify("tadm_" + "a" * 43) is None
    assert tessera.admin_tokens.verify("not-a-token") is None
