"""SQLAlchemy 2 Core tables. The Alembic migrations in `okta_flex_sync/migrations` create them.

All timestamps are naive UTC (`DateTime` without time zone) so the same SQL works on SQLite
and Postgres.  `role_history.valid_to` uses a far-future sentinel for the current row, so
point-in-time range joins need no NULL handling; `UNIQUE (okta_user_id, valid_to)` is what
enforces exactly one current row per user.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

VALID_TO_CURRENT = datetime(9999, 12, 31)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

RunId = String(40)
UserId = String(64)
# Okta caps login and email at 100 characters, names at 50; Text keeps hostile data intact.

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("run_id", RunId, primary_key=True),
    Column("flow", String(40), nullable=False),
    Column("org_url", Text, nullable=True),
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime, nullable=True),
    Column("status", String(20), nullable=False),  # running, succeeded, failed, aborted, abandoned
    Column("parameters", JSON, nullable=False, default=dict),
    Column("counts", JSON, nullable=False, default=dict),
    Column("watermarks", JSON, nullable=False, default=dict),
    Column("error", Text, nullable=True),
    # The TaskRouter workspace the run reconciled (NULL for runs before migration 0004): the run-to-run
    # delta compares a run only with earlier runs of the same org and workspace.
    Column("workspace_sid", String(64), nullable=True),
    Index("ix_sync_runs_started_at", "started_at"),
)

_user_columns = lambda: [  # noqa: E731 - shared column list for staged and mirrored users
    Column("okta_user_id", UserId, nullable=False),
    Column("status", String(32), nullable=False),
    Column("login", Text, nullable=False),
    Column("email", Text, nullable=True),
    Column("full_name", Text, nullable=False),
    Column("user_type", Text, nullable=True),
    Column("roles", Text, nullable=False),
    Column("invalid_roles", Text, nullable=False),
    Column("image_url", Text, nullable=True),
    Column("last_updated", DateTime, nullable=True),
    Column("problems", Text, nullable=False, default=""),
]

staged_okta_users = Table(
    "staged_okta_users",
    metadata,
    Column("run_id", RunId, ForeignKey("sync_runs.run_id", ondelete="CASCADE"), nullable=False),
    *_user_columns(),
    PrimaryKeyConstraint("run_id", "okta_user_id"),
)

# The latest known state of every Okta user, refreshed by every committed run (full or
# incremental).  Incremental runs stage only changed users; this mirror is the whole org.
okta_users = Table(
    "okta_users",
    metadata,
    *_user_columns(),
    Column("run_id", RunId, nullable=False),  # the run that last saw this user
    PrimaryKeyConstraint("okta_user_id"),
)
# Orphan workers are attributed to their Okta owner by login or email, case-insensitively.
Index("ix_okta_users_login_lower", func.lower(okta_users.c.login))
Index("ix_okta_users_email_lower", func.lower(okta_users.c.email))

staged_app_assignments = Table(
    "staged_app_assignments",
    metadata,
    Column("run_id", RunId, ForeignKey("sync_runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("okta_user_id", UserId, nullable=False),
    Column("app_username", Text, nullable=False),
    Column("scope", String(16), nullable=True),
    Column("status", String(32), nullable=True),
    Column("roles", Text, nullable=False),
    Column("invalid_roles", Text, nullable=False),
    Column("last_updated", DateTime, nullable=True),
    Column("problems", Text, nullable=False, default=""),
    PrimaryKeyConstraint("run_id", "okta_user_id"),
)

staged_workers = Table(
    "staged_workers",
    metadata,
    Column("run_id", RunId, ForeignKey("sync_runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("worker_sid", String(64), nullable=False),
    Column("friendly_name", Text, nullable=False),
    Column("attributes_raw", Text, nullable=True),
    Column("full_name", Text, nullable=True),
    Column("email", Text, nullable=True),
    Column("image_url", Text, nullable=True),
    Column("roles", Text, nullable=True),
    Column("parse_error", Text, nullable=True),
    Column("date_updated", DateTime, nullable=True),
    PrimaryKeyConstraint("run_id", "worker_sid"),
)

# Raw API pages exactly as received (gzip), so any day can be re-derived without the APIs.
raw_pages = Table(
    "raw_pages",
    metadata,
    Column("run_id", RunId, ForeignKey("sync_runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("source", String(20), nullable=False),  # users, assignments, workers, logs
    Column("seq", Integer, nullable=False),
    Column("fetched_at", DateTime, nullable=False),
    Column("url", Text, nullable=False),  # never carries credentials
    Column("item_count", Integer, nullable=False),
    Column("body_gz", LargeBinary, nullable=False),
    PrimaryKeyConstraint("run_id", "source", "seq"),
)

watermarks = Table(
    "watermarks",
    metadata,
    Column("org_url", Text, nullable=False),
    Column("stream", String(40), nullable=False),
    Column("value", DateTime, nullable=False),
    Column("run_id", RunId, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    PrimaryKeyConstraint("org_url", "stream"),
)

role_history = Table(
    "role_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("okta_user_id", UserId, nullable=False),
    Column("login", Text, nullable=False),
    Column("app_username", Text, nullable=True),
    Column("status", String(32), nullable=False),
    Column("assigned", Boolean, nullable=False),
    Column("roles", Text, nullable=False),
    Column("full_name", Text, nullable=False),
    Column("email", Text, nullable=True),
    Column("valid_from", DateTime, nullable=False),
    Column("valid_to", DateTime, nullable=False),
    Column("run_id", RunId, nullable=False),
    Column("source", String(20), nullable=False, default="nightly"),  # nightly or backfill
    UniqueConstraint("okta_user_id", "valid_to", name="uq_role_history_one_current"),
    Index("ix_role_history_period", "valid_from", "valid_to"),
    Index("ix_role_history_login", "login"),
    # Current rows (`valid_to` = the far-future sentinel) without reading the history behind
    # them: every run's current-history read, role counts and the `current_roles` view.
    Index("ix_role_history_current", "valid_to", "okta_user_id"),
)

drift_findings = Table(
    "drift_findings",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("run_id", RunId, ForeignKey("sync_runs.run_id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("severity", String(10), nullable=False),
    Column("okta_user_id", UserId, nullable=True),
    Column("login", Text, nullable=True),
    Column("app_username", Text, nullable=True),
    Column("worker_sid", String(64), nullable=True),
    Column("field", String(40), nullable=True),
    Column("expected", Text, nullable=True),
    Column("actual", Text, nullable=True),
    # Run-to-run delta (migration 0004; NULL on rows written before it): "new" or "persisting", and
    # the first run of the unbroken series of runs that reported this finding.
    Column("status", String(12), nullable=True),
    Column("first_seen_run_id", RunId, nullable=True),
    Column("first_seen_at", DateTime, nullable=True),
    Index("ix_drift_findings_run", "run_id", "kind"),
)

repair_audit = Table(
    "repair_audit",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("run_id", RunId, nullable=False),
    Column("worker_sid", String(64), nullable=False),
    Column("friendly_name", Text, nullable=False),
    Column("action", String(30), nullable=False),  # update_attributes, strip_roles, delete_worker
    Column("attributes_before", Text, nullable=True),
    Column("attributes_after", Text, nullable=True),
    Column("actor", Text, nullable=False),
    Column("applied_at", DateTime, nullable=False),
    Column("outcome", String(20), nullable=False),  # applied, skipped, failed
    Column("detail", Text, nullable=True),
    Index("ix_repair_audit_run", "run_id"),
)

# Okta System Log events kept for backfill (deduplicated by uuid).
okta_log_events = Table(
    "okta_log_events",
    metadata,
    Column("uuid", String(64), primary_key=True),
    Column("published", DateTime, nullable=False),
    Column("event_type", String(120), nullable=False),
    Column("target_user_id", UserId, nullable=True),
    Column("target_app_id", String(64), nullable=True),
    Column("outcome", String(40), nullable=True),
    Column("payload", Text, nullable=False),
    Column("run_id", RunId, nullable=True),
    Index("ix_okta_log_events_published", "published"),
    Index("ix_okta_log_events_user", "target_user_id", "published"),
)

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
