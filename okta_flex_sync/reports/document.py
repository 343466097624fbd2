"""Drift reports: one JSON document, rendered as JSON, CSV, HTML and Markdown.

Pure code (stdlib, jinja2, `okta_flex_sync.models.records` and the pure `okta_flex_sync.reports` helpers): no
Prefect, SQLAlchemy or httpx, so every renderer can be tested on hand-built findings.  The HTML
is `okta_flex_sync/reports/templates/report.html.j2` with `report.css` inlined.  Okta profile values and worker attributes are
attacker-controllable text (issue 8), so each renderer neutralises what its reader would
otherwise execute: formulas in spreadsheets, markup and script in browsers, syntax in Markdown.
"""
from __future__ import annotations

import base64
import csv
import functools
import hashlib
import html
import importlib.resources
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

import jinja2
from markupsafe import Markup

from okta_flex_sync.core import fastjson
from okta_flex_sync.core.reconcile import summarize
from okta_flex_sync.models.records import FINDING_KINDS, KIND_RANK, SEVERITIES, Finding
from okta_flex_sync.reports.guide import guide_for, next_steps
from okta_flex_sync.reports.links import (
    okta_admin_base,
    okta_user_url,
    twilio_worker_url,
)

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
        "max_changes": int(max_changes),
        "links": {"okta_admin": okta_admin_base(org_url),
                  "workspace_sid": _opt_text(workspace_sid) if workspace_sid else None},
        "trend": _sorted_trend(trend),
        "skipped": [_skipped_dict(s) for s in skipped],
        "mode": _scrub(str(mode)),
    }


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
    row = {k: v if v is None or (type(v) is str and v.isprintable()) else _scrub(str(v))
           for k, v in zip(FINDING_FIELDS, map(raw.get, FINDING_FIELDS))} | {
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
            KIND_RANK.get(f["kind"], len(FINDING_KINDS)), f["kind"],
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

    def cell(value):  # csv_cell's result, without its work for plain text (most cells)
        if value is None:
            return ""
        if type(value) is str and value[:1].isalnum() and value.isprintable() and len(value) <= CSV_CELL_CHARS:
            return value
        return csv_cell(value)

    for f in report["findings"]:
        writer.writerow([cell(f.get(k)) for k in cols])
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


# --- Prefect table rows (pure, so tested here; published by okta_flex_sync.tasks.artifacts) -----------------

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

# Applies the filter from the form or from the URL hash (#q=…&kind=…&severity=…), so a link
# can carry a filter and headless tests can observe it with --dump-dom.  A row is searched by
# its text, the full values of truncated cells (their titles) and the ids it does not show.
_JS = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("findings-data").textContent);
  var rows = document.querySelectorAll("#findings tbody tr[data-i]");
  var kinds = Array.prototype.map.call(rows, function (row) {
    var section = row.closest("section");
    return section ? section.getAttribute("data-kind") : "";
  });
  var hay = Array.prototype.map.call(rows, function (row) {
    var parts = [row.textContent], titled = row.querySelectorAll("[title]");
    for (var j = 0; j < titled.length; j++) { parts.push(titled[j].getAttribute("title")); }
    var extra = data.rows[+row.getAttribute("data-i")];
    if (extra) { parts.push(extra.join("\\n")); }
    return parts.join("\\n").toLowerCase();
  });
  var q = document.getElementById("f-q"), kind = document.getElementById("f-kind"),
      sev = document.getElementById("f-severity"), shown = document.getElementById("shown-count");
  function apply(updateHash) {
    var text = q.value.trim().toLowerCase(), n = 0;
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var ok = i < hay.length && (!text || hay[i].indexOf(text) !== -1) &&
               (!kind.value || kinds[i] === kind.value) &&
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
    if (!p.has("q") && !p.has("kind") && !p.has("severity")) {
      if (location.hash.length > 1 && document.getElementById(location.hash.slice(1))) { return; }  // an in-page link
    }
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
  if (!document.body.hasAttribute("data-shown")) { apply(false); }
  document.body.setAttribute("data-js", "ready");
})();
"""
# Fields a row of the tables by kind does not show but a search should find.
_SEARCH_ONLY = ("okta_user_id", "app_username")
BRIEF_ROWS = 50  # rows of the new / resolved / high-severity tables
GROUP_ROWS = 2_000  # users and workers in the grouped view (each carries two console links)


@functools.cache
def _template():
    """The Jinja template and its CSS, from the package (works from a wheel or a checkout)."""
    folder = importlib.resources.files("okta_flex_sync.reports") / "templates"
    env = jinja2.Environment(autoescape=True, trim_blocks=False, lstrip_blocks=False,
                             undefined=jinja2.StrictUndefined)
    template = env.from_string((folder / "report.html.j2").read_text(encoding="utf-8"))
    return template, (folder / "report.css").read_text(encoding="utf-8")


def render_html(report: Mapping) -> str:
    """One self-contained, script-inert page: data escaped, CSP allows only our own script."""
    template, css = _template()
    script_hash = base64.b64encode(hashlib.sha256(_JS.encode()).digest()).decode()
    csp = (f"default-src 'none'; script-src 'sha256-{script_hash}'; style-src 'unsafe-inline'; "
           "img-src 'none'; base-uri 'none'; form-action 'none'")
    return template.render(**_html_view(report), csp=csp, css=Markup(css), js=Markup(_JS)) + "\n"


def _html_view(report: Mapping) -> dict:
    """Everything the template shows, as plain values (the template escapes them)."""
    findings, resolved = report["findings"], report.get("resolved") or []
    delta = report.get("delta") or {"previous_run_id": None, "new": len(findings), "resolved": 0, "persisting": 0}
    links = report.get("links") or {}
    groups, group_of, groups_total = _groups(findings, links)
    rows = [_row(i, f, group_of) for i, f in enumerate(findings)]
    new_rows = [r for r in rows if r["status"] == "new"]
    high_rows = [r for r in rows if r["severity"] == "high"]
    for r in new_rows[:BRIEF_ROWS] + high_rows[:HTML_HIGH_ROWS]:  # the one-line detail, only where shown
        r["detail"] = _detail(findings[r["i"]], guide_for(r["kind"]).columns)
    sev = severity_counts
    new_sev = sev([f for f in findings if f.get("status") == "new"])
    delta_rows = [("New", new_sev, delta["new"]), ("Resolved", sev(resolved), len(resolved)),
                  ("Open", sev(findings), len(findings))]
    counts, skipped = report["counts"], report.get("skipped") or []
    kept = sum(1 for s in skipped if (s.get("reason") or "").startswith("kept, but"))
    population = [("Okta users", counts["okta_users"]), ("Flex-assigned users", counts["assigned_users"]),
                  ("TaskRouter workers", counts["workers"])]
    if skipped:
        population.append(("source records with problems", len(skipped)))
    steps = report.get("next_steps") or []
    step_by_kind = {s["kind"]: s for s in steps}
    return {
        "title": f"Drift report {truncate(printable(report['run_id']), 60)}",
        "run_id": _cell(report["run_id"], 80), "generated_at": printable(report["generated_at"]),
        "mode": _cell(report.get("mode", ""), 40), "mode_meaning": mode_meaning(report.get("mode", "")),
        "previous_run_id": _cell(delta.get("previous_run_id"), 80) if delta.get("previous_run_id") else None,
        "delta": delta, "new_high": new_sev.get("high", 0), "open_total": len(findings),
        "open_high": sev(findings).get("high", 0), "delta_rows": delta_rows, "severities": SEVERITIES,
        "population": population,
        "new_rows": new_rows[:BRIEF_ROWS], "new_total": len(new_rows),
        "resolved_rows": [_row(i, f, {}) | {"detail": _detail(f, guide_for(f["kind"]).columns)}
                          for i, f in enumerate(resolved[:BRIEF_ROWS])],
        "resolved_total": len(resolved),
        "high_rows": high_rows[:HTML_HIGH_ROWS], "high_total": len(high_rows),
        "steps": [s | {"color": KIND_COLORS.get(s["kind"], OTHER_COLOR), "remedy": _remedy_parts(s)}
                  for s in steps],
        "max_changes": _max_changes_note(report),
        "charts": _charts(report.get("trend") or []),
        "trend_rows": _trend_rows(report.get("trend") or []),
        "kinds": [{"kind": k, "anchor": _anchor(k), "count": n, "color": KIND_COLORS.get(k, OTHER_COLOR),
                   "new": step_by_kind.get(k, {}).get("new", 0), "meaning": guide_for(k).meaning}
                  for k, n in report["summary"].items()],
        "groups": groups, "groups_total": groups_total,
        "total": len(findings), "filters": Markup(_filters_html(report)),
        "sections": _sections(rows, step_by_kind),
        "problems": [{"source": _cell(s.get("source")), "id": _cell(s.get("id")),
                      "outcome": "kept, values cleaned" if (s.get("reason") or "").startswith("kept, but")
                      else "left out", "detail": _cell(_problem_detail(s.get("reason")))} for s in skipped],
        "problems_note": (f"{len(skipped) - kept} record(s) had no usable id and were left out of the run; "
                          f"{kept} were kept with the values that could not be read cleaned or dropped."),
        "data": Markup(json_for_script({"fields": list(_SEARCH_ONLY), "rows": [_search_only(f) for f in findings]})),
    }


def _search_only(f: Mapping) -> list[str]:
    """The ids a row does not show; the app username only when it is not the login shown."""
    app = f.get("app_username") or ""
    return [f.get("okta_user_id") or "", "" if app == f.get("login") else app]


def _max_changes_note(report: Mapping) -> int:
    return int(report.get("max_changes") or DEFAULT_MAX_CHANGES)


def _problem_detail(reason: str | None) -> str | None:
    if reason and reason.startswith("kept, but "):
        return reason[len("kept, but "):]
    return reason


def _anchor(kind: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", kind.lower())[:60] or "kind"


_NONE_CELL = {"text": "(none)", "title": None}  # an empty value: no roles, no name


def _cell(value, limit: int = HTML_CELL_CHARS) -> dict | None:
    """Display text, cut to `limit` with the full value as a tooltip; None shows as a dash."""
    if value is None:
        return None
    text = printable(str(value))
    if not text:
        return _NONE_CELL
    if len(text) <= limit:
        return {"text": text, "title": None}
    return {"text": truncate(text, limit), "title": text}


def _since(f: Mapping) -> str | None:
    if f.get("status") != "persisting":
        return None
    first = f.get("first_seen_at") or ""
    return printable(first[:10]) if len(first) >= 10 else None


def _detail(f: Mapping, columns) -> str:
    """The kind's columns as one line, e.g. "Roles Okta grants: agent · Elevated roles on the worker: admin"."""
    parts = [f"{header}: {truncate(printable(f[field]), 60) or _NONE_CELL['text']}" for header, field in columns
             if f.get(field) is not None]
    return " · ".join(parts)


