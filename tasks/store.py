"""Everything the pipeline reads from and writes to the database (SQLAlchemy Core).

A run writes in two phases.  *Landing*: raw pages and normalized records stream into the staging
tables keyed by `run_id`, committed as they arrive so memory stays flat.  *Publishing*: one
transaction refreshes the user mirror, writes role history and findings, moves the watermark and
marks the run succeeded.  Readers of the published tables (`okta_users`, `role_history`,
`drift_findings`, the views) therefore never see a half-loaded run, and a failed or killed run
leaves them exactly as they were; its landed rows are removed by `discard_run` (at once on
failure, or by the next run after a kill).
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from datetime import datetime, timezone
from operator import attrgetter

from sqlalchemy import Connection, Engine, and_, delete, exists, func, insert, select, update

from models.records import AppAssignment, Finding, OktaUser, Worker
from models.tables import (
    VALID_TO_CURRENT,
    drift_findings,
    okta_log_events,
    okta_users,
    raw_pages,
    repair_audit,
    role_history,
    staged_app_assignments,
    staged_okta_users,
    staged_workers,
    sync_runs,
    watermarks,
)
from okta_flex_sync.db import batch_size_for, chunked, insert_batches, insert_tuples
from tasks.history import HistoryChange, HistoryState

_USER_FIELDS = [f.name for f in fields(OktaUser)]
_ASSIGNMENT_FIELDS = [f.name for f in fields(AppAssignment)]
_WORKER_FIELDS = [f.name for f in fields(Worker)]


# Text neither database can hold: Postgres TEXT refuses NUL, and a lone surrogate is not UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(value):
    """`value` with NUL and lone surrogates written as visible escapes (`\\x00`, `\\ud800`).

    For text kept verbatim from a hostile source (raw worker attributes, error messages): the
    escape keeps it readable, and JSON that did not parse (a raw NUL) still does not.
    """
    if not isinstance(value, str) or not _UNSTORABLE.search(value):
        return value
    return _UNSTORABLE.sub(lambda m: "\\x00" if m.group() == "\x00" else f"\\u{ord(m.group()):04x}", value)


def utcnow() -> datetime:
    """Naive UTC, the form every timestamp column uses."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_run_id(now: datetime | None = None) -> str:
    now = now or utcnow()
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


# --- runs ---------------------------------------------------------------------------------

def open_run(engine: Engine, *, flow: str, org_url: str | None, parameters: dict,
             run_id: str | None = None, started_at: datetime | None = None,
             workspace_sid: str | None = None) -> tuple[str, datetime]:
    started_at = started_at or utcnow()
    run_id = run_id or new_run_id(started_at)
    with engine.begin() as conn:
        conn.execute(insert(sync_runs).values(run_id=run_id, flow=flow, org_url=org_url, started_at=started_at,
                                              status="running", parameters=parameters, counts={}, watermarks={},
                                              workspace_sid=workspace_sid))
    return run_id, started_at


def finish_run(engine_or_conn, run_id: str, *, status: str, counts: dict | None = None,
               watermarks_: dict | None = None, error: str | None = None) -> None:
    values = {"status": status, "finished_at": utcnow()}
    if counts is not None:
        values["counts"] = counts
    if watermarks_ is not None:
        values["watermarks"] = watermarks_
    if error is not None:
        values["error"] = storable_text(error[:2000])
    stmt = update(sync_runs).where(sync_runs.c.run_id == run_id).values(**values)
    if isinstance(engine_or_conn, Connection):
        engine_or_conn.execute(stmt)
    else:
        with engine_or_conn.begin() as conn:
            conn.execute(stmt)


def discard_run(engine: Engine, run_id: str) -> None:
    """Remove what a run landed (it never published); keep its sync_runs row for the record."""
    with engine.begin() as conn:
        for t in (staged_okta_users, staged_app_assignments, staged_workers, raw_pages, drift_findings):
            conn.execute(delete(t).where(t.c.run_id == run_id))


