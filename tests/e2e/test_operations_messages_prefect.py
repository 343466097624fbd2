"""Issue 16: messages say what actually happens (System Log pull), and Prefect runs refuse bad
parameters at creation, end known errors with their one line and no traceback, and say what a
finished run did."""
from __future__ import annotations

import logging
from datetime import date, timedelta

import pytest
from typer.testing import CliRunner

from okta_flex_sync.cli import app
from okta_flex_sync.core.run_summary import finished_line, nothing_rebuilt_reason

harness = pytest.mark.usefixtures("prefect_harness")


# --- item 5: the System Log warning -------------------------------------------------------------

def test_a_wrong_token_fails_the_run_without_promising_it_goes_on(fresh_simulator, sim_env, monkeypatch, caplog):
    sim_env(fresh_simulator(users=30, seed=51))
    monkeypatch.setenv("OKTA_API_TOKEN", "00WRONG-token-for-issue-16")
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(app, ["run", "--no-prefect"])
    assert result.exit_code == 1, result.output
    assert "HTTP 401" in result.output.splitlines()[-1]
    assert "still" not in caplog.text and "not pulled this run" not in caplog.text


def test_a_token_without_the_log_scope_skips_only_the_log_and_says_so(fresh_simulator, sim_env, monkeypatch, caplog):
    sim = fresh_simulator(users=30, seed=52)
    env = sim_env(sim)
    info = sim.info()
    monkeypatch.delenv("OKTA_API_TOKEN")
    monkeypatch.setenv("OKTA_CLIENT_ID", info["oauth_client_id"])
    monkeypatch.setenv("OKTA_PRIVATE_KEY", info["oauth_private_key_pem"])
    monkeypatch.setenv("OKTA_KEY_ID", info["oauth_key_id"])
    monkeypatch.setenv("OKTA_SCOPES", "okta.users.read okta.apps.read")
    with caplog.at_level(logging.WARNING, logger="okta_flex_sync.jobs.nightly"):
        result = CliRunner().invoke(app, ["run", "--no-prefect"])
    assert result.exit_code == 0, result.output
    (warning,) = [r.getMessage() for r in caplog.records if "System Log not pulled" in r.getMessage()]
    assert "HTTP 403" in warning
    assert warning.endswith("this run goes on without it: users, assignments, workers and role history are "
                            "still pulled and updated, and `okta-flex-sync backfill` over these days asks Okta "
                            "for the System Log again")
    assert env["DATABASE_URL"]


# --- item 3: pure lines -------------------------------------------------------------------------

def test_a_finished_run_line_has_counts_and_the_report_folder():
    line = finished_line("R1", {"okta_users": 2000, "assigned_users": 300, "workers": 290},
                         {"roles_mismatch": 4, "missing_worker": 1, "orphan_worker": 0},
                         {"json": "reports/R1/drift.json", "csv": "reports/R1/drift.csv"})
    assert line == ("run R1 finished: 2,000 Okta users, 300 Flex assignments, 290 workers, 5 findings; "
                    "reports in reports/R1 (json, csv)")


@pytest.mark.parametrize("kwargs, expected", [
    (dict(events=3, rows_changed=2, snapshots_in_range=1, stored_snapshots=1), None),
    (dict(events=0, rows_changed=0, snapshots_in_range=0, stored_snapshots=0),
     "backfill 2026-10-01..2026-10-02 (2 day(s)) rebuilt nothing: no nightly run has stored a snapshot yet (run "
     "`okta-flex-sync run` first); the Okta System Log has no lifecycle, profile or Flex assignment events in the "
     "range"),
    (dict(events=5, rows_changed=0, snapshots_in_range=0, stored_snapshots=4),
     "backfill 2026-10-01..2026-10-02 (2 day(s)) rebuilt nothing: no stored nightly snapshot bounds these days "
     "(they are before the first stored run)"),
    (dict(events=5, rows_changed=0, snapshots_in_range=2, stored_snapshots=4),
     "backfill 2026-10-01..2026-10-02 (2 day(s)) rebuilt nothing: the stored role history already agrees with "
     "the snapshots and the System Log"),
])
def test_a_backfill_that_rebuilds_nothing_says_why(kwargs, expected):
    assert nothing_rebuilt_reason(date(2026, 10, 1), date(2026, 10, 2), days=2, **kwargs) == expected


def test_cli_backfill_on_an_empty_database_says_why_nothing_was_rebuilt(fresh_simulator, sim_env, caplog):
    sim_env(fresh_simulator(users=30, seed=53))
    day = (date.today() - timedelta(days=3)).isoformat()
    with caplog.at_level(logging.WARNING, logger="okta_flex_sync.jobs.backfill"):
        result = CliRunner().invoke(app, ["backfill", "--start", day, "--end", day])
    assert result.exit_code == 0, result.output
    assert [r.getMessage() for r in caplog.records if "rebuilt nothing" in r.getMessage()] == [
        f"backfill {day}..{day} (1 day(s)) rebuilt nothing: no nightly run has stored a snapshot yet "
        f"(run `okta-flex-sync run` first); the Okta System Log has no lifecycle, profile or Flex assignment "
        f"events in the range"]


# --- item 3: Prefect ----------------------------------------------------------------------------

def _create_deployment(flow_obj, name: str):
    from prefect.client.orchestration import get_client
    from prefect.utilities.callables import parameter_schema

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(flow_obj.name)
        return client.create_deployment(
            flow_id=flow_id, name=name, enforce_parameter_schema=True,
            parameter_openapi_schema=parameter_schema(flow_obj.fn).model_dump_for_openapi())


