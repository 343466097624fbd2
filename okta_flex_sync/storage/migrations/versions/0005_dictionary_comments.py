"""Postgres comments follow the data dictionary again (the watch flow's `watch` source and flow).

No schema change: SQLite has nothing to do; on Postgres every table, view and column comment is
set from `okta_flex_sync.models.dictionary`.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

from okta_flex_sync.storage.migrations.comments import comment_from_dictionary

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    comment_from_dictionary(op.get_bind())


def downgrade() -> None:
    pass  # comments are descriptive only
