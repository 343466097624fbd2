"""Landing listing pages in staging, in the run's own process or, for the users, in one of its own.

`land_page` is what the extract consumer does with every page: convert its items (a malformed
item is skipped and reported), keep the last record per key, land the raw page and the records,
and take back rows of keys an earlier page already landed (the later listing wins).

`UsersLandingProcess` moves that work for the users listing into a child process
(`python -m okta_flex_sync.jobs.landing`).  A 1M-user night spends ~30 s of CPU normalizing,
compressing and landing users; in the run's own process that work holds the one interpreter
lock the listing threads need between every request, so the users listing (the longest path
of the night) waited on it.  The child gets each page's bytes as received, parses them again
(orjson, ~1 ms a page), and lands them through its own database connection exactly as the
run's own process would have: same rows, same raw pages, same skipped records.  Only the
extract's consumer talks to it; publish starts after the child has committed everything and
exited.  A child that fails hands its error back (the run fails as it would have in-process,
and a retried extract discards what the child had landed); a child that dies says so.
"""
from __future__ import annotations

import logging
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from okta_flex_sync.core import fastjson
from okta_flex_sync.core.normalize import MalformedRecord, normalize_user
from okta_flex_sync.storage import staging as staging_db
from okta_flex_sync.storage.common import storable_text
from okta_flex_sync.storage.engine import make_engine

log = logging.getLogger(__name__)

KEYS: dict[str, Callable[[Any], str]] = {
    "users": lambda r: r.okta_user_id, "assignments": lambda r: r.okta_user_id,
    "workers": lambda r: r.worker_sid, "logs": lambda e: e.uuid}


@dataclass
class Landed:
    """What landing one listing's pages added up to."""

    items: int = 0  # records landed, minus those a later page replaced
    skipped: list[dict] = field(default_factory=list)
    max_last_updated: datetime | None = None  # users only: the watermark candidate
    normalize_seconds: float = 0.0  # CPU seconds spent converting items


def convert_items(source: str, items: list, convert: Callable) -> tuple[list, list[dict]]:
    """(records, skipped) of one page; an item without a usable id is skipped and reported."""
    records, skipped = [], []
    for item in items:
        try:
            record = convert(item)
            if record is not None:  # None: an item this listing does not keep
                records.append(record)
        except MalformedRecord as exc:
            rid = item.get("id") or item.get("sid") if isinstance(item, dict) else None
            skipped.append({"source": source, "id": storable_text(str(rid)[:100]) if rid else None,
                            "reason": str(exc)[:300]})
    return records, skipped


def dedupe(source: str, records: list, seen: set[str]) -> tuple[list, list[str]]:
    """Keep the last record per key on a page; report keys already landed from earlier pages."""
    key = KEYS[source]
    latest = {key(r): r for r in records}
    replaced = [k for k in latest if k in seen]
    seen.update(latest)
    return list(latest.values()), replaced


def land_page(conn: Connection, run_id: str, source: str, seq: int, page, body_gz: bytes, *,
              convert: Callable, lander: Callable, seen: set[str], into: Landed) -> list:
    """Land one page (`page`: a `clients.http.Page`) in the caller's transaction; returns the
    records landed, and adds counts, skipped items and the users' latest `lastUpdated` to `into`."""
    started = time.thread_time()
    records, skipped = convert_items(source, page.items, convert)
    into.normalize_seconds += time.thread_time() - started
    records, replaced = dedupe(source, records, seen)
    if source == "users":
        for u in records:
            if u.last_updated and (into.max_last_updated is None or u.last_updated > into.max_last_updated):
                into.max_last_updated = u.last_updated
    staging_db.land_raw_page(conn, run_id, source, seq, url=page.url, fetched_at=page.fetched_at,
                             body_gz=body_gz, item_count=len(page.items))
    if replaced and source != "logs":  # listed twice (e.g. deactivated during the pull): the later listing wins
        staging_db.unland(conn, run_id, source, replaced)
    lander(conn, run_id, records)
    into.items += len(records) - len(replaced)
    into.skipped.extend(skipped)
    if page.dropped:
        into.skipped.append({"source": source, "id": None,
                             "reason": f"{page.dropped} list item(s) on a page were not JSON objects"})
    return records


