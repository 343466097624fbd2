"""Repair planning and the byte-preserving attributes patch."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from okta_flex_sync.core.normalize import parse_worker
from okta_flex_sync.core.reconcile import expected_by_worker, reconcile
from okta_flex_sync.core.repair_plan import (
    STRIP_ROLES,
    UPDATE_ATTRIBUTES,
    AttributesNotObject,
    RepairAction,
    _members,
    apply_plan_to_attributes,
    patch_attributes,
    plan_repairs,
)
from okta_flex_sync.models.records import AppAssignment, Finding, OktaUser

VALID = frozenset({"agent", "admin", "supervisor"})


def user(uid="00u1", **over) -> OktaUser:
    base = dict(okta_user_id=uid, status="ACTIVE", login="ann@x.com", email="Ann@X.com", full_name="Ann Veal",
                user_type="agent", roles="agent", invalid_roles="", image_url=None, last_updated=None)
    base.update(over)
    return OktaUser(**base)


def assignment(uid="00u1", name="ann@x.com") -> AppAssignment:
    return AppAssignment(okta_user_id=uid, app_username=name, scope="USER", status="ACTIVE", roles="",
                         invalid_roles="", last_updated=None)


BOB = user("00u2", login="bob@x.com", email="Robert@X.com", full_name="Bob Smith")

# --------------------------------------------------------------------------- patch_attributes


@pytest.mark.parametrize("raw, updates, remove, expected", [
    ('{"a":1}', {}, (), '{"a":1}'),
    ('{"a":1,"b":2}', {"a": 5}, (), '{"a":5,"b":2}'),
    ('{ "a" : 1 , "b" : 2 }', {"b": [1, 2]}, (), '{ "a" : 1 , "b" : [1, 2] }'),
    ('{"a":1,"b":2}', {}, ("a",), '{"b":2}'),
    ('{"a":1,"b":2}', {}, ("b",), '{"a":1}'),
    ('{"a":1,"b":2,"c":3}', {}, ("b",), '{"a":1,"c":3}'),
    ('{"a":1,"b":2}', {}, ("a", "b"), "{}"),
    ('{"a":1}', {}, ("zzz",), '{"a":1}'),
    ('{"a":1}', {"b": "é"}, (), '{"a":1,"b":"é"}'),
    ('{"a": 1, "b": 2}', {"c": None}, (), '{"a": 1, "b": 2, "c": null}'),
    ("{}", {"x": 1}, (), '{"x":1}'),
    ("  { }  ", {"x": 1}, (), '  { "x":1}  '),
    ('{"a":1}', {"x": 1, "y": 2}, ("a",), '{"x":1,"y":2}'),
    ('{\n  "a": 1,\n  "b": 2\n}', {"c": 3}, ("b",), '{\n  "a": 1,\n  "c": 3\n}'),
    ('{"r":1,"r":2}', {"r": 3}, (), '{"r":3,"r":3}'),  # a duplicated key is set everywhere
    ('{"r":1,"x":0,"r":2}', {}, ("r",), '{"x":0}'),
    ('{"a\\u00e9":1.50,"b":"\\u00e9"}', {"c": 1}, (), '{"a\\u00e9":1.50,"b":"\\u00e9","c":1}'),
    ('{"skills":{"en":1e2,"fr":[true,null]},"roles":["agent"]}', {"roles": ["admin", "wfo.x"]}, (),
     '{"skills":{"en":1e2,"fr":[true,null]},"roles":["admin", "wfo.x"]}'),
])
def test_patch_attributes(raw, updates, remove, expected):
    assert patch_attributes(raw, updates, remove) == expected
    assert isinstance(json.loads(expected), dict)  # the table itself is valid JSON


@pytest.mark.parametrize("raw", ["", "   ", "[]", "null", "5", '"{}"', "{", '{"a":1', '{"a" 1}', '{"a":1,}',
                                 '{a:1}', '{"a":1} x', '{"a":1}{}', '{"a":}', "[" * 50_000, '{"a":[' * 50_000])
def test_patch_attributes_rejects_non_objects(raw):
    with pytest.raises(AttributesNotObject):
        patch_attributes(raw, {"roles": []})


def test_patch_attributes_rejects_update_and_remove_of_one_key():
    with pytest.raises(ValueError, match="both"):
        patch_attributes('{"a":1}', {"a": 2}, ("a",))


json_leaf = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=8)
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)
layouts = st.sampled_from([
    dict(), dict(separators=(",", ":")), dict(indent=2), dict(indent="\t", ensure_ascii=False),
    dict(separators=(" , ", " : "), ensure_ascii=False),
])


def _value_texts(raw: str) -> dict[str, str]:
    members, _, _ = _members(raw)
    return {m.key: raw[m.value_start: m.end] for m in members}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_value, max_size=6), layouts,
       st.dictionaries(st.text(max_size=6), json_value, max_size=3), st.sets(st.text(max_size=6), max_size=3),
       st.booleans(), st.sampled_from(["", " ", "\n"]))
def test_patch_attributes_property(original, layout, updates, remove, remove_existing, pad):
    if remove_existing:
        remove = remove | set(list(original)[:2])
    remove -= updates.keys()
    raw = pad + json.dumps(original, **layout) + pad
    result = patch_attributes(raw, updates, remove)

    expected = {k: v for k, v in original.items() if k not in remove}
    expected.update(updates)
    assert json.loads(result) == expected
    before, after = _value_texts(raw), _value_texts(result)
    for key in original.keys() - remove - updates.keys():
        assert after[key] == before[key]  # untouched values are byte-identical
    assert result.startswith(pad) and result.endswith(pad)
    if not updates and not (remove & original.keys()):
        assert result == raw


# --------------------------------------------------------------------------- planning

ATTRS = {"full_name": "Ann Veal", "email": "Ann@X.com", "roles": ["agent", "wfo.full_access"],
         "contact_uri": "client:ann_40x_2Ecom", "routing": {"skills": ["en", "fr"], "levels": {"en": 1.50}},
         "channels": {"voice": True}}


def _raw(**over) -> str:
    body = {**ATTRS, **over}
    return json.dumps({k: v for k, v in body.items() if v is not ...}, indent=1)


def _worker(sid="WK1", name="ann@x.com", raw=None):
    return parse_worker({"sid": sid, "friendly_name": name, "attributes": raw if raw is not None else _raw()})


def _plan(users, workers, strip=False, assignments=None):
    users_by_id = {u.okta_user_id: u for u in users}
    assignments = assignments or [assignment(u.okta_user_id, u.login) for u in users]
    findings = reconcile(users_by_id, assignments, workers, valid_roles=VALID)
    expected = expected_by_worker(users_by_id, assignments, workers)
    plan = plan_repairs(findings, {w.worker_sid: w for w in workers}, expected, strip_deactivated=strip,
                        valid_roles=VALID)
    return findings, plan


@pytest.mark.parametrize("okta, raw, updates, remove, reasons", [
    (user(), _raw(), None, (), ()),
    (user(roles="admin,agent"), _raw(), {"roles": ["admin", "agent", "wfo.full_access"]}, (), ("roles_mismatch",)),
    (user(roles="agent"), _raw(roles=["wfo.team_leader", "Admin", "agent", "wfo.x"]),
     {"roles": ["agent", "wfo.team_leader", "wfo.x"]}, (), ("privilege_escalation", "roles_mismatch")),
    (user(roles="agent"), _raw(roles="admin, wfo.x"), {"roles": ["agent", "wfo.x"]}, (),
     ("privilege_escalation", "roles_mismatch")),
    (user(roles="agent"), _raw(roles=...), {"roles": ["agent"]}, (), ("roles_mismatch",)),
    (user(), _raw(full_name="Ann  Smith"), {"full_name": "Ann Veal"}, (), ("full_name_mismatch",)),
    (user(), _raw(full_name="ann  veal "), {"full_name": "Ann Veal"}, (), ("full_name_mismatch",)),
    (user(), _raw(full_name="  Ann   Veal"), None, (), ()),  # whitespace only: no churn
    (user(), _raw(email="ANN@x.com"), None, (), ()),  # email case only: no churn
    (user(), _raw(email="old@x.com"), {"email": "Ann@X.com"}, (), ("email_mismatch",)),
    (user(email=None), _raw(), None, ("email",), ("email_mismatch",)),
    (user(image_url="https://i/a.png"), _raw(), {"image_url": "https://i/a.png"}, (), ("image_url_mismatch",)),
    (user(image_url=None), _raw(image_url="https://i/old.png"), None, ("image_url",), ("image_url_mismatch",)),
    (user(image_url=None), _raw(image_url=""), None, (), ()),  # empty == absent: no churn
    (user(roles="admin", full_name="Ann B", image_url="https://i/a.png"), _raw(),
     {"roles": ["admin", "wfo.full_access"], "full_name": "Ann B", "image_url": "https://i/a.png"}, (),
     ("roles_mismatch", "full_name_mismatch", "image_url_mismatch")),
    (user(status="STAGED", roles="agent"), _raw(roles=["admin"]), None, (), ()),
    (user(invalid_roles="boss"), _raw(), None, (), ()),  # invalid_role alone is not repairable
])
def test_plan_update_attributes(okta, raw, updates, remove, reasons):
    _, plan = _plan([okta], [_worker(raw=raw)])
    if updates is None and not remove:
        assert plan == []
        return
    assert plan == [RepairAction("WK1", "ann@x.com", UPDATE_ATTRIBUTES, updates or {}, reasons, remove)]


@pytest.mark.parametrize("status, raw, strip, updates", [
    ("SUSPENDED", _raw(roles=["admin", "wfo.full_access"]), True, {"roles": ["wfo.full_access"]}),
    ("DEPROVISIONED", _raw(roles="agent,supervisor"), True, {"roles": []}),
    ("DEPROVISIONED", _raw(roles=["Agent", 7, None]), True, {"roles": [7]}),
    ("SUSPENDED", _raw(roles=["admin"]), False, None),  # off by default
    ("SUSPENDED", _raw(roles=["wfo.full_access"]), True, None),  # nothing valid left to strip
    ("SUSPENDED", _raw(roles=...), True, None),
    ("SUSPENDED", "[]", True, None),  # unparseable: cannot patch
])
def test_plan_strip_roles(status, raw, strip, updates):
    _, plan = _plan([user(status=status)], [_worker(raw=raw)], strip=strip)
    if updates is None:
        assert plan == []
    else:
        assert plan == [RepairAction("WK1", "ann@x.com", STRIP_ROLES, updates, ("deactivated_user_has_worker",))]


@pytest.mark.parametrize("workers", [
    [_worker(), _worker("WK2", "zed@x.com", raw=_raw(roles=["admin"]))],  # orphan
    [_worker(raw="not json")],  # unparseable
])
def test_plan_skips_orphans_and_unparseable(workers):
    findings, plan = _plan([user()], workers, strip=True)
    assert findings and plan == []


def test_plan_ignores_findings_for_unknown_workers():
    finding = Finding(kind="roles_mismatch", severity="medium", worker_sid="WK404", field="roles")
    assert plan_repairs([finding], {}, {}, valid_roles=VALID) == []


def test_plan_one_action_per_worker_sorted():
    users = [user(roles="admin"), BOB]
    workers = [_worker("WK9", "bob@x.com", raw=_raw(full_name="Bob Smith", email="robert@x.com", roles=["supervisor"])),
               _worker("WK1", "ann@x.com", raw=_raw(full_name="X", email="y@z"))]
    _, plan = _plan(users, workers)
    assert [a.worker_sid for a in plan] == ["WK1", "WK9"]
    assert plan[0].reasons == ("roles_mismatch", "full_name_mismatch", "email_mismatch")
    assert plan[1].updates == {"roles": ["agent"]}


@pytest.mark.parametrize("okta, raw, strip", [
    (user(roles="admin,agent", full_name="Zoë Q", email="z@q.com", image_url="https://i/z.png"),
     _raw(roles=["supervisor", "wfo.x"], image_url=None), False),
    (user(image_url=None, email=None), _raw(image_url="https://i/old.png"), False),
    (user(status="SUSPENDED"), _raw(roles=["admin", "wfo.full_access"]), True),
])
def test_apply_then_reconcile_is_clean_and_other_bytes_survive(okta, raw, strip):
    _, plan = _plan([okta], [_worker(raw=raw)], strip=strip)
    assert len(plan) == 1
    new_raw = apply_plan_to_attributes(raw, plan[0])
    for key in ("contact_uri", "routing", "channels"):
        assert _value_texts(new_raw)[key] == _value_texts(raw)[key]
    findings, again = _plan([okta], [_worker(raw=new_raw)], strip=strip)
    attribute_kinds = {"roles_mismatch", "privilege_escalation", "full_name_mismatch", "email_mismatch",
                       "image_url_mismatch"}
    assert not {f.kind for f in findings} & attribute_kinds
    assert again == []  # idempotent: nothing left to do
