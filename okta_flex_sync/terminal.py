"""Tables for people, CSV or JSON for pipes: how the read commands print rows.

`table` wraps long cells instead of cutting them (a date cut to `2026-0…` is no date at all);
`csv` is the default when stdout is not a terminal, so `okta-flex-sync history bob | ...` gets
plain rows.  Values are written out as given: callers pass display-ready strings.
"""
from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from rich import box
from rich.console import Console
from rich.table import Table

FORMATS = ("table", "csv", "json")
_GAP = 3  # between two columns of the table below: padding, separator, padding
_MIN_WIDTH = 4


def fit_widths(headings: Sequence[str], cells: Sequence[Sequence[str]], available: int,
               minimums: Sequence[int]) -> list[int | None]:
    """Column widths that fit `available` characters: each column's widest cell while they fit,
    else the widest columns give way first, down to their minimum (then the table is wider).
    None means "as wide as its content"."""
    natural = [max([len(h), *(len(line) for row in cells for line in row[i].splitlines() or [""])])
               for i, h in enumerate(headings)]
    if sum(natural) <= available:
        return [None] * len(headings)
    widths = list(natural)
    excess = sum(widths) - available
    while excess > 0:
        shrinkable = [i for i, w in enumerate(widths) if w > minimums[i]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def choose_format(requested: str | None, stream: TextIO | None = None) -> str:
    """The requested format, else `table` on a terminal and `csv` in a pipe or file."""
    if requested:
        return requested
    stream = stream or sys.stdout
    isatty = getattr(stream, "isatty", None)
    return "table" if isatty is not None and isatty() else "csv"


def print_rows(columns: Sequence[tuple[str, str]], rows: Sequence[dict], fmt: str, *, title: str = "",
               stream: TextIO | None = None, min_widths: dict[str, int] | None = None) -> None:
    """Print `rows` (dicts keyed by the first item of each column pair; the second is the table
    heading) as a wrapping table, CSV with a header line, or a JSON array of objects.
    `min_widths` keeps short cells whole in a narrow table (a date, a yes/no heading)."""
    stream = stream or sys.stdout
    keys = [key for key, _ in columns]
    if fmt == "json":
        json.dump([{k: row.get(k) for k in keys} for row in rows], stream, ensure_ascii=False, indent=1)
        stream.write("\n")
    elif fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(keys)
        for row in rows:
            writer.writerow(["" if row.get(k) is None else row.get(k) for k in keys])
    elif fmt == "table":
        # No outer edge and a heading rule only: 8 columns then fit 80 characters with room to wrap.
        table = Table(title=title or None, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        cells = [["" if row.get(k) is None else str(row.get(k)) for k in keys] for row in rows]
        console = Console(file=stream)
        widths = fit_widths([h for _, h in columns], cells, console.width - _GAP * (len(columns) - 1),
                            [(min_widths or {}).get(k, _MIN_WIDTH) for k in keys])
        for (_key, heading), width in zip(columns, widths):
            table.add_column(heading, overflow="fold", no_wrap=False, width=width)
        for row in cells:
            table.add_row(*row)
        console.print(table)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
