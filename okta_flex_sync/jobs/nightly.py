"""The nightly sync as plain stage functions: extract -> publish -> repair -> report.

`flows/nightly.py` wraps each stage in a Prefect task; `okta_flex_sync.jobs.reconcile` calls them
directly.  Stages share a `SyncContext`; none holds business rules (those live in
`okta_flex_sync.core.normalize`, `okta_flex_sync.core.history`, `okta_flex_sync.core.reconcile`, `okta_flex_sync.core.repair_plan`).
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine, exists, select
from sqlalchemy.exc import DBAPIError

from okta_flex_sync.clients.http import ApiError, NotFoundError
from okta_flex_sync.clients.okta import OktaClient
from okta_flex_sync.clients.taskrouter import TaskRouterClient
from okta_flex_sync.core.history import diff_history
from okta_flex_sync.core.normalize import (
    MalformedRecord,
    normalize_assignment,
    normalize_user,
    parse_timestamp,
    parse_worker,
    username_key,
)
from okta_flex_sync.core.reconcile import reconcile, summarize
from okta_flex_sync.core.system_log import LOG_FILTER, event_row, parse_log_event
from okta_flex_sync.jobs.landing import (
    KEYS,
    Landed,
    LandingProcessError,
    UsersLandingProcess,
    land_page,
    user_converter,
)
from okta_flex_sync.jobs.lifecycle import RunOutcome, running, writing
from okta_flex_sync.jobs.repair import RepairRefused, repair_workers
from okta_flex_sync.jobs.report import report
from okta_flex_sync.models.records import AppAssignment, Finding, OktaUser, Worker
from okta_flex_sync.models.tables import (
    okta_users,
    staged_app_assignments,
    staged_okta_users,
)
from okta_flex_sync.observability import ProgressFn
from okta_flex_sync.redaction import redact
from okta_flex_sync.settings import Settings
from okta_flex_sync.storage import history as history_db
from okta_flex_sync.storage import log_events as log_db
from okta_flex_sync.storage import mirror as mirror_db
from okta_flex_sync.storage import runs as runs_db
from okta_flex_sync.storage import staging as staging_db
from okta_flex_sync.storage.connect import shown_url, sqlite_path
from okta_flex_sync.storage.finding_delta import store_findings_with_delta

log = logging.getLogger(__name__)



class ShrinkGuardError(RuntimeError):
    """Okta or TaskRouter returned far fewer records than the last run: likely an outage."""


@dataclass
class SyncContext:
    settings: Settings
    engine: Engine
    run_id: str
    started_at: datetime
    org_url: str
    full: bool
    updated_since: datetime | None
    log_since: datetime | None = None
    progress: ProgressFn = lambda source, pages, items: None  # noqa: E731


@dataclass
class ExtractResult:
    users_pulled: int = 0
    assignments: int = 0
    workers: int = 0
    log_events: int = 0
    pages: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    max_user_last_updated: datetime | None = None
    requests: dict = field(default_factory=dict)
    rate_limits: dict = field(default_factory=dict)  # per Okta bucket: limit, max_used in one window, percent
    normalize_seconds: dict = field(default_factory=dict)  # CPU seconds spent normalizing, per listing
    listing_seconds: dict = field(default_factory=dict)  # when each listing ended, from the start of extract
    # The assignments and workers as landed (the later listing of a key wins, as in staging),
    # handed to publish so it need not read 15k + 15k rows straight back.  None: read staging.
    landed_assignments: dict[str, AppAssignment] | None = None
    landed_workers: dict[str, Worker] | None = None


@dataclass
class PublishResult:
    counts: dict
    findings: list[Finding]
    history_rows: int
    deleted_users: list[str]
    workers: dict[str, Worker]
    users: dict[str, OktaUser]
    assignments: dict[str, AppAssignment]


def plan_mode(engine: Engine, settings: Settings, *, full: bool) -> tuple[bool, datetime | None]:
    """Incremental when a watermark exists for this org, unless a full pull is forced."""
    if full:
        return True, None
    with engine.connect() as conn:
        mark = runs_db.get_watermark(conn, settings.okta_org_url, "users")
    if mark is None:
        return True, None
    return False, mark - timedelta(seconds=settings.incremental_overlap_seconds)


# --- extract ------------------------------------------------------------------------------

_DONE = object()


def _produce(q: queue.Queue, source: str, pages: Iterator, stop: threading.Event) -> None:
    """Fetch one listing's pages and hand them over as they come.  Converting happens in the
    consumer, so this thread's next request is already on the wire while a page is processed."""
    try:
        for page in pages:
            if stop.is_set():
                return
            # Compress here: ISA-L lets go of the GIL, so this overlaps the consumer's work
            # instead of adding to it (~40 MB of pages a night at 15k workers).  Users pages
            # are compressed where they are landed (perhaps the landing process).
            q.put((source, (page, None if source == "users" else staging_db.compress_page(page.raw))))
        q.put((source, _DONE))
    except BaseException as exc:  # hand the failure to the consumer thread
        q.put((source, exc))


