"""Role history for data teams as pandas DataFrames, the same on SQLite and Postgres.

Dtypes are honest: timestamps are `datetime64[us, UTC]` (open periods are NaT, never the
9999-12-31 sentinel of the tables), booleans are `bool` (`boolean` where a value may be
missing), roles are a list of strings, text is `string`.

    from okta_flex_sync.storage.engine import make_engine
    from okta_flex_sync.analytics import frames

    engine = make_engine("sqlite:///okta_flex_sync.db")
    snap = frames.snapshot(engine, "2026-12-03T12:00:00Z")
    admins = snap[snap.roles.map(lambda roles: "admin" in roles)]
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd
from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Engine,
    Text,
    case,
    column,
    literal,
    null,
    select,
    table,
)

from okta_flex_sync.analytics.timeparse import parse_when, to_storage, utcnow
from okta_flex_sync.models.records import VALID_TO_CURRENT
from okta_flex_sync.models.tables import drift_findings, role_history, sync_runs

SNAPSHOT_COLUMNS = ("okta_user_id", "login", "status", "assigned", "roles", "valid_from", "run_id")
CHANGE_COLUMNS = ("okta_user_id", "login", "changed_at", "change_type", "roles_before", "roles_after",
                  "status_before", "status_after", "assigned_before", "assigned_after")
GRANT_COLUMNS = ("okta_user_id", "login", "role", "granted_at", "revoked_at")
FINDING_COLUMNS = ("run_id", "kind", "severity", "okta_user_id", "login", "app_username", "worker_sid", "field",
                   "expected", "actual")
HISTORY_COLUMNS = tuple(c.name for c in role_history.columns)
CHANGE_TYPES = ("roles", "assignment", "status", "first_seen")
FINDING_FLOWS = ("nightly-sync", "reconcile")

# Column kinds, for dtypes: every other column is text.
TIMESTAMPS = {"valid_from", "valid_to", "changed_at", "granted_at", "revoked_at"}
BOOLEANS = {"assigned", "assigned_before", "assigned_after"}
ROLE_LISTS = {"roles", "roles_before", "roles_after"}
INTEGERS = {"id"}
NULLABLE_BOOLEANS = {"assigned_before"}  # NULL for first_seen

_role_changes = table("role_changes", *[column(n, DateTime if n == "changed_at" else Boolean if n in BOOLEANS else Text)
                                        for n in (*CHANGE_COLUMNS, "run_id", "source")])
_role_grants = table("role_grants", *[column(n, DateTime if n in TIMESTAMPS else Text) for n in GRANT_COLUMNS])
_ORDER = case(*[(_role_changes.c.change_type == t, i) for i, t in enumerate(CHANGE_TYPES)], else_=len(CHANGE_TYPES))


def _moment(value: datetime | str | None, option: str = "WHEN") -> datetime:
    if value is None:
        return to_storage(utcnow())
    if isinstance(value, str):
        value = parse_when(value, option)
    return to_storage(value)


def _open_end(col):
    """The column with the open-period sentinel as NULL."""
    return case((col >= VALID_TO_CURRENT, null()), else_=col).label(col.name)


def _read(bind: Engine | Connection, query, columns: Sequence[str]) -> pd.DataFrame:
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            rows = conn.execute(query).all()
    else:
        rows = bind.execute(query).all()
    return as_frame(rows, columns)


def as_frame(rows: Sequence[Sequence], columns: Sequence[str]) -> pd.DataFrame:
    """A DataFrame with this module's dtypes from rows of Python values."""
    data = list(zip(*rows)) if rows else [()] * len(columns)
    out = {}
    for name, values in zip(columns, data):
        if name in TIMESTAMPS:
            out[name] = _timestamps(values)
        elif name in BOOLEANS:
            if name in NULLABLE_BOOLEANS or any(v is None for v in values):
                out[name] = pd.array([None if v is None else bool(v) for v in values], dtype="boolean")
            else:
                out[name] = pd.array([bool(v) for v in values], dtype=bool)
        elif name in ROLE_LISTS:
            out[name] = pd.Series([None if v is None else [r for r in v.split(",") if r] for v in values], dtype=object)
        elif name in INTEGERS:
            out[name] = pd.array(values, dtype="int64")
        else:
            out[name] = pd.array(values, dtype="string")
    return pd.DataFrame({name: pd.Series(out[name]) for name in columns}, columns=list(columns))


