"""The watch against the bundled simulator, on SQLite and Postgres: a suspension is reported,
`--apply-high` strips the roles (once), an idle poll costs one request, a restart resumes from
the cursor without skipping or repeating an event, the writer lock makes a poll yield, bad
input exits with one line, and a nightly run after watching agrees with the watch."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from okta_flex_sync.cli import app
from okta_flex_sync.clients.http import ApiError
from okta_flex_sync.jobs.nightly import run_nightly
from okta_flex_sync.jobs.watch import Watch, poll_once, run_forever
from okta_flex_sync.models.tables import (
    drift_findings,
    okta_log_events,
    repair_audit,
    role_history,
    sync_runs,
    watermarks,
)
from okta_flex_sync.settings import load_settings
from okta_flex_sync.storage import runs as runs_db
from okta_flex_sync.storage.common import utcnow
from okta_flex_sync.storage.engine import make_engine
from okta_flex_sync.storage.lock import writer_lock
from simulator.logs import LogRecord

pytestmark = pytest.mark.slow
USERS = 300


@pytest.fixture
def setup(fresh_simulator, sim_env, database_url):
    """A simulator, settings pointing at it, and a first full nightly run (the watch's baseline)."""
    sim = fresh_simulator(users=USERS, seed=11)
    sim_env(sim, database_url)
    settings = load_settings()
    outcome = run_nightly(settings, full=True)
    engine = make_engine(database_url)
    yield sim, settings, engine, outcome.run_id
    engine.dispose()


def _rows(engine, table, *where):
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).where(*where)).mappings()]


def _count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def _clean_users(sim, engine, run_id, *, with_role: str | None = None) -> list[str]:
    """Assigned ACTIVE users with a worker and no finding in the nightly run (roles in sync)."""
    flagged = {f["okta_user_id"] for f in _rows(engine, drift_findings, drift_findings.c.run_id == run_id)}
    out = []
    for uid in sim.org.assigned_user_ids():
        user, a = sim.org.user(uid), sim.org.assignment(uid)
        roles = str(user["profile"].get("userType") or "")
        if (uid in flagged or user["status"] != "ACTIVE" or a is None or sim.org.workspace.by_name(a.app_username) is None
                or (with_role and with_role not in roles.split(","))):
            continue
        out.append(uid)
    return out


def _worker(sim, uid) -> dict:
    return sim.org.workspace.by_name(sim.org.assignment(uid).app_username)


def _worker_roles(worker: dict) -> list:
    return json.loads(worker["attributes"]).get("roles")


def _log_time(sim, uid, event_type) -> datetime:
    records, n = sim.org.log.snapshot()
    ms = max(r.published_ms for r in records[:n] if r.user_id == uid and r.event_type == event_type)
    return datetime(1970, 1, 1) + timedelta(milliseconds=ms)


# --- the watch's main path --------------------------------------------------------------------

def test_suspension_is_reported_with_history_at_the_event_time(setup):
    sim, settings, engine, _ = setup
    first = poll_once(settings)
    assert (first.status, first.events, first.requests) == ("idle", 0, {"okta": 1, "taskrouter": 0})

    uid = _clean_users(sim, engine, setup[3])[0]
    sim.org.set_status(uid, "SUSPENDED")
    suspended_at = _log_time(sim, uid, "user.lifecycle.suspend")
    worker = _worker(sim, uid)

    out = poll_once(settings)
    assert out.status == "drift" and out.users == [uid] and out.events == 1
    assert [(f.kind, f.severity, f.okta_user_id, f.worker_sid, f.actual) for f in out.findings] == [
        ("deactivated_user_has_worker", "high", uid, worker["sid"], "SUSPENDED")]
    doc = json.loads(out.report_path.read_text())
    assert out.report_path == Path(settings.report_dir) / "watch" / out.run_id / "drift.json"
    assert doc["run_id"] == out.run_id and doc["summary"]["deactivated_user_has_worker"] == 1
    assert [(f["kind"], f["okta_user_id"]) for f in doc["findings"]] == [("deactivated_user_has_worker", uid)]
    assert _worker_roles(_worker(sim, uid)) == _worker_roles(worker)  # dry run: nothing written

    history = _rows(engine, role_history, role_history.c.okta_user_id == uid)
    history.sort(key=lambda r: r["valid_from"])
    assert [(r["status"], r["source"]) for r in history] == [("ACTIVE", "nightly"), ("SUSPENDED", "watch")]
    assert history[1]["valid_from"] == suspended_at == history[0]["valid_to"]
    assert history[1]["run_id"] == out.run_id
    run = _rows(engine, sync_runs, sync_runs.c.run_id == out.run_id)[0]
    assert (run["flow"], run["status"], run["counts"]["users_looked_at"]) == ("watch", "succeeded", 1)

    idle = poll_once(settings)  # the event is still inside the lag window: read again, not handled again
    assert (idle.status, idle.events, idle.users, idle.report_path) == ("idle", 0, [], None)
    assert sum(idle.requests.values()) <= 2


