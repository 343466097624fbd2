"""Opening a database with one plain line for every way it can go wrong.

Read-only commands (`history`, `report`, `reconcile`, ...) open an *existing* database through
`open_existing_database`: a SQLite path that does not exist is a typo, not a new history, so
nothing is created.  Connection and schema problems become `DatabaseUnavailable` (a
`ConfigError`: exit 2) whose message names `DATABASE_URL` with the password masked and says what
to do; `describe_database_error` turns a driver error raised later (a connection lost mid-run)
into one line without SQLAlchemy's parameters and documentation link.
"""
from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from okta_flex_sync.settings import ConfigError, Settings, mask_url_password
from okta_flex_sync.storage.engine import (
    HEAD_REVISION,
    current_revision,
    make_engine,
    upgrade,
)


class DatabaseUnavailable(ConfigError):
    """The database at DATABASE_URL cannot be used as configured (missing, unreachable, refused)."""


class SchemaOutOfDate(ConfigError):
    """The database's tables are missing or older than this version of okta-flex-sync."""


def shown_url(url: str) -> str:
    """`DATABASE_URL=...` with the password masked and the driver suffix left out."""
    return "DATABASE_URL=" + mask_url_password(re.sub(r"^postgresql\+psycopg://", "postgresql://", url))


def sqlite_path(url: str) -> Path | None:
    """The absolute file of a SQLite URL; None for Postgres and in-memory SQLite."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser().resolve()


def is_new_database(url: str) -> bool:
    """Whether a SQLite URL names a file that does not exist yet (a run would start a new history)."""
    path = sqlite_path(url)
    return path is not None and not path.exists()


def refuse_missing_sqlite(settings: Settings) -> None:
    """Raise when DATABASE_URL names a SQLite file that does not exist (creates nothing)."""
    path = sqlite_path(settings.database_url)
    if path is not None and not path.is_file():
        raise DatabaseUnavailable(
            f"no database at {path} ({shown_url(settings.database_url)}): check the path, "
            f"or run `okta-flex-sync run` to start a new history there")


_DRIVER_NOISE = re.compile(r"^.*?\bfailed:\s*|^(FATAL|ERROR):\s*", re.IGNORECASE)


def _reason(exc: BaseException) -> str:
    """The driver's own words, first line only, without SQLAlchemy's wrapping."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first = next((line.strip() for line in str(orig).splitlines() if line.strip()), type(orig).__name__)
    while True:
        shorter = _DRIVER_NOISE.sub("", first, count=1).strip()
        if shorter == first or not shorter:
            break
        first = shorter
    return first.rstrip(".")


def describe_database_error(exc: BaseException, url: str) -> str:
    """One line naming the database problem, DATABASE_URL (password masked) and what to do."""
    reason = _reason(exc)
    low = reason.lower()
    where = shown_url(url)
    database = make_url(url).database or ""
    if re.search(r'database ".*" does not exist', low):
        return (f"database {database!r} does not exist ({where}): create it (e.g. `createdb {database}`), "
                f"then run `okta-flex-sync db upgrade`")
    if "password authentication failed" in low or ("role" in low and "does not exist" in low) \
            or "no password supplied" in low:
        return f"the database refused the login: {reason} ({where}): check the user and password in DATABASE_URL"
    if "connection refused" in low or "could not translate host" in low or "resolve host" in low \
            or "timeout expired" in low or "no route to host" in low or "name or service not known" in low:
        return f"cannot reach the database server: {reason} ({where}): is it running, and are host and port right?"
    if "terminating connection" in low or "server closed the connection" in low or "connection is closed" in low \
            or "consuming input failed" in low or "connection already closed" in low or "ssl syscall" in low \
            or "connection is lost" in low or "connection was lost" in low:
        return (f"lost the connection to the database mid-run: {reason} ({where}); nothing half-written is kept, "
                f"run again when the database is back")
    if "file is not a database" in low:
        return f"that file is not a SQLite database ({where}): point DATABASE_URL at the okta-flex-sync database"
    if "unable to open database file" in low:
        return f"cannot open the SQLite file: {reason} ({where}): check the path and its permissions"
    if "database is locked" in low:
        return f"the SQLite database is busy: {reason} ({where}); try again when the other process finishes"
    return f"database error: {reason} ({where})"


def check_connection(engine: Engine, url: str) -> None:
    """Connect once; any failure becomes a one-line `DatabaseUnavailable`."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(describe_database_error(exc, url)) from None


def check_schema(engine: Engine, settings: Settings) -> None:
    """Upgrade SQLite in place; require Postgres to be at head, saying so in plain words."""
    rev = current_revision(engine)
    if rev == HEAD_REVISION:
        return
    if settings.is_sqlite:
        upgrade(engine)
        return
    where = shown_url(settings.database_url)
    if rev is None:
        raise SchemaOutOfDate(f"the database has no okta-flex-sync tables yet ({where}): "
                              f"run `okta-flex-sync db upgrade` once to create them")
    raise SchemaOutOfDate(f"the database's tables are from an older okta-flex-sync (schema {rev}, this version "
                          f"needs {HEAD_REVISION}) ({where}): run `okta-flex-sync db upgrade`")


def open_existing_database(settings: Settings) -> Engine:
    """An engine on an existing, up-to-date database for a command that only reads.

    Refuses (creating nothing) a SQLite file that does not exist; an unreachable server, a
    refused login or a missing or old schema is a `DatabaseUnavailable`/`SchemaOutOfDate`."""
    refuse_missing_sqlite(settings)
    engine = make_engine(settings.database_url)
    try:
        check_connection(engine, settings.database_url)
        check_schema(engine, settings)
    except BaseException:
        engine.dispose()
        raise
    return engine