def _assert_checked_at_creation(flow_name: str, parameters: dict, refused: str | None) -> None:
    """Create a run of `flow_name`'s deployment with `parameters`: refused (409 naming the field)
    when `refused` names one, accepted (and deleted again) otherwise."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    from okta_flex_sync.flows.backfill import backfill
    from okta_flex_sync.flows.nightly import nightly_sync

    flow_, name = {"backfill": (backfill, "issue-16-typed-days"),
                   "nightly": (nightly_sync, "issue-16-typed-nightly")}[flow_name]
    deployment_id = _create_deployment(flow_, name)
    with get_client(sync_client=True) as client:
        if refused is None:
            run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
            client.delete_flow_run(run.id)
            return
        with pytest.raises(PrefectHTTPStatusError) as err:
            client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
    assert err.value.response.status_code == 409
    assert f"Validation failed for field '{refused}'" in err.value.response.text


@harness
@pytest.mark.parametrize("parameters, refused", [
    ({"start": "2026-13-01", "end": "2026-10-31"}, "start"),
    ({"start": "2026-10-01", "end": "2026-10-32"}, "end"),
    ({"start": "01/10/2026", "end": "2026-10-31"}, "start"),
    ({"start": "2026-10-01", "end": "2026-10-31"}, None),
])
def test_a_malformed_backfill_day_is_refused_when_the_run_is_created(parameters, refused):
    _assert_checked_at_creation("backfill", parameters, refused)


@harness
def test_a_future_end_date_ends_the_run_with_its_one_line_and_no_traceback(fresh_simulator, sim_env, caplog):
    from okta_flex_sync.flows.backfill import backfill

    sim_env(fresh_simulator(users=20, seed=54))
    today = date.today()
    with caplog.at_level(logging.INFO):
        state = backfill(start=today, end=today + timedelta(days=3), return_state=True)
    assert state.is_failed()
    assert state.message == f"backfill end {today + timedelta(days=3)} is in the future (today is {today} UTC)"
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]


@harness
def test_a_refused_range_inside_a_task_ends_the_run_quietly(fresh_simulator, sim_env, caplog):
    from okta_flex_sync.flows.backfill import backfill

    sim_env(fresh_simulator(users=20, seed=55))
    old = date.today() - timedelta(days=400)
    with caplog.at_level(logging.INFO):
        state = backfill(start=old, end=old, return_state=True)
    assert state.is_failed()
    assert state.message.startswith(f"cannot backfill {old}..{old}: {old} ended more than 90 days ago")
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]


@harness
def test_a_missing_setting_ends_the_nightly_run_with_its_one_line(fresh_simulator, sim_env, monkeypatch, caplog):
    from okta_flex_sync.flows.nightly import nightly_sync

    sim_env(fresh_simulator(users=20, seed=56))
    monkeypatch.delenv("OKTA_FLEX_APP_ID")
    with caplog.at_level(logging.INFO):
        state = nightly_sync(return_state=True)
    assert state.is_failed()
    assert state.message == "configuration error: OKTA_FLEX_APP_ID is not set"
    assert "Traceback" not in caplog.text


@harness
def test_a_missing_database_ends_the_run_naming_database_url(fresh_simulator, sim_env, monkeypatch, caplog):
    from okta_flex_sync.flows.nightly import nightly_sync

    sim_env(fresh_simulator(users=20, seed=57))
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres:pw@127.0.0.1:1/ofs")
    with caplog.at_level(logging.INFO):
        state = nightly_sync(return_state=True)
    assert state.is_failed()
    assert state.message.startswith("cannot reach the database server: ")
    assert "(DATABASE_URL=postgresql://postgres:***@127.0.0.1:1/ofs)" in state.message
    assert "Traceback" not in caplog.text


@harness
def test_a_finished_nightly_run_logs_its_counts_and_report_folder(fresh_simulator, sim_env, caplog):
    from okta_flex_sync.flows.nightly import nightly_sync

    env = sim_env(fresh_simulator(users=40, seed=58))
    with caplog.at_level(logging.INFO):
        state = nightly_sync(return_state=True)
    assert state.is_completed(), state.message
    (line,) = [r.getMessage() for r in caplog.records if " finished: " in r.getMessage()]
    run_id = state.result()["run_id"]
    assert line.startswith(f"run {run_id} finished: ")
    assert "Okta users" in line and "Flex assignments" in line and "workers" in line and "findings" in line
    assert line.endswith(f"; reports in {env['REPORT_DIR']}/{run_id} (json, csv, html, md)")


@harness
def test_the_reconcile_flow_refuses_a_missing_sqlite_file_and_creates_nothing(monkeypatch, tmp_path):
    from okta_flex_sync.flows.reconcile import reconcile_flow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", "sqlite:///nowhere/ofs.db")
    state = reconcile_flow(return_state=True)
    assert state.is_failed()
    assert state.message == (f"no database at {tmp_path / 'nowhere' / 'ofs.db'} (DATABASE_URL=sqlite:///nowhere/ofs.db): "
                             f"check the path, or run `okta-flex-sync run` to start a new history there")
    assert list(tmp_path.iterdir()) == []


@harness
@pytest.mark.parametrize("parameters, refused", [
    ({"max_changes": -1}, "max_changes"),
    ({"apply": "maybe"}, "apply"),
    ({"max_changes": 10, "full": True}, None),
])
def test_nightly_parameters_are_checked_when_the_run_is_created(parameters, refused):
    _assert_checked_at_creation("nightly", parameters, refused)
