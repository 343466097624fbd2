"""Drift reports: the JSON contract, and each format staying inert with hostile Okta data (issue 8)."""
from __future__ import annotations

import base64
import csv
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from okta_flex_sync.models.records import FINDING_KINDS, SEVERITIES, Finding
from okta_flex_sync.reports import document as reports
from okta_flex_sync.reports.document import (
    InvalidRunId,
    UnknownReportFormat,
    build_report,
)
from okta_flex_sync.reports.files import run_report_dir, write_reports
from okta_flex_sync.reports.html_page import render_html
from okta_flex_sync.reports.text import (
    csv_cell,
    md_escape,
    render_json,
    render_markdown,
)
from okta_flex_sync.tasks import artifacts

GENERATED = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)
COUNTS = {"okta_users": 12, "assigned_users": 9, "workers": 8}
LONG = "A" * 100_000

HOSTILE = [
    "</script><script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "'><iframe src=javascript:alert(1)>",
    "x\u2028y\u2029z",
    "</SCRIPT ><!--<script>",
    "\x00\x07\x1b[31mred\u202eevil\r\n=1",
    '=HYPERLINK("http://x")',
    LONG,
]


def finding(kind="roles_mismatch", severity="medium", **kw) -> Finding:
    return Finding(kind=kind, severity=severity, **kw)


def hostile_findings(payload: str) -> list[Finding]:
    return [
        finding("privilege_escalation", "high", okta_user_id="00u1", login=payload, app_username=payload,
                worker_sid="WK1", field="roles", expected="agent", actual=payload),
        finding("full_name_mismatch", "low", okta_user_id=payload, login="bob@example.com",
                app_username="bob@example.com", worker_sid=payload, field="full_name",
                expected=payload, actual="Bob"),
        finding("missing_worker", "info", okta_user_id="00u3", login="carol@example.com",
                app_username="carol@example.com"),
    ]


def sample_trend(n=3, run_id=lambda i: f"run-{i}") -> list[dict]:
    start = datetime(2026, 2, 1, tzinfo=timezone.utc)
    return [{"run_id": run_id(i), "started_at": start + timedelta(days=i),
             "summary": {"roles_mismatch": i + 1, "missing_worker": 2},
             "roles": {"admin": 2, "supervisor": 4, "agent": 30 + i}} for i in range(n)]


def report_for(findings, **kw) -> dict:
    return build_report("run-1", GENERATED, COUNTS, findings, **kw)


# --- JSON document ----------------------------------------------------------------------------

def test_json_document_has_exactly_the_spec_shape():
    doc = json.loads(render_json(report_for(hostile_findings("Bob"), trend=sample_trend())))

    assert {"run_id", "generated_at", "counts", "summary", "findings"} <= set(doc)
    assert set(doc) - {"run_id", "generated_at", "counts", "summary", "findings"} <= {
        "trend", "skipped", "mode", "delta", "resolved", "next_steps", "links", "max_changes"}
    assert doc["delta"] == {"previous_run_id": None, "new": 3, "resolved": 0, "persisting": 0}
    assert doc["run_id"] == "run-1" and doc["generated_at"] == "2026-03-01T12:30:00Z"
    assert doc["counts"] == COUNTS
    assert list(doc["summary"]) == list(FINDING_KINDS)
    assert doc["summary"]["privilege_escalation"] == 1 and doc["summary"]["orphan_worker"] == 0
    assert all(list(f) == ["kind", "severity", "okta_user_id", "login", "app_username", "worker_sid",
                           "field", "expected", "actual", "status", "first_seen_run_id", "first_seen_at"]
               for f in doc["findings"])
    missing = doc["findings"][-1]
    assert missing["kind"] == "missing_worker"
    assert (missing["worker_sid"], missing["field"], missing["expected"], missing["actual"]) == (None,) * 4
    assert (missing["status"], missing["first_seen_run_id"], missing["first_seen_at"]) == ("new", "run-1", None)


def test_counts_keep_only_the_three_spec_keys_and_default_to_zero():
    doc = build_report("r", GENERATED, {"okta_users": 5, "history_rows_written": 99}, [])
    assert doc["counts"] == {"okta_users": 5, "assigned_users": 0, "workers": 0}


