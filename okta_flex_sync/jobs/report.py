"""Writing a stored run's drift report: findings and trend from the database, rendered under REPORT_DIR/<run_id>/."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from okta_flex_sync.reports.document import build_report
from okta_flex_sync.reports.files import run_report_dir, write_reports
from okta_flex_sync.settings import Settings
from okta_flex_sync.storage import runs as runs_db
from okta_flex_sync.storage.common import utcnow
from okta_flex_sync.storage.finding_delta import run_delta


def report(engine: Engine, settings: Settings, run_id: str, *, generated_at: datetime | None = None,
           mode: str = "dry-run",
           formats=("json", "csv", "html", "md")) -> tuple[dict, dict[str, Path]]:
    """Build the drift report of a stored run and write it under REPORT_DIR/<run_id>/."""
    with engine.connect() as conn:
        run = runs_db.get_run(conn, run_id)
        if run is None:
            raise LookupError(f"no run with id {run_id!r}")
        delta, findings, resolved = run_delta(conn, run)
        trend = [{"run_id": r["run_id"], "started_at": r["started_at"].isoformat(),
                  "summary": (r["counts"] or {}).get("summary", {}), "roles": (r["counts"] or {}).get("roles", {}),
                  "delta": (r["counts"] or {}).get("delta")}
                 for r in reversed(runs_db.recent_runs(conn, limit=30)) if r["started_at"] <= run["started_at"]]
    counts = run["counts"] or {}
    doc = build_report(run_id, generated_at or utcnow(), counts, findings, trend=trend,
                       skipped=counts.get("skipped_sample", []), mode=mode, delta=delta, resolved=resolved,
                       org_url=run.get("org_url"), workspace_sid=run.get("workspace_sid"),
                       max_changes=settings.max_changes)
    paths = write_reports(doc, run_report_dir(Path(settings.report_dir), run_id), formats=formats)
    return doc, paths

