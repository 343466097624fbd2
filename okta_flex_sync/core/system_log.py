"""Okta System Log events: the filter the pipeline asks for, and the parts of an event that can date a change (pure)."""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from okta_flex_sync.core.normalize import parse_timestamp

LOG_RETENTION = timedelta(days=90)  # Okta keeps System Log events this long (API_NOTES 1.5)


PROFILE_EVENT = "user.account.update_profile"


_PREFIXES = ("application.user_membership.", "group.user_membership.", "user.lifecycle.")


LOG_FILTER = ('eventType sw "application.user_membership" or eventType sw "group.user_membership" '
              f'or eventType sw "user.lifecycle" or eventType eq "{PROFILE_EVENT}"')


# Profile attributes whose change moves a tracked field ("userType" only when roles come from it).
PROFILE_ATTRIBUTES = {"login": "login", "firstName": "full_name", "lastName": "full_name", "email": "email",
                      "userType": "roles"}


MAX_CHANGED_ATTRIBUTES = 200


@dataclass(frozen=True, slots=True)
class LogEvent:
    """The parts of a System Log event that can date a change."""

    uuid: str
    published: datetime
    event_type: str
    user_id: str
    app_id: str | None = None
    outcome: str | None = None
    changed: frozenset[str] | None = None  # attributes an update_profile event names; None: not said


def is_relevant_type(event_type: str) -> bool:
    return event_type == PROFILE_EVENT or event_type.startswith(_PREFIXES)


def _ident(value: object, limit: int) -> str | None:
    """An id as stored: printable text of bounded length (no NUL, no lone surrogate), else None."""
    if not isinstance(value, str) or not 0 < len(value) <= limit or not value.isprintable():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _target_id(targets: Sequence[dict], kind: str) -> str | None:
    """Targets are found by type, never by position (their order varies)."""
    for t in targets:
        if t.get("type") == kind and (found := _ident(t.get("id"), 64)):
            return found
    return None


def _names(value: object) -> set[str]:
    if isinstance(value, str):
        parts = value.replace(";", ",").replace(" ", ",").split(",")
    elif isinstance(value, list):
        parts = [v for v in value if isinstance(v, str)]
    else:
        return set()
    return {p.strip().removeprefix("profile.") for p in parts[:MAX_CHANGED_ATTRIBUTES] if 0 < len(p.strip()) <= 100}


def changed_attributes(raw: dict, targets: Sequence[dict]) -> frozenset[str] | None:
    """Attribute names an update_profile event says it changed, or None when it does not say.

    Okta documents only "the list of attributes that were updated" (names, not values); the
    debugData key is unconfirmed, so `changedAttributes` there and the keys of a User target's
    `changeDetails` are both read.
    """
    found: set[str] = set()
    said = False
    debug = raw.get("debugContext")
    data = debug.get("debugData") if isinstance(debug, dict) else None
    if isinstance(data, dict) and "changedAttributes" in data:
        said = True
        found |= _names(data["changedAttributes"])
    for t in targets:
        details = t.get("changeDetails")
        if t.get("type") == "User" and isinstance(details, dict):
            for side in ("from", "to"):
                if isinstance(details.get(side), dict):
                    said = True
                    found |= {k.removeprefix("profile.") for k in list(details[side])[:MAX_CHANGED_ATTRIBUTES]
                              if isinstance(k, str) and 0 < len(k) <= 100}
    return frozenset(found) if said and found else None


def parse_log_event(raw: object) -> LogEvent | None:
    """A System Log event backfill can use, or None (irrelevant type, failed, malformed, no user)."""
    if not isinstance(raw, dict):
        return None
    uuid, event_type = _ident(raw.get("uuid"), 64), _ident(raw.get("eventType"), 120)
    if uuid is None or event_type is None or not is_relevant_type(event_type):
        return None
    published = parse_timestamp(raw.get("published"))
    outcome = raw.get("outcome")
    result = outcome.get("result") if isinstance(outcome, dict) else None
    result = result.upper()[:40] if isinstance(result, str) else None
    if published is None or result not in (None, "SUCCESS"):
        return None
    targets = [t for t in raw.get("target") or () if isinstance(t, dict)] if isinstance(raw.get("target"), list) else []
    user_id = _target_id(targets, "User")
    actor = raw.get("actor")
    if user_id is None and event_type == PROFILE_EVENT and isinstance(actor, dict):
        user_id = _target_id([actor], "User")  # a self-service profile edit
    if user_id is None:
        return None
    return LogEvent(uuid, published, event_type, user_id, _target_id(targets, "AppInstance"), result,
                    changed_attributes(raw, targets) if event_type == PROFILE_EVENT else None)


def event_row(event: LogEvent, run_id: str | None) -> dict:
    """The `okta_log_events` row; the payload keeps only what backfill reads back."""
    payload = {"changedAttributes": sorted(event.changed) if event.changed is not None else None}
    return {"uuid": event.uuid, "published": event.published, "event_type": event.event_type,
            "target_user_id": event.user_id, "target_app_id": event.app_id, "outcome": event.outcome,
            "payload": json.dumps(payload), "run_id": run_id}


def event_from_row(row: Mapping) -> LogEvent:
    try:
        names = json.loads(row["payload"] or "{}").get("changedAttributes")
    except (ValueError, AttributeError):
        names = None
    changed = frozenset(n for n in names if isinstance(n, str)) if isinstance(names, list) else None
    return LogEvent(row["uuid"], row["published"], row["event_type"], row["target_user_id"], row["target_app_id"],
                    row["outcome"], changed)