def _take(q: queue.Queue, limit: int = 8) -> list:
    """The next queued item, plus whatever else is already waiting (up to `limit`): pages that
    queued up while we were busy are landed in one transaction instead of one commit each."""
    batch = [q.get()]
    while len(batch) < limit:
        try:
            batch.append(q.get_nowait())
        except queue.Empty:
            break
    return batch


def extract(ctx: SyncContext, okta, taskrouter) -> ExtractResult:
    """Pull users, Flex assignments and workers concurrently; land every page as it arrives.

    Past `LANDING_PROCESS_AFTER_PAGES` users pages, the rest of the users listing is landed by
    a process of its own (`jobs.landing.UsersLandingProcess`), so normalizing and landing a
    big org's users no longer holds up the threads walking the listings."""
    s = ctx.settings
    valid = s.valid_role_set
    result = ExtractResult(landed_assignments={}, landed_workers={})
    kept = {"assignments": result.landed_assignments, "workers": result.landed_workers}
    seen: dict[str, set[str]] = {"users": set(), "assignments": set(), "workers": set()}

    def assignment_conv(raw):
        return normalize_assignment(raw, valid_roles=valid)

    listings = {
        "users": (okta.iter_user_pages(updated_since=ctx.updated_since),
                  user_converter(valid, s.image_url_attribute)),
        "assignments": (okta.iter_app_user_pages(s.okta_flex_app_id), assignment_conv),
        "workers": (taskrouter.iter_worker_pages(page_size=1000, known_attributes=_known_attributes(ctx)),
                    parse_worker),
    }
    if ctx.log_since is not None:
        listings["logs"] = (_optional(okta.iter_log_pages(ctx.log_since, ctx.started_at, filter=LOG_FILTER), "System Log"),
                            _log_converter(s.okta_flex_app_id))
    seen["logs"] = set()
    landed_by = {source: Landed() for source in listings}
    handover = s.landing_process_after_pages
    users_process: UsersLandingProcess | None = None
    q: queue.Queue = queue.Queue(maxsize=16)
    stop = threading.Event()
    threads = [threading.Thread(target=_produce, args=(q, src, pages, stop), name=f"extract-{src}", daemon=True)
               for src, (pages, _conv) in listings.items()]
    for t in threads:
        t.start()
    running = len(threads)
    seq = dict.fromkeys(listings, 0)
    started_at = time.perf_counter()
    landing = contextlib.ExitStack()
    try:
        conn = landing.enter_context(staging_db.landing(ctx.engine))
        while running:
            landed = []
            # Between batches (what this process landed is committed), the users listing moves
            # to its own landing process once it is long enough to be worth one.
            if users_process is None and 0 <= handover <= seq["users"] and "users" not in result.listing_seconds:
                users_process = _start_users_process(ctx, seen["users"])
                handover = handover if users_process is not None else -1
            batch = []
            for source, page in _take(q):
                if page is _DONE:
                    running -= 1
                    result.listing_seconds[source] = round(time.perf_counter() - started_at, 3)
                elif isinstance(page, BaseException):
                    raise page
                elif source == "users" and users_process is not None:
                    # Outside any transaction of ours: the landing process needs the write lock
                    # while this thread may wait for it to take the page.
                    seq[source] += 1
                    users_process.submit(seq[source], page[0])
                    landed.append((source, seq[source], landed_by[source].items + users_process.items))
                else:
                    batch.append((source, page))
            if batch:
                with conn.begin():
                    for source, (page, body_gz) in batch:
                        seq[source] += 1
                        records = land_page(conn, ctx.run_id, source, seq[source], page,
                                            body_gz if body_gz is not None else staging_db.compress_page(page.raw),
                                            convert=listings[source][1], lander=LANDERS[source], seen=seen[source],
                                            into=landed_by[source])
                        if source in kept:
                            kept[source].update((KEYS[source](r), staging_db.as_landed(r)) for r in records)
                        landed.append((source, seq[source], landed_by[source].items))
            for progress in landed:
                ctx.progress(*progress)
        if users_process is not None:
            landed_by["users"] = _merged(landed_by["users"], users_process.finish())
            ctx.progress("users", seq["users"], landed_by["users"].items)
    finally:
        stop.set()
        if users_process is not None:
            users_process.stop()
        deadline = time.monotonic() + 10
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:  # unblock producers on a full queue
            try:
                q.get(timeout=0.01)
            except queue.Empty:
                pass
        landing.close()
    for source, landed_here in landed_by.items():
        result.skipped.extend(landed_here.skipped)
        result.normalize_seconds[source] = landed_here.normalize_seconds
    result.max_user_last_updated = landed_by["users"].max_last_updated
    result.users_pulled, result.assignments, result.workers = (landed_by[k].items for k in ("users", "assignments", "workers"))
    result.log_events = landed_by["logs"].items if "logs" in landed_by else 0
    result.pages = dict(seq)
    _land_missing_assigned_users(ctx, okta, result)
    return result


