"""`drift_findings` and `repair_audit`."""
from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, insert, select

from okta_flex_sync.models.records import Finding
from okta_flex_sync.models.tables import (
    drift_findings,
    repair_audit,
)
from okta_flex_sync.storage.bulk import insert_batches
from okta_flex_sync.storage.common import (
    storable_text,
)


def store_findings(conn: Connection, run_id: str, findings: Iterable[Finding]) -> int:
    return insert_batches(conn, drift_findings, ({"run_id": run_id, **f.as_dict()} for f in findings))


def load_findings(conn: Connection, run_id: str) -> list[Finding]:
    rows = conn.execute(select(drift_findings).where(drift_findings.c.run_id == run_id)
                        .order_by(drift_findings.c.id)).mappings()
    return [Finding(**{k: r[k] for k in ("kind", "severity", "okta_user_id", "login", "app_username", "worker_sid",
                                         "field", "expected", "actual")}) for r in rows]


def record_repair(conn: Connection, **row) -> None:
    conn.execute(insert(repair_audit).values(**{k: storable_text(v) for k, v in row.items()}))

