"""Prefect flow `reconcile`: findings and reports again from the latest staged data, no API calls."""
from __future__ import annotations

from prefect import flow

from okta_flex_sync.flows.common import flow_settings, one_writer
from okta_flex_sync.storage.connect import refuse_missing_sqlite
from okta_flex_sync.tasks.known_errors import quiet_flow, unwrap
from okta_flex_sync.tasks.reconcile import task_reconcile


@flow(name="reconcile", flow_run_name="reconcile {source_run_id}")
@quiet_flow
def reconcile_flow(source_run_id: str = "latest"):
    """Re-run reconciliation and the drift reports on the latest (or the given) run's staged
    assignments and workers and the current user mirror, without calling Okta or TaskRouter."""
    settings = flow_settings()
    refuse_missing_sqlite(settings)  # reconcile reads earlier runs: a missing file is a typo
    with one_writer(settings):
        outcome = unwrap(task_reconcile(settings, None if source_run_id == "latest" else source_run_id))
    return {"run_id": outcome.run_id, "summary": outcome.summary}