def _row(i: int, f: Mapping, group_of: Mapping) -> dict:
    g = guide_for(f["kind"])
    user = f.get("login") or f.get("okta_user_id")
    return {"i": i, "kind": f["kind"], "severity": f["severity"], "status": f.get("status") or "new",
            "since": _since(f), "user": _cell(user), "worker": _cell(f.get("worker_sid"), 40),
            "group": group_of.get(_entity(f)), "detail": "",
            "cols": [_cell(f.get(field)) for _header, field in g.columns]}


def _sections(rows: list[dict], step_by_kind: Mapping) -> list[dict]:
    """Consecutive rows of one kind (findings are sorted by severity, then kind)."""
    sections: list[dict] = []
    for row in rows:
        if not sections or sections[-1]["kind"] != row["kind"]:
            g = guide_for(row["kind"])
            step = step_by_kind.get(row["kind"])
            sections.append({"kind": row["kind"], "anchor": _anchor(row["kind"]), "severity": row["severity"],
                             "color": KIND_COLORS.get(row["kind"], OTHER_COLOR), "meaning": g.meaning,
                             "remedy": _remedy_parts(step) if step else [(g.remedy, False)],
                             "headers": [h for h, _field in g.columns], "rows": []})
        sections[-1]["rows"].append(row)
    return sections


