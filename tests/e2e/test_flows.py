"""Prefect orchestration: the flows under the session's Prefect test harness, against the simulator.

What an operator relies on: flows and tasks named readably, retries only for transient errors,
one writer at a time (the Prefect concurrency limit first, the database lock last), secrets from
the environment or Secret blocks, a pull step that finds the project on any worker, and a
failure-notification automation that fires for our runs only.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import timedelta
from pathlib import Path
from string import Template

import httpx
import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from okta_flex_sync.cli import app
from okta_flex_sync.clients.http import (
    ApiError,
    AuthError,
    NotFoundError,
    RetriesExhausted,
)
from okta_flex_sync.flows.common import (
    WRITER_LIMIT,
    flow_settings,
    one_writer,
    project_directory,
    secret_block_name,
    wanted_secrets,
)
from okta_flex_sync.jobs.nightly import NightlySync, ShrinkGuardError
from okta_flex_sync.models.tables import sync_runs
from okta_flex_sync.settings import Settings
from okta_flex_sync.storage.common import utcnow
from okta_flex_sync.storage.engine import make_engine
from okta_flex_sync.storage.lock import RunLockedError, writer_lock
from okta_flex_sync.tasks.retry import retry_if_transient

ROOT = Path(__file__).resolve().parents[2]
harness = pytest.mark.usefixtures("prefect_harness")
NIGHTLY_TASKS = {"prepare run", "extract okta users, flex assignments, taskrouter workers",
                 "publish history and findings", "repair workers", "write reports"}


# --- helpers ---------------------------------------------------------------------------------

def _runs(database_url: str) -> list[dict]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(sync_runs).order_by(sync_runs.c.started_at)).mappings()]
    finally:
        engine.dispose()


def _flow_run(state):
    """The API's record of the flow run behind a `return_state=True` call, with its task run names."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return run, {t.name.rsplit("-", 1)[0] if t.name.startswith(tuple(NIGHTLY_TASKS)) else t.name for t in tasks}


# --- pure pieces -----------------------------------------------------------------------------

_E = {"OKTA_API_TOKEN": "t", "TWILIO_AUTH_TOKEN": "a"}
_SK = "SK" + "0" * 32


@pytest.mark.parametrize("env, wanted", [
    (_E, []),
    ({}, ["okta_api_token", "twilio_auth_token"]),
    ({"TWILIO_AUTH_TOKEN": "a"}, ["okta_api_token"]),
    ({"OKTA_API_TOKEN": "t"}, ["twilio_auth_token"]),
    ({"OKTA_CLIENT_ID": "c", "TWILIO_AUTH_TOKEN": "a"}, ["okta_private_key"]),
    ({"OKTA_CLIENT_ID": "c", "OKTA_PRIVATE_KEY_FILE": "/k.pem", "TWILIO_AUTH_TOKEN": "a"}, []),
    ({"OKTA_API_TOKEN": "t", "TWILIO_API_KEY_SID": _SK}, ["twilio_api_key_secret"]),
    ({"OKTA_API_TOKEN": "t", "TWILIO_API_KEY_SID": _SK, "TWILIO_API_KEY_SECRET": "s"}, []),
])
def test_only_missing_needed_secrets_are_looked_up(env, wanted):
    names = ("OKTA_API_TOKEN", "OKTA_CLIENT_ID", "OKTA_PRIVATE_KEY", "OKTA_PRIVATE_KEY_FILE", "TWILIO_AUTH_TOKEN",
             "TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET")
    kwargs = {n.lower(): env.get(n) for n in names}
    assert wanted_secrets(Settings(_env_file=None, **kwargs)) == wanted


@pytest.mark.parametrize("field, block", [
    ("okta_api_token", "okta-flex-sync-okta-api-token"),
    ("twilio_api_key_secret", "okta-flex-sync-twilio-api-key-secret"),
])
def test_secret_block_names_are_valid_prefect_slugs(field, block):
    assert secret_block_name(field) == block


@pytest.mark.parametrize("field", ["okta_api_token", "okta_private_key", "twilio_auth_token", "twilio_api_key_secret"])
def test_readme_names_every_secret_block_a_flow_may_read(field):
    assert f"`{secret_block_name(field)}`" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("error, retried", [
    (RetriesExhausted("okta: 6 attempts", status=503), True),
    (ApiError("taskrouter 503", status=503), True),
    (httpx.ConnectError("connection refused"), True),
    (httpx.ReadTimeout("read timed out"), True),
    (AuthError("okta 401", status=401), False),
    (NotFoundError("app not found", status=404), False),
    (ApiError("okta 400", status=400), False),
    (ShrinkGuardError("users fell from 100 to 3"), False),
    (ValueError("a bug"), False),
])
def test_retry_condition_retries_transient_errors_only(error, retried):
    from prefect.states import Failed

    assert retry_if_transient(None, None, Failed(data=error)) is retried


