"""Drift reports: one JSON document, rendered as JSON, CSV, HTML and Markdown.

Pure code (stdlib, jinja2, `okta_flex_sync.models.records` and the pure `okta_flex_sync.reports` helpers): no
Prefect, SQLAlchemy or httpx, so every renderer can be tested on hand-built findings.  The HTML
is `okta_flex_sync/reports/templates/report.html.j2` with `report.css` inlined.  Okta profile values and worker attributes are
attacker-controllable text (issue 8), so each renderer neutralises what its reader would
otherwise execute: formulas in spreadsheets, markup and script in browsers, syntax in Markdown.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

from okta_flex_sync.core.reconcile import summarize
from okta_flex_sync.models.records import (
    FINDING_KINDS,
    KIND_RANK,
    SEVERITIES,
    SEVERITY_RANK,
    Finding,
)
from okta_flex_sync.reports.guide import next_steps
from okta_flex_sync.reports.links import (
    okta_admin_base,
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
    return (SEVERITY_RANK.get(f["severity"], len(SEVERITIES)),
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


# --- CSV --------------------------------------------------------------------------------------


# --- Markdown ---------------------------------------------------------------------------------


MODE_MEANINGS = {
    "dry-run": "nothing was changed in TaskRouter; run with --apply to repair",
    "apply": "workers were repaired within --max-changes; see repair_audit",
}


def mode_meaning(mode: str) -> str:
    return MODE_MEANINGS.get(mode, "")


def skipped_sentence(n: int) -> str:
    return (f"{n} source record(s) had problems: records without a usable id were left out, the others "
            f"were kept with their bad values cleaned (see the notes).")


# --- Prefect table rows (pure, so tested here; published by okta_flex_sync.tasks.artifacts) -----------------

def summary_rows(report: Mapping) -> list[dict]:
    return [{"kind": kind, "count": n} for kind, n in report["summary"].items()]


def high_severity_rows(report: Mapping, limit: int = ARTIFACT_ROWS) -> list[dict]:
    cols = ("kind", "login", "app_username", "worker_sid", "field", "expected", "actual")
    return [{c: truncate(printable(f[c]), HTML_CELL_CHARS) if f[c] is not None else "" for c in cols}
            for f in high_findings(report)[:limit]]


# --- HTML -------------------------------------------------------------------------------------


# --- SVG charts -------------------------------------------------------------------------------


# --- writing ----------------------------------------------------------------------------------


