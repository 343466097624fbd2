"""0003 converts a populated 0002 database in place: SQLite timestamps in one canonical form,
`role_changes` with change types, `role_grants`, Postgres comments; no row lost."""
from alembic import command
from sqlalchemy import func, inspect, select, text

from okta_flex_sync.models.tables import role_history, sync_runs
from okta_flex_sync.storage.engine import (
    HEAD_REVISION,
    alembic_config,
    current_revision,
)

CANONICAL = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]"


def _alembic(engine, verb, revision):
    with engine.begin() as conn:
        cfg = alembic_config(engine.url.render_as_string(hide_password=False))
        cfg.attributes["connection"] = conn
        getattr(command, verb)(cfg, revision)


def test_0003_upgrades_populated_0002_database(engine):
    _alembic(engine, "downgrade", "0002")
    try:
        assert "role_grants" not in inspect(engine).get_view_names()
        sqlite = engine.dialect.name == "sqlite"
        # (Postgres `timestamp` ignores a zone in a literal, so only SQLite gets one.)
        end = "2026-03-01 01:00:00+01:00" if sqlite else "2026-03-01 00:00:00"
        with engine.begin() as conn:
            # Written by another tool: `T`, no fraction, a zone (SQLite keeps whatever text it is given).
            conn.execute(text(
                "INSERT INTO sync_runs (run_id, flow, started_at, status, parameters, counts, watermarks) VALUES "
                "('m1', 'nightly-sync', '2026-01-01T00:00:00', 'succeeded', '{}', '{}', '{}')"))
            conn.execute(text(
                "INSERT INTO role_history (okta_user_id, login, status, assigned, roles, full_name, valid_from, "
                "valid_to, run_id, source) VALUES "
                "('00uM', 'm@x.com', 'ACTIVE', true, 'agent', 'M', '2026-01-01T00:00:00', :end, 'm1', 'nightly'),"
                "('00uM', 'm@x.com', 'ACTIVE', true, 'admin', 'M', '2026-03-01 00:00:00', '9999-12-31 00:00:00.000000', 'm1', 'nightly')"), {"end": end})
        _alembic(engine, "upgrade", "head")
        assert current_revision(engine) == HEAD_REVISION
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(role_history)).scalar() == 2
            assert conn.execute(select(func.count()).select_from(sync_runs)).scalar() == 1
            if sqlite:
                stored = conn.execute(text("SELECT valid_from, valid_to FROM role_history ORDER BY valid_from")).all()
                assert [tuple(r) for r in stored] == [
                    ("2026-01-01 00:00:00.000000", "2026-03-01 00:00:00.000000"),
                    ("2026-03-01 00:00:00.000000", "9999-12-31 00:00:00.000000")]
                assert conn.execute(text("SELECT started_at FROM sync_runs")).scalar() == "2026-01-01 00:00:00.000000"
                assert conn.execute(text(f"SELECT count(*) FROM role_history WHERE valid_from NOT GLOB '{CANONICAL}'")).scalar() == 0
            changes = conn.execute(text("SELECT change_type, roles_before, roles_after FROM role_changes "
                                        "ORDER BY changed_at, change_type")).all()
            assert [tuple(r) for r in changes] == [("first_seen", None, "agent"), ("roles", "agent", "admin")]
            grants = conn.execute(text("SELECT role FROM role_grants ORDER BY granted_at")).scalars().all()
            assert grants == ["agent", "admin"]
            if not sqlite:
                comment = conn.execute(text("SELECT col_description('role_history'::regclass, "
                                            "(SELECT attnum FROM pg_attribute WHERE attrelid = 'role_history'::regclass "
                                            "AND attname = 'valid_to'))")).scalar()
                assert "9999-12-31" in comment
                assert "first_seen" in conn.execute(text("SELECT obj_description('role_changes'::regclass)")).scalar()
        _alembic(engine, "downgrade", "0002")  # and back: the old view again, rows kept
        with engine.connect() as conn:
            assert "role_grants" not in inspect(engine).get_view_names()
            assert conn.execute(text("SELECT count(*) FROM role_changes")).scalar() == 2
    finally:
        _alembic(engine, "upgrade", "head")
        with engine.begin() as conn:
            conn.execute(role_history.delete().where(role_history.c.run_id == "m1"))
            conn.execute(sync_runs.delete().where(sync_runs.c.run_id == "m1"))


def test_frozen_views_of_0003_are_the_models_views():
    """Fresh databases (the migration's frozen SQL) equal what okta_flex_sync.models.tables describes."""
    import importlib

    from okta_flex_sync.models.tables import view_sql

    mig = importlib.import_module("okta_flex_sync.storage.migrations.versions.0003_canonical_timestamps_and_analyst_views")
    squash = lambda sql: " ".join(sql.split())  # noqa: E731
    assert squash(mig._CHANGES) == squash(view_sql("role_changes", "sqlite")) == squash(view_sql("role_changes", "postgresql"))
    for dialect in ("sqlite", "postgresql"):
        assert squash(mig._GRANTS[dialect]) == squash(view_sql("role_grants", dialect))
