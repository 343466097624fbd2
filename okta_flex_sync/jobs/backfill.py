"""Backfill: rebuild role history for a past date range from stored raw pages and the Okta System Log.

Decisions, in the order the work happens:

* **Range.** Whole UTC days `start..end`, both included; `end` may be today, not later.  A day
  that ended more than 90 days ago (the System Log's retention) is accepted only when stored raw
  pages cover it; otherwise the whole range is refused before anything is written.
* **Snapshots.** Every succeeded nightly run whose raw pages (users + assignments) are still
  stored is a snapshot of the org at the run's `started_at`, normalized again with today's
  settings through the nightly run's own functions.  Incremental runs list only changed users, so
  the replay starts at the latest full run at or before the range (else the earliest stored run)
  and carries user records forward like the nightly user mirror.
* **Intervals.** History between two consecutive nightly runs, `(t[i-1], t[i]]`, is rebuilt as a
  unit: the state at `t[i-1]` is whatever history says, the state at `t[i]` is what snapshot i
  says (`history.desired_state`), and the rows starting inside the interval are replaced by the
  points that move one into the other (`history.splice`).  Rows outside the interval keep their
  values, so history stays contiguous with one current row after every step.  A range handles the
  intervals that end in it plus the one that spans its end; the first nightly run's interval
  starts at the beginning of time, so events alone say when the periods it found began.
* **Events.** Each day's System Log window is read once (bounded `since`/`until`, oldest first),
  filtered to assignment, group-membership, lifecycle and profile events, kept in
  `okta_log_events` (one row per uuid), and the day is marked in `watermarks` (stream
  `system-log:DAY`); a day is final only an hour after it ends (late events), earlier marks
  are fetched again.  For each field that differs between the two snapshots, the change time is
  the latest event in the interval that can explain it: assignment add/remove -> assigned and
  application username; `change_username` -> application username; lifecycle -> status;
  `update_profile` naming userType / firstName / lastName / email / login -> roles / full name /
  email / login (an event that names nothing may have changed any of them).  Fields move one by
  one, so a deactivation at 09:00 and an unassignment at 10:00 become two rows.  An event only
  counts when the log was read for everything after it up to `t[i]` (a later one could be
  missing otherwise).  Without one, the time an earlier run chose is kept (else the nightly rule,
  `history.effective_time`).
* **Writing.** Each day is one transaction under `okta_flex_sync.storage.lock.writer_lock`, the lock the
  nightly run holds for its whole run, so the two never interleave; backfill holds it for its
  whole run too.  New rows carry `source="backfill"` and this run's id.  A rebuilt point that
  matches a stored row keeps that row, so a second run over the same range changes nothing, and a
  run that died mid-range is resumed by running it again (fetched days are not fetched again).
* **Dry run.** Everything is computed (the log is read, not stored) and reported; nothing is
  written, not even a `sync_runs` row.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timedelta

from okta_flex_sync.clients.okta import OktaClient
from okta_flex_sync.core.backfill_plan import (
    SNAPSHOT_FLOWS,
    BackfillError,
    BackfillRefused,
    BackfillResult,
    Coverage,
    DaySummary,
    Interval,
    Observation,
    Snapshot,
    as_day,
    baseline_index,
    change_times,
    check_range,
    date_ranges,
    day_bounds,
    explained_fields,
    is_final,
    log_window,
    plan_intervals,
    pseudo_user,
    raw_spans,
    uncovered_days,
)
from okta_flex_sync.core.history import (
    HistoryRow,
    HistoryState,
    desired_state,
    effective_time,
    in_interval,
    is_assigned,
    last_set_times,
    row_edits,
    same_state,
    splice,
    stage_change,
    state_at,
)
from okta_flex_sync.core.normalize import (
    MalformedRecord,
    normalize_assignment,
    normalize_user,
)
from okta_flex_sync.core.run_summary import nothing_rebuilt_reason
from okta_flex_sync.core.system_log import (
    LOG_FILTER,
    LOG_RETENTION,
    LogEvent,
    event_from_row,
    event_row,
    parse_log_event,
)
from okta_flex_sync.jobs.lifecycle import running, writing
from okta_flex_sync.models.records import AppAssignment, OktaUser
from okta_flex_sync.observability import ProgressFn
from okta_flex_sync.redaction import redact
from okta_flex_sync.settings import ConfigError, Settings
from okta_flex_sync.storage import history as history_db
from okta_flex_sync.storage import log_events as log_db
from okta_flex_sync.storage import runs as runs_db
from okta_flex_sync.storage import staging as staging_db
from okta_flex_sync.storage.common import utcnow

log = logging.getLogger(__name__)




# --- System Log events (pure) --------------------------------------------------------------------


# --- when each field changed (pure) ----------------------------------------------------------------


# --- days and coverage (pure) --------------------------------------------------------------------


# --- snapshots and intervals ----------------------------------------------------------------------


class Replay:
    """Walks the stored snapshots forward, normalizing each once; restarts if asked to go back."""

    def __init__(self, engine, snapshots: Sequence[Snapshot], first: int, settings: Settings):
        self.engine, self.snapshots, self.first, self.settings = engine, snapshots, first, settings
        self._reset()

    def _reset(self) -> None:
        self._next = self.first
        self._users: dict[str, OktaUser] = {}
        self._assignments: dict[str, AppAssignment] = {}
        self._current: Observation | None = None

    def observe(self, index: int) -> Observation:
        if index < self._next - 1 or (index == self._next - 1 and self._current is None):
            self._reset()
        while self._next <= index:
            self._apply(self.snapshots[self._next])
            self._next += 1
        if self._current is None:
            raise BackfillError(f"snapshot {self.snapshots[index].run_id} has no stored raw pages")
        return self._current

    def _apply(self, snap: Snapshot) -> None:
        if not snap.has_raw:  # a gap: records carried forward could be stale from here on
            self._users, self._assignments, self._current = {}, {}, None
            return
        s = self.settings
        with self.engine.connect() as conn:
            users = _listing(staging_db.iter_raw_pages(conn, snap.run_id, "users"), lambda raw: normalize_user(
                raw, valid_roles=s.valid_role_set, image_url_attribute=s.image_url_attribute))
            assignments = _listing(staging_db.iter_raw_pages(conn, snap.run_id, "assignments"),
                                   lambda raw: normalize_assignment(raw, valid_roles=s.valid_role_set))
        if snap.full:
            self._users = users
        else:
            self._users.update(users)
        previous, self._assignments = self._assignments, assignments
        self._current = Observation(snap, self._users, assignments, previous)


def _listing(documents: Iterable[object], convert: Callable[[dict], object]) -> dict:
    """Records keyed by Okta user id, a later listing of the same id replacing an earlier one."""
    out: dict = {}
    for doc in documents:
        if not isinstance(doc, list):
            log.warning("skipped a stored page that is not a JSON array")
            continue
        for item in doc:
            if not isinstance(item, dict):
                continue
            try:
                record = convert(item)
            except MalformedRecord:
                continue
            out.pop(record.okta_user_id, None)
            out[record.okta_user_id] = record
    return out


# --- results -------------------------------------------------------------------------------------


# --- the job ---------------------------------------------------------------------------------------

class Backfill:
    """One backfill run: `locked()` -> `prepare()` -> `run_day(day)` for each of `days` -> `finish()`.

    `run_backfill` calls these in order; `flows/backfill.py` runs each day as a Prefect task.
    """

    def __init__(self, settings: Settings, start: date, end: date, *, dry_run: bool = False,
                 progress: ProgressFn | None = None, okta=None, now: datetime | None = None):
        self.settings = settings
        self.now = now or utcnow()
        self.start, self.end = as_day(start, "start"), as_day(end, "end")
        check_range(self.start, self.end, today=self.now.date())
        if not settings.okta_flex_app_id:
            raise ConfigError("configuration error: OKTA_FLEX_APP_ID is not set (backfill reads its assignment events)")
        self.dry_run = dry_run
        self.progress = progress
        self.days = [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]
        self.org = settings.okta_org_url or ""
        self.run_id: str | None = None
        self.engine = None
        self.summaries: list[DaySummary] = []
        self._okta, self._own_okta = okta, False
        self._snapshots: list[Snapshot] = []
        self._intervals: dict[date, list[Interval]] = {}
        self._replay: Replay | None = None
        self._marks: dict[date, tuple[datetime, datetime]] = {}
        self._unsaved_events: dict[str, LogEvent] = {}  # dry run: read, not stored
        self._overlay: dict[str, list[HistoryRow]] = {}  # rows changed and not (yet) written
        self._day_start: dict[str, list[HistoryRow]] = {}
        self._states: dict[str, HistoryState] | None = None
        self._states_time: datetime | None = None
        self._ids = itertools.count(-1, -1)  # provisional ids of rows not written yet

    # --- lifecycle ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        """Open the database and hold the writer lock (the nightly run's) for the whole backfill."""
        with writing(self.settings) as self.engine:
            yield self

    def prepare(self) -> str | None:
        """Plan the range and refuse what cannot be rebuilt, before anything is written."""
        with self.engine.connect() as conn:
            runs = runs_db.snapshot_runs(conn, flows=SNAPSHOT_FLOWS, org_url=self.settings.okta_org_url)
            self._marks = log_db.log_day_marks(conn, self.org)
        self._snapshots = [Snapshot(r["run_id"], r["started_at"], r["full"], r["has_raw"]) for r in runs]
        missing = uncovered_days(self.days, raw_spans(self._snapshots), now=self.now)
        if missing:
            stored = raw_spans(self._snapshots)
            where = (f"stored raw pages cover {min(a for a, _ in stored):%Y-%m-%d}..{max(b for _, b in stored):%Y-%m-%d}"
                     if stored else "no raw pages are stored")
            raise BackfillRefused(
                f"cannot backfill {self.start}..{self.end}: {date_ranges(missing)} ended more than "
                f"{LOG_RETENTION.days} days ago, beyond the Okta System Log's retention, and no stored raw pages "
                f"cover it ({where}); nothing was changed")
        self._intervals = plan_intervals(self._snapshots, self.start, self.end)
        firsts = [iv.index for ivs in self._intervals.values() for iv in ivs]
        if firsts:
            self._replay = Replay(self.engine, self._snapshots, baseline_index(self._snapshots, min(firsts)),
                                  self.settings)
        else:
            log.info("backfill %s..%s: no stored nightly snapshot bounds this range; only the System Log is read",
                     self.start, self.end)
        if not self.dry_run:
            self.run_id, _ = runs_db.open_run(self.engine, flow="backfill", org_url=self.settings.okta_org_url,
                                            parameters={"start": self.start.isoformat(), "end": self.end.isoformat(),
                                                        "dry_run": False})
        return self.run_id

    def run_day(self, day: date) -> DaySummary:
        """Read the day's System Log (once), then rebuild the intervals it handles, in one transaction."""
        summary = DaySummary(day)
        overlay = dict(self._overlay)
        try:
            self._fetch_day(day, summary)
            self._rebuild_day(day, summary)
        except BaseException:
            self._overlay, self._day_start, self._states = overlay, {}, None
            raise
        self.summaries.append(summary)
        log.info("backfill %s: log %s (%d events), %d nightly run(s), %d user(s) changed: %d row(s) opened, "
                 "%d closed, %d removed%s", day, summary.log, summary.events, summary.intervals, summary.users_changed,
                 summary.rows_opened, summary.rows_closed, summary.rows_removed, " (dry run)" if self.dry_run else "")
        if self.progress is not None:
            rows = sum(d.rows_opened + d.rows_closed + d.rows_removed for d in self.summaries)
            self.progress("backfill", len(self.summaries), rows)
        return summary

    def finish(self) -> BackfillResult:
        result = BackfillResult.of(self.start, self.end, self.dry_run, self.run_id, self.summaries)
        if self.run_id is not None:
            usage = getattr(self._okta, "rate_limit_usage", dict)() if self._okta is not None else {}
            runs_db.finish_run(self.engine, self.run_id, status="succeeded",
                               counts={**result.as_dict(), "rate_limits": usage})
        return result

    def nothing_rebuilt_reason(self, result: BackfillResult) -> str | None:
        """Why this backfill changed nothing (no snapshots, no events, ...), or None."""
        return nothing_rebuilt_reason(
            self.start, self.end, days=result.days, events=result.events,
            rows_changed=result.rows_opened + result.rows_closed + result.rows_removed,
            snapshots_in_range=sum(1 for ivs in self._intervals.values() for _ in ivs),
            stored_snapshots=len(self._snapshots))

    def fail(self, exc: BaseException) -> None:
        """Record why the run stopped; the days already done stay done (rerun to resume)."""
        if self.run_id is None or self.engine is None:
            return
        try:
            runs_db.finish_run(self.engine, self.run_id, status="failed",
                             counts=BackfillResult.of(self.start, self.end, False, self.run_id, self.summaries).as_dict(),
                             error=redact(f"{type(exc).__name__}: {exc}", self.settings.secret_values()))
        except Exception:  # the original error matters more than the bookkeeping
            log.exception("could not record the failure of backfill run %s", self.run_id)

    def close(self) -> None:
        if self._own_okta and self._okta is not None:
            with contextlib.suppress(Exception):
                self._okta.close()

    # --- System Log --------------------------------------------------------------------------
    def _client(self):
        if self._okta is None:
            self._okta, self._own_okta = OktaClient.from_settings(self.settings), True
        return self._okta

    def _fetch_day(self, day: date, summary: DaySummary) -> None:
        window = log_window(day, self.now)
        if window is None:
            summary.log = "outside retention" if day_bounds(day)[1] <= self.now - LOG_RETENTION else "nothing to read yet"
            return
        if is_final(self._marks.get(day), day):
            summary.log = "already fetched"
            return
        since, until = window
        events = fetch_log_events(self._client(), since, until, app_id=self.settings.okta_flex_app_id)
        if self.dry_run:
            self._unsaved_events.update((e.uuid, e) for e in events)
        else:
            with self.engine.begin() as conn:
                log_db.store_log_events(conn, [event_row(e, self.run_id) for e in events])
                log_db.mark_log_day(conn, self.org, day, until, run_id=self.run_id, fetched_at=self.now)
        self._marks[day] = (until, self.now)
        summary.log, summary.events = "fetched", len(events)

    def _events(self, conn, user_ids: Sequence[str], start: datetime | None, end: datetime) -> dict[str, list[LogEvent]]:
        out: dict[str, dict[str, LogEvent]] = {}
        if not user_ids:
            return {}
        for row in log_db.log_events_for(conn, user_ids, start, end):
            e = event_from_row(row)
            out.setdefault(e.user_id, {})[e.uuid] = e
        wanted = set(user_ids)
        for e in self._unsaved_events.values():
            if e.user_id in wanted and in_interval(e.published, start, end):
                out.setdefault(e.user_id, {}).setdefault(e.uuid, e)
        return {uid: list(by_uuid.values()) for uid, by_uuid in out.items()}

    # --- history -----------------------------------------------------------------------------
    def _rebuild_day(self, day: date, summary: DaySummary) -> None:
        intervals = self._intervals.get(day, [])
        if not intervals:
            return
        with (self.engine.connect() if self.dry_run else self.engine.begin()) as conn:
            for iv in intervals:
                self._rebuild_interval(conn, iv)
            edits = [e for e in (row_edits(self._day_start[uid], self._overlay[uid])
                                 for uid in sorted(self._day_start) if uid in self._overlay) if e]
            if not self.dry_run:
                history_db.apply_history_edits(conn, edits)
        summary.intervals = len(intervals)
        summary.users_changed = len(edits)
        summary.rows_opened = sum(len(e.insert) for e in edits)
        summary.rows_closed = sum(len(e.retime) for e in edits)
        summary.rows_removed = sum(len(e.delete) for e in edits)
        self._day_start = {}
        if not self.dry_run:
            self._overlay = {}  # written: the database has them now

    def _rows(self, conn, user_ids: Iterable[str]) -> dict[str, list[HistoryRow]]:
        ids = set(user_ids)
        loaded = history_db.history_rows(conn, [u for u in ids if u not in self._overlay])
        out = {}
        for uid in ids:
            rows = self._overlay[uid] if uid in self._overlay else loaded.get(uid, [])
            self._day_start.setdefault(uid, rows)
            out[uid] = rows
        return out

    def _states_at(self, conn, moment: datetime | None) -> dict[str, HistoryState]:
        if self._states is not None and self._states_time == moment:
            return self._states
        states = history_db.history_states_at(conn, moment) if moment is not None else {}
        if moment is not None:
            for uid, rows in self._overlay.items():
                st = state_at(rows, moment)
                if st is None:
                    states.pop(uid, None)
                else:
                    states[uid] = st
        self._states, self._states_time = states, moment
        return states

    def _desired(self, obs: Observation, uid: str, prev: HistoryState | None):
        """What snapshot `obs` says history should hold for `uid`: a state, None (untracked), or
        `_UNKNOWN` when the snapshot has no record of the user to say it with."""
        assignment = obs.assignments.get(uid)
        user = obs.users.get(uid)
        if user is None and not obs.snapshot.full:  # not listed by an incremental run
            if prev is None or (not prev.assigned and is_assigned(assignment)):
                return _UNKNOWN
            user = pseudo_user(prev)
        return desired_state(user, assignment, role_source=self.settings.role_source, previous=prev)

    def _rebuild_interval(self, conn, iv: Interval) -> None:
        obs = self._replay.observe(iv.index)
        states = self._states_at(conn, iv.start)
        s, e = iv.start, iv.end
        inside = {u for u in history_db.history_users_between(conn, s, e) if u not in self._overlay}
        inside |= {u for u, rows in self._overlay.items() if any(in_interval(r.valid_from, s, e) for r in rows)}
        wanted: dict[str, tuple[HistoryState | None, HistoryState]] = {}
        for uid in sorted(set(obs.assignments) | set(states) | inside):
            prev = states.get(uid)
            new = self._desired(obs, uid, prev)
            if new is _UNKNOWN or new is None or (same_state(prev, new) and uid not in inside):
                continue
            wanted[uid] = (prev, new)
        rows = self._rows(conn, set(wanted) | inside)
        events = self._events(conn, [u for u, (p, n) in wanted.items() if not same_state(p, n)], s, e)
        coverage = Coverage.from_marks(self._marks)
        for uid, (prev, new) in wanted.items():
            points = [] if same_state(prev, new) else stage_change(
                prev, new, self._times(obs, uid, prev, new, events.get(uid, []), rows[uid], iv, coverage))
            spliced = splice(rows[uid], s, e, points, run_id=self.run_id or "dry-run", new_id=lambda: next(self._ids))
            if spliced != rows[uid]:
                self._overlay[uid] = rows[uid] = spliced
        for uid in set(wanted) | inside:
            st = state_at(rows[uid], e)
            if st is None:
                states.pop(uid, None)
            else:
                states[uid] = st
        self._states_time = e

    def _times(self, obs: Observation, uid: str, prev: HistoryState | None, new: HistoryState,
               events: Sequence[LogEvent], rows: Sequence[HistoryRow], iv: Interval, coverage: Coverage):
        user, assignment = obs.users.get(uid), obs.assignments.get(uid)
        group_scoped = any(a is not None and (a.scope or "").upper() == "GROUP"
                           for a in (assignment, obs.previous_assignments.get(uid)))
        s = self.settings

        def explain(event: LogEvent) -> frozenset[str]:
            return explained_fields(event, app_id=s.okta_flex_app_id, role_source=s.role_source,
                                    group_scoped=group_scoped)

        earlier = [(r.valid_from, r.state) for r in rows if in_interval(r.valid_from, iv.start, iv.end)]
        default = effective_time([user.last_updated if user else None, assignment.last_updated if assignment else None],
                                 after=iv.start, observed_at=iv.end)
        return change_times(prev, new, events, start=iv.start, end=iv.end, covered=coverage.covers, explain=explain,
                            kept=last_set_times(prev, earlier, new), default=default)


_UNKNOWN = object()


def fetch_log_events(okta, since: datetime, until: datetime, *, app_id: str | None) -> list[LogEvent]:
    """Relevant events published in [since, until), once each; anything outside the window, for
    another app, failed or malformed is dropped (the server's filter is not trusted)."""
    events: dict[str, LogEvent] = {}
    dropped = 0
    for page in okta.iter_log_pages(since, until, filter=LOG_FILTER, limit=1000):
        for item in page.items:
            e = parse_log_event(item)
            if e is None or not (since <= e.published < until) or (
                    e.event_type.startswith("application.user_membership.") and e.app_id != app_id):
                dropped += 1
                continue
            events.setdefault(e.uuid, e)
    if dropped:
        log.debug("System Log %s..%s: ignored %d event(s)", since, until, dropped)
    return sorted(events.values(), key=lambda e: (e.published, e.uuid))


def run_backfill(settings: Settings, start: date, end: date, *, dry_run: bool = False,
                 progress: ProgressFn | None = None, okta=None, now: datetime | None = None) -> BackfillResult:
    """Rebuild role history for `start..end` (UTC days, inclusive) in this process, without Prefect.

    Raises BackfillRangeError / BackfillRefused before changing anything, RunLockedError when a
    nightly run holds the writer lock.  A failure mid-range keeps the days already done; running
    the same command again resumes.
    """
    with running(Backfill(settings, start, end, dry_run=dry_run, progress=progress, okta=okta, now=now)) as job:
        job.prepare()
        for day in job.days:
            job.run_day(day)
        result = job.finish()
        why = job.nothing_rebuilt_reason(result)
        if why:
            log.warning("%s", why)
        return result