def _remedy_parts(step: Mapping) -> list[tuple[str, bool]]:
    """The remedy text split so its commands render as code."""
    text, parts = step["remedy"], []
    for cmd in step.get("commands") or []:
        before, found, text = text.partition(cmd)
        if not found:
            text = before
            continue
        parts += [(before, False), (cmd, True)]
    return [p for p in parts + [(text, False)] if p[0]]


def _entity(f: Mapping) -> tuple[str, str]:
    return (f.get("okta_user_id") or f.get("login") or "", f.get("worker_sid") or "")


def _groups(findings: Sequence[Mapping], links: Mapping) -> tuple[list[dict], dict, int]:
    """Findings grouped by (Okta user, worker), most severe and most findings first, capped."""
    by: dict[tuple[str, str], list[Mapping]] = {}
    for f in findings:
        by.setdefault(_entity(f), []).append(f)
    order = sorted(by, key=lambda k: (min(_SEVERITY_RANK.get(f["severity"], 9) for f in by[k]), -len(by[k]), k))
    shown = order[:GROUP_ROWS]
    admin, workspace = links.get("okta_admin"), links.get("workspace_sid")
    groups, group_of = [], {}
    for n, key in enumerate(shown):
        fs = by[key]
        first = fs[0]
        anchor = f"g-{n}"
        group_of[key] = anchor
        user_id = first.get("okta_user_id")
        groups.append({
            "anchor": anchor, "user": _cell(first.get("login") or user_id or first.get("app_username")),
            "okta_user_id": _cell(user_id, 40) if user_id and first.get("login") else None,
            "okta_url": okta_user_url(admin, user_id), "worker": _cell(first.get("worker_sid"), 40),
            "twilio_url": twilio_worker_url(workspace, first.get("worker_sid")),
            "findings": [{"kind": f["kind"], "severity": f["severity"], "status": f.get("status"),
                          "detail": _detail(f, guide_for(f["kind"]).columns)} for f in fs],
        })
    return groups, group_of, len(order)


