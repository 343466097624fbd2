"""The one-writer-at-a-time lock: a Postgres advisory lock, or `flock` next to the SQLite file."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, text


class RunLockedError(RuntimeError):
    """Another run holds the writer lock for this database."""


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
                # A session lock dies with its connection: when that connection was lost (the
                # server restarted, an admin ended it) there is nothing left to release, and the
                # run's own outcome, already committed or not, must not turn into this error.
                with contextlib.suppress(Exception):
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
        finally:
            with contextlib.suppress(Exception):
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
