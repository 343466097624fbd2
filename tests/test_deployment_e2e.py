"""Deploy from prefect.yaml to a real local Prefect server and run the deployments as an admin would.

A throw-away `prefect server start` (own PREFECT_HOME), the process work pool, `prefect deploy
--all` from the repository root, and a `prefect worker start` in another directory, pointed at
the bundled simulator and a temp SQLite database; then `prefect deployment run ... --watch` for
`nightly-sync` and `backfill`.  The deployer's OKTA_FLEX_SYNC_HOME is bogus and the worker has
none: the pull step must resolve the project on the worker, at run time.
"""
from __future__ import annotations

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

from models.tables import role_history, sync_runs
from okta_flex_sync.db import make_engine

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "okta-flex-sync"
USERS = 150


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
               PREFECT_CLI_WRAP_LINES="false")
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
    proc.log_file.close()


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _prefect(args: list[str], env: dict, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PREFECT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def prefect_server(tmp_path):
    """A local Prefect server on a free port with its own PREFECT_HOME; yields its base env."""
    port = _free_port()
    env = _base_env(tmp_path / "prefect-home", f"http://127.0.0.1:{port}/api")
    log = tmp_path / "server.log"
    proc = _start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log, tmp_path)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited with {proc.returncode}:\n{_tail(log)}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prefect server did not answer within 90 s:\n{_tail(log)}")
            time.sleep(0.5)
        yield env
    finally:
        _stop(proc)


@pytest.fixture
def worker(prefect_server, fresh_simulator, tmp_path):
    """Start a process worker for the pool (once the pool exists), pointed at a simulator and a temp
    SQLite database, from a directory that is not the checkout."""
    started = []

    def start(sim) -> dict:
        env = {**prefect_server, **sim.env(), "DATABASE_URL": f"sqlite:///{tmp_path / 'worker.db'}",
               "REPORT_DIR": str(tmp_path / "reports")}
        where = tmp_path / "worker-cwd"
        where.mkdir()
        started.append(_start([PREFECT, "worker", "start", "--pool", POOL, "--type", "process"], env,
                              tmp_path / "worker.log", where))
        return env

    yield start
    for proc in started:
        _stop(proc)


def _read_deployments(env: dict) -> dict:
    """Deployments and their flow runs, read through the Python client against this server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
        runs = {r.name: r for r in client.read_flow_runs()}
    return {"deployments": deployments, "runs": runs}


def test_deploy_from_prefect_yaml_and_run_as_an_admin(prefect_server, worker, fresh_simulator, tmp_path):
    sim = fresh_simulator(users=USERS, seed=21)
    env = prefect_server

    made = _prefect(["work-pool", "create", POOL, "--type", "process"], env)
    assert made.returncode == 0, made.stdout + made.stderr

    deployed = _prefect(["deploy", "--all", "--no-prompt"], {**env, "OKTA_FLEX_SYNC_HOME": "/nonexistent/deployer"})
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    worker_env = worker(sim)
    log = tmp_path / "worker.log"

    nightly = _prefect(["deployment", "run", "nightly-sync/nightly-sync", "--watch", "--watch-timeout", "120"], env,
                       timeout=150)
    assert nightly.returncode == 0, f"{nightly.stdout}{nightly.stderr}\nworker log:\n{_tail(log)}"

    from tasks.store import utcnow

    today = utcnow().date()
    start = today - timedelta(days=2)
    if not (ROOT / "flows" / "backfill.py").exists():
        pytest.fail("flows/backfill.py:backfill does not exist yet: the backfill deployment cannot run")
    backfill = _prefect(["deployment", "run", "backfill/backfill", "-p", f"start={start}", "-p", f"end={today}",
                         "--watch", "--watch-timeout", "120"], env, timeout=150)
    assert backfill.returncode == 0, f"{backfill.stdout}{backfill.stderr}\nworker log:\n{_tail(log)}"

    engine = make_engine(worker_env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            runs = {r["flow"]: r for r in conn.execute(select(sync_runs)).mappings()}
            history_rows = conn.execute(select(func.count()).select_from(role_history)).scalar()
    finally:
        engine.dispose()
    assert runs["nightly-sync"]["status"] == "succeeded", runs["nightly-sync"]["error"]
    assert runs["nightly-sync"]["counts"]["okta_users"] == USERS
    assert runs["backfill"]["status"] == "succeeded", runs["backfill"]["error"]
    assert runs["backfill"]["parameters"]["start"] == start.isoformat()
    assert history_rows >= len(sim.org.assigned_user_ids())
    assert list((tmp_path / "reports").glob("*/drift.html")), "the nightly run wrote its reports where REPORT_DIR says"

    seen = _read_deployments(env)
    assert set(seen["deployments"]) >= {"nightly-sync", "backfill", "reconcile"}
    nightly_dep = seen["deployments"]["nightly-sync"]
    (schedule,) = nightly_dep.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone
    assert [next(iter(step)) for step in nightly_dep.pull_steps] == ["flows.common.project_directory"], \
        "the project directory is decided on the worker at run time"
    assert not seen["deployments"]["backfill"].schedules
    names = set(seen["runs"])
    assert f"nightly-sync {today}" in names and f"backfill {start}..{today}" in names, names
