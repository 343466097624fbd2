"""Engines, migrations, batched writes and the one-writer-at-a-time lock."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# SQLite allows 32766 bound parameters per statement (since 3.32), Postgres 65535.
_MAX_PARAMS = {"sqlite": 32000, "postgresql": 60000}


class RunLockedError(RuntimeError):
    """Another run holds the writer lock for this database."""


def make_engine(url: str, **kwargs) -> Engine:
    """Create an engine; SQLite gets WAL (readers never block on the writer) and FK checks."""
    if url.startswith("sqlite"):
        u = make_url(url)
        if u.database and u.database != ":memory:":
            Path(u.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - exercised by every sqlite test
            # Let SQLAlchemy's begin() emit BEGIN so a run's writes are one transaction.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):  # pragma: no cover
            # IMMEDIATE takes the write lock up front, so two processes migrating at once queue
            # instead of failing half-way.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# Alembic's `context`/`op` proxies are module globals: one migration at a time per process.
_UPGRADE_LOCK = threading.Lock()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to the latest schema (idempotent)."""
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with _UPGRADE_LOCK, engine.connect() as conn:
        conn = conn.execution_options(immediate=True)
        with conn.begin():
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except Exception:
            return None


def batch_size_for(conn: Connection, columns: int) -> int:
    limit = _MAX_PARAMS.get(conn.dialect.name, 30000)
    return max(1, min(5000, limit // max(1, columns)))


def insert_batches(conn: Connection, table: Table, rows: Iterable[dict]) -> int:
    """Insert rows in executemany batches sized to the dialect's bound-parameter limit."""
    size = batch_size_for(conn, len(table.columns))
    batch: list[dict] = []
    total = 0
    stmt = table.insert()
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            conn.execute(stmt, batch)
            total += len(batch)
            batch = []
    if batch:
        conn.execute(stmt, batch)
        total += len(batch)
    return total


def chunked(seq: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def writer_lock(engine: Engine, name: str, *, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the database-level writer lock for `name` (one org), or raise RunLockedError.

    Postgres: a session-level advisory lock.  SQLite: an exclusive `flock` on a file next to
    the database.  Either way the lock dies with the process, so a killed run never leaves
    a stale lock behind.
    """
    deadline = time.monotonic() + wait_seconds
    if engine.dialect.name == "postgresql":
        key = _lock_key("okta-flex-sync-writer")  # one writer per database; `name` only words the message
        conn = engine.connect()
        try:
            while True:
                got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                conn.commit()
                if got:
                    break
                if time.monotonic() >= deadline:
                    raise RunLockedError(f"another okta-flex-sync run is writing for {name}; try again when it finishes")
                time.sleep(1.0)
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        finally:
            conn.close()
        return

    db = engine.url.database
    lock_path = (Path(db).expanduser().resolve().with_suffix(".lock") if db and db != ":memory:"
                 else Path(os.environ.get("TMPDIR", "/tmp")) / "okta-flex-sync-memory.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RunLockedError(
                        f"another okta-flex-sync run is writing for {name}; try again when it finishes") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