@pytest.mark.parametrize("directory, expected", [
    (str(ROOT), ROOT),
    (None, ROOT),  # the checkout the package was installed from
    ("", ROOT),
])
def test_project_directory_changes_into_the_checkout(directory, expected, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OKTA_FLEX_SYNC_HOME", raising=False)
    assert project_directory(directory) == {"directory": str(expected)}
    assert Path.cwd() == expected


def test_project_directory_follows_the_worker_environment_and_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OKTA_FLEX_SYNC_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="OKTA_FLEX_SYNC_HOME"):
        project_directory()
    assert Path.cwd() == tmp_path


@harness  # running steps opens a Prefect client (to resolve block and variable references)
@pytest.mark.parametrize("worker_home", [None, str(ROOT)])
def test_prefect_yaml_pull_steps_resolve_on_the_worker(worker_home, monkeypatch, tmp_path):
    """The pull steps as Prefect runs them before a flow run, in a worker's temp directory."""
    from prefect.deployments.steps.core import run_steps

    steps = yaml.safe_load((ROOT / "prefect.yaml").read_text())["pull"]
    monkeypatch.chdir(tmp_path)
    if worker_home is None:
        monkeypatch.delenv("OKTA_FLEX_SYNC_HOME", raising=False)
    else:
        monkeypatch.setenv("OKTA_FLEX_SYNC_HOME", worker_home)
    out = asyncio.run(run_steps(steps, {}, print_function=lambda *_: None))
    assert out["directory"] == str(ROOT) and Path.cwd() == ROOT
    assert (Path.cwd() / "okta_flex_sync" / "flows" / "nightly.py").is_file()


# --- the failure-notification automation -----------------------------------------------------

AUTOMATION = ROOT / "automations" / "notify-on-failure.yaml"


def _automation(block_id: str = "00000000-0000-4000-8000-000000000000") -> dict:
    return yaml.safe_load(Template(AUTOMATION.read_text()).substitute(NOTIFICATION_BLOCK_ID=block_id))


@pytest.mark.parametrize("event, tags, fires", [
    ("prefect.flow-run.Failed", ["okta-flex-sync", "nightly"], True),
    ("prefect.flow-run.Crashed", ["okta-flex-sync", "backfill"], True),
    ("prefect.flow-run.TimedOut", ["okta-flex-sync"], True),
    ("prefect.flow-run.Completed", ["okta-flex-sync", "nightly"], False),
    ("prefect.flow-run.Cancelled", ["okta-flex-sync"], False),
    ("prefect.flow-run.Failed", ["someone-elses-flow"], False),
    ("prefect.task-run.Failed", ["okta-flex-sync"], False),
])
def test_failure_automation_fires_for_our_failed_runs_only(event, tags, fires):
    from uuid import uuid4

    from prefect.server.events.schemas.automations import EventTrigger
    from prefect.server.events.schemas.events import ReceivedEvent

    trigger = EventTrigger.model_validate(_automation()["trigger"])
    kind = event.split(".")[1]
    received = ReceivedEvent(
        occurred=utcnow(), event=event, id=uuid4(),
        resource={"prefect.resource.id": f"prefect.{kind}.{uuid4()}"},
        related=[{"prefect.resource.id": f"prefect.tag.{t}", "prefect.resource.role": "tag"} for t in tags])
    assert trigger.covers(received) is fires


@harness
def test_failure_automation_file_creates_a_working_automation():
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    block_id = CustomWebhookNotificationBlock(name="ops", url="https://alerts.example.invalid/hook").save(
        "okta-flex-sync-test-alerts", overwrite=True)
    with get_client(sync_client=True) as client:
        automation_id = client.create_automation(AutomationCore.model_validate(_automation(str(block_id))))
        try:
            stored = client.read_automation(automation_id)
            assert stored.name == "okta-flex-sync run failed" and stored.enabled
            assert stored.actions[0].block_document_id == block_id
        finally:
            client.delete_automation(automation_id)


# --- retries in real task runs ---------------------------------------------------------------

@harness
@pytest.mark.parametrize("errors, attempts, completed", [
    ([RetriesExhausted("okta gave up for now", status=429)], 2, True),
    ([ApiError("taskrouter 503", status=503), httpx.ReadTimeout("slow")], 3, True),
    ([AuthError("okta 401", status=401)], 1, False),
    ([NotFoundError("no such app", status=404)], 1, False),
])
def test_tasks_retry_transient_errors_and_stop_on_auth_errors(errors, attempts, completed):
    from prefect import flow, task

    calls = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_if_transient)
    def call_api():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    @flow
    def wrapper():
        return call_api()

    state = wrapper(return_state=True)
    assert len(calls) == attempts and state.is_completed() is completed


