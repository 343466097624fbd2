"""Refreshing the `okta_users` mirror (issue 17b): a full run deletes users it did not list,
upserts only the staged users whose values differ and moves every row's `run_id` to the run;
a first run on SQLite fills the empty mirror with its indexes built afterwards.  The mirror ends
exactly as deleting everything and inserting the staged users would leave it.  Both databases."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from okta_flex_sync.models.records import OktaUser
from okta_flex_sync.models.tables import okta_users
from okta_flex_sync.storage import mirror as mirror_db
from okta_flex_sync.storage import runs as runs_db
from okta_flex_sync.storage import staging as staging_db

T1 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
T2 = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


def _user(uid, login, email, name="Ann Lee", roles="agent", updated=T1, problems=""):
    return OktaUser(uid, "ACTIVE", login, email, name, roles, roles, "", None, updated, problems)


def _run(engine, started: datetime, users: list[OktaUser], *, full: bool = True) -> tuple[str, list[str]]:
    run_id, _ = runs_db.open_run(engine, flow="nightly", org_url="https://acme.okta.com", parameters={},
                                 run_id=runs_db.new_run_id(started), started_at=started)
    with engine.begin() as conn:
        staging_db.land_users(conn, run_id, users)
    with engine.begin() as conn:
        deleted = mirror_db.refresh_mirror(conn, run_id, full=full)
    return run_id, deleted


def _mirror(engine) -> list[tuple]:
    c = okta_users.c
    with engine.connect() as conn:
        rows = conn.execute(select(c.okta_user_id, c.login, c.email, c.full_name, c.roles, c.last_updated,
                                   c.problems, c.run_id).order_by(c.okta_user_id)).all()
    return [(r[0], r[1], r[2], r[3], r[4], r[5].replace(tzinfo=UTC) if r[5] and r[5].tzinfo is None else r[5],
             r[6], r[7]) for r in rows]


def _owners(engine, *names):
    with engine.connect() as conn:
        found = mirror_db.find_owners(conn, names)
    return {k: (v.okta_user_id if v else None) for k, v in found.items()}


FIRST = [_user("00u1", "Ann@X.com", "ann@x.com"),
         _user("00u2", "bob@x.com", None, name="Bob Ray", roles="admin,agent"),
         _user("00u3", "cy@x.com", "CY@x.com", problems="email unreadable"),
         _user("00u4", "dee@x.com", "dee@x.com", name="Dee \u00d8 \u2028", updated=None)]


def test_first_full_run_fills_the_mirror_and_its_indexes(engine):
    run1, deleted = _run(engine, T1, FIRST)
    assert deleted == []
    assert _mirror(engine) == [
        ("00u1", "Ann@X.com", "ann@x.com", "Ann Lee", "agent", T1, "", run1),
        ("00u2", "bob@x.com", None, "Bob Ray", "admin,agent", T1, "", run1),
        ("00u3", "cy@x.com", "CY@x.com", "Ann Lee", "agent", T1, "email unreadable", run1),
        ("00u4", "dee@x.com", "dee@x.com", "Dee \u00d8 \u2028", "agent", None, "", run1),
    ]
    # The owner look-ups (by lower(login), then lower(email)) answer from the rebuilt indexes.
    assert _owners(engine, "ann@x.com", "cy@x.com", "BOB@X.COM", "nobody@x.com") == {
        "ann@x.com": "00u1", "cy@x.com": "00u3", "bob@x.com": "00u2", "nobody@x.com": None}
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            sql = dict(conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                         "AND tbl_name = 'okta_users' AND sql IS NOT NULL")).all())
            plan = " ".join(str(r[-1]) for r in conn.execute(text(
                "EXPLAIN QUERY PLAN SELECT okta_user_id FROM okta_users WHERE lower(login) = 'ann@x.com'")))
        assert sql == {"ix_okta_users_login_lower": "CREATE INDEX ix_okta_users_login_lower ON okta_users (lower(login))",
                       "ix_okta_users_email_lower": "CREATE INDEX ix_okta_users_email_lower ON okta_users (lower(email))"}
        assert "ix_okta_users_login_lower" in plan


def test_second_full_run_writes_only_changes_and_moves_every_run_id(engine):
    _run(engine, T1, FIRST)
    second = [_user("00u1", "Ann@X.com", "ann@x.com"),                              # unchanged
              _user("00u2", "robert@x.com", "bob@x.com", name="Bob Ray", roles="admin,agent"),  # login, email
              _user("00u4", "dee@x.com", None, name="Dee \u00d8 \u2028", updated=T2),  # email to NULL, updated
              _user("00u5", "eve@x.com", "eve@x.com", roles="")]                     # new
    run2, deleted = _run(engine, T2, second)
    assert deleted == ["00u3"]  # not listed by this full run: gone from Okta
    assert _mirror(engine) == [
        ("00u1", "Ann@X.com", "ann@x.com", "Ann Lee", "agent", T1, "", run2),
        ("00u2", "robert@x.com", "bob@x.com", "Bob Ray", "admin,agent", T1, "", run2),
        ("00u4", "dee@x.com", None, "Dee \u00d8 \u2028", "agent", T2, "", run2),
        ("00u5", "eve@x.com", "eve@x.com", "Ann Lee", "", T1, "", run2),
    ]
    assert _owners(engine, "bob@x.com", "robert@x.com", "cy@x.com", "dee@x.com", "eve@x.com") == {
        "bob@x.com": "00u2", "robert@x.com": "00u2", "cy@x.com": None, "dee@x.com": "00u4", "eve@x.com": "00u5"}

    # An incremental run replaces only the users it staged; the others keep their run_id.
    run3, deleted = _run(engine, datetime(2026, 12, 2, 3, 0, tzinfo=UTC),
                         [_user("00u5", "eve@x.com", "eve@y.com", roles="agent")], full=False)
    assert deleted == []
    assert _mirror(engine) == [
        ("00u1", "Ann@X.com", "ann@x.com", "Ann Lee", "agent", T1, "", run2),
        ("00u2", "robert@x.com", "bob@x.com", "Bob Ray", "admin,agent", T1, "", run2),
        ("00u4", "dee@x.com", None, "Dee \u00d8 \u2028", "agent", T2, "", run2),
        ("00u5", "eve@x.com", "eve@y.com", "Ann Lee", "agent", T1, "", run3),
    ]


def test_failed_publish_leaves_the_empty_mirror_and_its_indexes(engine):
    run_id, _ = runs_db.open_run(engine, flow="nightly", org_url="https://acme.okta.com", parameters={},
                                 run_id=runs_db.new_run_id(T1), started_at=T1)
    with engine.begin() as conn:
        staging_db.land_users(conn, run_id, FIRST)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        mirror_db.refresh_mirror(conn, run_id, full=True)
        raise RuntimeError("publish failed after the mirror refresh")
    assert _mirror(engine) == []
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            names = set(conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index' "
                                          "AND tbl_name = 'okta_users' AND sql IS NOT NULL")).scalars())
        assert names == {"ix_okta_users_login_lower", "ix_okta_users_email_lower"}
