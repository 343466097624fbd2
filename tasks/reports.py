"""Drift reports: one JSON document, rendered as JSON, CSV, HTML and Markdown.

Pure code (stdlib + `models.records` only): no Prefect, SQLAlchemy or httpx, so every renderer
can be tested on hand-built findings.  Okta profile values and worker attributes are
attacker-controllable text (issue 8), so each renderer neutralises what its reader would
otherwise execute: formulas in spreadsheets, markup and script in browsers, syntax in Markdown.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import logging
import math
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from models.records import FINDING_KINDS, SEVERITIES, Finding
from okta_flex_sync.reports.guide import next_steps
from okta_flex_sync.reports.links import okta_admin_base
from tasks import fastjson

logger = logging.getLogger(__name__)

FINDING_FIELDS = ("kind", "severity", "okta_user_id", "login", "app_username", "worker_sid",
                  "field", "expected", "actual")
DELTA_FIELDS = ("status", "first_seen_run_id", "first_seen_at")
DELTA_STATUSES = ("new", "persisting")
DEFAULT_MAX_CHANGES = 25
COUNT_KEYS = ("okta_users", "assigned_users", "workers")
TREND_ROLES = ("admin", "supervisor", "agent")
REPORT_FORMATS = ("json", "csv", "html", "md")
FILE_NAMES = {"json": "drift.json", "csv": "drift.csv", "html": "drift.html", "md": "drift.md"}

# Display limits: long hostile values must not swamp a page, a cell or a chat message.
HTML_CELL_CHARS = 120
MD_CELL_CHARS = 80
CSV_CELL_CHARS = 32_000  # Excel refuses cells over 32,767 characters
MD_HIGH_ROWS = 20
HTML_HIGH_ROWS = 50
ARTIFACT_ROWS = 200
TREND_RUNS = 30

_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_KIND_RANK = {k: i for i, k in enumerate(FINDING_KINDS)}
_SURROGATES = re.compile("[\ud800-\udfff]")
# C0/C1 controls, DEL, line/paragraph separators, bidi overrides ("Trojan Source") and surrogates.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                          "\u2066-\u2069\ud800-\udfff]")
_NAMED_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_FORMULA_TRIGGERS = frozenset("=+-@\t\r")
_LEADING_BLANKS = re.compile(r"^[\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2060\ufeff]*")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ReportError(Exception):
    """Base class for report errors."""


class UnknownReportFormat(ReportError, ValueError):
    """A format other than json, csv, html or md was asked for."""


class InvalidRunId(ReportError, ValueError):
    """A run id that cannot safely name a report directory (path separators, '..', empty)."""


# --- building the document --------------------------------------------------------------------

def build_report(run_id: str, generated_at: datetime, counts: Mapping, findings: Sequence[Finding],
                 *, trend: Sequence[Mapping] = (), skipped: Sequence[Mapping] = (),
                 mode: str = "dry-run", delta: Mapping | None = None, resolved: Sequence[Mapping] = (),
                 org_url: str | None = None, workspace_sid: str | None = None,
                 max_changes: int = DEFAULT_MAX_CHANGES) -> dict:
    """The drift.json document every renderer reads; findings sorted high severity first.

    Findings without a `status` (hand-built, or a run without a previous one) count as new, first
    seen in this run.  `delta` supplies the previous run's id; its counts are recomputed from the
    findings and `resolved` so they always add up."""
    run_id = _scrub(str(run_id))
    rows = sorted((_finding_dict(f, run_id) for f in findings), key=_finding_sort_key)
    gone = sorted((_finding_dict(f, None) for f in resolved), key=_finding_sort_key)
    new = sum(1 for f in rows if f["status"] == "new")
    return {
        "run_id": run_id,
        "generated_at": _iso(generated_at),
        "counts": {k: int(counts.get(k) or 0) for k in COUNT_KEYS},
        "delta": {"previous_run_id": _opt_text((delta or {}).get("previous_run_id")), "new": new,
                  "resolved": len(gone), "persisting": len(rows) - new},
        "summary": summarize(rows),
        "findings": rows,
        "resolved": gone,
        "next_steps": next_steps(rows, max_changes=max_changes),
        "links": {"okta_admin": okta_admin_base(org_url),
                  "workspace_sid": _opt_text(workspace_sid) if workspace_sid else None},
        "trend": _sorted_trend(trend),
        "skipped": [_skipped_dict(s) for s in skipped],
        "mode": _scrub(str(mode)),
    }


def summarize(findings: Sequence[Mapping]) -> dict[str, int]:
    """Count per kind: every known kind in FINDING_KINDS order (0 when none), unknown kinds after."""
    summary = dict.fromkeys(FINDING_KINDS, 0)
    for f in findings:
        summary[f["kind"]] = summary.get(f["kind"], 0) + 1
    return summary


def severity_counts(findings: Sequence[Mapping]) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    for f in findings:
        counts[f["severity"]] = counts.get(f["severity"], 0) + 1
    return counts


def high_findings(report: Mapping) -> list[dict]:
    return [f for f in report["findings"] if f["severity"] == "high"]


def _finding_dict(finding: Finding | Mapping, run_id: str | None) -> dict:
    """`run_id` given: a finding of this run (with status and first sighting); None: a resolved one."""
    # Mappings too, so the CLI can rebuild a report from stored rows without making Findings.
    raw = finding.as_dict() if isinstance(finding, Finding) else finding
    row = {k: _opt_text(raw.get(k)) for k in FINDING_FIELDS} | {
        "kind": _scrub(str(raw.get("kind") or "unknown")),
        "severity": _scrub(str(raw.get("severity") or "info")),
    }
    first_at = raw.get("first_seen_at")
    first = {"first_seen_run_id": _opt_text(raw.get("first_seen_run_id")),
             "first_seen_at": _iso(first_at) if isinstance(first_at, datetime) else _opt_text(first_at)}
    if run_id is None:
        return row | first
    status = raw.get("status") if raw.get("status") in DELTA_STATUSES else "new"
    if status == "new" and first["first_seen_run_id"] in (None, run_id):
        first["first_seen_run_id"] = run_id
    return row | {"status": status} | first


def _finding_sort_key(f: Mapping) -> tuple:
    return (_SEVERITY_RANK.get(f["severity"], len(SEVERITIES)),
            _KIND_RANK.get(f["kind"], len(FINDING_KINDS)), f["kind"],
            *(f[k] or "" for k in ("login", "okta_user_id", "app_username", "worker_sid", "field")))


def _trend_entry(entry: Mapping) -> dict:
    summary = dict.fromkeys(FINDING_KINDS, 0)
    summary.update({_scrub(str(k)): int(v or 0) for k, v in (entry.get("summary") or {}).items()})
    roles = dict.fromkeys(TREND_ROLES, 0)
    roles.update({_scrub(str(k)): int(v or 0) for k, v in (entry.get("roles") or {}).items()})
    started = entry.get("started_at")
    delta = entry.get("delta")
    return {"run_id": _scrub(str(entry.get("run_id") or "")),
            "started_at": _iso(started) if isinstance(started, datetime) else _opt_text(started),
            "summary": summary, "roles": roles,
            "delta": {k: int(delta.get(k) or 0) for k in ("new", "resolved", "persisting")}
            if isinstance(delta, Mapping) else None}


def _sorted_trend(trend: Sequence[Mapping]) -> list[dict]:
    """Oldest run first, so charts read left to right."""
    return sorted((_trend_entry(t) for t in trend), key=lambda t: t["started_at"] or "")


def _skipped_dict(record: Mapping) -> dict:
    return {k: _opt_text(record.get(k)) for k in ("source", "id", "reason")}


def _iso(value: datetime) -> str:
    """ISO 8601 in UTC; naive datetimes are taken as UTC, as the database stores them."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _opt_text(value) -> str | None:
    return None if value is None else _scrub(str(value))


