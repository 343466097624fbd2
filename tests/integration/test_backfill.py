"""Backfill: hand-built nightly runs (landed and published by the real pipeline code) plus System
Log events from a fake Okta client, on SQLite and Postgres.

The scenario, two nightly runs two days apart (S1 full, S2 incremental):

* ann  (00uA): roles agent -> admin by a userType edit on 03-03 10:00; a later title edit moved
  her lastUpdated to 03-04 01:00, which is when the nightly run dates the change.
* bob  (00uB): unassigned on 03-03 15:00; the nightly run can only say "by S2".
* cat  (00uC): assigned on 03-01 09:00, before the first nightly run, which dates her first row
  by her lastUpdated (03-01 08:00, her creation).
* eve  (00uE): deactivated on 03-03 09:00, then unassigned on 03-03 10:00: two rows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from okta_flex_sync.core.backfill_plan import (
    BackfillRangeError,
    BackfillRefused,
    Coverage,
    Snapshot,
    change_times,
    explained_fields,
    log_window,
    plan_intervals,
)
from okta_flex_sync.core.history import HistoryState, stage_change
from okta_flex_sync.core.normalize import normalize_assignment, normalize_user
from okta_flex_sync.core.system_log import LOG_FILTER, LogEvent, parse_log_event
from okta_flex_sync.jobs.backfill import run_backfill
from okta_flex_sync.jobs.nightly import ExtractResult, SyncContext, publish
from okta_flex_sync.models.records import VALID_TO_CURRENT
from okta_flex_sync.models.tables import (
    metadata,
    okta_log_events,
    role_history,
    sync_runs,
)
from okta_flex_sync.settings import Settings
from okta_flex_sync.storage import runs as runs_db
from okta_flex_sync.storage import staging as staging_db
from okta_flex_sync.storage.common import utcnow
from okta_flex_sync.storage.engine import make_engine, upgrade
from okta_flex_sync.storage.lock import RunLockedError, writer_lock

APP = "0oaflex1"
ORG = "https://example.okta.com"
NOW = datetime(2026, 3, 10, 12, 0)
S1 = datetime(2026, 3, 2, 2, 0)
S2 = datetime(2026, 3, 4, 2, 0)
D = date(2026, 3, 1)  # the first day of the scenario


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """03-0<day> hour:minute"""
    return datetime(2026, 3, day, hour, minute)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def okta_user(uid, login, first, last, user_type="agent", status="ACTIVE", updated=None):
    updated = updated or at(1, 5)
    return {"id": uid, "status": status, "lastUpdated": iso(updated),
            "profile": {"login": login, "email": login, "firstName": first, "lastName": last, "userType": user_type}}


def app_user(uid, login, scope="USER", updated=None):
    body = {"id": uid, "scope": scope, "status": "ACTIVE", "credentials": {"userName": login}, "profile": {}}
    if updated:
        body["lastUpdated"] = iso(updated)
    return body


def event(n, when, kind, uid, *, app=APP, changed=None, result="SUCCESS", group=None):
    targets = [{"id": uid, "type": "User", "alternateId": f"{uid}@x.com"}]
    if app and kind.startswith("application."):
        targets.insert(0, {"id": app, "type": "AppInstance"})
    if group:
        targets.append({"id": group, "type": "UserGroup"})
    body = {"uuid": f"ev-{n}", "published": iso(when), "eventType": kind, "outcome": {"result": result},
            "actor": {"id": "00uadmin", "type": "User"}, "target": targets, "debugContext": {"debugData": {}}}
    if changed is not None:
        body["debugContext"]["debugData"]["changedAttributes"] = changed
    return body


ANN, BOB, CAT, EVE = "00uA", "00uB", "00uC", "00uE"
S1_USERS = [okta_user(ANN, "ann@x.com", "Ann", "Veal"), okta_user(BOB, "bob@x.com", "Bob", "Loblaw"),
            okta_user(CAT, "cat@x.com", "Cat", "Fünke", updated=at(1, 8)), okta_user(EVE, "eve@x.com", "Eve", "Holt")]
S1_ASSIGNMENTS = [app_user(ANN, "ann@x.com"), app_user(BOB, "bob@x.com"), app_user(CAT, "cat@x.com"),
                  app_user(EVE, "eve@x.com")]
S2_USERS = [okta_user(ANN, "ann@x.com", "Ann", "Veal", user_type="admin", updated=at(4, 1)),
            okta_user(EVE, "eve@x.com", "Eve", "Holt", status="DEPROVISIONED", updated=at(3, 9))]
S2_ASSIGNMENTS = [app_user(ANN, "ann@x.com"), app_user(CAT, "cat@x.com")]
EVENTS = [
    event(1, at(1, 9), "application.user_membership.add", CAT),
    event(2, at(3, 10), "user.account.update_profile", ANN, changed="userType"),
    event(3, at(4, 1), "user.account.update_profile", ANN, changed="title"),
    event(4, at(3, 15), "application.user_membership.remove", BOB),
    event(5, at(3, 9), "user.lifecycle.deactivate", EVE),
    event(6, at(3, 10), "application.user_membership.remove", EVE),
    event(7, at(3, 11), "application.user_membership.remove", EVE, app="0oaother"),  # another app
    event(8, at(3, 12), "user.account.update_profile", BOB, changed="userType", result="FAILURE"),
    event(9, at(3, 13), "user.authentication.sso", ANN),  # not a tracked kind
]


@dataclass
class FakePage:
    items: list


class FakeOkta:
    """`iter_log_pages` over a fixed event list; records each call; can fail once on a given day."""

    def __init__(self, events, fail_on: date | None = None, page_size: int = 2):
        self.events, self.fail_on, self.page_size = events, fail_on, page_size
        self.calls: list[tuple[datetime, datetime]] = []

    def iter_log_pages(self, since, until, *, filter=None, limit=1000):
        assert filter == LOG_FILTER and until > since
        if self.fail_on is not None and since.date() == self.fail_on:
            self.fail_on = None
            raise ConnectionError("System Log is down")
        self.calls.append((since, until))
        hits = [e for e in self.events if since <= datetime.fromisoformat(e["published"][:-1]) < until]
        hits.append({"uuid": "junk", "published": iso(until + timedelta(days=3)), "eventType": "user.lifecycle.create",
                     "target": [{"id": ANN, "type": "User"}]})  # outside the window: must be ignored
        for i in range(0, len(hits), self.page_size):
            yield FakePage(hits[i:i + self.page_size])

    def days(self) -> list[date]:
        return [since.date() for since, _ in self.calls]


def make_settings(url: str, **over) -> Settings:
    return Settings(_env_file=None, database_url=url, okta_org_url=ORG, okta_api_token="00FAKE-okta-token-do-not-leak",
                    okta_flex_app_id=APP, **over)


def nightly(engine, cfg: Settings, started: datetime, users_raw, assignments_raw, *, full: bool) -> str:
    """Land one nightly run the way `okta_flex_sync.jobs.nightly.extract` does and publish it with the real code."""
    run_id, _ = runs_db.open_run(engine, flow="nightly-sync", org_url=ORG, parameters={"full": full},
                               started_at=started)
    valid = cfg.valid_role_set
    users = [normalize_user(u, valid_roles=valid, image_url_attribute="imageUrl") for u in users_raw]
    assignments = [normalize_assignment(a, valid_roles=valid) for a in assignments_raw]
    with engine.begin() as conn:
        for seq, (source, body) in enumerate((("users", users_raw), ("assignments", assignments_raw)), 1):
            staging_db.land_raw_page(conn, run_id, source, 1, url=f"/api/v1/{source}", fetched_at=started,
                                body=json.dumps(body).encode(), item_count=len(body))
        staging_db.land_users(conn, run_id, users)
        staging_db.land_assignments(conn, run_id, assignments)
    ctx = SyncContext(cfg, engine, run_id, started, ORG, full, None if full else started - timedelta(days=2))
    publish(ctx, ExtractResult(users_pulled=len(users)), allow_shrink=True)
    return run_id


@pytest.fixture
def scenario(database_url):
    """The two nightly runs, published; yields (engine, settings)."""
    cfg = make_settings(database_url)
    engine = make_engine(database_url)
    nightly(engine, cfg, S1, S1_USERS, S1_ASSIGNMENTS, full=True)
    nightly(engine, cfg, S2, S2_USERS, S2_ASSIGNMENTS, full=False)
    yield engine, cfg
    engine.dispose()


def dump(engine, *tables, drop=()) -> dict[str, list[tuple]]:
    """Table contents, sorted, optionally without some columns (ids and run ids differ between databases)."""
    tables = tables or tuple(metadata.sorted_tables)
    out = {}
    with engine.connect() as conn:
        for t in tables:
            cols = [c for c in t.columns if c.name not in drop]
            rows = conn.execute(select(*cols)).all()
            out[t.name] = sorted(tuple(repr(v) for v in r) for r in rows)
    return out


def timeline(engine, uid) -> list[tuple]:
    with engine.connect() as conn:
        rows = conn.execute(select(role_history).where(role_history.c.okta_user_id == uid)
                            .order_by(role_history.c.valid_from)).mappings().all()
    return [(r["valid_from"], r["status"], bool(r["assigned"]), r["roles"], r["source"]) for r in rows]


def check_invariants(engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(select(role_history).order_by(role_history.c.okta_user_id,
                                                          role_history.c.valid_from)).mappings().all()
    by_user: dict[str, list] = {}
    for r in rows:
        by_user.setdefault(r["okta_user_id"], []).append(r)
    for uid, rs in by_user.items():
        assert [r["valid_to"] for r in rs[:-1]] == [r["valid_from"] for r in rs[1:]], uid
        assert rs[-1]["valid_to"] == VALID_TO_CURRENT and sum(r["valid_to"] == VALID_TO_CURRENT for r in rs) == 1
        assert all(r["valid_from"] < r["valid_to"] for r in rs), uid


def state_at(engine, uid, moment):
    with engine.connect() as conn:
        r = conn.execute(select(role_history).where(role_history.c.okta_user_id == uid,
                                                    role_history.c.valid_from <= moment,
                                                    role_history.c.valid_to > moment)).mappings().first()
    return None if r is None else (r["status"], bool(r["assigned"]), r["roles"])


def backfill(cfg, start=D, end=date(2026, 3, 4), okta=None, **kw):
    return run_backfill(cfg, start, end, okta=okta if okta is not None else FakeOkta(EVENTS), now=NOW, **kw)


# --- end to end on the database -----------------------------------------------------------------

NIGHTLY_TIMELINES = {
    ANN: [(at(1, 5), "ACTIVE", True, "agent", "nightly"), (at(4, 1), "ACTIVE", True, "admin", "nightly")],
    BOB: [(at(1, 5), "ACTIVE", True, "agent", "nightly"), (S2, "ACTIVE", False, "", "nightly")],
    CAT: [(at(1, 8), "ACTIVE", True, "agent", "nightly")],
    EVE: [(at(1, 5), "ACTIVE", True, "agent", "nightly"), (at(3, 9), "DEPROVISIONED", False, "", "nightly")],
}
BACKFILLED_TIMELINES = {
    ANN: [(at(1, 5), "ACTIVE", True, "agent", "nightly"), (at(3, 10), "ACTIVE", True, "admin", "backfill")],
    BOB: [(at(1, 5), "ACTIVE", True, "agent", "nightly"), (at(3, 15), "ACTIVE", False, "", "backfill")],
    CAT: [(at(1, 9), "ACTIVE", True, "agent", "backfill")],
    EVE: [(at(1, 5), "ACTIVE", True, "agent", "nightly"), (at(3, 9), "DEPROVISIONED", True, "agent", "backfill"),
          (at(3, 10), "DEPROVISIONED", False, "", "backfill")],
}


def test_scenario_as_the_nightly_runs_wrote_it(scenario):
    engine, _ = scenario
    assert {uid: timeline(engine, uid) for uid in NIGHTLY_TIMELINES} == NIGHTLY_TIMELINES


def test_events_pin_change_times(scenario):
    engine, cfg = scenario
    okta = FakeOkta(EVENTS)
    result = backfill(cfg, okta=okta)
    assert {uid: timeline(engine, uid) for uid in BACKFILLED_TIMELINES} == BACKFILLED_TIMELINES
    check_invariants(engine)
    for moment, want in ((S1, ("ACTIVE", True, "agent")), (S2, ("ACTIVE", True, "admin"))):
        assert state_at(engine, ANN, moment) == want  # history still equals every snapshot
    assert state_at(engine, BOB, S2) == ("ACTIVE", False, "")
    assert okta.days() == [D + timedelta(days=n) for n in range(4)]
    assert (result.days, result.users_changed, result.rows_opened) == (4, 4, 5)
    assert [d.intervals for d in result.per_day] == [0, 1, 0, 1]
    with engine.connect() as conn:
        stored = set(conn.execute(select(okta_log_events.c.uuid)).scalars())
        run = conn.execute(select(sync_runs).where(sync_runs.c.flow == "backfill")).mappings().one()
        run_ids = set(conn.execute(select(role_history.c.run_id).where(role_history.c.source == "backfill")).scalars())
    assert stored == {"ev-1", "ev-2", "ev-3", "ev-4", "ev-5", "ev-6"}  # other app, failures, sso, junk dropped
    assert run["status"] == "succeeded" and run["counts"]["rows_opened"] == 5
    assert run_ids == {run["run_id"]} == {result.run_id}


def test_backfill_is_idempotent(scenario):
    engine, cfg = scenario
    first = backfill(cfg)
    before = dump(engine, role_history, okta_log_events)
    okta = FakeOkta(EVENTS)
    second = backfill(cfg, okta=okta)
    assert first.changed and not second.changed
    assert dump(engine, role_history, okta_log_events) == before
    assert okta.calls == []  # every day was already fetched and is final


def test_no_events_keeps_the_nightly_times(scenario):
    engine, cfg = scenario
    result = backfill(cfg, okta=FakeOkta([]))
    assert not result.changed
    assert {uid: timeline(engine, uid) for uid in NIGHTLY_TIMELINES} == NIGHTLY_TIMELINES


def test_event_with_unread_log_after_it_is_not_trusted(scenario):
    """Ending the range on 03-03 leaves 03-04 00:00..S2 unread: a later event could be there, so
    the 03-03 events cannot date changes seen at S2.  Backfilling 03-04 afterwards can."""
    engine, cfg = scenario
    backfill(cfg, end=date(2026, 3, 3))
    assert timeline(engine, ANN) == NIGHTLY_TIMELINES[ANN]
    assert timeline(engine, BOB) == NIGHTLY_TIMELINES[BOB]
    assert timeline(engine, CAT) == BACKFILLED_TIMELINES[CAT]  # its interval ends on 03-02, fully read
    okta = FakeOkta(EVENTS)
    backfill(cfg, start=date(2026, 3, 4), okta=okta)
    assert okta.days() == [date(2026, 3, 4)]
    assert {uid: timeline(engine, uid) for uid in BACKFILLED_TIMELINES} == BACKFILLED_TIMELINES
    check_invariants(engine)


def test_dry_run_writes_nothing_and_reports_the_same(scenario, database_url, tmp_path):
    engine, cfg = scenario
    before = dump(engine)
    dry = backfill(cfg, dry_run=True)
    assert dump(engine) == before
    assert dry.run_id is None and dry.changed
    real = backfill(cfg)
    assert (dry.users_changed, dry.rows_opened, dry.rows_closed, dry.rows_removed) == (
        real.users_changed, real.rows_opened, real.rows_closed, real.rows_removed)


def test_resume_after_a_crash_mid_range(scenario, tmp_path):
    engine, cfg = scenario
    okta = FakeOkta(EVENTS, fail_on=date(2026, 3, 3))
    with pytest.raises(ConnectionError):
        backfill(cfg, okta=okta)
    check_invariants(engine)  # days done so far are committed and consistent
    assert timeline(engine, CAT) == BACKFILLED_TIMELINES[CAT]
    with engine.connect() as conn:
        failed = conn.execute(select(sync_runs).where(sync_runs.c.flow == "backfill")).mappings().one()
    assert failed["status"] == "failed" and "System Log is down" in failed["error"]
    backfill(cfg, okta=okta)
    assert okta.days() == [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]

    # the same backfill without a crash, on a fresh database, ends in the same history
    ref_url = f"sqlite:///{tmp_path / 'reference.db'}"
    ref = make_engine(ref_url)
    upgrade(ref)
    ref_cfg = make_settings(ref_url)
    nightly(ref, ref_cfg, S1, S1_USERS, S1_ASSIGNMENTS, full=True)
    nightly(ref, ref_cfg, S2, S2_USERS, S2_ASSIGNMENTS, full=False)
    backfill(ref_cfg)
    keep = ("id", "run_id")
    assert dump(engine, role_history, okta_log_events, drop=keep) == dump(ref, role_history, okta_log_events, drop=keep)
    ref.dispose()


def test_refuses_a_range_beyond_retention_without_raw_pages(scenario):
    engine, cfg = scenario
    before = dump(engine)
    okta = FakeOkta(EVENTS)
    with pytest.raises(BackfillRefused) as err:
        run_backfill(cfg, date(2025, 10, 1), date(2025, 12, 15), okta=okta, now=NOW)
    msg = str(err.value)
    assert "2025-10-01..2025-12-15" in msg and "90 days" in msg and "raw pages" in msg
    assert "2025-10-01..2025-12-09" in msg  # the days beyond retention (12-10 onwards can still be read)
    assert dump(engine) == before and okta.calls == []


def test_old_days_covered_by_raw_pages_are_rebuilt_without_the_log(scenario):
    """120 days later the log has nothing for March, but the raw pages still say what happened."""
    _engine, cfg = scenario
    okta = FakeOkta(EVENTS)
    result = run_backfill(cfg, date(2026, 3, 2), date(2026, 3, 4), okta=okta, now=NOW + timedelta(days=110))
    assert okta.calls == [] and not result.changed
    assert [d.log for d in result.per_day] == ["outside retention"] * 3


RANGE_CASES = [
    ("start after end", date(2026, 3, 5), date(2026, 3, 4), "after end"),
    ("end in the future", date(2026, 3, 9), date(2026, 3, 11), "in the future"),
    ("not a date", "March", date(2026, 3, 4), "must be a date"),
]


@pytest.mark.parametrize("case_id, start, end, words", RANGE_CASES, ids=[c[0] for c in RANGE_CASES])
def test_range_errors(case_id, start, end, words, tmp_path):
    cfg = make_settings(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(BackfillRangeError, match=words):
        run_backfill(cfg, start, end, okta=FakeOkta([]), now=NOW)
    assert not (tmp_path / "x.db").exists()  # refused before even opening the database


def test_waits_for_the_nightly_writer_lock(scenario):
    engine, cfg = scenario
    before = dump(engine)
    with writer_lock(engine, ORG), pytest.raises(RunLockedError):
        backfill(cfg)
    assert dump(engine) == before


def test_today_is_read_up_to_now_and_read_again_later(scenario):
    _engine, cfg = scenario
    okta = FakeOkta(EVENTS)
    run_backfill(cfg, date(2026, 3, 10), date(2026, 3, 10), okta=okta, now=NOW)
    run_backfill(cfg, date(2026, 3, 10), date(2026, 3, 10), okta=okta, now=NOW + timedelta(hours=1))
    assert okta.calls == [(datetime(2026, 3, 10), NOW), (datetime(2026, 3, 10), NOW + timedelta(hours=1))]


def test_new_nightly_run_after_backfill_continues_the_history(scenario):
    engine, cfg = scenario
    backfill(cfg)
    s3 = datetime(2026, 3, 5, 2, 0)
    nightly(engine, cfg, s3, [okta_user(ANN, "ann@x.com", "Ann", "Veal", user_type="supervisor", updated=at(4, 20))],
            [app_user(ANN, "ann@x.com"), app_user(CAT, "cat@x.com")], full=False)
    check_invariants(engine)
    assert timeline(engine, ANN)[-1] == (at(4, 20), "ACTIVE", True, "supervisor", "nightly")


# --- pure parts --------------------------------------------------------------------------------

def ev(kind="user.account.update_profile", *, app=None, changed=None, outcome="SUCCESS"):
    return LogEvent("u1", at(3, 10), kind, ANN, app, outcome, changed)


PARSE_CASES = [
    # id, raw event, expected (event_type, user, app, changed) or None
    ("assignment with targets in any order", event(1, at(3, 10), "application.user_membership.add", ANN),
     ("application.user_membership.add", ANN, APP, None)),
    ("changed attributes as a string", event(1, at(3, 10), "user.account.update_profile", ANN,
                                             changed="firstName, profile.userType"),
     ("user.account.update_profile", ANN, None, frozenset({"firstName", "userType"}))),
    ("changed attributes as a list", event(1, at(3, 10), "user.account.update_profile", ANN, changed=["email"]),
     ("user.account.update_profile", ANN, None, frozenset({"email"}))),
    ("changeDetails keys", {**event(1, at(3, 10), "user.account.update_profile", ANN),
                            "target": [{"id": ANN, "type": "User", "changeDetails": {"from": {"lastName": "A"},
                                                                                     "to": {"lastName": "B"}}}]},
     ("user.account.update_profile", ANN, None, frozenset({"lastName"}))),
    ("self-service edit: the actor is the user", {**event(1, at(3, 10), "user.account.update_profile", ANN),
                                                  "target": [], "actor": {"id": ANN, "type": "User"}},
     ("user.account.update_profile", ANN, None, None)),
    ("failed outcome", event(1, at(3, 10), "user.lifecycle.deactivate", ANN, result="FAILURE"), None),
    ("irrelevant type", event(1, at(3, 10), "user.session.start", ANN), None),
    ("no user target", {**event(1, at(3, 10), "user.lifecycle.create", ANN), "target": [{"type": "User"}]}, None),
    ("bad timestamp", {**event(1, at(3, 10), "user.lifecycle.create", ANN), "published": "yesterday"}, None),
    ("target is not a list", {**event(1, at(3, 10), "user.lifecycle.create", ANN), "target": "00uA"}, None),
    ("not an object", ["uuid"], None),
    ("NUL in the uuid", {**event(1, at(3, 10), "user.lifecycle.create", ANN), "uuid": "ev\x00"}, None),
    ("lone surrogate in the user id", {**event(1, at(3, 10), "user.lifecycle.create", ANN),
                                       "target": [{"id": "00u\ud800", "type": "User"}]}, None),
    ("over-long attribute names are ignored", event(1, at(3, 10), "user.account.update_profile", ANN,
                                                    changed=["x" * 101, "email"]),
     ("user.account.update_profile", ANN, None, frozenset({"email"}))),
]


@pytest.mark.parametrize("case_id, raw, expected", PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_parse_log_event(case_id, raw, expected):
    e = parse_log_event(raw)
    assert (None if e is None else (e.event_type, e.user_id, e.app_id, e.changed)) == expected


EXPLAIN_CASES = [
    # id, event, role_source, group_scoped, expected fields
    ("add to the Flex app", ev("application.user_membership.add", app=APP), "user_type", False,
     {"assigned", "app_username"}),
    ("add with app-user roles", ev("application.user_membership.remove", app=APP), "app_user", False,
     {"assigned", "app_username", "roles"}),
    ("another app", ev("application.user_membership.add", app="0oaother"), "user_type", False, set()),
    ("username change", ev("application.user_membership.change_username", app=APP), "user_type", False,
     {"app_username"}),
    ("group membership, GROUP-scoped assignment", ev("group.user_membership.add"), "user_type", True,
     {"assigned", "app_username"}),
    ("group membership, USER-scoped assignment", ev("group.user_membership.remove"), "user_type", False, set()),
    ("lifecycle", ev("user.lifecycle.suspend"), "user_type", False, {"status"}),
    ("userType edit", ev(changed=frozenset({"userType"})), "user_type", False, {"roles"}),
    ("userType edit when roles come from the app user", ev(changed=frozenset({"userType"})), "app_user", False, set()),
    ("name edit", ev(changed=frozenset({"firstName", "title"})), "user_type", False, {"full_name"}),
    ("untracked attribute", ev(changed=frozenset({"title"})), "user_type", False, set()),
    ("profile edit that names nothing may be anything", ev(), "user_type", False,
     {"login", "full_name", "email", "roles"}),
    ("failed", ev("user.lifecycle.suspend", outcome="FAILURE"), "user_type", False, set()),
]


@pytest.mark.parametrize("case_id, e, role_source, group_scoped, expected", EXPLAIN_CASES,
                         ids=[c[0] for c in EXPLAIN_CASES])
def test_explained_fields(case_id, e, role_source, group_scoped, expected):
    assert explained_fields(e, app_id=APP, role_source=role_source, group_scoped=group_scoped) == expected


MARKS = {date(2026, 3, 1): (datetime(2026, 3, 2), NOW), date(2026, 3, 2): (datetime(2026, 3, 3), NOW),
         date(2026, 3, 4): (at(4, 6), NOW)}
COVER_CASES = [
    ("inside one day", at(1, 3), at(1, 20), True),
    ("across two read days", at(1, 3), at(2, 20), True),
    ("into an unread day", at(2, 3), at(3, 1), False),
    ("partly read day, inside", at(4, 1), at(4, 5), True),
    ("partly read day, past what was read", at(4, 1), at(4, 7), False),
    ("before anything was read", datetime(2026, 2, 28, 23), at(1, 3), False),
]


@pytest.mark.parametrize("case_id, after, until, expected", COVER_CASES, ids=[c[0] for c in COVER_CASES])
def test_coverage(case_id, after, until, expected):
    assert Coverage.from_marks(MARKS).covers(after, until) is expected


WINDOW_CASES = [
    ("a past day", date(2026, 3, 1), (datetime(2026, 3, 1), datetime(2026, 3, 2))),
    ("today, up to now", date(2026, 3, 10), (datetime(2026, 3, 10), NOW)),
    ("the day retention ends in", date(2025, 12, 10), (NOW - timedelta(days=90), datetime(2025, 12, 11))),
    ("beyond retention", date(2025, 12, 9), None),
]


@pytest.mark.parametrize("case_id, day, expected", WINDOW_CASES, ids=[c[0] for c in WINDOW_CASES])
def test_log_window(case_id, day, expected):
    assert log_window(day, NOW) == expected


def test_plan_intervals():
    snaps = [Snapshot("r0", datetime(2026, 2, 20, 2), True, False), Snapshot("r1", S1, True, True),
             Snapshot("r2", S2, False, True), Snapshot("r3", datetime(2026, 3, 6, 2), False, True)]
    plan = plan_intervals(snaps, date(2026, 3, 1), date(2026, 3, 4))
    assert {d: [(i.index, i.start, i.end) for i in ivs] for d, ivs in plan.items()} == {
        date(2026, 3, 2): [(1, snaps[0].started_at, S1)],
        date(2026, 3, 4): [(2, S1, S2), (3, S2, snaps[3].started_at)]}  # the last one spans the range's end
    later = plan_intervals(snaps, date(2026, 3, 5), date(2026, 3, 7))
    assert [(d, [i.index for i in ivs]) for d, ivs in later.items()] == [(date(2026, 3, 6), [3])]
    assert plan_intervals(snaps, date(2026, 2, 1), date(2026, 2, 2)) == {}  # r0 has no raw pages


OLD = HistoryState(ANN, "ann@x.com", "ann@x.com", "ACTIVE", True, "agent", "Ann Veal", "ann@x.com")
_fields = st.fixed_dictionaries({
    "roles": st.sampled_from(["agent", "admin"]), "status": st.sampled_from(["ACTIVE", "SUSPENDED"]),
    "assigned": st.booleans(), "full_name": st.sampled_from(["Ann Veal", "Ann Other"]),
    "email": st.sampled_from(["ann@x.com", "ann@y.com"])})
_kinds = st.sampled_from(["application.user_membership.add", "application.user_membership.remove",
                          "user.lifecycle.suspend", "user.account.update_profile", "group.user_membership.add"])


@settings(max_examples=300, deadline=None)
@given(prev_has=st.booleans(), prev=_fields, new=_fields,
       events=st.lists(st.tuples(_kinds, st.integers(-30, 60 * 26), st.sampled_from([None, "userType", "firstName"])),
                       max_size=6),
       read_until=st.integers(0, 60 * 30), kept_at=st.integers(1, 60 * 24))
def test_change_times_stay_in_the_interval_and_end_at_the_snapshot(prev_has, prev, new, events, read_until, kept_at):
    """Whatever the events say, every change lands in (start, end], the last point is the new
    snapshot's state, and fields without a trusted event keep the earlier timing."""
    start, end = S1, S1 + timedelta(days=1)
    def make(f):
        return HistoryState(ANN, "ann@x.com", "ann@x.com", f["status"], f["assigned"],
                            f["roles"] if f["assigned"] else "", f["full_name"], f["email"])

    before, after = (make(prev) if prev_has else None), make(new)
    log = [LogEvent(f"e{i}", start + timedelta(minutes=m), kind, ANN, APP, "SUCCESS",
                    frozenset({c}) if c else None) for i, (kind, m, c) in enumerate(events)]
    cover = Coverage(((start - timedelta(days=1), start + timedelta(minutes=read_until)),))
    kept_time = start + timedelta(minutes=kept_at)
    kept = {f: kept_time for f in ("assigned", "status", "roles", "full_name", "email")}
    times = change_times(before, after, log, start=start, end=end, covered=cover.covers,
                         explain=lambda e: explained_fields(e, app_id=APP, role_source="user_type", group_scoped=True),
                         kept=kept, default=end)
    assert all(start < t <= end for t in times.values())
    for t in times.values():
        if t not in (kept_time, end):  # anything else must be a trusted event
            assert any(e.published == t for e in log) and cover.covers(t, end)
    points = stage_change(before, after, times)
    if points:
        assert points[-1][1] == after
        assert [p[0] for p in points] == sorted({p[0] for p in points})


