"""Issue 16, databases: read commands never create a database, every connection or schema problem
is one line naming DATABASE_URL (password masked) with exit 2, `postgres://` works, a run on an
empty database says it starts a new history, and Postgres going away mid-run is one line."""
from __future__ import annotations

import threading
import uuid

import pytest
from conftest import DATABASES, PG_ADMIN_URL
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from okta_flex_sync.cli import app
from okta_flex_sync.settings import load_settings
from okta_flex_sync.storage.connect import describe_database_error, shown_url
from okta_flex_sync.storage.engine import make_engine
from okta_flex_sync.storage.lock import writer_lock

pg_only = pytest.mark.skipif("postgres" not in DATABASES, reason="Postgres disabled by TEST_DATABASES")
PG_HOST = "postgresql://postgres@127.0.0.1:5432"


def _one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize("command", [["history", "ann@example.com"], ["report"], ["reconcile"],
                                     ["history", "ann@example.com", "--format", "json"]])
def test_read_commands_refuse_a_missing_sqlite_file_and_create_nothing(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", "sqlite:///typo/okta_flex_sync.db")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    line = _one_line(result.output)
    assert line == (f"okta-flex-sync: no database at {tmp_path / 'typo' / 'okta_flex_sync.db'} "
                    f"(DATABASE_URL=sqlite:///typo/okta_flex_sync.db): check the path, or run "
                    f"`okta-flex-sync run` to start a new history there")
    assert list(tmp_path.iterdir()) == [], "a read command created something"


@pytest.mark.parametrize("given, stored", [
    ("postgres://u:pw@db.example.com:5432/ofs", "postgresql+psycopg://u:pw@db.example.com:5432/ofs"),
    ("postgresql://u@db/ofs", "postgresql+psycopg://u@db/ofs"),
    ("postgres+psycopg://u@db/ofs", "postgres+psycopg://u@db/ofs"),
    ("sqlite:///x.db", "sqlite:///x.db"),
])
def test_database_url_accepts_what_hosting_providers_hand_out(given, stored, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", given)
    assert load_settings().database_url == stored


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg://app:s3cr3t@db:5432/ofs", "DATABASE_URL=postgresql://app:***@db:5432/ofs"),
    ("postgresql+psycopg://app@db/ofs", "DATABASE_URL=postgresql://app@db/ofs"),
    ("sqlite:///okta_flex_sync.db", "DATABASE_URL=sqlite:///okta_flex_sync.db"),
])
def test_database_url_is_shown_without_its_password(url, shown):
    assert shown_url(url) == shown


_URL = "postgresql+psycopg://app:s3cr3t@db:5432/ofs"


@pytest.mark.parametrize("driver_message, expected", [
    ('connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "ofs" does not '
     'exist', "database 'ofs' does not exist (DATABASE_URL=postgresql://app:***@db:5432/ofs): create it (e.g. "
              "`createdb ofs`), then run `okta-flex-sync db upgrade`"),
    ('connection failed: connection to server at "10.0.0.9", port 5432 failed: Connection refused\n\tIs the server '
     'running on that host and accepting TCP/IP connections?',
     "cannot reach the database server: Connection refused (DATABASE_URL=postgresql://app:***@db:5432/ofs): is it "
     "running, and are host and port right?"),
    ('connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication '
     'failed for user "app"',
     'the database refused the login: password authentication failed for user "app" '
     '(DATABASE_URL=postgresql://app:***@db:5432/ofs): check the user and password in DATABASE_URL'),
    ("terminating connection due to administrator command\nserver closed the connection unexpectedly",
     "lost the connection to the database mid-run: terminating connection due to administrator command "
     "(DATABASE_URL=postgresql://app:***@db:5432/ofs); nothing half-written is kept, run again when the "
     "database is back"),
    ("file is not a database", "that file is not a SQLite database (DATABASE_URL=postgresql://app:***@db:5432/ofs): "
                               "point DATABASE_URL at the okta-flex-sync database"),
    ("something else entirely", "database error: something else entirely (DATABASE_URL=postgresql://app:***@db:5432/ofs)"),
])
def test_driver_errors_become_one_line_without_parameters_or_links(driver_message, expected):
    exc = OperationalError("SELECT pg_advisory_unlock(%(k)s)", {"k": -2056544123841481020}, Exception(driver_message))
    assert "[parameters:" in str(exc) and "sqlalche.me" in str(exc)  # what users used to see
    assert describe_database_error(exc, _URL) == expected


