"""Prefect artifacts for a drift report: the summary and high-severity findings as tables, and
the Markdown report, so an operator sees the drift on the flow run page without opening files.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext

from okta_flex_sync.reports.document import (
    ARTIFACT_ROWS,
    high_findings,
    high_severity_rows,
    render_markdown,
    summary_rows,
)

logger = logging.getLogger(__name__)

# Prefect artifact keys: lowercase letters, numbers and dashes only.
SUMMARY_KEY = "drift-summary"
HIGH_SEVERITY_KEY = "drift-high-severity"
MARKDOWN_KEY = "drift-report"


def in_prefect_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def publish_artifacts(report: Mapping) -> None:
    """Publish the drift summary; a no-op outside a flow or task run.

    Artifacts are a convenience copy of files already written, so a Prefect API failure is
    logged and does not fail the sync.
    """
    if not in_prefect_run():
        logger.debug("not in a Prefect run; drift artifacts for run %s not published", report["run_id"])
        return
    run_id, high = report["run_id"], high_findings(report)
    try:
        create_table_artifact(table=summary_rows(report), key=SUMMARY_KEY,
                              description=f"Drift findings by kind, run {run_id} ({report.get('mode', '')})")
        create_table_artifact(table=high_severity_rows(report),
                              key=HIGH_SEVERITY_KEY,
                              description=f"High-severity findings, run {run_id}: "
                                          f"{min(len(high), ARTIFACT_ROWS)} of {len(high)} shown")
        create_markdown_artifact(markdown=render_markdown(report), key=MARKDOWN_KEY,
                                 description=f"Drift report, run {run_id}")
    except Exception as exc:  # noqa: BLE001 — see docstring: never fail the run over artifacts
        logger.warning("could not publish drift artifacts for run %s: %s", run_id, type(exc).__name__)