def test_progress_follows_the_pipeline_convention(scenario):
    """The CLI passes `observability.Progress`, called as (source, count, items)."""
    from okta_flex_sync.observability import Progress

    _engine, cfg = scenario
    calls = []
    with Progress(enabled=False, interval=0) as bar:
        result = backfill(cfg, progress=lambda *a: (calls.append(a), bar(*a)))
    # day 2 moves cat's row (1 removed, 1 opened); day 4: ann and bob 3 edits each, eve 3 (her first row keeps its end)
    assert calls == [("backfill", 1, 0), ("backfill", 2, 2), ("backfill", 3, 2), ("backfill", 4, 11)]
    assert str(result).startswith("4 day(s), 6 System Log event(s), 4 user(s) changed: 5 row(s) opened")


# --- against the bundled simulator --------------------------------------------------------------

def _two_nights_in_the_simulator(fresh_simulator, sim_env, database_url):
    """Full run, then a promotion and an unassignment, each followed by a title edit that moves
    the user's lastUpdated (what the nightly run dates changes by), then an incremental run."""
    import time

    from okta_flex_sync.jobs.nightly import run_nightly
    from okta_flex_sync.settings import load_settings

    sim = fresh_simulator(users=120, seed=5)
    sim_env(sim, database_url)
    cfg = load_settings()
    run_nightly(cfg)
    promoted, removed = sorted(sim.org.assigned_user_ids())[:2]
    sim.org.set_user_type(promoted, "admin")
    sim.org.unassign(removed)
    time.sleep(0.05)
    sim.org.set_profile(promoted, title="Lead")
    sim.org.set_profile(removed, title="Former agent")
    run_nightly(cfg)
    return cfg, promoted, removed


