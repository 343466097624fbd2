"""Opt-in repair: rewrite only the SSO-managed attributes of drifted workers.

Guardrails: nothing happens unless asked (`--apply`); more than `max_changes` planned writes
and nothing is written at all; each worker is re-read just before its write and written with
`If-Match`, so a concurrent change (an SSO login, an admin edit) is never overwritten blindly;
every write, skip and failure lands in `repair_audit` (before, after, who, when), committed one
by one so a crash mid-way still leaves the trail.
"""
from __future__ import annotations

import getpass
import logging
import socket
from dataclasses import dataclass

from sqlalchemy import Engine

from okta_flex_sync.clients.http import (
    ApiError,
    AuthError,
    ConflictError,
    NotFoundError,
)
from okta_flex_sync.core.reconcile import expected_by_worker
from okta_flex_sync.core.repair_plan import (
    RepairAction,
    apply_plan_to_attributes,
    plan_repairs,
)
from okta_flex_sync.storage import findings as findings_db
from okta_flex_sync.storage.common import utcnow

log = logging.getLogger(__name__)

DELETABLE_KINDS = ("deactivated_user_has_worker", "orphan_worker")


class RepairRefused(RuntimeError):
    """More workers would change than the operator allowed; nothing was written."""


@dataclass(frozen=True)
class Deletion:
    worker_sid: str
    friendly_name: str
    reason: str


def actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"okta-flex-sync ({user}@{socket.gethostname()})"


def plan(published, *, settings, strip_deactivated: bool, delete_orphans: bool) -> tuple[list[RepairAction], list[Deletion]]:
    expected = expected_by_worker(published.users, published.assignments.values(), published.workers.values(),
                                  role_source=settings.role_source)
    actions = plan_repairs(published.findings, published.workers, expected, strip_deactivated=strip_deactivated,
                           valid_roles=settings.valid_role_set)
    deletions: list[Deletion] = []
    if delete_orphans:
        seen = set()
        for f in published.findings:
            if f.kind in DELETABLE_KINDS and f.worker_sid and f.worker_sid not in seen:
                seen.add(f.worker_sid)
                w = published.workers.get(f.worker_sid)
                deletions.append(Deletion(f.worker_sid, w.friendly_name if w else "", f.kind))
        actions = [a for a in actions if a.worker_sid not in seen]
    return actions, deletions


def repair_workers(engine: Engine, taskrouter, run_id: str, published, *, settings, max_changes: int,
                   strip_deactivated: bool = False, delete_orphans: bool = False) -> int:
    """Apply the plan; returns how many workers were changed."""
    actions, deletions = plan(published, settings=settings, strip_deactivated=strip_deactivated,
                              delete_orphans=delete_orphans)
    total = len(actions) + len(deletions)
    if total > max_changes:
        raise RepairRefused(f"{total} workers would change, more than --max-changes {max_changes}; "
                            f"nothing was written (review the drift report, then rerun with a higher --max-changes)")
    who = actor()
    changed = 0
    for action in actions:
        changed += _update(engine, taskrouter, run_id, action, who)
    for d in deletions:
        changed += _delete(engine, taskrouter, run_id, d, who)
    log.info("repair: %d of %d planned worker changes applied", changed, total)
    return changed


def _audit(engine: Engine, run_id: str, who: str, *, sid: str, name: str, action: str, before, after,
           outcome: str, detail: str | None = None) -> None:
    with engine.begin() as conn:
        findings_db.record_repair(conn, run_id=run_id, worker_sid=sid, friendly_name=name, action=action,
                            attributes_before=before, attributes_after=after, actor=who,
                            applied_at=utcnow(), outcome=outcome, detail=detail)


def _update(engine, taskrouter, run_id: str, action: RepairAction, who: str, *, attempts: int = 2) -> int:
    for attempt in range(attempts):
        try:
            worker, etag = taskrouter.fetch_worker(action.worker_sid)
        except NotFoundError:
            _audit(engine, run_id, who, sid=action.worker_sid, name=action.friendly_name, action=action.action,
                   before=None, after=None, outcome="skipped", detail="worker no longer exists")
            return 0
        before = worker.get("attributes")
        try:
            after = apply_plan_to_attributes(before or "{}", action)
        except ValueError as exc:
            _audit(engine, run_id, who, sid=action.worker_sid, name=action.friendly_name, action=action.action,
                   before=before, after=None, outcome="skipped", detail=f"attributes changed and no longer parse: {exc}")
            return 0
        if after == before:
            _audit(engine, run_id, who, sid=action.worker_sid, name=action.friendly_name, action=action.action,
                   before=before, after=after, outcome="skipped", detail="already in sync")
            return 0
        try:
            taskrouter.update_worker(action.worker_sid, attributes=after, if_match=etag)
        except ConflictError:
            if attempt + 1 < attempts:
                continue  # changed between our read and write: read again
            _audit(engine, run_id, who, sid=action.worker_sid, name=action.friendly_name, action=action.action,
                   before=before, after=after, outcome="failed", detail="worker kept changing (If-Match conflict)")
            return 0
        except AuthError:
            raise  # the key cannot write: stop, nothing else will succeed
        except ApiError as exc:
            _audit(engine, run_id, who, sid=action.worker_sid, name=action.friendly_name, action=action.action,
                   before=before, after=after, outcome="failed", detail=str(exc)[:500])
            return 0
        _audit(engine, run_id, who, sid=action.worker_sid, name=action.friendly_name, action=action.action,
               before=before, after=after, outcome="applied", detail="; ".join(action.reasons)[:500])
        return 1
    return 0


def _delete(engine, taskrouter, run_id: str, d: Deletion, who: str) -> int:
    try:
        worker, etag = taskrouter.fetch_worker(d.worker_sid)
    except NotFoundError:
        return 0
    try:
        taskrouter.delete_worker(d.worker_sid, if_match=etag)
    except AuthError:
        raise
    except ApiError as exc:
        _audit(engine, run_id, who, sid=d.worker_sid, name=d.friendly_name, action="delete_worker",
               before=worker.get("attributes"), after=None, outcome="failed", detail=str(exc)[:500])
        return 0
    _audit(engine, run_id, who, sid=d.worker_sid, name=d.friendly_name, action="delete_worker",
           before=worker.get("attributes"), after=None, outcome="applied", detail=d.reason)
    return 1
