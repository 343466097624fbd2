"""Run-to-run delta rules (okta_flex_sync.core.delta): pure, table-driven."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime

import pytest

from okta_flex_sync.core.delta import NEW, PERSISTING, compare_runs, finding_key

T0, T1, T2 = datetime(2026, 3, 1, 2), datetime(2026, 3, 2, 2), datetime(2026, 3, 3, 2)


def f(kind="roles_mismatch", worker=None, user=None, login=None, **extra) -> dict:
    return {"kind": kind, "severity": "medium", "worker_sid": worker, "okta_user_id": user, "login": login, **extra}


@pytest.mark.parametrize("finding, key", [
    (f(worker="WK1", user="00u1"), ("roles_mismatch", "worker:WK1")),
    (f(worker="WK1", user="00u2"), ("roles_mismatch", "worker:WK1")),  # same worker, another owner: same finding
    (f("missing_worker", user="00u1", login="a@x"), ("missing_worker", "user:00u1")),
    (f("missing_worker", login="a@x"), ("missing_worker", "user:a@x")),
    (f("orphan_worker", worker="WK9"), ("orphan_worker", "worker:WK9")),
    (f("invalid_role", user="00u3", worker=None), ("invalid_role", "user:00u3")),
    ({"kind": "x"}, ("x", "user:")),
])
def test_finding_key(finding, key):
    assert finding_key(finding) == key


def test_first_run_everything_is_new():
    d = compare_runs([f(worker="WK1"), f("missing_worker", user="00u1")], None, run_id="r1", started_at=T0)
    assert [(s.status, s.first_seen_run_id, s.first_seen_at) for s in d.sightings] == [
        ("new", "r1", T0), ("new", "r1", T0)]
    assert d.counts() == {"previous_run_id": None, "new": 2, "resolved": 0, "persisting": 0}
    assert d.resolved == []


@pytest.mark.parametrize("previous, current, statuses, resolved", [
    # same kind and worker persists, whatever the values now say
    ([f(worker="WK1", expected="agent")], [f(worker="WK1", expected="admin")], [PERSISTING], []),
    # another kind on the same worker is new; the old kind is resolved
    ([f(worker="WK1")], [f("privilege_escalation", worker="WK1")], [NEW], [("roles_mismatch", "WK1")]),
    # a worker-less finding follows the user
    ([f("missing_worker", user="00u1")], [f("missing_worker", user="00u1")], [PERSISTING], []),
    ([f("missing_worker", user="00u1")], [f("missing_worker", user="00u2")], [NEW], [("missing_worker", None)]),
    # a user's finding that gains a worker is another finding
    ([f("invalid_role", user="00u1")], [f("invalid_role", user="00u1", worker="WK1")], [NEW],
     [("invalid_role", None)]),
    # two findings on one key pair in order; a third is new
    ([f(worker="WK1", field="a"), f(worker="WK1", field="b")],
     [f(worker="WK1", field="a"), f(worker="WK1", field="b"), f(worker="WK1", field="c")],
     [PERSISTING, PERSISTING, NEW], []),
    ([f(worker="WK1"), f(worker="WK2"), f(worker="WK3")], [f(worker="WK2")], [PERSISTING],
     [("roles_mismatch", "WK1"), ("roles_mismatch", "WK3")]),
    ([], [f(worker="WK1")], [NEW], []),
    ([f(worker="WK1")], [], [], [("roles_mismatch", "WK1")]),
])
def test_matching(previous, current, statuses, resolved):
    d = compare_runs(current, previous, run_id="r2", started_at=T1, previous_run_id="r1", previous_started_at=T0)
    assert [s.status for s in d.sightings] == statuses
    assert [(r["kind"], r["worker_sid"]) for r in d.resolved] == resolved
    assert d.counts() == {"previous_run_id": "r1", "new": statuses.count(NEW), "resolved": len(resolved),
                          "persisting": statuses.count(PERSISTING)}


def test_first_seen_follows_the_unbroken_series():
    prev = [f(worker="WK1", first_seen_run_id="r0", first_seen_at=T0),  # seen since r0
            f(worker="WK2", first_seen_run_id=None, first_seen_at=None)]  # stored before migration 0004
    d = compare_runs([f(worker="WK1"), f(worker="WK2"), f(worker="WK3")], prev, run_id="r2", started_at=T2,
                     previous_run_id="r1", previous_started_at=T1)
    assert [(s.status, s.first_seen_run_id, s.first_seen_at) for s in d.sightings] == [
        ("persisting", "r0", T0), ("persisting", "r1", T1), ("new", "r2", T2)]


def test_a_finding_that_comes_back_starts_a_new_series():
    run1 = compare_runs([f(worker="WK1")], None, run_id="r1", started_at=T0)
    stored1 = [f(worker="WK1", first_seen_run_id=run1.sightings[0].first_seen_run_id,
                 first_seen_at=run1.sightings[0].first_seen_at)]
    run2 = compare_runs([], stored1, run_id="r2", started_at=T1, previous_run_id="r1", previous_started_at=T0)
    assert len(run2.resolved) == 1
    run3 = compare_runs([f(worker="WK1")], [], run_id="r3", started_at=T2, previous_run_id="r2",
                        previous_started_at=T1)
    assert (run3.sightings[0].status, run3.sightings[0].first_seen_run_id) == ("new", "r3")


def test_core_delta_is_pure():
    code = ("import sys, okta_flex_sync.core.delta; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'sqlalchemy', 'httpx', 'tasks')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
