"""Findings with their run-to-run delta, in `drift_findings` (status, first sighting) and
`sync_runs.counts["delta"]`.  The matching rules are pure, in `okta_flex_sync.core.delta`."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Connection, or_, select

from okta_flex_sync.core.delta import Delta, compare_runs
from okta_flex_sync.models.records import Finding
from okta_flex_sync.models.tables import drift_findings, sync_runs
from okta_flex_sync.storage.bulk import insert_batches

# Runs whose findings an admin saw in a report: the nightly sync and the API-free reconcile.
DELTA_FLOWS = ("nightly-sync", "reconcile")
FINDING_COLUMNS = ("kind", "severity", "okta_user_id", "login", "app_username", "worker_sid", "field",
                   "expected", "actual", "status", "first_seen_run_id", "first_seen_at")


def previous_run(conn: Connection, *, run_id: str, started_at: datetime, org_url: str | None,
                 workspace_sid: str | None, flows: Sequence[str] = DELTA_FLOWS) -> dict | None:
    """The latest successful run before `started_at` for the same org and workspace.  Runs from
    before migration 0004 have no workspace recorded and count as the same workspace."""
    c = sync_runs.c
    q = select(c.run_id, c.started_at).where(c.status == "succeeded", c.flow.in_(flows), c.run_id != run_id,
                                             c.started_at <= started_at)
    q = q.where(c.org_url.is_(None) if org_url is None else c.org_url == org_url)
    if workspace_sid is not None:
        q = q.where(or_(c.workspace_sid == workspace_sid, c.workspace_sid.is_(None)))
    row = conn.execute(q.order_by(c.started_at.desc(), c.run_id.desc()).limit(1)).mappings().first()
    return dict(row) if row else None


def stored_findings(conn: Connection, run_id: str) -> list[dict]:
    """A run's findings as dicts, with their delta columns, in insertion order."""
    cols = [drift_findings.c[name] for name in FINDING_COLUMNS]
    rows = conn.execute(select(*cols).where(drift_findings.c.run_id == run_id).order_by(drift_findings.c.id))
    return [dict(r) for r in rows.mappings()]


def store_findings_with_delta(conn: Connection, run_id: str, findings: Iterable[Finding], *, started_at: datetime,
                              org_url: str | None, workspace_sid: str | None) -> dict:
    """Insert a run's findings marked new or persisting against the previous run; returns the
    delta counts (also what `counts["delta"]` of the run should hold)."""
    findings = [f.as_dict() for f in findings]
    before = previous_run(conn, run_id=run_id, started_at=started_at, org_url=org_url, workspace_sid=workspace_sid)
    delta = _compare(conn, run_id, started_at, findings, before)
    rows = ({"run_id": run_id, **f, "status": s.status, "first_seen_run_id": s.first_seen_run_id,
             "first_seen_at": s.first_seen_at} for f, s in zip(findings, delta.sightings))
    insert_batches(conn, drift_findings, rows)
    return delta.counts()


def run_delta(conn: Connection, run: dict) -> tuple[dict, list[dict], list[dict]]:
    """(delta counts, findings with status, resolved findings) of a stored run, for its report.

    The previous run is the one recorded when the run stored its findings; runs from before
    migration 0004 are compared with their previous run as it is found now."""
    findings = stored_findings(conn, run["run_id"])
    recorded = (run.get("counts") or {}).get("delta")
    if isinstance(recorded, dict) and "previous_run_id" in recorded:
        prev_id = recorded["previous_run_id"]
        before = None
        if prev_id is not None:
            row = conn.execute(select(sync_runs.c.run_id, sync_runs.c.started_at)
                               .where(sync_runs.c.run_id == prev_id)).mappings().first()
            before = dict(row) if row else None
    else:
        before = previous_run(conn, run_id=run["run_id"], started_at=run["started_at"], org_url=run.get("org_url"),
                              workspace_sid=run.get("workspace_sid"))
    delta = _compare(conn, run["run_id"], run["started_at"], findings, before)
    if all(f["status"] is None for f in findings):  # written before 0004: take the computed delta
        for f, s in zip(findings, delta.sightings):
            f.update(status=s.status, first_seen_run_id=s.first_seen_run_id, first_seen_at=s.first_seen_at)
    return delta.counts(), findings, list(delta.resolved)


def _compare(conn: Connection, run_id: str, started_at: datetime, findings: list[dict],
             before: dict | None) -> Delta:
    previous = stored_findings(conn, before["run_id"]) if before else None
    return compare_runs(findings, previous, run_id=run_id, started_at=started_at,
                        previous_run_id=before["run_id"] if before else None,
                        previous_started_at=before["started_at"] if before else None)

