"""Plan worker repairs and apply them to the attributes JSON text without touching anything else.

TaskRouter replaces the whole `Attributes` string on update, so a repair is read-modify-write.
Re-serializing the parsed object would reorder keys, change number formats and escapes in
skills, routing and channel settings that Flex and other tools own; `patch_attributes` instead
edits only the top-level members it must and keeps every other byte of the original text.

Decisions (the issue left them open):

* Only the fields with a finding are rewritten (no churn on values that only differ in
  whitespace, Unicode form or email case).
* `roles`: the valid Flex roles become exactly Okta's (sorted), followed by the worker's other
  roles (wfo.*, flex.*) kept verbatim and in their order; the result is a JSON array, as Flex
  writes it.
* An Okta value of None (no email, no image URL) removes the key: absent, null and empty are
  equal, so removing is the least surprising way to say "none".
* `strip_roles` (only with strip_deactivated): a deactivated user's worker loses its valid Flex
  roles and keeps the others.  Without a Flex role the user cannot sign in to Flex and Insights
  roles grant nothing (Insights needs supervisor or admin); roles outside the valid list are not
  this tool's to manage.  No action when the worker holds no valid role.
* Orphans, unparseable workers and workers of pending users get no action.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from json.decoder import scanstring

from okta_flex_sync.core.normalize import parse_attributes, split_roles
from okta_flex_sync.models.records import (
    KIND_RANK,
    Expected,
    Finding,
    Worker,
)

log = logging.getLogger(__name__)

UPDATE_ATTRIBUTES = "update_attributes"
STRIP_ROLES = "strip_roles"
# Finding kind -> the worker attribute a repair rewrites.
REPAIRABLE = {
    "roles_mismatch": "roles",
    "privilege_escalation": "roles",
    "full_name_mismatch": "full_name",
    "email_mismatch": "email",
    "image_url_mismatch": "image_url",
}
_WHITESPACE = " \t\n\r"
_DECODER = json.JSONDecoder()


class AttributesNotObject(ValueError):
    """The attributes text is not one JSON object, so it cannot be patched safely."""


@dataclass(frozen=True)
class RepairAction:
    """One worker's repair: set `updates`, drop `remove`.  Treat `updates` as read-only."""

    worker_sid: str
    friendly_name: str
    action: str  # UPDATE_ATTRIBUTES or STRIP_ROLES
    updates: dict
    reasons: tuple[str, ...]
    remove: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------- surgical JSON edit


@dataclass(frozen=True, slots=True)
class _Member:
    key: str
    start: int  # first byte of the key's opening quote
    value_start: int
    end: int  # one past the value's last byte


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _members(raw: str) -> tuple[list[_Member], int, int]:
    """Top-level members of a JSON object text, plus the positions of `{` and `}`."""
    open_at = _skip_ws(raw, 0)
    if not raw.startswith("{", open_at):
        raise AttributesNotObject("attributes are not a JSON object")
    members: list[_Member] = []
    pos = _skip_ws(raw, open_at + 1)
    try:
        if raw.startswith("}", pos):
            close_at = pos
        else:
            while True:
                if not raw.startswith('"', pos):
                    raise AttributesNotObject(f"expected a key at offset {pos}")
                key, pos_after_key = scanstring(raw, pos + 1)
                colon = _skip_ws(raw, pos_after_key)
                if not raw.startswith(":", colon):
                    raise AttributesNotObject(f"expected ':' at offset {colon}")
                value_start = _skip_ws(raw, colon + 1)
                _, value_end = _DECODER.raw_decode(raw, value_start)
                members.append(_Member(key, pos, value_start, value_end))
                pos = _skip_ws(raw, value_end)
                if raw.startswith("}", pos):
                    close_at = pos
                    break
                if not raw.startswith(",", pos):
                    raise AttributesNotObject(f"expected ',' or '}}' at offset {pos}")
                pos = _skip_ws(raw, pos + 1)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, AttributesNotObject):
            raise
        raise AttributesNotObject(f"attributes are not valid JSON ({str(exc)[:80]})") from None
    if _skip_ws(raw, close_at + 1) != len(raw):
        raise AttributesNotObject("unexpected text after the JSON object")
    return members, open_at, close_at


def patch_attributes(raw: str, updates: Mapping[str, object], remove: Iterable[str] = ()) -> str:
    """Set top-level `updates`, drop `remove`; every other byte of `raw` stays as it was.

    New values are `json.dumps(ensure_ascii=False)`.  Keys not yet present are appended before
    the closing brace, in the layout the object already uses.  A key repeated in `raw` is
    set (or removed) at every occurrence.  Raises AttributesNotObject (a ValueError) when `raw`
    is not a JSON object, and ValueError when a key is both updated and removed.
    """
    remove = frozenset(remove)
    both = remove & updates.keys()
    if both:
        raise ValueError(f"keys both updated and removed: {sorted(both)}")
    members, _, close_at = _members(raw)
    parts = [raw[: members[0].start] if members else raw[:close_at]]
    kept = 0
    previous = -1  # index of the last kept member
    for i, m in enumerate(members):
        if m.key in remove:
            continue
        if previous >= 0:  # the separator that followed the previous kept member
            parts.append(raw[members[previous].end: members[previous + 1].start])
        if m.key in updates:
            parts.append(raw[m.start: m.value_start])
            parts.append(json.dumps(updates[m.key], ensure_ascii=False))
        else:
            parts.append(raw[m.start: m.end])
        previous = i
        kept += 1

    present = {m.key for m in members}
    missing = [k for k in updates if k not in present]
    if missing:
        sep, colon = _layout(raw, members)
        for i, key in enumerate(missing):
            if kept or i:
                parts.append(sep)
            parts.append(json.dumps(key, ensure_ascii=False) + colon + json.dumps(updates[key], ensure_ascii=False))
    parts.append(raw[members[-1].end:] if members else raw[close_at:])
    return "".join(parts)


