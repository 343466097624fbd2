"""Issue 16, terminals and pipes: help that fits 80 columns, exit codes and settings in every
`--help`, history as a wrapping table / CSV / JSON, and the demo's lock file kept out of git."""
from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from okta_flex_sync.cli import app
from okta_flex_sync.terminal import choose_format, fit_widths, print_rows

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = [["run"], ["demo"], ["report"], ["history"], ["backfill"], ["reconcile"], ["db", "upgrade"]]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_80_columns_with_whole_option_names_and_exit_codes(command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    out = result.output
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "…" not in out and "<bool>" not in out
    assert "Exit codes: 0 " in out and "Settings (environment or .env): " in out
    assert "DATABASE_URL" in out or command == ["demo"]


@pytest.mark.parametrize("command, options", [
    (["run"], ["--strip-deactivated", "--delete-orphan-workers", "--allow-shrink", "--prefect / --no-prefect",
               "--fail-on <none|high|medium|low>"]),
    (["history"], ["--as-of", "-f, --format <table|csv|json>"]),
])
def test_help_lists_every_option_whole(command, options):
    out = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80"}, terminal_width=80).output
    for option in options:
        assert option in out


def test_run_help_lists_its_exit_codes():
    out = " ".join(CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "80"}).output.split())
    assert ("Exit codes: 0 success (drift is data, not failure), 1 run failed, 2 configuration or database "
            "error, 3 --fail-on or --fail-on-new threshold met, 4 another run holds the writer lock.") in out
    assert "OKTA_RATE_LIMIT_PERCENT" in out


def test_simulator_help_names_the_command_it_was_called_as():
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "okta-flex-sync"), "simulator", "--help"],
                            capture_output=True, text=True, timeout=60, env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: okta-flex-sync simulator ")
    assert "python -m simulator" not in result.stdout


@pytest.mark.parametrize("requested, isatty, chosen", [
    (None, True, "table"), (None, False, "csv"), ("json", True, "json"), ("table", False, "table"),
    ("csv", True, "csv"),
])
def test_format_follows_the_terminal_unless_asked(requested, isatty, chosen):
    class Stream(io.StringIO):
        def isatty(self):
            return isatty
    assert choose_format(requested, Stream()) == chosen


@pytest.mark.parametrize("natural, available, minimums, widths", [
    ([4, 4], 20, [4, 4], [None, None]),  # fits: content widths
    ([16, 30], 36, [10, 4], [16, 20]),  # the widest gives way first
    ([16, 16, 8], 30, [10, 10, 4], [11, 11, 8]),
    ([16, 30], 10, [10, 4], [10, 4]),  # cannot fit: minimums hold
])
def test_columns_give_way_widest_first(natural, available, minimums, widths):
    cells = [["x" * n for n in natural]]
    assert fit_widths(["h"] * len(natural), cells, available, minimums) == widths


_COLUMNS = (("valid_from", "from"), ("roles", "roles"))
_ROWS = [{"valid_from": "2026-03-03 14:00", "roles": "admin,supervisor"},
         {"valid_from": "2026-03-04 09:30", "roles": None}]


@pytest.mark.parametrize("fmt, expected", [
    ("csv", "valid_from,roles\n2026-03-03 14:00,\"admin,supervisor\"\n2026-03-04 09:30,\n"),
    ("json", '[\n {\n  "valid_from": "2026-03-03 14:00",\n  "roles": "admin,supervisor"\n },\n'
             ' {\n  "valid_from": "2026-03-04 09:30",\n  "roles": null\n }\n]\n'),
])
def test_rows_print_as_plain_csv_or_json(fmt, expected):
    out = io.StringIO()
    print_rows(_COLUMNS, _ROWS, fmt, stream=out)
    assert out.getvalue() == expected


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format 'xml'; choose from table, csv, json"):
        print_rows(_COLUMNS, _ROWS, "xml", stream=io.StringIO())


