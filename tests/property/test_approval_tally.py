"""Dual control as a property (issue 8): for any sequence of votes, a request is approved
exactly when N distinct people approved and nobody denied; the first denial denies."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.approvals.test_model import _req

from tessera.approvals.model import Vote, tally

NOW = datetime(2026, 1, 1, tzinfo=UTC)
votes = st.lists(
    st.tuples(st.sampled_from(["u1", "u2", "u3", "u4"]), st.sampled_from(["approve", "deny"])),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(votes=votes, required=st.integers(min_value=1, max_value=4))
def test_tally_matches_the_rule(votes: list[tuple[str, str]], required: int) -> None:
    req = replace(_req(), required=required)
    cast = [Vote(who, d, "passkey", "", NOW) for who, d in votes]  # type: ignore[arg-type]
    got = tally(req, cast)
    if any(d == "deny" for _, d in votes):
        assert got == "denied"
    elif len({who for who, d in votes if d == "approve"}) >= required:
        assert got == "approved"
    else:
        assert got == "pending"
    # Appending votes never turns a denial into anything else.
    if got == "denied":
        assert tally(req, [*cast, Vote("u9", "approve", "passkey", "", NOW)]) == "denied"