def test_apply_high_strips_roles_and_reverts_escalation_once(setup):
    sim, settings, engine, run_id = setup
    suspended, demoted = _clean_users(sim, engine, run_id, with_role="supervisor")[:2]
    sim.org.set_status(suspended, "SUSPENDED")
    sim.org.set_user_type(demoted, "agent")  # the worker still holds supervisor: an escalation now
    out = poll_once(settings, apply_high=True)
    kinds = {(f.okta_user_id, f.kind) for f in out.findings}
    assert {(suspended, "deactivated_user_has_worker"), (demoted, "privilege_escalation")} <= kinds
    assert out.repaired == 2
    assert _worker_roles(_worker(sim, suspended)) == []
    assert _worker_roles(_worker(sim, demoted)) == ["agent"]
    audit = _rows(engine, repair_audit, repair_audit.c.run_id == out.run_id)
    assert sorted((a["action"], a["outcome"]) for a in audit) == [("strip_roles", "applied"),
                                                                  ("update_attributes", "applied")]
    again = poll_once(settings, apply_high=True)
    assert again.events == 0 and again.repaired == 0
    assert _count(engine, repair_audit) == 2


def test_apply_high_respects_max_changes(setup):
    sim, settings, engine, run_id = setup
    users = _clean_users(sim, engine, run_id)[:2]
    for uid in users:
        sim.org.set_status(uid, "SUSPENDED")
    before = [_worker_roles(_worker(sim, uid)) for uid in users]
    with pytest.raises(Exception, match="2 workers would change, more than --max-changes 1"):
        poll_once(settings, apply_high=True, max_changes=1)
    assert [_worker_roles(_worker(sim, uid)) for uid in users] == before
    assert _count(engine, repair_audit) == 0
    # the poll still recorded and reported what it found (as failed, like a refused nightly run)
    (run,) = [r for r in _rows(engine, sync_runs, sync_runs.c.flow == "watch")]
    assert run["status"] == "failed" and "--max-changes 1" in run["error"]
    assert _count(engine, drift_findings, drift_findings.c.run_id == run["run_id"]) == 2
    assert (Path(settings.report_dir) / "watch" / run["run_id"] / "drift.json").is_file()


def test_restart_resumes_from_the_cursor_without_skipping_or_repeating(setup):
    sim, settings, engine, run_id = setup
    a, b, c = _clean_users(sim, engine, run_id)[:3]
    poll_once(settings)
    sim.org.set_status(a, "SUSPENDED")
    with Watch(settings) as w:
        assert w.poll().users == [a]
    sim.org.set_status(b, "SUSPENDED")
    with Watch(settings) as w:  # a new process: the cursor comes from the database
        assert w.poll().users == [b]

    # a poll that dies before it commits leaves the cursor and its events for the next one
    sim.org.set_status(c, "SUSPENDED")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runs_db, "set_watermark", _boom)
        with pytest.raises(RuntimeError, match="boom"):
            poll_once(settings)
    retried = poll_once(settings)
    assert retried.users == [c] and retried.events == 1
    for uid in (a, b, c):
        rows = _rows(engine, role_history, role_history.c.okta_user_id == uid, role_history.c.source == "watch")
        assert [r["status"] for r in rows] == ["SUSPENDED"], uid
    handled = _rows(engine, okta_log_events, okta_log_events.c.target_user_id.in_([a, b, c]))
    assert len(handled) == 3 and len({r["uuid"] for r in handled}) == 3
    failed = [r for r in _rows(engine, sync_runs, sync_runs.c.flow == "watch") if r["status"] == "failed"]
    assert len(failed) == 1


