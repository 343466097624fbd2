"""Index role_history by (valid_to, okta_user_id), so reads of current rows skip the history.

Every nightly run reads the current rows (history diff, the user mirror, role counts) and data
teams query the `current_roles` view; without this index each of those scanned every history
row ever written (at ~1M rows, ~0.4 s a run on SQLite, growing with every change).

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_role_history_current", "role_history", ["valid_to", "okta_user_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_role_history_current", table_name="role_history")
