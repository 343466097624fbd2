"""Reconciliation: one scenario table (a line per rule or non-drift case), then field-level checks."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from okta_flex_sync.core.normalize import parse_worker
from okta_flex_sync.core.reconcile import (
    SEVERITY,
    expected_by_worker,
    reconcile,
    summarize,
)
from okta_flex_sync.models.records import (
    FINDING_KINDS,
    SEVERITIES,
    AppAssignment,
    OktaUser,
)

VALID = frozenset({"agent", "admin", "supervisor"})
ATTRS = {"full_name": "Ann Veal", "email": "Ann@X.com", "roles": ["agent"], "contact_uri": "client:ann_40x_2Ecom",
         "routing": {"skills": ["en"]}}


def user(uid="00u1", **over) -> OktaUser:
    base = dict(okta_user_id=uid, status="ACTIVE", login="ann@x.com", email="Ann@X.com", full_name="Ann Veal",
                user_type="agent", roles="agent", invalid_roles="", image_url=None, last_updated=None)
    base.update(over)
    return OktaUser(**base)


def assignment(uid="00u1", name="ann@x.com", **over) -> AppAssignment:
    base = dict(okta_user_id=uid, app_username=name, scope="USER", status="ACTIVE", roles="agent",
                invalid_roles="", last_updated=None)
    base.update(over)
    return AppAssignment(**base)


def worker(sid="WK1", name="ann@x.com", raw=None, **attrs):
    body = {**ATTRS, **attrs}
    body = {k: v for k, v in body.items() if v is not ...}  # `...` deletes a key
    return parse_worker({"sid": sid, "friendly_name": name, "attributes": raw if raw is not None else json.dumps(body)})


BOB = user("00u2", login="bob@x.com", email="Robert@X.com", full_name="Bob Smith")


def run(users=None, assignments=None, workers=None, role_source="user_type", owners=()):
    users = [user()] if users is None else users
    assignments = [assignment()] if assignments is None else assignments
    workers = [worker()] if workers is None else workers
    by_key = {}
    for u in owners:
        by_key[u.login.lower()] = u
        by_key[(u.email or "").lower()] = u
    return reconcile({u.okta_user_id: u for u in users}, assignments, workers, role_source=role_source,
                     valid_roles=VALID, find_owner=lambda name: by_key.get(name.lower()))


SCENARIOS = [
    # id, run() keyword arguments, expected kinds (in output order)
    ("in sync", {}, []),
    ("email letter case is not drift", dict(workers=[worker(email="ann@x.COM")]), []),
    ("NFD name is not drift",
     dict(users=[user(full_name="Zo\u00eb Veal")], workers=[worker(full_name="Zoe\u0308 Veal")]), []),
    ("extra spaces are not drift", dict(workers=[worker(full_name="  Ann \t  Veal ")]), []),
    ("NBSP is not drift", dict(workers=[worker(full_name="Ann\u00a0Veal")]), []),
    ("wfo roles are not compared", dict(workers=[worker(roles=["agent", "wfo.full_access", "wfo.team_leader"])]), []),
    ("role case is not drift", dict(workers=[worker(roles=["Agent"])]), []),
    ("roles as a comma string", dict(workers=[worker(roles="agent, wfo.full_access")]), []),
    ("image absent vs None", dict(workers=[worker(image_url=...)]), []),
    ("image null vs None", dict(workers=[worker(image_url=None)]), []),
    ("image empty vs None", dict(workers=[worker(image_url="")]), []),
    ("image equal", dict(users=[user(image_url="https://i/a.png")], workers=[worker(image_url="https://i/a.png")]), []),
    ("friendly_name letter case", dict(workers=[worker(name="ANN@X.com")]), []),
    ("app username letter case", dict(assignments=[assignment(name="Ann@X.COM")]), []),
    ("STAGED user with drifted worker", dict(users=[user(status="STAGED")], workers=[worker(roles=["admin"])]), []),
    ("PROVISIONED user without worker", dict(users=[user(status="PROVISIONED")], workers=[]), []),
    ("STAGED user with invalid role", dict(users=[user(status="STAGED", invalid_roles="boss")], workers=[]), []),
    ("LOCKED_OUT user counts as active", dict(users=[user(status="LOCKED_OUT")], workers=[]), ["missing_worker"]),
    ("missing worker", dict(workers=[]), ["missing_worker"]),
    ("roles mismatch", dict(users=[user(roles="admin,agent")]), ["roles_mismatch"]),
    ("wfo-only worker lacks Okta role", dict(workers=[worker(roles=["wfo.full_access"])]), ["roles_mismatch"]),
    ("no roles key on worker", dict(workers=[worker(roles=...)]), ["roles_mismatch"]),
    ("escalation to admin", dict(workers=[worker(roles=["agent", "admin"])]),
     ["privilege_escalation", "roles_mismatch"]),
    ("escalation to supervisor", dict(workers=[worker(roles=["supervisor"])]),
     ["privilege_escalation", "roles_mismatch"]),
    ("admin granted by Okta is no escalation",
     dict(users=[user(roles="admin")], workers=[worker(roles=["admin"])]), []),
    ("granted admin, missing agent: no escalation", dict(users=[user(roles="admin,agent")],
                                                         workers=[worker(roles=["admin"])]), ["roles_mismatch"]),
    ("full name mismatch", dict(workers=[worker(full_name="Ann Smith")]), ["full_name_mismatch"]),
    ("name letter case is drift", dict(workers=[worker(full_name="ann veal")]), ["full_name_mismatch"]),
    ("email mismatch", dict(workers=[worker(email="ann@y.com")]), ["email_mismatch"]),
    ("email missing on worker", dict(workers=[worker(email=...)]), ["email_mismatch"]),
    ("image mismatch", dict(users=[user(image_url="https://i/a.png")]), ["image_url_mismatch"]),
    ("image on worker, none in Okta", dict(workers=[worker(image_url="https://i/old.png")]), ["image_url_mismatch"]),
    ("every attribute drifted",
     dict(users=[user(image_url="https://i/a.png")],
          workers=[worker(full_name="X", email="x@y.z", roles=["admin"], image_url="https://i/b.png")]),
     ["privilege_escalation", "roles_mismatch", "full_name_mismatch", "email_mismatch", "image_url_mismatch"]),
    ("invalid role with worker", dict(users=[user(invalid_roles="boss")]), ["invalid_role"]),
    ("invalid role without worker", dict(users=[user(invalid_roles="boss")], workers=[]),
     ["invalid_role", "missing_worker"]),
    ("invalid role from app user profile", dict(assignments=[assignment(invalid_roles="wfo.full_access")],
                                                role_source="app_user"), ["invalid_role"]),
    ("app_user role source", dict(assignments=[assignment(roles="admin")], role_source="app_user"), ["roles_mismatch"]),
    ("SUSPENDED user: only its own finding",
     dict(users=[user(status="SUSPENDED")], workers=[worker(roles=["admin"], full_name="X")]),
     ["deactivated_user_has_worker"]),
    ("DEPROVISIONED user, deprovisioned app user",
     dict(users=[user(status="DEPROVISIONED")], assignments=[assignment(status="DEPROVISIONED")]),
     ["deactivated_user_has_worker"]),
    ("deactivated user without worker", dict(users=[user(status="DEPROVISIONED")], workers=[]), []),
    ("deactivated and unparseable", dict(users=[user(status="SUSPENDED")], workers=[worker(raw="[]")]),
     ["deactivated_user_has_worker"]),
    ("unparseable: only its own finding", dict(users=[user(invalid_roles="")], workers=[worker(raw="not json")]),
     ["unparseable_attributes"]),
    ("unparseable JSON array", dict(workers=[worker(raw="[]")]), ["unparseable_attributes"]),
    ("unparseable and invalid role", dict(users=[user(invalid_roles="boss")], workers=[worker(raw="null")]),
     ["invalid_role", "unparseable_attributes"]),
    ("orphan without owner", dict(workers=[worker(), worker("WK2", name="zed@x.com")]), ["orphan_worker"]),
    ("orphan owned by login", dict(users=[user(), BOB], workers=[worker(), worker("WK2", name="Bob@X.com")],
                                   owners=[BOB]), ["orphan_worker"]),
    ("orphan owned by email", dict(users=[user(), BOB], workers=[worker(), worker("WK2", name="robert@x.com")],
                                   owners=[BOB]), ["orphan_worker"]),
    ("unassigned app user: worker is orphan", dict(assignments=[assignment(status="UNASSIGNED")]), ["orphan_worker"]),
    ("inactive app user: worker is orphan", dict(assignments=[assignment(status="INACTIVE")]), ["orphan_worker"]),
    ("no assignments at all", dict(assignments=[]), ["orphan_worker"]),
    ("assigned user deleted from Okta", dict(users=[]), ["orphan_worker"]),
    ("worker renamed: orphan plus missing", dict(workers=[worker(name="ann.veal@x.com")]),
     ["orphan_worker", "missing_worker"]),
    ("empty friendly_name never matches", dict(assignments=[assignment(name="")], workers=[worker(name="")]),
     ["orphan_worker", "missing_worker"]),
    ("duplicate assignment rows", dict(assignments=[assignment(), assignment()]), []),
    ("two workers, one per user", dict(users=[user(), BOB], assignments=[assignment(), assignment("00u2", "bob@x.com")],
                                       workers=[worker(), worker("WK2", "bob@x.com", full_name="Bob Smith",
                                                                 email="robert@x.com")]), []),
]


@pytest.mark.parametrize("kwargs, kinds", [pytest.param(k, e, id=i) for i, k, e in SCENARIOS])
def test_reconcile_scenarios(kwargs, kinds):
    findings = run(**kwargs)
    assert [f.kind for f in findings] == kinds
    assert all(f.severity == SEVERITY[f.kind] for f in findings)


def test_unknown_role_source_is_rejected_even_without_workers():
    with pytest.raises(ValueError, match="role_source"):
        run(workers=[], role_source="groups")


def test_every_kind_has_a_scenario():
    covered = {k for _, _, kinds in SCENARIOS for k in kinds}
    assert covered == set(FINDING_KINDS)


@pytest.mark.parametrize("kwargs, expected", [
    (dict(workers=[worker(roles=["agent", "admin", "wfo.full_access"])]),
     dict(kind="privilege_escalation", severity="high", field="roles", expected="agent", actual="admin",
          worker_sid="WK1", okta_user_id="00u1", login="ann@x.com", app_username="ann@x.com")),
    (dict(users=[user(roles="admin,agent")], workers=[worker(roles=["agent", "wfo.x"])]),
     dict(kind="roles_mismatch", severity="medium", field="roles", expected="admin,agent", actual="agent")),
    (dict(workers=[worker(full_name="Ann  Smith")]),
     dict(kind="full_name_mismatch", severity="low", field="full_name", expected="Ann Veal", actual="Ann  Smith")),
    (dict(workers=[worker(email=...)]),
     dict(kind="email_mismatch", severity="low", field="email", expected="Ann@X.com", actual=None)),
    (dict(users=[user(image_url="https://i/a.png")]),
     dict(kind="image_url_mismatch", severity="low", field="image_url", expected="https://i/a.png", actual=None)),
    (dict(workers=[]),
     dict(kind="missing_worker", severity="info", okta_user_id="00u1", login="ann@x.com", app_username="ann@x.com",
          worker_sid=None, field=None)),
    (dict(users=[user(status="SUSPENDED")]),
     dict(kind="deactivated_user_has_worker", severity="high", field=None, actual="SUSPENDED", worker_sid="WK1")),
    (dict(workers=[worker(raw="[1]")]),
     dict(kind="unparseable_attributes", severity="medium", field="attributes",
          actual="attributes JSON is a array, not an object")),
    (dict(users=[user(roles="agent", invalid_roles="boss,wfo.x")]),
     dict(kind="invalid_role", severity="medium", field="userType", expected="agent", actual="boss,wfo.x",
          worker_sid="WK1")),
    (dict(assignments=[assignment(invalid_roles="x")], role_source="app_user"),
     dict(kind="invalid_role", field="roles", actual="x")),
    (dict(users=[user(), BOB], workers=[worker(), worker("WK2", "BOB@x.com")], owners=[BOB]),
     dict(kind="orphan_worker", severity="medium", okta_user_id="00u2", login="bob@x.com", app_username="BOB@x.com",
          worker_sid="WK2", expected="matched by login", actual=None)),
    (dict(users=[user(), BOB], workers=[worker(), worker("WK2", "robert@X.com")], owners=[BOB]),
     dict(kind="orphan_worker", okta_user_id="00u2", login="bob@x.com", expected="matched by email")),
    (dict(workers=[worker(), worker("WK2", "zed@x.com")]),
     dict(kind="orphan_worker", okta_user_id=None, login=None, app_username="zed@x.com", expected=None)),
], ids=["escalation", "roles", "full_name", "email", "image_url", "missing", "deactivated", "unparseable",
        "invalid_role", "invalid_role app_user", "orphan by login", "orphan by email", "orphan no owner"])
def test_finding_fields(kwargs, expected):
    findings = [f for f in run(**kwargs) if f.kind == expected["kind"]]
    assert len(findings) == 1
    got = findings[0].as_dict()
    assert {k: got[k] for k in expected} == expected


def test_output_is_sorted_by_severity_kind_username_sid():
    users = [user(f"00u{i}", login=f"u{i}@x.com", invalid_roles="boss" if i % 2 else "") for i in range(6)]
    assignments = [assignment(f"00u{i}", f"U{i}@x.com") for i in range(6)]
    workers = [worker(f"WK{i}", f"u{i}@x.com", roles=["admin"] if i % 3 else ["agent"], full_name="Ann Veal")
               for i in range(1, 5)] + [worker("WK9", "stray@x.com")]
    findings = reconcile({u.okta_user_id: u for u in users}, reversed(assignments), reversed(workers),
                         valid_roles=VALID)
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    keys = [(rank[f.severity], FINDING_KINDS.index(f.kind), f.app_username or "", f.worker_sid or "") for f in findings]
    assert keys == sorted(keys)
    again = reconcile({u.okta_user_id: u for u in users}, assignments, workers, valid_roles=VALID)
    assert again == findings


@pytest.mark.parametrize("kinds, expected", [
    ([], {}),
    (["orphan_worker", "orphan_worker", "missing_worker"], {"orphan_worker": 2, "missing_worker": 1}),
])
def test_summarize(kinds, expected):
    from okta_flex_sync.models.records import Finding

    counts = summarize([Finding(kind=k, severity=SEVERITY[k]) for k in kinds])
    assert list(counts) == list(FINDING_KINDS)
    assert counts == {k: expected.get(k, 0) for k in FINDING_KINDS}


@pytest.mark.parametrize("kwargs, sids", [
    ({}, {"WK1"}),
    (dict(users=[user(status="SUSPENDED")]), set()),
    (dict(users=[user(status="STAGED")]), set()),
    (dict(workers=[worker(raw="[]")]), set()),
    (dict(workers=[worker(), worker("WK2", "stray@x.com")]), {"WK1"}),
    (dict(workers=[worker(name="ANN@x.com")]), {"WK1"}),
])
def test_expected_by_worker(kwargs, sids):
    users = kwargs.get("users", [user()])
    workers = kwargs.get("workers", [worker()])
    got = expected_by_worker({u.okta_user_id: u for u in users}, [assignment()], workers)
    assert set(got) == sids
    for exp in got.values():
        assert (exp.okta_user_id, exp.full_name, exp.roles) == ("00u1", "Ann Veal", "agent")


# --------------------------------------------------------------------------- property

statuses = st.sampled_from(["ACTIVE", "STAGED", "PROVISIONED", "SUSPENDED", "DEPROVISIONED", "LOCKED_OUT", "UNKNOWN"])
app_statuses = st.sampled_from(["ACTIVE", "PROVISIONED", "INACTIVE", "UNASSIGNED", "DEPROVISIONED", None])
role_lists = st.lists(st.sampled_from(["agent", "admin", "supervisor", "wfo.full_access", "Admin"]), max_size=3)
names = st.sampled_from(["a@x.com", "A@X.com", "b@x.com", "c@x.com", ""])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(statuses, app_statuses, names, st.sampled_from(["agent", "admin", "", "admin,agent"]),
                       st.sampled_from(["", "boss"])), max_size=4),
    st.lists(st.tuples(names, role_lists, st.booleans()), max_size=5),
)
def test_reconcile_invariants(people, worker_specs):
    users = [user(f"00u{i}", status=s, login=f"user{i}@x.com", roles=r, invalid_roles=bad)
             for i, (s, _, _, r, bad) in enumerate(people)]
    assignments = [assignment(f"00u{i}", n, status=a) for i, (_, a, n, _, _) in enumerate(people)]
    workers = [worker(f"WK{i}", n, raw=None if ok else "[]", roles=roles)
               for i, (n, roles, ok) in enumerate(worker_specs)]
    findings = reconcile({u.okta_user_id: u for u in users}, assignments, workers, valid_roles=VALID)
    assert sum(summarize(findings).values()) == len(findings)
    for w in workers:
        kinds = {f.kind for f in findings if f.worker_sid == w.worker_sid} - {"invalid_role"}
        exclusive = kinds & {"orphan_worker", "deactivated_user_has_worker", "unparseable_attributes"}
        assert len(exclusive) <= 1 and (not exclusive or kinds == exclusive)
        if "privilege_escalation" in kinds:
            assert "roles_mismatch" in kinds
    assert {f.kind for f in findings} <= set(FINDING_KINDS)