def _boom(*args, **kwargs):
    raise RuntimeError("boom")


def test_poll_yields_to_a_run_holding_the_writer_lock(setup):
    sim, settings, engine, run_id = setup
    uid = _clean_users(sim, engine, run_id)[0]
    sim.org.set_status(uid, "SUSPENDED")
    runs = _count(engine, sync_runs)
    with writer_lock(engine, "the nightly run"):
        out = poll_once(settings)
        assert out.status == "skipped" and "another okta-flex-sync run is writing" in out.message
        assert out.requests == {"okta": 0, "taskrouter": 0}
        result = CliRunner().invoke(app, ["watch", "--once"])
        assert result.exit_code == 0 and "poll skipped" in result.output
    assert _count(engine, sync_runs) == runs  # nothing recorded while it yielded
    assert poll_once(settings).users == [uid]  # and nothing was lost


def test_group_events_count_only_for_groups_assigned_to_the_flex_app(setup):
    sim, settings, engine, run_id = setup
    inside, outside = _clean_users(sim, engine, run_id)[:2]
    poll_once(settings)
    now_ms = int(datetime.now().timestamp() * 1000)
    sim.org.log.append(LogRecord(now_ms, "group.user_membership.remove", inside, group_id=sim.org.group_id))
    sim.org.log.append(LogRecord(now_ms, "group.user_membership.remove", outside, group_id="00gNOTFLEX0000000000"))
    out = poll_once(settings)
    assert out.users == [inside] and out.events == 2
    assert out.requests["okta"] == 1 + 1 + 2  # the log, the app's groups, the user and their app user


@pytest.mark.parametrize("full", [True, False], ids=["full-nightly", "incremental-nightly"])
def test_nightly_after_watching_finds_nothing_the_watch_got_wrong(setup, full):
    sim, settings, engine, run_id = setup
    users = _clean_users(sim, engine, run_id, with_role="supervisor")[:2] + _clean_users(sim, engine, run_id)[-3:]
    suspended, demoted, unassigned, deactivated, renamed = users
    poll_once(settings)
    sim.org.set_status(suspended, "SUSPENDED")
    sim.org.set_user_type(demoted, "agent")
    latest = {}
    for out in (poll_once(settings),):
        latest.update({uid: out for uid in out.users})
    sim.org.unassign(unassigned)
    sim.org.set_status(deactivated, "DEPROVISIONED")
    sim.org.set_profile(renamed, lastName="Watchfield")
    out = poll_once(settings)
    latest.update({uid: out for uid in out.users})
    assert set(latest) == set(users)

    (row,) = _rows(engine, role_history, role_history.c.okta_user_id == demoted, role_history.c.source == "watch")
    assert (row["roles"], row["valid_from"]) == ("agent", _log_time(sim, demoted, "user.account.update_profile"))

    nightly = run_nightly(settings, full=full)
    nightly_rows = _rows(engine, role_history, role_history.c.run_id == nightly.run_id)
    assert [r["okta_user_id"] for r in nightly_rows if r["okta_user_id"] in users] == []

    def key(f):
        return (f["kind"], f["severity"], f["worker_sid"], f["field"], f["expected"], f["actual"])

    nightly_findings = _rows(engine, drift_findings, drift_findings.c.run_id == nightly.run_id)
    for uid in users:
        watch_findings = _rows(engine, drift_findings, drift_findings.c.run_id == latest[uid].run_id)
        mine = sorted(key(f) for f in watch_findings if f["okta_user_id"] == uid)
        theirs = sorted(key(f) for f in nightly_findings if f["okta_user_id"] == uid)
        assert mine == theirs, uid
    assert {f.kind for f in latest[suspended].findings if f.okta_user_id == suspended} == {
        "deactivated_user_has_worker"}
    assert "full_name_mismatch" in {f.kind for f in latest[renamed].findings if f.okta_user_id == renamed}


