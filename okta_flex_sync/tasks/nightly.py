"""Prefect tasks of the nightly flow: each a thin call into one stage of `okta_flex_sync.jobs.nightly.NightlySync`."""
from __future__ import annotations

import json

from prefect import task
from prefect.cache_policies import NO_CACHE

from okta_flex_sync.tasks.artifacts import publish_artifacts
from okta_flex_sync.tasks.known_errors import quiet_task
from okta_flex_sync.tasks.retry import retry_if_transient


@task(name="prepare run", cache_policy=NO_CACHE)
@quiet_task
def task_prepare(job) -> str:
    return job.prepare()


@task(name="extract okta users, flex assignments, taskrouter workers", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=[30, 120], retry_condition_fn=retry_if_transient)
@quiet_task
def task_extract(job):
    e = job.extract()
    return {"users": e.users_pulled, "assignments": e.assignments, "workers": e.workers, "skipped": len(e.skipped)}


@task(name="publish history and findings", cache_policy=NO_CACHE)
@quiet_task
def task_publish(job):
    p = job.publish()
    return {"history_rows": p.history_rows, "findings": len(p.findings)}


@task(name="repair workers", cache_policy=NO_CACHE)
@quiet_task
def task_repair(job) -> int:
    return job.repair()


@task(name="write reports", cache_policy=NO_CACHE)
def task_report(job):
    outcome = job.report()


    publish_artifacts(json.loads(outcome.report_paths["json"].read_text(encoding="utf-8")),
                      location=f"{outcome.report_paths['json'].parent}/")
    return outcome

