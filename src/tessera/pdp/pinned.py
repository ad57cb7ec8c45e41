"""The bundle's pinned ReBAC model against the model the relations are answered with
(decisions.md 85): relations are evaluated only against the model the bundle's authors
tested (its ``*.fga``); any other active model, or none, is a deny with reason
``model_mismatch``, never an answer from a model the policies were not written for."""

from __future__ import annotations

from tessera.pdp.model import Reason
from tessera.pdp.ports import RelationChecker
from tessera.policy.bundle import PolicyBundle


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:19] + "…"


def model_mismatch(bundle: PolicyBundle, relations: RelationChecker) -> Reason | None:
    """The deny reason when ``relations`` does not answer with the bundle's pinned model."""
    pinned = bundle.rebac_model_digest
    if pinned is None:
        return None
    active = relations.model_digest()
    if active == pinned:
        return None
    return Reason(
        "rebac",
        "model_mismatch",
        f"the bundle pins ReBAC model {_short(pinned)}, the active model is {_short(active)}",
    )
