"""Role history: the SCD2 diff (one table), the row algebra backfill uses, and the invariants
(contiguous periods, one current row, history equals every snapshot) as properties on both databases."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from okta_flex_sync.core.history import (
    DELETED,
    TRACKED_FIELDS,
    HistoryRow,
    HistoryState,
    changed_fields,
    desired_state,
    diff_history,
    last_set_times,
    row_edits,
    splice,
    stage_change,
    state_at,
)
from okta_flex_sync.models.records import VALID_TO_CURRENT, AppAssignment, OktaUser
from okta_flex_sync.models.tables import role_history
from okta_flex_sync.storage import history as history_db

T0 = datetime(2026, 3, 1, 2, 0)
T1 = datetime(2026, 3, 2, 2, 0)


def user(uid="00u1", **over) -> OktaUser:
    base = dict(okta_user_id=uid, status="ACTIVE", login=f"{uid}@x.com", email=f"{uid}@X.com", full_name="Ann Veal",
                user_type="agent", roles="agent", invalid_roles="", image_url=None, last_updated=None)
    return OktaUser(**{**base, **over})


def assignment(uid="00u1", **over) -> AppAssignment:
    base = dict(okta_user_id=uid, app_username=f"{uid}@x.com", scope="USER", status="ACTIVE", roles="agent",
                invalid_roles="", last_updated=None)
    return AppAssignment(**{**base, **over})


def state(uid="00u1", **over) -> HistoryState:
    base = dict(okta_user_id=uid, login=f"{uid}@x.com", app_username=f"{uid}@x.com", status="ACTIVE", assigned=True,
                roles="agent", full_name="Ann Veal", email=f"{uid}@X.com")
    return HistoryState(**{**base, **over})


CURRENT = {"00u1": (state(), T0)}
H = timedelta(hours=1)

DIFF_CASES = [
    # id, current, users, assignments, deleted ids, observed_after, expected [(state, effective_at, closes)]
    ("role change dated by lastUpdated", CURRENT, {"00u1": user(roles="admin", last_updated=T1 - H)},
     {"00u1": assignment()}, (), None, [(state(roles="admin"), T1 - H, True)]),
    ("no-op", CURRENT, {"00u1": user()}, {"00u1": assignment()}, (), None, []),
    ("email letter case is not a change", CURRENT, {"00u1": user(email="00U1@x.com")}, {"00u1": assignment()}, (),
     None, []),
    ("unassign closes with assigned=False, roles=''", CURRENT, {"00u1": user()}, {}, (), None,
     [(state(assigned=False, roles=""), T1, True)]),
    ("delete closes with status DELETED", CURRENT, {}, {}, ("00u1",), None,
     [(state(status=DELETED, assigned=False, roles=""), T1, True)]),
    ("reassign after unassign opens a tracked row", {"00u1": (state(assigned=False, roles=""), T0)},
     {"00u1": user()}, {"00u1": assignment()}, (), None, [(state(), T1, True)]),
    ("incremental run that did not see a user: no change", CURRENT, {}, {}, (), None, []),
    ("unassigned user's later profile edits are not tracked", {"00u1": (state(assigned=False, roles=""), T0)},
     {"00u1": user(full_name="Ann Other")}, {}, (), None, []),
    ("new assignment opens the first row", {}, {"00u2": user("00u2", last_updated=T0 - H)}, {"00u2": assignment("00u2")},
     (), None, [(state("00u2"), T0 - H, False)]),
    ("app user roles with ROLE_SOURCE=app_user", CURRENT, {"00u1": user()},
     {"00u1": assignment(roles="supervisor", last_updated=T1 - 2 * H)}, (), None, "app_user"),
    ("lastUpdated before the previous run never dates the change", CURRENT,
     {"00u1": user(roles="admin", last_updated=T0 + H)}, {"00u1": assignment()}, (), T0 + 2 * H,
     [(state(roles="admin"), T1, True)]),
    ("lastUpdated after the observation is ignored", CURRENT, {"00u1": user(roles="admin", last_updated=T1 + H)},
     {"00u1": assignment()}, (), None, [(state(roles="admin"), T1, True)]),
]


@pytest.mark.parametrize("case_id, current, users, assignments, deleted, after, expected", DIFF_CASES,
                         ids=[c[0] for c in DIFF_CASES])
def test_diff_history(case_id, current, users, assignments, deleted, after, expected):
    role_source = "user_type"
    if expected == "app_user":
        role_source, expected = "app_user", [(state(roles="supervisor"), T1 - 2 * H, True)]
    changes = diff_history(current, users, assignments, role_source=role_source, observed_at=T1, deleted_ids=deleted,
                           observed_after=after)
    assert [(c.state, c.effective_at, c.closes_current) for c in changes] == expected


def test_desired_state_of_a_deleted_user_stays_deleted():
    gone = state(status=DELETED, assigned=False, roles="")
    assert desired_state(None, None, role_source="user_type", previous=gone) == gone


# --- points and rows --------------------------------------------------------------------------

A, B, C = T0 + H, T0 + 2 * H, T0 + 3 * H
OLD = state()
NEW = state(roles="admin", status="SUSPENDED", full_name="Ann Other")

STAGE_CASES = [
    # id, prev, new, times, expected points
    ("no change, no points", OLD, OLD, {}, []),
    ("one time, one point", OLD, NEW, {"roles": A, "status": A, "full_name": A}, [(A, NEW)]),
    ("fields move one by one", OLD, NEW, {"status": A, "roles": B, "full_name": C},
     [(A, replace(OLD, status="SUSPENDED")), (B, replace(OLD, status="SUSPENDED", roles="admin")), (C, NEW)]),
    ("two fields at one time", OLD, NEW, {"status": A, "roles": B, "full_name": A},
     [(A, replace(OLD, status="SUSPENDED", full_name="Ann Other")), (B, NEW)]),
    ("no previous state: one point at the earliest time", None, NEW, {f: B for f in TRACKED_FIELDS} | {"login": A},
     [(A, NEW)]),
]


@pytest.mark.parametrize("case_id, prev, new, times, expected", STAGE_CASES, ids=[c[0] for c in STAGE_CASES])
def test_stage_change(case_id, prev, new, times, expected):
    assert stage_change(prev, new, times) == expected


LAST_SET_CASES = [
    # id, prev, points, new, expected
    ("one nightly point", OLD, [(B, NEW)], NEW, {"roles": B, "status": B, "full_name": B}),
    ("staged points", OLD, [(A, replace(OLD, status="SUSPENDED")), (B, NEW)], NEW,
     {"status": A, "roles": B, "full_name": B}),
    ("a field that moved away again does not count", OLD,
     [(A, replace(OLD, roles="admin")), (B, replace(OLD, roles="supervisor"))], replace(OLD, roles="admin"), {}),
    ("from nothing", None, [(A, NEW)], NEW, {f: A for f in TRACKED_FIELDS}),
    ("no points", OLD, [], NEW, {}),
]


@pytest.mark.parametrize("case_id, prev, points, new, expected", LAST_SET_CASES, ids=[c[0] for c in LAST_SET_CASES])
def test_last_set_times(case_id, prev, points, new, expected):
    assert last_set_times(prev, points, new) == expected


def rows_of(*points, run_id="n1", source="nightly", first_id=1) -> list[HistoryRow]:
    out = []
    for i, (moment, st_) in enumerate(points):
        valid_to = points[i + 1][0] if i + 1 < len(points) else VALID_TO_CURRENT
        out.append(HistoryRow(st_, moment, valid_to, run_id, source, first_id + i))
    return out


def periods(rows):
    return [(r.valid_from, r.valid_to, r.state.roles, r.id) for r in rows]


ADMIN = replace(OLD, roles="admin")
SUP = replace(OLD, roles="supervisor")
E = VALID_TO_CURRENT

SPLICE_CASES = [
    # id, rows (points), start, end, new points, expected periods (from, to, roles, id; None = new row)
    ("move a change earlier", [(T0, OLD), (C, ADMIN)], T0, C, [(A, ADMIN)],
     [(T0, A, "agent", 1), (A, E, "admin", None)]),
    ("same points: nothing changes", [(T0, OLD), (C, ADMIN)], T0, C, [(C, ADMIN)],
     [(T0, C, "agent", 1), (C, E, "admin", 2)]),
    ("drop a change the snapshots do not show", [(T0, OLD), (B, ADMIN)], T0, C, [], [(T0, E, "agent", 1)]),
    ("first period starts earlier", [(C, OLD)], None, C, [(A, OLD)], [(A, E, "agent", None)]),
    ("a later row repeating the new values is merged", [(T0, OLD), (C + H, ADMIN)], T0, C, [(B, ADMIN)],
     [(T0, B, "agent", 1), (B, E, "admin", None)]),
    ("rows after the interval keep their place", [(T0, OLD), (B, ADMIN), (C + H, SUP)], T0, C, [(A, ADMIN)],
     [(T0, A, "agent", 1), (A, C + H, "admin", None), (C + H, E, "supervisor", 3)]),
]


@pytest.mark.parametrize("case_id, points, start, end, new_points, expected", SPLICE_CASES,
                         ids=[c[0] for c in SPLICE_CASES])
def test_splice(case_id, points, start, end, new_points, expected):
    rows = rows_of(*points)
    out = splice(rows, start, end, new_points, run_id="b1")
    assert periods(out) == expected
    assert all(r.source == "backfill" and r.run_id == "b1" for r in out if r.id is None)
    again = splice(out, start, end, new_points, run_id="b2")
    assert again == out  # splicing the same points twice changes nothing


@pytest.mark.parametrize("bad", [[(T0, ADMIN)], [(C + H, ADMIN)], [(B, ADMIN), (A, SUP)], [(A, ADMIN), (A, SUP)]],
                         ids=["at start", "after end", "decreasing", "repeated"])
def test_splice_rejects_points_outside_the_interval(bad):
    with pytest.raises(ValueError):
        splice(rows_of((T0, OLD)), T0, C, bad, run_id="b")


def test_row_edits():
    old = rows_of((T0, OLD), (B, ADMIN), (C, SUP))
    new = splice(old, T0, C, [(A, ADMIN), (C, SUP)], run_id="b")
    edits = row_edits(old, new)
    assert edits.delete == (2,)
    assert edits.retime == ((1, A),)
    assert [(r.valid_from, r.state.roles) for r in edits.insert] == [(A, "admin")]
    assert not row_edits(old, old)


# --- properties ---------------------------------------------------------------------------------

def check_invariants(rows_by_user: dict[str, list]) -> None:
    """Per user: periods non-empty, contiguous (each valid_to is the next valid_from), one current row."""
    for uid, rows in rows_by_user.items():
        rows = sorted(rows, key=lambda r: r["valid_from"])
        assert sum(r["valid_to"] == VALID_TO_CURRENT for r in rows) == 1, uid
        assert rows[-1]["valid_to"] == VALID_TO_CURRENT, uid
        for a, b in pairwise(rows):
            assert a["valid_to"] == b["valid_from"], (uid, a, b)
        for r in rows:
            assert r["valid_from"] < r["valid_to"], (uid, r)


def history_by_user(conn) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in conn.execute(select(role_history).order_by(role_history.c.id)).mappings():
        out.setdefault(r["okta_user_id"], []).append(dict(r))
    return out


def state_of(row) -> HistoryState:
    return HistoryState(row["okta_user_id"], row["login"], row["app_username"], row["status"], bool(row["assigned"]),
                        row["roles"], row["full_name"], row["email"])


point_rows = st.lists(st.sampled_from([OLD, ADMIN, SUP, NEW]), min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(existing=point_rows, new_points=st.lists(st.sampled_from([OLD, ADMIN, SUP, NEW]), max_size=3),
       start_slot=st.integers(0, 5), width=st.integers(1, 6))
def test_splice_keeps_history_contiguous(existing, new_points, start_slot, width):
    """Whatever is spliced where, the result is contiguous with one current row, has no two
    neighbours with equal values, and the state outside the interval is unchanged."""
    def slot(i):
        return T0 + i * H

    rows = rows_of(*[(slot(2 * i), s) for i, s in enumerate(existing)])
    start, end = slot(start_slot), slot(start_slot + width)
    step = (end - start) / (len(new_points) + 1)
    points = [(start + step * (i + 1), s) for i, s in enumerate(new_points)]
    out = splice(rows, start, end, points, run_id="b")
    check_invariants({"u": [{"valid_from": r.valid_from, "valid_to": r.valid_to} for r in out]})
    assert all(a.state.key() != b.state.key() for a, b in pairwise(out))
    at_end = points[-1][1] if points else state_at(rows, start)
    assert same_or_none(state_at(out, end), at_end)
    for probe in [slot(i) + timedelta(minutes=m) for i in range(-1, 14) for m in (0, 1)]:
        if probe <= start or any(end < r.valid_from <= probe for r in rows):
            assert same_or_none(state_at(out, probe), state_at(rows, probe)), probe
        elif probe > end:  # between the interval and the next stored row: the interval's last state
            assert same_or_none(state_at(out, probe), at_end), probe
    for moment, st_ in points:
        assert same_or_none(state_at(out, moment), st_)


def same_or_none(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.key() == b.key())


USERS = ("00uA", "00uB", "00uC")
_user_plan = st.fixed_dictionaries({
    "fate": st.sampled_from(["assigned", "assigned", "unassigned", "unseen", "deleted"]),
    "roles": st.sampled_from(["agent", "admin", "agent,supervisor", ""]),
    "status": st.sampled_from(["ACTIVE", "ACTIVE", "SUSPENDED", "DEPROVISIONED"]),
    "name": st.sampled_from(["Ann Veal", "Ann Other"]),
    "email": st.sampled_from(["a@x.com", "A@X.com", "b@x.com"]),
    "updated": st.sampled_from(["none", "inside", "stale"]),
    "minutes": st.integers(1, 24 * 60 - 1),
})
snapshot_plans = st.lists(st.fixed_dictionaries({u: _user_plan for u in USERS}), min_size=1, max_size=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans=snapshot_plans)
def test_nightly_history_invariants(engine, plans):
    """Random snapshot sequences through diff_history + history_db.apply_history on the real database:
    periods are contiguous with exactly one current row per user, and the state at every snapshot
    time equals what that snapshot says."""
    with engine.begin() as conn:
        conn.execute(delete(role_history))
    expected: list[dict[str, HistoryState | None]] = []
    model: dict[str, HistoryState | None] = {}
    gone: set[str] = set()
    times = [T0 + timedelta(days=i) for i in range(len(plans))]
    for i, plan in enumerate(plans):
        at = times[i]
        users, assignments, deleted = {}, {}, []
        for uid, p in plan.items():
            fate = "deleted" if uid in gone else p["fate"]
            if fate == "unseen":
                continue
            if fate == "deleted":
                gone.add(uid)
                deleted.append(uid)
                model[uid] = desired_state(None, None, role_source="user_type", previous=model.get(uid))
                continue
            updated = {"none": None, "inside": at - timedelta(minutes=p["minutes"]),
                       "stale": at - timedelta(days=1, minutes=p["minutes"])}[p["updated"]]
            users[uid] = user(uid, roles=p["roles"], status=p["status"], full_name=p["name"], email=p["email"],
                              last_updated=updated)
            if fate == "assigned":
                assignments[uid] = assignment(uid, last_updated=updated)
            model[uid] = desired_state(users[uid], assignments.get(uid), role_source="user_type",
                                       previous=model.get(uid))
        with engine.begin() as conn:
            current = history_db.current_history(conn)
            deleted = [u for u in deleted if u in current]
            changes = diff_history(current, users, assignments, role_source="user_type", observed_at=at,
                                   deleted_ids=deleted, observed_after=times[i - 1] if i else None)
            history_db.apply_history(conn, f"run{i}", changes)
        expected.append(dict(model))
    with engine.connect() as conn:
        rows = history_by_user(conn)
    check_invariants(rows)
    for at, want in zip(times, expected):
        for uid in USERS:
            got = [state_of(r) for r in rows.get(uid, []) if r["valid_from"] <= at < r["valid_to"]]
            assert len(got) <= 1
            assert same_or_none(got[0] if got else None, want.get(uid)), (at, uid)


def test_schema_rejects_a_second_current_row(engine):
    row = dict(okta_user_id="00u1", login="a@x.com", app_username="a@x.com", status="ACTIVE", assigned=True,
               roles="agent", full_name="Ann", email=None, valid_from=T0, valid_to=VALID_TO_CURRENT, run_id="r1",
               source="nightly")
    with engine.begin() as conn:
        conn.execute(insert(role_history).values(**row))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(role_history).values(**{**row, "valid_from": T1, "run_id": "r2"}))
    with engine.connect() as conn:
        assert conn.execute(select(role_history.c.run_id)).scalars().all() == ["r1"]


def test_apply_history_edits_moves_rows_without_tripping_the_unique_key(engine):
    """Retiming rows whose new end equals another row's old end must not collide mid-update."""
    s1, s2, s3 = state(), state(roles="admin"), state(roles="supervisor")
    with engine.begin() as conn:
        history_db.apply_history(conn, "r1", [_change(s1, T0, False)])
        history_db.apply_history(conn, "r2", [_change(s2, B, True)])
        history_db.apply_history(conn, "r3", [_change(s3, C, True)])
        old = history_db.history_rows(conn, ["00u1"])["00u1"]
        # s3 now starts at B and s2 goes: row 1 ends at B (row 2's old end was C, row 1's is B)
        new = splice(old, T0, C, [(A, s2), (B, s3)], run_id="b")
        history_db.apply_history_edits(conn, [row_edits(old, new)])
    with engine.connect() as conn:
        rows = history_by_user(conn)
    check_invariants(rows)
    assert [(r["valid_from"], r["roles"]) for r in sorted(rows["00u1"], key=lambda r: r["valid_from"])] == [
        (T0, "agent"), (A, "admin"), (B, "supervisor")]


def _change(st_, at, closes):
    from okta_flex_sync.core.history import HistoryChange

    return HistoryChange(st_, at, closes)


def test_changed_fields_ignores_email_case():
    assert changed_fields(state(email="A@x.com"), state(email="a@X.COM")) == ()
    assert changed_fields(None, state()) == TRACKED_FIELDS
