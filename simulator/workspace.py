"""The simulated TaskRouter workspace: worker records with TaskRouter's write rules.

Writes are validated completely before anything changes, so a rejected (or faulted) update
never leaves a half-applied worker behind.
"""
from __future__ import annotations

import bisect
import copy
import json
import threading
import time
from dataclasses import dataclass

from simulator.ids import h64, hex32, iso_s, key_of, unit

DAY_MS = 86_400_000
ACTIVITIES = (("Offline", False), ("Available", True), ("Unavailable", False), ("Break", False))
_ACTIVITY_PICKS = (0, 0, 0, 0, 0, 1, 1, 1, 2, 3)  # index into ACTIVITIES, Offline most often


class UnknownWorker(KeyError):
    """No such worker in the simulated workspace."""


class PreconditionFailed(Exception):
    """If-Match did not match the worker's current ETag."""


class WorkerConflict(ValueError):
    """The friendly_name is already used by another worker (case-insensitively)."""


class InvalidRequest(ValueError):
    """A write the real API would reject with 400."""


@dataclass
class WorkerRecord:
    """A TaskRouter worker as stored; `attributes` is the raw JSON string."""

    sid: str
    friendly_name: str
    attributes: str
    activity_sid: str
    activity_name: str
    available: bool
    date_created_ms: int
    date_updated_ms: int
    date_status_changed_ms: int
    version: int = 0

    @property
    def etag(self) -> str:
        return f'"{h64(int(self.sid[2:18], 16), self.version):016x}"'


