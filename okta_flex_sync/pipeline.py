"""The nightly sync without an orchestrator, and the object both runners share.

`NightlySync` holds one run's context; its methods are the stages.  `run_nightly` calls them in
order; `flows/nightly.py` calls the same methods from Prefect tasks.
"""
from __future__ import annotations

import contextlib
import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from okta_flex_sync.db import make_engine, writer_lock
from okta_flex_sync.observability import redact
from okta_flex_sync.settings import Settings
from okta_flex_sync.storage.connect import (  # noqa: F401 - SchemaOutOfDate is imported from here too
    SchemaOutOfDate,
    check_connection,
    check_schema,
    shown_url,
    sqlite_path,
)
from tasks import store

log = logging.getLogger(__name__)


def open_database(settings: Settings) -> Engine:
    """An engine on an up-to-date schema: SQLite upgrades itself, Postgres must be upgraded explicitly."""
    engine = make_engine(settings.database_url)
    try:
        check_connection(engine, settings.database_url)
        ensure_schema(engine, settings)
    except BaseException:
        engine.dispose()
        raise
    return engine


def ensure_schema(engine: Engine, settings: Settings) -> None:
    """Upgrade SQLite in place; require Postgres to be at head.  A writer calls this while it
    holds the writer lock, so two runs started together never migrate at once (Alembic keeps
    process-global state, and a losing run must exit cleanly, not half-way through a migration).

    A database already at `HEAD_REVISION` is answered by one query, without loading Alembic
    (about 0.1 s of imports and script scanning on every run)."""
    check_schema(engine, settings)


# A run allocates millions of short-lived containers (every decoded JSON object) that reference
# counting frees, while it holds ~100k long-lived records: with the default first-generation
# threshold (700) the collector ran ~650 times in an incremental run and its full passes over
# those records took 0.3-0.4 s of a 2.2 s run.  Cycles are still collected, just less often.
GC_THRESHOLDS = (50_000, 20, 100)


@contextlib.contextmanager
def fewer_gc_passes(thresholds: tuple[int, int, int] = GC_THRESHOLDS):
    """Raise the garbage collector's thresholds (never lower them) for the duration."""
    before = gc.get_threshold()
    gc.set_threshold(*(max(b, t) for b, t in zip(before, thresholds)))
    try:
        yield
    finally:
        gc.set_threshold(*before)


@contextlib.contextmanager
def writing(settings: Settings):
    """An engine for a writer: the writer lock first (one writer per database), then the schema."""
    engine = make_engine(settings.database_url)
    try:
        check_connection(engine, settings.database_url)
        with fewer_gc_passes(), writer_lock(engine, settings.okta_org_url or "this database",
                                            wait_seconds=settings.lock_wait_seconds):
            ensure_schema(engine, settings)
            yield engine
    finally:
        engine.dispose()


