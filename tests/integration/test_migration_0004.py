"""Migration 0004 on a populated database (SQLite and Postgres): findings keep their rows and
gain a first sighting, runs gain a workspace column, and the next run's delta works on top."""
from __future__ import annotations

from datetime import datetime

from alembic import command
from sqlalchemy import func, inspect, select

from okta_flex_sync.models.records import Finding
from okta_flex_sync.models.tables import drift_findings, sync_runs
from okta_flex_sync.storage.engine import (
    HEAD_REVISION,
    alembic_config,
    current_revision,
)
from okta_flex_sync.storage.finding_delta import (
    previous_run,
    run_delta,
    store_findings_with_delta,
)


def _alembic(engine, verb: str, revision: str) -> None:
    with engine.begin() as conn:
        cfg = alembic_config(engine.url.render_as_string(hide_password=False))
        cfg.attributes["connection"] = conn
        getattr(command, verb)(cfg, revision)


def _columns(engine, table: str) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(table)}


def test_0004_on_a_populated_database(engine):
    _alembic(engine, "downgrade", "0002")
    try:
        assert "status" not in _columns(engine, "drift_findings")
        assert "workspace_sid" not in _columns(engine, "sync_runs")
        with engine.begin() as conn:
            for run_id, started in (("m-r1", datetime(2026, 3, 1, 2)), ("m-r2", datetime(2026, 3, 2, 2))):
                conn.exec_driver_sql(
                    "INSERT INTO sync_runs (run_id, flow, org_url, started_at, status, parameters, counts, watermarks) "
                    "VALUES (%s, 'nightly-sync', 'https://m.okta.com', %s, 'succeeded', '{}', '{}', '{}')"
                    if engine.dialect.name == "postgresql" else
                    "INSERT INTO sync_runs (run_id, flow, org_url, started_at, status, parameters, counts, watermarks) "
                    "VALUES (?, 'nightly-sync', 'https://m.okta.com', ?, 'succeeded', '{}', '{}', '{}')",
                    (run_id, started))
            for run_id in ("m-r1", "m-r2"):
                for sid in ("WK1", "WK2"):
                    conn.exec_driver_sql(
                        ("INSERT INTO drift_findings (run_id, kind, severity, worker_sid, login) VALUES (%s, %s, %s, %s, %s)"
                         if engine.dialect.name == "postgresql" else
                         "INSERT INTO drift_findings (run_id, kind, severity, worker_sid, login) VALUES (?, ?, ?, ?, ?)"),
                        (run_id, "roles_mismatch", "medium", sid, f"{sid}@example.com"))

        _alembic(engine, "upgrade", "head")
        assert current_revision(engine) == HEAD_REVISION
        assert {"status", "first_seen_run_id", "first_seen_at"} <= _columns(engine, "drift_findings")
        assert "workspace_sid" in _columns(engine, "sync_runs")
        with engine.connect() as conn:
            rows = conn.execute(select(drift_findings.c.run_id, drift_findings.c.worker_sid, drift_findings.c.status,
                                       drift_findings.c.first_seen_run_id, drift_findings.c.first_seen_at)
                                .where(drift_findings.c.run_id.in_(["m-r1", "m-r2"]))
                                .order_by(drift_findings.c.id)).all()
            assert [tuple(r) for r in rows] == [
                ("m-r1", "WK1", None, "m-r1", datetime(2026, 3, 1, 2)),
                ("m-r1", "WK2", None, "m-r1", datetime(2026, 3, 1, 2)),
                ("m-r2", "WK1", None, "m-r2", datetime(2026, 3, 2, 2)),
                ("m-r2", "WK2", None, "m-r2", datetime(2026, 3, 2, 2)),
            ]
            # A report of a run from before 0004 still gets a delta (against the run before it).
            run = dict(conn.execute(select(sync_runs).where(sync_runs.c.run_id == "m-r2")).mappings().one())
            counts, findings, resolved = run_delta(conn, run)
            assert counts == {"previous_run_id": "m-r1", "new": 0, "resolved": 0, "persisting": 2}
            assert [f["status"] for f in findings] == ["persisting", "persisting"]

        # The first run after the upgrade continues the old rows' series.
        with engine.begin() as conn:
            conn.execute(sync_runs.insert().values(run_id="m-r3", flow="nightly-sync", org_url="https://m.okta.com",
                                                   started_at=datetime(2026, 3, 3, 2), status="running",
                                                   parameters={}, counts={}, watermarks={}, workspace_sid="WS1"))
            delta = store_findings_with_delta(
                conn, "m-r3", [Finding("roles_mismatch", "medium", worker_sid="WK1"),
                               Finding("orphan_worker", "medium", worker_sid="WK7")],
                started_at=datetime(2026, 3, 3, 2), org_url="https://m.okta.com", workspace_sid="WS1")
            assert delta == {"previous_run_id": "m-r2", "new": 1, "resolved": 1, "persisting": 1}
            rows = conn.execute(select(drift_findings.c.worker_sid, drift_findings.c.status,
                                       drift_findings.c.first_seen_run_id, drift_findings.c.first_seen_at)
                                .where(drift_findings.c.run_id == "m-r3").order_by(drift_findings.c.id)).all()
            assert [tuple(r) for r in rows] == [("WK1", "persisting", "m-r2", datetime(2026, 3, 2, 2)),
                                                ("WK7", "new", "m-r3", datetime(2026, 3, 3, 2))]
        _alembic(engine, "downgrade", "0002")  # and back down, rows kept
        assert "status" not in _columns(engine, "drift_findings")
        with engine.connect() as conn:
            rows = select(func.count()).select_from(drift_findings).where(drift_findings.c.run_id.like("m-%"))
            assert conn.execute(rows).scalar() == 6
    finally:
        _alembic(engine, "upgrade", "head")
        with engine.begin() as conn:
            conn.execute(drift_findings.delete().where(drift_findings.c.run_id.like("m-%")))
            conn.execute(sync_runs.delete().where(sync_runs.c.run_id.like("m-%")))


