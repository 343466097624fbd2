"""drift.html in real headless Chromium: the script runs, the filter works, hostile data stays inert.

Needs /usr/bin/chromium (Debian: `apt-get install -y chromium`). Skipped when it is missing on a
developer machine; in CI (CI=true) a missing browser fails, so the check cannot silently vanish.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from urllib.parse import quote

import pytest

from okta_flex_sync.models.records import Finding
from okta_flex_sync.reports.document import build_report
from okta_flex_sync.reports.html_page import render_html

pytestmark = pytest.mark.browser

SENTINEL_TITLE = "Drift report run-browser"
HOSTILE = [
    "</script><script>document.title='PWNED'</script>",
    "<img src=x onerror=\"document.title='PWNED'\">",
    "\"><svg onload=\"document.title='PWNED'\">",
    "'><iframe srcdoc=\"<script>parent.document.title='PWNED'</script>\">",
    "x\u2028y\u2029z</script><!--",
    "=HYPERLINK(\"http://x\")\x00\x07\u202e",
    "L" * 100_000,
]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=5000"]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path:
        return path
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("chromium is not installed but CI is set: install it with `apt-get install -y chromium`")
    pytest.skip("chromium is not installed (apt-get install -y chromium); set CI=true to make this a failure")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """drift.html with every hostile payload in login, app username, worker sid, values and run ids."""
    findings = [Finding("privilege_escalation", "high", okta_user_id=f"00u{i}", login=p, app_username=p,
                        worker_sid="WK1", field="roles", expected="agent", actual=p)
                for i, p in enumerate(HOSTILE)]
    findings += [Finding("full_name_mismatch", "low", okta_user_id="00uX", login="zed@example.com",
                         app_username="zed@example.com", worker_sid=HOSTILE[1], field="full_name",
                         expected=HOSTILE[0], actual="Zed"),
                 Finding("missing_worker", "info", okta_user_id="00uY", login="needle@example.com",
                         app_username="needle@example.com")]
    start = datetime(2026, 2, 1, tzinfo=timezone.utc)
    trend = [{"run_id": HOSTILE[i % len(HOSTILE)][:200], "started_at": start + timedelta(days=i),
              "summary": {"roles_mismatch": i, "missing_worker": 3, "privilege_escalation": i % 3},
              "roles": {"admin": 2 + i % 2, "supervisor": 6, "agent": 40 + i}} for i in range(10)]
    report = build_report("run-browser", datetime(2026, 3, 1, tzinfo=timezone.utc),
                          {"okta_users": 120, "assigned_users": 95, "workers": 93}, findings, trend=trend)
    path = tmp_path_factory.mktemp("report") / "drift.html"
    path.write_text(render_html(report), encoding="utf-8")
    return {"path": path, "report": report}


def run_chromium(chromium: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=True)


def dump_dom(chromium: str, tmp_path, page: dict, fragment: str = "") -> "Dom":
    url = page["path"].as_uri() + (f"#{fragment}" if fragment else "")
    return Dom(run_chromium(chromium, tmp_path, "--dump-dom", url).stdout)


class Dom(HTMLParser):
    """The DOM as Chromium serialized it after the page's script ran."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.texts: dict[str, str] = {}
        self._capture: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        if tag == "title" and "title" not in self.texts:  # the document's, not the SVG tooltips
            self._capture = "title"
        elif tag == "span" and attrs.get("id"):
            self._capture = attrs["id"]

    def handle_data(self, data):
        if self._capture:
            self.texts[self._capture] = self.texts.get(self._capture, "") + data

    def handle_endtag(self, tag):
        self._capture = None

    def all(self, tag):
        return [a for t, a in self.elements if t == tag]

    def body(self) -> dict:
        return self.all("body")[0]


def visible(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "hidden" not in r]


def all_rows(dom: Dom, page: dict) -> list[dict]:
    """Rows of the all-findings table, which follows the (shorter) high-severity table."""
    rows = [a for a in dom.all("tr") if "data-i" in a]
    return rows[-len(page["report"]["findings"]):]


def test_page_renders_and_hostile_data_stays_inert(chromium, tmp_path, page):
    dom = dump_dom(chromium, tmp_path, page)

    assert dom.body().get("data-js") == "ready", "the page's own script did not run"
    assert dom.texts["title"] == SENTINEL_TITLE
    n = len(page["report"]["findings"])
    assert dom.texts["shown-count"] == str(n) and dom.body()["data-shown"] == str(n)
    assert len(visible(all_rows(dom, page))) == n
    assert not [(t, a) for t, a in dom.elements if any(k.startswith("on") for k in a)]
    assert not dom.all("img") and not dom.all("iframe")
    assert len(dom.all("svg")) == 2  # the two charts, nothing injected
    assert [a.get("type") for a in dom.all("script")] == ["application/json", None]
    assert "filters" in [a.get("id") for a in dom.all("div") if "hidden" not in a]


@pytest.mark.parametrize("fragment, expected_logins", [
    ("q=needle", ["needle@example.com"]),
    ("q=NEEDLE", ["needle@example.com"]),
    ("q=" + quote("document.title"), [HOSTILE[i] for i in range(4)] + ["zed@example.com"]),
    ("kind=full_name_mismatch", ["zed@example.com"]),
    ("severity=info", ["needle@example.com"]),
    ("q=zed&severity=high", []),
    ("q=" + "L" * 50, [HOSTILE[6]]),
])
def test_hash_filter_is_applied_on_load(chromium, tmp_path, page, fragment, expected_logins):
    dom = dump_dom(chromium, tmp_path, page, fragment)

    findings = page["report"]["findings"]
    shown = [findings[int(r["data-i"])]["login"] for r in visible(all_rows(dom, page))]
    assert sorted(shown) == sorted(expected_logins)
    assert dom.texts["shown-count"] == str(len(expected_logins))


def test_screenshot_renders(chromium, tmp_path, page):
    shot = tmp_path / "drift.png"
    run_chromium(chromium, tmp_path, "--window-size=1400,1600", f"--screenshot={shot}", page["path"].as_uri())
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
    keep = os.environ.get("REPORT_SCREENSHOT_DIR")  # to look at the page by eye
    if keep:
        shutil.copy(shot, os.path.join(keep, "drift.png"))
