"""`role_history` (SCD type 2): current rows, nightly changes, timelines and backfill edits.

Role history is read as `HistoryRow`s and changed only through `apply_history` (nightly) and
`apply_history_edits` (backfill)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from datetime import datetime, timedelta
from operator import attrgetter

from sqlalchemy import Connection, and_, delete, func, select, update

from okta_flex_sync.core.history import (
    HistoryChange,
    HistoryRow,
    HistoryState,
    RowEdits,
)
from okta_flex_sync.models.records import VALID_TO_CURRENT
from okta_flex_sync.models.tables import role_history
from okta_flex_sync.storage.bulk import chunked, insert_batches, insert_tuples
from okta_flex_sync.storage.common import (
    bind,
)

_STATE_FIELDS = [f.name for f in fields(HistoryState)]


_state_values = attrgetter(*_STATE_FIELDS)


def current_history(conn: Connection) -> dict[str, tuple[HistoryState, datetime]]:
    h = role_history.c
    q = select(h.okta_user_id, h.login, h.app_username, h.status, h.assigned, h.roles, h.full_name, h.email,
               h.valid_from).where(h.valid_to == VALID_TO_CURRENT)
    return {uid: (HistoryState(uid, login, app_username, status, bool(assigned), roles, full_name, email), since)
            for uid, login, app_username, status, assigned, roles, full_name, email, since in conn.execute(q)}


def apply_history(conn: Connection, run_id: str, changes: Sequence[HistoryChange], *, source: str = "nightly") -> int:
    """Close current rows and open new ones. The unique (user, valid_to) key rejects a second
    current row, so two colliding writers cannot both succeed."""
    closing = [{"uid": c.state.okta_user_id, "at": c.effective_at} for c in changes if c.closes_current]
    if closing:
        stmt = (update(role_history)
                .where(and_(role_history.c.okta_user_id == bind("uid"), role_history.c.valid_to == VALID_TO_CURRENT))
                .values(valid_to=bind("at")))
        for part in chunked(closing, 2000):
            conn.execute(stmt, list(part))
    rows = ((*_state_values(c.state), c.effective_at, VALID_TO_CURRENT, run_id, source) for c in changes)
    return insert_tuples(conn, role_history, [*_STATE_FIELDS, "valid_from", "valid_to", "run_id", "source"], rows)


def role_counts(conn: Connection) -> dict[str, int]:
    """How many assigned users currently hold each role (for the report's trend chart)."""
    counts: dict[str, int] = {}
    q = select(role_history.c.roles).where(role_history.c.valid_to == VALID_TO_CURRENT, role_history.c.assigned)
    for (roles,) in conn.execute(q):
        for r in (roles or "").split(","):
            if r:
                counts[r] = counts.get(r, 0) + 1
    return counts


def user_timeline(conn: Connection, login: str, as_of: datetime | None = None) -> list[dict]:
    q = select(role_history).where(func.lower(role_history.c.login) == login.lower())
    if as_of is not None:
        q = q.where(role_history.c.valid_from <= as_of)
    rows = conn.execute(q.order_by(role_history.c.valid_from, role_history.c.id)).mappings().all()
    return [dict(r) for r in rows]


# Retimed rows park here first, so no moment of the update has two rows of one user ending at
# the same time (the unique key is checked row by row); no real row ever ends in year 1.
_PARKED = datetime(1, 1, 1)


def _history_row(r) -> HistoryRow:
    state = HistoryState(r["okta_user_id"], r["login"], r["app_username"], r["status"], bool(r["assigned"]),
                         r["roles"], r["full_name"], r["email"])
    return HistoryRow(state, r["valid_from"], r["valid_to"], r["run_id"], r["source"], r["id"])


def history_rows(conn: Connection, user_ids: Iterable[str]) -> dict[str, list[HistoryRow]]:
    """Every stored row of these users, ordered by valid_from."""
    out: dict[str, list[HistoryRow]] = {}
    for part in chunked(sorted(set(user_ids)), 500):
        q = (select(role_history).where(role_history.c.okta_user_id.in_(part))
             .order_by(role_history.c.okta_user_id, role_history.c.valid_from, role_history.c.id))
        for r in conn.execute(q).mappings():
            out.setdefault(r["okta_user_id"], []).append(_history_row(r))
    return out


def history_states_at(conn: Connection, moment: datetime) -> dict[str, HistoryState]:
    """What history says about every user at `moment` (users it does not track are absent)."""
    q = select(role_history).where(role_history.c.valid_from <= moment, role_history.c.valid_to > moment)
    return {r["okta_user_id"]: _history_row(r).state for r in conn.execute(q).mappings()}


def history_users_between(conn: Connection, after: datetime | None, until: datetime) -> set[str]:
    """Users with a row starting in (after, until]."""
    q = select(role_history.c.okta_user_id).where(role_history.c.valid_from <= until)
    if after is not None:
        q = q.where(role_history.c.valid_from > after)
    return set(conn.execute(q.distinct()).scalars())


def apply_history_edits(conn: Connection, edits: Iterable[RowEdits]) -> dict[str, int]:
    """Delete, retime, then insert, in that order, so the one-current-row key holds throughout."""
    edits = list(edits)
    deletes = [i for e in edits for i in e.delete]
    retimes = [t for e in edits for t in e.retime]
    inserts = [r for e in edits for r in e.insert]
    for part in chunked(deletes, 500):
        conn.execute(delete(role_history).where(role_history.c.id.in_(part)))
    if retimes:
        stmt = update(role_history).where(role_history.c.id == bind("rid")).values(valid_to=bind("to"))
        conn.execute(stmt, [{"rid": i, "to": _PARKED + timedelta(microseconds=i)} for i, _ in retimes])
        conn.execute(stmt, [{"rid": i, "to": to} for i, to in retimes])
    insert_batches(conn, role_history, (
        {**asdict(r.state), "valid_from": r.valid_from, "valid_to": r.valid_to, "run_id": r.run_id,
         "source": r.source} for r in inserts))
    return {"deleted": len(deletes), "retimed": len(retimes), "inserted": len(inserts)}

