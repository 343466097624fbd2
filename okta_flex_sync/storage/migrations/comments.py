"""Postgres `COMMENT ON` from the data dictionary, for the migrations that add or describe objects.

Comments only what exists at that revision (a later revision's columns are commented by the
migration that adds them), so every migration can call it whatever the dictionary says today.
"""
from __future__ import annotations

import sqlalchemy as sa

from okta_flex_sync.models.dictionary import DICTIONARY


def _comment(conn, kind: str, target: str, text: str) -> None:
    quoted = "'" + text.replace("'", "''") + "'"
    conn.execute(sa.text(f"COMMENT ON {kind} {target} IS {quoted}".replace(":", r"\:")))


def comment_from_dictionary(conn) -> None:
    """Comment every table, view and column of the dictionary that the database has (Postgres only)."""
    if conn.dialect.name != "postgresql":
        return
    insp = sa.inspect(conn)
    present = set(insp.get_table_names()) | set(insp.get_view_names())
    for name, entry in DICTIONARY.items():
        if name not in present:
            continue
        _comment(conn, entry.kind.upper(), name, entry.meaning)
        columns = {c["name"] for c in insp.get_columns(name)}
        for column, (_type, meaning) in entry.columns.items():
            if column in columns:
                _comment(conn, "COLUMN", f"{name}.{column}", meaning)
