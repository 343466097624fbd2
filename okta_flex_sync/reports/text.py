"""The drift report as JSON, CSV (formula-safe) and Markdown (markup-safe)."""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence

from okta_flex_sync.core import fastjson
from okta_flex_sync.models.records import SEVERITIES
from okta_flex_sync.reports.document import (
    _FORMULA_TRIGGERS,
    _LEADING_BLANKS,
    CSV_CELL_CHARS,
    DELTA_FIELDS,
    FINDING_FIELDS,
    MD_CELL_CHARS,
    MD_HIGH_ROWS,
    high_findings,
    mode_meaning,
    printable,
    severity_counts,
    skipped_sentence,
    truncate,
)


def render_json(report: Mapping) -> str:
    return fastjson.dumps_pretty(report) + "\n"


def csv_cell(value: str | None) -> str:
    """One spreadsheet-safe cell: formulas defused with a leading "'", controls made visible."""
    if value is None:
        return ""
    text = str(value)
    cell = truncate(printable(text), CSV_CELL_CHARS)
    # Excel and LibreOffice skip leading blanks/controls before deciding a cell is a formula.
    first = text[:1]
    if first in _FORMULA_TRIGGERS or (not first.isalnum()  # an alphanumeric start has no blanks to skip
                                      and _LEADING_BLANKS.sub("", text, count=1)[:1] in _FORMULA_TRIGGERS):
        return "'" + cell
    return cell


def render_csv(report: Mapping) -> str:
    """UTF-8 CSV with a BOM so Excel detects the encoding; one row per finding."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    cols = FINDING_FIELDS + DELTA_FIELDS
    writer.writerow(cols)

    def cell(value):  # csv_cell's result, without its work for plain text (most cells)
        if value is None:
            return ""
        if type(value) is str and value[:1].isalnum() and value.isprintable() and len(value) <= CSV_CELL_CHARS:
            return value
        return csv_cell(value)

    for f in report["findings"]:
        writer.writerow([cell(f.get(k)) for k in cols])
    return "\ufeff" + buf.getvalue()


# Every value lands mid-line (in a table cell or after text), where only these characters act:
# line-start syntax (#, -, +, 1.) cannot trigger, and "[" escaped defuses links and images.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md_escape(value: str | None, limit: int = MD_CELL_CHARS) -> str:
    """Inline-safe Markdown text: no tables broken, no code/emphasis/links/HTML from data."""
    if value is None:
        return ""
    text = printable(truncate(str(value), limit))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def render_markdown(report: Mapping) -> str:
    """Summary table plus the first high-severity findings, for Prefect and chat."""
    counts, findings = report["counts"], report["findings"]
    high = high_findings(report)
    lines = [
        f"# Okta → Flex drift report {md_escape(report['run_id'])}",
        "",
        f"Generated {md_escape(report['generated_at'])} · mode {md_escape(report.get('mode', ''))} "
        f"({md_escape(mode_meaning(report.get('mode', '')), 200)})",
        "",
        *_md_delta_section(report),
        "| Okta users | Assigned users | Workers | Findings | High severity |",
        "|---:|---:|---:|---:|---:|",
        f"| {counts['okta_users']} | {counts['assigned_users']} | {counts['workers']} "
        f"| {len(findings)} | {len(high)} |",
        "",
        "## Findings by kind",
        "",
        "| Kind | Count |",
        "|---|---:|",
        *(f"| {md_escape(kind)} | {n} |" for kind, n in report["summary"].items()),
        "",
    ]
    lines += _md_high_section(high)
    lines += _md_next_steps(report)
    if report.get("skipped"):
        lines += ["", skipped_sentence(len(report["skipped"]))]
    return "\n".join(lines) + "\n"


def _md_delta_section(report: Mapping) -> list[str]:
    """What is new, what got resolved, what is still open, by severity."""
    d = report.get("delta") or {}
    new_sev = severity_counts([f for f in report["findings"] if f.get("status") == "new"])
    gone_sev = severity_counts(report.get("resolved") or [])
    open_sev = severity_counts(report["findings"])
    since = (f"since run {md_escape(d.get('previous_run_id'))}" if d.get("previous_run_id")
             else "first report for this org and workspace: every finding is new")
    lines = [f"**{d.get('new', 0)} new, {d.get('resolved', 0)} resolved, {len(report['findings'])} open** ({since})",
             "", "| | " + " | ".join(SEVERITIES) + " |", "|---|" + "---:|" * len(SEVERITIES)]
    for label, counts in (("New", new_sev), ("Resolved", gone_sev), ("Open", open_sev)):
        lines.append(f"| {label} | " + " | ".join(str(counts.get(s, 0)) for s in SEVERITIES) + " |")
    return lines + [""]


def _md_next_steps(report: Mapping) -> list[str]:
    steps = report.get("next_steps") or []
    if not steps:
        return []
    out = ["", "## What to do", ""]
    for step in steps:
        remedy = md_escape(step["remedy"], 400)
        for cmd in step.get("commands") or []:  # our own text: commands shown as code
            remedy = remedy.replace(md_escape(cmd, 400), f"`{cmd}`")
        out.append(f"- **{md_escape(step['kind'])}** ({step['count']} open, {step['new']} new): "
                   f"{md_escape(step['meaning'], 400)} {remedy}")
    return out


def _md_high_section(high: Sequence[Mapping]) -> list[str]:
    if not high:
        return ["No high-severity findings."]
    shown = high[:MD_HIGH_ROWS]
    title = f"## High-severity findings ({len(shown)} of {len(high)})"
    cols = ("kind", "login", "worker_sid", "field", "expected", "actual")
    return [title, "", "| " + " | ".join(md_escape(c) for c in cols) + " |",
            "|" + "---|" * len(cols),
            *("| " + " | ".join(md_escape(f.get(c)) for c in cols) + " |" for f in shown)]

