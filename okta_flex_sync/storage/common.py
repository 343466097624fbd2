"""Helpers every storage module shares: storable text, naive-UTC now, record field lists."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime, timezone

from sqlalchemy import bindparam

from okta_flex_sync.models.records import AppAssignment, OktaUser, Worker

USER_FIELDS = [f.name for f in fields(OktaUser)]
ASSIGNMENT_FIELDS = [f.name for f in fields(AppAssignment)]
WORKER_FIELDS = [f.name for f in fields(Worker)]


# Text neither database can hold: Postgres TEXT refuses NUL, and a lone surrogate is not UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(value):
    """`value` with NUL and lone surrogates written as visible escapes (`\\x00`, `\\ud800`).

    For text kept verbatim from a hostile source (raw worker attributes, error messages): the
    escape keeps it readable, and JSON that did not parse (a raw NUL) still does not.
    """
    if not isinstance(value, str) or not _UNSTORABLE.search(value):
        return value
    return _UNSTORABLE.sub(lambda m: "\\x00" if m.group() == "\x00" else f"\\u{ord(m.group()):04x}", value)


def utcnow() -> datetime:
    """Naive UTC, the form every timestamp column uses."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def columns_of(table, names: Sequence[str]):
    return [table.c[n] for n in names]


def bind(name: str):
    return bindparam(name)



def user_from_row(row) -> OktaUser:
    return OktaUser(**{k: row[k] for k in USER_FIELDS})
