"""Role history (SCD type 2) as pure functions: what each tracked user should look like now,
and which rows to close and open.  No database code here; `tasks.store` applies the result.

Tracked users are those assigned to the Flex app now, plus everyone with a current history row
(so an unassigned or deleted user gets an explicit closing row instead of a silent gap).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from models.records import AppAssignment, OktaUser

# App-user statuses that mean "assigned" (the others are leftovers of a removed assignment).
ASSIGNED_APP_STATUSES = frozenset({"ACTIVE", "PROVISIONED", "STAGED", "IMPLICIT", "APPROVED", "MATCHED",
                                   "PENDING", "IMPORTED", "SUSPENDED", None})
DELETED = "DELETED"


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


def is_assigned(assignment: AppAssignment | None) -> bool:
    return assignment is not None and (assignment.status or "ACTIVE").upper() in ASSIGNED_APP_STATUSES


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
                 role_source: str, observed_at: datetime, deleted_ids: Iterable[str] = ()) -> list[HistoryChange]:
    """Changes that bring history from `current` (user id -> (state, valid_from)) to now.

    `users` must hold every user that is assigned or has a current row, except users known to be
    deleted (listed in `deleted_ids`). A user with a current row who is absent from `users` and not
    in `deleted_ids` is left alone (an incremental run did not see them, which is not a change).
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
        at = effective_time(cands, after=prev_from, observed_at=observed_at)
        changes.append(HistoryChange(want, at, closes_current=prev_state is not None))
    return changes
