"""Initial schema: runs, staging, mirror, raw pages, watermarks, role history, findings, audit.

Revision ID: 0001
Revises:
"""
from alembic import op

from models.tables import VIEWS, metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copy of the table names this revision creates; later revisions alter them explicitly.
TABLES = (
    "sync_runs", "staged_okta_users", "okta_users", "staged_app_assignments", "staged_workers",
    "raw_pages", "watermarks", "role_history", "drift_findings", "repair_audit", "okta_log_events",
)


def upgrade() -> None:
    bind = op.get_bind()
    metadata.create_all(bind, tables=[metadata.tables[t] for t in TABLES])
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    bind = op.get_bind()
    metadata.drop_all(bind, tables=[metadata.tables[t] for t in reversed(TABLES)])
