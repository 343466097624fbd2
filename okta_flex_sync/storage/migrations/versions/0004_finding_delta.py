"""Run-to-run delta: the workspace of each run, and each finding's status and first sighting.

`sync_runs.workspace_sid` tells runs of different TaskRouter workspaces of one org apart, so a run
is compared only with the previous run of the same org and workspace.  `drift_findings` gains
`status` ("new" / "persisting"), `first_seen_run_id` and `first_seen_at`, so data teams can ask how
long findings stay open.  Rows written before this revision get their own run as first sighting
(their real series is unknown) and no status.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

from okta_flex_sync.storage.migrations.comments import comment_from_dictionary

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD/DROP COLUMN, never a batch table copy: on SQLite, copying `sync_runs` would drop
    # the original table, and its ON DELETE CASCADE would empty `drift_findings` (SQLite >= 3.35
    # drops columns in place).
    op.add_column("sync_runs", sa.Column("workspace_sid", sa.String(64), nullable=True))
    op.add_column("drift_findings", sa.Column("status", sa.String(12), nullable=True))
    op.add_column("drift_findings", sa.Column("first_seen_run_id", sa.String(40), nullable=True))
    op.add_column("drift_findings", sa.Column("first_seen_at", sa.DateTime(), nullable=True))
    runs = sa.table("sync_runs", sa.column("run_id", sa.String), sa.column("started_at", sa.DateTime))
    findings = sa.table("drift_findings", sa.column("run_id", sa.String), sa.column("first_seen_run_id", sa.String),
                        sa.column("first_seen_at", sa.DateTime))
    started = sa.select(runs.c.started_at).where(runs.c.run_id == findings.c.run_id).scalar_subquery()
    op.execute(findings.update().where(findings.c.first_seen_run_id.is_(None))
               .values(first_seen_run_id=findings.c.run_id, first_seen_at=started))
    comment_from_dictionary(op.get_bind())


def downgrade() -> None:
    op.drop_column("drift_findings", "first_seen_at")
    op.drop_column("drift_findings", "first_seen_run_id")
    op.drop_column("drift_findings", "status")
    op.drop_column("sync_runs", "workspace_sid")
