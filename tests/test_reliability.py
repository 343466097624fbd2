"""A bad night must not lose or corrupt anything: faults, kills, outages, two runs at once, bad
credentials.  Everything runs against the bundled simulator on SQLite and Postgres; kills are
real SIGKILLs of a subprocess.

What "unchanged" means here: the published tables (`okta_users`, `role_history`,
`drift_findings`, `watermarks`, `repair_audit`) hold exactly the rows they held before.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from models.tables import (
    VALID_TO_CURRENT,
    drift_findings,
    okta_users,
    raw_pages,
    repair_audit,
    role_history,
    staged_app_assignments,
    staged_okta_users,
    staged_workers,
    sync_runs,
    watermarks,
)
from okta_flex_sync.cli import EXIT_FAILED, EXIT_LOCKED, app
from okta_flex_sync.db import RunLockedError, make_engine, writer_lock
from okta_flex_sync.pipeline import run_nightly
from okta_flex_sync.settings import load_settings
from tasks.sync import ShrinkGuardError

pytestmark = pytest.mark.slow

PUBLISHED = (okta_users, role_history, drift_findings, watermarks, repair_audit)
STAGED = (staged_okta_users, staged_app_assignments, staged_workers)
LOCKED_MESSAGE = "another okta-flex-sync run is writing"
# sync_runs.counts that depend only on the data (not on request counts or timings).
COMPARABLE_COUNTS = ("okta_users", "assigned_users", "workers", "users_pulled", "history_rows_written", "findings",
                     "skipped_records", "skipped_sample", "pages", "summary", "roles")


# --- helpers ------------------------------------------------------------------------------

def _rows(conn, table, *, exclude=(), where=None) -> list[tuple]:
    """All rows of a table as tuples (without the excluded columns), in a stable order."""
    cols = [c for c in table.columns if c.name not in exclude]
    q = select(*cols)
    if where is not None:
        q = q.where(where)
    return sorted((tuple(r) for r in conn.execute(q)), key=repr)


def published_snapshot(url: str) -> dict[str, list[tuple]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: _rows(conn, t) for t in PUBLISHED}
    finally:
        engine.dispose()


def comparable_state(url: str, run_id: str) -> dict[str, list[tuple]]:
    """What two runs over the same org must agree on, without ids, run ids and observation times."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            state = {t.name: _rows(conn, t, exclude={"run_id"}, where=t.c.run_id == run_id) for t in STAGED}
            # first_seen_* name the run (each of the compared runs is the first of its database).
            state["drift_findings"] = _rows(conn, drift_findings,
                                            exclude={"id", "run_id", "first_seen_run_id", "first_seen_at"},
                                            where=drift_findings.c.run_id == run_id)
            state["okta_users"] = _rows(conn, okta_users, exclude={"run_id"})
            state["role_history"] = sorted(
                ((*r[:-1], r[-1] == VALID_TO_CURRENT) for r in conn.execute(select(
                    role_history.c.okta_user_id, role_history.c.login, role_history.c.app_username,
                    role_history.c.status, role_history.c.assigned, role_history.c.roles, role_history.c.full_name,
                    role_history.c.email, role_history.c.valid_to))), key=repr)
            counts = conn.execute(select(sync_runs.c.counts).where(sync_runs.c.run_id == run_id)).scalar_one()
            state["counts"] = {k: counts.get(k) for k in COMPARABLE_COUNTS}
            return state
    finally:
        engine.dispose()


def assert_history_valid(url: str) -> None:
    """One current row per user, rows of a user abut (no gaps, no overlaps), no repeated state."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(role_history).order_by(role_history.c.okta_user_id, role_history.c.valid_from,
                                                              role_history.c.id)).mappings().all()
    finally:
        engine.dispose()
    by_user: dict[str, list] = {}
    for r in rows:
        by_user.setdefault(r["okta_user_id"], []).append(r)
    keys = ("login", "app_username", "status", "assigned", "roles", "full_name", "email")
    for uid, periods in by_user.items():
        assert sum(p["valid_to"] == VALID_TO_CURRENT for p in periods) == 1, uid
        for a, b in pairwise(periods):
            assert a["valid_to"] == b["valid_from"], f"gap or overlap in the history of {uid}"
            assert [a[k] for k in keys] != [b[k] for k in keys], f"duplicate period for {uid}"


def run_statuses(url: str) -> dict[str, str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(select(sync_runs.c.run_id, sync_runs.c.status)).all())
    finally:
        engine.dispose()


def leftovers(url: str, run_id: str) -> dict[str, int]:
    """Rows a run left in landing/findings tables (a discarded run must leave none)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: conn.execute(select(func.count()).select_from(t).where(t.c.run_id == run_id)).scalar()
                    for t in (*STAGED, raw_pages, drift_findings)}
    finally:
        engine.dispose()