def test_previous_run_is_per_org_and_workspace(engine):
    with engine.begin() as conn:
        rows = [("w-a1", "https://a.okta.com", "WSA", datetime(2026, 4, 1), "succeeded", "nightly-sync"),
                ("w-b1", "https://a.okta.com", "WSB", datetime(2026, 4, 2), "succeeded", "nightly-sync"),
                ("w-c1", "https://c.okta.com", "WSA", datetime(2026, 4, 3), "succeeded", "nightly-sync"),
                ("w-a2", "https://a.okta.com", "WSA", datetime(2026, 4, 4), "failed", "nightly-sync"),
                ("w-a3", "https://a.okta.com", "WSA", datetime(2026, 4, 5), "succeeded", "backfill"),
                ("w-a4", "https://a.okta.com", "WSA", datetime(2026, 4, 6), "running", "nightly-sync")]
        for run_id, org, ws, started, status, flow in rows:
            conn.execute(sync_runs.insert().values(run_id=run_id, flow=flow, org_url=org, started_at=started,
                                                   status=status, parameters={}, counts={}, watermarks={},
                                                   workspace_sid=ws))
    try:
        with engine.connect() as conn:
            def prev(org, ws):
                row = previous_run(conn, run_id="w-a4", started_at=datetime(2026, 4, 6), org_url=org, workspace_sid=ws)
                return row and row["run_id"]
            assert prev("https://a.okta.com", "WSA") == "w-a1"  # not failed, backfill or another workspace/org
            assert prev("https://a.okta.com", "WSB") == "w-b1"
            assert prev("https://c.okta.com", "WSA") == "w-c1"
            assert prev("https://z.okta.com", "WSA") is None
    finally:
        with engine.begin() as conn:
            conn.execute(sync_runs.delete().where(sync_runs.c.run_id.like("w-%")))