def _start_users_process(ctx: SyncContext, seen: set[str]) -> UsersLandingProcess | None:
    """The users landing process, or None (the run goes on landing users itself) if it cannot start."""
    s = ctx.settings
    try:
        return UsersLandingProcess(ctx.engine.url.render_as_string(hide_password=False), ctx.run_id,
                                   valid_roles=s.valid_role_set, image_url_attribute=s.image_url_attribute,
                                   seen=seen)
    except LandingProcessError as exc:
        log.warning("%s; landing the users in this process instead", exc)
        return None


def _merged(here: Landed, there: Landed) -> Landed:
    """This process's landing of a listing plus the landing process's."""
    latest = max(filter(None, [here.max_last_updated, there.max_last_updated]), default=None)
    return Landed(here.items + there.items, here.skipped + there.skipped, latest,
                  here.normalize_seconds + there.normalize_seconds)


def _land_log_events(conn, run_id: str, events) -> int:
    return log_db.store_log_events(conn, [event_row(e, run_id) for e in events])


LANDERS = {"users": staging_db.land_users, "assignments": staging_db.land_assignments, "workers": staging_db.land_workers,
           "logs": _land_log_events}


# A worker whose date_updated lies this long before the last run's start cannot have changed
# since that run fetched it without its date_updated moving on: whole seconds, server clock.
REUSE_AFTER_QUIET = timedelta(minutes=5)


def _known_attributes(ctx: SyncContext) -> Callable[[list[dict]], dict[str, str]] | None:
    """Attributes for workers TaskRouter lists with `attributes: null`, from the last run's
    staging, when their `date_updated` is still the one stored then (saves one fetch per such
    worker, ~750 requests a night at 15k workers).  Full runs fetch everything again.

    Asked once per page for that page's null workers, in the workers listing's own thread; only
    those rows are read (reading all 15k staged workers up front cost ~0.08 s a night)."""
    if ctx.full:
        return None
    previous: list = []  # [run] once looked up; [None] when there is no earlier run

    def lookup(rows: list[dict]) -> dict[str, str]:
        with ctx.engine.connect() as conn:
            if not previous:
                previous.append(runs_db.last_run(conn, org_url=ctx.org_url))
            if previous[0] is None:
                return {}
            stored = staging_db.unchanged_worker_attributes(
                conn, previous[0]["run_id"], [row["sid"] for row in rows],
                updated_before=previous[0]["started_at"] - REUSE_AFTER_QUIET)
        listed = {row["sid"]: parse_timestamp(row.get("date_updated")) for row in rows}
        return {sid: raw for sid, (updated, raw) in stored.items() if listed.get(sid) == updated}
    return lookup


def _log_converter(app_id: str):
    """Keep the events backfill can use: lifecycle, profile and this app's membership changes."""
    def convert(raw):
        e = parse_log_event(raw)
        if e is None or (e.event_type.startswith("application.user_membership.") and e.app_id != app_id):
            return None
        return e
    return convert


def _optional(pages: Iterator, what: str) -> Iterator:
    """A listing the run can do without: an API error ends it with a warning, not a failed run."""
    try:
        yield from pages
    except ApiError as exc:
        if exc.status == 401:
            # A rejected credential fails every other listing too: say so instead of promising a run.
            raise
        log.warning("%s not pulled this run (%s); this run goes on without it: users, assignments, workers "
                    "and role history are still pulled and updated, and `okta-flex-sync backfill` over these "
                    "days asks Okta for the %s again", what, exc, what)


