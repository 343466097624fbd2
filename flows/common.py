"""Thin Prefect tasks around the pipeline stages, shared by the flows.

Tasks hold no logic: each calls one method of `NightlySync` (or one plain function). Retries are
coarse (a whole listing), and only for errors the HTTP layer calls retriable.
"""
from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timezone

from prefect import task
from prefect.cache_policies import NO_CACHE

from okta_flex_sync.settings import Settings

WRITER_LIMIT = "okta-flex-sync-writer"
log = logging.getLogger(__name__)


def retry_if_transient(task_, task_run, state) -> bool:
    """Retry only what the HTTP layer calls retriable (outages, 5xx, timeouts), never auth/404/data errors."""
    from tasks.http import is_retriable_error

    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:  # the state carries no result: decide on what was raised
        exc = err
    return isinstance(exc, BaseException) and is_retriable_error(exc)


def nightly_run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters or {}
    flags = [name for name in ("full", "apply") if p.get(name)]
    return " ".join([f"nightly-sync {datetime.now(timezone.utc):%Y-%m-%d}", *flags])


@task(name="prepare run", cache_policy=NO_CACHE)
def task_prepare(job) -> str:
    return job.prepare()


@task(name="extract okta users, flex assignments, taskrouter workers", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=[30, 120], retry_condition_fn=retry_if_transient)
def task_extract(job):
    e = job.extract()
    return {"users": e.users_pulled, "assignments": e.assignments, "workers": e.workers, "skipped": len(e.skipped)}


@task(name="publish history and findings", cache_policy=NO_CACHE)
def task_publish(job):
    p = job.publish()
    return {"history_rows": p.history_rows, "findings": len(p.findings)}


@task(name="repair workers", cache_policy=NO_CACHE)
def task_repair(job) -> int:
    return job.repair()


@task(name="write reports", cache_policy=NO_CACHE)
def task_report(job):
    outcome = job.report()
    from tasks.artifacts import publish_artifacts
    import json

    publish_artifacts(json.loads(outcome.report_paths["json"].read_text(encoding="utf-8")))
    return outcome


@contextlib.contextmanager
def one_writer(settings: Settings, timeout_seconds: float = 6 * 3600):
    """Prefect-level guard: one writer per org across nightly and backfill runs (the database
    lock in `okta_flex_sync.db.writer_lock` is the last line)."""
    from prefect.concurrency.sync import concurrency

    _ensure_limit(WRITER_LIMIT)
    with concurrency(WRITER_LIMIT, occupy=1, timeout_seconds=timeout_seconds):
        yield


def _ensure_limit(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    try:
        with get_client(sync_client=True) as client:
            try:
                client.read_global_concurrency_limit_by_name(name)
            except Exception:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    except Exception as exc:  # never fail a run over the optional Prefect-level guard
        log.warning("could not ensure Prefect concurrency limit %s: %s", name, exc)