def change_org(sim) -> set[str]:
    """Between nights: a promotion, an unassignment and a rename; returns the users changed."""
    assigned = sorted(sim.org.assigned_user_ids())
    promoted, removed, renamed = assigned[3], assigned[4], assigned[5]
    sim.org.set_user_type(promoted, "admin,agent")
    sim.org.unassign(removed)
    sim.org.set_profile(renamed, lastName="Renamed-Tonight")
    return {promoted, removed, renamed}


def small_pages(settings, *, users: int = 10, assignments: int = 10, workers: int = 10):
    """Okta and TaskRouter clients that ask for small pages, so a run makes many requests."""
    from tasks.okta_client import OktaClient
    from tasks.taskrouter_client import TaskRouterClient

    okta, tr = OktaClient.from_settings(settings), TaskRouterClient.from_settings(settings)
    user_pages, app_pages, worker_pages = okta.iter_user_pages, okta.iter_app_user_pages, tr.iter_worker_pages
    okta.iter_user_pages = lambda **kw: user_pages(**{**kw, "limit": users})
    okta.iter_app_user_pages = lambda app_id, **kw: app_pages(app_id, **{**kw, "limit": assignments})
    tr.iter_worker_pages = lambda **kw: worker_pages(page_size=workers)
    return {"okta": okta, "taskrouter": tr}


# --- faults -------------------------------------------------------------------------------

def test_faulty_night_produces_exactly_what_a_clean_night_does(fresh_simulator, sim_env, database_url, tmp_path):
    """5% of requests fail (429, 500, 503 + Retry-After, slow, dropped): same staging, history, findings."""
    sim = fresh_simulator(users=500, seed=67)  # seed 67: every fault kind falls on this run's requests
    sim_env(sim, database_url)
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    clean = run_nightly(load_settings(database_url=clean_url), **small_pages(load_settings()))

    sim.set_faults(fault_rate=0.05)
    sim.reset_stats()
    faulty_settings = load_settings()
    faulty = run_nightly(faulty_settings, **small_pages(faulty_settings))
    stats = sim.stats()
    kinds = {code for code in (429, 500, 503) if stats["status"].get(code)}
    kinds |= {"drop"} if stats["dropped_connections"] else set()
    assert stats["faults"] >= 4 and len(kinds) >= 3, f"too few faults to prove anything: {stats}"

    assert comparable_state(database_url, faulty.run_id) == comparable_state(clean_url, clean.run_id)
    assert_history_valid(database_url)


# --- killed runs --------------------------------------------------------------------------

# Run in a subprocess: optionally wrap one `tasks.store` function so that, after its n-th call
# returns (still inside the run's transaction), the process announces it and waits to be killed.
_CHILD = r"""
import os, sys, time
from pathlib import Path
from tasks import store
hook = os.environ.get("KILL_HOOK")
if hook:
    name, nth = hook.split(":")
    original, calls = getattr(store, name), []
    def hooked(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == int(nth):
            Path(os.environ["KILL_MARKER"]).write_text("ready")
            time.sleep(120)
        return result
    setattr(store, name, hooked)
from okta_flex_sync.pipeline import run_nightly
from okta_flex_sync.settings import load_settings
run_nightly(load_settings(), full=bool(os.environ.get("KILL_FULL")))
"""

# (what is happening when the kill lands, store function to stop in, its n-th call, full pull)
KILL_POINTS = [
    ("pull", None, 0, True),  # natural timing: killed once the first pages have landed
    ("load", "refresh_mirror", 1, False),  # in the publish transaction: mirror replaced
    ("history", "apply_history", 1, False),  # ... history rows closed and opened
    ("before-commit", "prune", 1, False),  # ... findings, watermark and run status written
]