def _scrub(text: str) -> str:
    """Lone surrogates (from JSON \\ud800 escapes) cannot be encoded as UTF-8 at all."""
    if text.isprintable():  # C-speed: surrogates are never printable
        return text
    return _SURROGATES.sub("\ufffd", text)


# --- shared text helpers ----------------------------------------------------------------------

def printable(text: str) -> str:
    """Control, separator and bidi-override characters shown as visible escapes (\\n, \\x07, \\u202e)."""
    if text.isprintable():  # C-speed: every character the pattern escapes is non-printable (tested)
        return text
    return _UNPRINTABLE.sub(_escape_char, text)


def _escape_char(match: re.Match) -> str:
    ch = match.group()
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    if "\ud800" <= ch <= "\udfff":
        return "\ufffd"
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    marker = f"… [+{len(text) - limit} chars]"
    return text[:max(limit - len(marker), 1)] + marker


# --- JSON -------------------------------------------------------------------------------------

def render_json(report: Mapping) -> str:
    return fastjson.dumps_pretty(report) + "\n"


# --- CSV --------------------------------------------------------------------------------------

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
    for f in report["findings"]:
        writer.writerow([csv_cell(f.get(k)) for k in cols])
    return "\ufeff" + buf.getvalue()


# --- Markdown ---------------------------------------------------------------------------------

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