def abandon_stale_runs(engine: Engine) -> list[str]:
    """Runs still marked running while we hold the writer lock died mid-way: discard their landing."""
    with engine.connect() as conn:
        stale = list(conn.execute(select(sync_runs.c.run_id).where(sync_runs.c.status == "running")).scalars())
    for run_id in stale:
        discard_run(engine, run_id)
        finish_run(engine, run_id, status="abandoned", error="the process stopped before the run finished")
    return stale


def last_run(conn: Connection, *, flows: Sequence[str] = ("nightly-sync",), org_url: str | None = None,
             status: str = "succeeded") -> dict | None:
    q = select(sync_runs).where(sync_runs.c.status == status, sync_runs.c.flow.in_(flows))
    if org_url is not None:
        q = q.where(sync_runs.c.org_url == org_url)
    row = conn.execute(q.order_by(sync_runs.c.started_at.desc()).limit(1)).mappings().first()
    return dict(row) if row else None


def get_run(conn: Connection, run_id: str) -> dict | None:
    row = conn.execute(select(sync_runs).where(sync_runs.c.run_id == run_id)).mappings().first()
    return dict(row) if row else None


def recent_runs(conn: Connection, limit: int = 30, flows: Sequence[str] = ("nightly-sync",)) -> list[dict]:
    rows = conn.execute(select(sync_runs).where(sync_runs.c.status == "succeeded", sync_runs.c.flow.in_(flows))
                        .order_by(sync_runs.c.started_at.desc()).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


# --- landing ------------------------------------------------------------------------------

# Records go to the database as tuples (`attrgetter` of their fields): `asdict` deep-copies and
# a dict per row costs more than the insert itself at 100k rows.
_user_values = attrgetter(*_USER_FIELDS)
_assignment_values = attrgetter(*_ASSIGNMENT_FIELDS)
_worker_values = attrgetter(*_WORKER_FIELDS)
_STATE_FIELDS = [f.name for f in fields(HistoryState)]
_state_values = attrgetter(*_STATE_FIELDS)


def land_users(conn: Connection, run_id: str, users: Iterable[OktaUser]) -> int:
    return insert_tuples(conn, staged_okta_users, ["run_id", *_USER_FIELDS],
                         ((run_id, *_user_values(u)) for u in users))


def land_assignments(conn: Connection, run_id: str, rows: Iterable[AppAssignment]) -> int:
    return insert_tuples(conn, staged_app_assignments, ["run_id", *_ASSIGNMENT_FIELDS],
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
    return insert_tuples(conn, staged_workers, ["run_id", *_WORKER_FIELDS], (_worker_row(run_id, w) for w in rows))


def unland(conn: Connection, run_id: str, source: str, keys: Sequence[str]) -> None:
    """Remove landed records of this run (a later page listed them again)."""
    table, col = {"users": (staged_okta_users, "okta_user_id"), "assignments": (staged_app_assignments, "okta_user_id"),
                  "workers": (staged_workers, "worker_sid")}[source]
    for part in chunked(list(keys), 500):
        conn.execute(delete(table).where(table.c.run_id == run_id, table.c[col].in_(part)))


def compress_page(body: bytes) -> bytes:
    """A raw page as stored (gzip, fastest level: pages are kept for audit and backfill)."""
    return gzip.compress(body, compresslevel=1)


def land_raw_page(conn: Connection, run_id: str, source: str, seq: int, *, url: str, fetched_at: datetime,
                  item_count: int, body: bytes | None = None, body_gz: bytes | None = None) -> None:
    """Keep one listing page; give its bytes as `body` or already compressed as `body_gz`."""
    if body_gz is None:
        if body is None:
            raise TypeError("land_raw_page needs body or body_gz")
        body_gz = compress_page(body)
    conn.execute(insert(raw_pages).values(run_id=run_id, source=source, seq=seq, url=url, fetched_at=fetched_at,
                                          item_count=item_count, body_gz=body_gz))


def iter_raw_pages(conn: Connection, run_id: str, source: str) -> Iterable[dict]:
    """Yield the decoded JSON documents of a run's raw pages in order."""
    q = (select(raw_pages.c.seq, raw_pages.c.body_gz).where(raw_pages.c.run_id == run_id, raw_pages.c.source == source)
         .order_by(raw_pages.c.seq))
    for _seq, body in conn.execute(q):
        yield json.loads(gzip.decompress(body))


# --- reading staged data back as records ----------------------------------------------------

def _user(row) -> OktaUser:
    return OktaUser(**{k: row[k] for k in _USER_FIELDS})


# The bulk readers select the record's fields in declaration order and build records
# positionally: a mapping and a keyword dict per row cost more than the query at 15k+ rows.

def _columns(table, names: Sequence[str]):
    return [table.c[n] for n in names]


def staged_assignments(conn: Connection, run_id: str) -> dict[str, AppAssignment]:
    q = select(*_columns(staged_app_assignments, _ASSIGNMENT_FIELDS)).where(staged_app_assignments.c.run_id == run_id)
    return {row[0]: AppAssignment(*row) for row in conn.execute(q)}


def staged_worker_list(conn: Connection, run_id: str) -> list[Worker]:
    q = (select(*_columns(staged_workers, _WORKER_FIELDS)).where(staged_workers.c.run_id == run_id)
         .order_by(staged_workers.c.worker_sid))
    return [Worker(*row) for row in conn.execute(q)]


def unchanged_worker_attributes(conn: Connection, run_id: str, sids: Iterable[str], *,
                                updated_before: datetime) -> dict[str, tuple]:
    """worker sid -> (date_updated, attributes_raw) of those of `sids` among a run's staged
    workers whose attributes parsed and whose last update came before `updated_before` (see
    `tasks.sync`)."""
    w = staged_workers.c
    out: dict[str, tuple] = {}
    for part in chunked(sorted(set(sids)), 500):
        q = select(w.worker_sid, w.date_updated, w.attributes_raw).where(
            w.run_id == run_id, w.worker_sid.in_(part), w.parse_error.is_(None), w.attributes_raw.is_not(None),
            w.date_updated < updated_before)
        out.update((sid, (updated, raw)) for sid, updated, raw in conn.execute(q))
    return out


def mirror_users(conn: Connection, run_id: str, *, with_current_history: bool = True) -> dict[str, OktaUser]:
    """The mirrored users a run's reconciliation and history need: those its staged
    assignments name and (`with_current_history`) those with a current role-history row.

    Joins instead of binding 15k ids (chunked IN lists cost twice as much); the second query
    only adds the few users with a current row but no assignment this run."""
    columns = _columns(okta_users, _USER_FIELDS)
    assigned = staged_app_assignments.c
    q = (select(*columns).join(staged_app_assignments, assigned.okta_user_id == okta_users.c.okta_user_id)
         .where(assigned.run_id == run_id))
    out = {row[0]: OktaUser(*row) for row in conn.execute(q).all()}
    if with_current_history:
        h = role_history.c
        unassigned = ~exists().where(assigned.run_id == run_id, assigned.okta_user_id == h.okta_user_id)
        q = (select(*columns).join(role_history, h.okta_user_id == okta_users.c.okta_user_id)
             .where(h.valid_to == VALID_TO_CURRENT, unassigned))
        out.update((row[0], OktaUser(*row)) for row in conn.execute(q).all())
    return out


def find_owner(conn: Connection, name: str) -> OktaUser | None:
    """The Okta user whose login, or else email, equals `name` case-insensitively."""
    key = (name or "").lower()
    if not key:
        return None
    for col in (okta_users.c.login, okta_users.c.email):
        row = conn.execute(select(okta_users).where(func.lower(col) == key)
                           .order_by(okta_users.c.okta_user_id).limit(1)).mappings().first()
        if row:
            return _user(row)
    return None


def find_owners(conn: Connection, names: Iterable[str]) -> dict[str, OktaUser | None]:
    """`find_owner` for many names at once, keyed by `name.lower()`: one query per column and
    chunk instead of two per name (a thousand orphan workers made a thousand round trips)."""
    keys = sorted({(n or "").lower() for n in names} - {""})
    found: dict[str, OktaUser] = {}
    size = max(1, batch_size_for(conn, 1) // 2)
    for col in (okta_users.c.login, okta_users.c.email):
        pending = [k for k in keys if k not in found]
        by_col: dict[str, OktaUser] = {}
        for part in chunked(pending, size):
            q = (select(okta_users, func.lower(col).label("match_key")).where(func.lower(col).in_(part))
                 .order_by(okta_users.c.okta_user_id))
            for r in conn.execute(q).mappings():
                by_col.setdefault(r["match_key"], _user(r))
        found.update(by_col)
    return {k: found.get(k) for k in keys}


def owner_finder(conn: Connection, likely_names: Iterable[str]):
    """A `find_owner(name)` for reconcile that answers the likely names from one batched
    lookup and any other name with a single query."""
    known = find_owners(conn, likely_names)

    def find(name: str) -> OktaUser | None:
        key = (name or "").lower()
        return known[key] if key in known else find_owner(conn, name)
    return find


def problem_records(conn: Connection, run_id: str, limit: int = 200) -> tuple[int, list[dict]]:
    """Records this run kept although some of their values could not be read: (count, sample)."""
    count, sample = 0, []
    for source, table, key in (("users", staged_okta_users, staged_okta_users.c.okta_user_id),
                               ("assignments", staged_app_assignments, staged_app_assignments.c.okta_user_id)):
        where = (table.c.run_id == run_id, table.c.problems != "")
        count += conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
        rows = conn.execute(select(key, table.c.problems).where(*where).order_by(key).limit(limit - len(sample)))
        sample += [{"source": source, "id": rid, "reason": f"kept, but {problems}"[:300]} for rid, problems in rows]
    return count, sample


def count_mirror(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(okta_users)).scalar_one()


# --- publishing -------------------------------------------------------------------------------

def refresh_mirror(conn: Connection, run_id: str, *, full: bool) -> list[str]:
    """Bring `okta_users` up to this run's staged users; returns ids deleted from Okta (full runs)."""
    staged_ids = select(staged_okta_users.c.okta_user_id).where(staged_okta_users.c.run_id == run_id)
    deleted: list[str] = []
    if full:
        deleted = list(conn.execute(select(okta_users.c.okta_user_id)
                                    .where(okta_users.c.okta_user_id.not_in(staged_ids))).scalars())
        conn.execute(delete(okta_users))
    else:
        conn.execute(delete(okta_users).where(okta_users.c.okta_user_id.in_(staged_ids)))
    cols = [c.name for c in staged_okta_users.columns if c.name != "run_id"]
    src = select(*[staged_okta_users.c[c] for c in cols], staged_okta_users.c.run_id).where(
        staged_okta_users.c.run_id == run_id)
    conn.execute(insert(okta_users).from_select([*cols, "run_id"], src))
    return deleted


def current_history(conn: Connection) -> dict[str, tuple[HistoryState, datetime]]:
    h = role_history.c
    q = select(h.okta_user_id, h.login, h.app_username, h.status, h.assigned, h.roles, h.full_name, h.email,
               h.valid_from).where(h.valid_to == VALID_TO_CURRENT)
    return {uid: (HistoryState(uid, login, app_username, status, bool(assigned), roles, full_name, email), since)
            for uid, login, app_username, status, assigned, roles, full_name, email, since in conn.execute(q)}


def apply_history(conn: Connection, run_id: str, changes: Sequence[HistoryChange], *, source: str = "nightly") -> int:
    """Close current rows and open new ones. The unique (user, valid_to) key rejects a second
    current row, so two colliding writers cannot both succeed."""
    closing = [{"uid": c.state.okta_user_id, "at": c.effective_at} for c in changes if c.closes_current]
    if closing:
        stmt = (update(role_history)
                .where(and_(role_history.c.okta_user_id == _bind("uid"), role_history.c.valid_to == VALID_TO_CURRENT))
                .values(valid_to=_bind("at")))
        for part in chunked(closing, 2000):
            conn.execute(stmt, list(part))
    rows = ((*_state_values(c.state), c.effective_at, VALID_TO_CURRENT, run_id, source) for c in changes)
    return insert_tuples(conn, role_history, [*_STATE_FIELDS, "valid_from", "valid_to", "run_id", "source"], rows)


def _bind(name: str):
    from sqlalchemy import bindparam

    return bindparam(name)


def store_findings(conn: Connection, run_id: str, findings: Iterable[Finding]) -> int:
    return insert_batches(conn, drift_findings, ({"run_id": run_id, **f.as_dict()} for f in findings))


def load_findings(conn: Connection, run_id: str) -> list[Finding]:
    rows = conn.execute(select(drift_findings).where(drift_findings.c.run_id == run_id)
                        .order_by(drift_findings.c.id)).mappings()
    return [Finding(**{k: r[k] for k in ("kind", "severity", "okta_user_id", "login", "app_username", "worker_sid",
                                         "field", "expected", "actual")}) for r in rows]


def get_watermark(conn: Connection, org_url: str, stream: str) -> datetime | None:
    return conn.execute(select(watermarks.c.value).where(watermarks.c.org_url == org_url,
                                                         watermarks.c.stream == stream)).scalar()


def set_watermark(conn: Connection, org_url: str, stream: str, value: datetime, run_id: str) -> None:
    conn.execute(delete(watermarks).where(watermarks.c.org_url == org_url, watermarks.c.stream == stream))
    conn.execute(insert(watermarks).values(org_url=org_url, stream=stream, value=value, run_id=run_id,
                                           updated_at=utcnow()))


def record_repair(conn: Connection, **row) -> None:
    conn.execute(insert(repair_audit).values(**{k: storable_text(v) for k, v in row.items()}))


def role_counts(conn: Connection) -> dict[str, int]:
    """How many assigned users currently hold each role (for the report's trend chart)."""
    counts: dict[str, int] = {}
    q = select(role_history.c.roles).where(role_history.c.valid_to == VALID_TO_CURRENT, role_history.c.assigned)
    for (roles,) in conn.execute(q):
        for r in (roles or "").split(","):
            if r:
                counts[r] = counts.get(r, 0) + 1
    return counts


def prune(conn: Connection, *, keep_staging_runs: int, raw_retention_days: int, now: datetime) -> None:
    """Retention: staging of the last N nightly runs; raw pages and System Log events for N days
    (backfill reads both, so it cannot reach further back than this).

    Deletes go by run id through the primary keys, so a night with nothing to prune costs a few
    index probes; `NOT IN (kept runs)` scanned every staged row of every kept run (~0.1 s a
    night at 15k workers, growing with the retention)."""
    runs = sync_runs.c
    keep = set(conn.execute(select(runs.run_id).where(runs.flow == "nightly-sync")
                            .order_by(runs.started_at.desc()).limit(keep_staging_runs)).scalars())
    drop = [r for r in conn.execute(select(runs.run_id)).scalars() if r not in keep]
    for t in (staged_okta_users, staged_app_assignments, staged_workers):
        for part in chunked(drop, 500):
            conn.execute(delete(t).where(t.c.run_id.in_(part)))
    horizon = now - timedelta(days=raw_retention_days)
    # A page is fetched after its run started, so only runs started before the horizon can hold
    # pages older than it.
    old_runs = list(conn.execute(select(runs.run_id).where(runs.started_at < horizon)).scalars())
    for part in chunked(old_runs, 500):
        conn.execute(delete(raw_pages).where(raw_pages.c.run_id.in_(part), raw_pages.c.fetched_at < horizon))
    conn.execute(delete(okta_log_events).where(okta_log_events.c.published < horizon))


def user_timeline(conn: Connection, login: str, as_of: datetime | None = None) -> list[dict]:
    q = select(role_history).where(func.lower(role_history.c.login) == login.lower())
    if as_of is not None:
        q = q.where(role_history.c.valid_from <= as_of)
    rows = conn.execute(q.order_by(role_history.c.valid_from, role_history.c.id)).mappings().all()
    return [dict(r) for r in rows]


def rows_as_dicts(rows: Iterable[Mapping]) -> list[dict]:
    return [dict(r) for r in rows]


# --- backfill ---------------------------------------------------------------------------------
# Reads and writes of `tasks.backfill`.  Role history is read as `HistoryRow`s and changed only
# through `apply_history_edits`; System Log events are kept once per uuid; which days of the log
# were fetched is a watermark per day (stream "system-log:YYYY-MM-DD"), so a resumed backfill
# does not fetch a day twice.

from datetime import date, timedelta  # noqa: E402

from tasks.history import HistoryRow, RowEdits  # noqa: E402

LOG_DAY_STREAM = "system-log:"
# Retimed rows park here first, so no moment of the update has two rows of one user ending at
# the same time (the unique key is checked row by row); no real row ever ends in year 1.
_PARKED = datetime(1, 1, 1)


def _history_row(r) -> HistoryRow:
    state = HistoryState(r["okta_user_id"], r["login"], r["app_username"], r["status"], bool(r["assigned"]),
                         r["roles"], r["full_name"], r["email"])
    return HistoryRow(state, r["valid_from"], r["valid_to"], r["run_id"], r["source"], r["id"])


def history_rows(conn: Connection, user_ids: Iterable[str]) -> dict[str, list[HistoryRow]]:
    """Every stored row of these users, ordered by valid_from."""
    out: dict[str, list[HistoryRow]] = {}
    for part in chunked(sorted(set(user_ids)), 500):
        q = (select(role_history).where(role_history.c.okta_user_id.in_(part))
             .order_by(role_history.c.okta_user_id, role_history.c.valid_from, role_history.c.id))
        for r in conn.execute(q).mappings():
            out.setdefault(r["okta_user_id"], []).append(_history_row(r))
    return out


def history_states_at(conn: Connection, moment: datetime) -> dict[str, HistoryState]:
    """What history says about every user at `moment` (users it does not track are absent)."""
    q = select(role_history).where(role_history.c.valid_from <= moment, role_history.c.valid_to > moment)
    return {r["okta_user_id"]: _history_row(r).state for r in conn.execute(q).mappings()}


def history_users_between(conn: Connection, after: datetime | None, until: datetime) -> set[str]:
    """Users with a row starting in (after, until]."""
    q = select(role_history.c.okta_user_id).where(role_history.c.valid_from <= until)
    if after is not None:
        q = q.where(role_history.c.valid_from > after)
    return set(conn.execute(q.distinct()).scalars())


def apply_history_edits(conn: Connection, edits: Iterable[RowEdits]) -> dict[str, int]:
    """Delete, retime, then insert, in that order, so the one-current-row key holds throughout."""
    edits = list(edits)
    deletes = [i for e in edits for i in e.delete]
    retimes = [t for e in edits for t in e.retime]
    inserts = [r for e in edits for r in e.insert]
    for part in chunked(deletes, 500):
        conn.execute(delete(role_history).where(role_history.c.id.in_(part)))
    if retimes:
        stmt = update(role_history).where(role_history.c.id == _bind("rid")).values(valid_to=_bind("to"))
        conn.execute(stmt, [{"rid": i, "to": _PARKED + timedelta(microseconds=i)} for i, _ in retimes])
        conn.execute(stmt, [{"rid": i, "to": to} for i, to in retimes])
    insert_batches(conn, role_history, (
        {**asdict(r.state), "valid_from": r.valid_from, "valid_to": r.valid_to, "run_id": r.run_id,
         "source": r.source} for r in inserts))
    return {"deleted": len(deletes), "retimed": len(retimes), "inserted": len(inserts)}


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


def snapshot_runs(conn: Connection, *, flows: Sequence[str], org_url: str | None) -> list[dict]:
    """Succeeded runs (oldest first) with `has_raw`: whether their users and assignments pages are kept."""
    q = select(sync_runs.c.run_id, sync_runs.c.started_at, sync_runs.c.parameters).where(
        sync_runs.c.status == "succeeded", sync_runs.c.flow.in_(list(flows)))
    if org_url is not None:
        q = q.where(sync_runs.c.org_url == org_url)
    runs = [dict(r) for r in conn.execute(q.order_by(sync_runs.c.started_at, sync_runs.c.run_id)).mappings()]
    kept: dict[str, set[str]] = {}
    pages = select(raw_pages.c.run_id, raw_pages.c.source).where(
        raw_pages.c.source.in_(("users", "assignments"))).distinct()
    for run_id, source in conn.execute(pages):
        kept.setdefault(run_id, set()).add(source)
    for r in runs:
        r["has_raw"] = kept.get(r["run_id"], set()) >= {"users", "assignments"}
        r["full"] = bool((r.get("parameters") or {}).get("full"))
    return runs
