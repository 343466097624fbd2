"""Issue 15 end to end: run-to-run delta kept in the database and shown in every report, the
CLI's summary line and --fail-on-new, on SQLite and Postgres against the bundled simulator."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from okta_flex_sync.cli import app
from okta_flex_sync.jobs.nightly import run_nightly
from okta_flex_sync.models.tables import drift_findings, sync_runs
from okta_flex_sync.settings import load_settings
from okta_flex_sync.storage.engine import make_engine

pytestmark = pytest.mark.slow

SUMMARY_LINE = re.compile(r"^(\d+) new, (\d+) resolved, (\d+) open \((\d+) high\) — (.+)/$")


def _doc(outcome) -> dict:
    return json.loads(Path(outcome.report_paths["json"]).read_text(encoding="utf-8"))


def _stored(engine, run_id: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(drift_findings).where(drift_findings.c.run_id == run_id)
                                              .order_by(drift_findings.c.id)).mappings()]


def test_delta_between_nights_is_stored_and_reported(fresh_simulator, sim_env, database_url):
    sim = fresh_simulator(users=200, seed=5)
    sim_env(sim, database_url)
    settings = load_settings()
    engine = make_engine(database_url)

    first = run_nightly(settings)
    doc1 = _doc(first)
    n1 = len(doc1["findings"])
    assert n1 > 10
    assert doc1["delta"] == {"previous_run_id": None, "new": n1, "resolved": 0, "persisting": 0}
    assert doc1["resolved"] == []
    assert {f["status"] for f in doc1["findings"]} == {"new"}
    assert {f["first_seen_run_id"] for f in doc1["findings"]} == {first.run_id}
    rows1 = _stored(engine, first.run_id)
    assert {(r["status"], r["first_seen_run_id"]) for r in rows1} == {("new", first.run_id)}
    with engine.connect() as conn:
        run1 = conn.execute(select(sync_runs).where(sync_runs.c.run_id == first.run_id)).mappings().one()
    assert run1["workspace_sid"] == settings.twilio_workspace_sid
    assert run1["counts"]["delta"] == {"previous_run_id": None, "new": n1, "resolved": 0, "persisting": 0}
    assert {r["first_seen_at"] for r in rows1} == {run1["started_at"]}

    # Between the nights: an orphan worker is deleted (resolved), an agent's worker gains admin (new).
    orphan = next(f for f in doc1["findings"] if f["kind"] == "orphan_worker")
    sim.org.delete_worker(orphan["worker_sid"])
    flagged = {f["worker_sid"] for f in doc1["findings"]}
    clean = next(w for w in sim.org.workers()
                 if w["sid"] not in flagged and json.loads(w["attributes"]).get("roles") == ["agent"])
    attrs = json.loads(clean["attributes"])
    attrs["roles"] = ["admin", "agent"]
    sim.org.update_worker(clean["sid"], attributes=json.dumps(attrs))

    second = run_nightly(settings)
    doc2 = _doc(second)
    new = [f for f in doc2["findings"] if f["status"] == "new"]
    assert sorted((f["kind"], f["worker_sid"]) for f in new) == [
        ("privilege_escalation", clean["sid"]), ("roles_mismatch", clean["sid"])]
    assert [(f["kind"], f["worker_sid"]) for f in doc2["resolved"]] == [("orphan_worker", orphan["worker_sid"])]
    assert doc2["delta"] == {"previous_run_id": first.run_id, "new": 2, "resolved": 1, "persisting": n1 - 1}
    persisting = [f for f in doc2["findings"] if f["status"] == "persisting"]
    assert {f["first_seen_run_id"] for f in persisting} == {first.run_id}
    assert {f["first_seen_at"] for f in persisting} == {run1["started_at"].isoformat() + "Z"}
    rows2 = _stored(engine, second.run_id)
    assert sum(r["status"] == "new" for r in rows2) == 2
    assert second.summary_line == (f"2 new, 1 resolved, {n1 + 1} open ({doc2['summary']['privilege_escalation'] + doc2['summary']['deactivated_user_has_worker']} high)"
                                   f" — {Path(second.report_paths['json']).parent}/")

    md = Path(second.report_paths["md"]).read_text(encoding="utf-8")
    assert f"**2 new, 1 resolved, {n1 + 1} open** (since run {first.run_id})" in md
    html = Path(second.report_paths["html"]).read_text(encoding="utf-8")
    assert f'<td class="id">{clean["sid"]}</td>' in html.split('id="new-findings"')[1].split("</table>")[0]
    assert orphan["worker_sid"] in html.split('id="resolved-findings"')[1].split("</table>")[0]

    # A third night with nothing changed: everything persists, the series keeps its first run.
    third = run_nightly(settings)
    doc3 = _doc(third)
    assert doc3["delta"] == {"previous_run_id": second.run_id, "new": 0, "resolved": 0, "persisting": n1 + 1}
    by_key = {(f["kind"], f["worker_sid"] or f["okta_user_id"]): f["first_seen_run_id"] for f in doc3["findings"]}
    assert by_key[("privilege_escalation", clean["sid"])] == second.run_id
    assert by_key[("orphan_worker", next(f["worker_sid"] for f in persisting if f["kind"] == "orphan_worker"))] \
        == first.run_id
    engine.dispose()


def test_cli_summary_line_and_fail_on_new(fresh_simulator, sim_env):
    sim = fresh_simulator(users=150, seed=9)
    sim_env(sim)
    runner = CliRunner()

    first = runner.invoke(app, ["run", "--no-prefect", "--fail-on-new", "high"])
    assert first.exit_code == 3, first.output  # the first night: every high finding is new
    assert "new finding(s) at or above 'high' severity (--fail-on-new high)" in first.output

    second = runner.invoke(app, ["run", "--no-prefect", "--fail-on-new", "low"])
    assert second.exit_code == 0, second.output  # nothing new, though plenty is open
    last = second.output.strip().splitlines()[-1]
    m = SUMMARY_LINE.match(last)
    assert m, last
    assert (m[1], m[2]) == ("0", "0") and int(m[3]) > 0 and int(m[4]) > 0
    assert re.fullmatch(r".*reports/\d{8}T\d{6}Z-[0-9a-f]{8}", m[5])

    # A new low-severity finding: below --fail-on-new medium, so the run exits 0.
    worker = next(w for w in sim.org.workers() if json.loads(w["attributes"]).get("full_name"))
    attrs = json.loads(worker["attributes"])
    attrs["full_name"] = attrs["full_name"] + " Renamed"
    sim.org.update_worker(worker["sid"], attributes=json.dumps(attrs))
    third = runner.invoke(app, ["run", "--no-prefect", "--fail-on-new", "medium"])
    assert third.exit_code == 0, third.output
    assert SUMMARY_LINE.match(third.output.strip().splitlines()[-1])[1] == "1"
    attrs["full_name"] += " Again"  # still the same finding (same kind, same worker): persisting
    sim.org.update_worker(worker["sid"], attributes=json.dumps(attrs))
    fourth = runner.invoke(app, ["run", "--no-prefect", "--fail-on-new", "low"])
    assert fourth.exit_code == 0, fourth.output
    attrs["email"] = "someone.else@example.com"
    sim.org.update_worker(worker["sid"], attributes=json.dumps(attrs))
    fifth = runner.invoke(app, ["run", "--no-prefect", "--fail-on-new", "low"])
    assert fifth.exit_code == 3, fifth.output


def test_fail_on_new_rejects_unknown_severity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--fail-on-new", "critical"])
    assert result.exit_code == 2
    assert "critical" in result.output
    assert not list(tmp_path.iterdir()), "nothing created"


def test_reconcile_compares_with_the_night_it_reconciles(fresh_simulator, sim_env, database_url):
    sim = fresh_simulator(users=120, seed=21)
    sim_env(sim, database_url)
    night = run_nightly(load_settings())
    result = CliRunner().invoke(app, ["reconcile"])
    assert result.exit_code == 0, result.output
    m = SUMMARY_LINE.match(result.output.strip().splitlines()[-1])
    assert m and (m[1], m[2]) == ("0", "0") and int(m[3]) == len(_doc(night)["findings"])
    engine = make_engine(database_url)
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs).where(sync_runs.c.flow == "reconcile")).mappings().one()
    assert run["counts"]["delta"]["previous_run_id"] == night.run_id
    engine.dispose()