def log_window(engine: Engine, settings: Settings, started_at: datetime) -> datetime | None:
    """Where the nightly System Log pull starts: the previous run's start minus the overlap,
    at most `SYSTEM_LOG_LOOKBACK_HOURS` back (the first run looks back that far)."""
    hours = settings.system_log_lookback_hours
    if hours <= 0:
        return None
    floor = started_at - timedelta(hours=hours)
    with engine.connect() as conn:
        previous = runs_db.last_run(conn, org_url=settings.okta_org_url)
    if previous is None:
        return floor
    return max(floor, previous["started_at"] - timedelta(seconds=settings.incremental_overlap_seconds))


def _land_missing_assigned_users(ctx: SyncContext, okta, result: ExtractResult) -> None:
    """An incremental pull may not list an assigned user the mirror has never seen: fetch them."""
    if ctx.full:
        return
    assigned = staged_app_assignments.c
    # NOT EXISTS probes both primary keys per assignment; NOT IN (a UNION) first built the set
    # of every mirrored id, half a second at 100k users.
    in_mirror = exists().where(okta_users.c.okta_user_id == assigned.okta_user_id)
    staged_now = exists().where(staged_okta_users.c.run_id == ctx.run_id,
                                staged_okta_users.c.okta_user_id == assigned.okta_user_id)
    with ctx.engine.connect() as conn:
        missing = list(conn.execute(select(assigned.okta_user_id).where(
            assigned.run_id == ctx.run_id, ~in_mirror, ~staged_now)).scalars())
    if not missing:
        return
    fetched = []
    for uid in missing:
        try:
            raw = okta.get_user(uid)
        except NotFoundError:
            continue
        try:
            fetched.append(normalize_user(raw, valid_roles=ctx.settings.valid_role_set,
                                          image_url_attribute=ctx.settings.image_url_attribute))
        except MalformedRecord as exc:
            result.skipped.append({"source": "users", "id": uid, "reason": str(exc)[:300]})
    with ctx.engine.begin() as conn:
        staging_db.land_users(conn, ctx.run_id, fetched)
    result.users_pulled += len(fetched)


# --- publish ------------------------------------------------------------------------------

def _check_shrink(previous: dict | None, current: dict, *, full: bool, percent: float) -> None:
    if not previous:
        return
    keys = ("okta_users", "assigned_users", "workers") if full else ("assigned_users", "workers")
    for key in keys:
        before, now = int(previous.get(key) or 0), int(current.get(key) or 0)
        if before >= 10 and before - now > 2 and (before - now) * 100.0 / before > percent:
            raise ShrinkGuardError(
                f"aborting before any history or repair change: {key} fell from {before} to {now} "
                f"({(before - now) * 100.0 / before:.0f}% drop, SHRINK_GUARD_PERCENT={percent:g}); "
                f"if this is real, rerun with --allow-shrink")


