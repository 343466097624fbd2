"""The watch poll: read the System Log since the cursor, re-read exactly the users it names,
record their role history at the events' times, report their drift, and (only when asked) act on
the high-severity cases at once.

One poll, in order (`Watch.poll`):

1. Take the writer lock without waiting.  A nightly run, backfill or reconcile holds it: the
   poll is skipped (`status="skipped"`), never queued, so the watch never delays them.
2. Plan the window from the cursor (`core.watch.plan_window`: lag-window overlap, 90-day gap
   check) and read it, bounded, with the nightly run's System Log filter.  An idle poll ends
   here: one request, then the cursor moves.
3. Drop events a watch poll already handled (by uuid); for the users the rest name, read the
   user, their Flex app user and their workers (the workers list filtered by `FriendlyName`).
4. Reconcile those users as the nightly run would (same kinds, severities and fields) and diff
   their role history, each changed field dated by the event that explains it.
5. With `apply_high`: the nightly repair (If-Match writes, `--max-changes`, audit) over the
   high-severity findings only.  It runs before the poll commits, so a poll that dies after it
   repeats it, and the repeat finds the worker already repaired: nothing is applied twice.
6. One transaction: user mirror rows, history, findings, the events as handled, the cursor, the
   `sync_runs` row (flow `watch`).  Then `REPORT_DIR/watch/<run_id>/drift.json` when there is
   drift.  A poll that fails moves nothing, so the next one reads the same window again.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from okta_flex_sync.clients.http import (
    ApiError,
    AuthError,
    NotFoundError,
    is_retriable_error,
)
from okta_flex_sync.clients.okta import OktaClient
from okta_flex_sync.clients.taskrouter import TaskRouterClient
from okta_flex_sync.core.history import (
    changed_fields,
    desired_state,
    row_edits,
    splice,
    stage_change,
)
from okta_flex_sync.core.normalize import (
    MalformedRecord,
    normalize_assignment,
    normalize_user,
    parse_worker,
    username_key,
)
from okta_flex_sync.core.reconcile import reconcile, summarize
from okta_flex_sync.core.system_log import (
    LOG_FILTER,
    LogEvent,
    event_row,
    parse_log_event,
)
from okta_flex_sync.core.watch import (
    LAG_WINDOW,
    STREAM,
    WATCH_FLOW,
    SystemLogGap,
    WatchEvent,
    Window,
    change_times,
    findings_about,
    fresh_events,
    group_target_id,
    high_findings,
    needs_app_groups,
    plan_window,
    users_to_reread,
    worker_names,
)
from okta_flex_sync.jobs.lifecycle import ensure_schema
from okta_flex_sync.jobs.repair import RepairRefused, repair_workers
from okta_flex_sync.models.records import (
    VALID_TO_CURRENT,
    AppAssignment,
    Finding,
    OktaUser,
    Worker,
)
from okta_flex_sync.redaction import redact
from okta_flex_sync.reports.document import build_report
from okta_flex_sync.reports.files import run_report_dir, write_reports
from okta_flex_sync.settings import ConfigError, Settings
from okta_flex_sync.storage import findings as findings_db
from okta_flex_sync.storage import history as history_db
from okta_flex_sync.storage import mirror as mirror_db
from okta_flex_sync.storage import runs as runs_db
from okta_flex_sync.storage import staging as staging_db
from okta_flex_sync.storage import watch as watch_store
from okta_flex_sync.storage.common import utcnow
from okta_flex_sync.storage.engine import make_engine
from okta_flex_sync.storage.lock import RunLockedError, writer_lock

log = logging.getLogger(__name__)

__all__ = ["LogsForbidden", "PollOutcome", "SystemLogGap", "Watch", "poll_once"]


class LogsForbidden(ConfigError):
    """The Okta credentials may not read the System Log (no `okta.logs.read`)."""


@dataclass
class PollOutcome:
    status: str  # skipped (writer lock held), idle (no new event), clean (users read, no drift), drift
    run_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    events: int = 0  # new events this poll handled
    users: list[str] = field(default_factory=list)  # users it looked at
    findings: list[Finding] = field(default_factory=list)
    history_rows: int = 0
    repaired: int = 0
    report_path: Path | None = None
    requests: dict = field(default_factory=dict)  # {"okta": n, "taskrouter": n} made by this poll
    seconds: float = 0.0
    message: str = ""

    def line(self) -> str:
        """One line for the console and the logs."""
        if self.status == "skipped":
            return f"watch: poll skipped: {self.message}"
        severities: dict[str, int] = {}
        for f in self.findings:
            severities[f.severity] = severities.get(f.severity, 0) + 1
        parts = [f"watch {self.run_id}: {self.events} new event(s), {len(self.users)} user(s) re-read",
                 f"{len(self.findings)} finding(s)" + (f" ({', '.join(f'{n} {s}' for s, n in severities.items())})"
                                                       if severities else ""),
                 f"{self.history_rows} history row(s)"]
        if self.repaired:
            parts.append(f"{self.repaired} worker(s) repaired")
        parts.append(f"{sum(self.requests.values())} request(s), {self.seconds:.2f} s")
        line = "; ".join(parts)
        return line + (f"; report: {self.report_path}" if self.report_path else "")


@dataclass
class _Read:
    """What a poll read for the users its events name."""

    users: dict[str, OktaUser | None] = field(default_factory=dict)  # None: deleted from Okta
    assignments: dict[str, AppAssignment | None] = field(default_factory=dict)  # None: not assigned
    workers: dict[str, Worker] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)


_UNREADABLE = object()  # a record that did not normalize: skipped, left to the nightly run


class Watch:
    """Polls for one org; keeps its API clients (and their connections) between polls."""

    def __init__(self, settings: Settings, *, apply_high: bool = False, max_changes: int | None = None,
                 delete_orphans: bool = False, lag: timedelta = LAG_WINDOW, okta=None, taskrouter=None,
                 clock: Callable[[], datetime] = utcnow):
        settings.require_sources()
        self.settings = settings
        self.apply_high = apply_high
        self.max_changes = settings.max_changes if max_changes is None else max_changes
        self.delete_orphans = delete_orphans
        self.lag = lag
        self.clock = clock
        self._okta, self._taskrouter = okta, taskrouter
        self._own_clients = okta is None and taskrouter is None
        self.engine: Engine = make_engine(settings.database_url)
        self._recorded: str | None = None  # the last poll whose outcome was committed

    @property
    def org(self) -> str:
        return self.settings.okta_org_url

    def okta(self):
        if self._okta is None:
            self._okta = OktaClient.from_settings(self.settings)
        return self._okta

    def taskrouter(self):
        if self._taskrouter is None:
            self._taskrouter = TaskRouterClient.from_settings(self.settings)
        return self._taskrouter

    def close(self) -> None:
        if self._own_clients:
            for c in (self._okta, self._taskrouter):
                if c is not None:
                    with contextlib.suppress(Exception):
                        c.close()
        self.engine.dispose()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- one poll -------------------------------------------------------------------------

    def poll(self) -> PollOutcome:
        started = time.perf_counter()
        before = self._request_counts()
        try:
            with writer_lock(self.engine, self.org or "this database", wait_seconds=0):
                ensure_schema(self.engine, self.settings)
                outcome = self._poll_locked()
        except RunLockedError as exc:
            outcome = PollOutcome("skipped", message=f"{exc} (the watch yields; next poll as scheduled)")
            log.info("%s", outcome.line())
        after = self._request_counts()
        outcome.requests = {k: after[k] - before[k] for k in after}
        outcome.seconds = time.perf_counter() - started
        if outcome.status != "skipped":
            log.info("%s", outcome.line())
        return outcome

    def _request_counts(self) -> dict[str, int]:
        return {"okta": self._okta.stats.requests if self._okta is not None else 0,
                "taskrouter": self._taskrouter.stats.requests if self._taskrouter is not None else 0}

    def _poll_locked(self) -> PollOutcome:
        abandoned = runs_db.abandon_stale_runs(self.engine)
        if abandoned:
            log.warning("discarded %d run(s) that stopped before finishing: %s", len(abandoned), ", ".join(abandoned))
        with self.engine.connect() as conn:
            cursor = runs_db.get_watermark(conn, self.org, STREAM)
            nightly = runs_db.last_run(conn, org_url=self.org)
        now = self.clock()
        window = plan_window(cursor, now=now, lag=self.lag,
                             last_nightly_start=nightly["started_at"] if nightly else None)
        if window.resumed_from:
            log.info("watch: reading the System Log from %s (%s)", f"{window.since:%Y-%m-%d %H:%M:%S}Z",
                     window.resumed_from)
        events, parsed = self._read_log(window)  # before anything is written: a 403 changes nothing
        run_id, _ = runs_db.open_run(self.engine, flow=WATCH_FLOW, org_url=self.org, parameters={
            "apply_high": self.apply_high, "max_changes": self.max_changes, "delete_orphans": self.delete_orphans,
            "since": window.since.isoformat(), "until": window.until.isoformat()})
        try:
            return self._run(run_id, window, events, parsed)
        except BaseException as exc:
            if self._recorded == run_id:  # committed, then refused: already recorded as failed
                raise
            msg = redact(f"{type(exc).__name__}: {exc}", self.settings.secret_values())
            with contextlib.suppress(Exception):
                runs_db.discard_run(self.engine, run_id)
                runs_db.finish_run(self.engine, run_id, status="failed", error=msg)
            raise

    def _run(self, run_id: str, window: Window, events: list[WatchEvent], parsed: dict[str, LogEvent]) -> PollOutcome:
        s = self.settings
        with self.engine.connect() as conn:
            handled = watch_store.handled_events(conn, [e.uuid for e in events], flow=WATCH_FLOW)
        fresh = fresh_events(events, handled)
        flex_groups = self._flex_groups() if needs_app_groups(fresh) else frozenset()
        targets = users_to_reread(fresh, app_id=s.okta_flex_app_id, flex_groups=flex_groups)
        with self.engine.connect() as conn:
            rows = history_db.history_rows(conn, targets) if targets else {}
        read = self._read_users(targets, rows)
        with self.engine.connect() as conn:
            findings = self._findings(conn, targets, read) if targets else []
        edits = [e for uid in targets
                 if (e := self._history_edit(uid, rows.get(uid, []), read, targets[uid], run_id, window.until,
                                             flex_groups))]
        repaired, refused = 0, None
        if self.apply_high and high_findings(findings):
            repaired, refused = self._repair(run_id, read, findings)
        counts = {"okta_users": sum(1 for u in read.users.values() if u is not None),
                  "assigned_users": sum(1 for a in read.assignments.values() if a is not None),
                  "workers": len(read.workers), "log_events": len(fresh), "users_looked_at": len(targets),
                  "findings": len(findings), "summary": summarize(findings), "repaired": repaired,
                  "skipped_sample": read.skipped[:200], "since": window.since.isoformat(),
                  "until": window.until.isoformat()}
        with self.engine.begin() as conn:
            if targets:
                watch_store.refresh_mirror_users(conn, run_id, [u for u in read.users.values() if u is not None],
                                                 gone=[uid for uid, u in read.users.items() if u is None])
            history_rows = sum(len(e.insert) for e in edits)
            history_db.apply_history_edits(conn, edits)
            findings_db.store_findings(conn, run_id, findings)
            fresh_ids = {e.uuid for e in fresh}
            watch_store.mark_handled(conn, [event_row(parsed[u], run_id) for u in fresh_ids], run_id)
            runs_db.set_watermark(conn, self.org, STREAM, window.until, run_id)
            counts["history_rows_written"] = history_rows
            # Refused: recorded and reported, but failed (as the nightly run does); the cursor
            # still moves, so the watch does not refuse the same batch every five minutes.
            runs_db.finish_run(conn, run_id, status="failed" if refused else "succeeded", counts=counts,
                             error=str(refused) if refused else None)
        self._recorded = run_id
        report_path = self._report(run_id, counts, findings, read.skipped) if findings else None
        if refused is not None:
            raise refused
        status = "drift" if findings else ("clean" if targets else "idle")
        return PollOutcome(status, run_id, window.since, window.until, len(fresh), sorted(targets), findings,
                           history_rows, repaired, report_path)

    # --- reading ----------------------------------------------------------------------------

    def _read_log(self, window: Window) -> tuple[list[WatchEvent], dict[str, LogEvent]]:
        app_id = self.settings.okta_flex_app_id
        events: list[WatchEvent] = []
        parsed: dict[str, LogEvent] = {}
        try:
            for page in self.okta().iter_log_pages(window.since, window.until, filter=LOG_FILTER):
                for raw in page.items:
                    e = parse_log_event(raw)
                    if e is None or e.uuid in parsed:
                        continue
                    if e.event_type.startswith("application.user_membership.") and e.app_id != app_id:
                        continue
                    parsed[e.uuid] = e
                    events.append(WatchEvent(e.uuid, e.published, e.event_type, e.user_id, e.app_id, e.changed,
                                             group_target_id(raw)))
        except AuthError as exc:
            if exc.status == 403:
                raise LogsForbidden("the Okta credentials may not read the System Log (GET /api/v1/logs: HTTP 403); "
                                    "the watch needs the okta.logs.read scope (OAuth) or a read-only admin's "
                                    "API token") from None
            raise
        return events, parsed

    def _flex_groups(self) -> frozenset[str]:
        ids = set()
        for page in self.okta().iter_app_group_pages(self.settings.okta_flex_app_id):
            ids.update(g["id"] for g in page.items if isinstance(g.get("id"), str))
        return frozenset(ids)

    def _read_users(self, targets: dict[str, list], rows: dict[str, list]) -> _Read:
        """Each named user, their app user and their workers; users are read in parallel (up to
        OKTA_MAX_CONCURRENCY at once), so a burst of events does not read one user at a time."""
        read = _Read()
        uids = list(targets)
        if not uids:
            return read
        self.okta(), self.taskrouter()  # built once, before the threads share them
        workers = max(1, min(self.settings.okta_max_concurrency, len(uids)))
        if workers == 1:
            results = [self._read_user(uid, rows.get(uid)) for uid in uids]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="watch-read") as pool:
                results = list(pool.map(lambda uid: self._read_user(uid, rows.get(uid)), uids))
        for uid, (user, assignment, found, skipped) in zip(uids, results):
            read.skipped.extend(skipped)
            if user is _UNREADABLE:
                continue
            read.users[uid], read.assignments[uid] = user, assignment
            read.workers.update(found)
        return read

    def _read_user(self, uid: str, known: list | None):
        """(user or None or _UNREADABLE, assignment or None, {sid: worker}, skipped) of one user.

        A lasting error about this one user (a 400, a malformed record) skips them, leaving them
        to the nightly run: otherwise every poll would read the same event and fail again.  Auth
        errors and outages still fail the poll (the next one reads the window again)."""
        try:
            return self._read_user_once(uid, known)
        except AuthError:
            raise
        except (ApiError, ValueError) as exc:
            if isinstance(exc, ApiError) and is_retriable_error(exc):
                raise
            log.warning("user %s skipped this poll: %s", uid, exc)
            return _UNREADABLE, None, {}, [{"source": "users", "id": uid, "reason": str(exc)[:300]}]

    def _read_user_once(self, uid: str, known: list | None):
        s, okta = self.settings, self.okta()
        try:
            user = normalize_user(okta.get_user(uid), valid_roles=s.valid_role_set,
                                  image_url_attribute=s.image_url_attribute)
        except NotFoundError:
            user = None
        except MalformedRecord as exc:
            return _UNREADABLE, None, {}, [{"source": "users", "id": uid, "reason": str(exc)[:300]}]
        assignment = None
        if user is not None:
            try:
                assignment = normalize_assignment(okta.get_app_user(s.okta_flex_app_id, uid),
                                                  valid_roles=s.valid_role_set)
            except NotFoundError:
                assignment = None
            except MalformedRecord as exc:
                return _UNREADABLE, None, {}, [{"source": "assignments", "id": uid, "reason": str(exc)[:300]}]
        found: dict[str, Worker] = {}
        skipped: list[dict] = []
        for name in worker_names(assignment.app_username if assignment else None,
                                 known[-1].state.app_username if known else None):
            self._read_workers(name, found, skipped)
        return user, assignment, found, skipped

    def _read_workers(self, name: str, found: dict[str, Worker], skipped: list[dict]) -> None:
        for page in self.taskrouter().iter_worker_pages(page_size=50, friendly_name=name):
            for raw in page.items:
                try:
                    w = parse_worker(raw)
                except MalformedRecord as exc:
                    skipped.append({"source": "workers", "id": None, "reason": str(exc)[:300]})
                    continue
                if username_key(w.friendly_name) == username_key(name):
                    found[w.worker_sid] = staging_db.as_landed(w)

    # --- deciding ---------------------------------------------------------------------------

    def _findings(self, conn, targets, read: _Read) -> list[Finding]:
        s = self.settings
        users = {uid: u for uid, u in read.users.items() if u is not None}
        assignments = [a for a in read.assignments.values() if a is not None]

        def find_owner(name: str) -> OktaUser | None:
            key = (name or "").casefold()
            for attr in ("login", "email"):
                for u in users.values():
                    if (getattr(u, attr) or "").casefold() == key:
                        return u
            owner = mirror_db.find_owner(conn, name)
            return None if owner is not None and owner.okta_user_id in read.users else owner

        found = reconcile(users, assignments, read.workers.values(), role_source=s.role_source,
                          valid_roles=s.valid_role_set, find_owner=find_owner)
        return findings_about(found, targets, read.workers)

    def _history_edit(self, uid: str, rows: list, read: _Read, events: list, run_id: str, now: datetime,
                      flex_groups: frozenset[str]):
        if uid not in read.users:  # could not be read (malformed): history waits for the nightly run
            return None
        s = self.settings
        current = rows[-1] if rows and rows[-1].valid_to == VALID_TO_CURRENT else None
        prev = current.state if current else None
        want = desired_state(read.users[uid], read.assignments.get(uid), role_source=s.role_source, previous=prev)
        if want is None or (prev is not None and want.key() == prev.key()):
            return None
        start = rows[-1].valid_from if rows else None
        if start is not None and start >= now:
            log.warning("user %s: history already starts at %s, after this poll; left to the nightly run", uid, start)
            return None
        times = change_times(changed_fields(prev, want), events, after=start, now=now, app_id=s.okta_flex_app_id,
                             role_source=s.role_source, flex_groups=flex_groups)
        points = stage_change(prev, want, times)
        return row_edits(rows, splice(rows, start, now, points, run_id=run_id, source="watch")) or None

    # --- acting and reporting ---------------------------------------------------------------

    def _repair(self, run_id: str, read: _Read, findings: list[Finding]):
        published = SimpleNamespace(
            users={uid: u for uid, u in read.users.items() if u is not None},
            assignments={uid: a for uid, a in read.assignments.items() if a is not None},
            workers=read.workers, findings=high_findings(findings))
        try:
            return repair_workers(self.engine, self.taskrouter(), run_id, published, settings=self.settings,
                                  max_changes=self.max_changes, strip_deactivated=True,
                                  delete_orphans=self.delete_orphans), None
        except RepairRefused as exc:  # still record and report the poll, then fail it
            log.error("%s", exc)
            return 0, exc

    def _report(self, run_id: str, counts: dict, findings: list[Finding], skipped: list[dict]) -> Path:
        doc = build_report(run_id, utcnow(), counts, findings, skipped=skipped,
                           mode="apply-high" if self.apply_high else "dry-run")
        paths = write_reports(doc, run_report_dir(Path(self.settings.report_dir) / "watch", run_id), formats=("json",))
        return paths["json"]


def poll_once(settings: Settings, **options) -> PollOutcome:
    """One poll with fresh clients (the Prefect flow and `watch --once`)."""
    with Watch(settings, **options) as w:
        return w.poll()


def run_forever(settings: Settings, *, interval: float, on_poll: Callable[[PollOutcome], None] = lambda o: None,
                on_error: Callable[[Exception], bool] = lambda e: True, sleep: Callable[[float], None] = time.sleep,
                polls: int | None = None, **options) -> None:
    """Poll every `interval` seconds (measured start to start) until interrupted.

    A poll that failed on an API or database outage (after the HTTP layer's retries) or whose
    `--apply-high` batch was refused is passed to `on_error`: True carries on at the next
    interval, False stops and raises it.  Configuration errors and a System Log gap always stop."""
    done = 0
    with Watch(settings, **options) as w:
        while polls is None or done < polls:
            started = time.monotonic()
            try:
                on_poll(w.poll())
            except (LogsForbidden, SystemLogGap, ConfigError):
                raise
            except (ApiError, RepairRefused, OperationalError) as exc:  # an outage, a refused batch: poll on
                if not on_error(exc):
                    raise
            done += 1
            if polls is not None and done >= polls:
                break
            sleep(max(0.0, interval - (time.monotonic() - started)))