@dataclass
class RunOutcome:
    run_id: str
    counts: dict
    summary: dict
    report_paths: dict[str, Path] = field(default_factory=dict)
    severities: dict = field(default_factory=dict)
    repaired: int = 0

    @classmethod
    def from_report(cls, doc: dict, paths: dict, repaired: int = 0) -> "RunOutcome":
        severities: dict[str, int] = {}
        for f in doc["findings"]:
            severities[f["severity"]] = severities.get(f["severity"], 0) + 1
        return cls(doc["run_id"], doc["counts"], doc["summary"], paths, severities, repaired)


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
        from tasks.okta_client import OktaClient
        from tasks.taskrouter_client import TaskRouterClient

        if self._okta is None:
            self._okta = OktaClient.from_settings(self.settings)
        if self._taskrouter is None:
            self._taskrouter = TaskRouterClient.from_settings(self.settings)
        return self._okta, self._taskrouter

    def prepare(self) -> str:
        from tasks.sync import SyncContext, log_window, plan_mode

        with self.engine.connect() as conn:
            if store.last_run(conn, flows=("nightly-sync", "backfill", "reconcile")) is None:
                log.info("no earlier run in this database (%s): this run starts a new role history there",
                         sqlite_path(self.settings.database_url) or shown_url(self.settings.database_url))
        abandoned = store.abandon_stale_runs(self.engine)
        if abandoned:
            log.warning("discarded %d run(s) that stopped before finishing: %s", len(abandoned), ", ".join(abandoned))
        full, since = plan_mode(self.engine, self.settings, full=self.force_full)
        params = {"full": full, "apply": self.apply, "max_changes": self.max_changes,
                  "updated_since": since.isoformat() if since else None}
        run_id, started = store.open_run(self.engine, flow=self.flow_name, org_url=self.settings.okta_org_url,
                                         parameters=params)
        self.ctx = SyncContext(self.settings, self.engine, run_id, started, self.settings.okta_org_url, full, since,
                               log_since=log_window(self.engine, self.settings, started),
                               progress=self.progress or (lambda *a: None))
        log.info("run %s: %s pull%s", run_id, "full" if full else "incremental",
                 f" of users updated since {since:%Y-%m-%d %H:%M:%S}Z" if since else "")
        return run_id

    def extract(self):
        from tasks.sync import extract

        okta, tr = self._clients()
        store.discard_run(self.engine, self.ctx.run_id)  # a retried extract starts from a clean landing
        self.extracted = extract(self.ctx, okta, tr)
        self.extracted.requests = {"okta": okta.stats.as_dict(), "taskrouter": tr.stats.as_dict()}
        self.extracted.rate_limits = getattr(okta, "rate_limit_usage", dict)()
        return self.extracted

    def publish(self):
        from tasks.sync import publish

        self.published = publish(self.ctx, self.extracted, allow_shrink=self.allow_shrink)
        return self.published

    def repair(self) -> int:
        if not self.apply:
            return 0
        from tasks.repair import RepairRefused, repair_workers

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
        from tasks.sync import report

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
                store.discard_run(self.engine, self.ctx.run_id)
            status = "aborted" if type(exc).__name__ == "ShrinkGuardError" else "failed"
            store.finish_run(self.engine, self.ctx.run_id, status=status, error=msg)
        except Exception:  # the original error matters more than the bookkeeping
            log.exception("could not record the failure of run %s", self.ctx.run_id)

    def close(self) -> None:
        for c in (self._okta, self._taskrouter):
            if c is not None:
                with contextlib.suppress(Exception):
                    c.close()


def run_nightly(settings: Settings, **options) -> RunOutcome:
    """The whole nightly run in this process, without Prefect."""
    job = NightlySync(settings, **options)
    try:
        with job.locked():
            job.prepare()
            try:
                job.extract()
                job.publish()
                job.repair()
                outcome = job.report()
                job.raise_deferred()
                return outcome
            except BaseException as exc:
                job.fail(exc)
                raise
    finally:
        job.close()


def reconcile_latest(settings: Settings, *, source_run_id: str | None = None) -> RunOutcome:
    """Reconcile an earlier run's staged data again and write fresh reports (no API calls)."""
    from tasks.sync import reconcile_stored, report

    with writing(settings) as engine:
        if source_run_id is None:
            with engine.connect() as conn:
                last = store.last_run(conn, org_url=settings.okta_org_url) if settings.okta_org_url else \
                    store.last_run(conn)
            if last is None:
                raise LookupError("no successful nightly run to reconcile; run `okta-flex-sync run` first")
            source_run_id = last["run_id"]
        run_id, _ = store.open_run(engine, flow="reconcile", org_url=settings.okta_org_url,
                                   parameters={"source_run_id": source_run_id})
        try:
            reconcile_stored(engine, settings, run_id, source_run_id)
        except BaseException as exc:
            store.discard_run(engine, run_id)
            store.finish_run(engine, run_id, status="failed", error=redact(str(exc), settings.secret_values()))
            raise
        doc, paths = report(engine, settings, run_id)
    return RunOutcome.from_report(doc, paths)
