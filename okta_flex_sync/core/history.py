"""Role history (SCD type 2) as pure functions: what each tracked user should look like now,
which rows to close and open, and how to splice a rebuilt stretch into existing rows.
No database code here; `okta_flex_sync.storage.history` applies the result.

Tracked users are those assigned to the Flex app now, plus everyone with a current history row
(so an unassigned or deleted user gets an explicit closing row instead of a silent gap).

A user's history is a list of rows ordered by `valid_from`; each row ends where the next one
begins and the last one ends at `VALID_TO_CURRENT`.  Equivalently it is a list of *points*
`(moment, state)`: the nightly run appends one point per change, and backfill (`splice`)
replaces the points of one interval with better-timed ones.  Two consecutive rows never hold
the same tracked values (`HistoryState.key`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from okta_flex_sync.core.reconcile import UNASSIGNED_STATUSES
from okta_flex_sync.models.records import VALID_TO_CURRENT, AppAssignment, OktaUser

# An app user counts as assigned unless its status says it was removed: the same rule as
# reconciliation (`okta_flex_sync.core.reconcile.UNASSIGNED_STATUSES`).
DELETED = "DELETED"
# The tracked values, in the order `changed_fields` reports them.
TRACKED_FIELDS = ("login", "app_username", "status", "assigned", "roles", "full_name", "email")

Point = tuple[datetime, "HistoryState"]


@dataclass(frozen=True, slots=True)
class HistoryState:
    """The tracked values of one user at one time."""

    okta_user_id: str
    login: str
    app_username: str | None
    status: str
    assigned: bool
    roles: str
    full_name: str
    email: str | None

    def key(self) -> tuple:
        return (self.login, self.app_username, self.status, self.assigned, self.roles, self.full_name,
                (self.email or "").casefold())


@dataclass(frozen=True, slots=True)
class HistoryChange:
    """Close the user's current row (if any) at `effective_at` and open `state` from then on."""

    state: HistoryState
    effective_at: datetime
    closes_current: bool


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One stored period. `id` is the database id; None (or negative) for a row not yet written."""

    state: HistoryState
    valid_from: datetime
    valid_to: datetime
    run_id: str
    source: str = "nightly"
    id: int | None = None


@dataclass(frozen=True, slots=True)
class RowEdits:
    """What turns one user's stored rows into the spliced ones (see `row_edits`)."""

    delete: tuple[int, ...] = ()
    retime: tuple[tuple[int, datetime], ...] = ()  # (id, new valid_to)
    insert: tuple[HistoryRow, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.delete or self.retime or self.insert)


def is_assigned(assignment: AppAssignment | None) -> bool:
    return assignment is not None and (assignment.status or "ACTIVE").upper() not in UNASSIGNED_STATUSES


def desired_state(user: OktaUser | None, assignment: AppAssignment | None, *, role_source: str,
                  previous: HistoryState | None) -> HistoryState | None:
    """What history should say about a user now; None when the user is not tracked."""
    if user is not None and is_assigned(assignment):
        roles = assignment.roles if role_source == "app_user" else user.roles
        return HistoryState(user.okta_user_id, user.login, assignment.app_username, user.status, True,
                            roles, user.full_name, user.email)
    if previous is None:
        return None
    if user is None:  # deleted from Okta
        return replace(previous, status=DELETED, assigned=False, roles="")
    return HistoryState(user.okta_user_id, user.login, previous.app_username, user.status, False, "",
                        user.full_name, user.email) if previous.assigned else previous


def effective_time(candidates: Iterable[datetime | None], *, after: datetime | None, observed_at: datetime) -> datetime:
    """When a change took effect: the latest source timestamp that lies after the previous
    period began and not after the observation; the observation time otherwise."""
    best = None
    for ts in candidates:
        if ts is None or ts > observed_at or (after is not None and ts <= after):
            continue
        if best is None or ts > best:
            best = ts
    return best or observed_at


def diff_history(current: Mapping[str, tuple[HistoryState, datetime]],
                 users: Mapping[str, OktaUser], assignments: Mapping[str, AppAssignment], *,
                 role_source: str, observed_at: datetime, deleted_ids: Iterable[str] = (),
                 observed_after: datetime | None = None) -> list[HistoryChange]:
    """Changes that bring history from `current` (user id -> (state, valid_from)) to now.

    `users` must hold every user that is assigned or has a current row, except users known to be
    deleted (listed in `deleted_ids`). A user with a current row who is absent from `users` and not
    in `deleted_ids` is left alone (an incremental run did not see them, which is not a change).
    `observed_after` is when the previous run looked: a change it did not see cannot have happened
    before then, so a stale `lastUpdated` never dates a change into a period that run confirmed.
    """
    deleted = set(deleted_ids)
    changes: list[HistoryChange] = []
    for uid in sorted(set(assignments) | set(current)):
        prev = current.get(uid)
        user = users.get(uid)
        if user is None and uid not in deleted and uid not in assignments:
            continue
        prev_state, prev_from = prev if prev else (None, None)
        want = desired_state(user, assignments.get(uid), role_source=role_source, previous=prev_state)
        if want is None or (prev_state is not None and want.key() == prev_state.key()):
            continue
        cands = [user.last_updated if user else None]
        a = assignments.get(uid)
        cands.append(a.last_updated if a else None)
        floor = max((t for t in (prev_from, observed_after) if t is not None), default=None)
        at = effective_time(cands, after=floor, observed_at=observed_at)
        changes.append(HistoryChange(want, at, closes_current=prev_state is not None))
    return changes


