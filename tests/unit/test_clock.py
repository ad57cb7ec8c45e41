"""``clock.iso``: the same text as ``isoformat`` in UTC, whatever came before it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from tessera.clock import iso, utc

ZONES = st.sampled_from(
    [UTC, None, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7, minutes=-30))]
)
# hypothesis takes naive bounds and adds the zone itself
LOW, HIGH = datetime(1970, 1, 2), datetime(9998, 12, 30)  # noqa: DTZ001
TIMES = st.datetimes(min_value=LOW, max_value=HIGH, timezones=ZONES)


def reference(dt: datetime) -> str:
    return utc(dt).isoformat().replace("+00:00", "Z")


@given(st.lists(TIMES, min_size=1, max_size=8))
def test_iso_is_isoformat_in_utc_after_any_earlier_call(times: list[datetime]) -> None:
    for dt in times:  # each call may reuse the text of the second before it
        assert iso(dt) == reference(dt)


def test_within_one_second_and_across_it() -> None:
    base = datetime(2026, 12, 3, 7, 59, 59, 999_999, tzinfo=UTC)
    assert iso(base) == "2026-12-03T07:59:59.999999Z"
    assert iso(base.replace(microsecond=0)) == "2026-12-03T07:59:59Z"
    assert iso(base + timedelta(microseconds=1)) == "2026-12-03T08:00:00Z"
    assert iso(base + timedelta(microseconds=2)) == "2026-12-03T08:00:00.000001Z"
    # the same wall second in another zone is another UTC second
    other = datetime(2026, 12, 3, 9, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    assert iso(other) == "2026-12-03T08:00:00.000005Z"
    naive = datetime(2026, 12, 3, 8, 0, 0, 5)  # noqa: DTZ001 - a naive value is taken as UTC
    assert iso(naive) == "2026-12-03T08:00:00.000005Z"
