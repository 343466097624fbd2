"""Logging with secret redaction, and progress that suits the terminal it runs in."""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable

from okta_flex_sync.redaction import redact


class RedactingFilter(logging.Filter):
    """Scrubs secrets from every record that passes through a handler."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed log call must not crash the run
            msg = str(record.msg)
        clean = redact(msg, self.secrets)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
            record.exc_info = None
        record.msg, record.args = clean, None
        return True


_installed: RedactingFilter | None = None


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time (test runners swap it per invocation)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def setup_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Plain timestamped lines on stderr; every handler (ours and Prefect's) redacts secrets."""
    global _installed
    root = logging.getLogger()
    if _installed is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        _installed = RedactingFilter(secrets)
    else:
        _installed.secrets = [s for s in secrets if s]
    for h in root.handlers:
        if _installed not in h.filters:
            h.addFilter(_installed)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# How a job reports progress: (source, pages or days so far, records so far).
ProgressFn = Callable[[str, int, int], None]


class Progress:
    """Rich progress bars on a TTY, a log line every few seconds otherwise."""

    def __init__(self, enabled: bool | None = None, interval: float = 5.0):
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        self.interval = interval
        self._last: dict[str, float] = {}
        self._bars = None
        self._tasks: dict[str, int] = {}
        self.log = logging.getLogger("okta_flex_sync.progress")

    def __enter__(self):
        if self.tty:
            # local: the bars are only for a terminal; a scheduled run never loads them
            from rich.progress import Progress as RichProgress
            from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bars = RichProgress(SpinnerColumn(), TextColumn("{task.description}"),
                                      TextColumn("{task.fields[items]:>9,} records  {task.fields[pages]:>6,} pages"),
                                      TimeElapsedColumn(), transient=False)
            self._bars.__enter__()
        return self

    def __exit__(self, *exc):
        if self._bars is not None:
            self._bars.__exit__(*exc)
            self._bars = None
        return False

    def __call__(self, source: str, pages: int, items: int) -> None:
        if self._bars is not None:
            if source not in self._tasks:
                self._tasks[source] = self._bars.add_task(f"{source:<12}", total=None, items=0, pages=0)
            self._bars.update(self._tasks[source], items=items, pages=pages)
            return
        now = time.monotonic()
        if now - self._last.get(source, 0.0) >= self.interval:
            self._last[source] = now
            self.log.info("%s: %d records from %d pages", source, items, pages)
