"""The data dictionary names every table, view and column of the schema, with a type that
matches it, and docs/DATA_DICTIONARY.md is its current rendering."""
from pathlib import Path

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Text,
    inspect,
)

from okta_flex_sync.models.dictionary import DICTIONARY, dictionary_markdown
from okta_flex_sync.models.tables import VIEWS, metadata

DOC = Path(__file__).resolve().parents[2] / "docs" / "DATA_DICTIONARY.md"
LOGICAL = [(Boolean, "boolean"), (DateTime, "timestamp"), (JSON, "json"), (LargeBinary, "bytes"),
           (Integer, "integer"), (Text, "text"), (String, "text")]


def _logical(sa_type) -> str:
    for cls, name in LOGICAL:
        if isinstance(sa_type, cls):
            return name
    raise AssertionError(f"no logical type for {sa_type!r}")


def test_every_table_and_view_is_described():
    assert set(DICTIONARY) == {t.name for t in metadata.sorted_tables} | set(VIEWS)
    for name, entry in DICTIONARY.items():
        assert entry.kind == ("view" if name in VIEWS else "table")
        assert entry.meaning and all(m for _t, m in entry.columns.values()), name


@pytest.mark.parametrize("table", sorted(metadata.tables))
def test_table_columns_and_types(table):
    cols = metadata.tables[table].columns
    assert list(DICTIONARY[table].columns) == [c.name for c in cols]
    assert {c.name: _logical(c.type) for c in cols} == {n: t for n, (t, _m) in DICTIONARY[table].columns.items()}


def test_view_columns_match_the_database(engine):
    insp = inspect(engine)
    for view in VIEWS:
        assert [c["name"] for c in insp.get_columns(view)] == list(DICTIONARY[view].columns), view


def test_generated_document_is_current():
    assert DOC.read_text() == dictionary_markdown(), "run: python -m okta_flex_sync.models.dictionary > docs/DATA_DICTIONARY.md"


def test_postgres_comments_are_the_dictionary(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no comments")
    from sqlalchemy import text

    with engine.connect() as conn:
        for name, entry in DICTIONARY.items():
            assert conn.execute(text("SELECT obj_description(CAST(:n AS regclass))"), {"n": name}).scalar() == entry.meaning
            got = dict(conn.execute(text(
                "SELECT attname, col_description(attrelid, attnum) FROM pg_attribute "
                "WHERE attrelid = CAST(:n AS regclass) AND attnum > 0 AND NOT attisdropped"), {"n": name}).all())
            assert got == {col: meaning for col, (_t, meaning) in entry.columns.items()}, name
