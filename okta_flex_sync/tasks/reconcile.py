"""Prefect task of the reconcile flow."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from okta_flex_sync.jobs.reconcile import reconcile_latest
from okta_flex_sync.tasks.known_errors import quiet_task


@task(name="reconcile staged data and write reports", cache_policy=NO_CACHE)
@quiet_task
def task_reconcile(settings, source_run_id):
    return reconcile_latest(settings, source_run_id=source_run_id)

