"""Run-to-run delta of drift findings: which are new, which persist, which were resolved.

Pure code (stdlib only).  A finding of one run is "the same" as one of the previous run when it
has the same kind and the same worker, or, for findings without a worker (missing_worker, some
invalid_role), the same Okta user.  Several findings sharing a key (rare: two findings of one kind
on one worker) are paired in order.  A persisting finding keeps the `first_seen_*` of the finding
it continues, so the first run of an unbroken series stays its first sighting; a finding that
disappears for one run and comes back starts a new series.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

NEW, PERSISTING = "new", "persisting"


def finding_key(finding: Mapping) -> tuple[str, str]:
    """(kind, "worker:<sid>") or, without a worker, (kind, "user:<okta id or login or app username>")."""
    kind = str(finding.get("kind") or "")
    worker = finding.get("worker_sid")
    if worker:
        return kind, f"worker:{worker}"
    user = finding.get("okta_user_id") or finding.get("login") or finding.get("app_username") or ""
    return kind, f"user:{user}"


@dataclass(frozen=True, slots=True)
class Sighting:
    """Where a finding of the current run stands in its series."""

    status: str  # NEW or PERSISTING
    first_seen_run_id: str
    first_seen_at: datetime | str | None


@dataclass
class Delta:
    previous_run_id: str | None
    sightings: list[Sighting]  # aligned with the current findings
    resolved: list[Mapping] = field(default_factory=list)  # previous findings that are gone

    def counts(self) -> dict:
        new = sum(1 for s in self.sightings if s.status == NEW)
        return {"previous_run_id": self.previous_run_id, "new": new, "resolved": len(self.resolved),
                "persisting": len(self.sightings) - new}


def compare_runs(current: Sequence[Mapping], previous: Sequence[Mapping] | None, *, run_id: str,
                 started_at: datetime | str | None, previous_run_id: str | None = None,
                 previous_started_at: datetime | str | None = None) -> Delta:
    """Match `current` findings against the `previous` run's (None: there is no previous run).

    Previous findings may carry `first_seen_run_id`/`first_seen_at` (stored by that run); when they
    do not (rows from before those columns existed) the previous run itself is their first sighting.
    """
    if previous is None:
        return Delta(None, [Sighting(NEW, run_id, started_at) for _ in current])
    waiting: dict[tuple[str, str], list[Mapping]] = {}
    for f in previous:
        waiting.setdefault(finding_key(f), []).append(f)
    sightings = []
    for f in current:
        queue = waiting.get(finding_key(f))
        if queue:
            before = queue.pop(0)
            sightings.append(Sighting(PERSISTING, before.get("first_seen_run_id") or previous_run_id or run_id,
                                      before.get("first_seen_at") or previous_started_at))
        else:
            sightings.append(Sighting(NEW, run_id, started_at))
    left = {id(f) for queue in waiting.values() for f in queue}
    resolved = [f for f in previous if id(f) in left]
    return Delta(previous_run_id, sightings, resolved)
