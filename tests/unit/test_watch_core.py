"""The watch's pure decisions (okta_flex_sync.core.watch): window, gap, dedupe, who to re-read,
what to look workers up by, and when each change took effect.  Expected values written out."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from okta_flex_sync.core.watch import (
    SystemLogGap,
    WatchEvent,
    change_times,
    findings_about,
    fresh_events,
    group_target_id,
    high_findings,
    is_user_id,
    names_user,
    needs_app_groups,
    plan_window,
    users_to_reread,
    worker_names,
)
from okta_flex_sync.models.records import Finding

APP, OTHER_APP, GROUP, OTHER_GROUP = "0oaFLEX", "0oaOTHER", "00gFLEX", "00gOTHER"
NOW = datetime(2026, 12, 3, 9, 30)
T = datetime(2026, 12, 3, 9, 0)


def ev(uuid, minute, kind, user="00u1", app=None, group=None, changed=None):
    return WatchEvent(uuid, T + timedelta(minutes=minute), kind, user, app, changed, group)


# --- window and gap ---------------------------------------------------------------------------

@pytest.mark.parametrize("cursor, nightly, since, note", [
    (None, None, datetime(2026, 12, 3, 9, 25), "first poll"),
    (None, datetime(2026, 12, 3, 2, 0), datetime(2026, 12, 3, 9, 25), "first poll"),
    (datetime(2026, 12, 3, 9, 25), None, datetime(2026, 12, 3, 9, 20), None),
    (datetime(2026, 9, 5, 9, 30), None, datetime(2026, 9, 5, 9, 25), None),  # 89 days back: still in the log
    # beyond retention, but a nightly run after the cursor covered the gap: resume from its start
    (datetime(2026, 8, 1), datetime(2026, 12, 3, 2, 0), datetime(2026, 12, 3, 1, 55), "nightly run"),
])
def test_plan_window(cursor, nightly, since, note):
    w = plan_window(cursor, now=NOW, lag=timedelta(minutes=5), last_nightly_start=nightly)
    assert (w.since, w.until, w.resumed_from) == (since, NOW, note)


@pytest.mark.parametrize("cursor, nightly", [
    (datetime(2026, 8, 1), None),  # 124 days back, nothing covered it
    (datetime(2026, 8, 1), datetime(2026, 7, 31)),  # the nightly run was before the cursor
    (datetime(2026, 9, 4, 9, 30), None),  # 90 days back minus the lag window is past retention
])
def test_gap_refuses_and_asks_for_a_full_nightly_run(cursor, nightly):
    with pytest.raises(SystemLogGap, match=r"older than the System Log's 90-day retention.*run --full"):
        plan_window(cursor, now=NOW, lag=timedelta(minutes=5), last_nightly_start=nightly)


# --- dedupe and who to re-read -----------------------------------------------------------------

def test_fresh_events_drops_seen_and_repeated_uuids_and_sorts_by_published():
    a, b, c = ev("a", 3, "user.lifecycle.suspend"), ev("b", 1, "user.lifecycle.suspend"), ev("c", 2, PROFILE)
    assert [e.uuid for e in fresh_events([a, b, c, a, b], seen={"c"})] == ["b", "a"]
    assert fresh_events([], seen=set()) == []


PROFILE = "user.account.update_profile"


@pytest.mark.parametrize("kind, app, group, named", [
    ("user.lifecycle.suspend", None, None, True),
    ("user.lifecycle.deactivate", None, None, True),
    ("user.lifecycle.unsuspend", None, None, True),
    ("user.lifecycle.activate", None, None, True),
    (PROFILE, None, None, True),
    ("application.user_membership.add", APP, None, True),
    ("application.user_membership.remove", APP, None, True),
    ("application.user_membership.change_username", APP, None, True),
    ("application.user_membership.add", OTHER_APP, None, False),
    ("application.user_membership.remove", None, None, False),
    ("group.user_membership.add", None, GROUP, True),
    ("group.user_membership.remove", None, GROUP, True),
    ("group.user_membership.add", None, OTHER_GROUP, False),
    ("group.user_membership.add", None, None, False),
    ("user.authentication.sso", APP, None, False),
    ("user.session.start", None, None, False),
])
def test_which_events_name_a_user(kind, app, group, named):
    assert names_user(ev("x", 0, kind, app=app, group=group), app_id=APP, flex_groups=frozenset({GROUP})) is named


def test_users_to_reread_groups_events_by_user_oldest_first():
    events = [ev("3", 3, PROFILE, user="00u2"), ev("1", 1, "user.lifecycle.suspend", user="00u1"),
              ev("2", 2, "application.user_membership.add", user="00u3", app=OTHER_APP),
              ev("4", 0, "application.user_membership.remove", user="00u1", app=APP)]
    out = users_to_reread(events, app_id=APP)
    assert {uid: [e.uuid for e in es] for uid, es in out.items()} == {"00u1": ["4", "1"], "00u2": ["3"]}


@pytest.mark.parametrize("events, needed", [
    ([], False),
    ([ev("a", 0, "user.lifecycle.suspend")], False),
    ([ev("a", 0, "user.lifecycle.suspend"), ev("b", 0, "group.user_membership.add", group=GROUP)], True),
])
def test_app_groups_are_read_only_for_group_events(events, needed):
    assert needs_app_groups(events) is needed


@pytest.mark.parametrize("names, expected", [
    (("ann@example.com", "ann@example.com"), ["ann@example.com"]),
    (("Ann@Example.com", "ann@example.com"), ["Ann@Example.com"]),
    (("new@example.com", "old@example.com"), ["new@example.com", "old@example.com"]),
    ((None, "old@example.com"), ["old@example.com"]),
    ((None, None), []),
    (("  ", None), []),
])
def test_worker_names(names, expected):
    assert worker_names(*names) == expected


# --- when each change took effect ---------------------------------------------------------------

@pytest.mark.parametrize("changed, events, after, role_source, expected", [
    # a suspension dates the status change
    (["status"], [ev("a", 2, "user.lifecycle.suspend")], None, "user_type", {"status": T + timedelta(minutes=2)}),
    # a userType change dates roles; the latest explaining event wins
    (["roles"], [ev("a", 1, PROFILE, changed=frozenset({"userType"})),
                 ev("b", 4, PROFILE, changed=frozenset({"userType"}))], None, "user_type",
     {"roles": T + timedelta(minutes=4)}),
    # a profile event that names other attributes does not date roles: the poll's time does
    (["roles"], [ev("a", 1, PROFILE, changed=frozenset({"lastName"}))], None, "user_type", {"roles": NOW}),
    # with ROLE_SOURCE=app_user a profile edit never dates roles
    (["roles"], [ev("a", 1, PROFILE)], None, "app_user", {"roles": NOW}),
    # unassignment: assigned, roles and app username go with the membership event
    (["assigned", "roles"], [ev("a", 3, "application.user_membership.remove", app=APP)], None, "user_type",
     {"assigned": T + timedelta(minutes=3), "roles": T + timedelta(minutes=3)}),
    # deactivation drops the assignment without its own event: the lifecycle event dates both
    (["status", "assigned", "roles"], [ev("a", 5, "user.lifecycle.deactivate")], None, "user_type",
     {"status": T + timedelta(minutes=5), "assigned": T + timedelta(minutes=5), "roles": T + timedelta(minutes=5)}),
    # an event at or before the current period's start cannot date a change after it
    (["status"], [ev("a", 2, "user.lifecycle.suspend")], T + timedelta(minutes=2), "user_type", {"status": NOW}),
    # a username change dates app_username only
    (["app_username"], [ev("a", 6, "application.user_membership.change_username", app=APP)], None, "user_type",
     {"app_username": T + timedelta(minutes=6)}),
    # another app's events explain nothing
    (["assigned"], [ev("a", 6, "application.user_membership.add", app=OTHER_APP)], None, "user_type",
     {"assigned": NOW}),
])
def test_change_times(changed, events, after, role_source, expected):
    assert change_times(changed, events, after=after, now=NOW, app_id=APP, role_source=role_source) == expected


# --- findings and raw events --------------------------------------------------------------------

def _f(kind, severity, uid=None, sid=None):
    return Finding(kind=kind, severity=severity, okta_user_id=uid, worker_sid=sid)


def test_high_findings_and_findings_about():
    found = [_f("privilege_escalation", "high", "00u1", "WK1"), _f("roles_mismatch", "medium", "00u1", "WK1"),
             _f("deactivated_user_has_worker", "high", "00u2", "WK2"), _f("orphan_worker", "medium", None, "WK3"),
             _f("orphan_worker", "medium", "00u9", "WK9")]
    assert [f.kind for f in high_findings(found)] == ["privilege_escalation", "deactivated_user_has_worker"]
    assert [(f.kind, f.worker_sid) for f in findings_about(found, ["00u1"], ["WK3"])] == [
        ("privilege_escalation", "WK1"), ("roles_mismatch", "WK1"), ("orphan_worker", "WK3")]


@pytest.mark.parametrize("raw, expected", [
    ({"target": [{"type": "User", "id": "00u1"}, {"type": "UserGroup", "id": "00gA"}]}, "00gA"),
    ({"target": [{"type": "UserGroup", "id": "00gB"}, {"type": "User", "id": "00u1"}]}, "00gB"),
    ({"target": [{"type": "User", "id": "00u1"}]}, None),
    ({"target": [{"type": "UserGroup", "id": 7}]}, None),
    ({"target": [{"type": "UserGroup", "id": "00g\x00"}]}, None),
    ({"target": "nope"}, None),
    ([], None),
])
def test_group_target_id(raw, expected):
    assert group_target_id(raw) == expected


@pytest.mark.parametrize("value, ok", [
    ("00u1a2b3c4D5e6F7g8h9", True),
    ("00uAktIqmvOiujtFOOIK", True),
    ("../../apps", False),
    ("00u1/users", False),
    ("00u1 x", False),
    ("", False),
    (None, False),
    ("x" * 65, False),
    ("00u\u0661", False),  # an Arabic-Indic digit: alphanumeric, but not an Okta id
])
def test_only_okta_like_user_ids_are_read(value, ok):
    assert is_user_id(value) is ok


def test_events_naming_a_hostile_user_id_are_not_reread():
    events = [ev("a", 0, "user.lifecycle.suspend", user="../../apps"), ev("b", 1, "user.lifecycle.suspend")]
    assert list(users_to_reread(events, app_id=APP)) == ["00u1"]
