"""The watch's reads and writes: which System Log events a poll already handled, and the user
mirror rows it refreshes.  Its cursor is a row of `watermarks` (stream `watch:system-log`, see
`okta_flex_sync.core.watch`), read and moved with `okta_flex_sync.storage.runs.get_watermark`/`set_watermark`."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import fields
from operator import attrgetter

from sqlalchemy import Connection, delete, select, update

from okta_flex_sync.models.records import OktaUser
from okta_flex_sync.models.tables import okta_log_events, okta_users, sync_runs
from okta_flex_sync.storage.bulk import chunked, insert_batches, insert_tuples

_USER_FIELDS = [f.name for f in fields(OktaUser)]
_user_values = attrgetter(*_USER_FIELDS)


def handled_events(conn: Connection, uuids: Iterable[str], *, flow: str = "watch") -> set[str]:
    """Those of `uuids` a watch poll already handled: stored in `okta_log_events` by a run of `flow`.

    An event a nightly run or backfill stored is not handled yet: they keep it for history,
    they do not act on it."""
    out: set[str] = set()
    e, r = okta_log_events.c, sync_runs.c
    for part in chunked(sorted(set(uuids)), 500):
        q = (select(e.uuid).join(sync_runs, r.run_id == e.run_id)
             .where(e.uuid.in_(part), r.flow == flow))
        out.update(conn.execute(q).scalars())
    return out


def mark_handled(conn: Connection, rows: Sequence[dict], run_id: str) -> int:
    """Store these `okta_log_events` rows as handled by `run_id` (rows a nightly run or backfill
    stored already are claimed for the watch: same event, one row per uuid)."""
    by_uuid = {row["uuid"]: {**row, "run_id": run_id} for row in rows}
    known: set[str] = set()
    for part in chunked(list(by_uuid), 500):
        known.update(conn.execute(select(okta_log_events.c.uuid).where(okta_log_events.c.uuid.in_(part))).scalars())
    for part in chunked(sorted(known), 500):
        conn.execute(update(okta_log_events).where(okta_log_events.c.uuid.in_(part)).values(run_id=run_id))
    return insert_batches(conn, okta_log_events, (r for u, r in by_uuid.items() if u not in known))


def refresh_mirror_users(conn: Connection, run_id: str, users: Iterable[OktaUser], gone: Iterable[str] = ()) -> int:
    """Replace the mirror rows of users just re-read, and drop users Okta no longer has."""
    users = list(users)
    ids = sorted({u.okta_user_id for u in users} | set(gone))
    for part in chunked(ids, 500):
        conn.execute(delete(okta_users).where(okta_users.c.okta_user_id.in_(part)))
    return insert_tuples(conn, okta_users, [*_USER_FIELDS, "run_id"], ((*_user_values(u), run_id) for u in users))
