"""Prefect flow `nightly-sync`: extract -> stage/publish -> repair -> report."""
from __future__ import annotations

from prefect import flow, get_run_logger

from okta_flex_sync.core.run_summary import finished_line
from okta_flex_sync.flows.common import flow_settings, nightly_run_name, one_writer
from okta_flex_sync.flows.parameters import ChangeLimit
from okta_flex_sync.jobs.lifecycle import running
from okta_flex_sync.jobs.nightly import NightlySync
from okta_flex_sync.tasks.known_errors import quiet_flow, unwrap
from okta_flex_sync.tasks.nightly import (
    task_extract,
    task_prepare,
    task_publish,
    task_repair,
    task_report,
)


@flow(name="nightly-sync", flow_run_name=nightly_run_name, log_prints=False, validate_parameters=True)
@quiet_flow
def nightly_sync(apply: bool = False, full: bool = False, max_changes: ChangeLimit | None = None,
                 strip_deactivated: bool = False, delete_orphans: bool = False, allow_shrink: bool = False,
                 return_outcome: bool = False):
    """Pull Okta users, Flex app assignments and TaskRouter workers (concurrently), stage them,
    update role history, reconcile workers against Okta, write drift reports, and repair the
    SSO-managed worker attributes only when `apply` is true."""
    settings = flow_settings()
    job = NightlySync(settings, full=full, apply=apply, max_changes=max_changes, allow_shrink=allow_shrink,
                      strip_deactivated=strip_deactivated, delete_orphans=delete_orphans)
    with running(job, guard=one_writer(settings)):
        unwrap(task_prepare(job))
        unwrap(task_extract(job))
        unwrap(task_publish(job))
        unwrap(task_repair(job))
        outcome = unwrap(task_report(job))
        job.raise_deferred()
    get_run_logger().info("run %s: %s", outcome.run_id,
                          ", ".join(f"{k}={v}" for k, v in outcome.summary.items() if v) or "no drift")
    get_run_logger().info("%s", finished_line(outcome.run_id, outcome.counts, outcome.summary, outcome.report_paths))
    return outcome if return_outcome else {"run_id": outcome.run_id, "summary": outcome.summary,
                                           "counts": {k: outcome.counts.get(k) for k in
                                                      ("okta_users", "assigned_users", "workers")}}