def user_converter(valid_roles: frozenset[str], image_url_attribute: str) -> Callable:
    def convert(raw):
        return normalize_user(raw, valid_roles=valid_roles, image_url_attribute=image_url_attribute)
    return convert


# --- the users landing process ------------------------------------------------------------------

class LandingProcessError(RuntimeError):
    """The users landing process could not be started, or stopped without finishing."""


@dataclass
class _WirePage:
    """A page as the child rebuilds it from the bytes received (see `clients.http.Page`)."""

    items: list
    url: str
    fetched_at: datetime
    dropped: int


_END = "end"
_COMMIT_EVERY_PAGES = 8  # the child commits after this many pages (the run's consumer: up to 8 per batch)
_CHILD_CACHE_PRAGMA = "PRAGMA cache_size=-8192"  # KiB
_WITHHELD_ENV = ("OKTA_", "TWILIO_", "TASKROUTER_", "DATABASE_URL", "PREFECT_API_KEY")
_QUEUE_PAGES = 32  # pages waiting for the child (~7 MB at Okta's 200 users a page) before the consumer waits


class UsersLandingProcess:
    """The parent's side: hand users pages to the child, collect what it landed.

    `submit` queues a page (a sender thread writes it to the child, so a busy child slows the
    listing down instead of filling memory); `finish` waits until the child has committed
    every page and returns its `Landed`; `stop` ends the child early (the run failed)."""

    def __init__(self, database_url: str, run_id: str, *, valid_roles: frozenset[str], image_url_attribute: str,
                 seen: set[str]):
        # It needs no credentials: Okta and Twilio settings stay with the run, and the database
        # URL (it may hold a password) goes through the pipe, never the command line or environment.
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_WITHHELD_ENV)}
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "okta_flex_sync.jobs.landing"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, env=env)
        except OSError as exc:
            raise LandingProcessError(f"could not start the users landing process: {exc}") from exc
        self.pages = 0
        self.items = 0  # landed and committed by the child so far
        self._result: Landed | None = None
        self._error: BaseException | None = None
        self._outbox: queue.Queue = queue.Queue(maxsize=_QUEUE_PAGES)
        self._done = threading.Event()
        self._outbox.put({"database_url": database_url, "run_id": run_id, "valid_roles": sorted(valid_roles),
                          "image_url_attribute": image_url_attribute, "seen": list(seen)})
        self._sender = threading.Thread(target=self._send, name="users-landing-send", daemon=True)
        self._reader = threading.Thread(target=self._read, name="users-landing-read", daemon=True)
        self._sender.start()
        self._reader.start()

    def submit(self, seq: int, page) -> None:
        """Queue one users page (a `clients.http.Page`) as landing page number `seq`."""
        self._put((seq, page.url, page.fetched_at, page.raw))
        self.pages += 1

    def _put(self, item) -> None:
        """Queue `item`, waiting while the queue is full, unless the child has failed or died
        (then nothing would ever take it)."""
        self._raise_if_failed()
        while True:
            try:
                self._outbox.put(item, timeout=0.5)
                return
            except queue.Full:
                self._raise_if_failed()

    def finish(self, timeout: float | None = None) -> Landed:
        """Wait until the child has landed and committed every page; its totals."""
        self._put(_END)
        self._done.wait(timeout)
        self._proc.wait(timeout=30)
        self._raise_if_failed()
        if self._result is None:
            raise LandingProcessError(f"the users landing process stopped without finishing "
                                      f"(exit code {self._proc.returncode})")
        return self._result

    def stop(self) -> None:
        """End the child now (the run failed or stops); what it landed is discarded with the run."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._done.set()
        while True:  # let a sender blocked on a full queue go
            try:
                self._outbox.get_nowait()
            except queue.Empty:
                break
        self._outbox.put_nowait(_END)
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
        if self._done.is_set() and self._result is None:
            raise LandingProcessError(f"the users landing process exited early (exit code {self._proc.poll()})")

    def _send(self) -> None:
        stream = self._proc.stdin
        try:
            while True:
                item = self._outbox.get()
                payload = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
                stream.write(_FRAME.pack(len(payload)))
                stream.write(payload)
                stream.flush()
                if item == _END:
                    break
            stream.close()
        except (OSError, ValueError):  # the child is gone: the reader reports why
            pass

    def _read(self) -> None:
        stream = self._proc.stdout
        try:
            while True:
                try:
                    kind, value = pickle.load(stream)
                except (EOFError, OSError, ValueError, pickle.UnpicklingError):
                    break
                if kind == "landed":
                    self.items = value
                elif kind == "done":
                    self._result = value
                    break
                elif kind == "error":
                    self._error = value
                    break
        finally:
            self._done.set()


def _as_exception(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling (database errors do), else its one-line text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception that cannot cross the pipe
        return LandingProcessError(f"users landing failed: {type(exc).__name__}: {exc}")


_FRAME = struct.Struct(">Q")  # parent -> child: each message is its length, then its pickle


def _read_exactly(stream, size: int) -> bytes:
    """`size` bytes from an unbuffered stream (a pipe returns what it has); EOFError at its end."""
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = stream.readinto(view[got:])
        if not n:
            raise EOFError("the run's process closed the pipe")
        got += n
    return bytes(buffer)


def _receive(stream):
    (size,) = _FRAME.unpack(_read_exactly(stream, _FRAME.size))
    return pickle.loads(_read_exactly(stream, size))


def _has_input(stream) -> bool:
    """Whether a message is already waiting (the stream is unbuffered, so the pipe tells)."""
    return bool(select.select([stream], [], [], 0)[0])


def _child(stdin, stdout) -> int:
    """The child's loop: read pages, land them, report, exit.  Pages that arrive back to back
    share a transaction (up to `_COMMIT_EVERY_PAGES`); it is committed before the child waits
    for more, so the write lock is never held while the run's own process needs it to go on."""
    def send(kind: str, value) -> None:
        pickle.dump((kind, value), stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()

    engine = None
    try:
        config = _receive(stdin)
        run_id = config["run_id"]
        convert = user_converter(frozenset(config["valid_roles"]), config["image_url_attribute"])
        seen = set(config["seen"])
        landed = Landed()
        engine = make_engine(config["database_url"])
        with staging_db.landing(engine) as conn:
            if conn.dialect.name == "sqlite":
                # Appending needs little cache: 8 MiB instead of the run's 64 (56 MB less at 1M users).
                conn.connection.driver_connection.execute(_CHILD_CACHE_PRAGMA)
            # IMMEDIATE: take the write lock when the batch starts (the run's own process may be
            # landing assignments or workers at the same moment; SQLite then waits its turn).
            conn = conn.execution_options(immediate=True)
            pending = 0
            transaction = None
            while True:
                if transaction is not None and not _has_input(stdin):
                    transaction.commit()
                    transaction, pending = None, 0
                    send("landed", landed.items)
                message = _receive(stdin)
                if message == _END:
                    break
                seq, url, fetched_at, raw = message
                body = fastjson.loads(raw)  # the parent already checked it is a JSON list
                items = [item for item in body if isinstance(item, dict)]
                page = _WirePage(items, url, fetched_at, len(body) - len(items))
                if transaction is None:
                    transaction = conn.begin()
                land_page(conn, run_id, "users", seq, page, staging_db.compress_page(raw), convert=convert,
                          lander=staging_db.land_users, seen=seen, into=landed)
                pending += 1
                if pending >= _COMMIT_EVERY_PAGES:
                    transaction.commit()
                    transaction, pending = None, 0
                    send("landed", landed.items)
            if transaction is not None:
                transaction.commit()
        send("done", landed)
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the run
        try:
            send("error", _as_exception(exc))
        except (OSError, ValueError):
            pass
        return 1
    finally:
        if engine is not None:
            engine.dispose()


def main() -> int:
    """`python -m okta_flex_sync.jobs.landing`: pickled messages on stdin and stdout.  Anything
    else that would write to stdout (a stray print, a library's warning) goes to stderr, so it
    cannot garble the channel."""
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return _child(open(sys.stdin.fileno(), "rb", buffering=0, closefd=False), channel)


if __name__ == "__main__":
    # Run through the package module, so what crosses the pipe is pickled under its real name.
    from okta_flex_sync.jobs import landing as _module

    sys.exit(_module.main())