def _timestamps(values: Sequence) -> pd.Series:
    stamps = [None if v is None or v >= VALID_TO_CURRENT else v for v in values]
    return pd.Series(pd.to_datetime(pd.Series(stamps, dtype=object), utc=True, format="mixed")
                     if stamps else [], dtype="datetime64[us, UTC]").astype("datetime64[us, UTC]")


def snapshot(bind: Engine | Connection, as_of: datetime | str | None = None) -> pd.DataFrame:
    """One row per user role history knew at `as_of` (default: now): the row whose period
    holds that instant. Columns: okta_user_id, login, status, assigned, roles, valid_from, run_id."""
    moment = _moment(as_of, "--as-of")
    h = role_history.c
    q = (select(h.okta_user_id, h.login, h.status, h.assigned, h.roles, h.valid_from, h.run_id)
         .where(h.valid_from <= moment, h.valid_to > moment).order_by(h.okta_user_id))
    return _read(bind, q, SNAPSHOT_COLUMNS)


def changes(bind: Engine | Connection, start: datetime | str, end: datetime | str | None = None, *,
            include_first_seen: bool = False) -> pd.DataFrame:
    """Changes that took effect in [start, end): one row per user, moment and kind of change
    (`roles`, `assignment`, `status`; several rows when several changed at once). A user's
    first row is `first_seen`, listed only with `include_first_seen`."""
    lo, hi = _moment(start, "--from"), _moment(end, "--to")
    c = _role_changes.c
    q = select(*[c[n] for n in CHANGE_COLUMNS]).where(c.changed_at >= lo, c.changed_at < hi)
    if not include_first_seen:
        q = q.where(c.change_type != literal("first_seen"))
    q = q.order_by(c.changed_at, c.okta_user_id, _ORDER)
    return _read(bind, q, CHANGE_COLUMNS)


def grants(bind: Engine | Connection, as_of: datetime | str | None = None) -> pd.DataFrame:
    """One row per user, role and uninterrupted period the role was held while assigned.
    With `as_of`, only the grants in effect at that instant. `revoked_at` is NaT while held."""
    g = _role_grants.c
    q = select(g.okta_user_id, g.login, g.role, g.granted_at, g.revoked_at)
    if as_of is not None:
        moment = _moment(as_of, "--as-of")
        q = q.where(g.granted_at <= moment, g.revoked_at > moment)
    return _read(bind, q.order_by(g.okta_user_id, g.role, g.granted_at), GRANT_COLUMNS)


def latest_findings_run(conn: Connection, as_of: datetime | str | None = None) -> dict | None:
    """The latest successful nightly or reconcile run that started at or before `as_of`."""
    moment = _moment(as_of, "--as-of")
    r = sync_runs.c
    row = conn.execute(select(sync_runs).where(r.status == "succeeded", r.flow.in_(FINDING_FLOWS), r.started_at <= moment)
                       .order_by(r.started_at.desc()).limit(1)).mappings().first()
    return dict(row) if row else None


def findings(bind: Engine | Connection, run_id: str | None = None, as_of: datetime | str | None = None) -> pd.DataFrame:
    """Findings of `run_id`, else of the latest successful run at or before `as_of` (default: now).
    Empty when there is no such run."""
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return findings(conn, run_id, as_of)
    if run_id is None:
        run = latest_findings_run(bind, as_of)
        if run is None:
            return as_frame([], FINDING_COLUMNS)
        run_id = run["run_id"]
    f = drift_findings.c
    q = select(*[f[n] for n in FINDING_COLUMNS]).where(f.run_id == run_id).order_by(f.id)
    return _read(bind, q, FINDING_COLUMNS)


def history(bind: Engine | Connection) -> pd.DataFrame:
    """Every role_history row, `valid_to` NaT for current rows."""
    h = role_history.c
    q = select(*[_open_end(h[n]) if n == "valid_to" else h[n] for n in HISTORY_COLUMNS]).order_by(h.okta_user_id, h.valid_from, h.id)
    return _read(bind, q, HISTORY_COLUMNS)