def _event_time(engine, uid, kind):
    with engine.connect() as conn:
        rows = conn.execute(select(okta_log_events).where(okta_log_events.c.target_user_id == uid,
                                                          okta_log_events.c.event_type == kind)
                            .order_by(okta_log_events.c.published)).mappings().all()
    return rows[-1]["published"] if rows else None


@pytest.mark.slow
def test_backfill_against_the_simulator(fresh_simulator, sim_env, database_url):
    cfg, promoted, removed = _two_nights_in_the_simulator(fresh_simulator, sim_env, database_url)
    engine = make_engine(database_url)
    before = {uid: timeline(engine, uid) for uid in (promoted, removed)}
    today = utcnow().date()
    result = run_backfill(cfg, today - timedelta(days=1), today)
    assert result.events > 0 and result.changed
    role_edit = [t for t in _event_time_all(engine, promoted) if "userType" in t[1]]
    assert timeline(engine, promoted)[-1][:4] == (role_edit[-1][0], "ACTIVE", True, "admin")
    assert timeline(engine, promoted)[-1][0] < before[promoted][-1][0]  # earlier than lastUpdated said
    removal = _event_time(engine, removed, "application.user_membership.remove")
    assert timeline(engine, removed)[-1][:4] == (removal, "ACTIVE", False, "")
    check_invariants(engine)
    snapshot = dump(engine, role_history, okta_log_events)
    again = run_backfill(cfg, today - timedelta(days=1), today)
    assert not again.changed and dump(engine, role_history, okta_log_events) == snapshot
    engine.dispose()


