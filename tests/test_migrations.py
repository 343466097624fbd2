"""Migrations bring SQLite and Postgres to the same schema, idempotently, and back down."""
from alembic import command
from sqlalchemy import inspect, text

from models.tables import VIEWS, metadata
from okta_flex_sync.db import alembic_config, current_revision, make_engine, upgrade


def test_schema_matches_models_on_both_databases(engine):
    upgrade(engine)  # a second upgrade is a no-op
    assert current_revision(engine) == "0001"
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
    with engine.begin() as conn:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
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
    assert "revision 0001" in result.output


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

    from okta_flex_sync.db import HEAD_REVISION

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert HEAD_REVISION == head


def test_ensure_schema_upgrades_sqlite_and_refuses_stale_postgres(tmp_path, monkeypatch, engine):
    import pytest

    from okta_flex_sync.pipeline import SchemaOutOfDate, ensure_schema
    from okta_flex_sync.settings import load_settings

    fresh = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    monkeypatch.setenv("DATABASE_URL", str(fresh.url))
    ensure_schema(fresh, load_settings())  # SQLite migrates itself
    assert current_revision(fresh) == "0001"
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
            conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
