"""`okta_users`: the latest known state of every Okta user, and owner look-ups for reconcile."""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, delete, exists, func, insert, select

from okta_flex_sync.models.records import VALID_TO_CURRENT, OktaUser
from okta_flex_sync.models.tables import (
    okta_users,
    role_history,
    staged_app_assignments,
    staged_okta_users,
)
from okta_flex_sync.storage.bulk import batch_size_for, chunked
from okta_flex_sync.storage.common import (
    USER_FIELDS,
    columns_of,
    user_from_row,
)


def mirror_users(conn: Connection, run_id: str, *, with_current_history: bool = True) -> dict[str, OktaUser]:
    """The mirrored users a run's reconciliation and history need: those its staged
    assignments name and (`with_current_history`) those with a current role-history row.

    Joins instead of binding 15k ids (chunked IN lists cost twice as much); the second query
    only adds the few users with a current row but no assignment this run."""
    columns = columns_of(okta_users, USER_FIELDS)
    assigned = staged_app_assignments.c
    q = (select(*columns).join(staged_app_assignments, assigned.okta_user_id == okta_users.c.okta_user_id)
         .where(assigned.run_id == run_id))
    out = {row[0]: OktaUser(*row) for row in conn.execute(q).all()}
    if with_current_history:
        h = role_history.c
        unassigned = ~exists().where(assigned.run_id == run_id, assigned.okta_user_id == h.okta_user_id)
        q = (select(*columns).join(role_history, h.okta_user_id == okta_users.c.okta_user_id)
             .where(h.valid_to == VALID_TO_CURRENT, unassigned))
        out.update((row[0], OktaUser(*row)) for row in conn.execute(q).all())
    return out


def find_owner(conn: Connection, name: str) -> OktaUser | None:
    """The Okta user whose login, or else email, equals `name` case-insensitively."""
    key = (name or "").lower()
    if not key:
        return None
    for col in (okta_users.c.login, okta_users.c.email):
        row = conn.execute(select(okta_users).where(func.lower(col) == key)
                           .order_by(okta_users.c.okta_user_id).limit(1)).mappings().first()
        if row:
            return user_from_row(row)
    return None


def find_owners(conn: Connection, names: Iterable[str]) -> dict[str, OktaUser | None]:
    """`find_owner` for many names at once, keyed by `name.lower()`: one query per column and
    chunk instead of two per name (a thousand orphan workers made a thousand round trips)."""
    keys = sorted({(n or "").lower() for n in names} - {""})
    found: dict[str, OktaUser] = {}
    size = max(1, batch_size_for(conn, 1) // 2)
    for col in (okta_users.c.login, okta_users.c.email):
        pending = [k for k in keys if k not in found]
        by_col: dict[str, OktaUser] = {}
        for part in chunked(pending, size):
            q = (select(okta_users, func.lower(col).label("match_key")).where(func.lower(col).in_(part))
                 .order_by(okta_users.c.okta_user_id))
            for r in conn.execute(q).mappings():
                by_col.setdefault(r["match_key"], user_from_row(r))
        found.update(by_col)
    return {k: found.get(k) for k in keys}


def owner_finder(conn: Connection, likely_names: Iterable[str]):
    """A `find_owner(name)` for reconcile that answers the likely names from one batched
    lookup and any other name with a single query."""
    known = find_owners(conn, likely_names)

    def find(name: str) -> OktaUser | None:
        key = (name or "").lower()
        return known[key] if key in known else find_owner(conn, name)
    return find


def count_mirror(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(okta_users)).scalar_one()


def refresh_mirror(conn: Connection, run_id: str, *, full: bool) -> list[str]:
    """Bring `okta_users` up to this run's staged users; returns ids deleted from Okta (full runs)."""
    staged_ids = select(staged_okta_users.c.okta_user_id).where(staged_okta_users.c.run_id == run_id)
    deleted: list[str] = []
    if full:
        deleted = list(conn.execute(select(okta_users.c.okta_user_id)
                                    .where(okta_users.c.okta_user_id.not_in(staged_ids))).scalars())
        conn.execute(delete(okta_users))
    else:
        conn.execute(delete(okta_users).where(okta_users.c.okta_user_id.in_(staged_ids)))
    cols = [c.name for c in staged_okta_users.columns if c.name != "run_id"]
    src = select(*[staged_okta_users.c[c] for c in cols], staged_okta_users.c.run_id).where(
        staged_okta_users.c.run_id == run_id)
    conn.execute(insert(okta_users).from_select([*cols, "run_id"], src))
    return deleted

