"""The data-team DataFrame API answers the same on SQLite and Postgres, whatever WHEN format
it is given, with honest dtypes (UTC timestamps, NaT for open periods, bool, role lists)."""
from datetime import datetime

import pandas as pd
import pytest

from okta_flex_sync.analytics import frames
from okta_flex_sync.models.tables import drift_findings, role_history, sync_runs
from okta_flex_sync.storage.bulk import insert_tuples

OPEN = datetime(9999, 12, 31)
COLS = ["okta_user_id", "login", "app_username", "status", "assigned", "roles", "full_name", "email",
        "valid_from", "valid_to", "run_id", "source"]
D = datetime
HISTORY = [
    # ann: agent, then admin too, then suspended and unassigned (three kinds of change at once)
    ("00u1", "ann@x.com", "ann", "ACTIVE", True, "agent", "Ann", None, D(2026, 1, 1), D(2026, 3, 1, 10), "r1", "nightly"),
    ("00u1", "ann@x.com", "ann", "ACTIVE", True, "admin,agent", "Ann", None, D(2026, 3, 1, 10), D(2026, 6, 1), "r2", "nightly"),
    ("00u1", "ann@x.com", "ann", "SUSPENDED", False, "", "Ann", None, D(2026, 6, 1), OPEN, "r3", "nightly"),
    # bob: a rename is a new row but not a change of roles, assignment or status
    ("00u2", "bob@x.com", "bob", "ACTIVE", True, "agent", "Bob", None, D(2026, 2, 1), D(2026, 3, 1, 12), "r1", "nightly"),
    ("00u2", "bob@x.com", "bob", "ACTIVE", True, "agent", "Robert", None, D(2026, 3, 1, 12), D(2026, 4, 1), "r2", "nightly"),
    ("00u2", "bob@x.com", "bob", "ACTIVE", True, "agent,supervisor", "Robert", None, D(2026, 4, 1), OPEN, "r3", "backfill"),
    # cy: first seen exactly at noon
    ("00u3", "cy@x.com", "cy", "ACTIVE", True, "admin", "Cy", None, D(2026, 3, 1, 12), OPEN, "r2", "nightly"),
]


@pytest.fixture
def history(engine):
    with engine.begin() as conn:
        insert_tuples(conn, role_history, COLS, HISTORY)
    return engine


@pytest.mark.parametrize("as_of, expected", [
    ("2026-03-01T12:00:00", {"00u1": ["admin", "agent"], "00u2": ["agent"], "00u3": ["admin"]}),
    ("2026-03-01 12:00:00", {"00u1": ["admin", "agent"], "00u2": ["agent"], "00u3": ["admin"]}),
    ("2026-03-01T12:00:00Z", {"00u1": ["admin", "agent"], "00u2": ["agent"], "00u3": ["admin"]}),
    ("2026-03-01T13:00:00+01:00", {"00u1": ["admin", "agent"], "00u2": ["agent"], "00u3": ["admin"]}),
    ("2026-03-01 11:59:59.999999", {"00u1": ["admin", "agent"], "00u2": ["agent"]}),
    ("2026-03-01", {"00u1": ["agent"], "00u2": ["agent"]}),
    ("2026-07-01", {"00u1": [], "00u2": ["agent", "supervisor"], "00u3": ["admin"]}),
    ("2025-12-31T23:59:59", {}),
])
def test_snapshot_any_when_format(history, as_of, expected):
    df = frames.snapshot(history, as_of)
    assert dict(zip(df.okta_user_id, df.roles)) == expected


def test_snapshot_dtypes_and_values(history):
    df = frames.snapshot(history, "2026-07-01")
    assert list(df.columns) == ["okta_user_id", "login", "status", "assigned", "roles", "valid_from", "run_id"]
    assert str(df.valid_from.dtype) == "datetime64[us, UTC]"
    assert df.assigned.dtype == bool
    assert str(df.login.dtype) == "string"
    ann = df.set_index("okta_user_id").loc["00u1"]
    assert ann.status == "SUSPENDED" and ann.assigned is False or not ann.assigned
    assert ann.valid_from == pd.Timestamp("2026-06-01T00:00:00Z")
    assert ann.run_id == "r3"