def _running_pages(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(raw_pages).join(
                sync_runs, sync_runs.c.run_id == raw_pages.c.run_id).where(sync_runs.c.status == "running")).scalar()
    finally:
        engine.dispose()


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before it could be killed: "
                                 f"{proc.stderr.read().decode(errors='replace')[-2000:]}")
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.02)


@pytest.mark.parametrize("point,hook,nth,full", KILL_POINTS, ids=[p[0] for p in KILL_POINTS])
def test_killed_run_changes_nothing_and_next_run_recovers(point, hook, nth, full, fresh_simulator, sim_env,
                                                          database_url, tmp_path, monkeypatch):
    sim = fresh_simulator(users=300, seed=21)
    env = sim_env(sim, database_url)
    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"  # the same nights, never killed
    run_nightly(load_settings())
    run_nightly(load_settings(database_url=reference_url))
    changed = change_org(sim)
    before = published_snapshot(database_url)

    marker = tmp_path / "at-kill-point"
    child_env = {**os.environ, **env, "KILL_MARKER": str(marker)}
    if hook:
        child_env["KILL_HOOK"] = f"{hook}:{nth}"
    if full:
        child_env["KILL_FULL"] = "1"
        sim.set_faults(latency_ms=600)  # a full pull of 300 users then takes ~2 s: time to kill it mid-way
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], env=child_env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(marker.exists if hook else (lambda: _running_pages(database_url) > 0), proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    sim.set_faults(latency_ms=0)

    assert published_snapshot(database_url) == before, f"a run killed during {point} changed published data"
    killed = [r for r, status in run_statuses(database_url).items() if status == "running"]
    assert len(killed) == 1

    monkeypatch.setenv("LOCK_WAIT_SECONDS", "15")  # Postgres may take a moment to notice the dead session
    recovery = run_nightly(load_settings())
    reference = run_nightly(load_settings(database_url=reference_url))

    assert run_statuses(database_url)[killed[0]] == "abandoned"
    assert leftovers(database_url, killed[0]) == {t.name: 0 for t in (*STAGED, raw_pages, drift_findings)}
    assert_history_valid(database_url)
    got, want = comparable_state(database_url, recovery.run_id), comparable_state(reference_url, reference.run_id)
    assert got == want, "recovering from a kill must end exactly where an uninterrupted night ends"
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rewritten = set(conn.execute(select(role_history.c.okta_user_id)
                                     .where(role_history.c.run_id == recovery.run_id)).scalars())
    engine.dispose()
    assert rewritten == changed, "each change is written once, by the run that completed"


# --- outage guard -------------------------------------------------------------------------

def _shrink(sim, what: str) -> None:
    """Make Okta or TaskRouter return about half of what it returned last night."""
    if what == "assignments":
        for uid in sorted(sim.org.assigned_user_ids())[::2]:
            sim.org.unassign(uid)
    elif what == "workers":
        for sid in sim.org.worker_sids()[::2]:
            sim.org.delete_worker(sid)
    else:
        ids = sorted({sim.org.user_id(i) for i in range(sim.config.users)} - set(sim.org.assigned_user_ids()))
        for uid in ids[: sim.config.users // 2]:
            sim.org.delete_user(uid)


@pytest.mark.parametrize("what,percent,allow,aborts", [
    ("assignments", 20, False, True),   # half the Flex assignments vanish: an outage, abort
    ("workers", 20, False, True),       # half the workers vanish
    ("users", 20, False, True),         # a full pull returns half the org
    ("assignments", 60, False, False),  # the threshold is a setting: a 50% drop is within 60%
    ("assignments", 20, True, False),   # --allow-shrink: the operator says the drop is real
])
def test_sudden_drop_aborts_before_history_or_repair(what, percent, allow, aborts, fresh_simulator, sim_env,
                                                     database_url, monkeypatch):
    sim = fresh_simulator(users=300, seed=8)
    sim_env(sim, database_url)
    monkeypatch.setenv("SHRINK_GUARD_PERCENT", str(percent))
    run_nightly(load_settings(), full=True)
    before = published_snapshot(database_url)
    _shrink(sim, what)
    sim.reset_stats()

    options = {"full": what == "users", "allow_shrink": allow}
    if not aborts:
        outcome = run_nightly(load_settings(), **options)
        assert run_statuses(database_url)[outcome.run_id] == "succeeded"
        assert published_snapshot(database_url)["role_history"] != before["role_history"]
        return
    with pytest.raises(ShrinkGuardError) as err:
        run_nightly(load_settings(), apply=True, max_changes=10_000, **options)
    message = str(err.value)
    assert "fell from" in message and f"SHRINK_GUARD_PERCENT={percent}" in message and "--allow-shrink" in message
    assert published_snapshot(database_url) == before, "history and mirror untouched"
    stats = sim.stats()
    assert stats["worker_updates"] == stats["worker_deletes"] == stats["worker_creates"] == 0, "no repair"
    aborted = [r for r, s in run_statuses(database_url).items() if s == "aborted"]
    assert len(aborted) == 1 and leftovers(database_url, aborted[0])["staged_okta_users"] == 0


def test_cli_reports_the_outage_in_one_line(fresh_simulator, sim_env):
    sim = fresh_simulator(users=200, seed=9)
    sim_env(sim)
    runner = CliRunner()
    assert runner.invoke(app, ["run", "--no-prefect"]).exit_code == 0
    _shrink(sim, "assignments")
    result = runner.invoke(app, ["run", "--no-prefect", "--apply"])
    assert result.exit_code == EXIT_FAILED
    lines = [ln for ln in result.output.splitlines() if ln.startswith("okta-flex-sync:")]
    assert len(lines) == 1 and "assigned_users fell from" in lines[0] and "--allow-shrink" in lines[0], result.output
    assert "Traceback" not in result.output
    assert runner.invoke(app, ["run", "--no-prefect", "--allow-shrink"]).exit_code == 0


# --- two runs at once ---------------------------------------------------------------------

def _cli(env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "okta_flex_sync.cli", "run", "--no-prefect"], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _two_cli_runs(sim, env: dict, cwd: Path, wait: float) -> list[tuple[int, str, str]]:
    sim.set_faults(latency_ms=200)  # each run takes a second or two: the two surely overlap
    child_env = {**os.environ, **env, "LOCK_WAIT_SECONDS": str(wait)}
    procs = [_cli(child_env, cwd) for _ in range(2)]
    return [(p.wait(timeout=120), *p.communicate()) for p in procs]


def test_two_runs_started_together(fresh_simulator, sim_env, database_url, tmp_path):
    """One does the work; the other exits 4 with one clear line and touches nothing."""
    sim = fresh_simulator(users=200, seed=4)
    env = sim_env(sim, database_url)
    results = _two_cli_runs(sim, env, tmp_path, wait=0)
    assert sorted(code for code, _, _ in results) == [0, EXIT_LOCKED], results
    err = next(err for code, _, err in results if code == EXIT_LOCKED)
    assert err.strip().splitlines()[-1].startswith(f"okta-flex-sync: {LOCKED_MESSAGE}") and "Traceback" not in err
    assert list(run_statuses(database_url).values()) == ["succeeded"]
    assert_history_valid(database_url)


def test_second_run_waits_its_turn_on_a_new_database(fresh_simulator, sim_env, tmp_path):
    """LOCK_WAIT_SECONDS: the second run waits, then runs incrementally; the first night's
    schema creation happens under the lock, so the two never migrate at once."""
    sim = fresh_simulator(users=200, seed=4)
    url = f"sqlite:///{tmp_path / 'first-night.db'}"
    env = sim_env(sim, url)
    results = _two_cli_runs(sim, env, tmp_path, wait=60)
    assert [code for code, _, _ in results] == [0, 0], results
    engine = make_engine(url)
    with engine.connect() as conn:
        runs = conn.execute(select(sync_runs.c.status, sync_runs.c.parameters).order_by(sync_runs.c.started_at)).all()
    engine.dispose()
    assert [(status, params["full"]) for status, params in runs] == [("succeeded", True), ("succeeded", False)]
    assert_history_valid(url)


def test_second_run_exits_4_while_the_lock_is_held(fresh_simulator, sim_env, database_url):
    sim = fresh_simulator(users=50, seed=2)
    sim_env(sim, database_url)
    settings = load_settings()
    engine = make_engine(database_url)
    try:
        with writer_lock(engine, settings.okta_org_url):
            result = CliRunner().invoke(app, ["run", "--no-prefect"])
            with pytest.raises(RunLockedError):
                run_nightly(settings)
    finally:
        engine.dispose()
    assert result.exit_code == EXIT_LOCKED
    assert result.output.strip().splitlines()[-1].startswith(f"okta-flex-sync: {LOCKED_MESSAGE}")
    assert sim.stats()["requests"] == {}, "a locked-out run calls no API"
    assert run_statuses(database_url) == {}


def test_concurrent_runs_in_one_process(fresh_simulator, sim_env, database_url, monkeypatch):
    """Threads race for the lock too (the flock is per open file, the advisory lock per session)."""
    sim = fresh_simulator(users=150, seed=6)
    sim_env(sim, database_url)
    sim.set_faults(latency_ms=150)
    start = threading.Barrier(3)
    outcomes: list = []

    def night():
        start.wait()
        try:
            outcomes.append(run_nightly(load_settings()).run_id)
        except RunLockedError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=night) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    won = [o for o in outcomes if isinstance(o, str)]
    assert len(outcomes) == 3 and len(won) == 1, outcomes
    assert run_statuses(database_url) == {won[0]: "succeeded"}
    assert_history_valid(database_url)


# --- bad credentials ----------------------------------------------------------------------

def _wrong_private_key(sim) -> dict:
    from simulator.ids import rsa_private_key_pem

    return {"OKTA_CLIENT_ID": sim.oauth_client_id, "OKTA_PRIVATE_KEY": rsa_private_key_pem(sim.config.seed + 1),
            "OKTA_API_TOKEN": ""}


@pytest.mark.parametrize("case,overrides,expect", [
    ("okta token", lambda sim: {"OKTA_API_TOKEN": "00WRONGtoken-expired-abcdef123456"}, "401"),
    ("twilio auth token", lambda sim: {"TWILIO_AUTH_TOKEN": "wrongauthtoken0000000000000000000"}, "401"),
    ("oauth key not registered", _wrong_private_key, "401"),
    ("unknown workspace", lambda sim: {"TWILIO_WORKSPACE_SID": "WS" + "0" * 32}, "404"),
])
def test_bad_credentials_fail_fast_in_one_line(case, overrides, expect, fresh_simulator, sim_env, database_url,
                                               monkeypatch):
    sim = fresh_simulator(users=300, seed=12)
    sim_env(sim, database_url)
    bad = overrides(sim)
    for k, v in bad.items():
        monkeypatch.setenv(k, v)
    started = time.monotonic()
    result = CliRunner().invoke(app, ["run", "--no-prefect"])
    elapsed = time.monotonic() - started

    assert result.exit_code == EXIT_FAILED, result.output
    assert elapsed < 5, f"{case}: took {elapsed:.1f} s to fail"
    final = [ln for ln in result.output.splitlines() if ln.startswith("okta-flex-sync:")]
    assert len(final) == 1 and expect in final[0], result.output
    assert "Traceback" not in result.output
    for value in bad.values():  # no credential (nor a line of the PEM key) is echoed
        for part in value.splitlines():
            if len(part) > 16 and not part.startswith(("WS", "0oa", "-----")):
                assert part not in result.output
    stats = sim.stats()
    assert sum(stats["requests"].values()) <= 10, f"retry storm: {stats}"
    assert stats["status"].get(int(expect), 0) <= 3, f"a {expect} was retried: {stats}"
    assert published_snapshot(database_url) == {t.name: [] for t in PUBLISHED}
    assert sorted(run_statuses(database_url).values()) == ["failed"]


def test_runs_raise_gc_thresholds_and_restore_them():
    import gc

    from okta_flex_sync.pipeline import fewer_gc_passes

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with fewer_gc_passes((50_000, 20, 100)):
            assert gc.get_threshold() == (50_000, 20, 100)
        assert gc.get_threshold() == (700, 10, 10)
        gc.set_threshold(100_000, 5, 200)  # already higher: never lowered
        with fewer_gc_passes((50_000, 20, 100)):
            assert gc.get_threshold() == (100_000, 20, 200)
        assert gc.get_threshold() == (100_000, 5, 200)
    finally:
        gc.set_threshold(*before)
