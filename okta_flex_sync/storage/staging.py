"""Landing: raw pages and normalized records of a run (`raw_pages`, `staged_*`), and reading them back."""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from operator import attrgetter

from isal import igzip
from sqlalchemy import Connection, Engine, delete, insert, select

from okta_flex_sync.models.records import AppAssignment, OktaUser, Worker
from okta_flex_sync.models.tables import (
    raw_pages,
    staged_app_assignments,
    staged_okta_users,
    staged_workers,
)
from okta_flex_sync.storage.bulk import chunked, insert_tuples
from okta_flex_sync.storage.common import (
    ASSIGNMENT_FIELDS,
    USER_FIELDS,
    WORKER_FIELDS,
    columns_of,
    storable_text,
)

log = logging.getLogger(__name__)

# Records go to the database as tuples (`attrgetter` of their fields): `asdict` deep-copies and
# a dict per row costs more than the insert itself at 100k rows.
_user_values = attrgetter(*USER_FIELDS)


_assignment_values = attrgetter(*ASSIGNMENT_FIELDS)


_worker_values = attrgetter(*WORKER_FIELDS)


@contextlib.contextmanager
def landing(engine: Engine) -> Iterator[Connection]:
    """The one connection a run lands its pages and records through (a transaction per batch).

    On SQLite it defers WAL checkpoints until landing ends: each automatic checkpoint (every
    4 MB of WAL) fsyncs, and landing blocked on those for seconds a run on a busy disk (60 MB
    landed: 2-3 s of wall time against 0.5 s without, 0.4 s of CPU either way).  The first
    commit after landing (publish) checkpoints the whole WAL once.  Commits stay as they were:
    a crash keeps every landed page; a power loss may roll back to the last checkpoint, as
    synchronous=NORMAL always allowed, and an unpublished run is repeated anyway.  The WAL file
    left behind is cut back to `journal_size_limit` (see `storage.engine`)."""
    with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            yield conn
            return
        raw = conn.connection.driver_connection
        raw.execute("PRAGMA wal_autocheckpoint=0")
        try:
            # IMMEDIATE: each batch takes the write lock as it begins, so two processes landing
            # one run (see jobs.landing) queue for it instead of one failing on a stale snapshot.
            yield conn.execution_options(immediate=True)
        finally:
            try:
                raw.execute("PRAGMA wal_autocheckpoint=1000")  # SQLite's default, which nothing else changes
            except Exception as exc:  # noqa: BLE001 - never pool a connection that would not checkpoint
                log.warning("could not restore WAL checkpoints on a landing connection (%s); discarding it",
                            type(exc).__name__)
                conn.invalidate()


@contextlib.contextmanager
def checkpointing_meanwhile(engine: Engine) -> Iterator[None]:
    """SQLite: copy the WAL that landing left (hundreds of MB at 1M users) into the database
    file on a thread of its own while the caller works (publish), instead of in publish's
    commit.  A passive checkpoint: it waits for nobody and nobody waits for it; frames it cannot
    take yet are checkpointed as before, at the next commit or when the last connection closes.
    Best effort: a failure only costs the time it would have saved.  Postgres: nothing to do."""
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:":
        yield
        return

    def checkpoint() -> None:
        try:
            raw = sqlite3.connect(path, timeout=60)
            try:
                raw.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                raw.close()
        except sqlite3.Error as exc:
            log.debug("background WAL checkpoint skipped: %s", exc)

    worker = threading.Thread(target=checkpoint, name="wal-checkpoint", daemon=True)
    worker.start()
    try:
        yield
    finally:
        worker.join()


def land_users(conn: Connection, run_id: str, users: Iterable[OktaUser]) -> int:
    return insert_tuples(conn, staged_okta_users, ["run_id", *USER_FIELDS],
                         ((run_id, *_user_values(u)) for u in users))


def land_assignments(conn: Connection, run_id: str, rows: Iterable[AppAssignment]) -> int:
    return insert_tuples(conn, staged_app_assignments, ["run_id", *ASSIGNMENT_FIELDS],
                         ((run_id, *_assignment_values(a)) for a in rows))


def as_landed(record):
    """`record` as its staging row reads back: a worker's raw attributes made storable."""
    if isinstance(record, Worker):
        raw = record.attributes_raw
        safe = storable_text(raw)
        if safe is not raw:
            return dataclasses.replace(record, attributes_raw=safe)
    return record


def _worker_row(run_id: str, w: Worker) -> tuple:
    return (run_id, *_worker_values(as_landed(w)))


def land_workers(conn: Connection, run_id: str, rows: Iterable[Worker]) -> int:
    return insert_tuples(conn, staged_workers, ["run_id", *WORKER_FIELDS], (_worker_row(run_id, w) for w in rows))


