"""WHEN values of the data-team commands: a date, or an ISO timestamp with `T` or a space, with
or without a zone (naive means UTC).  Pure: no database, no pandas."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?", re.IGNORECASE)


class WhenError(ValueError):
    """A WHEN value that cannot be used; the message names the option and the value."""


def parse_when(value: str, option: str = "WHEN") -> datetime:
    """The instant `value` names, as an aware UTC datetime.

    `2026-12-03` is midnight UTC that day; `2026-12-03T12:00`, `2026-12-03 12:00:00.5` and
    `2026-12-03T13:00:00+01:00` are instants (naive means UTC, `Z` is accepted).
    """
    text = (value or "").strip()
    try:
        if _DATE.fullmatch(text):
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), timezone.utc)
        if _STAMP.fullmatch(text):
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "zZ" else text)
            if moment.tzinfo is None:
                return moment.replace(tzinfo=timezone.utc)
            return moment.astimezone(timezone.utc)
    except ValueError:
        pass
    raise WhenError(f"{option} must be a date (2026-12-03) or an ISO timestamp (2026-12-03T12:00:00, "
                    f"optionally with Z or +01:00); got {value!r}")


def check_not_future(moment: datetime, option: str, now: datetime) -> datetime:
    if moment > now:
        raise WhenError(f"{option} {format_instant(moment)} is in the future (now is {format_instant(now)})")
    return moment


def check_interval(start: datetime, end: datetime, start_option: str = "--from", end_option: str = "--to") -> None:
    if start > end:
        raise WhenError(f"{start_option} {format_instant(start)} is after {end_option} {format_instant(end)}")


def format_instant(moment: datetime) -> str:
    """`2026-12-03T12:00:00Z` (microseconds only when there are any)."""
    utc = moment.astimezone(timezone.utc) if moment.tzinfo else moment
    spec = "microseconds" if utc.microsecond else "seconds"
    return utc.replace(tzinfo=None).isoformat("T", spec) + "Z"


def to_storage(moment: datetime) -> datetime:
    """The naive UTC datetime the tables store (and bind parameters compare against)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


ONE_DAY = timedelta(days=1)
