"""SQLAlchemy 2 Core tables. The Alembic migrations in `okta_flex_sync/storage/migrations` create them.

All timestamps are naive UTC (`DateTime` without time zone) so the same SQL works on SQLite
and Postgres.  `role_history.valid_to` uses a far-future sentinel for the current row, so
point-in-time range joins need no NULL handling; `UNIQUE (okta_user_id, valid_to)` is what
enforces exactly one current row per user.
"""
from __future__ import annotations

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

from okta_flex_sync.models.dictionary import DICTIONARY

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
# Publish counts and samples a run's staged records with problems (a handful among 1M rows).
for _staged in (staged_okta_users, staged_app_assignments):
    Index(f"ix_{_staged.name}_problems", _staged.c.run_id, _staged.c.okta_user_id,
          sqlite_where=_staged.c.problems != "", postgresql_where=_staged.c.problems != "")

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

# The rest of `role_grants`: consecutive rows holding the role (each starting where the previous
# one ended) make one grant.
_GRANT_PERIODS = """,
        marked AS (
            SELECT held.*, CASE WHEN LAG(valid_to) OVER (PARTITION BY okta_user_id, role ORDER BY valid_from, id)
                                     = valid_from THEN 0 ELSE 1 END AS starts
            FROM held
        ),
        numbered AS (
            SELECT marked.*, SUM(starts) OVER (PARTITION BY okta_user_id, role ORDER BY valid_from, id
                                               ROWS UNBOUNDED PRECEDING) AS grant_no
            FROM marked
        ),
        named AS (
            SELECT numbered.*, LAST_VALUE(login) OVER (PARTITION BY okta_user_id, role, grant_no ORDER BY valid_from, id
                                   ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS last_login
            FROM numbered
        )
        SELECT okta_user_id, last_login AS login, role, MIN(valid_from) AS granted_at, MAX(valid_to) AS revoked_at
        FROM named
        GROUP BY okta_user_id, last_login, role, grant_no
    """

VIEWS = {
    "current_roles": """
        SELECT okta_user_id, login, app_username, status, assigned, roles, full_name, email,
               valid_from AS since, run_id
        FROM role_history
        WHERE valid_to >= '9999-01-01'
    """,
    # Real changes only: one row per kind of change (roles, assignment, status) between a row
    # and the row before it (rows of a user are contiguous: the previous one ends where the
    # next begins); a user's first row is `first_seen`, never a change.
    "role_changes": """
        SELECT c.okta_user_id, c.login, c.app_username, c.valid_from AS changed_at, k.change_type,
               p.roles AS roles_before, c.roles AS roles_after,
               p.status AS status_before, c.status AS status_after,
               p.assigned AS assigned_before, c.assigned AS assigned_after, c.run_id, c.source
        FROM role_history c
        JOIN role_history p ON p.okta_user_id = c.okta_user_id AND p.valid_to = c.valid_from
        JOIN (SELECT 'roles' AS change_type UNION ALL SELECT 'assignment' UNION ALL SELECT 'status') k
          ON (k.change_type = 'roles' AND p.roles <> c.roles)
          OR (k.change_type = 'assignment' AND p.assigned <> c.assigned)
          OR (k.change_type = 'status' AND p.status <> c.status)
        UNION ALL
        SELECT c.okta_user_id, c.login, c.app_username, c.valid_from, 'first_seen',
               NULL, c.roles, NULL, c.status, NULL, c.assigned, c.run_id, c.source
        FROM role_history c
        WHERE NOT EXISTS (SELECT 1 FROM role_history p
                          WHERE p.okta_user_id = c.okta_user_id AND p.valid_to = c.valid_from)
    """,
    "role_grants": """
        WITH RECURSIVE split(id, okta_user_id, login, valid_from, valid_to, role, rest) AS (
            SELECT id, okta_user_id, login, valid_from, valid_to, '', roles || ','
            FROM role_history WHERE assigned AND roles <> ''
            UNION ALL
            SELECT id, okta_user_id, login, valid_from, valid_to,
                   substr(rest, 1, instr(rest, ',') - 1), substr(rest, instr(rest, ',') + 1)
            FROM split WHERE rest <> ''
        ),
        held AS (SELECT id, okta_user_id, login, valid_from, valid_to, role FROM split WHERE role <> '')
    """ + _GRANT_PERIODS,
}

# Postgres has no `instr`; it splits the roles with `string_to_array`.
POSTGRES_VIEWS = {
    "role_grants": """
        WITH held AS (
            SELECT h.id, h.okta_user_id, h.login, h.valid_from, h.valid_to, r.role
            FROM role_history h CROSS JOIN LATERAL unnest(string_to_array(h.roles, ',')) AS r(role)
            WHERE h.assigned AND h.roles <> '' AND r.role <> ''
        )
    """ + _GRANT_PERIODS,
}


def view_sql(name: str, dialect: str) -> str:
    """The SQL of view `name` on `dialect` ('sqlite' or 'postgresql')."""
    if dialect == "postgresql" and name in POSTGRES_VIEWS:
        return POSTGRES_VIEWS[name]
    return VIEWS[name]


def _apply_dictionary() -> None:
    """Table and column comments come from the data dictionary (Postgres stores them too)."""
    for table in metadata.sorted_tables:
        entry = DICTIONARY[table.name]
        table.comment = entry.meaning
        for column in table.columns:
            column.comment = entry.columns[column.name][1]


_apply_dictionary()
