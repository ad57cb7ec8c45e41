"""Combining rules of the decision pipeline (DESIGN 5) over abstract stage outcomes:
deny overrides, errors deny, only the grant stage permits, later stages only tighten."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.pdp.combine import GRANT_STAGE, combine
from tessera.pdp.model import Reason, StageResult

STAGES = ["token", "limits", "rebac", "behaviour", GRANT_STAGE, "risk"]
OUTCOMES = ["allow", "deny", "approval_required", "error", "skip"]
STRICTNESS = {"skip": 0, "allow": 0, "approval_required": 1, "deny": 2, "error": 2}
RANK = {"allow": 0, "approval_required": 1, "deny": 2}

outcomes = st.lists(st.sampled_from(OUTCOMES), min_size=len(STAGES), max_size=len(STAGES))


def _results(outs: list[str]) -> list[StageResult]:
    return [
        StageResult(s, o, (Reason(s, f"{s}_{o}"),))  # type: ignore[arg-type]
        for s, o in zip(STAGES, outs, strict=True)
    ]


@settings(max_examples=400)
@given(outcomes)
def test_verdict_follows_the_rules(outs: list[str]) -> None:
    verdict, reasons = combine(_results(outs))
    grant = outs[STAGES.index(GRANT_STAGE)]
    if "error" in outs or "deny" in outs:
        assert verdict == "deny"
        # the reasons name the stages that denied or failed
        assert {r.stage for r in reasons} <= {
            s for s, o in zip(STAGES, outs, strict=False) if o in ("deny", "error")
        }
    elif grant != "allow":
        assert verdict == "deny"
        assert reasons[0].code == "no_permit"
    elif "approval_required" in outs:
        assert verdict == "approval_required"
    else:
        assert verdict == "allow"
    assert reasons, "every verdict carries a reason"


@settings(max_examples=400)
@given(outcomes, st.integers(0, len(STAGES) - 1), st.sampled_from(OUTCOMES))
def test_a_stricter_stage_never_loosens_the_verdict(outs: list[str], i: int, new: str) -> None:
    if STAGES[i] == GRANT_STAGE or STRICTNESS[new] < STRICTNESS[outs[i]]:
        return
    before, _ = combine(_results(outs))
    after, _ = combine(_results([*outs[:i], new, *outs[i + 1 :]]))
    assert RANK[after] >= RANK[before]


@given(outcomes)
def test_an_error_anywhere_is_a_deny_with_the_error_as_reason(outs: list[str]) -> None:
    outs = [*outs]
    outs[0] = "error"
    verdict, reasons = combine(_results(outs))
    assert verdict == "deny"
    assert any(r.code.endswith("_error") for r in reasons)