def _event_time_all(engine, uid):
    with engine.connect() as conn:
        rows = conn.execute(select(okta_log_events).where(okta_log_events.c.target_user_id == uid,
                                                          okta_log_events.c.event_type == "user.account.update_profile")
                            .order_by(okta_log_events.c.published)).mappings().all()
    return [(r["published"], json.loads(r["payload"])["changedAttributes"] or []) for r in rows]


@pytest.mark.slow
def test_prefect_flow(prefect_harness, fresh_simulator, sim_env, tmp_path):
    """The `backfill` deployment's flow: named after its range, one task per day, same result."""
    import asyncio
    import inspect

    from prefect.client.orchestration import get_client

    from okta_flex_sync.flows.backfill import backfill as backfill_flow

    assert list(inspect.signature(backfill_flow.fn).parameters) == ["start", "end", "dry_run"]
    assert backfill_flow.name == "backfill" and backfill_flow.description
    url = f"sqlite:///{tmp_path / 'flow.db'}"
    _cfg, promoted, _ = _two_nights_in_the_simulator(fresh_simulator, sim_env, url)
    today = utcnow().date()
    start = today - timedelta(days=1)
    out = backfill_flow(start=start.isoformat(), end=today.isoformat())
    assert out["days"] == 2 and out["rows_opened"] >= 2 and out["dry_run"] is False
    engine = make_engine(url)
    assert timeline(engine, promoted)[-1][4] == "backfill"
    engine.dispose()

    async def runs():
        async with get_client() as client:
            flow_runs = await client.read_flow_runs()
            mine = next(r for r in flow_runs if r.name == f"backfill {start}..{today}")
            tasks = await client.read_task_runs()
            return mine, [t.name for t in tasks if t.flow_run_id == mine.id]

    run, task_names = asyncio.run(runs())
    assert run.state.is_completed()
    assert sorted(n for n in task_names if n.startswith("backfill ")) == [f"backfill {start}", f"backfill {today}"]