@pg_only
@pytest.mark.parametrize("command", [["history", "ann@example.com"], ["report"], ["reconcile"], ["db", "upgrade"],
                                     ["run", "--no-prefect"]])
def test_a_postgres_database_that_does_not_exist_is_one_line_exit_2(command, monkeypatch, sim_env, simulator):
    sim_env(simulator)
    name = f"ofs_missing_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DATABASE_URL", f"postgres://postgres:hunter2@127.0.0.1:5432/{name}")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    line = _one_line(result.output)
    assert f"database '{name}' does not exist (DATABASE_URL=postgresql://postgres:***@127.0.0.1:5432/{name})" in line
    assert "hunter2" not in result.output and "sqlalche.me" not in result.output


@pytest.mark.parametrize("command", [["history", "ann@example.com"], ["report"], ["db", "upgrade"]])
def test_an_unreachable_postgres_server_is_one_line_exit_2(command, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/ofs")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert _one_line(result.output).startswith("okta-flex-sync: cannot reach the database server: ")
    assert "(DATABASE_URL=postgresql://postgres@127.0.0.1:1/ofs): is it running" in result.output


@pg_only
def test_an_empty_postgres_database_says_to_run_db_upgrade(monkeypatch):
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"ofs_empty_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        monkeypatch.setenv("DATABASE_URL", f"{PG_HOST}/{name}")
        result = CliRunner().invoke(app, ["history", "ann@example.com"])
        assert result.exit_code == 2, result.output
        assert _one_line(result.output) == (
            f"okta-flex-sync: the database has no okta-flex-sync tables yet (DATABASE_URL={PG_HOST}/{name}): "
            f"run `okta-flex-sync db upgrade` once to create them")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_first_run_says_it_starts_a_new_history_and_where(simulator, sim_env, tmp_path, caplog):
    db = tmp_path / "fresh" / "history.db"
    sim_env(simulator, f"sqlite:///{db}")
    with caplog.at_level("INFO", logger="okta_flex_sync.jobs.lifecycle"):
        first = CliRunner().invoke(app, ["run", "--no-prefect"])
        assert first.exit_code == 0, first.output
        started = [r.getMessage() for r in caplog.records if "new role history" in r.getMessage()]
        assert started == [f"no earlier run in this database ({db}): this run starts a new role history there"]
        caplog.clear()
        second = CliRunner().invoke(app, ["run", "--no-prefect"])
        assert second.exit_code == 0, second.output
        assert not [r for r in caplog.records if "new role history" in r.getMessage()]


# --- Postgres going away mid-run ---------------------------------------------------------------

def _terminate_other_backends(database_url: str) -> int:
    """End every server connection to the run's database but this one (as an admin would)."""
    admin = make_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return conn.execute(text(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
    finally:
        admin.dispose()


def _status_of_runs(database_url: str) -> list[str]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(text("SELECT status FROM sync_runs ORDER BY started_at"))]
    finally:
        engine.dispose()


@pg_only
@pytest.mark.parametrize("stage, code, statuses", [
    ("extract", 1, ["failed"]),  # ~30 %: the landing transaction dies under it
    ("publish", 1, ["failed"]),  # ~60 %: mid-publish, nothing of it is kept
    ("report", 0, ["succeeded"]),  # ~85 %: publish committed; the lock's connection is gone too
])
def test_postgres_going_away_mid_run_is_one_line_and_the_next_run_is_exact(
        stage, code, statuses, fresh_simulator, sim_env, pg_database_url, monkeypatch):
    from conftest import _truncate_all

    from okta_flex_sync.jobs.nightly import NightlySync
    from okta_flex_sync.storage import mirror as mirror_db

    engine = make_engine(pg_database_url)
    _truncate_all(engine)
    engine.dispose()
    sim = fresh_simulator(users=60, seed=61)
    sim_env(sim, pg_database_url)
    killed = []
    if stage == "extract":
        from okta_flex_sync.jobs.nightly import LANDERS

        land = LANDERS["users"]

        def land_then_die(conn, run_id, records):
            if not killed:
                killed.append(_terminate_other_backends(pg_database_url))
            return land(conn, run_id, records)
        monkeypatch.setitem(LANDERS, "users", land_then_die)
    elif stage == "publish":
        refresh = mirror_db.refresh_mirror

        def refresh_then_die(conn, *args, **kwargs):
            killed.append(_terminate_other_backends(pg_database_url))
            return refresh(conn, *args, **kwargs)
        monkeypatch.setattr(mirror_db, "refresh_mirror", refresh_then_die)
    else:
        report = NightlySync.report

        def die_then_report(self):
            killed.append(_terminate_other_backends(pg_database_url))
            return report(self)
        monkeypatch.setattr(NightlySync, "report", die_then_report)

    result = CliRunner().invoke(app, ["run", "--no-prefect"])
    assert killed and killed[0] >= 1, "no server connection was ended"
    assert result.exit_code == code, result.output
    if code:
        line = _one_line([l for l in result.output.splitlines() if l.startswith("okta-flex-sync:")][0])
        assert line.startswith("okta-flex-sync: run failed: lost the connection to the database mid-run: ")
        assert "[parameters:" not in result.output and "sqlalche.me" not in result.output
    assert _status_of_runs(pg_database_url) == statuses

    monkeypatch.undo()
    sim_env(sim, pg_database_url)
    again = CliRunner().invoke(app, ["run", "--no-prefect"])
    assert again.exit_code == 0, again.output
    assert _status_of_runs(pg_database_url) == [*statuses, "succeeded"]
    engine = make_engine(pg_database_url)
    try:
        with engine.connect() as conn:  # the lock was released (or died with its connection)
            held = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
            assert conn.execute(held).scalar() == 0
    finally:
        engine.dispose()


@pg_only
def test_releasing_a_lock_whose_connection_died_is_not_an_error(pg_database_url):
    engine = make_engine(pg_database_url)
    try:
        with writer_lock(engine, "org"):
            assert _terminate_other_backends(pg_database_url) >= 1
        with writer_lock(engine, "org"):  # the dead session's lock is gone: a new run gets it at once
            pass
    finally:
        engine.dispose()


def test_read_commands_of_a_locked_database_still_read(simulator, sim_env, tmp_path):
    """History reads while a run holds the writer lock (the lock is for writers only)."""
    env = sim_env(simulator, f"sqlite:///{tmp_path / 'r.db'}")
    assert CliRunner().invoke(app, ["run", "--no-prefect"]).exit_code == 0
    engine = make_engine(env["DATABASE_URL"])
    done = threading.Event()
    try:
        with writer_lock(engine, "org"):
            result = CliRunner().invoke(app, ["history", "nobody@example.com"])
            done.set()
    finally:
        engine.dispose()
    assert done.is_set() and result.exit_code == 1
    assert _one_line(result.output) == "okta-flex-sync: no history for 'nobody@example.com'"


@pg_only
def test_a_connection_lost_while_reporting_after_publish_still_reports_success(
        fresh_simulator, sim_env, pg_database_url, monkeypatch):
    from conftest import _truncate_all

    import okta_flex_sync.jobs.nightly

    engine = make_engine(pg_database_url)
    _truncate_all(engine)
    engine.dispose()
    sim_env(fresh_simulator(users=50, seed=62), pg_database_url)
    original = okta_flex_sync.jobs.nightly.report
    calls = []

    def report_whose_connection_dies(engine, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                _terminate_other_backends(pg_database_url)
                conn.execute(text("SELECT 1"))  # the server ended this session: raises
        return original(engine, *args, **kwargs)
    monkeypatch.setattr(okta_flex_sync.jobs.nightly, "report", report_whose_connection_dies)
    result = CliRunner().invoke(app, ["run", "--no-prefect"])
    assert result.exit_code == 0, result.output
    assert len(calls) == 2
    assert _status_of_runs(pg_database_url) == ["succeeded"]


def test_a_file_that_is_not_a_database_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.db").write_text("not a database\n")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///notes.db")
    result = CliRunner().invoke(app, ["history", "ann@example.com"])
    assert result.exit_code == 2, result.output
    assert _one_line(result.output) == ("okta-flex-sync: that file is not a SQLite database "
                                        "(DATABASE_URL=sqlite:///notes.db): point DATABASE_URL at the okta-flex-sync database")
    assert (tmp_path / "notes.db").read_text() == "not a database\n"
