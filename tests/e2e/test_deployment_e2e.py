"""Deploy from prefect.yaml to a real local Prefect server and run the deployments as an admin would.

A throw-away `prefect server start` (own PREFECT_HOME), the process work pool, `prefect deploy
--all` from the repository root, and a `prefect worker start` in another directory, pointed at
the bundled simulator and a temp SQLite database; then `prefect deployment run ... --watch` for
`nightly-sync` and `backfill`.  The deployer's OKTA_FLEX_SYNC_HOME is bogus and the worker has
none: the pull step must resolve the project on the worker, at run time.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from okta_flex_sync.models.tables import role_history, sync_runs
from okta_flex_sync.storage.engine import make_engine

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "okta-flex-sync"
USERS = 150
logger = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_env(home: Path, api_url: str) -> dict[str, str]:
    """This process's environment minus any Prefect or okta-flex-sync setting, plus an isolated Prefect."""
    drop = ("PREFECT_", "OKTA_", "TWILIO_", "TASKROUTER_", "DATABASE_URL", "REPORT_DIR", "LOCK_WAIT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=api_url, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_ENABLED="false", PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_CLI_COLORS="false",
               PREFECT_CLI_WRAP_LINES="false",
               # services this test does not need (the scheduler would only queue tomorrow's 02:00 runs)
               PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false", PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED="false",
               PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED="false",
               PREFECT_SERVER_SERVICES_FOREMAN_ENABLED="false")
    return env


def _start(args: list[str], env: dict, log: Path, cwd: Path) -> subprocess.Popen:
    out = open(log, "wb")  # noqa: SIM115 - closed with the process in _stop
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_file = out
    return proc


def _stop(proc: subprocess.Popen) -> None:
    """End the process group this test started (the worker's flow-run children with it)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    if getattr(proc, "log_file", None) is not None:
        proc.log_file.close()


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


@pytest.fixture
def prefect_server(tmp_path):
    """A local Prefect server on a free port with its own PREFECT_HOME; yields its base env."""
    port = _free_port()
    env = _base_env(tmp_path / "prefect-home", f"http://127.0.0.1:{port}/api")
    log = tmp_path / "server.log"
    proc = _start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log, tmp_path)
    try:
        started = time.monotonic()
        deadline = started + 120  # ~15 s on an idle box; far more when the box is busy
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited with {proc.returncode}:\n{_tail(log)}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    logger.info("prefect server up in %.1fs", time.monotonic() - started)
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prefect server did not answer within 120 s:\n{_tail(log)}")
            time.sleep(0.5)
        yield env
    finally:
        _stop(proc)


@contextlib.contextmanager
def _client(env: dict):
    """A Python client on this test's server (the session's Prefect test harness stays untouched)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        yield client


def _create_process_pool(env: dict) -> None:
    """What `prefect work-pool create okta-flex-sync --type process` does, without another CLI start."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    with _client(env) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process",
                                               base_job_template=ProcessWorker.get_default_base_job_template()))


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _admin(args: list[str], env: dict) -> subprocess.Popen:
    """A `prefect ...` command as an admin types it, started now, read with `_finish`."""
    return subprocess.Popen([PREFECT, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


@pytest.fixture
def processes():
    """Every long-running subprocess the test starts, stopped (with its children) at teardown."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        _stop(proc)


def test_deploy_from_prefect_yaml_and_run_as_an_admin(prefect_server, processes, fresh_simulator, tmp_path):
    from okta_flex_sync.storage.common import utcnow

    env = prefect_server
    sim = fresh_simulator(users=USERS, seed=21)
    _create_process_pool(env)

    # The worker runs elsewhere: another directory, no OKTA_FLEX_SYNC_HOME; the deployer's is bogus.
    worker_env = {**env, **sim.env(), "DATABASE_URL": f"sqlite:///{tmp_path / 'worker.db'}",
                  "REPORT_DIR": str(tmp_path / "reports")}
    worker_log = tmp_path / "worker.log"
    (tmp_path / "elsewhere").mkdir()
    processes.append(_start([PREFECT, "worker", "start", "--pool", POOL], worker_env, worker_log, tmp_path / "elsewhere"))
    deploy = _admin(["deploy", "--all", "--no-prompt"], {**env, "OKTA_FLEX_SYNC_HOME": "/nonexistent/deployer"})
    processes.append(deploy)
    code, out = _finish(deploy, timeout=120)
    assert code == 0, out

    today = utcnow().date()
    start = today - timedelta(days=2)
    assert (ROOT / "okta_flex_sync" / "flows" / "backfill.py").exists(), "okta_flex_sync/flows/backfill.py:backfill must exist for the backfill deployment"
    # Both at once, as two admins might: the writer limit runs them one after the other.
    nightly = _admin(["deployment", "run", "nightly-sync/nightly-sync", "--watch", "--watch-timeout", "150"], env)
    backfill = _admin(["deployment", "run", "backfill/backfill", "-p", f"start={start}", "-p", f"end={today}",
                       "--watch", "--watch-timeout", "150"], env)
    processes.extend([nightly, backfill])
    for name, proc in (("nightly-sync", nightly), ("backfill", backfill)):
        code, out = _finish(proc, timeout=180)
        assert code == 0, f"{name}: {out}\nworker log:\n{_tail(worker_log)}"

    engine = make_engine(worker_env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            # a scheduled `watch` poll may run meanwhile (every 5 minutes); it is not this test's subject
            runs = {r["flow"]: r for r in conn.execute(select(sync_runs).where(sync_runs.c.flow != "watch")).mappings()}
            history_rows = conn.execute(select(func.count()).select_from(role_history)).scalar()
    finally:
        engine.dispose()
    assert runs.keys() == {"nightly-sync", "backfill"}
    assert all(r["status"] == "succeeded" for r in runs.values()), {k: r["error"] for k, r in runs.items()}
    assert runs["nightly-sync"]["counts"]["okta_users"] == USERS
    assert runs["backfill"]["parameters"]["start"] == start.isoformat()
    first, second = sorted(runs.values(), key=lambda r: r["started_at"])
    assert first["finished_at"] <= second["started_at"], "one writer at a time"
    assert history_rows >= len(sim.org.assigned_user_ids())
    assert list((tmp_path / "reports").glob("*/drift.html")), "reports go where the worker's REPORT_DIR says"

    with _client(env) as client:
        deployments = {d.name: d for d in client.read_deployments()}
        flow_runs = {r.name: r for r in client.read_flow_runs()}
    assert set(deployments) == {"nightly-sync", "backfill", "reconcile", "watch"}
    (watch_schedule,) = deployments["watch"].schedules
    assert watch_schedule.schedule.interval == timedelta(seconds=300) and watch_schedule.active
    assert deployments["watch"].parameters == {"apply_high": False}
    (schedule,) = deployments["nightly-sync"].schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "UTC")
    assert deployments["nightly-sync"].parameters == {"apply": False, "full": False, "allow_shrink": False}
    assert not deployments["backfill"].schedules
    assert [next(iter(step)) for step in deployments["nightly-sync"].pull_steps] == ["okta_flex_sync.flows.common.project_directory"]
    assert {f"nightly-sync {today}", f"backfill {start}..{today}"} <= set(flow_runs), set(flow_runs)
    assert all(r.state.is_completed() for name, r in flow_runs.items() if name != "watch")