@pytest.mark.parametrize("module, name, retries", [
    ("okta_flex_sync.tasks.nightly", "task_extract", True),
    ("okta_flex_sync.tasks.backfill", "task_day", True),
    ("okta_flex_sync.tasks.nightly", "task_prepare", False),
    ("okta_flex_sync.tasks.nightly", "task_publish", False),  # one transaction; a failure is not an outage
    ("okta_flex_sync.tasks.nightly", "task_repair", False),  # never write workers twice
])
def test_only_api_reading_tasks_retry_and_only_on_transient_errors(module, name, retries):
    import importlib

    t = getattr(importlib.import_module(module), name)
    assert (t.retries > 0) is retries
    if retries:
        assert t.retry_condition_fn is retry_if_transient


# --- flows ------------------------------------------------------------------------------------

@harness
def test_nightly_flow_full_then_incremental_then_forced_full(fresh_simulator, sim_env):
    from okta_flex_sync.flows.nightly import nightly_sync

    sim = fresh_simulator(users=80, seed=31)
    env = sim_env(sim)
    states = [nightly_sync(return_state=True), nightly_sync(return_state=True),
              nightly_sync(full=True, return_state=True)]
    assert all(s.is_completed() for s in states), [s.message for s in states]
    assert states[0].result()["counts"]["okta_users"] == 80

    runs = _runs(env["DATABASE_URL"])
    assert [r["parameters"]["full"] for r in runs] == [True, False, True]
    assert all(r["flow"] == "nightly-sync" and r["status"] == "succeeded" for r in runs)
    today = utcnow().date()
    names = [_flow_run(s)[0].name for s in states]
    assert names == [f"nightly-sync {today}", f"nightly-sync {today}", f"nightly-sync {today} full"]
    assert _flow_run(states[0])[1] == NIGHTLY_TASKS


@harness
def test_reconcile_flow_reports_again_without_calling_the_apis(fresh_simulator, sim_env):
    from okta_flex_sync.flows.nightly import nightly_sync
    from okta_flex_sync.flows.reconcile import reconcile_flow

    sim = fresh_simulator(users=60, seed=32)
    env = sim_env(sim)
    nightly = nightly_sync()
    before = sim.stats()["requests"]
    state = reconcile_flow(return_state=True)
    assert state.is_completed(), state.message
    assert sim.stats()["requests"] == before, "reconcile reads staged data only"
    assert state.result()["summary"] == nightly["summary"]
    assert [r["flow"] for r in _runs(env["DATABASE_URL"])] == ["nightly-sync", "reconcile"]
    assert _flow_run(state)[0].name == "reconcile latest"


def _second_flow(kind: str):
    from okta_flex_sync.flows.backfill import backfill
    from okta_flex_sync.flows.nightly import nightly_sync
    from okta_flex_sync.flows.reconcile import reconcile_flow

    today = utcnow().date()
    return {"nightly-sync": lambda: nightly_sync(return_state=True),
            "backfill": lambda: backfill(start=today - timedelta(days=1), end=today, return_state=True),
            "reconcile": lambda: reconcile_flow(return_state=True)}[kind]


@harness
@pytest.mark.parametrize("second", ["nightly-sync", "backfill", "reconcile"])
def test_a_second_writer_waits_for_the_first(second, fresh_simulator, sim_env, monkeypatch):
    """LOCK_WAIT_SECONDS=0: had the Prefect limit let both in, the database lock would fail one."""
    from okta_flex_sync.flows.nightly import nightly_sync

    sim = fresh_simulator(users=60, seed=33)
    env = sim_env(sim)
    monkeypatch.setenv("LOCK_WAIT_SECONDS", "0")
    publishing = threading.Event()
    publish = NightlySync.publish

    def slow_publish(self):
        publishing.set()
        time.sleep(1.0)
        return publish(self)

    monkeypatch.setattr(NightlySync, "publish", slow_publish)
    states = {}
    first = threading.Thread(target=lambda: states.setdefault("first", nightly_sync(return_state=True)))
    first.start()
    assert publishing.wait(60), "the first run never reached publish"
    asked_at = utcnow()
    states["second"] = _second_flow(second)()
    first.join(60)

    assert states["first"].is_completed(), states["first"].message
    assert states["second"].is_completed(), states["second"].message
    one, two = _runs(env["DATABASE_URL"])
    assert (one["flow"], two["flow"]) == ("nightly-sync", second)
    assert asked_at < one["finished_at"] <= two["started_at"], "the second run waited for the first to finish"