# --- bad input and faults -----------------------------------------------------------------------

def test_token_without_logs_scope_exits_2_with_one_line(fresh_simulator, sim_env, monkeypatch, tmp_path):
    sim = fresh_simulator(users=40, seed=3)
    sim_env(sim)
    monkeypatch.delenv("OKTA_API_TOKEN")
    monkeypatch.setenv("OKTA_CLIENT_ID", sim.oauth_client_id)
    monkeypatch.setenv("OKTA_KEY_ID", sim.oauth_key_id)
    monkeypatch.setenv("OKTA_PRIVATE_KEY", sim.oauth_private_key_pem)
    monkeypatch.setenv("OKTA_SCOPES", "okta.users.read okta.apps.read")
    result = CliRunner().invoke(app, ["watch", "--once"])
    assert result.exit_code == 2
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("okta-flex-sync:")]
    assert "okta.logs.read" in line and "System Log" in line and "HTTP 403" in line
    engine = make_engine(f"sqlite:///{tmp_path / 'run.db'}")
    try:
        assert _count(engine, sync_runs) == 0 and _count(engine, watermarks) == 0
    finally:
        engine.dispose()


def test_gap_beyond_retention_stops_and_asks_for_a_full_nightly_run(fresh_simulator, sim_env, tmp_path):
    sim = fresh_simulator(users=40, seed=3)
    env = sim_env(sim)
    settings = load_settings()
    engine = make_engine(env["DATABASE_URL"])
    try:
        assert poll_once(settings).status == "idle"
        old = utcnow() - timedelta(days=100)
        with engine.begin() as conn:
            runs_db.set_watermark(conn, settings.okta_org_url, "watch:system-log", old, "test")
        runs = _count(engine, sync_runs)
        result = CliRunner().invoke(app, ["watch", "--once"])
        assert result.exit_code == 1
        (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("okta-flex-sync:")]
        assert "90-day retention" in line and "okta-flex-sync run --full" in line
        assert _count(engine, sync_runs) == runs
        assert _rows(engine, watermarks, watermarks.c.stream == "watch:system-log")[0]["value"] == old

        run_nightly(settings, full=True)  # the full nightly run covers the gap: the watch resumes
        assert poll_once(settings).status == "idle"
    finally:
        engine.dispose()


def test_server_errors_are_retried_within_the_poll(setup):
    sim, settings, engine, run_id = setup
    uid = _clean_users(sim, engine, run_id)[0]
    sim.org.set_status(uid, "SUSPENDED")
    sim.set_faults(fault_rate=0.3)
    try:
        out = poll_once(settings)
    finally:
        sim.set_faults(fault_rate=0.0)
    assert out.users == [uid] and [f.kind for f in out.findings] == ["deactivated_user_has_worker"]


@pytest.mark.parametrize("args, message", [
    (["watch", "--once", "--delete-orphan-workers"], "--delete-orphan-workers needs --apply-high"),
    (["watch", "--interval", "0"], "Invalid value for '--interval'"),
    (["watch", "--once", "--apply-high", "--max-changes", "-1"], "Invalid value for '--max-changes'"),
])
def test_cli_usage_errors(args, message, fresh_simulator, sim_env):
    sim_env(fresh_simulator(users=20, seed=2))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and message in result.stderr


def test_cli_once_prints_one_poll(setup):
    result = CliRunner().invoke(app, ["watch", "--once"])
    assert result.exit_code == 0, result.output
    assert "0 new event(s)" in result.output and "1 request(s)" in result.output