MODE_MEANINGS = {
    "dry-run": "nothing was changed in TaskRouter; run with --apply to repair",
    "apply": "workers were repaired within --max-changes; see repair_audit",
}


def mode_meaning(mode: str) -> str:
    return MODE_MEANINGS.get(mode, "")


def skipped_sentence(n: int) -> str:
    return (f"{n} source record(s) had problems: records without a usable id were left out, the others "
            f"were kept with their bad values cleaned (see the notes).")


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
        out.append(f"- **{md_escape(step['kind'])}** ({step['count']}, {step['new']} new): "
                   f"{md_escape(step['meaning'], 400)} {md_escape(step['remedy'], 400)}")
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


# --- Prefect table rows (pure, so tested here; published by tasks.artifacts) -----------------

def summary_rows(report: Mapping) -> list[dict]:
    return [{"kind": kind, "count": n} for kind, n in report["summary"].items()]


def high_severity_rows(report: Mapping, limit: int = ARTIFACT_ROWS) -> list[dict]:
    cols = ("kind", "login", "app_username", "worker_sid", "field", "expected", "actual")
    return [{c: truncate(printable(f[c]), HTML_CELL_CHARS) if f[c] is not None else "" for c in cols}
            for f in high_findings(report)[:limit]]


# --- HTML -------------------------------------------------------------------------------------

KIND_COLORS = {
    "privilege_escalation": "#b91c1c", "deactivated_user_has_worker": "#ea580c",
    "roles_mismatch": "#d97706", "invalid_role": "#a16207", "orphan_worker": "#7c3aed",
    "unparseable_attributes": "#db2777", "full_name_mismatch": "#2563eb",
    "email_mismatch": "#0891b2", "image_url_mismatch": "#059669", "missing_worker": "#64748b",
}
ROLE_COLORS = {"admin": "#b91c1c", "supervisor": "#d97706", "agent": "#2563eb"}
OTHER_COLOR = "#9ca3af"
_TABLE_COLS = ("severity", "kind", "login", "app_username", "okta_user_id", "worker_sid",
               "field", "expected", "actual")

