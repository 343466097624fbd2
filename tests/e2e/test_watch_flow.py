"""The `watch` Prefect flow under the session's test harness, and its deployment in prefect.yaml."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from sqlalchemy import select

from okta_flex_sync.flows.common import one_writer
from okta_flex_sync.flows.watch import watch
from okta_flex_sync.jobs.nightly import run_nightly
from okta_flex_sync.models.tables import sync_runs
from okta_flex_sync.settings import load_settings
from okta_flex_sync.storage.engine import make_engine
from okta_flex_sync.storage.lock import writer_lock

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_watch_deployment_polls_every_five_minutes_without_acting():
    (dep,) = [d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"] if d["name"] == "watch"]
    assert dep["entrypoint"] == "okta_flex_sync/flows/watch.py:watch"
    assert dep["parameters"] == {"apply_high": False}
    assert [(s["interval"], s["active"]) for s in dep["schedules"]] == [(300, True)]
    assert "okta-flex-sync" in dep["tags"] and dep["concurrency_limit"] == 1


def test_watch_flow_reports_a_suspension_and_strips_roles(fresh_simulator, sim_env, tmp_path):
    sim = fresh_simulator(users=200, seed=5)
    env = sim_env(sim)
    run_nightly(load_settings(), full=True)
    assert watch()["status"] == "idle"
    uid = next(u for u in sim.org.assigned_user_ids()
               if sim.org.user(u)["status"] == "ACTIVE" and sim.org.assignment(u)
               and sim.org.workspace.by_name(sim.org.assignment(u).app_username) is not None
               and "agent" in str(sim.org.user(u)["profile"].get("userType")))
    sim.org.set_status(uid, "SUSPENDED")
    state = watch(apply_high=True, return_state=True)
    result = state.result()
    assert (result["status"], result["users"], result["repaired"]) == ("drift", 1, 1)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    assert re.fullmatch(r"watch \d{4}-\d\d-\d\d \d\d:\d\d apply-high", run.name), run.name
    assert [t.name.rsplit("-", 1)[0] for t in tasks] == ["poll the system log"]
    assert Path(result["report"]).parent.parent == Path(env["REPORT_DIR"]) / "watch"
    engine = make_engine(env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            flows = [r.flow for r in conn.execute(select(sync_runs.c.flow).order_by(sync_runs.c.started_at))]
        assert flows == ["nightly-sync", "watch", "watch"]
        with writer_lock(engine, "a nightly run"):
            assert watch()["status"] == "skipped"
        with one_writer(load_settings()):  # the Prefect-level slot held by another flow run
            assert watch()["status"] == "skipped"
        assert watch()["status"] == "idle"
    finally:
        engine.dispose()