def test_the_loop_polls_on_after_an_outage(setup, monkeypatch):
    from okta_flex_sync.clients.okta import OktaClient

    sim, settings, engine, run_id = setup
    uid = _clean_users(sim, engine, run_id)[0]
    seen, errors, sleeps = [], [], []
    real = OktaClient.iter_log_pages

    def down_once(self, *args, **kwargs):  # the System Log is down for one poll (retries spent)
        if not errors:
            raise ApiError("Okta GET /api/v1/logs failed: HTTP 503 after 6 retries", status=503)
        return real(self, *args, **kwargs)

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 1:
            sim.org.set_status(uid, "SUSPENDED")

    monkeypatch.setattr(OktaClient, "iter_log_pages", down_once)
    run_forever(settings, interval=60, on_poll=seen.append, on_error=lambda e: errors.append(e) or True,
                sleep=sleep, polls=3)
    assert len(errors) == 1 and isinstance(errors[0], ApiError)
    assert [o.status for o in seen] == ["drift", "idle"] and seen[0].users == [uid]
    assert len(sleeps) == 2 and all(0 < s <= 60 for s in sleeps)


def test_apply_high_with_delete_orphan_workers_deletes_the_worker(setup):
    sim, settings, engine, run_id = setup
    uid = _clean_users(sim, engine, run_id)[0]
    sid = _worker(sim, uid)["sid"]
    sim.org.set_status(uid, "SUSPENDED")
    out = poll_once(settings, apply_high=True, delete_orphans=True)
    assert out.repaired == 1 and sim.org.workspace.get(sid) is None
    (audit,) = _rows(engine, repair_audit)
    assert (audit["action"], audit["outcome"], audit["worker_sid"]) == ("delete_worker", "applied", sid)


def test_a_burst_of_events_costs_requests_per_named_user_not_per_org(setup):
    sim, settings, engine, run_id = setup
    users = _clean_users(sim, engine, run_id)[:6]
    poll_once(settings)
    for uid in users:
        sim.org.set_status(uid, "SUSPENDED")
    time.sleep(0.01)  # a later millisecond: its own history row
    sim.org.set_user_type(users[0], "agent,admin")  # a second event for one of them
    out = poll_once(settings)
    assert out.users == sorted(users) and out.events == 7
    # one log read, then per user: the user and the app user; one workers listing (plus a fetch
    # when TaskRouter lists the worker without attributes)
    assert out.requests["okta"] == 1 + 2 * 6 and 6 <= out.requests["taskrouter"] <= 12
    assert sorted(f.okta_user_id for f in out.findings if f.kind == "deactivated_user_has_worker") == sorted(users)
    assert _count(engine, role_history, role_history.c.run_id == out.run_id) == 6 + 1  # users[0]: status, then roles


def test_a_hostile_event_never_stalls_the_watch(setup, monkeypatch):
    from okta_flex_sync.clients.okta import OktaClient

    sim, settings, engine, run_id = setup
    good, broken = _clean_users(sim, engine, run_id)[:2]
    poll_once(settings)
    now_ms = int(datetime.now().timestamp() * 1000)
    sim.org.log.append(LogRecord(now_ms, "user.lifecycle.suspend", "../../apps/x"))
    sim.org.set_status(broken, "SUSPENDED")
    sim.org.set_status(good, "SUSPENDED")
    real = OktaClient.get_app_user

    def refuse_one(self, app_id, user_id):  # a lasting 400 about one user
        if user_id == broken:
            raise ApiError("Okta GET /api/v1/apps/x/users/y failed: HTTP 400 E0000001", status=400)
        return real(self, app_id, user_id)

    monkeypatch.setattr(OktaClient, "get_app_user", refuse_one)
    out = poll_once(settings)
    assert out.users == sorted([good, broken]) and out.events == 3
    assert [f.okta_user_id for f in out.findings] == [good]
    run = _rows(engine, sync_runs, sync_runs.c.run_id == out.run_id)[0]
    assert run["status"] == "succeeded"
    assert [(s["id"], "HTTP 400" in s["reason"]) for s in run["counts"]["skipped_sample"]] == [(broken, True)]
    assert poll_once(settings).status == "idle"  # handled: the next poll does not stall on it