@harness
def test_one_writer_says_it_waits_then_gives_up_with_a_clear_message(caplog):
    with one_writer(None), pytest.raises(RunLockedError, match=f"{WRITER_LIMIT}.*for 1 s; try again"), \
            one_writer(None, timeout_seconds=1):
        pytest.fail("two writers at once")
    assert "holds the Prefect concurrency limit 'okta-flex-sync-writer'; waiting up to 1 s" in caplog.text


@harness
def test_one_writer_passes_the_runs_own_timeouts_through():
    with pytest.raises(TimeoutError, match="from the run itself"), one_writer(None):
        raise TimeoutError("from the run itself")
    with one_writer(None, timeout_seconds=5):  # and the slot was released
        pass


# --- the CLI on top: exit codes ----------------------------------------------------------------

@pytest.mark.parametrize("prefect, wait, release_after, code", [
    (False, 0, None, 4),
    (False, 1, None, 4),
    (False, 30, 1.0, 0),
    (True, 0, None, 4),
])
def test_cli_second_run_waits_for_or_exits_on_the_database_lock(prefect, wait, release_after, code, request,
                                                                 fresh_simulator, sim_env, database_url, monkeypatch):
    if prefect:
        request.getfixturevalue("prefect_harness")
    sim = fresh_simulator(users=40, seed=34)
    env = sim_env(sim, database_url)
    monkeypatch.setenv("LOCK_WAIT_SECONDS", str(wait))
    engine = make_engine(database_url)
    held = writer_lock(engine, env["OKTA_ORG_URL"])
    held.__enter__()
    release = threading.Timer(release_after or 0, held.__exit__, (None, None, None))
    try:
        if release_after:
            release.start()
        started = time.monotonic()
        result = CliRunner().invoke(app, ["run", "--prefect" if prefect else "--no-prefect"])
        elapsed = time.monotonic() - started
    finally:
        if release_after:
            release.join()
        else:
            held.__exit__(None, None, None)
        engine.dispose()
    assert result.exit_code == code, result.output
    runs = _runs(database_url)
    if code == 4:
        assert "another okta-flex-sync run is writing" in result.output and elapsed >= wait
        assert runs == [], "a locked-out run leaves no trace in the database"
    else:
        assert elapsed >= release_after and [r["status"] for r in runs] == ["succeeded"]


@harness
def test_cli_failed_prefect_run_exits_1_without_retrying_auth_errors(fresh_simulator, sim_env, monkeypatch):
    sim = fresh_simulator(users=40, seed=35)
    env = sim_env(sim)
    monkeypatch.setenv("OKTA_API_TOKEN", "00WRONG-prefect-token-4242")
    started = time.monotonic()
    result = CliRunner().invoke(app, ["run", "--prefect"])
    assert result.exit_code == 1, result.output
    assert "00WRONG-prefect-token-4242" not in result.output
    assert sim.stats()["requests"].get("users", 0) <= 3, "the extract task was not retried on a 401"
    assert time.monotonic() - started < 25, "no task retry delay was waited out"
    (run,) = _runs(env["DATABASE_URL"])
    assert run["status"] == "failed" and "AuthError" in run["error"]


# --- secrets from Prefect Secret blocks -------------------------------------------------------

@harness
def test_secret_blocks_fill_secrets_the_environment_lacks(fresh_simulator, sim_env, monkeypatch):
    from prefect.blocks.system import Secret

    from okta_flex_sync.flows.nightly import nightly_sync

    sim = fresh_simulator(users=30, seed=36)
    env = sim_env(sim)
    name = secret_block_name("okta_api_token")
    monkeypatch.delenv("OKTA_API_TOKEN")
    monkeypatch.chdir(ROOT.parent)  # no `.env` to fall back on
    Secret(value=env["OKTA_API_TOKEN"]).save(name, overwrite=True)
    try:
        assert flow_settings().okta_api_token.get_secret_value() == env["OKTA_API_TOKEN"]
        assert nightly_sync()["counts"]["okta_users"] == 30
        monkeypatch.setenv("OKTA_API_TOKEN", "00from-the-environment")
        assert flow_settings().okta_api_token.get_secret_value() == "00from-the-environment", "environment wins"
    finally:
        Secret.delete(name)
    monkeypatch.delenv("OKTA_API_TOKEN")
    assert flow_settings().okta_api_token is None, "no block, no environment: require_sources names it"
    assert os.environ.get("OKTA_API_TOKEN") is None
