"""Prefect artifacts for a drift report: the summary and high-severity findings as tables, and
the Markdown report, so an operator sees the drift on the flow run page without opening files.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.events import emit_event

from okta_flex_sync.reports.digest import (
    new_by_severity,
    open_by_severity,
    render_digest,
    summary_line,
)
from okta_flex_sync.reports.document import (
    ARTIFACT_ROWS,
    high_findings,
    high_severity_rows,
    summary_rows,
)
from okta_flex_sync.reports.text import render_markdown

logger = logging.getLogger(__name__)

# Prefect artifact keys: lowercase letters, numbers and dashes only.
SUMMARY_KEY = "drift-summary"
HIGH_SEVERITY_KEY = "drift-high-severity"
MARKDOWN_KEY = "drift-report"
DIGEST_KEY = "drift-digest"
NEW_HIGH_EVENT = "okta-flex-sync.drift.new-high"
DIGEST_EVENT = "okta-flex-sync.drift.digest"


def in_prefect_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def publish_artifacts(report: Mapping, location: str = "") -> None:
    """Publish the drift summary, and the digest for the notification automation; a no-op
    outside a flow or task run.  `location` says where the report files are.

    Artifacts are a convenience copy of files already written, so a Prefect API failure is
    logged and does not fail the sync.
    """
    if not in_prefect_run():
        logger.debug("not in a Prefect run; drift artifacts for run %s not published", report["run_id"])
        return
    run_id, high = report["run_id"], high_findings(report)
    delta = f"{summary_line(report, location)}: " if "delta" in report else ""
    try:
        create_table_artifact(table=summary_rows(report), key=SUMMARY_KEY,
                              description=f"{delta}drift findings by kind, run {run_id} ({report.get('mode', '')})")
        create_table_artifact(table=high_severity_rows(report),
                              key=HIGH_SEVERITY_KEY,
                              description=f"High-severity findings, run {run_id}: "
                                          f"{min(len(high), ARTIFACT_ROWS)} of {len(high)} shown")
        create_markdown_artifact(markdown=render_markdown(report), key=MARKDOWN_KEY,
                                 description=f"Drift report, run {run_id}")
        if "delta" in report:
            digest = render_digest(report, location)
            create_markdown_artifact(markdown=digest, key=DIGEST_KEY, description=f"Drift digest, run {run_id}")
            emit_digest_event(report, digest, location)
    except Exception as exc:  # noqa: BLE001 — see docstring: never fail the run over artifacts
        logger.warning("could not publish drift artifacts for run %s: %s", run_id, type(exc).__name__)


def digest_event(report: Mapping, digest: str, location: str) -> dict:
    """The Prefect event `automations/notify-on-drift.yaml` reacts to: `okta-flex-sync.drift.new-high`
    when new high-severity findings appeared, else `okta-flex-sync.drift.digest`."""
    new_high = new_by_severity(report).get("high", 0)
    return {
        "event": NEW_HIGH_EVENT if new_high else DIGEST_EVENT,
        "resource": {"prefect.resource.id": f"okta-flex-sync.drift-report.{report['run_id']}",
                     "prefect.resource.name": f"drift report {report['run_id']}"},
        "payload": {"run_id": report["run_id"], "digest": digest, "location": location,
                    "new": report["delta"]["new"], "resolved": report["delta"]["resolved"],
                    "open": len(report["findings"]), "new_high": new_high,
                    "open_high": open_by_severity(report).get("high", 0),
                    "previous_run_id": report["delta"].get("previous_run_id")},
    }


def emit_digest_event(report: Mapping, digest: str, location: str) -> None:
    emit_event(**digest_event(report, digest, location))
