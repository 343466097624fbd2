"""Shared fixtures: real SQLite and Postgres databases, the bundled simulator, Prefect harness.

Postgres comes from TEST_POSTGRES_URL (default: the local trust-auth server's `test` database).
Each test session creates its own throw-away database there, so parallel sessions never clash.
Set TEST_DATABASES=sqlite to skip Postgres entirely (it is never skipped silently in CI).
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from okta_flex_sync.storage.engine import make_engine, upgrade

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DATABASES = [d.strip() for d in os.environ.get("TEST_DATABASES", "sqlite,postgres").split(",") if d.strip()]

# Fake credentials used by every test; the secret-scanning tests look for these strings.
FAKE_SECRETS = {
    "okta_api_token": "00FAKE-okta-token-do-not-leak-7f3a9c",
    "twilio_auth_token": "fake0auth0token0do0not0leak00a1b2",
}


def _truncate_all(engine) -> None:
    from okta_flex_sync.models.tables import metadata

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for t in reversed(metadata.sorted_tables):
                conn.execute(t.delete())


@pytest.fixture(scope="session")
def pg_database_url():
    """A fresh Postgres database for this test session, dropped afterwards."""
    if "postgres" not in DATABASES:
        pytest.skip("Postgres disabled by TEST_DATABASES")
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"ofs_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # a clear failure, never a silent skip: CI must test Postgres
        pytest.fail(f"Postgres at {PG_ADMIN_URL} is not reachable: {exc}")
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A SQLite database migrated once per session; tests get copies (Alembic per test cost ~0.2 s)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file before copying
    engine.dispose()
    return path


def migrated_sqlite_url(template: Path, path: Path) -> str:
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path):
    """A migrated, empty database URL: SQLite file or the session's Postgres database."""
    if request.param == "sqlite":
        yield migrated_sqlite_url(request.getfixturevalue("sqlite_template"), tmp_path / "test.db")
    else:
        url = request.getfixturevalue("pg_database_url")
        engine = make_engine(url)
        _truncate_all(engine)
        engine.dispose()
        yield url


@pytest.fixture
def engine(database_url):
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test harness (ephemeral API + temp database) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def simulator():
    """A small simulated org served on a random localhost port for the whole session.

    Tests must not mutate it; use `fresh_simulator` for that.
    """
    from simulator import SimulatorConfig, start_simulator

    sim = start_simulator(SimulatorConfig(users=300, seed=7))
    yield sim
    sim.stop()


@pytest.fixture
def fresh_simulator():
    """A function-scoped simulator factory: `fresh_simulator(users=..., seed=..., ...)`."""
    from simulator import SimulatorConfig, start_simulator

    started = []

    def factory(**kwargs):
        sim = start_simulator(SimulatorConfig(**kwargs))
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


@pytest.fixture
def sim_env(monkeypatch, tmp_path):
    """Point okta-flex-sync settings at a simulator and a temp SQLite DB/report dir."""

    def apply(sim, database_url=None):
        env = sim.env()
        env["DATABASE_URL"] = database_url or f"sqlite:///{tmp_path / 'run.db'}"
        env["REPORT_DIR"] = str(tmp_path / "reports")
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return env

    return apply


@pytest.fixture(scope="module")
def vcr_cassette_dir(request) -> str:
    """Cassettes stay in tests/cassettes/<test module>, whichever tier folder the module is in."""
    from cassette_support import CASSETTES

    return str(CASSETTES / request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def vcr_config():
    """vcrpy settings for every cassette test: secrets scrubbed centrally (tests/cassette_support.py)."""
    from cassette_support import VCR_CONFIG

    return VCR_CONFIG