def publish(ctx: SyncContext, extracted: ExtractResult, *, allow_shrink: bool = False) -> PublishResult:
    """One transaction: shrink guard, user mirror, role history, findings, watermark, run status."""
    s = ctx.settings
    with staging_db.checkpointing_meanwhile(ctx.engine), ctx.engine.begin() as conn:
        previous = runs_db.last_run(conn, org_url=ctx.org_url)
        if extracted.landed_assignments is not None and extracted.landed_workers is not None:
            assignments = extracted.landed_assignments
            workers = sorted(extracted.landed_workers.values(), key=KEYS["workers"])
        else:
            assignments = staging_db.staged_assignments(conn, ctx.run_id)
            workers = staging_db.staged_worker_list(conn, ctx.run_id)
        probe = {"okta_users": extracted.users_pulled, "assigned_users": len(assignments), "workers": len(workers)}
        if not allow_shrink:
            _check_shrink(previous["counts"] if previous else None, probe, full=ctx.full, percent=s.shrink_guard_percent)

        mirror_db.refresh_mirror(conn, ctx.run_id, full=ctx.full)
        current = history_db.current_history(conn)
        users = mirror_db.mirror_users(conn, ctx.run_id)
        deleted = sorted((set(assignments) | set(current)) - set(users))
        started = time.perf_counter()
        changes = diff_history(current, users, assignments, role_source=s.role_source,
                               observed_at=ctx.started_at, deleted_ids=deleted,
                               observed_after=previous["started_at"] if previous else None)
        diff_seconds = time.perf_counter() - started
        history_rows = history_db.apply_history(conn, ctx.run_id, changes)

        live_assignments = [a for uid, a in assignments.items() if uid in users]
        find_owner = mirror_db.owner_finder(conn, likely_orphan_names(workers, live_assignments))
        started = time.perf_counter()
        findings = reconcile(users, live_assignments, workers, role_source=s.role_source, valid_roles=s.valid_role_set,
                             find_owner=find_owner)
        reconcile_seconds = time.perf_counter() - started
        delta = store_findings_with_delta(conn, ctx.run_id, findings, started_at=ctx.started_at,
                                          org_url=ctx.org_url, workspace_sid=s.twilio_workspace_sid)
        problems = staging_db.problem_records(conn, ctx.run_id)

        counts = {"okta_users": mirror_db.count_mirror(conn), "assigned_users": len(assignments), "workers": len(workers),
                  "users_pulled": extracted.users_pulled, "history_rows_written": history_rows,
                  "findings": len(findings), "skipped_records": len(extracted.skipped), "log_events": extracted.log_events, "pages": extracted.pages,
                  "problem_records": problems[0], "skipped_sample": (extracted.skipped + problems[1])[:200],
                  "summary": summarize(findings), "roles": history_db.role_counts(conn), "requests": extracted.requests,
                  "delta": delta,
                  "rate_limits": extracted.rate_limits,
                  "timings": {**_pure_timings(extracted.normalize_seconds, diff_seconds, reconcile_seconds),
                              "listings": extracted.listing_seconds}}
        marks = {}
        if extracted.max_user_last_updated is not None:
            prior = runs_db.get_watermark(conn, ctx.org_url, "users")
            value = max(filter(None, [prior, extracted.max_user_last_updated]))
            runs_db.set_watermark(conn, ctx.org_url, "users", value, ctx.run_id)
            marks["users"] = value.isoformat()
        elif ctx.full:
            runs_db.set_watermark(conn, ctx.org_url, "users", ctx.started_at, ctx.run_id)
            marks["users"] = ctx.started_at.isoformat()
        runs_db.finish_run(conn, ctx.run_id, status="succeeded", counts=counts, watermarks_=marks)
        runs_db.prune(conn, keep_staging_runs=s.staging_retention_runs, raw_retention_days=s.raw_page_retention_days,
                    now=ctx.started_at)
    return PublishResult(counts, findings, history_rows, deleted, {w.worker_sid: w for w in workers}, users,
                         assignments)


def likely_orphan_names(workers: list[Worker], assignments: list[AppAssignment]) -> list[str]:
    """Friendly names of workers no assignment names: reconcile will ask who owns them, so
    their owners are looked up in one batch (any other name still gets its own query)."""
    taken = {username_key(a.app_username) for a in assignments}
    return [w.friendly_name for w in workers if w.friendly_name and username_key(w.friendly_name) not in taken]


def _pure_timings(normalize: dict, diff: float, reconcile_: float) -> dict:
    """Seconds spent in the pure stages (normalize is CPU time summed over the listings)."""
    out = {"normalize": round(sum(normalize.values()), 3), "history_diff": round(diff, 3),
           "reconcile": round(reconcile_, 3)}
    out["pure_total"] = round(sum(out.values()), 3)
    return out


# --- the run ----------------------------------------------------------------------------------

