"""The nightly sync without an orchestrator, and the object both runners share.

`NightlySync` holds one run's context; its methods are the stages.  `run_nightly` calls them in
order; `flows/nightly.py` calls the same methods from Prefect tasks.
"""
from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine

from okta_flex_sync.reports.digest import new_by_severity, summary_line
from okta_flex_sync.settings import Settings
from okta_flex_sync.storage.connect import check_connection, check_schema
from okta_flex_sync.storage.engine import make_engine
from okta_flex_sync.storage.lock import writer_lock

log = logging.getLogger(__name__)


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
    delta: dict = field(default_factory=dict)
    new_severities: dict = field(default_factory=dict)  # severity -> findings new in this run
    summary_line: str = ""  # "12 new, 3 resolved, 140 open (20 high) — reports/<run_id>/"

    @classmethod
    def from_report(cls, doc: dict, paths: dict, repaired: int = 0) -> "RunOutcome":
        severities: dict[str, int] = {}
        for f in doc["findings"]:
            severities[f["severity"]] = severities.get(f["severity"], 0) + 1
        location = f"{Path(paths['json']).parent}/" if paths.get("json") else ""
        return cls(doc["run_id"], doc["counts"], doc["summary"], paths, severities, repaired,
                   delta=dict(doc.get("delta") or {}), new_severities=new_by_severity(doc),
                   summary_line=summary_line(doc, location) if "delta" in doc else "")


class Job(Protocol):
    """What `running` needs of a job (`NightlySync`, `Backfill`)."""

    def locked(self) -> contextlib.AbstractContextManager: ...
    def fail(self, exc: BaseException) -> None: ...
    def close(self) -> None: ...


@contextlib.contextmanager
def running(job: Job, *, guard: contextlib.AbstractContextManager | None = None) -> Iterator[Job]:
    """The run lifecycle every runner shares (the CLI's in-process runs and the Prefect flows):
    `guard` (the flows' Prefect-level writer slot), then the job's writer lock; an error inside
    is recorded by `job.fail` (a no-op before the run was opened) and raised again; the job's
    API clients are closed whatever happens."""
    try:
        with guard or contextlib.nullcontext(), job.locked():
            try:
                yield job
            except BaseException as exc:
                job.fail(exc)
                raise
    finally:
        job.close()
