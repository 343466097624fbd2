"""The lines a finished run leaves in its log: what it counted, where its reports are, and, for a
backfill that changed nothing, why.  Pure: numbers in, a sentence out."""
from __future__ import annotations

import os
from collections.abc import Mapping


def finished_line(run_id: str, counts: Mapping, summary: Mapping[str, int], report_paths: Mapping[str, object]) -> str:
    """`run R finished: 2,000 Okta users, 300 Flex assignments, 290 workers, 12 findings; reports in
    DIR (json, csv, ...)`."""
    parts = [f"{counts.get(key) or 0:,} {label}" for key, label in (
        ("okta_users", "Okta users"), ("assigned_users", "Flex assignments"), ("workers", "workers"))]
    parts.append(f"{sum(summary.values()):,} findings")
    line = f"run {run_id} finished: {', '.join(parts)}"
    paths = [str(p) for p in report_paths.values()]
    if paths:
        folder = os.path.dirname(os.path.commonprefix(paths)) if len(paths) > 1 else os.path.dirname(paths[0])
        line += f"; reports in {folder or '.'} ({', '.join(report_paths)})"
    return line


def nothing_rebuilt_reason(start, end, *, days: int, events: int, rows_changed: int, snapshots_in_range: int,
                           stored_snapshots: int) -> str | None:
    """Why a backfill over `start..end` changed nothing, or None when it changed something."""
    if rows_changed:
        return None
    reasons = []
    if stored_snapshots == 0:
        reasons.append("no nightly run has stored a snapshot yet (run `okta-flex-sync run` first)")
    elif snapshots_in_range == 0:
        reasons.append("no stored nightly snapshot bounds these days (they are before the first stored run)")
    if events == 0:
        reasons.append("the Okta System Log has no lifecycle, profile or Flex assignment events in the range")
    if not reasons:
        reasons.append("the stored role history already agrees with the snapshots and the System Log")
    return f"backfill {start}..{end} ({days} day(s)) rebuilt nothing: " + "; ".join(reasons)
