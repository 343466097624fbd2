"""Prefect flow `watch`: one System Log poll (deployment `watch/watch`, every 5 minutes)."""
from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from okta_flex_sync.flows.common import flow_settings, one_writer
from okta_flex_sync.storage.lock import RunLockedError
from okta_flex_sync.tasks.watch import task_poll

# A poll never waits for the writer slot: a nightly run, backfill or reconcile holding it makes
# the poll skip (the next one comes in 5 minutes), so the watch never delays them.
SLOT_WAIT_SECONDS = 1.0


def watch_run_name() -> str:
    """"watch 2026-12-03 09:05" plus " apply-high", so the UI's run list says when and what."""
    flags = " apply-high" if (flow_run.parameters or {}).get("apply_high") else ""
    return f"watch {datetime.now(timezone.utc):%Y-%m-%d %H:%M}{flags}"


@flow(name="watch", flow_run_name=watch_run_name, log_prints=False, validate_parameters=True)
def watch(apply_high: bool = False, max_changes: int | None = None, delete_orphan_workers: bool = False) -> dict:
    """Read the Okta System Log since the last poll and, for exactly the users its events name
    (suspended, deactivated, unassigned, profile or userType changed), re-read Okta and their
    worker, record role history at the events' times and report drift.  With `apply_high`,
    strip a deactivated user's worker roles and revert privilege escalations at once (guarded
    by `max_changes`, as the nightly repair).  Skips the poll when another run is writing."""
    logger = get_run_logger()
    settings = flow_settings()
    try:
        with one_writer(settings, timeout_seconds=SLOT_WAIT_SECONDS):
            outcome = task_poll(settings, apply_high, max_changes, delete_orphan_workers)
    except RunLockedError as exc:
        logger.info("poll skipped: %s", exc)
        return {"status": "skipped", "message": str(exc)}
    logger.info("%s", outcome.line())
    return {"status": outcome.status, "run_id": outcome.run_id, "events": outcome.events,
            "users": len(outcome.users), "findings": len(outcome.findings), "repaired": outcome.repaired,
            "report": str(outcome.report_path) if outcome.report_path else None}
