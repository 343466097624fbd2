"""Write the data-team DataFrames as a terminal table, CSV, JSON or Parquet.

CSV and JSON carry `roles` as the comma-separated list of the SSO claim and timestamps as
ISO 8601 UTC with `Z` (empty / null for open periods); Parquet keeps lists, UTC timestamps and
booleans as such.  CSV cells a spreadsheet would run as a formula are defused like the reports'.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from okta_flex_sync.analytics.frames import BOOLEANS, ROLE_LISTS, TIMESTAMPS
from okta_flex_sync.reports.text import csv_cell

FORMATS = ("table", "csv", "json", "parquet")


def _text_cells(df: pd.DataFrame) -> dict[str, list]:
    """Each column as JSON-ready Python values: roles joined, timestamps ISO, NaT/NA as None."""
    out: dict[str, list] = {}
    for name in df.columns:
        series = df[name]
        if name in TIMESTAMPS:
            text = series.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").str.replace(".000000Z", "Z", regex=False)
            out[name] = [None if pd.isna(v) else v for v in text.astype(object)]
        elif name in ROLE_LISTS:
            out[name] = [None if v is None else ",".join(v) for v in series]
        elif name in BOOLEANS:
            out[name] = [None if pd.isna(v) else bool(v) for v in series.astype(object)]
        else:
            out[name] = [None if pd.isna(v) else (int(v) if isinstance(v, (int,)) or hasattr(v, "item") else v)
                         for v in series.astype(object)]
    return out


def write_csv(df: pd.DataFrame, out: IO[str]) -> None:
    cells = _text_cells(df)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(df.columns)
    def cell(v):
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        return csv_cell(v) if isinstance(v, str) else v
    for row in zip(*(cells[c] for c in df.columns)):
        writer.writerow([cell(v) for v in row])


def write_json(df: pd.DataFrame, out: IO[str]) -> None:
    """A JSON array with one object per row."""
    cells = _text_cells(df)
    cols = list(df.columns)
    out.write("[")
    for i, row in enumerate(zip(*(cells[c] for c in cols))):
        out.write(("," if i else "") + "\n" + json.dumps(dict(zip(cols, row)), ensure_ascii=False))
    out.write("\n]\n" if len(df) else "]\n")


def arrow_schema(df: pd.DataFrame) -> pa.Schema:
    fields = []
    for name in df.columns:
        if name in TIMESTAMPS:
            typ = pa.timestamp("us", tz="UTC")
        elif name in ROLE_LISTS:
            typ = pa.list_(pa.string())
        elif name in BOOLEANS:
            typ = pa.bool_()
        elif pd.api.types.is_integer_dtype(df[name].dtype):
            typ = pa.int64()
        else:
            typ = pa.string()
        fields.append(pa.field(name, typ))
    return pa.schema(fields)


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(df, schema=arrow_schema(df), preserve_index=False)
    pq.write_table(table, path)


def write_table(df: pd.DataFrame, out: IO[str], title: str | None = None) -> None:
    cells = _text_cells(df)
    table = Table(title=title)
    for name in df.columns:
        table.add_column(name)
    for row in zip(*(cells[c] for c in df.columns)):
        table.add_row(*["" if v is None else ("yes" if v is True else "no" if v is False else str(v)) for v in row])
    Console(file=out, soft_wrap=True, markup=False, highlight=False).print(table)


def default_format(stream: IO) -> str:
    """A table on a terminal, CSV when piped."""
    try:
        return "table" if stream.isatty() else "csv"
    except (AttributeError, ValueError):
        return "csv"


def write(df: pd.DataFrame, fmt: str, output: Path | None, *, stdout: IO[str], title: str | None = None) -> None:
    """Write `df` in `fmt` to `output` (atomically: a temporary file renamed into place) or stdout."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if output is None:
        if fmt == "parquet":
            raise ValueError("--format parquet needs --output FILE")
        _write_text(df, fmt, stdout, title)
        return
    output = Path(output)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        if fmt == "parquet":
            write_parquet(df, tmp)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                _write_text(df, fmt, fh, title)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(df: pd.DataFrame, fmt: str, out: IO[str], title: str | None) -> None:
    if fmt == "csv":
        write_csv(df, out)
    elif fmt == "json":
        write_json(df, out)
    else:
        write_table(df, out, title)


def to_text(df: pd.DataFrame, fmt: str) -> str:
    buf = io.StringIO()
    _write_text(df, fmt, buf, None)
    return buf.getvalue()
