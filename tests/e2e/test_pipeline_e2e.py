"""End to end against the bundled simulator: full run, incremental run, history, reports, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from okta_flex_sync.cli import app
from okta_flex_sync.jobs.nightly import run_nightly
from okta_flex_sync.models.records import VALID_TO_CURRENT
from okta_flex_sync.models.tables import (
    drift_findings,
    okta_users,
    role_history,
    staged_workers,
    sync_runs,
)
from okta_flex_sync.settings import load_settings
from okta_flex_sync.storage.engine import make_engine

pytestmark = pytest.mark.slow


def _history_invariants(conn) -> None:
    rows = conn.execute(select(role_history).order_by(role_history.c.okta_user_id, role_history.c.valid_from)).mappings().all()
    by_user: dict[str, list] = {}
    for r in rows:
        by_user.setdefault(r["okta_user_id"], []).append(r)
    for uid, periods in by_user.items():
        assert sum(1 for p in periods if p["valid_to"] == VALID_TO_CURRENT) == 1, uid
        for a, b in zip(periods, periods[1:]):
            assert a["valid_to"] == b["valid_from"], f"gap or overlap for {uid}"
            assert a["valid_from"] < a["valid_to"]


def test_full_then_incremental_run(fresh_simulator, sim_env, database_url, tmp_path):
    sim = fresh_simulator(users=400, seed=11)
    sim_env(sim, database_url)
    settings = load_settings()

    first = run_nightly(settings)
    assert first.counts["okta_users"] == 400
    assert first.counts["assigned_users"] == len(sim.org.assigned_user_ids())
    assert first.counts["workers"] == len(sim.org.workers())
    assert first.summary["privilege_escalation"] >= 1 and first.summary["orphan_worker"] >= 1
    doc = json.loads(Path(first.report_paths["json"]).read_text())
    assert doc["run_id"] == first.run_id and set(doc["summary"]) >= {"missing_worker", "roles_mismatch"}
    for fmt in ("csv", "html", "md"):
        assert Path(first.report_paths[fmt]).stat().st_size > 0

    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(okta_users)).scalar() == 400
        assigned_now = conn.execute(text("SELECT count(*) FROM current_roles WHERE assigned")).scalar()
        assert assigned_now == first.counts["assigned_users"] - 0  # every live assignment is tracked
        _history_invariants(conn)

    # Okta changes between nights: a promotion, an unassignment.
    assigned = sorted(sim.org.assigned_user_ids())
    promoted, removed = assigned[0], assigned[1]
    sim.org.set_user_type(promoted, "admin,agent")
    sim.org.unassign(removed)

    second = run_nightly(settings)
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs).where(sync_runs.c.run_id == second.run_id)).mappings().one()
        assert run["parameters"]["full"] is False, "second run is incremental"
        assert run["counts"]["users_pulled"] < 50
        cur = {r.okta_user_id: r for r in conn.execute(text("SELECT * FROM current_roles"))}
        assert cur[promoted].roles == "admin,agent"
        assert not cur[removed].assigned and cur[removed].roles == ""
        assert cur[removed].status == "ACTIVE"  # still in Okta: unassigned, not deleted
        changes = conn.execute(text("SELECT okta_user_id FROM role_changes WHERE run_id = :r"),
                               {"r": second.run_id}).scalars().all()
        assert set(changes) == {promoted, removed}
        _history_invariants(conn)
        rows_before = conn.execute(select(func.count()).select_from(role_history)).scalar()

    third = run_nightly(settings)  # nothing changed: history untouched
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(role_history)).scalar() == rows_before
        assert conn.execute(select(func.count()).select_from(drift_findings)
                            .where(drift_findings.c.run_id == third.run_id)).scalar() == third.counts.get("findings", sum(third.summary.values()))
    engine.dispose()


def test_cli_run_report_history(fresh_simulator, sim_env, tmp_path):
    sim = fresh_simulator(users=200, seed=3)
    env = sim_env(sim)
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--no-prefect"])
    assert result.exit_code == 0, result.output
    assert "Drift summary" in result.output and "privilege_escalation" in result.output
    assert env["OKTA_API_TOKEN"] not in result.output

    result = runner.invoke(app, ["run", "--no-prefect", "--fail-on", "high"])
    assert result.exit_code == 3, result.output

    result = runner.invoke(app, ["report", "--format", "md", "--stdout"])
    assert result.exit_code == 0 and "privilege" in result.output and "Logging error" not in result.output

    login = sim.org.user(sorted(sim.org.assigned_user_ids())[0])["profile"]["login"]
    result = runner.invoke(app, ["history", login.upper(), "--as-of", "2999-01-01"])
    assert result.exit_code == 0, result.output
    assert "as of 2999-01-01" in result.output

    result = runner.invoke(app, ["history", "nobody@example.com"])
    assert result.exit_code == 1 and "no history" in result.output


def test_cli_run_fails_fast_with_bad_token(fresh_simulator, sim_env, monkeypatch):
    sim = fresh_simulator(users=50, seed=1)
    sim_env(sim)
    monkeypatch.setenv("OKTA_API_TOKEN", "00WRONG-token-value-123456")
    result = CliRunner().invoke(app, ["run", "--no-prefect"])
    assert result.exit_code == 1
    assert "00WRONG-token-value-123456" not in result.output
    assert "401" in result.output or "auth" in result.output.lower()
    assert sim.stats()["requests"].get("users", 0) <= 3, "no retry storm on 401"


def test_cli_missing_setting_is_one_line(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for k in ("OKTA_ORG_URL", "OKTA_API_TOKEN", "OKTA_FLEX_APP_ID"):
        monkeypatch.delenv(k, raising=False)
    result = CliRunner().invoke(app, ["run", "--no-prefect"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "OKTA_ORG_URL" in result.output


def test_incremental_run_reuses_unchanged_null_attribute_workers_only(fresh_simulator, sim_env, database_url):
    """TaskRouter lists some workers with `attributes: null`.  A full run fetches each; the next
    (incremental) run reuses the stored copy of those unchanged since, and fetches a changed one
    again, so its new attributes are reconciled (here: an agent quietly made admin)."""
    sim = fresh_simulator(users=300, seed=31, null_attributes_fraction=0.3)
    sim_env(sim, database_url)
    settings = load_settings()
    nulls = set(sim.org.planted["null_attributes"])
    assert len(nulls) > 10

    before = sim.stats()["requests"].get("taskrouter", 0)
    first = run_nightly(settings, full=True)
    full_requests = sim.stats()["requests"]["taskrouter"] - before
    assert full_requests >= len(nulls)  # every null row fetched one by one

    # An agent's worker that lists null attributes, matched to an active user with no drift.
    engine = make_engine(database_url)
    with engine.connect() as conn:
        flagged = set(conn.execute(select(drift_findings.c.worker_sid)
                                   .where(drift_findings.c.run_id == first.run_id)).scalars())
        target = conn.execute(
            select(staged_workers.c.worker_sid, staged_workers.c.attributes_raw)
            .where(staged_workers.c.run_id == first.run_id, staged_workers.c.worker_sid.in_(sorted(nulls - flagged)),
                   staged_workers.c.roles == "agent")
            .order_by(staged_workers.c.worker_sid).limit(1)).one()
    engine.dispose()
    attrs = json.loads(target.attributes_raw)
    attrs["roles"] = ["agent", "admin"]
    sim.org.update_worker(target.worker_sid, attributes=json.dumps(attrs))

    before = sim.stats()["requests"]["taskrouter"]
    second = run_nightly(settings)
    incremental_requests = sim.stats()["requests"]["taskrouter"] - before
    assert incremental_requests == full_requests - len(nulls) + 1  # the pages, plus the changed worker

    engine = make_engine(database_url)
    with engine.connect() as conn:
        kinds = set(conn.execute(select(drift_findings.c.kind).where(
            drift_findings.c.run_id == second.run_id, drift_findings.c.worker_sid == target.worker_sid)).scalars())
    engine.dispose()
    assert "privilege_escalation" in kinds
