"""The watch's decisions, as pure functions: which System Log window a poll reads, which events
are new, which users they name, what to re-read for them, and when each change took effect.

No I/O here (`okta_flex_sync.jobs.watch` does the reading and writing).  Events are duck-typed:
anything with `uuid`, `published`, `event_type`, `user_id` and `app_id` (the System Log parser's
`LogEvent`), plus `group_id` where the job found a `UserGroup` target.

Decisions:

* **Window.** A poll reads `[cursor - lag, now)`: a bounded request (ordered by `published`,
  the last page has no next link), re-reading the last `lag` because the System Log is
  eventually consistent (an event can become visible after a later one).  Events read twice are
  dropped by `uuid`.  The first poll (no cursor) starts at `now - lag`: what happened before is
  the nightly run's.
* **Gap.** The System Log keeps 90 days.  A cursor older than that would skip events silently,
  so the poll refuses (`SystemLogGap`) unless a nightly run succeeded after the cursor: a
  nightly run is complete by itself, so the watch resumes from that run's start.
* **Who.** Lifecycle events (suspend, deactivate, unsuspend, activate, ...), profile updates,
  Flex app membership add/remove/username change, and group membership add/remove for groups
  assigned to the Flex app name the users to re-read; nothing else does.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

STREAM = "watch:system-log"  # the cursor's row in `watermarks`
LAG_WINDOW = timedelta(minutes=5)
LOG_RETENTION = timedelta(days=90)
DEFAULT_INTERVAL_SECONDS = 300
WATCH_FLOW = "watch"

APP_MEMBERSHIP = "application.user_membership."
GROUP_MEMBERSHIP = "group.user_membership."
LIFECYCLE = "user.lifecycle."
PROFILE_EVENT = "user.account.update_profile"
# Profile attributes whose change moves a history field (userType only with ROLE_SOURCE=user_type).
PROFILE_FIELDS = {"login": "login", "firstName": "full_name", "lastName": "full_name", "email": "email",
                  "userType": "roles"}
HIGH_KINDS = frozenset({"privilege_escalation", "deactivated_user_has_worker"})


class SystemLogGap(RuntimeError):
    """The cursor lies beyond the System Log's retention: events in between are lost."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A System Log event as the watch uses it (the parser's `LogEvent` plus its group)."""

    uuid: str
    published: datetime
    event_type: str
    user_id: str
    app_id: str | None = None
    changed: frozenset[str] | None = None  # attributes an update_profile event names; None: not said
    group_id: str | None = None


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime
    resumed_from: str | None = None  # why `since` is not `cursor - lag` (first poll, after a nightly run)


def plan_window(cursor: datetime | None, *, now: datetime, lag: timedelta = LAG_WINDOW,
                last_nightly_start: datetime | None = None,
                retention: timedelta = LOG_RETENTION) -> Window:
    """The `[since, until)` a poll reads; raises `SystemLogGap` when events would be skipped."""
    oldest = now - retention
    if cursor is None:
        return Window(now - lag, now, "first poll")
    since = cursor - lag
    if since >= oldest:
        return Window(since, now)
    if last_nightly_start is not None and last_nightly_start > cursor and last_nightly_start - lag >= oldest:
        return Window(last_nightly_start - lag, now, "nightly run")
    raise SystemLogGap(
        f"the watch cursor ({cursor:%Y-%m-%d %H:%M:%S}Z) is older than the System Log's "
        f"{retention.days}-day retention, so events since then are gone; run a full nightly sync "
        f"(`okta-flex-sync run --full`), then start the watch again")


def fresh_events(events: Iterable, seen: Iterable[str]) -> list:
    """Events whose uuid is neither in `seen` nor earlier in `events`, oldest first."""
    known = set(seen)
    out = []
    for e in events:
        if e.uuid in known:
            continue
        known.add(e.uuid)
        out.append(e)
    out.sort(key=lambda e: (e.published, e.uuid))
    return out


def is_group_event(event) -> bool:
    return event.event_type.startswith(GROUP_MEMBERSHIP)


def needs_app_groups(events: Iterable) -> bool:
    """Whether the Flex app's group list must be read to judge these events (only then: an idle
    poll or one without group changes costs no request for it)."""
    return any(is_group_event(e) for e in events)


def names_user(event, *, app_id: str, flex_groups: frozenset[str] = frozenset()) -> bool:
    """Whether this event can change what Flex should hold for its user."""
    kind, action = event.event_type, event.event_type.rsplit(".", 1)[-1]
    if kind.startswith(LIFECYCLE) or kind == PROFILE_EVENT:
        return True
    if kind.startswith(APP_MEMBERSHIP):
        return event.app_id == app_id and action in ("add", "remove", "change_username")
    if kind.startswith(GROUP_MEMBERSHIP):
        return action in ("add", "remove") and getattr(event, "group_id", None) in flex_groups
    return False


def is_user_id(value: object) -> bool:
    """Whether `value` looks like an Okta user id (letters and digits, e.g. `00u1a2b3c4D5e6F7g8h9`):
    anything else in a log event is hostile or broken and is never put into a request path."""
    return isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() and value.isalnum()


def users_to_reread(events: Iterable, *, app_id: str,
                    flex_groups: frozenset[str] = frozenset()) -> dict[str, list]:
    """user id -> that user's relevant events (oldest first), for exactly the users they name."""
    out: dict[str, list] = {}
    for e in sorted(events, key=lambda e: (e.published, e.uuid)):
        if is_user_id(e.user_id) and names_user(e, app_id=app_id, flex_groups=flex_groups):
            out.setdefault(e.user_id, []).append(e)
    return out