def _trend_rows(trend: Sequence[Mapping]) -> list[dict]:
    out = []
    for t in list(trend)[-TREND_RUNS:][::-1]:
        d = t.get("delta") or {}
        out.append({"run_id": _cell(t["run_id"], 40), "started": printable(_run_label(t)),
                    "total": sum(t["summary"].values()), "new": d.get("new", "—"), "resolved": d.get("resolved", "—")})
    return out


def _charts(trend: Sequence[Mapping]) -> dict | None:
    runs = list(trend)[-TREND_RUNS:]
    if not runs:
        return None
    kinds = [k for k in dict.fromkeys(k for r in runs for k in r["summary"]) if any(r["summary"][k] for r in runs)]
    return {"findings": Markup(findings_chart_svg(runs)), "roles": Markup(roles_chart_svg(runs)),
            "kind_legend": [(k, KIND_COLORS.get(k, OTHER_COLOR)) for k in kinds],
            "role_legend": list(ROLE_COLORS.items())}


def json_for_script(value) -> str:
    """JSON that cannot end a <script> element or break a JS string literal."""
    return (json.dumps(value, ensure_ascii=False)
            .replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _text(value) -> str:
    """Escaped for element text and quoted attribute values alike."""
    return html.escape(printable(str(value)), quote=True)


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



# --- SVG charts -------------------------------------------------------------------------------

_CHART_W, _CHART_H = 560, 220
_LABEL_PX = 76  # room for one "MM-DD HH:MM" axis label
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 44, 12, 12, 40


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