_CSS = """
:root{color-scheme:light;--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f8fafc}
*{box-sizing:border-box}
body{margin:0;padding:24px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
 color:var(--fg);background:var(--bg)}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px}
.meta{color:var(--muted);margin:0 0 18px;overflow-wrap:anywhere}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 16px;min-width:140px}
.card b{display:block;font-size:24px}.card span{color:var(--muted)}
.card.alert{border-color:#fca5a5;background:#fef2f2}.card.alert b{color:#b91c1c}
table{border-collapse:collapse;background:#fff;border:1px solid var(--line);width:100%}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top;
 overflow-wrap:anywhere;max-width:28ch}
th{background:#f1f5f9;position:sticky;top:0}
td.num,th.num{text-align:right}
table.kinds{width:auto}tr.zero td{color:#9ca3af}
.sev{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.sev-high{background:#b91c1c}.sev-medium{background:#d97706}.sev-low{background:#2563eb}
.sev-info{background:#64748b}.sev-other{background:#9ca3af}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.charts{display:flex;flex-wrap:wrap;gap:16px}
.chart{background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px 12px}
.chart h3{font-size:14px;margin:4px 0}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;color:var(--muted);max-width:700px}
.filters{display:flex;flex-wrap:wrap;gap:10px;align-items:center;margin:0 0 10px}
.filters input,.filters select{font:inherit;padding:4px 8px;border:1px solid #cbd5e1;border-radius:6px}
.filters input{min-width:260px}
.empty{color:var(--muted)}
"""

