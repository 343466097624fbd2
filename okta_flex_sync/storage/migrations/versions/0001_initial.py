"""Initial schema: runs, staging, user mirror, raw pages, watermarks, role history, findings,
repair audit, System Log events, and the `current_roles` / `role_changes` views.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Views are plain SQL that reads the same on SQLite and Postgres (frozen copies of models.tables.VIEWS).
VIEWS = {
    "current_roles": """
        SELECT okta_user_id, login, app_username, status, assigned, roles, full_name, email,
               valid_from AS since, run_id
        FROM role_history
        WHERE valid_to >= '9999-01-01'
    """,
    "role_changes": """
        SELECT okta_user_id, login, app_username, valid_from AS changed_at,
               prev_roles AS old_roles, roles AS new_roles,
               prev_assigned AS was_assigned, assigned AS is_assigned, status, run_id
        FROM (
            SELECT h.*,
                   LAG(roles) OVER (PARTITION BY okta_user_id ORDER BY valid_from, id) AS prev_roles,
                   LAG(assigned) OVER (PARTITION BY okta_user_id ORDER BY valid_from, id) AS prev_assigned
            FROM role_history h
        ) x
        WHERE prev_roles IS NULL OR prev_roles <> roles OR prev_assigned <> assigned
    """,
}


def upgrade() -> None:
    op.create_table('okta_log_events',
    sa.Column('uuid', sa.String(length=64), nullable=False),
    sa.Column('published', sa.DateTime(), nullable=False),
    sa.Column('event_type', sa.String(length=120), nullable=False),
    sa.Column('target_user_id', sa.String(length=64), nullable=True),
    sa.Column('target_app_id', sa.String(length=64), nullable=True),
    sa.Column('outcome', sa.String(length=40), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=True),
    sa.PrimaryKeyConstraint('uuid', name=op.f('pk_okta_log_events'))
    )
    op.create_index('ix_okta_log_events_published', 'okta_log_events', ['published'], unique=False)
    op.create_index('ix_okta_log_events_user', 'okta_log_events', ['target_user_id', 'published'], unique=False)
    op.create_table('okta_users',
    sa.Column('okta_user_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('login', sa.Text(), nullable=False),
    sa.Column('email', sa.Text(), nullable=True),
    sa.Column('full_name', sa.Text(), nullable=False),
    sa.Column('user_type', sa.Text(), nullable=True),
    sa.Column('roles', sa.Text(), nullable=False),
    sa.Column('invalid_roles', sa.Text(), nullable=False),
    sa.Column('image_url', sa.Text(), nullable=True),
    sa.Column('last_updated', sa.DateTime(), nullable=True),
    sa.Column('problems', sa.Text(), nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('okta_user_id', name=op.f('pk_okta_users'))
    )
    op.create_index('ix_okta_users_login_lower', 'okta_users', [sa.text('lower(login)')], unique=False)
    op.create_index('ix_okta_users_email_lower', 'okta_users', [sa.text('lower(email)')], unique=False)
    op.create_table('repair_audit',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('worker_sid', sa.String(length=64), nullable=False),
    sa.Column('friendly_name', sa.Text(), nullable=False),
    sa.Column('action', sa.String(length=30), nullable=False),
    sa.Column('attributes_before', sa.Text(), nullable=True),
    sa.Column('attributes_after', sa.Text(), nullable=True),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('applied_at', sa.DateTime(), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_repair_audit'))
    )
    op.create_index('ix_repair_audit_run', 'repair_audit', ['run_id'], unique=False)
    op.create_table('role_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('okta_user_id', sa.String(length=64), nullable=False),
    sa.Column('login', sa.Text(), nullable=False),
    sa.Column('app_username', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('assigned', sa.Boolean(), nullable=False),
    sa.Column('roles', sa.Text(), nullable=False),
    sa.Column('full_name', sa.Text(), nullable=False),
    sa.Column('email', sa.Text(), nullable=True),
    sa.Column('valid_from', sa.DateTime(), nullable=False),
    sa.Column('valid_to', sa.DateTime(), nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_role_history')),
    sa.UniqueConstraint('okta_user_id', 'valid_to', name='uq_role_history_one_current')
    )
    op.create_index('ix_role_history_login', 'role_history', ['login'], unique=False)
    op.create_index('ix_role_history_period', 'role_history', ['valid_from', 'valid_to'], unique=False)
    op.create_table('sync_runs',
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('flow', sa.String(length=40), nullable=False),
    sa.Column('org_url', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('watermarks', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_sync_runs'))
    )
    op.create_index('ix_sync_runs_started_at', 'sync_runs', ['started_at'], unique=False)
    op.create_table('watermarks',
    sa.Column('org_url', sa.Text(), nullable=False),
    sa.Column('stream', sa.String(length=40), nullable=False),
    sa.Column('value', sa.DateTime(), nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('org_url', 'stream', name=op.f('pk_watermarks'))
    )
    op.create_table('drift_findings',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('severity', sa.String(length=10), nullable=False),
    sa.Column('okta_user_id', sa.String(length=64), nullable=True),
    sa.Column('login', sa.Text(), nullable=True),
    sa.Column('app_username', sa.Text(), nullable=True),
    sa.Column('worker_sid', sa.String(length=64), nullable=True),
    sa.Column('field', sa.String(length=40), nullable=True),
    sa.Column('expected', sa.Text(), nullable=True),
    sa.Column('actual', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['sync_runs.run_id'], name=op.f('fk_drift_findings_run_id_sync_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drift_findings'))
    )
    op.create_index('ix_drift_findings_run', 'drift_findings', ['run_id', 'kind'], unique=False)
    op.create_table('raw_pages',
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('fetched_at', sa.DateTime(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('item_count', sa.Integer(), nullable=False),
    sa.Column('body_gz', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['sync_runs.run_id'], name=op.f('fk_raw_pages_run_id_sync_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'source', 'seq', name=op.f('pk_raw_pages'))
    )
    op.create_table('staged_app_assignments',
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('okta_user_id', sa.String(length=64), nullable=False),
    sa.Column('app_username', sa.Text(), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=True),
    sa.Column('roles', sa.Text(), nullable=False),
    sa.Column('invalid_roles', sa.Text(), nullable=False),
    sa.Column('last_updated', sa.DateTime(), nullable=True),
    sa.Column('problems', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['sync_runs.run_id'], name=op.f('fk_staged_app_assignments_run_id_sync_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'okta_user_id', name=op.f('pk_staged_app_assignments'))
    )
    op.create_table('staged_okta_users',
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('okta_user_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('login', sa.Text(), nullable=False),
    sa.Column('email', sa.Text(), nullable=True),
    sa.Column('full_name', sa.Text(), nullable=False),
    sa.Column('user_type', sa.Text(), nullable=True),
    sa.Column('roles', sa.Text(), nullable=False),
    sa.Column('invalid_roles', sa.Text(), nullable=False),
    sa.Column('image_url', sa.Text(), nullable=True),
    sa.Column('last_updated', sa.DateTime(), nullable=True),
    sa.Column('problems', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['sync_runs.run_id'], name=op.f('fk_staged_okta_users_run_id_sync_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'okta_user_id', name=op.f('pk_staged_okta_users'))
    )
    op.create_table('staged_workers',
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('worker_sid', sa.String(length=64), nullable=False),
    sa.Column('friendly_name', sa.Text(), nullable=False),
    sa.Column('attributes_raw', sa.Text(), nullable=True),
    sa.Column('full_name', sa.Text(), nullable=True),
    sa.Column('email', sa.Text(), nullable=True),
    sa.Column('image_url', sa.Text(), nullable=True),
    sa.Column('roles', sa.Text(), nullable=True),
    sa.Column('parse_error', sa.Text(), nullable=True),
    sa.Column('date_updated', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['sync_runs.run_id'], name=op.f('fk_staged_workers_run_id_sync_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'worker_sid', name=op.f('pk_staged_workers'))
    )
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.drop_table('staged_workers')
    op.drop_table('staged_okta_users')
    op.drop_table('staged_app_assignments')
    op.drop_table('raw_pages')
    op.drop_index('ix_drift_findings_run', table_name='drift_findings')
    op.drop_table('drift_findings')
    op.drop_table('watermarks')
    op.drop_index('ix_sync_runs_started_at', table_name='sync_runs')
    op.drop_table('sync_runs')
    op.drop_index('ix_role_history_period', table_name='role_history')
    op.drop_index('ix_role_history_login', table_name='role_history')
    op.drop_table('role_history')
    op.drop_index('ix_repair_audit_run', table_name='repair_audit')
    op.drop_table('repair_audit')
    op.drop_index('ix_okta_users_email_lower', table_name='okta_users')
    op.drop_index('ix_okta_users_login_lower', table_name='okta_users')
    op.drop_table('okta_users')
    op.drop_index('ix_okta_log_events_user', table_name='okta_log_events')
    op.drop_index('ix_okta_log_events_published', table_name='okta_log_events')
    op.drop_table('okta_log_events')