@pytest.mark.parametrize("generated_at, expected", [
    (datetime(2026, 3, 1, 12, 30), "2026-03-01T12:30:00Z"),
    (datetime(2026, 3, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))), "2026-03-01T12:30:00Z"),
    (datetime(2026, 3, 1, 12, 30, 5, 123, tzinfo=timezone.utc), "2026-03-01T12:30:05.000123Z"),
])
def test_generated_at_is_iso_utc(generated_at, expected):
    assert build_report("r", generated_at, COUNTS, [])["generated_at"] == expected


def test_findings_may_be_stored_rows_as_mappings():
    row = {"kind": "orphan_worker", "severity": "medium", "worker_sid": "WK9", "extra": "ignored"}
    (f,) = build_report("r", GENERATED, COUNTS, [row])["findings"]
    assert f == {"kind": "orphan_worker", "severity": "medium", "okta_user_id": None, "login": None,
                 "app_username": None, "worker_sid": "WK9", "field": None, "expected": None, "actual": None,
                 "status": "new", "first_seen_run_id": "r", "first_seen_at": None}


def test_lone_surrogates_cannot_break_utf8_output(tmp_path):
    report = report_for([finding(login="bad\ud800name")])
    paths = write_reports(report, tmp_path)
    assert "bad\ufffdname" in paths["json"].read_text(encoding="utf-8")


def test_trend_entries_are_completed_and_oldest_first():
    trend = sample_trend(3)[::-1] + [{"run_id": "bare"}]
    doc = report_for([], trend=trend)
    assert [t["run_id"] for t in doc["trend"]] == ["bare", "run-0", "run-1", "run-2"]
    assert list(doc["trend"][0]["summary"]) == list(FINDING_KINDS)
    assert doc["trend"][0]["roles"] == {"admin": 0, "supervisor": 0, "agent": 0}
    assert doc["trend"][1]["started_at"] == "2026-02-01T00:00:00Z"


def test_skipped_and_mode_are_carried():
    doc = report_for([], skipped=[{"source": "okta_user", "id": None, "reason": "no id"}], mode="repair")
    assert doc["skipped"] == [{"source": "okta_user", "id": None, "reason": "no id"}]
    assert doc["mode"] == "repair"


finding_strategy = st.builds(
    Finding,
    kind=st.sampled_from(FINDING_KINDS + ("made_up_kind",)),
    severity=st.sampled_from(SEVERITIES + ("weird",)),
    login=st.none() | st.text(max_size=8),
    worker_sid=st.none() | st.text(max_size=8),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(finding_strategy, max_size=30))
def test_findings_sorted_high_first_and_summary_adds_up(findings):
    doc = report_for(findings)
    ranks = [SEVERITIES.index(f["severity"]) if f["severity"] in SEVERITIES else 99 for f in doc["findings"]]
    assert ranks == sorted(ranks)
    delta_free = [{k: v for k, v in f.items() if k not in ("status", "first_seen_run_id", "first_seen_at")}
                  for f in doc["findings"]]
    assert sorted(map(str, delta_free)) == sorted(str(f.as_dict()) for f in findings)
    assert sum(doc["summary"].values()) == len(findings)
    assert list(doc["summary"])[:len(FINDING_KINDS)] == list(FINDING_KINDS)


# --- CSV --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
    ("+1+1", "'+1+1"),
    ("-2+3", "'-2+3"),
    ("@SUM(1)", "'@SUM(1)"),
    ("\t=1", "'\\t=1"),
    ("\r=1", "'\\r=1"),
    (" =1", "' =1"),
    ("\u00a0\u3000=1", "'\u00a0\u3000=1"),
    ("\x00=1", "'\\x00=1"),
    ("\ufeff=1", "'\ufeff=1"),
    ("a\x07b\x1bc", "a\\x07b\\x1bc"),
    ("line1\nline2", "line1\\nline2"),
    ("\u202eevil", "\\u202eevil"),
    ("a=b", "a=b"),
    ("Zoë O'Brien", "Zoë O'Brien"),
    ("", ""),
    (None, ""),
])
def test_csv_cell_neutralizes_formulas_and_controls(value, expected):
    assert csv_cell(value) == expected


@pytest.mark.parametrize("value", [LONG, "\x00" * 40_000, "=" + "\u202e" * 40_000])
def test_csv_cell_truncates_to_what_excel_accepts(value):
    cell = csv_cell(value)
    assert len(cell) <= 32_767 and cell.endswith("chars]")
    assert cell.startswith("'") == value.startswith("=")


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_csv_cell_is_never_a_formula_nor_has_controls(value):
    cell = csv_cell(value)
    stripped = re.sub(r"^[\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2060\ufeff]*", "", cell)
    assert cell.startswith("'") or stripped[:1] not in ("=", "+", "-", "@")
    assert not _CONTROL.search(cell) and "\n" not in cell and "\t" not in cell
    assert len(cell) <= 32_767