def worker_names(*names: str | None) -> list[str]:
    """The friendly names to look workers up by (TaskRouter compares them case-insensitively):
    the current application username, the one history last knew (an unassigned or renamed user's
    worker still carries it), each once."""
    out: list[str] = []
    seen: set[str] = set()
    for n in names:
        if n and n.strip() and n.casefold() not in seen:
            seen.add(n.casefold())
            out.append(n)
    return out


def explained_fields(event, *, app_id: str, role_source: str,
                     flex_groups: frozenset[str] = frozenset()) -> frozenset[str]:
    """History fields this event may have changed."""
    kind, action = event.event_type, event.event_type.rsplit(".", 1)[-1]
    app_roles = {"roles"} if role_source == "app_user" else set()
    if kind.startswith(LIFECYCLE):
        return frozenset({"status"})
    if kind == PROFILE_EVENT:
        changed = getattr(event, "changed", None)
        names = PROFILE_FIELDS if changed is None else changed
        fields = {PROFILE_FIELDS[n] for n in names if n in PROFILE_FIELDS}
        if role_source != "user_type":
            fields.discard("roles")
        return frozenset(fields)
    if not names_user(event, app_id=app_id, flex_groups=flex_groups):
        return frozenset()
    if action == "change_username":
        return frozenset({"app_username"})
    return frozenset({"assigned", "app_username", *app_roles})


def change_times(changed: Sequence[str], events: Sequence, *, after: datetime | None, now: datetime,
                 app_id: str, role_source: str, flex_groups: frozenset[str] = frozenset()) -> dict[str, datetime]:
    """When each changed field took its new value: the `published` time of the latest event in
    `(after, now]` that explains it.  A field follows the assignment when that came or went
    (roles and application username go with it), else the status change (Okta drops a
    deactivated user's assignments); a field no event explains changed `now` (when the poll saw
    it)."""
    usable = [e for e in events if (after is None or e.published > after) and e.published <= now]

    def latest(field: str) -> datetime | None:
        hits = [e.published for e in usable
                if field in explained_fields(e, app_id=app_id, role_source=role_source, flex_groups=flex_groups)]
        return max(hits) if hits else None

    times: dict[str, datetime] = {}
    assigned_at = latest("assigned") if "assigned" in changed else None
    status_at = latest("status") if "status" in changed else None
    for field in changed:
        if field == "assigned":
            at = assigned_at or status_at
        elif field in ("roles", "app_username") and "assigned" in changed:
            at = assigned_at or status_at or latest(field)
        else:
            at = latest(field)
        times[field] = at or now
    return times


def high_findings(findings: Iterable) -> list:
    """The findings `--apply-high` acts on at once (everything else waits for the nightly run)."""
    return [f for f in findings if f.kind in HIGH_KINDS]


def findings_about(findings: Iterable, user_ids: Iterable[str], worker_sids: Iterable[str]) -> list:
    """Findings limited to the users the poll looked at and the workers it read for them."""
    users, sids = set(user_ids), set(worker_sids)
    return [f for f in findings if (f.okta_user_id in users) or (f.worker_sid is not None and f.worker_sid in sids)]


def group_target_id(raw: object) -> str | None:
    """The `UserGroup` target's id of a raw System Log event (targets are found by type)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("target"), list):
        return None
    for t in raw["target"]:
        if isinstance(t, Mapping) and t.get("type") == "UserGroup":
            gid = t.get("id")
            if isinstance(gid, str) and 0 < len(gid) <= 64 and gid.isprintable():
                return gid
    return None
