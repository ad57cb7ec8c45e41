"""``policy apply`` and the ReBAC service's active model on SQLite and PostgreSQL
(decisions.md 85): a bundle pinning another model is refused unless its model is applied in
the same transaction, a model the active bundle does not pin is refused unless forced
(decisions.md 89), and decisions under a bundle whose pinned model is no longer the active
one deny with ``model_mismatch``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tessera.app import Tessera
from tessera.pdp.agents import Caller
from tessera.pdp.model import parse_evaluation
from tessera.policy.bundle import read_bundle_dir
from tessera.policy.service import POLICY_APPLIED, ModelMismatch
from tessera.rebac.ports import RelationTuple
from tessera.rebac.storage import MODEL_APPLIED

BUNDLE = Path(__file__).resolve().parents[2] / "examples" / "policy-bundle"
CALLER = Caller("svc_1", "pep", "token")
OTHER_MODEL = (BUNDLE / "model.fga").read_text() + "\ntype project\n"


def _types(t: Tessera) -> list[tuple[int, str]]:
    with t.store.read() as tx:
        return [
            (e.seq, e.type)
            for e in tx.events.read_after(0)
            if e.type in (POLICY_APPLIED, MODEL_APPLIED)
        ]


def _ask(t: Tessera, action: str) -> list[str]:
    req = parse_evaluation(
        {
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": action},
            "resource": {"type": "document", "id": "1"},
        }
    )
    return [f"{d.verdict}:{r.code}" for d in [t.pdp.point.decide(req, CALLER)] for r in d.reasons]


def test_apply_refuses_a_bundle_pinning_another_model(tessera: Tessera) -> None:
    t = tessera
    files = read_bundle_dir(BUNDLE)
    with pytest.raises(ModelMismatch) as no_model:
        t.pdp.policies.apply(files, actor="test")
    assert "the active model is none" in no_model.value.message
    t.rebac.apply_model(OTHER_MODEL, actor="test")
    with pytest.raises(ModelMismatch) as other:
        t.pdp.policies.apply(files, actor="test")
    assert other.value.status == 409
    assert other.value.code == "policy_model_mismatch"
    assert "the active model is sha256:" in other.value.message
    assert t.pdp.policies.versions() == []  # nothing of a refused apply was written
    assert [typ for _, typ in _types(t)] == [MODEL_APPLIED]


def test_with_model_applies_the_model_and_the_bundle_together(tessera: Tessera) -> None:
    t = tessera
    t.rebac.apply_model(OTHER_MODEL, actor="test")
    stored = t.pdp.policies.apply(read_bundle_dir(BUNDLE), actor="test", with_model=True)
    assert stored.version == 1
    active = t.rebac.active_model()
    assert active.dsl == (BUNDLE / "model.fga").read_text()
    (_, first), (policy_seq, policy), (model_seq, model) = _types(t)
    assert (first, policy, model) == (MODEL_APPLIED, POLICY_APPLIED, MODEL_APPLIED)
    assert model_seq == policy_seq + 1  # one transaction
    # The same bundle again: its model is the active one, so no flag and no new model.
    t.pdp.policies.apply(read_bundle_dir(BUNDLE), actor="test")
    assert len(t.rebac.list_models()) == 2
    t.rebac.write_tuples([RelationTuple("document:1", "viewer", "user:alice")], actor="test")
    assert _ask(t, "docs/read") == ["allow:permit"]


def test_a_failed_model_write_leaves_nothing(tessera: Tessera) -> None:
    t = tessera

    class Broken:
        def apply_model_in(self, tx: Any, source: str, *, actor: str) -> Any:
            tx.events.append(MODEL_APPLIED, "rbm_x", {}, actor)
            raise RuntimeError("disk full")

    t.pdp.policies.models = Broken()
    with pytest.raises(RuntimeError):
        t.pdp.policies.apply(read_bundle_dir(BUNDLE), actor="test", with_model=True)
    assert t.pdp.policies.versions() == []
    assert _types(t) == []


def test_decisions_deny_once_another_model_becomes_active(tessera: Tessera) -> None:
    t = tessera
    t.pdp.policies.apply(read_bundle_dir(BUNDLE), actor="test", with_model=True)
    t.rebac.write_tuples([RelationTuple("document:1", "viewer", "user:alice")], actor="test")
    assert _ask(t, "docs/read") == ["allow:permit"]
    # e.g. `tessera rebac model apply --force` (decisions.md 89)
    t.rebac.apply_model(OTHER_MODEL, actor="rebac-admin", force=True)
    assert _ask(t, "docs/read") == ["deny:model_mismatch"]
    assert _ask(t, "docs/search") == ["allow:permit"]  # Cedar only: no relation to check
    t.pdp.policies.apply(read_bundle_dir(BUNDLE), actor="test", with_model=True)
    t.clock.advance(2)  # the active bundle is re-read at most once a second
    assert _ask(t, "docs/read") == ["allow:permit"]


def test_a_model_the_active_bundle_does_not_pin_is_refused(tessera: Tessera) -> None:
    t = tessera
    t.rebac.apply_model(OTHER_MODEL, actor="test")  # no bundle yet: nothing pins a model
    t.pdp.policies.apply(read_bundle_dir(BUNDLE), actor="test", with_model=True)
    pinned = t.rebac.active_model()
    events = _types(t)
    with pytest.raises(ModelMismatch) as refused:
        t.rebac.apply_model(OTHER_MODEL, actor="rebac-admin")
    assert refused.value.status == 409
    assert refused.value.code == "policy_model_mismatch"
    assert "the active policy bundle (version 1) pins ReBAC model sha256:" in refused.value.message
    assert t.rebac.active_model().id == pinned.id  # nothing of the refused apply was written
    assert _types(t) == events
    assert t.rebac.pinned_model_mismatch(pinned) is None
    # The pinned model itself needs no flag.
    again = t.rebac.apply_model((BUNDLE / "model.fga").read_text(), actor="rebac-admin")
    assert t.rebac.pinned_model_mismatch(again.value) is None
    forced = t.rebac.apply_model(OTHER_MODEL, actor="rebac-admin", force=True).value
    assert t.rebac.active_model().id == forced.id
    mismatch = t.rebac.pinned_model_mismatch(forced)
    assert mismatch is not None
    assert mismatch.version == 1
    # A bundle without a .fga pins nothing: any model may be applied after it.
    t.pdp.policies.apply(read_bundle_dir(BUNDLE.parent / "authzen-search"), actor="test")
    t.rebac.apply_model((BUNDLE / "model.fga").read_text(), actor="rebac-admin")


def test_activate_is_held_to_the_pinned_model_too(tessera: Tessera) -> None:
    """A rollback (``policy activate N``) is refused when version N pins a model other than
    the active one, with nothing changed, unless its model is made active with it."""
    t = tessera
    first = t.pdp.policies.apply(read_bundle_dir(BUNDLE), actor="test", with_model=True)
    files = read_bundle_dir(BUNDLE)
    (fga,) = [name for name in files if name.endswith(".fga")]
    files[fga] = OTHER_MODEL
    second = t.pdp.policies.apply(files, actor="test", with_model=True)
    assert t.rebac.active_model().dsl == OTHER_MODEL
    before = _types(t)
    with pytest.raises(ModelMismatch) as refused:
        t.pdp.policies.activate(first.version, actor="test")
    assert refused.value.code == "policy_model_mismatch"
    assert _types(t) == before  # no event, no change
    assert [v.version for v in t.pdp.policies.versions() if v.active] == [second.version]
    t.pdp.policies.activate(first.version, actor="test", with_model=True)
    assert [v.version for v in t.pdp.policies.versions() if v.active] == [first.version]
    assert t.rebac.active_model().dsl == (BUNDLE / "model.fga").read_text()
    t.pdp.policies.activate(first.version, actor="test")  # its model is active now: no flag
    with pytest.raises(Exception, match="no policy version"):
        t.pdp.policies.activate(99, actor="test")
