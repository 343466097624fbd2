"""`okta_log_events` (one row per System Log uuid) and which days of the log were fetched
(a watermark per day, stream "system-log:YYYY-MM-DD"), so a resumed backfill does not fetch a day twice."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime

from sqlalchemy import Connection, delete, insert, select

from okta_flex_sync.models.tables import (
    okta_log_events,
    watermarks,
)
from okta_flex_sync.storage.bulk import chunked, insert_batches

LOG_DAY_STREAM = "system-log:"


def store_log_events(conn: Connection, rows: Sequence[dict]) -> int:
    """Insert events not stored yet (by uuid); returns how many were new."""
    fresh: dict[str, dict] = {}
    for row in rows:
        fresh.setdefault(row["uuid"], row)
    for part in chunked(list(fresh), 500):
        for known in conn.execute(select(okta_log_events.c.uuid).where(okta_log_events.c.uuid.in_(part))).scalars():
            fresh.pop(known, None)
    return insert_batches(conn, okta_log_events, fresh.values())


def log_events_for(conn: Connection, user_ids: Iterable[str], after: datetime | None, until: datetime) -> list[dict]:
    """Stored events about these users published in (after, until], oldest first."""
    out: list[dict] = []
    for part in chunked(sorted(set(user_ids)), 500):
        q = select(okta_log_events).where(okta_log_events.c.target_user_id.in_(part),
                                          okta_log_events.c.published <= until)
        if after is not None:
            q = q.where(okta_log_events.c.published > after)
        out.extend(dict(r) for r in conn.execute(q).mappings())
    out.sort(key=lambda r: (r["published"], r["uuid"]))
    return out


def log_day_marks(conn: Connection, org_url: str) -> dict[date, tuple[datetime, datetime]]:
    """Days of the System Log already fetched: day -> (fetched until, fetched at)."""
    q = select(watermarks.c.stream, watermarks.c.value, watermarks.c.updated_at).where(
        watermarks.c.org_url == org_url, watermarks.c.stream.like(LOG_DAY_STREAM + "%"))
    out = {}
    for stream, value, updated_at in conn.execute(q):
        try:
            out[date.fromisoformat(stream[len(LOG_DAY_STREAM):])] = (value, updated_at)
        except ValueError:
            continue
    return out


def mark_log_day(conn: Connection, org_url: str, day: date, fetched_until: datetime, *, run_id: str,
                 fetched_at: datetime) -> None:
    stream = f"{LOG_DAY_STREAM}{day.isoformat()}"
    conn.execute(delete(watermarks).where(watermarks.c.org_url == org_url, watermarks.c.stream == stream))
    conn.execute(insert(watermarks).values(org_url=org_url, stream=stream, value=fetched_until, run_id=run_id,
                                           updated_at=fetched_at))

