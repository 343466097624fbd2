"""Prefect tasks of the backfill flow: each a thin call into `okta_flex_sync.jobs.backfill.Backfill`."""
from __future__ import annotations

from datetime import date

from prefect import task
from prefect.cache_policies import NO_CACHE

from okta_flex_sync.jobs.backfill import Backfill
from okta_flex_sync.tasks.known_errors import quiet_task
from okta_flex_sync.tasks.retry import retry_if_transient


@task(name="plan backfill", cache_policy=NO_CACHE)
@quiet_task
def task_plan(job: Backfill) -> str | None:
    return job.prepare()


@task(name="backfill day", task_run_name="backfill {day}", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=[30, 120], retry_condition_fn=retry_if_transient)
@quiet_task
def task_day(job: Backfill, day: date) -> dict:
    return job.run_day(day).as_dict()


@task(name="finish backfill", cache_policy=NO_CACHE)
@quiet_task
def task_finish(job: Backfill):
    return job.finish()

