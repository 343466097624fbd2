"""Landing pages (issue 17): pages compressed by ISA-L read back as plain gzip, byte for byte, and
the landing connection defers SQLite's WAL checkpoints only while it is open.  Both databases."""
from __future__ import annotations

import gzip
from datetime import datetime

import pytest
from sqlalchemy import select

from okta_flex_sync.models.tables import raw_pages
from okta_flex_sync.storage import runs as runs_db
from okta_flex_sync.storage import staging as staging_db

STARTED = datetime(2026, 12, 3, 2, 0)
# Hostile bytes included: a lone surrogate escape, NUL, non-ASCII, and a page of 300 users.
PAGE = (b'[{"id":"00u1","profile":{"login":"\\ud800@x.com","firstName":"Zo\xc3\xab\\u0000"}}'
        + b"".join(b',{"id":"00u%d","profile":{"login":"u%d@x.com"}}' % (i, i) for i in range(2, 302)) + b"]")


def _open(engine) -> str:
    run_id, _ = runs_db.open_run(engine, flow="nightly", org_url="https://acme.okta.com", parameters={},
                                 run_id=runs_db.new_run_id(STARTED), started_at=STARTED)
    return run_id


def test_compressed_page_is_plain_gzip_of_the_page():
    stored = staging_db.compress_page(PAGE)
    assert stored[:2] == b"\x1f\x8b"  # the gzip magic: every earlier reader still reads it
    assert gzip.decompress(stored) == PAGE
    assert len(stored) < len(PAGE) // 5


def test_landed_page_reads_back_through_backfill_reader(engine):
    run_id = _open(engine)
    with staging_db.landing(engine) as conn, conn.begin():
        staging_db.land_raw_page(conn, run_id, "users", 1, url="/api/v1/users?limit=200", fetched_at=STARTED,
                                 item_count=301, body_gz=staging_db.compress_page(PAGE))
    with engine.connect() as conn:
        docs = list(staging_db.iter_raw_pages(conn, run_id, "users"))
        body = conn.execute(select(raw_pages.c.body_gz).where(raw_pages.c.run_id == run_id)).scalar_one()
    assert gzip.decompress(body) == PAGE
    assert len(docs) == 1 and len(docs[0]) == 301
    assert docs[0][0]["profile"]["firstName"] == "Zo\u00eb\u0000"
    assert docs[0][300]["id"] == "00u301"


def _autocheckpoint(conn) -> int:
    return int(conn.connection.driver_connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


def test_landing_defers_checkpoints_only_while_open(engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("WAL checkpoints are SQLite's")
    with engine.connect() as conn:
        before = _autocheckpoint(conn)
    assert before == 1000  # SQLite's default: nothing else of ours changes it
    with staging_db.landing(engine) as conn:
        assert _autocheckpoint(conn) == 0
        held = conn.connection.driver_connection
    with engine.connect() as conn:  # the pool hands the same connection out again, restored
        assert conn.connection.driver_connection is held
        assert _autocheckpoint(conn) == 1000


def test_landing_restores_checkpoints_after_a_failed_batch(engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("WAL checkpoints are SQLite's")
    run_id = _open(engine)
    with pytest.raises(RuntimeError, match="listing failed"):
        with staging_db.landing(engine) as conn:
            with conn.begin():
                staging_db.land_raw_page(conn, run_id, "users", 1, url="/u", fetched_at=STARTED, item_count=0,
                                         body=b"[]")
            with conn.begin():
                staging_db.land_raw_page(conn, run_id, "users", 2, url="/u", fetched_at=STARTED, item_count=0,
                                         body=b"[]")
                raise RuntimeError("listing failed")
    with engine.connect() as conn:
        assert _autocheckpoint(conn) == 1000
        seqs = conn.execute(select(raw_pages.c.seq).where(raw_pages.c.run_id == run_id)).scalars().all()
    assert seqs == [1]  # the committed batch stays landed, the failed one is rolled back


def test_wal_left_on_disk_is_capped(engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("WAL files are SQLite's")
    with engine.connect() as conn:
        limit = int(conn.connection.driver_connection.execute("PRAGMA journal_size_limit").fetchone()[0])
    assert limit == 64 * 1024 * 1024


def test_publish_checkpoints_what_landing_deferred_on_a_thread_of_its_own(engine):
    """`checkpointing_meanwhile` copies the WAL that landing left into the database file while
    the caller works (the caller's own transaction stays open throughout)."""
    from pathlib import Path

    if engine.dialect.name != "sqlite":
        with staging_db.checkpointing_meanwhile(engine):  # nothing to do, nothing raised
            pass
        return
    run_id = _open(engine)
    with staging_db.landing(engine) as conn:
        for seq in range(1, 41):
            with conn.begin():
                staging_db.land_raw_page(conn, run_id, "users", seq, url="/u", fetched_at=STARTED, item_count=301,
                                         body_gz=bytes(range(256)) * 200)  # 51 kB that do not compress
    database = Path(engine.url.database)
    before = database.stat().st_size
    with staging_db.checkpointing_meanwhile(engine), engine.begin() as conn:
        conn.execute(select(raw_pages.c.seq).limit(1)).all()
    assert before < 1_000_000 < database.stat().st_size  # ~2 MB of pages moved out of the WAL
