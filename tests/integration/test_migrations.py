"""Migrations bring SQLite and Postgres to the same schema, idempotently, and back down."""
from alembic import command
from sqlalchemy import inspect, text

from okta_flex_sync.models.tables import VIEWS, metadata
from okta_flex_sync.storage.engine import (
    HEAD_REVISION,
    alembic_config,
    current_revision,
    make_engine,
    upgrade,
)


def test_schema_matches_models_on_both_databases(engine):
    upgrade(engine)  # a second upgrade is a no-op
    assert current_revision(engine) == HEAD_REVISION
    insp = inspect(engine)
    for table in metadata.sorted_tables:
        cols = {c["name"] for c in insp.get_columns(table.name)}
        assert cols == set(table.columns.keys()), table.name
    assert set(VIEWS) <= set(insp.get_view_names())
    with engine.connect() as conn:
        for view in VIEWS:
            conn.execute(text(f"SELECT * FROM {view}")).fetchall()


def test_downgrade_to_base_and_up_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = make_engine(url)
    upgrade(engine)
    _alembic(engine, "downgrade", "base")
    assert "role_history" not in inspect(engine).get_table_names()
    upgrade(engine)
    assert "role_history" in inspect(engine).get_table_names()
    engine.dispose()


def test_db_upgrade_command(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from okta_flex_sync.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"revision {HEAD_REVISION}" in result.output


def test_migrations_and_models_agree(engine):
    """Autogenerate finds nothing to change: the frozen migration matches models/tables.py."""
    import warnings

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # expression indexes cannot be compared on SQLite
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_head_revision_constant_is_the_newest_migration():
    """`ensure_schema` trusts HEAD_REVISION to skip Alembic; a new migration must move it."""
    from alembic.script import ScriptDirectory

    from okta_flex_sync.storage.engine import HEAD_REVISION

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert HEAD_REVISION == head


def test_ensure_schema_upgrades_sqlite_and_refuses_stale_postgres(tmp_path, monkeypatch, engine):
    import pytest

    from okta_flex_sync.jobs.lifecycle import ensure_schema
    from okta_flex_sync.settings import load_settings
    from okta_flex_sync.storage.connect import SchemaOutOfDate

    fresh = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    monkeypatch.setenv("DATABASE_URL", str(fresh.url))
    ensure_schema(fresh, load_settings())  # SQLite migrates itself
    assert current_revision(fresh) == HEAD_REVISION
    ensure_schema(fresh, load_settings())  # at head: nothing to do
    fresh.dispose()

    if engine.dialect.name != "postgresql":
        return
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    ensure_schema(engine, load_settings())  # at head
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    try:
        with pytest.raises(SchemaOutOfDate, match="okta-flex-sync db upgrade"):
            ensure_schema(engine, load_settings())
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE alembic_version SET version_num = '{HEAD_REVISION}'"))


def _alembic(engine, verb: str, revision: str) -> None:
    with engine.begin() as conn:
        cfg = alembic_config(engine.url.render_as_string(hide_password=False))
        cfg.attributes["connection"] = conn
        getattr(command, verb)(cfg, revision)


def test_0002_indexes_current_history_rows_and_keeps_them(engine):
    """A database at 0001 with history in it gains the current-rows index, rows untouched, and
    the nightly's current-row read uses it."""
    from datetime import datetime

    from okta_flex_sync.models.records import VALID_TO_CURRENT
    from okta_flex_sync.models.tables import role_history
    from okta_flex_sync.storage.bulk import insert_tuples
    from okta_flex_sync.storage.history import current_history

    _alembic(engine, "downgrade", "0001")
    try:
        assert "ix_role_history_current" not in {i["name"] for i in inspect(engine).get_indexes("role_history")}
        cols = ["okta_user_id", "login", "app_username", "status", "assigned", "roles", "full_name", "email",
                "valid_from", "valid_to", "run_id", "source"]
        with engine.begin() as conn:
            insert_tuples(conn, role_history, cols, [
                ("00u-m1", "m1@example.com", "m1", "ACTIVE", True, "agent", "M One", None,
                 datetime(2026, 1, 1), datetime(2026, 2, 1), "r-mig", "nightly"),
                ("00u-m1", "m1@example.com", "m1", "ACTIVE", True, "admin", "M One", None,
                 datetime(2026, 2, 1), VALID_TO_CURRENT, "r-mig", "nightly")])
        _alembic(engine, "upgrade", "head")
        assert current_revision(engine) == HEAD_REVISION
        index = {i["name"]: i for i in inspect(engine).get_indexes("role_history")}["ix_role_history_current"]
        assert index["column_names"] == ["valid_to", "okta_user_id"]
        with engine.connect() as conn:
            current = current_history(conn)
            assert current["00u-m1"][0].roles == "admin"
            if engine.dialect.name == "sqlite":
                sql = ("SELECT okta_user_id FROM role_history WHERE valid_to = "
                       "'9999-12-31 00:00:00.000000'")
                plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
                assert "ix_role_history_current" in plan
    finally:
        _alembic(engine, "upgrade", "head")
        with engine.begin() as conn:
            conn.execute(role_history.delete().where(role_history.c.run_id == "r-mig"))
