"""Writing a report's files: one folder per run, every format written atomically."""
from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from okta_flex_sync.reports.document import (
    _RUN_ID,
    FILE_NAMES,
    REPORT_FORMATS,
    InvalidRunId,
    UnknownReportFormat,
    printable,
    truncate,
)
from okta_flex_sync.reports.html_page import render_html
from okta_flex_sync.reports.text import render_csv, render_json, render_markdown

logger = logging.getLogger(__name__)

RENDERERS = {"json": render_json, "csv": render_csv, "html": render_html, "md": render_markdown}


def run_report_dir(report_root: Path, run_id: str) -> Path:
    """REPORT_DIR/<run_id>, refusing ids that could escape REPORT_DIR (the CLI takes them from users)."""
    if not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise InvalidRunId(f"run id {truncate(printable(run_id), 40)!r} is not a valid report directory name")
    return Path(report_root) / run_id


def write_reports(report: Mapping, out_dir: Path,
                  formats: Sequence[str] = REPORT_FORMATS) -> dict[str, Path]:
    """Render and atomically write each format; a reader never sees a half-written file."""
    unknown = [f for f in formats if f not in RENDERERS]
    if unknown:
        raise UnknownReportFormat(f"unknown report format(s) {unknown}; choose from {list(REPORT_FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt in formats:
        path = out_dir / FILE_NAMES[fmt]
        atomic_write(path, RENDERERS[fmt](report).encode("utf-8"))
        written[fmt] = path
    logger.info("wrote %s report(s) to %s", ",".join(formats), out_dir)
    return written


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, then os.replace (atomic on POSIX and Windows)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