class Workspace:
    """Worker records by sid, with a case-insensitive friendly_name index; thread-safe."""

    def __init__(self, seed: int, null_attributes_fraction: float) -> None:
        self.activities = {name: "WA" + hex32(key_of("activity", seed), n) for n, (name, _) in enumerate(ACTIVITIES)}
        self._available = {self.activities[name]: available for name, available in ACTIVITIES}
        self._activity_name = {sid: name for name, sid in self.activities.items()}
        self._null_fraction = null_attributes_fraction
        self._k_sid = key_of("worker", seed)
        self._k_null = key_of("null-attributes", seed)
        self._lock = threading.RLock()
        self._records: dict[str, WorkerRecord] = {}
        self._names: dict[str, str] = {}  # casefolded friendly_name -> sid
        self._sids: list[str] = []
        self._counter = 0

    def __len__(self) -> int:
        return len(self._records)

    def lists_null(self, sid: str) -> bool:
        """Whether list pages show this worker's attributes as null (deterministic per sid)."""
        return unit(self._k_null, int(sid[2:18], 16)) < self._null_fraction

    # ---------------------------------------------------------------- reads
    def all(self) -> list[dict]:
        with self._lock:
            return [_as_dict(self._records[sid]) for sid in self._sids]

    def by_name(self, name: str) -> dict | None:
        with self._lock:
            sid = self._names.get(name.casefold())
            return _as_dict(self._records[sid]) if sid else None

    def get(self, sid: str) -> dict | None:
        with self._lock:
            record = self._records.get(sid)
            return _as_dict(record) if record else None

    def record(self, sid: str) -> WorkerRecord:
        with self._lock:
            record = self._records.get(sid)
            if record is None:
                raise UnknownWorker(sid)
            return copy.copy(record)

    def sids(self) -> list[str]:
        with self._lock:
            return list(self._sids)

    def records(self, sids: list[str]) -> list[WorkerRecord]:
        with self._lock:
            return [copy.copy(self._records[s]) for s in sids if s in self._records]

    def snapshots(self, sids: list[str]) -> list[tuple]:
        """`records(sids)` as tuples of the fields in declaration order (`WorkerRecord(*t)`
        rebuilds one): a list page takes 1,000 of them, and copying records was most of its cost."""
        with self._lock:
            return [(r.sid, r.friendly_name, r.attributes, r.activity_sid, r.activity_name, r.available,
                     r.date_created_ms, r.date_updated_ms, r.date_status_changed_ms, r.version)
                    for r in map(self._records.get, sids) if r is not None]

    # ---------------------------------------------------------------- writes
    def add(self, friendly_name: str, attributes: str, date_ms: int, pick: int = 0) -> WorkerRecord:
        """Store a worker last written at `date_ms` (build time and POST .../Workers)."""
        name, available = ACTIVITIES[_ACTIVITY_PICKS[pick % len(_ACTIVITY_PICKS)]]
        with self._lock:
            sid = "WK" + hex32(self._k_sid, self._counter)
            self._counter += 1
            record = WorkerRecord(sid, friendly_name, attributes, self.activities[name], name, available,
                                  date_ms - DAY_MS, date_ms, date_ms)
            self._records[sid] = record
            self._names[friendly_name.casefold()] = sid
            bisect.insort(self._sids, sid)
            return record

    def update(self, sid: str, *, attributes: str | None = None, friendly_name: str | None = None,
               activity_sid: str | None = None, if_match: str | None = None) -> WorkerRecord:
        """POST .../Workers/{Sid}: Attributes replaces the whole string; If-Match is honoured."""
        if attributes is not None:
            _check_attributes(attributes)
        if friendly_name is not None:
            _check_friendly_name(friendly_name)
        with self._lock:
            record = self._writable(sid, if_match)
            if friendly_name is not None and self._names.get(friendly_name.casefold(), sid) != sid:
                raise WorkerConflict(friendly_name)
            self._check_activity(activity_sid)
            now = int(time.time() * 1000)
            if attributes is not None:
                record.attributes = attributes
            if friendly_name is not None:
                self._names.pop(record.friendly_name.casefold(), None)
                record.friendly_name = friendly_name
                self._names[friendly_name.casefold()] = sid
            if activity_sid is not None and activity_sid != record.activity_sid:
                self._set_activity(record, activity_sid)
                record.date_status_changed_ms = now
            record.date_updated_ms = now
            record.version += 1
            return copy.copy(record)

    def create(self, friendly_name: str, attributes: str = "{}", activity_sid: str | None = None) -> WorkerRecord:
        _check_friendly_name(friendly_name)
        _check_attributes(attributes)
        with self._lock:
            if friendly_name.casefold() in self._names:
                raise WorkerConflict(friendly_name)
            self._check_activity(activity_sid)
            record = self.add(friendly_name, attributes, int(time.time() * 1000))
            record.date_created_ms = record.date_updated_ms
            if activity_sid is not None:
                self._set_activity(record, activity_sid)
            return copy.copy(record)

    def _writable(self, sid: str, if_match: str | None) -> WorkerRecord:
        """The record a write may change (caller holds the lock): 404 unknown, 412 stale If-Match."""
        record = self._records.get(sid)
        if record is None:
            raise UnknownWorker(sid)
        if if_match is not None and not _etag_matches(if_match, record.etag):
            raise PreconditionFailed(sid)
        return record

    def delete(self, sid: str, if_match: str | None = None) -> None:
        with self._lock:
            record = self._writable(sid, if_match)
            del self._records[sid]
            self._names.pop(record.friendly_name.casefold(), None)
            self._sids.remove(sid)

    def _check_activity(self, activity_sid: str | None) -> None:
        if activity_sid is not None and activity_sid not in self._activity_name:
            raise InvalidRequest("ActivitySid is not an Activity of this Workspace")

    def _set_activity(self, record: WorkerRecord, activity_sid: str) -> None:
        record.activity_sid = activity_sid
        record.activity_name = self._activity_name[activity_sid]
        record.available = self._available[activity_sid]


def _etag_matches(header: str, etag: str) -> bool:
    wanted = {t.strip().removeprefix("W/").strip('"') for t in header.split(",")}
    return "*" in wanted or etag.strip('"') in wanted


def _check_attributes(attributes: str) -> None:
    try:
        json.loads(attributes)
    except (TypeError, ValueError):
        raise InvalidRequest("Attributes must be a valid JSON string") from None


def _check_friendly_name(name: str) -> None:
    if not name or len(name) > 64:
        raise InvalidRequest("FriendlyName must be 1-64 characters")


def _as_dict(record: WorkerRecord) -> dict:
    return {
        "sid": record.sid, "friendly_name": record.friendly_name, "attributes": record.attributes,
        "activity_sid": record.activity_sid, "activity_name": record.activity_name,
        "available": record.available, "date_created": iso_s(record.date_created_ms),
        "date_updated": iso_s(record.date_updated_ms),
        "date_status_changed": iso_s(record.date_status_changed_ms), "etag": record.etag,
    }
