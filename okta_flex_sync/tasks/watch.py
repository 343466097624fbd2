"""Prefect task of the watch flow: one System Log poll, a thin call into `okta_flex_sync.jobs.watch.poll_once`."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from okta_flex_sync.jobs.watch import poll_once


@task(name="poll the system log", cache_policy=NO_CACHE)
def task_poll(settings, apply_high: bool, max_changes: int | None, delete_orphan_workers: bool):
    return poll_once(settings, apply_high=apply_high, max_changes=max_changes, delete_orphans=delete_orphan_workers)

