"""Retention (`runs_db.prune`): staging of the last N nightly runs, raw pages and System Log events
for N days; nothing else is touched.  Both databases."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from okta_flex_sync.models.records import AppAssignment, OktaUser, Worker
from okta_flex_sync.models.tables import (
    okta_log_events,
    raw_pages,
    staged_app_assignments,
    staged_okta_users,
    staged_workers,
    sync_runs,
)
from okta_flex_sync.storage import runs as runs_db
from okta_flex_sync.storage import staging as staging_db

NOW = datetime(2026, 11, 28, 2, 0)


def _run(engine, flow: str, started_at: datetime) -> str:
    run_id, _ = runs_db.open_run(engine, flow=flow, org_url="https://acme.okta.com", parameters={},
                               run_id=runs_db.new_run_id(started_at), started_at=started_at)
    with engine.begin() as conn:
        staging_db.land_users(conn, run_id, [OktaUser("00u1", "ACTIVE", "a@x.com", "a@x.com", "A", "agent", "agent", "",
                                                 None, started_at)])
        staging_db.land_assignments(conn, run_id, [AppAssignment("00u1", "a@x.com", "USER", "ACTIVE", "", "", started_at)])
        staging_db.land_workers(conn, run_id, [Worker("WK1", "a@x.com", "{}", "A", "a@x.com", None, "agent", None,
                                                 started_at)])
        for seq, fetched in enumerate((started_at, started_at + timedelta(minutes=30)), 1):
            staging_db.land_raw_page(conn, run_id, "users", seq, url="/api/v1/users", fetched_at=fetched,
                                body=b"[]", item_count=0)
    return run_id


def _count(engine, table, run_id=None) -> int:
    q = select(func.count()).select_from(table)
    if run_id is not None:
        q = q.where(table.c.run_id == run_id)
    with engine.connect() as conn:
        return conn.execute(q).scalar_one()


def test_prune_keeps_the_last_nightly_runs_staging_and_recent_pages(engine):
    days = [40, 20, 10, 3, 2, 1]
    nightly = [_run(engine, "nightly-sync", NOW - timedelta(days=d)) for d in days]
    other = _run(engine, "backfill", NOW - timedelta(days=5))  # staging of other flows goes too
    # A run started 30 days back minus 10 minutes: its second page is inside the 30-day window.
    edge = _run(engine, "nightly-sync", NOW - timedelta(days=30, minutes=10))
    with engine.begin() as conn:
        conn.execute(insert(okta_log_events), [
            {"uuid": f"e{d}", "published": NOW - timedelta(days=d), "event_type": "user.lifecycle.suspend",
             "payload": "{}"} for d in (45, 31, 29, 1)])
        runs_db.prune(conn, keep_staging_runs=3, raw_retention_days=30, now=NOW)

    kept = set(nightly[-3:])
    for run_id in [*nightly, other, edge]:
        for table in (staged_okta_users, staged_app_assignments, staged_workers):
            assert _count(engine, table, run_id) == (1 if run_id in kept else 0), (table.name, run_id)
    pages = {r: _count(engine, raw_pages, r) for r in [*nightly, other, edge]}
    assert pages[nightly[0]] == 0  # 40 days old
    assert pages[edge] == 1  # only the page fetched inside the window survives
    assert all(pages[r] == 2 for r in [*nightly[1:], other])
    with engine.connect() as conn:
        left = set(conn.execute(select(okta_log_events.c.uuid)).scalars())
        assert left == {"e29", "e1"}
        assert conn.execute(select(func.count()).select_from(sync_runs)).scalar_one() == len(days) + 2


@pytest.mark.parametrize("keep", [1, 14])
def test_prune_with_nothing_to_prune_changes_nothing(engine, keep):
    runs = [_run(engine, "nightly-sync", NOW - timedelta(hours=h)) for h in (2, 1)]
    with engine.begin() as conn:
        runs_db.prune(conn, keep_staging_runs=keep, raw_retention_days=120, now=NOW)
    assert _count(engine, staged_workers, runs[-1]) == 1
    assert _count(engine, staged_workers, runs[0]) == (1 if keep > 1 else 0)
    assert _count(engine, raw_pages) == 4
