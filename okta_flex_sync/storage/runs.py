"""`sync_runs` and `watermarks`: opening, finishing and finding runs; retention.

A run writes in two phases.  *Landing*: raw pages and normalized records stream into the staging
tables keyed by `run_id`, committed as they arrive so memory stays flat.  *Publishing*: one
transaction refreshes the user mirror, writes role history and findings, moves the watermark and
marks the run succeeded.  Readers of the published tables never see a half-loaded run, and a
failed or killed run leaves them exactly as they were; its landed rows are removed by
`discard_run` (at once on failure, or by the next run after a kill).
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, insert, select, update

from okta_flex_sync.models.tables import (
    drift_findings,
    okta_log_events,
    raw_pages,
    staged_app_assignments,
    staged_okta_users,
    staged_workers,
    sync_runs,
    watermarks,
)
from okta_flex_sync.storage.bulk import chunked
from okta_flex_sync.storage.common import (
    storable_text,
    utcnow,
)


def new_run_id(now: datetime | None = None) -> str:
    now = now or utcnow()
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


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


def get_watermark(conn: Connection, org_url: str, stream: str) -> datetime | None:
    return conn.execute(select(watermarks.c.value).where(watermarks.c.org_url == org_url,
                                                         watermarks.c.stream == stream)).scalar()


def set_watermark(conn: Connection, org_url: str, stream: str, value: datetime, run_id: str) -> None:
    conn.execute(delete(watermarks).where(watermarks.c.org_url == org_url, watermarks.c.stream == stream))
    conn.execute(insert(watermarks).values(org_url=org_url, stream=stream, value=value, run_id=run_id,
                                           updated_at=utcnow()))


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

