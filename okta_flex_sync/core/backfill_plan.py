"""Backfill planning (pure): the range, the snapshots and intervals to rebuild, which System Log event dates which change, and the results."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta

from okta_flex_sync.core.history import (
    DELETED,
    HistoryState,
    changed_fields,
    in_interval,
)
from okta_flex_sync.core.system_log import (
    LOG_RETENTION,
    PROFILE_ATTRIBUTES,
    PROFILE_EVENT,
    LogEvent,
)
from okta_flex_sync.models.records import AppAssignment, OktaUser

LOG_SETTLE = timedelta(hours=1)  # a bounded query can miss late events: a day is final this long after it ends


SNAPSHOT_FLOWS = ("nightly-sync",)


class BackfillError(RuntimeError):
    """Backfill cannot run as asked."""


class BackfillRangeError(BackfillError, ValueError):
    """`start`/`end` do not describe a past range."""


class BackfillRefused(BackfillError):
    """Part of the range is beyond the System Log's retention and no stored raw pages cover it."""


def explained_fields(event: LogEvent, *, app_id: str | None, role_source: str, group_scoped: bool) -> frozenset[str]:
    """Tracked fields this event may have changed."""
    kind = event.event_type
    action = kind.rsplit(".", 1)[-1]
    app_roles = {"roles"} if role_source == "app_user" else set()
    if event.outcome not in (None, "SUCCESS"):
        return frozenset()
    if kind.startswith("application.user_membership."):
        if app_id is None or event.app_id != app_id:
            return frozenset()
        if action in ("add", "remove"):
            return frozenset({"assigned", "app_username", *app_roles})
        return frozenset({"app_username"}) if action == "change_username" else frozenset(app_roles)
    if kind.startswith("group.user_membership."):  # only GROUP-scoped assignments follow groups
        return frozenset({"assigned", "app_username", *app_roles}) if group_scoped and action in ("add", "remove") \
            else frozenset()
    if kind.startswith("user.lifecycle."):
        return frozenset({"status"})
    if kind == PROFILE_EVENT:
        names = PROFILE_ATTRIBUTES if event.changed is None else event.changed
        fields = {PROFILE_ATTRIBUTES[n] for n in names if n in PROFILE_ATTRIBUTES}
        if role_source != "user_type":
            fields.discard("roles")
        return frozenset(fields)
    return frozenset()


def drivers(field_name: str, prev: HistoryState | None, new: HistoryState) -> tuple[tuple[frozenset[str], ...], str]:
    """Which events can date a field's change (tiers, best first), and which field's earlier
    timing to keep when none can.  A tracked period that starts, or a deletion, moves every
    field at once; roles follow the assignment when it comes or goes."""
    if prev is None or (not prev.assigned and new.assigned):
        return (frozenset({"assigned"}),), "assigned"
    if new.status == DELETED:
        return (frozenset({"assigned", "status"}),), "status"
    if field_name == "assigned" or (field_name == "roles" and prev.assigned != new.assigned):
        # An unassignment is dated by its own event, else by the deactivation that caused it.
        tiers = (frozenset({"assigned"}),) + ((frozenset({"status"}),) if prev.status != new.status else ())
        return tiers, "assigned"
    return (frozenset({field_name}),), field_name


def change_times(prev: HistoryState | None, new: HistoryState, events: Iterable[LogEvent], *,
                 start: datetime | None, end: datetime, covered: Callable[[datetime, datetime], bool],
                 explain: Callable[[LogEvent], frozenset[str]], kept: Mapping[str, datetime],
                 default: datetime) -> dict[str, datetime]:
    """When each changed field took its new value, within `(start, end]`.

    The latest event that can explain the field wins, if the log is known complete after it;
    otherwise the time an earlier run chose (`kept`), otherwise `default`.
    """
    events = [e for e in events if in_interval(e.published, start, end)]
    times: dict[str, datetime] = {}
    for name in changed_fields(prev, new):
        tiers, keep = drivers(name, prev, new)
        times[name] = _pinned(events, tiers, explain, end, covered) or kept.get(keep) or default
    return times


def _pinned(events: Sequence[LogEvent], tiers, explain, end: datetime, covered) -> datetime | None:
    for tier in tiers:
        hits = [e.published for e in events if explain(e) & tier]
        if hits:
            latest = max(hits)
            return latest if covered(latest, end) else None
    return None


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time())
    return start, start + timedelta(days=1)


def log_window(day: date, now: datetime) -> tuple[datetime, datetime] | None:
    """The part of a day the System Log can still return, or None."""
    d0, d1 = day_bounds(day)
    since, until = max(d0, now - LOG_RETENTION), min(d1, now)
    return (since, until) if until - since >= timedelta(seconds=1) else None


def is_final(mark: tuple[datetime, datetime] | None, day: date) -> bool:
    """Whether a fetched day needs no second look: read to its end, late enough for late events."""
    if mark is None:
        return False
    fetched_until, fetched_at = mark
    d1 = day_bounds(day)[1]
    return fetched_until >= d1 and fetched_at >= d1 + LOG_SETTLE


@dataclass(frozen=True)
class Coverage:
    """Stretches of time whose System Log events are stored, as merged `[from, until)` spans."""

    spans: tuple[tuple[datetime, datetime], ...] = ()

    @classmethod
    def from_marks(cls, marks: Mapping[date, tuple[datetime, datetime]]) -> Coverage:
        spans: list[list[datetime]] = []
        for day in sorted(marks):
            d0, d1 = day_bounds(day)
            until = min(marks[day][0], d1)
            if until <= d0:
                continue
            if spans and spans[-1][1] >= d0:
                spans[-1][1] = max(spans[-1][1], until)
            else:
                spans.append([d0, until])
        return cls(tuple((a, b) for a, b in spans))

    def covers(self, after: datetime, until: datetime) -> bool:
        """Whether every event in `(after, until]` would be stored."""
        return any(a <= after and until < b for a, b in self.spans)