# Applies the filter from the form or from the URL hash (#q=…&kind=…&severity=…), so a link
# can carry a filter and headless tests can observe it with --dump-dom.
_JS = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("findings-data").textContent);
  var fields = data.fields, rows = document.querySelectorAll("#findings tbody tr");
  var hay = data.findings.map(function (f) {
    return fields.map(function (k) { return f[k] == null ? "" : String(f[k]); }).join("\\n").toLowerCase();
  });
  var q = document.getElementById("f-q"), kind = document.getElementById("f-kind"),
      sev = document.getElementById("f-severity"), shown = document.getElementById("shown-count");
  function apply(updateHash) {
    var text = q.value.trim().toLowerCase(), n = 0;
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var ok = i < hay.length && (!text || hay[i].indexOf(text) !== -1) &&
               (!kind.value || row.getAttribute("data-kind") === kind.value) &&
               (!sev.value || row.getAttribute("data-severity") === sev.value);
      row.hidden = !ok;
      if (ok) { n++; }
    }
    shown.textContent = String(n);
    document.body.setAttribute("data-shown", String(n));
    if (updateHash) {
      var p = new URLSearchParams();
      if (q.value) { p.set("q", q.value); }
      if (kind.value) { p.set("kind", kind.value); }
      if (sev.value) { p.set("severity", sev.value); }
      try { history.replaceState(null, "", "#" + p.toString()); } catch (e) { /* file: URLs */ }
    }
  }
  function fromHash() {
    var p = new URLSearchParams(location.hash.replace(/^#/, ""));
    q.value = p.get("q") || "";
    kind.value = p.get("kind") || "";
    sev.value = p.get("severity") || "";
    apply(false);
  }
  [q, kind, sev].forEach(function (el) {
    el.addEventListener(el === q ? "input" : "change", function () { apply(true); });
  });
  window.addEventListener("hashchange", fromHash);
  document.getElementById("filters").hidden = false;
  fromHash();
  document.body.setAttribute("data-js", "ready");
})();
"""


def render_html(report: Mapping) -> str:
    """One self-contained, script-inert page: data escaped, CSP allows only our own script."""
    script_hash = base64.b64encode(hashlib.sha256(_JS.encode()).digest()).decode()
    csp = (f"default-src 'none'; script-src 'sha256-{script_hash}'; style-src 'unsafe-inline'; "
           "img-src 'none'; base-uri 'none'; form-action 'none'")
    findings = report["findings"]
    title = f"Drift report {truncate(printable(report['run_id']), 60)}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_text(csp)}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(title)}</title>",
        f"<style>{_CSS}</style></head>",
        "<body>",
        "<h1>Okta → Flex drift report</h1>",
        f'<p class="meta">Run <code>{_cell_html(report["run_id"], 80)}</code> · generated '
        f'{_text(report["generated_at"])} · mode <b>{_cell_html(report.get("mode", ""), 40)}</b></p>',
        _cards_html(report),
        "<h2>Findings by kind</h2>",
        _kinds_table_html(report["summary"]),
        "<h2>High-severity findings</h2>",
        _high_html(high_findings(report)),
        "<h2>Recent runs</h2>",
        _charts_html(report.get("trend") or []),
        f'<h2>All findings (<span id="shown-count">{len(findings)}</span> of {len(findings)} shown)</h2>',
        _filters_html(report),
        _findings_table_html(findings, table_id="findings"),
        _skipped_html(report.get("skipped") or []),
        f'<script type="application/json" id="findings-data">{_json_for_script(findings)}</script>',
        f"<script>{_JS}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def json_for_script(value) -> str:
    """JSON that cannot end a <script> element or break a JS string literal."""
    return (json.dumps(value, ensure_ascii=False)
            .replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _json_for_script(findings: Sequence[Mapping]) -> str:
    return json_for_script({"fields": list(FINDING_FIELDS), "findings": list(findings)})


def _text(value) -> str:
    """Escaped for element text and quoted attribute values alike."""
    return html.escape(printable(str(value)), quote=True)


def _cell_html(value: str | None, limit: int = HTML_CELL_CHARS) -> str:
    """Escaped display text; a long value is cut, with the full (escaped) value in a tooltip."""
    if value is None:
        return '<span class="empty">—</span>'
    text = printable(str(value))
    if len(text) <= limit:
        return html.escape(text, quote=True)
    return f'<span title="{html.escape(text, quote=True)}">{html.escape(truncate(text, limit))}</span>'


def _severity_badge(severity: str) -> str:
    css = severity if severity in SEVERITIES else "other"
    return f'<span class="sev sev-{css}">{_text(severity)}</span>'


def _cards_html(report: Mapping) -> str:
    counts, findings = report["counts"], report["findings"]
    sev = severity_counts(findings)
    cards = [("Okta users", counts["okta_users"], ""), ("Flex-assigned users", counts["assigned_users"], ""),
             ("TaskRouter workers", counts["workers"], ""), ("Findings", len(findings), ""),
             ("High severity", sev.get("high", 0), " alert" if sev.get("high") else ""),
             ("Medium", sev.get("medium", 0), ""), ("Skipped records", len(report.get("skipped") or []), "")]
    body = "".join(f'<div class="card{cls}"><b>{n}</b><span>{label}</span></div>' for label, n, cls in cards)
    return f'<div class="cards">{body}</div>'


def _kinds_table_html(summary: Mapping[str, int]) -> str:
    rows = "".join(
        f'<tr class="{"zero" if not n else ""}"><td><span class="swatch" '
        f'style="background:{KIND_COLORS.get(kind, OTHER_COLOR)}"></span>{_text(kind)}</td>'
        f'<td class="num">{int(n)}</td></tr>'
        for kind, n in summary.items())
    return ('<table class="kinds"><thead><tr><th>Kind</th><th class="num">Count</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _high_html(high: Sequence[Mapping]) -> str:
    if not high:
        return '<p class="empty">No high-severity findings.</p>'
    note = (f'<p class="meta">Showing the first {HTML_HIGH_ROWS} of {len(high)}; all are in the table below.</p>'
            if len(high) > HTML_HIGH_ROWS else "")
    return note + _findings_table_html(high[:HTML_HIGH_ROWS], table_id="high-findings")


def _findings_table_html(findings: Sequence[Mapping], *, table_id: str) -> str:
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in _TABLE_COLS)
    body = "".join(_finding_row_html(i, f) for i, f in enumerate(findings))
    if not findings:
        body = f'<tr><td colspan="{len(_TABLE_COLS)}" class="empty">No findings.</td></tr>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _finding_row_html(index: int, f: Mapping) -> str:
    cells = [_severity_badge(f["severity"])] + [_cell_html(f.get(c)) for c in _TABLE_COLS[1:]]
    return (f'<tr data-i="{index}" data-kind="{_text(f["kind"])}" data-severity="{_text(f["severity"])}">'
            + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")


def _filters_html(report: Mapping) -> str:
    kinds = list(dict.fromkeys([*FINDING_KINDS, *report["summary"]]))
    severities = list(dict.fromkeys([*SEVERITIES, *(f["severity"] for f in report["findings"])]))
    kind_opts = "".join(f'<option value="{_text(k)}">{_text(k)}</option>' for k in kinds)
    sev_opts = "".join(f'<option value="{_text(s)}">{_text(s)}</option>' for s in severities)
    return ('<div class="filters" id="filters" hidden>'
            '<label>Filter <input id="f-q" type="search" placeholder="login, worker, value…" '
            'autocomplete="off"></label>'
            f'<label>Kind <select id="f-kind"><option value="">all kinds</option>{kind_opts}</select></label>'
            '<label>Severity <select id="f-severity"><option value="">all severities</option>'
            f"{sev_opts}</select></label>"
            "</div>")


def _skipped_html(skipped: Sequence[Mapping]) -> str:
    if not skipped:
        return ""
    rows = "".join(f"<tr><td>{_cell_html(s.get('source'))}</td><td>{_cell_html(s.get('id'))}</td>"
                   f"<td>{_cell_html(s.get('reason'))}</td></tr>" for s in skipped)
    return ("<h2>Skipped source records</h2><table><thead><tr><th>source</th><th>id</th><th>reason</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>")


# --- SVG charts -------------------------------------------------------------------------------

_CHART_W, _CHART_H = 560, 220
_LABEL_PX = 76  # room for one "MM-DD HH:MM" axis label
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 44, 12, 12, 40


def _charts_html(trend: Sequence[Mapping]) -> str:
    runs = list(trend)[-TREND_RUNS:]
    if not runs:
        return '<p class="empty">No run history yet.</p>'
    kinds = [k for k in dict.fromkeys(k for r in runs for k in r["summary"]) if any(r["summary"][k] for r in runs)]
    kind_legend = "".join(_legend_item(KIND_COLORS.get(k, OTHER_COLOR), k) for k in kinds)
    role_legend = "".join(_legend_item(c, r) for r, c in ROLE_COLORS.items())
    return ('<div class="charts">'
            f'<div class="chart"><h3>Findings per run, by kind</h3>{findings_chart_svg(runs)}'
            f'<div class="legend">{kind_legend or "no findings in these runs"}</div></div>'
            f'<div class="chart"><h3>Role holders per run</h3>{roles_chart_svg(runs)}'
            f'<div class="legend">{role_legend}</div></div></div>')


def _legend_item(color: str, label: str) -> str:
    return f'<span><span class="swatch" style="background:{color}"></span>{_text(label)}</span>'


def _nice_max(value: int) -> int:
    """A round axis maximum at or above value: 1, 2, 5, 10, 20, 50, …"""
    top = 1
    while top < value:
        top = _next_nice(top)
    return top


def _next_nice(top: int) -> int:
    digits = str(top)
    lead, zeros = int(digits[0]), len(digits) - 1
    return {1: 2, 2: 5, 5: 10}[lead] * 10 ** zeros


def _run_label(run: Mapping) -> str:
    started = run.get("started_at") or ""
    return started[5:16].replace("T", " ") if len(started) >= 16 else truncate(run["run_id"], 10)


def _axes_svg(y_max: int, runs: Sequence[Mapping], x_of) -> list[str]:
    plot_h = _CHART_H - _PAD_T - _PAD_B
    out = []
    for frac in (0, 0.5, 1):
        y = _PAD_T + plot_h * (1 - frac)
        out.append(f'<line x1="{_PAD_L}" x2="{_CHART_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>')
        out.append(f'<text x="{_PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{round(y_max * frac)}</text>')
    slot = (_CHART_W - _PAD_L - _PAD_R) / len(runs)
    step = max(1, math.ceil(_LABEL_PX / slot))
    for i in range(0, len(runs), step):
        out.append(f'<text x="{x_of(i):.1f}" y="{_CHART_H - _PAD_B + 16}" text-anchor="middle">'
                   f"{_text(_run_label(runs[i]))}</text>")
    return out


def _svg(label: str, body: Sequence[str]) -> str:
    return (f'<svg role="img" aria-label="{_text(label)}" width="{_CHART_W}" height="{_CHART_H}" '
            f'viewBox="0 0 {_CHART_W} {_CHART_H}" font-size="11" fill="#6b7280">' + "".join(body) + "</svg>")


def findings_chart_svg(runs: Sequence[Mapping]) -> str:
    """Stacked bars: one per run, one segment per finding kind."""
    plot_w, plot_h = _CHART_W - _PAD_L - _PAD_R, _CHART_H - _PAD_T - _PAD_B
    y_max = _nice_max(max((sum(r["summary"].values()) for r in runs), default=0))
    slot = plot_w / len(runs)
    bar_w = max(min(slot * 0.7, 40), 2)

    def x_of(i: int) -> float:
        return _PAD_L + slot * (i + 0.5)

    body = _axes_svg(y_max, runs, x_of)
    for i, run in enumerate(runs):
        y = _PAD_T + plot_h
        for kind, n in run["summary"].items():
            if not n:
                continue
            h = plot_h * n / y_max
            y -= h
            tip = f"{run['run_id']} · {kind}: {n}"
            body.append(f'<rect x="{x_of(i) - bar_w / 2:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                        f'fill="{KIND_COLORS.get(kind, OTHER_COLOR)}"><title>{_text(tip)}</title></rect>')
    return _svg("Findings per run by kind", body)


def roles_chart_svg(runs: Sequence[Mapping]) -> str:
    """One line per Flex role: how many users held it in each run."""
    plot_w, plot_h = _CHART_W - _PAD_L - _PAD_R, _CHART_H - _PAD_T - _PAD_B
    y_max = _nice_max(max((r["roles"].get(role, 0) for r in runs for role in TREND_ROLES), default=0))
    slot = plot_w / len(runs)

    def x_of(i: int) -> float:
        return _PAD_L + slot * (i + 0.5)

    def y_of(n: int) -> float:
        return _PAD_T + plot_h * (1 - n / y_max)

    body = _axes_svg(y_max, runs, x_of)
    for role, color in ROLE_COLORS.items():
        points = [(x_of(i), y_of(r["roles"].get(role, 0))) for i, r in enumerate(runs)]
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                    + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
        for (x, y), run in zip(points, runs):
            tip = f"{run['run_id']} · {role}: {run['roles'].get(role, 0)}"
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"><title>{_text(tip)}</title></circle>')
    return _svg("Role holders per run", body)


# --- writing ----------------------------------------------------------------------------------

RENDERERS = {"json": render_json, "csv": render_csv, "html": render_html, "md": render_markdown}


def run_report_dir(report_root: Path, run_id: str) -> Path:
    """REPORT_DIR/<run_id>, refusing ids that could escape REPORT_DIR (the CLI takes them from users)."""
    if not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise InvalidRunId(f"run id {truncate(printable(run_id), 40)!r} is not a valid report directory name")
    return Path(report_root) / run_id


def write_reports(report: Mapping, out_dir: Path,
                  formats: Sequence[str] = REPORT_FORMATS) -> dict[str, Path]:
    """Render and atomically write each format; a reader never sees a half-written file."""
    unknown = [f for f in formats if f not in RENDERERS]
    if unknown:
        raise UnknownReportFormat(f"unknown report format(s) {unknown}; choose from {list(REPORT_FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt in formats:
        path = out_dir / FILE_NAMES[fmt]
        atomic_write(path, RENDERERS[fmt](report).encode("utf-8"))
        written[fmt] = path
    logger.info("wrote %s report(s) to %s", ",".join(formats), out_dir)
    return written


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, then os.replace (atomic on POSIX and Windows)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