# --- points and rows (used by backfill) ------------------------------------------------------

def _value(state: HistoryState | None, field: str):
    """A field as history compares it; a missing state has no values at all."""
    if state is None:
        return None
    value = getattr(state, field)
    return (value or "").casefold() if field == "email" else value


def same_state(a: HistoryState | None, b: HistoryState | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.key() == b.key())


def changed_fields(prev: HistoryState | None, new: HistoryState | None) -> tuple[str, ...]:
    return tuple(f for f in TRACKED_FIELDS if _value(prev, f) != _value(new, f))


def stage_change(prev: HistoryState | None, new: HistoryState,
                 times: Mapping[str, datetime]) -> list[Point]:
    """Points that move `prev` to `new`, each changed field switching at `times[field]`.

    The states in between mix old and new values field by field (a profile event names the
    attributes it changed, not their values, so the values come from the snapshots around it).
    Without a previous state there is nothing to mix: one point, at the earliest time given.
    """
    fields = changed_fields(prev, new)
    if not fields:
        return []
    if prev is None:
        return [(min(times[f] for f in fields), new)]
    moments = sorted({times[f] for f in fields})
    points: list[Point] = []
    state = prev
    for i, moment in enumerate(moments):
        state = new if i == len(moments) - 1 else replace(
            state, **{f: getattr(new, f) for f in fields if times[f] == moment})
        points.append((moment, state))
    return points


def last_set_times(prev: HistoryState | None, points: Sequence[Point], new: HistoryState) -> dict[str, datetime]:
    """For each field, when `points` (in order, starting from `prev`) last set it to its value in
    `new` and kept it there: the timing an earlier run already chose."""
    out: dict[str, datetime] = {}
    before = prev
    for moment, state in points:
        for f in TRACKED_FIELDS:
            now_value = _value(state, f)
            if now_value == _value(before, f):
                continue
            if now_value == _value(new, f):
                out[f] = moment
            else:
                out.pop(f, None)
        before = state
    return out


def state_at(rows: Sequence[HistoryRow], moment: datetime) -> HistoryState | None:
    for r in rows:
        if r.valid_from <= moment < r.valid_to:
            return r.state
    return None


def in_interval(moment: datetime, start: datetime | None, end: datetime) -> bool:
    """`(start, end]`; no start means from the beginning of time."""
    return (start is None or moment > start) and moment <= end


def splice(rows: Sequence[HistoryRow], start: datetime | None, end: datetime, points: Sequence[Point], *,
           run_id: str, source: str = "backfill", new_id: Callable[[], int | None] = lambda: None) -> list[HistoryRow]:
    """One user's rows with every row starting in `(start, end]` replaced by `points`.

    A point that matches a stored row (same start, same values) keeps that row, so splicing the
    same points twice changes nothing.  The result is contiguous, ends in one current row, and
    drops a row that repeats the values of the one before it.
    """
    last = start
    for moment, _state in points:
        if not in_interval(moment, start, end) or (last is not None and moment <= last):
            raise ValueError(f"points must increase strictly within ({start}, {end}]")
        last = moment
    existing = {(r.valid_from, r.state.key()): r for r in rows if in_interval(r.valid_from, start, end)}
    kept = [r for r in rows if not in_interval(r.valid_from, start, end)]
    added = [existing.get((moment, state.key())) or HistoryRow(state, moment, VALID_TO_CURRENT, run_id, source,
                                                                  new_id())
             for moment, state in points]
    ordered: list[HistoryRow] = []
    for r in sorted(kept + added, key=lambda r: r.valid_from):
        if ordered and ordered[-1].state.key() == r.state.key():
            continue
        ordered.append(r)
    out = []
    for i, r in enumerate(ordered):
        valid_to = ordered[i + 1].valid_from if i + 1 < len(ordered) else VALID_TO_CURRENT
        out.append(r if r.valid_to == valid_to else replace(r, valid_to=valid_to))
    return out


def row_edits(old: Sequence[HistoryRow], new: Sequence[HistoryRow]) -> RowEdits:
    """Deletes, new end times and inserts that turn `old` into `new` (rows matched by id)."""
    old_by_id = {r.id: r for r in old if r.id is not None}
    new_ids = {r.id for r in new if r.id in old_by_id}
    return RowEdits(
        delete=tuple(r.id for r in old if r.id is not None and r.id not in new_ids),
        retime=tuple((r.id, r.valid_to) for r in new if r.id in old_by_id and old_by_id[r.id].valid_to != r.valid_to),
        insert=tuple(r for r in new if r.id not in old_by_id),
    )
