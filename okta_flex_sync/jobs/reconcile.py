"""Reconcile only: findings and reports again from an earlier run's staged data, without calling any API."""
from __future__ import annotations

from sqlalchemy import Engine

from okta_flex_sync.core.reconcile import reconcile, summarize
from okta_flex_sync.jobs.lifecycle import RunOutcome, writing
from okta_flex_sync.jobs.nightly import likely_orphan_names
from okta_flex_sync.jobs.report import report
from okta_flex_sync.redaction import redact
from okta_flex_sync.settings import Settings
from okta_flex_sync.storage import history as history_db
from okta_flex_sync.storage import mirror as mirror_db
from okta_flex_sync.storage import runs as runs_db
from okta_flex_sync.storage import staging as staging_db
from okta_flex_sync.storage.finding_delta import store_findings_with_delta


def reconcile_stored(engine: Engine, settings: Settings, run_id: str, source_run_id: str) -> dict:
    """Reconcile the staged assignments and workers of an earlier run again, without calling
    any API (e.g. after changing VALID_ROLES or ROLE_SOURCE); findings go to `run_id`."""
    with engine.begin() as conn:
        source = runs_db.get_run(conn, source_run_id)
        assignments = staging_db.staged_assignments(conn, source_run_id)
        workers = staging_db.staged_worker_list(conn, source_run_id)
        if not workers and not assignments:
            raise LookupError(f"run {source_run_id} has no staged data left (staging keeps the last "
                              f"{settings.staging_retention_runs} runs)")
        users = mirror_db.mirror_users(conn, source_run_id, with_current_history=False)
        live = [a for uid, a in assignments.items() if uid in users]
        findings = reconcile(users, live, workers, role_source=settings.role_source, valid_roles=settings.valid_role_set,
                             find_owner=mirror_db.owner_finder(conn, likely_orphan_names(workers, live)))
        run = runs_db.get_run(conn, run_id)
        delta = store_findings_with_delta(conn, run_id, findings, started_at=run["started_at"],
                                          org_url=run["org_url"], workspace_sid=run.get("workspace_sid"))
        counts = {k: v for k, v in (source["counts"] or {}).items() if k in ("okta_users", "skipped_sample")}
        counts.update({"assigned_users": len(assignments), "workers": len(workers), "findings": len(findings),
                       "summary": summarize(findings), "roles": history_db.role_counts(conn),
                       "source_run_id": source_run_id, "delta": delta})
        runs_db.finish_run(conn, run_id, status="succeeded", counts=counts)
    return counts


def reconcile_latest(settings: Settings, *, source_run_id: str | None = None) -> RunOutcome:
    """Reconcile an earlier run's staged data again and write fresh reports (no API calls)."""
    with writing(settings) as engine:
        if source_run_id is None:
            with engine.connect() as conn:
                last = runs_db.last_run(conn, org_url=settings.okta_org_url) if settings.okta_org_url else \
                    runs_db.last_run(conn)
            if last is None:
                raise LookupError("no successful nightly run to reconcile; run `okta-flex-sync run` first")
            source_run_id = last["run_id"]
        run_id, _ = runs_db.open_run(engine, flow="reconcile", org_url=settings.okta_org_url,
                                   parameters={"source_run_id": source_run_id},
                                   workspace_sid=settings.twilio_workspace_sid)
        try:
            reconcile_stored(engine, settings, run_id, source_run_id)
        except BaseException as exc:
            runs_db.discard_run(engine, run_id)
            runs_db.finish_run(engine, run_id, status="failed", error=redact(str(exc), settings.secret_values()))
            raise
        doc, paths = report(engine, settings, run_id)
    return RunOutcome.from_report(doc, paths)

