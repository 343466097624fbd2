"""Engines and migrations: SQLite gets WAL and its pragmas, Postgres a pre-pinged pool; Alembic upgrades."""
from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

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
            # 64 MiB of page cache instead of 2: refreshing a 1M-user mirror (three indexes)
            # took 25 s with the default and 10 s with this.  Allocated only as pages are used.
            cur.execute("PRAGMA cache_size=-65536")
            # Landing defers checkpoints (storage.staging.landing), so a big run's WAL grows to
            # hundreds of MB; once checkpointed, keep at most 64 MiB of it on disk.
            cur.execute("PRAGMA journal_size_limit=67108864")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):  # pragma: no cover
            # IMMEDIATE takes the write lock up front, so two processes migrating at once queue
            # instead of failing half-way.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def alembic_config(url: str):
    from alembic.config import (
        Config,  # local: ~0.1 s of imports a run at head never needs (see ensure_schema)
    )

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# Alembic's `context`/`op` proxies are module globals: one migration at a time per process.
_UPGRADE_LOCK = threading.Lock()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to the latest schema (idempotent)."""
    from alembic import command  # local: as above

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with _UPGRADE_LOCK, engine.connect() as conn:
        conn = conn.execution_options(immediate=True)
        with conn.begin():
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)


# The newest migration's revision id (a test checks it against the migrations directory).
HEAD_REVISION = "0006"


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except Exception:
            return None
