"""Data-team schema: canonical SQLite timestamps, real `role_changes`, `role_grants`, comments.

- SQLite: every timestamp column holds one text form, `YYYY-MM-DD HH:MM:SS.ffffff` (UTC), so
  text comparison orders instants; values written in another form (`T` separator, no fraction,
  a zone) are rewritten in place as the same instant.
- `role_changes` lists real changes with a `change_type` (roles, assignment, status), first
  observations as `first_seen`; `role_grants` has one row per user, role and period.
- Postgres: `COMMENT ON` every table, view and column, from the data dictionary.

Revision ID: 0003
Revises: 0002
"""
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

from okta_flex_sync.storage.migrations.comments import comment_from_dictionary

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen copies (okta_flex_sync.models.tables.VIEWS / POSTGRES_VIEWS hold the live ones).
_CHANGES = """
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
"""
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
_GRANTS = {
    "sqlite": """
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
    "postgresql": """
    WITH held AS (
        SELECT h.id, h.okta_user_id, h.login, h.valid_from, h.valid_to, r.role
        FROM role_history h CROSS JOIN LATERAL unnest(string_to_array(h.roles, ',')) AS r(role)
        WHERE h.assigned AND h.roles <> '' AND r.role <> ''
    )
    """ + _GRANT_PERIODS,
}
_OLD_CHANGES = """
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
"""

_CANONICAL = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]"
_TIMESTAMPS = {
    "sync_runs": ("started_at", "finished_at"),
    "staged_okta_users": ("last_updated",),
    "okta_users": ("last_updated",),
    "staged_app_assignments": ("last_updated",),
    "staged_workers": ("date_updated",),
    "raw_pages": ("fetched_at",),
    "watermarks": ("value", "updated_at"),
    "role_history": ("valid_from", "valid_to"),
    "repair_audit": ("applied_at",),
    "okta_log_events": ("published",),
}


def _canonical(value: str) -> str:
    moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment.isoformat(" ", "microseconds")


def _normalize_sqlite_timestamps(conn) -> None:
    for table, columns in _TIMESTAMPS.items():
        for column in columns:
            rows = conn.execute(sa.text(
                f"SELECT rowid, {column} FROM {table} WHERE {column} IS NOT NULL AND {column} NOT GLOB :form"),
                {"form": _CANONICAL}).all()
            updates = []
            for rid, value in rows:
                try:
                    updates.append({"rid": rid, "v": _canonical(str(value))})
                except ValueError:
                    continue  # not a timestamp at all: left as it is rather than lost
            if updates:
                conn.execute(sa.text(f"UPDATE {table} SET {column} = :v WHERE rowid = :rid"), updates)


def upgrade() -> None:
    conn = op.get_bind()
    dialect = conn.dialect.name
    if dialect == "sqlite":
        _normalize_sqlite_timestamps(conn)
    op.execute("DROP VIEW IF EXISTS role_changes")
    op.execute(f"CREATE VIEW role_changes AS {_CHANGES}")
    op.execute(f"CREATE VIEW role_grants AS {_GRANTS['postgresql' if dialect == 'postgresql' else 'sqlite']}")
    comment_from_dictionary(conn)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS role_grants")
    op.execute("DROP VIEW IF EXISTS role_changes")
    op.execute(f"CREATE VIEW role_changes AS {_OLD_CHANGES}")