def check_range(start: date, end: date, *, today: date) -> None:
    if start > end:
        raise BackfillRangeError(f"backfill start {start} is after end {end}")
    if end > today:
        raise BackfillRangeError(f"backfill end {end} is in the future (today is {today} UTC)")


def as_day(value: date | datetime | str, name: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise BackfillRangeError(f"backfill {name} must be a date like 2026-10-01, not {str(value)[:40]!r}") from None


def date_ranges(days: Iterable[date]) -> str:
    """'2026-01-01..2026-01-03, 2026-01-07' for a list of days."""
    out: list[list[date]] = []
    for d in sorted(days):
        if out and d - out[-1][1] == timedelta(days=1):
            out[-1][1] = d
        else:
            out.append([d, d])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in out)


@dataclass(frozen=True, slots=True)
class Snapshot:
    run_id: str
    started_at: datetime
    full: bool
    has_raw: bool


@dataclass(frozen=True, slots=True)
class Interval:
    """`(start, end]` between snapshot `index - 1` and snapshot `index`; no start before the first."""

    index: int
    start: datetime | None
    end: datetime


def plan_intervals(snapshots: Sequence[Snapshot], first_day: date, last_day: date) -> dict[date, list[Interval]]:
    """The intervals a range rebuilds, by the day that handles them: the day each one ends, or
    the last day for the one spanning the range's end."""
    w0, w1 = day_bounds(first_day)[0], day_bounds(last_day)[1]
    out: dict[date, list[Interval]] = {}
    for i, snap in enumerate(snapshots):
        start = snapshots[i - 1].started_at if i else None
        end = snap.started_at
        if not snap.has_raw or end < w0 or (start is not None and (start >= w1 or end <= start)):
            continue
        out.setdefault(end.date() if end < w1 else last_day, []).append(Interval(i, start, end))
    return out


def raw_spans(snapshots: Sequence[Snapshot]) -> list[tuple[datetime, datetime]]:
    """Where stored raw pages say something: each stored snapshot, and the stretch before it
    back to the previous nightly run."""
    out = []
    for i, snap in enumerate(snapshots):
        if snap.has_raw:
            out.append((snapshots[i - 1].started_at if i else snap.started_at, snap.started_at))
    return out


def uncovered_days(days: Iterable[date], spans: Sequence[tuple[datetime, datetime]], *, now: datetime) -> list[date]:
    """Days wholly older than the log's retention that no raw-page span touches."""
    cutoff = now - LOG_RETENTION
    out = []
    for day in days:
        d0, d1 = day_bounds(day)
        if d1 <= cutoff and not any(a < d1 and b >= d0 for a, b in spans):
            out.append(day)
    return out


def baseline_index(snapshots: Sequence[Snapshot], first: int) -> int:
    """Where the replay starts: the latest full snapshot at or before `first`, else the earliest stored one."""
    for j in range(first, -1, -1):
        if snapshots[j].has_raw and snapshots[j].full:
            return j
    return next(j for j, s in enumerate(snapshots) if s.has_raw)


def pseudo_user(state: HistoryState) -> OktaUser:
    """A user record rebuilt from history, for a user an incremental snapshot did not list."""
    return OktaUser(state.okta_user_id, state.status, state.login, state.email, state.full_name, None, state.roles,
                    "", None, None)


@dataclass
class Observation:
    """The org as one snapshot saw it."""

    snapshot: Snapshot
    users: Mapping[str, OktaUser]  # everyone known (full run: its listing; incremental: carried forward)
    assignments: Mapping[str, AppAssignment]
    previous_assignments: Mapping[str, AppAssignment]  # the snapshot before, {} when unknown


@dataclass
class DaySummary:
    day: date
    log: str = "not read"  # fetched / already fetched / outside retention / nothing to read yet
    events: int = 0  # relevant System Log events read for the day
    intervals: int = 0  # nightly runs whose changes this day placed
    users_changed: int = 0
    rows_opened: int = 0  # rows inserted
    rows_closed: int = 0  # stored rows given a new end
    rows_removed: int = 0  # stored rows replaced by better-timed ones

    def as_dict(self) -> dict:
        return {**asdict(self), "day": self.day.isoformat()}


@dataclass
class BackfillResult:
    start: date
    end: date
    dry_run: bool
    run_id: str | None
    days: int = 0
    events: int = 0
    users_changed: int = 0
    rows_opened: int = 0
    rows_closed: int = 0
    rows_removed: int = 0
    per_day: list[DaySummary] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.rows_opened or self.rows_closed or self.rows_removed)

    @classmethod
    def of(cls, start: date, end: date, dry_run: bool, run_id: str | None, per_day: list[DaySummary]) -> BackfillResult:
        total = {k: sum(getattr(d, k) for d in per_day)
                 for k in ("events", "users_changed", "rows_opened", "rows_closed", "rows_removed")}
        return cls(start, end, dry_run, run_id, days=len(per_day), per_day=list(per_day), **total)

    def __str__(self) -> str:
        return (f"{self.days} day(s), {self.events} System Log event(s), {self.users_changed} user(s) changed: "
                f"{self.rows_opened} row(s) opened, {self.rows_closed} closed, {self.rows_removed} removed"
                f"{' (dry run: nothing written)' if self.dry_run else ''}")

    def as_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "dry_run": self.dry_run,
                "run_id": self.run_id, "days": self.days, "events": self.events, "users_changed": self.users_changed,
                "rows_opened": self.rows_opened, "rows_closed": self.rows_closed, "rows_removed": self.rows_removed,
                "per_day": [d.as_dict() for d in self.per_day]}

