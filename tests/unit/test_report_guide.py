"""Issue 15: what each finding means and what to run next, console links, the digest, and the
HTML built from its Jinja template (written-out expected values, hand-built findings)."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from html.parser import HTMLParser

import pytest

from okta_flex_sync.models.records import FINDING_KINDS
from okta_flex_sync.reports.digest import render_digest, summary_line
from okta_flex_sync.reports.document import build_report
from okta_flex_sync.reports.guide import GUIDE, next_steps, planned_changes
from okta_flex_sync.reports.html_page import render_html
from okta_flex_sync.reports.links import (
    okta_admin_base,
    okta_user_url,
    twilio_worker_url,
)
from okta_flex_sync.reports.text import render_markdown

WS = "WS" + "a" * 32
WK1, WK2, WK3, WK4 = ("WK" + c * 32 for c in "1234")
GENERATED = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)


def f(kind, severity, worker=None, user="00u1", login="ann@example.com", status="new", **kw) -> dict:
    return {"kind": kind, "severity": severity, "worker_sid": worker, "okta_user_id": user, "login": login,
            "app_username": login, "status": status, **kw}


FINDINGS = [
    f("privilege_escalation", "high", WK1, field="roles", expected="agent", actual="admin"),
    f("roles_mismatch", "medium", WK1, status="persisting", first_seen_run_id="r0",
      first_seen_at=datetime(2026, 2, 28, 2), field="roles", expected="agent", actual="admin,agent,supervisor"),
    f("full_name_mismatch", "low", WK2, user="00u2", login="bob@example.com", field="full_name",
      expected="Bob B", actual="Bob"),
    f("deactivated_user_has_worker", "high", WK3, user="00u3", login="cy@example.com", actual="SUSPENDED"),
    f("orphan_worker", "medium", WK4, user="00u4", login="dee@example.com", expected="matched by login",
      status="persisting"),
    f("missing_worker", "info", None, user="00u5", login="eve@example.com"),
]


def doc(findings=FINDINGS, **kw):
    kw.setdefault("delta", {"previous_run_id": "r1"})
    kw.setdefault("resolved", [f("email_mismatch", "low", "WK" + "9" * 32, user="00u9", login="old@example.com")])
    return build_report("r2", GENERATED, {"okta_users": 10, "assigned_users": 6, "workers": 5}, findings, **kw)


# --- guide ------------------------------------------------------------------------------------

def test_every_kind_has_a_meaning_and_a_remedy():
    assert set(GUIDE) == set(FINDING_KINDS)
    for kind, g in GUIDE.items():
        assert g.meaning.endswith(".") and g.remedy, kind


def test_planned_changes_count_workers_once():
    assert planned_changes(FINDINGS) == {"repair": 2, "strip": 3, "delete": 4}


@pytest.mark.parametrize("max_changes, repair, strip, delete", [
    (25, "okta-flex-sync run --apply", "okta-flex-sync run --apply --strip-deactivated",
     "okta-flex-sync run --apply --delete-orphan-workers"),
    (2, "okta-flex-sync run --apply", "okta-flex-sync run --apply --strip-deactivated --max-changes 3",
     "okta-flex-sync run --apply --delete-orphan-workers --max-changes 4"),
    (1, "okta-flex-sync run --apply --max-changes 2", "okta-flex-sync run --apply --strip-deactivated --max-changes 3",
     "okta-flex-sync run --apply --delete-orphan-workers --max-changes 4"),
])
def test_remedies_name_the_exact_command(max_changes, repair, strip, delete):
    steps = {s["kind"]: s for s in next_steps(FINDINGS, max_changes=max_changes)}
    assert list(steps) == ["privilege_escalation", "deactivated_user_has_worker", "roles_mismatch",
                           "orphan_worker", "full_name_mismatch", "missing_worker"]
    assert steps["privilege_escalation"]["remedy"] == f"Repair the workers' roles: {repair}"
    assert steps["roles_mismatch"]["commands"] == [repair]
    assert steps["deactivated_user_has_worker"]["remedy"] == (
        f"Remove the user's Flex assignment in Okta; to take the Flex roles off the workers now: {strip}")
    assert steps["orphan_worker"]["commands"] == [delete]
    assert steps["missing_worker"]["commands"] == []
    assert (steps["roles_mismatch"]["count"], steps["roles_mismatch"]["new"]) == (1, 0)


def test_the_issues_148_workers():
    findings = [f("roles_mismatch", "medium", "WK%032x" % i, user=f"00u{i}") for i in range(148)]
    (step,) = next_steps(findings, max_changes=25)
    assert step["remedy"] == "Repair the workers: okta-flex-sync run --apply --max-changes 148"


# --- links ------------------------------------------------------------------------------------

@pytest.mark.parametrize("org_url, base", [
    ("https://acme.okta.com", "https://acme-admin.okta.com"),
    ("https://acme.oktapreview.com/", "https://acme-admin.oktapreview.com"),
    ("https://acme-admin.okta.com", "https://acme-admin.okta.com"),
    ("https://login.acme.com", "https://login-admin.acme.com"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://localhost:9", "http://localhost:9"),
    ("http://acme.okta.com", None),  # plain http only for a local test server
    ("https://user:pw@acme.okta.com", None),
    ("javascript:alert(1)", None),
    ("https://acme", None),
    (None, None),
    ("", None),
])
def test_okta_admin_base(org_url, base):
    assert okta_admin_base(org_url) == base


@pytest.mark.parametrize("user_id, url", [
    ("00u1abcDEF", "https://acme-admin.okta.com/admin/user/profile/view/00u1abcDEF"),
    ("00u1/../x", None), ("00u1\"><b>", None), ("", None), (None, None), ("a" * 65, None),
])
def test_okta_user_url(user_id, url):
    assert okta_user_url("https://acme-admin.okta.com", user_id) == url


@pytest.mark.parametrize("workspace, worker, url", [
    (WS, WK1, f"https://console.twilio.com/us1/develop/taskrouter/workspaces/{WS}/workers/{WK1}"),
    (WS, "WK1", None), (WS, WK1 + "x", None), ("WSx", WK1, None), (None, WK1, None), (WS, None, None),
    (WS, "WK" + "g" * 32, None),
])
def test_twilio_worker_url(workspace, worker, url):
    assert twilio_worker_url(workspace, worker) == url


# --- digest and summary line ------------------------------------------------------------------

def test_summary_line():
    assert summary_line(doc(), "reports/r2/") == "4 new, 1 resolved, 6 open (2 high) — reports/r2/"


def test_digest_for_a_chat_message():
    assert render_digest(doc(), "reports/r2/") == (
        "**okta-flex-sync r2**: 4 new, 1 resolved, 6 open (2 high) — reports/r2/\n"
        "New high-severity findings (2):\n"
        "- privilege\\_escalation: ann@example.com · worker " + WK1 + "\n"
        "- deactivated\\_user\\_has\\_worker: cy@example.com · worker " + WK3 + "\n"
        "Next: Repair the workers' roles: okta-flex-sync run --apply\n")


def test_digest_of_a_first_run_and_hostile_values():
    hostile = [f("privilege_escalation", "high", WK1, login="[x](javascript:alert(1)) <b>@here</b>")]
    text = render_digest(doc(hostile, delta=None, resolved=()), "reports/r2/")
    assert "First report for this org and workspace: every finding counts as new." in text
    assert "\\[x\\](javascript:alert(1)) &lt;b&gt;@here&lt;/b&gt;" in text


# --- Markdown ---------------------------------------------------------------------------------

def test_markdown_leads_with_the_delta_then_what_to_do():
    md = render_markdown(doc())
    assert md.index("**4 new, 1 resolved, 6 open** (since run r1)") < md.index("## Findings by kind") \
        < md.index("## What to do")
    assert "| New | 2 | 0 | 1 | 1 |" in md and "| Resolved | 0 | 0 | 1 | 0 |" in md and "| Open | 2 | 2 | 1 | 1 |" in md
    assert "mode dry-run (nothing was changed in TaskRouter; run with --apply to repair)" in md
    assert ("- **privilege\\_escalation** (1 open, 1 new): The worker holds admin or supervisor rights that Okta "
            "does not grant; they last until the person's next SSO login, or forever if they never log in again. "
            "Repair the workers' roles: `okta-flex-sync run --apply`") in md


# --- HTML -------------------------------------------------------------------------------------

class Page(HTMLParser):
    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.text = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_html_links_to_the_consoles_only_for_well_formed_ids():
    findings = FINDINGS + [f("orphan_worker", "medium", "WK<script>", user="00u\"x", login="mallory")]
    page = render_html(doc(findings, org_url="https://acme.okta.com", workspace_sid=WS))
    links = [a for t, a in Page(page).tags if t == "a" and a.get("href", "").startswith("http")]
    assert sorted(a["href"] for a in links) == sorted(
        [f"https://acme-admin.okta.com/admin/user/profile/view/00u{i}" for i in (1, 2, 3, 4, 5)]
        + [f"https://console.twilio.com/us1/develop/taskrouter/workspaces/{WS}/workers/{w}"
           for w in (WK1, WK2, WK3, WK4)])
    assert {a["rel"] for a in links} == {"noopener noreferrer"}


def test_html_without_org_or_workspace_has_no_external_links():
    page = render_html(doc())
    assert not [a for t, a in Page(page).tags if t == "a" and not a["href"].startswith("#")]


def test_html_sections_follow_the_issue_order_and_kinds_have_their_own_columns():
    page = render_html(doc())
    order = ["New since the previous run", "Resolved since the previous run", "What to do",
             "High-severity findings", "By user and worker", "All findings"]
    assert [page.index(f"<h2>{h}") for h in order] == sorted(page.index(f"<h2>{h}") for h in order)
    heads = re.findall(r'<section class="kind-section" id="kind-([a-z_]+)"[^>]*>.*?<thead><tr>(.*?)</tr>', page, re.S)
    assert [(k, re.findall(r"<th>(.*?)</th>", h)) for k, h in heads] == [
        ("privilege_escalation", ["status", "Okta user", "worker", "Roles Okta grants", "Elevated roles on the worker"]),
        ("deactivated_user_has_worker", ["status", "Okta user", "worker", "Okta status"]),
        ("roles_mismatch", ["status", "Okta user", "worker", "Roles in Okta", "Roles on the worker"]),
        ("orphan_worker", ["status", "Okta user", "worker", "Worker name", "Okta user found by"]),
        ("full_name_mismatch", ["status", "Okta user", "worker", "Name in Okta", "Name on the worker"]),
        ("missing_worker", ["status", "Okta user", "worker"]),
    ]
    assert "since 2026-02-28" in page
    assert "<code>okta-flex-sync run --apply</code>" in page


def test_html_groups_every_finding_of_a_user_and_worker():
    page = render_html(doc())
    groups = page.split('<table id="groups">')[1].split("</table>")[0]
    first = groups.split("</tr>")[1]  # the first body row: ann's worker WK1 with both its findings
    assert "ann@example.com" in first and WK1 in first
    assert "privilege_escalation" in first and "roles_mismatch" in first
    assert groups.count('<tr id="g-') == 5


def test_html_explains_mode_and_problem_records():
    skipped = [{"source": "users", "id": None, "reason": "no id"},
               {"source": "users", "id": "00u7", "reason": "kept, but profile.login was not a string"}]
    page = render_html(doc(skipped=skipped))
    assert "mode <b>dry-run</b>: nothing was changed in TaskRouter; run with --apply to repair" in page
    assert "1 record(s) had no usable id and were left out of the run; 1 were kept" in page
    assert "<td>left out</td>" in page and "<td>kept, values cleaned</td>" in page
    assert "Skipped records" not in page


def test_template_and_css_ship_as_package_data():
    import importlib.resources
    import tomllib
    from pathlib import Path

    folder = importlib.resources.files("okta_flex_sync.reports") / "templates"
    assert (folder / "report.html.j2").is_file() and (folder / "report.css").is_file()
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]
    assert "reports/templates/*" in data["okta_flex_sync"] and "tasks" not in data
    css = (folder / "report.css").read_text()
    assert "@media print" in css and "word-break:keep-all" in css