def test_csv_parses_back_with_the_csv_module(tmp_path):
    findings = [f for p in HOSTILE for f in hostile_findings(p)]
    report = report_for(findings)
    path = write_reports(report, tmp_path, formats=("csv",))["csv"]

    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    cols = ["kind", "severity", "okta_user_id", "login", "app_username", "worker_sid", "field", "expected", "actual",
            "status", "first_seen_run_id", "first_seen_at"]
    assert rows[0] == cols
    assert len(rows) == len(findings) + 1
    for row, f in zip(rows[1:], report["findings"]):
        assert row == [csv_cell(f[k]) for k in cols]
    assert not _CONTROL.search(raw.decode("utf-8").replace("\r\n", ""))


# --- HTML -------------------------------------------------------------------------------------

class Tags(HTMLParser):
    """Every element the browser's parser would create, with its attributes and script bodies."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self._in_script: dict | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = dict(attrs)
            self.scripts.append((self._in_script, ""))

    def handle_data(self, data):
        if self._in_script is not None:
            attrs, body = self.scripts[-1]
            self.scripts[-1] = (attrs, body + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None

    def named(self, name):
        return [attrs for tag, attrs in self.tags if tag == name]


def assert_page_is_inert(page: str, svg_count: int) -> Tags:
    tags = Tags(page)
    assert [attrs.get("type") for attrs, _ in tags.scripts] == ["application/json", None]
    assert not [(t, a) for t, a in tags.tags if any(k.startswith("on") for k in a)]
    assert not tags.named("img") and not tags.named("iframe") and not tags.named("object")
    assert len(tags.named("svg")) == svg_count
    assert not [a for t, a in tags.tags for k, v in a.items() if k in ("src", "action")]
    # Links only to anchors on the page or to the Okta admin and Twilio consoles, never opening a reference.
    for t, a in tags.tags:
        if "href" in a:
            assert t == "a" and (re.fullmatch(r"#[A-Za-z0-9_-]+", a["href"]) or (
                re.fullmatch(r"https://[a-z0-9-]+-admin\.(okta|oktapreview|okta-emea)\.com/admin/user/profile/view/"
                             r"[A-Za-z0-9]+|https://console\.twilio\.com/us1/develop/taskrouter/workspaces/WS[0-9a-f]{32}"
                             r"/workers/WK[0-9a-f]{32}", a["href"]) and a.get("rel") == "noopener noreferrer")), a
    assert "\u2028" not in page and "\u2029" not in page
    return tags


@pytest.mark.parametrize("payload", HOSTILE, ids=lambda p: repr(p[:20]))
def test_html_stays_inert_with_hostile_values(payload):
    report = report_for(hostile_findings(payload), trend=sample_trend(run_id=lambda i: payload))
    page = render_html(report)
    tags = assert_page_is_inert(page, svg_count=2)

    data_attrs, data = tags.scripts[0]
    assert data_attrs["id"] == "findings-data"
    assert not re.search("[<>&\u2028\u2029]", data)
    # The script data holds only what a search needs and the rows do not show, in finding order.
    # (the app username only where it differs from the login the row shows: in hostile_findings never)
    assert json.loads(data) == {"fields": ["okta_user_id", "app_username"],
                                "rows": [["00u1", ""], [payload, ""], ["00u3", ""]]}


def test_html_csp_allows_exactly_the_inline_script():
    page = render_html(report_for(hostile_findings("x")))
    tags = Tags(page)
    (meta,) = [a for a in tags.named("meta") if a.get("http-equiv") == "Content-Security-Policy"]
    digest = base64.b64encode(hashlib.sha256(tags.scripts[1][1].encode()).digest()).decode()
    policy = dict(p.strip().split(" ", 1) for p in meta["content"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == f"'sha256-{digest}'"


def test_html_truncates_long_values_with_the_full_value_in_a_title():
    page = render_html(report_for(hostile_findings("<b>" + LONG)))
    titles = [a["title"] for a in Tags(page).named("span") if "title" in a]
    assert "<b>" + LONG in titles
    assert "<b>" + LONG not in re.sub(r'title="[^"]*"', "", page.split('id="findings-data"')[0])


def test_html_is_readable_without_js_high_severity_first():
    report = report_for([finding("missing_worker", "info", login="a"), finding("roles_mismatch", "medium"),
                         finding("privilege_escalation", "high", login="mallory")])
    page = render_html(report)
    tags = Tags(page)
    rows = [a for t, a in tags.tags if t == "tr" and "data-i" in a]
    assert len(rows) == 1 + 3  # the high-severity table, then all findings server-rendered
    assert [r["data-severity"] for r in rows[1:]] == ["high", "medium", "info"]
    assert page.index('id="high-findings"') < page.index('id="findings"')
    # The filter form needs the script, so it starts hidden; the script unhides it.
    assert {"class": "filters", "id": "filters", "hidden": None} in tags.named("div")


def test_html_without_history_or_findings_says_so():
    page = render_html(report_for([]))
    assert_page_is_inert(page, svg_count=0)
    assert "No run history yet." in page and "No high-severity findings." in page and "No findings." in page


def test_html_chart_has_one_segment_per_nonzero_kind_and_run():
    trend = sample_trend(4)
    page = render_html(report_for([], trend=trend))
    assert page.count("<rect ") == 4 * 2  # roles_mismatch and missing_worker in each run
    assert page.count("<polyline ") == 3  # admin, supervisor, agent


# --- Markdown ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("a|b", "a\\|b"),
    ("`code`", "\\`code\\`"),
    ("*bold*", "\\*bold\\*"),
    ("_it_", "\\_it\\_"),
    ("<script>", "&lt;script&gt;"),
    ("&lt;", "&amp;lt;"),
    ("[x](javascript:alert(1))", "\\[x\\](javascript:alert(1))"),
    ("back\\slash", "back\\\\slash"),
    ("two\nlines", "two\\\\nlines"),
    ("~~gone~~", "\\~\\~gone\\~\\~"),
    ("plain text", "plain text"),
    (None, ""),
])
def test_md_escape(value, expected):
    assert md_escape(value) == expected


def test_markdown_tables_keep_their_columns_with_hostile_values():
    findings = [f for p in HOSTILE for f in hostile_findings(p)]
    md = render_markdown(report_for(findings))
    assert "<" not in md and "\u2028" not in md
    for line in md.splitlines():
        if line.startswith("|"):
            cells = len(re.findall(r"(?<!\\)\|", line)) - 1
            assert cells in (2, 5, 6), line
    assert f"({len(HOSTILE)} of {len(HOSTILE)})" in md
    assert max(map(len, md.splitlines())) < 1000


def test_markdown_caps_high_severity_rows():
    findings = [finding("privilege_escalation", "high", login=f"u{i}") for i in range(50)]
    md = render_markdown(report_for(findings))
    assert f"({reports.MD_HIGH_ROWS} of 50)" in md
    assert md.count("| privilege\\_escalation | u") == reports.MD_HIGH_ROWS


# --- writing ----------------------------------------------------------------------------------

def test_write_reports_writes_every_format_atomically(tmp_path):
    report = report_for(hostile_findings("x"), trend=sample_trend())
    out = tmp_path / "reports" / "run-1"
    paths = write_reports(report, out)

    assert paths == {"json": out / "drift.json", "csv": out / "drift.csv",
                     "html": out / "drift.html", "md": out / "drift.md"}
    assert sorted(p.name for p in out.iterdir()) == ["drift.csv", "drift.html", "drift.json", "drift.md"]
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == json.loads(render_json(report))
    assert paths["html"].read_text(encoding="utf-8") == render_html(report)


def test_failed_write_keeps_the_previous_report_and_leaves_no_temp_file(tmp_path, monkeypatch):
    write_reports(report_for([]), tmp_path, formats=("json",))
    before = (tmp_path / "drift.json").read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_reports(report_for(hostile_findings("x")), tmp_path, formats=("json",))
    assert (tmp_path / "drift.json").read_bytes() == before
    assert os.listdir(tmp_path) == ["drift.json"]


def test_unknown_format_is_refused_before_writing(tmp_path):
    with pytest.raises(UnknownReportFormat, match="pdf"):
        write_reports(report_for([]), tmp_path / "out", formats=("json", "pdf"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("run_id, ok", [
    ("3f2b9c1e-8a4d-4f7e-9b2a-1c3d5e7f9a0b", True),
    ("20260301T123000Z-abc", True),
    ("run_1.retry", True),
    ("../etc", False),
    ("a/../../b", False),
    ("a/b", False),
    ("..", False),
    (".hidden", False),
    ("", False),
    ("a\\b", False),
    ("a\x00b", False),
    ("run-1\n", False),
])
def test_run_report_dir_refuses_paths_that_escape(tmp_path, run_id, ok):
    if ok:
        assert run_report_dir(tmp_path, run_id) == tmp_path / run_id
    else:
        with pytest.raises(InvalidRunId):
            run_report_dir(tmp_path, run_id)


# --- Prefect artifacts ------------------------------------------------------------------------

def test_artifact_rows_are_capped_and_printable():
    findings = [finding("privilege_escalation", "high", login=f"<b>\n{i}" + LONG) for i in range(250)]
    rows = reports.high_severity_rows(report_for(findings))
    assert len(rows) == reports.ARTIFACT_ROWS
    assert all("\n" not in r["login"] and len(r["login"]) <= reports.HTML_CELL_CHARS for r in rows)
    assert reports.summary_rows(report_for(findings))[0] == {"kind": "privilege_escalation", "count": 250}


def test_publish_artifacts_is_a_noop_outside_a_run(caplog):
    with caplog.at_level(logging.DEBUG, logger="okta_flex_sync.tasks.artifacts"):
        artifacts.publish_artifacts(report_for(hostile_findings("x")))
    assert "not in a Prefect run" in caplog.text


def test_publish_artifacts_sends_tables_and_markdown(monkeypatch):
    calls = []
    monkeypatch.setattr(artifacts, "in_prefect_run", lambda: True)
    monkeypatch.setattr(artifacts, "create_table_artifact", lambda **kw: calls.append(("table", kw)))
    monkeypatch.setattr(artifacts, "create_markdown_artifact", lambda **kw: calls.append(("md", kw)))
    monkeypatch.setattr(artifacts, "emit_digest_event", lambda *a: calls.append(("event", {"key": a[0]["run_id"]})))
    report = report_for(hostile_findings("x"))
    artifacts.publish_artifacts(report)

    assert [(kind, kw["key"]) for kind, kw in calls] == [
        ("table", "drift-summary"), ("table", "drift-high-severity"), ("md", "drift-report"), ("md", "drift-digest"),
        ("event", "run-1")]
    assert all(re.fullmatch(r"[a-z0-9-]+", kw["key"]) for _, kw in calls)
    assert calls[2][1]["markdown"] == render_markdown(report)


def test_publish_artifacts_failure_does_not_fail_the_run(monkeypatch, caplog):
    def unavailable(**kw):
        raise ConnectionError("api down")

    monkeypatch.setattr(artifacts, "in_prefect_run", lambda: True)
    monkeypatch.setattr(artifacts, "create_table_artifact", unavailable)
    artifacts.publish_artifacts(report_for([]))
    assert "could not publish drift artifacts" in caplog.text


def test_reports_module_is_pure():
    code = ("import sys, okta_flex_sync.reports.document; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'sqlalchemy', 'httpx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_printable_fast_path_is_exact():
    """`printable` and `_scrub` return text that `str.isprintable()` accepts unchanged: that is
    only right while every character their patterns replace is non-printable."""
    from okta_flex_sync.reports.document import _SURROGATES, _UNPRINTABLE

    for pattern in (_UNPRINTABLE, _SURROGATES):
        assert not [hex(c) for c in range(0x10000) if pattern.fullmatch(chr(c)) and chr(c).isprintable()]


_CELL_TEXT = st.text(alphabet=st.sampled_from(list("aZ0 =+-@\t\r\n\x00\x07\u200b\u202e\ufeff\ud800é'\"<>&")), max_size=12)


@pytest.mark.parametrize("text, expected", [
    ("aZ0", "aZ0"),
    ("=1", "'=1"),
    (" =1", "' =1"),
    ("\u200b+1", "'\u200b+1"),
    ("\ufeff@x", "'\ufeff@x"),
    ("\x00-1", "'\\x00-1"),
    ("\t=", "'\\t="),
    ("a\nb", "a\\nb"),
    ("\r\n", "'\\r\\n"),
    ("\x07bell", "\\x07bell"),
    ("\u202eevil", "\\u202eevil"),
    ("bad\ud800", "bad\ufffd"),
    ("é=1", "é=1"),
    ("'\"<>&", "'\"<>&"),
    ("a -1", "a -1"),
])
def test_csv_cell_matches_the_plain_rule(text, expected):
    """Controls become visible escapes; a cell whose first non-blank character starts a formula
    gets a leading "'" (expected values written out, not computed with the module's helpers)."""
    assert csv_cell(text) == expected
