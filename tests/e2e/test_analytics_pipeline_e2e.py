"""Against the bundled simulator: after a promotion and an unassignment between two nightly runs,
`roles changes` lists exactly those (first observations only on request) and the snapshot
before and after the second run tells the two states apart, on SQLite and Postgres."""
from __future__ import annotations

import csv
import io
import time

import pytest
from typer.testing import CliRunner

from okta_flex_sync.analytics import frames
from okta_flex_sync.analytics.timeparse import format_instant, utcnow
from okta_flex_sync.cli import app
from okta_flex_sync.jobs.nightly import run_nightly
from okta_flex_sync.settings import load_settings
from okta_flex_sync.storage.engine import make_engine

pytestmark = pytest.mark.slow


def test_changes_between_two_nights(fresh_simulator, sim_env, database_url):
    sim = fresh_simulator(users=200, seed=5)
    sim_env(sim, database_url)
    settings = load_settings()
    run_nightly(settings)
    between = utcnow()
    time.sleep(0.01)  # Okta's lastUpdated (the change's time) has milliseconds only
    assigned = sorted(sim.org.assigned_user_ids())
    promoted, removed = assigned[0], assigned[1]
    sim.org.set_user_type(promoted, "admin,agent")
    sim.org.unassign(removed)
    run_nightly(settings)

    engine = make_engine(database_url)
    try:
        changes = frames.changes(engine, between, utcnow())
        assert sorted(zip(changes.okta_user_id, changes.change_type)) == sorted(
            [(promoted, "roles"), (removed, "assignment"), (removed, "roles")])
        row = changes[changes.okta_user_id == promoted].iloc[0]
        assert row.roles_after == ["admin", "agent"]
        first_seen = frames.changes(engine, "2000-01-01", between, include_first_seen=True)
        assert set(first_seen.change_type) == {"first_seen"}
        assert len(first_seen) == len(frames.snapshot(engine, between))
        before = frames.snapshot(engine, between).set_index("okta_user_id")
        after = frames.snapshot(engine).set_index("okta_user_id")
        assert before.loc[removed].assigned and not after.loc[removed].assigned
        assert after.loc[promoted].roles == ["admin", "agent"] != before.loc[promoted].roles
    finally:
        engine.dispose()

    result = CliRunner().invoke(app, ["roles", "changes", "--from", format_instant(between), "--format", "csv"])
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted((r["okta_user_id"], r["change_type"]) for r in rows) == sorted(
        [(promoted, "roles"), (removed, "assignment"), (removed, "roles")])
