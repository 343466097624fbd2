"""A short digest of a drift report for a chat notification and the CLI's last line.

Pure: reads the drift.json document.  Values are Okta/worker data, so they go through the
Markdown escaping of the report (no links, mentions or markup from data)."""
from __future__ import annotations

from collections.abc import Mapping

from okta_flex_sync.models.records import SEVERITIES
from okta_flex_sync.reports.text import md_escape

DIGEST_FINDINGS = 5


def open_by_severity(report: Mapping) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for f in report["findings"]:
        counts[f["severity"]] = counts.get(f["severity"], 0) + 1
    return counts


def new_by_severity(report: Mapping) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for f in report["findings"]:
        if f.get("status") == "new":
            counts[f["severity"]] = counts.get(f["severity"], 0) + 1
    return counts


def summary_line(report: Mapping, location: str) -> str:
    """`12 new, 3 resolved, 140 open (20 high) — reports/<run_id>/`"""
    delta = report["delta"]
    return (f"{delta['new']} new, {delta['resolved']} resolved, {len(report['findings'])} open "
            f"({open_by_severity(report).get('high', 0)} high) — {location}")


def render_digest(report: Mapping, location: str) -> str:
    """A few lines of Markdown: the summary line, new high-severity findings, the first remedy."""
    new_high = [f for f in report["findings"] if f.get("status") == "new" and f["severity"] == "high"]
    lines = [f"**okta-flex-sync {md_escape(report['run_id'])}**: {md_escape(summary_line(report, location))}"]
    if report["delta"].get("previous_run_id") is None:
        lines.append("First report for this org and workspace: every finding counts as new.")
    if new_high:
        lines.append(f"New high-severity findings ({len(new_high)}):")
        for f in new_high[:DIGEST_FINDINGS]:
            who = f.get("login") or f.get("app_username") or f.get("okta_user_id") or "?"
            lines.append(f"- {md_escape(f['kind'])}: {md_escape(who, 60)} · worker {md_escape(f.get('worker_sid') or '—', 40)}")
        if len(new_high) > DIGEST_FINDINGS:
            lines.append(f"- … and {len(new_high) - DIGEST_FINDINGS} more in the report")
    else:
        lines.append("No new high-severity findings.")
    steps = report.get("next_steps") or []
    if steps:
        lines.append(f"Next: {md_escape(steps[0]['remedy'], 300)}")
    return "\n".join(lines) + "\n"
