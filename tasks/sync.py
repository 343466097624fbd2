"""The nightly sync as plain stage functions: extract -> publish -> repair -> report.

`flows/nightly.py` wraps each stage in a Prefect task; `okta_flex_sync.pipeline` calls them
directly.  Stages share a `SyncContext`; none holds business rules (those live in
`tasks.normalize`, `tasks.history`, `tasks.reconcile`, `tasks.repair_plan`).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from models.records import AppAssignment, Finding, OktaUser, Worker
from okta_flex_sync.settings import Settings
from tasks import store
from tasks.backfill import LOG_FILTER, event_row, parse_log_event
from tasks.history import diff_history
from tasks.normalize import (
    MalformedRecord,
    normalize_assignment,
    normalize_user,
    parse_timestamp,
    parse_worker,
    username_key,
)
from tasks.reconcile import reconcile, summarize

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (source, pages so far, items so far)


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
    progress: Progress = lambda source, pages, items: None  # noqa: E731


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
        mark = store.get_watermark(conn, settings.okta_org_url, "users")
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
            # Compress here: zlib lets go of the GIL, so this overlaps the consumer's work
            # instead of adding to it (~40 MB of pages a night at 15k workers).
            q.put((source, (page, store.compress_page(page.raw))))
        q.put((source, _DONE))
    except BaseException as exc:  # hand the failure to the consumer thread
        q.put((source, exc))


def _convert(source: str, items: list, convert: Callable) -> tuple[list, list[dict]]:
    """(records, skipped) of one page; an item without a usable id is skipped and reported."""
    records, skipped = [], []
    for item in items:
        try:
            record = convert(item)
            if record is not None:  # None: an item this listing does not keep
                records.append(record)
        except MalformedRecord as exc:
            rid = item.get("id") or item.get("sid") if isinstance(item, dict) else None
            skipped.append({"source": source, "id": store.storable_text(str(rid)[:100]) if rid else None,
                            "reason": str(exc)[:300]})
    return records, skipped


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
    """Pull users, Flex assignments and workers concurrently; land every page as it arrives."""
    s = ctx.settings
    valid = s.valid_role_set
    result = ExtractResult(landed_assignments={}, landed_workers={})
    kept = {"assignments": result.landed_assignments, "workers": result.landed_workers}
    seen: dict[str, set[str]] = {"users": set(), "assignments": set(), "workers": set()}

    def user_conv(raw):
        return normalize_user(raw, valid_roles=valid, image_url_attribute=s.image_url_attribute)

    def assignment_conv(raw):
        return normalize_assignment(raw, valid_roles=valid)

    listings = {
        "users": (okta.iter_user_pages(updated_since=ctx.updated_since), user_conv),
        "assignments": (okta.iter_app_user_pages(s.okta_flex_app_id), assignment_conv),
        "workers": (taskrouter.iter_worker_pages(page_size=1000, known_attributes=_known_attributes(ctx)),
                    parse_worker),
    }
    if ctx.log_since is not None:
        listings["logs"] = (_optional(okta.iter_log_pages(ctx.log_since, ctx.started_at, filter=LOG_FILTER), "System Log"),
                            _log_converter(s.okta_flex_app_id))
    seen["logs"] = set()
    q: queue.Queue = queue.Queue(maxsize=16)
    stop = threading.Event()
    threads = [threading.Thread(target=_produce, args=(q, src, pages, stop), name=f"extract-{src}", daemon=True)
               for src, (pages, _conv) in listings.items()]
    for t in threads:
        t.start()
    running = len(threads)
    seq = dict.fromkeys(listings, 0)
    items = dict.fromkeys(listings, 0)
    result.normalize_seconds.update(dict.fromkeys(listings, 0.0))
    started_at = time.perf_counter()
    try:
        while running:
            landed = []
            with ctx.engine.begin() as conn:
                for source, page in _take(q):
                    if page is _DONE:
                        running -= 1
                        result.listing_seconds[source] = round(time.perf_counter() - started_at, 3)
                        continue
                    if isinstance(page, BaseException):
                        raise page
                    page, body_gz = page
                    started = time.thread_time()
                    records, skipped = _convert(source, page.items, listings[source][1])
                    result.normalize_seconds[source] += time.thread_time() - started
                    seq[source] += 1
                    records, replaced = _dedupe(source, records, seen[source])
                    if source == "users":
                        for u in records:
                            if u.last_updated and (result.max_user_last_updated is None or u.last_updated > result.max_user_last_updated):
                                result.max_user_last_updated = u.last_updated
                    store.land_raw_page(conn, ctx.run_id, source, seq[source], url=page.url, fetched_at=page.fetched_at,
                                        body_gz=body_gz, item_count=len(page.items))
                    if replaced and source != "logs":  # listed twice (e.g. deactivated during the pull): the later listing wins
                        store.unland(conn, ctx.run_id, source, replaced)
                    LANDERS[source](conn, ctx.run_id, records)
                    if source in kept:
                        kept[source].update((_KEY[source](r), store.as_landed(r)) for r in records)
                    items[source] += len(records) - len(replaced)
                    result.skipped.extend(skipped)
                    if page.dropped:
                        result.skipped.append({"source": source, "id": None,
                                               "reason": f"{page.dropped} list item(s) on a page were not JSON objects"})
                    landed.append((source, seq[source], items[source]))
            for progress in landed:
                ctx.progress(*progress)
    finally:
        stop.set()
        deadline = time.monotonic() + 10
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:  # unblock producers on a full queue
            try:
                q.get(timeout=0.01)
            except queue.Empty:
                pass
    result.users_pulled, result.assignments, result.workers = items["users"], items["assignments"], items["workers"]
    result.log_events = items.get("logs", 0)
    result.pages = dict(seq)
    _land_missing_assigned_users(ctx, okta, result)
    return result


def _land_log_events(conn, run_id: str, events) -> int:
    return store.store_log_events(conn, [event_row(e, run_id) for e in events])


LANDERS = {"users": store.land_users, "assignments": store.land_assignments, "workers": store.land_workers,
           "logs": _land_log_events}
_KEY = {"users": lambda r: r.okta_user_id, "assignments": lambda r: r.okta_user_id, "workers": lambda r: r.worker_sid,
        "logs": lambda e: e.uuid}


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
                previous.append(store.last_run(conn, org_url=ctx.org_url))
            if previous[0] is None:
                return {}
            stored = store.unchanged_worker_attributes(
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
    from tasks.http import ApiError

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
        previous = store.last_run(conn, org_url=settings.okta_org_url)
    if previous is None:
        return floor
    return max(floor, previous["started_at"] - timedelta(seconds=settings.incremental_overlap_seconds))


def _dedupe(source: str, records: list, seen: set[str]) -> tuple[list, list[str]]:
    """Keep the last record per key on a page; report keys already landed from earlier pages."""
    key = _KEY[source]
    latest = {key(r): r for r in records}
    replaced = [k for k in latest if k in seen]
    seen.update(latest)
    return list(latest.values()), replaced


def _land_missing_assigned_users(ctx: SyncContext, okta, result: ExtractResult) -> None:
    """An incremental pull may not list an assigned user the mirror has never seen: fetch them."""
    if ctx.full:
        return
    from sqlalchemy import exists, select

    from models.tables import okta_users, staged_app_assignments, staged_okta_users

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
    from tasks.http import NotFoundError

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
        store.land_users(conn, ctx.run_id, fetched)
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
    with ctx.engine.begin() as conn:
        previous = store.last_run(conn, org_url=ctx.org_url)
        if extracted.landed_assignments is not None and extracted.landed_workers is not None:
            assignments = extracted.landed_assignments
            workers = sorted(extracted.landed_workers.values(), key=_KEY["workers"])
        else:
            assignments = store.staged_assignments(conn, ctx.run_id)
            workers = store.staged_worker_list(conn, ctx.run_id)
        probe = {"okta_users": extracted.users_pulled, "assigned_users": len(assignments), "workers": len(workers)}
        if not allow_shrink:
            _check_shrink(previous["counts"] if previous else None, probe, full=ctx.full, percent=s.shrink_guard_percent)

        store.refresh_mirror(conn, ctx.run_id, full=ctx.full)
        current = store.current_history(conn)
        users = store.mirror_users(conn, ctx.run_id)
        deleted = sorted((set(assignments) | set(current)) - set(users))
        started = time.perf_counter()
        changes = diff_history(current, users, assignments, role_source=s.role_source,
                               observed_at=ctx.started_at, deleted_ids=deleted,
                               observed_after=previous["started_at"] if previous else None)
        diff_seconds = time.perf_counter() - started
        history_rows = store.apply_history(conn, ctx.run_id, changes)

        live_assignments = [a for uid, a in assignments.items() if uid in users]
        find_owner = store.owner_finder(conn, likely_orphan_names(workers, live_assignments))
        started = time.perf_counter()
        findings = reconcile(users, live_assignments, workers, role_source=s.role_source, valid_roles=s.valid_role_set,
                             find_owner=find_owner)
        reconcile_seconds = time.perf_counter() - started
        store.store_findings(conn, ctx.run_id, findings)
        problems = store.problem_records(conn, ctx.run_id)

        counts = {"okta_users": store.count_mirror(conn), "assigned_users": len(assignments), "workers": len(workers),
                  "users_pulled": extracted.users_pulled, "history_rows_written": history_rows,
                  "findings": len(findings), "skipped_records": len(extracted.skipped), "log_events": extracted.log_events, "pages": extracted.pages,
                  "problem_records": problems[0], "skipped_sample": (extracted.skipped + problems[1])[:200],
                  "summary": summarize(findings), "roles": store.role_counts(conn), "requests": extracted.requests,
                  "rate_limits": extracted.rate_limits,
                  "timings": {**_pure_timings(extracted.normalize_seconds, diff_seconds, reconcile_seconds),
                              "listings": extracted.listing_seconds}}
        marks = {}
        if extracted.max_user_last_updated is not None:
            prior = store.get_watermark(conn, ctx.org_url, "users")
            value = max(filter(None, [prior, extracted.max_user_last_updated]))
            store.set_watermark(conn, ctx.org_url, "users", value, ctx.run_id)
            marks["users"] = value.isoformat()
        elif ctx.full:
            store.set_watermark(conn, ctx.org_url, "users", ctx.started_at, ctx.run_id)
            marks["users"] = ctx.started_at.isoformat()
        store.finish_run(conn, ctx.run_id, status="succeeded", counts=counts, watermarks_=marks)
        store.prune(conn, keep_staging_runs=s.staging_retention_runs, raw_retention_days=s.raw_page_retention_days,
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


# --- report -------------------------------------------------------------------------------

def report(engine: Engine, settings: Settings, run_id: str, *, generated_at: datetime | None = None,
           mode: str = "dry-run",
           formats=("json", "csv", "html", "md")) -> tuple[dict, dict[str, Path]]:
    """Build the drift report of a stored run and write it under REPORT_DIR/<run_id>/."""
    from tasks.reports import build_report, run_report_dir, write_reports

    with engine.connect() as conn:
        run = store.get_run(conn, run_id)
        if run is None:
            raise LookupError(f"no run with id {run_id!r}")
        findings = store.load_findings(conn, run_id)
        trend = [{"run_id": r["run_id"], "started_at": r["started_at"].isoformat(),
                  "summary": (r["counts"] or {}).get("summary", {}), "roles": (r["counts"] or {}).get("roles", {})}
                 for r in reversed(store.recent_runs(conn, limit=30)) if r["started_at"] <= run["started_at"]]
    counts = run["counts"] or {}
    doc = build_report(run_id, generated_at or store.utcnow(), counts, findings, trend=trend,
                       skipped=counts.get("skipped_sample", []), mode=mode)
    paths = write_reports(doc, run_report_dir(Path(settings.report_dir), run_id), formats=formats)
    return doc, paths


# --- reconcile only -------------------------------------------------------------------------

def reconcile_stored(engine: Engine, settings: Settings, run_id: str, source_run_id: str) -> dict:
    """Reconcile the staged assignments and workers of an earlier run again, without calling
    any API (e.g. after changing VALID_ROLES or ROLE_SOURCE); findings go to `run_id`."""
    with engine.begin() as conn:
        source = store.get_run(conn, source_run_id)
        assignments = store.staged_assignments(conn, source_run_id)
        workers = store.staged_worker_list(conn, source_run_id)
        if not workers and not assignments:
            raise LookupError(f"run {source_run_id} has no staged data left (staging keeps the last "
                              f"{settings.staging_retention_runs} runs)")
        users = store.mirror_users(conn, source_run_id, with_current_history=False)
        live = [a for uid, a in assignments.items() if uid in users]
        findings = reconcile(users, live, workers, role_source=settings.role_source, valid_roles=settings.valid_role_set,
                             find_owner=store.owner_finder(conn, likely_orphan_names(workers, live)))
        store.store_findings(conn, run_id, findings)
        counts = {k: v for k, v in (source["counts"] or {}).items() if k in ("okta_users", "skipped_sample")}
        counts.update({"assigned_users": len(assignments), "workers": len(workers), "findings": len(findings),
                       "summary": summarize(findings), "roles": store.role_counts(conn),
                       "source_run_id": source_run_id})
        store.finish_run(conn, run_id, status="succeeded", counts=counts)
    return counts