def test_changes_are_real_changes(history):
    df = frames.changes(history, "2026-03-01", "2026-07-01")
    got = [(r.okta_user_id, r.changed_at.isoformat(), r.change_type) for r in df.itertuples()]
    assert got == [
        ("00u1", "2026-03-01T10:00:00+00:00", "roles"),
        ("00u2", "2026-04-01T00:00:00+00:00", "roles"),
        ("00u1", "2026-06-01T00:00:00+00:00", "roles"),
        ("00u1", "2026-06-01T00:00:00+00:00", "assignment"),
        ("00u1", "2026-06-01T00:00:00+00:00", "status"),
    ]
    last = df.iloc[-1]
    assert (last.roles_before, last.roles_after) == (["admin", "agent"], [])
    assert (last.status_before, last.status_after) == ("ACTIVE", "SUSPENDED")
    assert (bool(last.assigned_before), bool(last.assigned_after)) == (True, False)
    assert str(df.changed_at.dtype) == "datetime64[us, UTC]"
    assert str(df.assigned_before.dtype) == "boolean" and df.assigned_after.dtype == bool


def test_changes_half_open_and_first_seen(history):
    # [12:00, 12:00) is empty; [12:00, 12:00:01) holds cy's first observation (only when asked)
    assert frames.changes(history, "2026-03-01T12:00:00", "2026-03-01 12:00:00", include_first_seen=True).empty
    assert frames.changes(history, "2026-03-01T12:00:00", "2026-03-01T12:00:01").empty
    seen = frames.changes(history, "2026-03-01T12:00:00", "2026-03-01T12:00:01", include_first_seen=True)
    assert seen[["okta_user_id", "change_type"]].values.tolist() == [["00u3", "first_seen"]]
    assert seen.roles_before.tolist() == [None] and seen.assigned_before.isna().tolist() == [True]
    every = frames.changes(history, "2020-01-01", "2026-12-01", include_first_seen=True)
    assert (every.change_type == "first_seen").sum() == 3
    assert len(every) == 8


def test_grants_merge_consecutive_rows(history):
    df = frames.grants(history)
    got = [(r.okta_user_id, r.role, r.granted_at.isoformat(), None if pd.isna(r.revoked_at) else r.revoked_at.isoformat())
           for r in df.itertuples()]
    assert got == [
        ("00u1", "admin", "2026-03-01T10:00:00+00:00", "2026-06-01T00:00:00+00:00"),
        ("00u1", "agent", "2026-01-01T00:00:00+00:00", "2026-06-01T00:00:00+00:00"),
        ("00u2", "agent", "2026-02-01T00:00:00+00:00", None),
        ("00u2", "supervisor", "2026-04-01T00:00:00+00:00", None),
        ("00u3", "admin", "2026-03-01T12:00:00+00:00", None),
    ]
    assert str(df.revoked_at.dtype) == "datetime64[us, UTC]"
    in_effect = frames.grants(history, "2026-05-01")
    assert sorted(zip(in_effect.okta_user_id, in_effect.role)) == [
        ("00u1", "admin"), ("00u1", "agent"), ("00u2", "agent"), ("00u2", "supervisor"), ("00u3", "admin")]
    assert frames.grants(history, "2026-07-01").role.tolist() == ["agent", "supervisor", "admin"]


def test_history_never_shows_the_sentinel(history):
    df = frames.history(history)
    assert len(df) == 7
    assert df.valid_to.isna().sum() == 3
    assert df.valid_to.max() == pd.Timestamp("2026-06-01T00:00:00Z")
    assert df.assigned.dtype == bool and df.id.dtype == "int64"


def test_findings_of_latest_run_at_or_before(engine):
    with engine.begin() as conn:
        for rid, day in (("run-a", 1), ("run-b", 2)):
            conn.execute(sync_runs.insert().values(run_id=rid, flow="nightly-sync", started_at=D(2026, 5, day),
                                                   finished_at=D(2026, 5, day, 1), status="succeeded",
                                                   parameters={}, counts={}, watermarks={}))
            conn.execute(drift_findings.insert().values(run_id=rid, kind="roles_mismatch", severity="medium",
                                                        login=f"{rid}@x.com", expected="admin", actual="agent"))
    assert frames.findings(engine, as_of="2026-05-01T12:00").login.tolist() == ["run-a@x.com"]
    assert frames.findings(engine).login.tolist() == ["run-b@x.com"]
    assert frames.findings(engine, as_of="2026-04-01").empty
