"""WHEN parsing: a date, an ISO timestamp with T or a space, with or without a zone (naive = UTC)."""
from datetime import datetime, timezone

import pytest

from okta_flex_sync.analytics.timeparse import (
    WhenError,
    check_interval,
    check_not_future,
    format_instant,
    parse_when,
)


@pytest.mark.parametrize("value, instant", [
    ("2026-12-03", "2026-12-03T00:00:00Z"),
    ("2026-12-03T12:00:00", "2026-12-03T12:00:00Z"),
    ("2026-12-03 12:00:00", "2026-12-03T12:00:00Z"),
    ("2026-12-03T12:00", "2026-12-03T12:00:00Z"),
    ("2026-12-03 12:00:00.25", "2026-12-03T12:00:00.250000Z"),
    ("2026-12-03T12:00:00Z", "2026-12-03T12:00:00Z"),
    ("2026-12-03t12:00:00z", "2026-12-03T12:00:00Z"),
    ("2026-12-03T13:30:00+01:30", "2026-12-03T12:00:00Z"),
    ("2026-12-03T07:00:00-05:00", "2026-12-03T12:00:00Z"),
    ("2026-12-03T12:00:00+0000", "2026-12-03T12:00:00Z"),
    ("  2026-12-03  ", "2026-12-03T00:00:00Z"),
])
def test_parse_when(value, instant):
    assert format_instant(parse_when(value)) == instant


@pytest.mark.parametrize("value", ["", "yesterday", "2026-13-01", "2026-02-30", "12/03/2026", "2026-12-03T25:00",
                                   "2026-12-03T12:00:00 UTC", "1764763200", "2026-12-03T12:00:00+25:00"])
def test_unparseable_when_names_option_and_value(value):
    with pytest.raises(WhenError, match=r"--as-of must be a date .* got"):
        parse_when(value, "--as-of")


def test_future_and_reversed_intervals():
    now = datetime(2026, 12, 3, 12, tzinfo=timezone.utc)
    assert check_not_future(parse_when("2026-12-03T12:00"), "--as-of", now) == now
    with pytest.raises(WhenError, match="--to 2026-12-03T12:00:01Z is in the future"):
        check_not_future(parse_when("2026-12-03T12:00:01"), "--to", now)
    check_interval(now, now)
    with pytest.raises(WhenError, match="--from 2026-12-04T00:00:00Z is after --to 2026-12-03T12:00:00Z"):
        check_interval(parse_when("2026-12-04"), now)
