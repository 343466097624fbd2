"""Prefect flow `backfill`: rebuild role history for a past range, one task per day.

The tasks hold no logic: each calls one method of `okta_flex_sync.jobs.backfill.Backfill`.  A day that fails
(e.g. the System Log is down) is retried when the error is transient; a run that stops anyway is
resumed by running the same range again, since fetched days are not fetched twice and rebuilt
days come out the same.
"""
from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from okta_flex_sync.flows.common import flow_settings, one_writer
from okta_flex_sync.flows.parameters import Day
from okta_flex_sync.jobs.backfill import Backfill
from okta_flex_sync.jobs.lifecycle import running
from okta_flex_sync.tasks.backfill import task_day, task_finish, task_plan
from okta_flex_sync.tasks.known_errors import quiet_flow, unwrap


def backfill_run_name() -> str:
    """"backfill 2026-10-01..2026-10-31" (plus " dry-run")."""
    p = flow_run.parameters or {}
    return f"backfill {p.get('start')}..{p.get('end')}{' dry-run' if p.get('dry_run') else ''}"


@flow(name="backfill", flow_run_name=backfill_run_name, log_prints=False, validate_parameters=True)
@quiet_flow
def backfill(start: Day, end: Day, dry_run: bool = False) -> dict:
    """Rebuild role history for the UTC days `start`..`end` (inclusive) from the raw pages earlier
    nightly runs stored and the Okta System Log, whose event times pin down when assignment,
    status and profile changes happened.  Idempotent; refuses days older than the log's 90-day
    retention that no raw pages cover; `dry_run` reports what would change and writes nothing."""
    settings = flow_settings()
    job = Backfill(settings, start, end, dry_run=dry_run)
    with running(job, guard=one_writer(settings)):
        unwrap(task_plan(job))
        for day in job.days:
            unwrap(task_day(job, day))
        result = unwrap(task_finish(job))
    get_run_logger().info("backfill %s..%s%s: %d day(s), %d event(s), %d row(s) opened, %d closed, %d removed",
                          start, end, " (dry run)" if dry_run else "", result.days, result.events,
                          result.rows_opened, result.rows_closed, result.rows_removed)
    why = job.nothing_rebuilt_reason(result)
    if why:
        get_run_logger().warning("%s", why)
    return result.as_dict()