def unland(conn: Connection, run_id: str, source: str, keys: Sequence[str]) -> None:
    """Remove landed records of this run (a later page listed them again)."""
    table, col = {"users": (staged_okta_users, "okta_user_id"), "assignments": (staged_app_assignments, "okta_user_id"),
                  "workers": (staged_workers, "worker_sid")}[source]
    for part in chunked(list(keys), 500):
        conn.execute(delete(table).where(table.c.run_id == run_id, table.c[col].in_(part)))


def compress_page(body: bytes) -> bytes:
    """A raw page as stored: gzip, written by ISA-L (`isal.igzip`) at its level 1.

    Plain gzip, so every reader (`gzip.decompress`, backfill, pages stored before) stays as it
    was; ISA-L makes it about 4x cheaper than zlib's fastest level and a little smaller (117 MB
    of scenario 1's pages: 0.11 s of CPU and 16.3 MB against 0.43 s and 16.8 MB)."""
    return igzip.compress(body, compresslevel=1)


def land_raw_page(conn: Connection, run_id: str, source: str, seq: int, *, url: str, fetched_at: datetime,
                  item_count: int, body: bytes | None = None, body_gz: bytes | None = None) -> None:
    """Keep one listing page; give its bytes as `body` or already compressed as `body_gz`."""
    if body_gz is None:
        if body is None:
            raise TypeError("land_raw_page needs body or body_gz")
        body_gz = compress_page(body)
    conn.execute(_INSERT_RAW_PAGE, {"run_id": run_id, "source": source, "seq": seq, "url": url,
                                    "fetched_at": fetched_at, "item_count": item_count, "body_gz": body_gz})


# One statement built once and given parameters: `insert().values(...)` per page rebuilt the
# statement and its cache key each time (5,000 pages at 1M users: 0.43 s against 0.07 s).
_INSERT_RAW_PAGE = insert(raw_pages)


def iter_raw_pages(conn: Connection, run_id: str, source: str) -> Iterable[dict]:
    """Yield the decoded JSON documents of a run's raw pages in order."""
    q = (select(raw_pages.c.seq, raw_pages.c.body_gz).where(raw_pages.c.run_id == run_id, raw_pages.c.source == source)
         .order_by(raw_pages.c.seq))
    for _seq, body in conn.execute(q):
        yield json.loads(gzip.decompress(body))


def staged_assignments(conn: Connection, run_id: str) -> dict[str, AppAssignment]:
    q = select(*columns_of(staged_app_assignments, ASSIGNMENT_FIELDS)).where(staged_app_assignments.c.run_id == run_id)
    return {row[0]: AppAssignment(*row) for row in conn.execute(q)}


def staged_worker_list(conn: Connection, run_id: str) -> list[Worker]:
    q = (select(*columns_of(staged_workers, WORKER_FIELDS)).where(staged_workers.c.run_id == run_id)
         .order_by(staged_workers.c.worker_sid))
    return [Worker(*row) for row in conn.execute(q)]


def unchanged_worker_attributes(conn: Connection, run_id: str, sids: Iterable[str], *,
                                updated_before: datetime) -> dict[str, tuple]:
    """worker sid -> (date_updated, attributes_raw) of those of `sids` among a run's staged
    workers whose attributes parsed and whose last update came before `updated_before` (see
    `okta_flex_sync.jobs.nightly`)."""
    w = staged_workers.c
    out: dict[str, tuple] = {}
    for part in chunked(sorted(set(sids)), 500):
        q = select(w.worker_sid, w.date_updated, w.attributes_raw).where(
            w.run_id == run_id, w.worker_sid.in_(part), w.parse_error.is_(None), w.attributes_raw.is_not(None),
            w.date_updated < updated_before)
        out.update((sid, (updated, raw)) for sid, updated, raw in conn.execute(q))
    return out


def problem_records(conn: Connection, run_id: str, limit: int = 200) -> tuple[int, list[dict]]:
    """Records this run kept although some of their values could not be read: (count, sample)."""
    count, sample = 0, []
    for source, table, key in (("users", staged_okta_users, staged_okta_users.c.okta_user_id),
                               ("assignments", staged_app_assignments, staged_app_assignments.c.okta_user_id)):
        # One pass counts and samples (two, a count and a sample, read 1M staged users twice).
        rows = conn.execute(select(key, table.c.problems).where(table.c.run_id == run_id, table.c.problems != "")
                            .order_by(key))
        for rid, problems in rows:
            count += 1
            if len(sample) < limit:
                sample.append({"source": source, "id": rid, "reason": f"kept, but {problems}"[:300]})
    return count, sample

