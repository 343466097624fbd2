"""The System Log store: compact event records, appended in persistence order.

Events are stored as small tuples-with-names and rendered into full LogEvent JSON only when
served, so a 15,000-agent org's history costs a few MB, not hundreds.
"""
from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass

RETENTION_MS = 90 * 86_400_000


@dataclass(frozen=True, slots=True)
class LogRecord:
    published_ms: int
    event_type: str
    user_id: str | None = None
    login: str | None = None
    display_name: str | None = None
    app: bool = False  # has an AppInstance (and AppUser) target: the Flex app
    group_id: str | None = None  # has a UserGroup target
    changed_attributes: str | None = None  # debugData.changedAttributes (names only)
    outcome: str = "SUCCESS"


DISPLAY_MESSAGES = {
    "user.lifecycle.create": "Create Okta user",
    "user.lifecycle.activate": "Activate Okta user",
    "user.lifecycle.deactivate": "Deactivate Okta user",
    "user.lifecycle.suspend": "Suspend Okta user",
    "user.lifecycle.unsuspend": "Unsuspend Okta user",
    "user.lifecycle.delete.initiated": "Delete Okta user",
    "user.account.update_profile": "Update user profile for Okta",
    "user.account.lock": "Max sign in attempts exceeded",
    "user.account.unlock": "Unlock user account",
    "user.account.expire_password": "Expire user password",
    "application.user_membership.add": "Add user to application membership",
    "application.user_membership.remove": "Remove user from application membership",
    "application.user_membership.change_username": "Change users application username",
    "group.user_membership.add": "Add user to group membership",
    "user.authentication.sso": "User single sign on to app",
    "user.session.start": "User login to Okta",
}


class LogStore:
    """Append-only list ordered by persistence time (which here is also `published` order)."""

    def __init__(self) -> None:
        self._records: list[LogRecord] = []
        self._published: list[int] = []
        self._lock = threading.Lock()

    def load(self, records: list[LogRecord]) -> None:
        """Replace the history (at start-up) with records sorted by published time."""
        records = sorted(records, key=lambda r: r.published_ms)
        with self._lock:
            self._records = records
            self._published = [r.published_ms for r in records]

    def append(self, record: LogRecord) -> LogRecord:
        """Persist a new event; `published` never goes backwards in this store."""
        with self._lock:
            if self._published and record.published_ms < self._published[-1]:
                record = LogRecord(**{**_asdict(record), "published_ms": self._published[-1]})
            self._records.append(record)
            self._published.append(record.published_ms)
        return record

    def snapshot(self) -> tuple[list[LogRecord], int]:
        """The backing list and its current length (safe to read up to that length)."""
        with self._lock:
            return self._records, len(self._records)

    def first_at_or_after(self, published_ms: int) -> int:
        with self._lock:
            return bisect.bisect_left(self._published, published_ms)

    def first_after(self, published_ms: int) -> int:
        with self._lock:
            return bisect.bisect_right(self._published, published_ms)

    def oldest_retained_ms(self) -> int:
        return int(time.time() * 1000) - RETENTION_MS


def _asdict(record: LogRecord) -> dict:
    return {f: getattr(record, f) for f in LogRecord.__slots__}
