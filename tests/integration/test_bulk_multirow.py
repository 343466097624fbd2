"""Bulk writes (issue 17b): on SQLite `insert_tuples` sends many rows per INSERT statement
instead of `executemany`; rows land exactly as given, in order, across statement and batch
boundaries, with hostile values; a bad row fails the caller's transaction.  Both databases."""
from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from okta_flex_sync.models.records import OktaUser
from okta_flex_sync.models.tables import staged_okta_users
from okta_flex_sync.storage import bulk
from okta_flex_sync.storage import runs as runs_db
from okta_flex_sync.storage import staging as staging_db
from okta_flex_sync.storage.common import USER_FIELDS

STARTED = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)
HOSTILE = ["=cmd|' /C calc'!A0", "Zo\u00eb \u2028 \U0001f600", "'; DROP TABLE okta_users; --", "?", "%s", ""]


def _users(n: int) -> list[OktaUser]:
    return [OktaUser(f"00u{i:07d}", "ACTIVE", f"user{i}@x.com", None if i % 7 == 0 else f"U{i}@x.com",
                     HOSTILE[i % len(HOSTILE)] or "Plain Name", "agent" if i % 2 else None, "agent", "",
                     None, None if i % 5 == 0 else datetime(2026, 1, 1, 0, 0, i % 60, 123456, tzinfo=UTC),
                     "" if i % 11 else "email unreadable")
            for i in range(n)]


def _open(engine) -> str:
    run_id, _ = runs_db.open_run(engine, flow="nightly", org_url="https://acme.okta.com", parameters={},
                                 run_id=runs_db.new_run_id(STARTED), started_at=STARTED)
    return run_id


def _staged(engine, run_id: str) -> list[OktaUser]:
    with engine.connect() as conn:
        return [OktaUser(*(v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v for v in row))
                for row in conn.execute(select(*[staged_okta_users.c[f] for f in USER_FIELDS])
                                        .where(staged_okta_users.c.run_id == run_id)
                                        .order_by(staged_okta_users.c.okta_user_id))]


@pytest.mark.parametrize("count", [1, 499, 500, 501, 1234, 5001])
def test_rows_land_exactly_across_statement_and_batch_boundaries(engine, count):
    run_id = _open(engine)
    users = _users(count)
    with engine.begin() as conn:
        assert staging_db.land_users(conn, run_id, users) == count
    assert _staged(engine, run_id) == users


def test_statements_stay_under_the_variable_limit(engine, monkeypatch):
    if engine.dialect.name != "sqlite":
        pytest.skip("multi-row INSERTs are the SQLite path")
    run_id = _open(engine)
    sent: list[int] = []
    monkeypatch.setattr(bulk, "_SQLITE_ROWS_PER_STATEMENT", 10_000)
    with engine.begin() as conn:
        driver = conn.connection.driver_connection
        before = driver.setlimit(bulk.sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 1000)
        original = conn.exec_driver_sql

        def counting(sql, params=None, *args, **kwargs):
            sent.append(len(params))
            return original(sql, params, *args, **kwargs)
        monkeypatch.setattr(conn, "exec_driver_sql", counting)
        try:
            staging_db.land_users(conn, run_id, _users(5000))
        finally:
            driver.setlimit(bulk.sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, before)
    columns = 1 + len(USER_FIELDS)  # 12: 83 rows (996 values) a statement
    assert sum(sent) == 5000 * columns
    assert set(sent[:-1]) == {83 * columns} and sent[-1] == (5000 % 83) * columns
    assert _staged(engine, run_id) == _users(5000)


def test_a_bad_row_fails_the_transaction(engine):
    run_id = _open(engine)
    users = _users(300)
    # SQLAlchemy's IntegrityError on SQLite; psycopg's own from Postgres' COPY.
    with pytest.raises((IntegrityError, psycopg.errors.IntegrityError)), engine.begin() as conn:
        staging_db.land_users(conn, run_id, [*users, users[150]])  # the same key twice
    assert _staged(engine, run_id) == []