def _layout(raw: str, members: list[_Member]) -> tuple[str, str]:
    """The member separator and key/value colon the object already uses (compact by default)."""
    if not members:
        return ",", ":"
    first = members[0]
    key_end = scanstring(raw, first.start + 1)[1]
    colon = raw[key_end: first.value_start]
    sep = raw[first.end: members[1].start] if len(members) > 1 else ","
    return sep, colon


# --------------------------------------------------------------------------- planning


def _is_valid_role(value: object, valid_roles: frozenset[str]) -> bool:
    return isinstance(value, str) and value.strip().lower() in valid_roles


def _other_roles(attributes: dict, valid_roles: frozenset[str]) -> list:
    """The worker's roles outside the valid list, verbatim and in order (wfo.*, flex.*)."""
    roles = attributes.get("roles")
    if isinstance(roles, str):
        roles = [p.strip() for p in roles.split(",") if p.strip()]
    if not isinstance(roles, list):
        return []
    return [r for r in roles if r is not None and not _is_valid_role(r, valid_roles)]


def _holds_valid_role(attributes: dict, valid_roles: frozenset[str]) -> bool:
    roles = attributes.get("roles")
    if isinstance(roles, str):
        roles = roles.split(",")
    return isinstance(roles, list) and any(_is_valid_role(r, valid_roles) for r in roles)


def _update_action(worker: Worker, attributes: dict, exp: Expected, kinds: set[str],
                   valid_roles: frozenset[str]) -> RepairAction | None:
    fields = {REPAIRABLE[k] for k in kinds if k in REPAIRABLE}
    if not fields:
        return None
    updates: dict[str, object] = {}
    remove: list[str] = []
    for name in sorted(fields):
        if name == "roles":
            updates["roles"] = sorted(split_roles(exp.roles)) + _other_roles(attributes, valid_roles)
            continue
        value = getattr(exp, name)
        if value is None:
            if name in attributes:
                remove.append(name)
        else:
            updates[name] = value
    if not updates and not remove:
        return None
    return RepairAction(
        worker_sid=worker.worker_sid,
        friendly_name=worker.friendly_name,
        action=UPDATE_ATTRIBUTES,
        updates=updates,
        reasons=_reasons(kinds & REPAIRABLE.keys()),
        remove=tuple(remove),
    )


def _strip_action(worker: Worker, attributes: dict, valid_roles: frozenset[str]) -> RepairAction | None:
    if not _holds_valid_role(attributes, valid_roles):
        return None
    return RepairAction(
        worker_sid=worker.worker_sid,
        friendly_name=worker.friendly_name,
        action=STRIP_ROLES,
        updates={"roles": _other_roles(attributes, valid_roles)},
        reasons=("deactivated_user_has_worker",),
    )


def _reasons(kinds: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(kinds, key=lambda k: KIND_RANK.get(k, len(KIND_RANK))))


def plan_repairs(
    findings: list[Finding],
    workers: Mapping[str, Worker],
    expected: Mapping[str, Expected],
    *,
    strip_deactivated: bool = False,
    valid_roles: frozenset[str],
) -> list[RepairAction]:
    """At most one action per worker, sorted by worker sid.

    `workers` and `expected` are keyed by worker sid (`expected` from
    `reconcile.expected_by_worker`).  Findings for unknown or unparseable workers are skipped.
    """
    kinds_by_sid: dict[str, set[str]] = {}
    for f in findings:
        if f.worker_sid is not None:
            kinds_by_sid.setdefault(f.worker_sid, set()).add(f.kind)
    actions = []
    for sid in sorted(kinds_by_sid):
        kinds = kinds_by_sid[sid]
        worker = workers.get(sid)
        if worker is None:
            continue
        attributes, error = parse_attributes(worker.attributes_raw)
        if attributes is None:
            log.info("worker %s: attributes cannot be patched (%s)", sid, error)
            continue
        if "deactivated_user_has_worker" in kinds:
            action = _strip_action(worker, attributes, valid_roles) if strip_deactivated else None
        elif sid in expected:
            action = _update_action(worker, attributes, expected[sid], kinds, valid_roles)
        else:
            action = None
        if action is not None:
            actions.append(action)
    return actions


def apply_plan_to_attributes(raw: str, action: RepairAction) -> str:
    """The worker's new Attributes text for `action`."""
    return patch_attributes(raw, action.updates, action.remove)