@pytest.fixture(scope="module")
def synced_db(tmp_path_factory):
    """One nightly run against a small simulated org; (env, login of an assigned supervisor)."""
    import os

    from sqlalchemy import text

    from okta_flex_sync.storage.engine import make_engine
    from simulator import SimulatorConfig, start_simulator

    tmp = tmp_path_factory.mktemp("terminal")
    sim = start_simulator(SimulatorConfig(users=80, seed=16))
    env = {**sim.env(), "DATABASE_URL": f"sqlite:///{tmp / 'run.db'}", "REPORT_DIR": str(tmp / "reports")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        result = CliRunner().invoke(app, ["run", "--no-prefect"])
        assert result.exit_code == 0, result.output
    finally:
        sim.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    engine = make_engine(env["DATABASE_URL"])
    with engine.connect() as conn:
        login = conn.execute(text("SELECT login FROM role_history WHERE roles LIKE '%,%' "
                                  "ORDER BY length(login) DESC LIMIT 1")).scalar()
        row = conn.execute(text("SELECT valid_from, roles, full_name, run_id FROM role_history WHERE login = :l"),
                           {"l": login}).one()
    engine.dispose()
    return env, login, row


def test_history_in_a_pipe_is_csv(synced_db, monkeypatch):
    env, login, row = synced_db
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(app, ["history", login])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "valid_from,valid_to,status,assigned,roles,full_name,email,run_id"
    assert len(lines) == 2 and f'"{row.roles}"' in lines[1] and row.run_id in lines[1]


def test_history_as_json(synced_db, monkeypatch):
    env, login, row = synced_db
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(app, ["history", login, "--format", "json"])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.output)
    assert record["roles"] == row.roles and record["valid_to"] is None and record["assigned"] is True
    assert record["run_id"] == row.run_id and record["valid_from"].endswith("Z")


def test_history_table_at_80_columns_wraps_instead_of_cutting(synced_db, monkeypatch):
    env, login, row = synced_db
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(app, ["history", login, "--format", "table"], env={"COLUMNS": "80"},
                                terminal_width=80)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80, out
    day = str(row.valid_from)[:10]
    assert day in out, "the day of the change is cut"
    lines = out.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("─"))
    start = lines[rule - 1].rindex("run")  # the last column starts under its heading
    assert "".join(line[start:].strip() for line in lines[rule + 1:]) == row.run_id, \
        "the run id is cut rather than wrapped"


def test_bad_format_is_a_usage_error(synced_db, monkeypatch):
    env, login, _row = synced_db
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(app, ["history", login, "--format", "xml"])
    assert result.exit_code == 2


# --- item 7: the demo's lock file ---------------------------------------------------------------

@pytest.mark.parametrize("path", ["okta_flex_sync_demo.lock", "okta_flex_sync.lock", "okta_flex_sync_demo.db"])
def test_the_demo_leaves_nothing_untracked(path):
    result = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, timeout=30)
    assert result.returncode == 0, f"{path} is not ignored"


def test_make_clean_removes_the_demo_lock():
    result = subprocess.run(["make", "-n", "clean"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "okta_flex_sync_demo.lock" in result.stdout.split()


def test_the_command_list_is_not_cut_at_80_columns():
    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "80"}, terminal_width=80).output
    commands = out[out.index("Commands:"):]
    assert "..." not in commands and "…" not in commands
    assert max(len(line) for line in out.splitlines()) <= 80
    for command in ("run", "demo", "simulator", "report", "history", "backfill", "reconcile", "db"):
        assert f"\n  {command} " in out


def test_history_as_of_keeps_stdout_plain_csv(synced_db, monkeypatch):
    env, login, row = synced_db
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(app, ["history", login, "--as-of", "2999-01-01"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "valid_from,valid_to,status,assigned,roles,full_name,email,run_id"
    assert len(result.stdout.splitlines()) == 2
    assert result.stderr == f"as of 2999-01-01: roles={row.roles} status=ACTIVE assigned=yes\n"