class NightlySync:
    """One nightly run: prepare -> extract -> publish -> repair -> report."""

    def __init__(self, settings: Settings, *, full: bool = False, apply: bool = False,
                 max_changes: int | None = None, allow_shrink: bool = False, strip_deactivated: bool = False,
                 delete_orphans: bool = False, progress=None, flow_name: str = "nightly-sync",
                 okta=None, taskrouter=None):
        settings.require_sources()
        self.settings = settings
        self.force_full = full
        self.apply = apply
        self.max_changes = settings.max_changes if max_changes is None else max_changes
        self.allow_shrink = allow_shrink
        self.strip_deactivated = strip_deactivated
        self.delete_orphans = delete_orphans
        self.progress = progress
        self.flow_name = flow_name
        self._okta, self._taskrouter = okta, taskrouter
        self.engine: Engine | None = None
        self.ctx = None
        self.extracted = None
        self.published = None
        self.repaired = 0
        self.deferred_error: Exception | None = None

    # The writer lock spans the whole run; both runners enter it around the stages.
    @contextlib.contextmanager
    def locked(self):
        with writing(self.settings) as self.engine:
            yield self

    def _clients(self):
        if self._okta is None:
            self._okta = OktaClient.from_settings(self.settings)
        if self._taskrouter is None:
            self._taskrouter = TaskRouterClient.from_settings(self.settings)
        return self._okta, self._taskrouter

    def prepare(self) -> str:
        with self.engine.connect() as conn:
            if runs_db.last_run(conn, flows=("nightly-sync", "backfill", "reconcile")) is None:
                log.info("no earlier run in this database (%s): this run starts a new role history there",
                         sqlite_path(self.settings.database_url) or shown_url(self.settings.database_url))
        abandoned = runs_db.abandon_stale_runs(self.engine)
        if abandoned:
            log.warning("discarded %d run(s) that stopped before finishing: %s", len(abandoned), ", ".join(abandoned))
        full, since = plan_mode(self.engine, self.settings, full=self.force_full)
        params = {"full": full, "apply": self.apply, "max_changes": self.max_changes,
                  "updated_since": since.isoformat() if since else None}
        run_id, started = runs_db.open_run(self.engine, flow=self.flow_name, org_url=self.settings.okta_org_url,
                                           parameters=params, workspace_sid=self.settings.twilio_workspace_sid)
        self.ctx = SyncContext(self.settings, self.engine, run_id, started, self.settings.okta_org_url, full, since,
                               log_since=log_window(self.engine, self.settings, started),
                               progress=self.progress or (lambda *a: None))
        log.info("run %s: %s pull%s", run_id, "full" if full else "incremental",
                 f" of users updated since {since:%Y-%m-%d %H:%M:%S}Z" if since else "")
        return run_id

    def extract(self):
        okta, tr = self._clients()
        runs_db.discard_run(self.engine, self.ctx.run_id)  # a retried extract starts from a clean landing
        self.extracted = extract(self.ctx, okta, tr)
        self.extracted.requests = {"okta": okta.stats.as_dict(), "taskrouter": tr.stats.as_dict()}
        self.extracted.rate_limits = getattr(okta, "rate_limit_usage", dict)()
        return self.extracted

    def publish(self):
        self.published = publish(self.ctx, self.extracted, allow_shrink=self.allow_shrink)
        return self.published

    def repair(self) -> int:
        if not self.apply:
            return 0
        _, tr = self._clients()
        try:
            self.repaired = repair_workers(self.engine, tr, self.ctx.run_id, self.published,
                                           settings=self.settings, max_changes=self.max_changes,
                                           strip_deactivated=self.strip_deactivated,
                                           delete_orphans=self.delete_orphans)
        except RepairRefused as exc:  # still write the reports, then fail the run
            log.error("%s", exc)
            self.deferred_error = exc
        return self.repaired

    def raise_deferred(self) -> None:
        if self.deferred_error is not None:
            raise self.deferred_error

    def report(self) -> RunOutcome:
        mode = "apply" if self.apply else "dry-run"
        try:
            doc, paths = report(self.engine, self.settings, self.ctx.run_id, mode=mode)
        except DBAPIError as exc:
            # Publish is committed: a connection lost now (a server restart, an admin ending
            # sessions) costs one more try of the read-only report, not a failed run.
            if not exc.connection_invalidated:
                raise
            log.warning("lost the database connection while writing the reports; trying once more")
            doc, paths = report(self.engine, self.settings, self.ctx.run_id, mode=mode)
        return RunOutcome.from_report(doc, paths, self.repaired)

    def fail(self, exc: BaseException) -> None:
        """Undo what the run landed and record why it failed (never with a secret in it)."""
        if self.ctx is None:
            return
        msg = redact(f"{type(exc).__name__}: {exc}", self.settings.secret_values())
        published = self.published is not None
        try:
            if not published:
                runs_db.discard_run(self.engine, self.ctx.run_id)
            status = "aborted" if type(exc).__name__ == "ShrinkGuardError" else "failed"
            runs_db.finish_run(self.engine, self.ctx.run_id, status=status, error=msg)
        except Exception:  # the original error matters more than the bookkeeping
            log.exception("could not record the failure of run %s", self.ctx.run_id)

    def close(self) -> None:
        for c in (self._okta, self._taskrouter):
            if c is not None:
                with contextlib.suppress(Exception):
                    c.close()


def run_nightly(settings: Settings, **options) -> RunOutcome:
    """The whole nightly run in this process, without Prefect."""
    with running(NightlySync(settings, **options)) as job:
        job.prepare()
        job.extract()
        job.publish()
        job.repair()
        outcome = job.report()
        job.raise_deferred()
        return outcome

