"""The simulated org: lazy Okta users, materialized Flex assignments and workers, planted drift.

Users are a pure function of (seed, index): `00u` ids encode the index so they sort like it,
and nothing is stored for a user until a mutation helper touches it.  Assignments, workers and
System Log history exist only for the (at most ~15,000) assigned users, so memory does not
grow with the user count.  Every base user's `lastUpdated` is before `created_ms`, the org's
creation instant (unassigned ones 91 days before it), which lets `lastUpdated gt W` skip
straight to the few users that can match.
"""
from __future__ import annotations

import bisect
import copy
import json
import logging
import random
import threading
import time
import unicodedata
from dataclasses import dataclass, field

from simulator.ids import (
    ID_SLOT, MAX_USERS, Draw, b62, h64, id_offset, iso_ms, key_of, mix64, okta_id, okta_id_index,
    org_suffix,
)
from simulator.logs import RETENTION_MS, LogRecord, LogStore
from simulator.people import (
    ALL_USER_STATUSES, CHANNELS, DEPARTMENTS, FIRST_NAMES, HOSTILE_PATCHES, LAST_NAMES,
    SIGNED_IN_STATUSES, SKILLS, TITLES, USER_STATUSES, USER_TYPES, WFO_ROLES, ascii_slug,
    contact_identity, sso_full_name, sso_roles, swap_case_once, weighted_table,
)
from simulator.wire import dumps
from simulator.workspace import Workspace

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000
DOMAIN = "example.com"
ALT_DOMAIN = "corp.example.com"
OLD_DOMAIN = "oldcorp.example.net"
ABSENT = object()

_STATUS_TABLE, _STATUS_N = weighted_table(USER_STATUSES)
_USER_TYPE_TABLE, _USER_TYPE_N = weighted_table(USER_TYPES)
_SLUGS = {name: ascii_slug(name) for name in FIRST_NAMES + LAST_NAMES}
_NF, _NL = len(FIRST_NAMES), len(LAST_NAMES)
_NFD = {name: unicodedata.normalize("NFD", name) for name in FIRST_NAMES + LAST_NAMES}
_CHANGED_SETS = ("userType", "lastName,displayName", "title", "department", "firstName,displayName",
                 "mobilePhone", "userType,title")

# Planted kinds and what their lists hold ("worker" sids or "user" ids).
PLANTED_KINDS = {
    "hostile": "user", "custom_app_username": "user", "group_scope": "user",
    "invalid_user_type": "user", "missing_worker_staged": "user", "missing_worker_active": "user",
    "suspended_with_worker": "worker", "deprovisioned_with_worker": "worker",
    "unassigned_with_worker": "worker", "orphan_worker": "worker",
    "privilege_escalation": "worker", "roles_missing": "worker", "stale_name": "worker",
    "changed_email": "worker", "email_case_only": "worker", "name_format_only": "worker",
    "image_url_changed": "worker", "wfo_roles": "worker", "unparseable_attributes": "worker",
    "friendly_name_case": "worker", "null_attributes": "worker",
}
# Kinds that are differences a correct pipeline must NOT report as drift.
NOT_DRIFT = frozenset({"email_case_only", "name_format_only", "friendly_name_case", "null_attributes",
                       "wfo_roles"})
_UNPARSEABLE = ("{not json", "[]", '"str"', "null")


class UnknownUser(KeyError):
    """No such (live) user in the simulated org."""


@dataclass
class _History:
    created_ms: int
    activated_ms: int | None
    status_changed_ms: int | None
    last_login_ms: int | None
    last_updated_ms: int
    profile_update_ms: int | None
    changed_attributes: str | None


@dataclass(slots=True)
class _Base:
    uid: str
    status: str
    first: object
    last: object
    login: str
    email: str
    user_type: object
    image: str | None
    department: str
    title: str
    hist: _History
    patch: dict | None


@dataclass
class Assignment:
    """One Flex app assignment (an AppUser)."""

    index: int
    user_id: str
    app_username: str
    scope: str
    status: str
    created_ms: int
    last_updated_ms: int
    status_changed_ms: int
    roles: object = ABSENT  # app-user profile `roles`; ABSENT omits the key
    group_id: str | None = None


@dataclass
class _Slot:
    """Working state for one assigned user while the org is built."""

    index: int
    user: dict
    hist: _History
    assignment: Assignment
    roles: list[str]
    worker: dict | None = None  # attributes dict; None = no worker
    friendly_name: str = ""
    raw: str | None = None  # raw attribute string overriding `worker`
    date_updated_ms: int = 0
    tags: list[str] = field(default_factory=list)


def _scale(x: int, span: int) -> int:
    """Map the low 32 bits of x uniformly onto [0, span)."""
    return ((x & 0xFFFFFFFF) * span) >> 32


_enc = json.encoder.encode_basestring  # C-accelerated, same escaping as json.dumps(ensure_ascii=False)


def _q(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


class Org:
    """In-memory org state; all public methods are thread-safe."""

    def __init__(self, config, url: str, created_ms: int | None = None) -> None:
        if config.users > MAX_USERS:
            raise ValueError(f"users must be at most {MAX_USERS}")
        self.config = config
        self.url = url.rstrip("/")
        self._users_url = f"{self.url}/api/v1/users/"
        self.seed = config.seed
        self.users = config.users
        self.created_ms = created_ms if created_ms is not None else (int(time.time()) * 1000)
        self.created_iso = iso_ms(self.created_ms)
        # Every unassigned base user was last updated before this instant (see _timeline).
        self.quiet_before_iso = iso_ms(self.created_ms - 91 * DAY_MS)
        self._assigned_updates: list[tuple[str, int]] = []
        seed = config.seed
        self._k_user = key_of("user", seed)
        self._k_status = key_of("status", seed)
        self._k_assign = key_of("assignment", seed)
        self._k_worker = key_of("worker", seed)
        self._suffix = org_suffix(seed)
        self._offset = id_offset(seed)
        self.app_id = okta_id("0oa", key_of("app", seed), 4242, self._suffix)
        self.user_type_id = okta_id("oty", key_of("type", seed), 7777, self._suffix)
        self.admin_id = okta_id("00u", key_of("admin", seed), 999, self._suffix)
        self.group_id = okta_id("00g", key_of("group", seed), 5151, self._suffix)
        self.workspace = Workspace(seed, config.null_attributes_fraction)
        self.activities = self.workspace.activities

        self._lock = threading.RLock()
        self._patches: dict[int, dict] = {}
        self._overrides: dict[int, dict] = {}
        self._deleted: set[int] = set()
        self._login_overrides: dict[str, int] = {}
        self._assignments: dict[int, Assignment] = {}
        self._assigned_sorted: list[int] = []
        self.log = LogStore()
        self.planted: dict[str, list[str]] = {kind: [] for kind in PLANTED_KINDS}
        self._initial_assigned: frozenset[int] = frozenset()
        self._build()

    # ------------------------------------------------------------------ identity helpers
    def user_id(self, index: int) -> str:
        """The Okta id of user `index` (whether or not it still exists)."""
        x = mix64(h64(self._k_status, index) ^ 0x2545F491)
        return f"00u{b62(self._offset + index * ID_SLOT + x % ID_SLOT, 7)}{b62(x >> 20, 7)}{self._suffix}"

    def index_of(self, user_id: str) -> int | None:
        """The index behind a user id, or None when the id is not one of this org's users."""
        i = okta_id_index(user_id, self._offset) if isinstance(user_id, str) and user_id.startswith("00u") else None
        if i is None or i >= self.users or self.user_id(i) != user_id:
            return None
        return i

    def find(self, id_or_login: str) -> int | None:
        """Index of a live user by id or login (login match is case-insensitive)."""
        i = self.index_of(id_or_login)
        if i is None:
            i = self._index_of_login(id_or_login)
        if i is None or i in self._deleted:
            return None
        return i

    def _index_of_login(self, login: str) -> int | None:
        folded = login.casefold()
        with self._lock:
            if folded in self._login_overrides:
                return self._login_overrides[folded]
        local = folded.split("@", 1)[0]
        digits = len(local) - len(local.rstrip("0123456789"))
        if not digits or digits > 9:
            return None
        i = int(local[-digits:])
        if i >= self.users:
            return None
        user = self.peek_user(i)
        if user is None or str(user["profile"].get("login", "")).casefold() != folded:
            return None
        return i

    # ------------------------------------------------------------------ user generation
    def _status_of(self, i: int) -> str:
        patch = self._patches.get(i)
        if patch and "status" in patch:
            return patch["status"]
        return _STATUS_TABLE[h64(self._k_status, i) % _STATUS_N]

    def _base(self, i: int) -> _Base:
        """Every generated value of base user `i` (the org as created, ignoring mutations).

        Hot path (every listed user): one hash is stretched into a few 64-bit words and every
        choice is a slice of them, several times faster than a seeded PRNG per user.
        """
        s = h64(self._k_status, i)
        a = mix64(s ^ 0x5DEECE66D)
        b = mix64(a ^ 0x1F3D5B79)
        patch = self._patches.get(i)
        status = patch["status"] if patch and "status" in patch else _STATUS_TABLE[s % _STATUS_N]
        first = FIRST_NAMES[(a & 0xFFFF) % _NF]
        last = LAST_NAMES[((a >> 16) & 0xFFFF) % _NL]
        login = f"{_SLUGS[first]}.{_SLUGS[last]}{i}@{DOMAIN}"
        fn: object = first
        ln: object = last
        variant = ((a >> 32) & 0xFFFF) % 1000
        if variant < 40:
            fn, ln = _NFD[first], _NFD[last]
        elif variant < 70:
            fn, ln = f"  {first} ", f" {last}"
        elif variant < 85:
            ln = ABSENT
        elif variant < 95:
            fn = ABSENT
        e = (a >> 48) % 100
        if e < 8:
            email = f"{_SLUGS[first]}.{_SLUGS[last]}{i}@{ALT_DOMAIN}"
        elif e < 14:
            email = login.title()
        else:
            email = login
        image = f"https://images.{DOMAIN}/avatars/{i}.png" if ((b >> 16) & 0xFFFF) < 26214 else None  # 40 %
        hist = self._timeline(b, i, status)
        x = mix64(s ^ 0x2545F491)
        uid = f"00u{b62(self._offset + i * ID_SLOT + x % ID_SLOT, 7)}{b62(x >> 20, 7)}{self._suffix}"
        return _Base(uid, status, fn, ln, login, email, _USER_TYPE_TABLE[(b & 0xFFFF) % _USER_TYPE_N], image,
                     DEPARTMENTS[((b >> 32) & 0xFF) % len(DEPARTMENTS)], TITLES[((b >> 40) & 0xFF) % len(TITLES)],
                     hist, patch.get("profile") if patch else None)

    def _times(self, hist: _History) -> tuple[str, str | None, str | None, str | None, str]:
        """(created, activated, statusChanged, lastLogin, lastUpdated) as Okta strings."""
        activated = iso_ms(hist.activated_ms) if hist.activated_ms else None
        changed = hist.status_changed_ms
        return (iso_ms(hist.created_ms), activated,
                (activated if changed == hist.activated_ms else iso_ms(changed)) if changed else None,
                iso_ms(hist.last_login_ms) if hist.last_login_ms else None, iso_ms(hist.last_updated_ms))

    def _generate(self, i: int) -> tuple[dict, _History]:
        """Base user `i` as a User dict (and its history)."""
        f = self._base(i)
        profile: dict = {}
        if f.first is not ABSENT:
            profile["firstName"] = f.first
        if f.last is not ABSENT:
            profile["lastName"] = f.last
        profile["mobilePhone"] = None
        profile["secondEmail"] = None
        profile["login"] = f.login
        profile["email"] = f.email
        if f.user_type is not None:
            profile["userType"] = f.user_type
        if f.image:
            profile["imageUrl"] = f.image
        profile["employeeNumber"] = str(100000 + i)
        profile["department"] = f.department
        profile["title"] = f.title
        if f.patch:
            profile.update(f.patch)
        created, activated, changed, last_login, last_updated = self._times(f.hist)
        user = {
            "id": f.uid,
            "status": f.status,
            "created": created,
            "activated": activated,
            "statusChanged": changed,
            "lastLogin": last_login,
            "lastUpdated": last_updated,
            "passwordChanged": activated,
            "type": {"id": self.user_type_id},
            "profile": profile,
            "credentials": {"password": {}, "provider": {"type": "OKTA", "name": "OKTA"}},
            "_links": {"self": {"href": f"{self._users_url}{f.uid}"}},
        }
        return user, f.hist

    def user_json(self, i: int) -> str | None:
        """User `i` serialized as JSON, straight from a template for untouched base users.

        Listing pages are dominated by building and encoding dicts; this path does neither.
        Returns None for a deleted user.  Must equal `json.dumps(peek_user(i))` semantically
        (a test checks it).
        """
        if i in self._deleted:
            return None
        override = self._overrides.get(i)
        if override is not None:
            return dumps(override)
        f = self._base(i)
        if f.patch:
            return dumps(self._generate(i)[0])
        created, activated, changed, last_login, last_updated = self._times(f.hist)
        parts = ['{"id":"', f.uid, '","status":"', f.status, '","created":"', created, '","activated":',
                 _q(activated), ',"statusChanged":', _q(changed), ',"lastLogin":', _q(last_login),
                 ',"lastUpdated":"', last_updated, '","passwordChanged":', _q(activated),
                 ',"type":{"id":"', self.user_type_id, '"},"profile":{']
        if f.first is not ABSENT:
            parts += ['"firstName":', _enc(f.first), ","]
        if f.last is not ABSENT:
            parts += ['"lastName":', _enc(f.last), ","]
        parts += ['"mobilePhone":null,"secondEmail":null,"login":', _enc(f.login), ',"email":', _enc(f.email)]
        if f.user_type is not None:
            parts += [',"userType":', _enc(f.user_type)]
        if f.image:
            parts += [',"imageUrl":', _enc(f.image)]
        parts += [',"employeeNumber":"', str(100000 + i), '","department":', _enc(f.department), ',"title":',
                  _enc(f.title), '},"credentials":{"password":{},"provider":{"type":"OKTA","name":"OKTA"}},',
                  '"_links":{"self":{"href":"', self._users_url, f.uid, '"}}}']
        return "".join(parts)

    def _timeline(self, b: int, i: int, status: str) -> _History:
        """Timestamps that agree with the status; recent activity only for assigned users."""
        c = mix64(b ^ 0x2E4C6A8F)
        d = mix64(c ^ 0x3A5C7E91)
        now0 = self.created_ms
        assigned = i in self._initial_assigned
        if assigned and (b >> 48) % 10 == 0:
            created = now0 - DAY_MS - _scale(c, 80 * DAY_MS)
        elif assigned:
            created = now0 - 81 * DAY_MS - _scale(c, 900 * DAY_MS)
        else:
            created = now0 - 120 * DAY_MS - _scale(c, 900 * DAY_MS)
        activated = None
        if status not in ("STAGED", "PROVISIONED"):
            activated = min(created + 60_000 + _scale(c >> 32, 2 * DAY_MS), now0 - 3_600_000)
        status_changed = activated if activated else (created + 1000 if status == "PROVISIONED" else None)
        base = activated or created
        if status in ("SUSPENDED", "DEPROVISIONED", "LOCKED_OUT", "PASSWORD_EXPIRED"):
            if assigned:
                status_changed = max(base + 60_000, now0 - 60_000 - _scale(d, 60 * DAY_MS))
            else:
                status_changed = base + _scale(d, max(1, now0 - 91 * DAY_MS - base))
        last_updated = max(created, status_changed or 0)
        last_login = None
        if status in SIGNED_IN_STATUSES and activated:
            top = status_changed if status == "SUSPENDED" else now0 - 1000
            last_login = activated + _scale(d >> 32, max(0, top - activated))
        profile_update = changed = None
        if assigned:
            e = mix64(d ^ 0x4B6D8FA3)
            if (e & 0xFFFF) < 22938:  # 35 %
                candidate = now0 - 1000 - _scale(e >> 16, 60 * DAY_MS)
                if candidate > last_updated:
                    profile_update = last_updated = candidate
                    changed = _CHANGED_SETS[(e >> 56) % len(_CHANGED_SETS)]
                    if last_login and status in ("ACTIVE", "LOCKED_OUT", "PASSWORD_EXPIRED"):
                        # They signed in after the change, so their worker shows the new values.
                        last_login = candidate + _scale(e >> 24, max(1, now0 - 1000 - candidate))
        else:
            ceiling = now0 - 91 * DAY_MS
            if last_updated < ceiling:
                last_updated += _scale(d >> 16, ceiling - last_updated)
        return _History(created, activated, status_changed, last_login, last_updated, profile_update, changed)

    def peek_user(self, i: int) -> dict | None:
        """The current user dict for index `i` (shared: callers must not modify it)."""
        if i in self._deleted:
            return None
        override = self._overrides.get(i)
        if override is not None:
            return override
        return self._generate(i)[0]

    def user(self, user_id: str) -> dict | None:
        """A copy of the current user, by id or login; None if unknown or deleted."""
        i = self.find(user_id)
        if i is None:
            return None
        return copy.deepcopy(self.peek_user(i))

    def mutated_indices(self) -> list[int]:
        """Indices of users changed since the org was created (live ones only), sorted."""
        with self._lock:
            return sorted(self._overrides)

    def updated_since_candidates(self, since_iso: str) -> list[int] | None:
        """A sorted superset of the users whose lastUpdated may be >= since_iso, or None.

        Unassigned base users were all last updated before `quiet_before_iso` (91 days before
        the org was created), so for any later watermark only the materialized assigned users
        and the mutated ones can match: an incremental sync never scans a million users.
        """
        if since_iso < self.quiet_before_iso:
            return None
        start = bisect.bisect_left(self._assigned_updates, (since_iso[:19],))
        recent = {i for _, i in self._assigned_updates[start:]}
        with self._lock:
            recent.update(self._overrides)
        return sorted(i for i in recent if i not in self._deleted)

    def base_status(self, i: int) -> str:
        """The status of user `i` without generating it (for fast status scans)."""
        override = self._overrides.get(i)
        return override["status"] if override is not None else self._status_of(i)

    # ------------------------------------------------------------------ build
    def _build(self) -> None:
        started = time.perf_counter()
        rng = random.Random(key_of("build", self.seed))
        chosen = self._choose_assigned(rng)
        self._initial_assigned = frozenset(chosen)
        order = chosen[:]
        rng.shuffle(order)
        self._plant_user_patches(order)
        slots = [self._make_slot(i) for i in chosen]
        self._ensure_invalid_user_type(slots, order)
        # Second-resolution keys: a user updated within the watermark's second is kept.
        self._assigned_updates = sorted((s.user["lastUpdated"][:19], s.index) for s in slots)
        history: list[LogRecord] = []
        for slot in slots:
            history.extend(self._history_events(slot))
        self._design_workers(slots)
        if self.config.drift:
            self._plant_drift(slots, rng)
        extras = self._extra_workers(rng) if self.config.drift else []
        for slot in slots:
            self._assignments[slot.index] = slot.assignment
        self._assigned_sorted = sorted(self._assignments)
        self._materialize_workers(slots, extras)
        self._apply_worker_count(rng)
        self._plant_null_attributes()
        cutoff = self.created_ms - RETENTION_MS + DAY_MS
        self.log.load([r for r in history if r.published_ms >= cutoff])
        for kind in self.planted:
            self.planted[kind] = sorted(set(self.planted[kind]))
        logger.debug("simulated org built: %d users, %d assigned, %d workers in %.2fs",
                     self.users, len(self._assignments), len(self.workspace),
                     time.perf_counter() - started)

    def _choose_assigned(self, rng: random.Random) -> list[int]:
        cfg = self.config
        target = cfg.assigned if cfg.assigned is not None else min(self.users, max(10, self.users * 15 // 100), 15000)
        target = max(0, min(target, self.users))
        pool = rng.sample(range(self.users), min(self.users, target + target // 8 + 16))
        # Okta removes app assignments when a user is deactivated.
        return sorted([i for i in pool if self._status_of(i) != "DEPROVISIONED"][:target])

    def _plant_user_patches(self, order: list[int]) -> None:
        """Hostile values and at least one STAGED and one SUSPENDED assigned user."""
        hostile = order[: min(len(HOSTILE_PATCHES), max(1, len(order) // 5))] if order else []
        for i, patch in zip(hostile, HOSTILE_PATCHES):
            self._patches[i] = {"profile": dict(patch)}
            self.planted["hostile"].append(self.user_id(i))
        if len(order) < 10:
            return
        rest = [i for i in order if i not in self._patches]
        statuses = {self._status_of(i) for i in order}
        for wanted in ("STAGED", "SUSPENDED"):
            if wanted not in statuses:
                pick = next((i for i in rest if self._status_of(i) == "ACTIVE"), None)
                if pick is not None:
                    self._patches[pick] = {"status": wanted}
                    rest.remove(pick)

    def _ensure_invalid_user_type(self, slots: list[_Slot], order: list[int]) -> None:
        if len(slots) < 10:
            return
        if any(self._is_invalid_type(s.user) for s in slots):
            return
        by_index = {s.index: s for s in slots}
        pick = next((i for i in order if i not in self._patches
                     and by_index[i].user["status"] == "ACTIVE"), None)
        if pick is None:
            return
        self._patches[pick] = {"profile": {"userType": "superuser"}}
        slot = self._make_slot(pick)
        slots[slots.index(by_index[pick])] = slot

    @staticmethod
    def _is_invalid_type(user: dict) -> bool:
        ut = user["profile"].get("userType")
        return ut is not None and ut != "" and not sso_roles(ut)

    def _make_slot(self, i: int) -> _Slot:
        user, hist = self._generate(i)
        d = Draw(self._k_assign, i)
        uid = user["id"]
        profile = user["profile"]
        custom = d.chance(0.12)
        app_username = f"E{100000 + i}" if custom else profile["login"]
        scope = "GROUP" if d.chance(0.1) else "USER"
        span = max(1, self.created_ms - 2000 - hist.created_ms)
        a_created = hist.created_ms + 1000 + d.below(span)
        roles = sso_roles(profile.get("userType"))
        r = d.below(100)
        if r < 70:
            app_roles: object = list(roles)
        elif r < 73:
            app_roles = list(roles) + ["superuser"]
        elif r < 75:
            app_roles = roles[0] if roles else "agent"
        else:
            app_roles = ABSENT
        assignment = Assignment(i, uid, app_username, scope, "ACTIVE", a_created, a_created, a_created,
                                app_roles, self.group_id if scope == "GROUP" else None)
        if custom:
            self.planted["custom_app_username"].append(uid)
        if scope == "GROUP":
            self.planted["group_scope"].append(uid)
        return _Slot(i, user, hist, assignment, roles)

    def _history_events(self, slot: _Slot) -> list[LogRecord]:
        """The System Log history of one assigned user, consistent with its timestamps."""
        u, h, a = slot.user, slot.hist, slot.assignment
        uid, login = u["id"], u["profile"]["login"]
        name = sso_full_name(u["profile"].get("firstName"), u["profile"].get("lastName"))
        out = [LogRecord(h.created_ms, "user.lifecycle.create", uid, login, name)]
        if h.activated_ms:
            out.append(LogRecord(h.activated_ms, "user.lifecycle.activate", uid, login, name))
        if a.scope == "GROUP":
            out.append(LogRecord(a.created_ms - 500, "group.user_membership.add", uid, login, name,
                                 group_id=self.group_id))
        out.append(LogRecord(a.created_ms, "application.user_membership.add", uid, login, name, app=True))
        if h.profile_update_ms:
            out.append(LogRecord(h.profile_update_ms, "user.account.update_profile", uid, login, name,
                                 changed_attributes=h.changed_attributes))
        status_events = {"SUSPENDED": "user.lifecycle.suspend", "LOCKED_OUT": "user.account.lock",
                         "PASSWORD_EXPIRED": "user.account.expire_password"}
        if u["status"] in status_events and h.status_changed_ms:
            out.append(LogRecord(h.status_changed_ms, status_events[u["status"]], uid, login, name))
        if h.last_login_ms and h.last_login_ms > a.created_ms:
            out.append(LogRecord(h.last_login_ms - 2000, "user.session.start", uid, login, name))
            out.append(LogRecord(h.last_login_ms, "user.authentication.sso", uid, login, name, app=True))
        return out

    # ------------------------------------------------------------------ workers
    def _mirror(self, user: dict, roles: list[str], i: int) -> dict:
        """The attributes the user's last SSO login wrote, plus the non-SSO routing data."""
        d = Draw(self._k_worker, i)
        p = user["profile"]
        email = p.get("email")
        attrs: dict = {"full_name": sso_full_name(p.get("firstName"), p.get("lastName"))}
        if isinstance(email, str):
            ident = contact_identity(email)
            attrs["email"] = email
            attrs["contact_uri"] = f"client:{ident}"
            attrs["twilio_contact_identity"] = ident
        if isinstance(p.get("imageUrl"), str):
            attrs["image_url"] = p["imageUrl"]
        attrs["roles"] = list(roles)
        skills = sorted({SKILLS[d.below(len(SKILLS))] for _ in range(1 + d.below(3))})
        attrs["routing"] = {"skills": skills, "levels": {s: 1 + d.below(10) for s in skills}}
        attrs["channels"] = sorted({CHANNELS[d.below(len(CHANNELS))] for _ in range(1 + d.below(2))})
        attrs["disabled_skills"] = {"skills": [], "levels": {}}
        return attrs

    def _design_workers(self, slots: list[_Slot]) -> None:
        """Give every assigned user who has signed in with a valid role a mirror worker."""
        for s in slots:
            status = s.user["status"]
            if status not in SIGNED_IN_STATUSES:
                self.planted["missing_worker_staged"].append(s.user["id"])
                continue
            if status == "SUSPENDED" and not self.config.drift:
                continue
            roles = s.roles
            if not roles:
                if not self.config.drift:
                    continue
                roles = ["agent"]  # they had a valid role when they last signed in
            if self._is_invalid_type(s.user):
                self.planted["invalid_user_type"].append(s.user["id"])
            s.worker = self._mirror(s.user, roles, s.index)
            s.friendly_name = s.assignment.app_username
            last_login = s.hist.last_login_ms or (self.created_ms - DAY_MS)
            s.date_updated_ms = last_login
            if status == "SUSPENDED":
                s.tags.append("suspended_with_worker")

    def _plant_drift(self, slots: list[_Slot], rng: random.Random) -> None:
        """Turn a few mirror workers into realistic drift (and near-misses that are not drift)."""
        pool = [s for s in slots if s.worker is not None and not s.tags and s.roles]
        rng.shuffle(pool)
        n = len(pool)
        used: set[int] = set()

        def take(rate: float, ok, minimum: int = 1) -> list[_Slot]:
            want = max(minimum, round(n * rate))
            out = []
            for s in pool:
                if len(out) >= want:
                    break
                if s.index not in used and ok(s):
                    used.add(s.index)
                    out.append(s)
            return out

        active = lambda s: s.user["status"] == "ACTIVE"  # noqa: E731
        for s in take(0.015, lambda s: active(s) and not {"supervisor", "admin"} <= set(s.roles)):
            extra = "supervisor" if "supervisor" not in s.roles else "admin"
            s.worker["roles"] = s.worker["roles"] + [extra]
            self._stale(s, "privilege_escalation")
        for s in take(0.015, lambda s: active(s) and len(s.roles) >= 2):
            s.worker["roles"] = s.roles[:-1]
            self._stale(s, "roles_missing")
        for s in take(0.02, lambda s: active(s) and isinstance(s.user["profile"].get("lastName"), str)):
            p = s.user["profile"]
            old_last = next(x for x in LAST_NAMES[(s.index % 7):] + LAST_NAMES
                            if _nfc(x).casefold() != _nfc(p["lastName"]).strip().casefold())
            s.worker["full_name"] = sso_full_name(p.get("firstName"), old_last)
            self._stale(s, "stale_name")
        for s in take(0.01, lambda s: active(s) and "email" in s.worker):
            old = f"{s.index}.old@{OLD_DOMAIN}"
            ident = contact_identity(old)
            s.worker.update(email=old, contact_uri=f"client:{ident}", twilio_contact_identity=ident)
            self._stale(s, "changed_email")
        for s in take(0.01, lambda s: "email" in s.worker and swap_case_once(s.worker["email"]) != s.worker["email"]):
            s.worker["email"] = swap_case_once(s.worker["email"])
            s.tags.append("email_case_only")
        for s in take(0.015, lambda s: bool(s.worker["full_name"].strip())):
            s.worker["full_name"] = _format_variant(s.worker["full_name"])
            s.tags.append("name_format_only")
        for s in take(0.01, lambda s: active(s)):
            s.worker["image_url"] = f"https://images.{DOMAIN}/avatars/old_{s.index}.png"
            self._stale(s, "image_url_changed")
        for s in take(0.02, lambda s: True):
            s.worker["roles"] = s.worker["roles"] + [WFO_ROLES[s.index % len(WFO_ROLES)]]
            s.tags.append("wfo_roles")
        for k, s in enumerate(take(0.003, lambda s: True, minimum=min(4, max(1, n // 10)))):
            s.raw = _UNPARSEABLE[k % len(_UNPARSEABLE)]
            s.tags.append("unparseable_attributes")
        for s in take(0.01, lambda s: swap_case_once(s.friendly_name) != s.friendly_name):
            s.friendly_name = swap_case_once(s.friendly_name)
            s.tags.append("friendly_name_case")
        for s in take(0.01, lambda s: active(s)):
            s.worker = None
            self.planted["missing_worker_active"].append(s.user["id"])

    def _stale(self, s: _Slot, tag: str) -> None:
        """The worker predates the user's last change: date it before `lastUpdated`."""
        s.tags.append(tag)
        s.date_updated_ms = max(s.hist.created_ms + 1000,
                                s.hist.last_updated_ms - DAY_MS - (s.index % 20) * DAY_MS)

    def _extra_workers(self, rng: random.Random) -> list[tuple[str, str, int, dict]]:
        """Workers with no assignment behind them: (kind, friendly_name, date_ms, attributes)."""
        n = max(1, len(self._initial_assigned))
        out: list[tuple[str, str, int, dict]] = []
        for kind, want_status, rate in (("deprovisioned_with_worker", "DEPROVISIONED", 0.005),
                                        ("unassigned_with_worker", "ACTIVE", 0.005)):
            want = max(1, round(n * rate))
            found = 0
            for _ in range(200 * want):
                if found >= want or self.users == 0:
                    break
                i = rng.randrange(self.users)
                if i in self._initial_assigned or i in self._patches or self._status_of(i) != want_status:
                    continue
                user, hist = self._generate(i)
                roles = sso_roles(user["profile"].get("userType")) or ["agent"]
                stamp = max(hist.created_ms + 1000, (hist.status_changed_ms or hist.last_updated_ms) - DAY_MS)
                out.append((kind, user["profile"]["login"], stamp, self._mirror(user, roles, i)))
                found += 1
        for k in range(max(1, round(n * 0.01))):
            name = f"former.agent{k}@{OLD_DOMAIN}"
            attrs = {"full_name": f"Former Agent {k}", "email": name, "roles": ["agent"],
                     "contact_uri": f"client:{contact_identity(name)}",
                     "twilio_contact_identity": contact_identity(name)}
            out.append(("orphan_worker", name, self.created_ms - (200 + k) * DAY_MS, attrs))
        return out

    def _materialize_workers(self, slots: list[_Slot], extras) -> None:
        for s in slots:
            if s.worker is None:
                continue
            raw = s.raw if s.raw is not None else json.dumps(s.worker, ensure_ascii=False)
            record = self.workspace.add(s.friendly_name, raw, s.date_updated_ms, h64(self._k_worker, s.index))
            for tag in s.tags:
                self.planted[tag].append(record.sid)
        for n, (kind, name, date_ms, attrs) in enumerate(extras):
            if self.workspace.by_name(name) is not None:
                continue
            record = self.workspace.add(name, json.dumps(attrs, ensure_ascii=False), date_ms, n)
            self.planted[kind].append(record.sid)

    def _apply_worker_count(self, rng: random.Random) -> None:
        """Honour an explicit `workers` count: drop workers or add orphans."""
        want, have = self.config.workers, len(self.workspace)
        if want is None or want == have:
            return
        if want < have:
            keep = set(rng.sample(self.workspace.sids(), want))
            for sid in self.workspace.sids():
                if sid not in keep:
                    self.workspace.delete(sid)
            for kind in self.planted:
                if PLANTED_KINDS[kind] == "worker":
                    self.planted[kind] = [s for s in self.planted[kind] if s in keep]
            return
        for k in range(want - have):
            name = f"extra.agent{k}@{OLD_DOMAIN}"
            attrs = {"full_name": f"Extra Agent {k}", "email": name, "roles": ["agent"]}
            record = self.workspace.add(name, json.dumps(attrs), self.created_ms - 300 * DAY_MS, k)
            self.planted["orphan_worker"].append(record.sid)

    def _plant_null_attributes(self) -> None:
        self.planted["null_attributes"] = [sid for sid in self.workspace.sids() if self.workspace.lists_null(sid)]

    # ------------------------------------------------------------------ worker reads (see Workspace)
    def workers(self) -> list[dict]:
        """Every worker (with its real attributes string and ETag), ordered by sid."""
        return self.workspace.all()

    def worker_by_name(self, name: str) -> dict | None:
        """The worker whose friendly_name matches case-insensitively, like TaskRouter."""
        return self.workspace.by_name(name)

    def worker(self, sid: str) -> dict | None:
        return self.workspace.get(sid)

    def worker_sids(self) -> list[str]:
        return self.workspace.sids()

    def update_worker(self, sid: str, **changes) -> dict:
        """Change a worker directly (no HTTP, no faults): attributes=, friendly_name=, if_match=."""
        self.workspace.update(sid, **changes)
        return self.workspace.get(sid)

    def create_worker(self, friendly_name: str, attributes: str = "{}") -> dict:
        return self.workspace.get(self.workspace.create(friendly_name, attributes).sid)

    def delete_worker(self, sid: str) -> None:
        self.workspace.delete(sid)

    # ------------------------------------------------------------------ assignment reads
    def assignment(self, user_id: str) -> Assignment | None:
        i = self.index_of(user_id)
        with self._lock:
            a = self._assignments.get(i) if i is not None else None
            return copy.copy(a) if a else None

    def assigned_user_ids(self) -> list[str]:
        """Ids of currently assigned users, in id order."""
        with self._lock:
            return [self._assignments[i].user_id for i in self._assigned_sorted]

    def assignments_page(self, after_index: int, limit: int) -> tuple[list[Assignment], bool]:
        """Up to `limit` assignments with index > after_index, and whether more follow."""
        with self._lock:
            start = bisect.bisect_right(self._assigned_sorted, after_index)
            chunk = self._assigned_sorted[start:start + limit]
            more = start + limit < len(self._assigned_sorted)
            return [copy.copy(self._assignments[i]) for i in chunk], more

    # ------------------------------------------------------------------ mutations
    def _now_ms(self) -> int:
        return max(int(time.time() * 1000), self.created_ms)

    def _mutable(self, user_id: str) -> tuple[int, dict]:
        """A private copy of the user; `_commit` publishes it (readers never see a half-change)."""
        i = self.find(user_id)
        if i is None:
            raise UnknownUser(user_id)
        current = self._overrides.get(i)
        return i, copy.deepcopy(current if current is not None else self._generate(i)[0])

    def _commit(self, i: int, user: dict) -> None:
        self._overrides[i] = user

    def _emit(self, event_type: str, user: dict, *, at: int, app: bool = False,
              changed: str | None = None) -> None:
        p = user["profile"]
        self.log.append(LogRecord(at, event_type, user["id"], p.get("login"),
                                  sso_full_name(p.get("firstName"), p.get("lastName")),
                                  app=app, changed_attributes=changed))

    def set_profile(self, user_id: str, **attrs) -> dict:
        """Change profile attributes (None sets null); emits user.account.update_profile."""
        with self._lock:
            i, user = self._mutable(user_id)
            profile = user["profile"]
            changed = sorted(k for k, v in attrs.items() if profile.get(k, ABSENT) != v)
            old_login = profile.get("login")
            profile.update(attrs)
            if "login" in attrs and attrs["login"] != old_login:
                self._login_overrides.pop(str(old_login).casefold(), None)
                self._login_overrides[str(attrs["login"]).casefold()] = i
            now = self._now_ms()
            user["lastUpdated"] = iso_ms(now)
            self._commit(i, user)
            if changed:
                self._emit("user.account.update_profile", user, at=now, changed=",".join(changed))
            return copy.deepcopy(user)

    def set_user_type(self, user_id: str, value: object) -> dict:
        return self.set_profile(user_id, userType=value)

    def set_status(self, user_id: str, status: str) -> dict:
        """Move a user to `status`, emitting the lifecycle event Okta would."""
        if status not in ALL_USER_STATUSES:
            raise ValueError(f"unknown Okta user status {status!r}")
        with self._lock:
            i, user = self._mutable(user_id)
            old = user["status"]
            now = self._now_ms()
            stamp = iso_ms(now)
            user["status"] = status
            user["statusChanged"] = user["lastUpdated"] = stamp
            if status == "ACTIVE" and not user.get("activated"):
                user["activated"] = stamp
            self._commit(i, user)
            self._emit(_status_event(old, status), user, at=now)
            if status == "DEPROVISIONED" and i in self._assignments:
                self._drop_assignment(i, user, now)
            return copy.deepcopy(user)

    def assign(self, user_id: str, app_username: str, scope: str = "USER") -> Assignment:
        """Assign (or re-assign with a new app username) the Flex app to a user."""
        if scope not in ("USER", "GROUP"):
            raise ValueError("scope must be USER or GROUP")
        if not app_username or len(app_username) > 100:
            raise ValueError("app_username must be 1-100 characters")
        with self._lock:
            i, user = self._mutable(user_id)
            if user["status"] == "DEPROVISIONED":
                raise ValueError("a deactivated user cannot be assigned to an app")
            now = self._now_ms()
            user["lastUpdated"] = iso_ms(now)
            self._commit(i, user)
            existing = self._assignments.get(i)
            if existing is not None:
                event = ("application.user_membership.change_username"
                         if existing.app_username != app_username else "application.user_membership.add")
                existing.app_username = app_username
                existing.scope = scope
                existing.group_id = self.group_id if scope == "GROUP" else None
                existing.last_updated_ms = now
                self._emit(event, user, at=now, app=True)
                return copy.copy(existing)
            roles = sso_roles(user["profile"].get("userType"))
            assignment = Assignment(i, user["id"], app_username, scope, "ACTIVE", now, now, now, roles,
                                    self.group_id if scope == "GROUP" else None)
            self._assignments[i] = assignment
            bisect.insort(self._assigned_sorted, i)
            self._emit("application.user_membership.add", user, at=now, app=True)
            return copy.copy(assignment)

    def unassign(self, user_id: str) -> None:
        with self._lock:
            i, user = self._mutable(user_id)
            if i not in self._assignments:
                raise KeyError(f"user {user_id} is not assigned to the Flex app")
            now = self._now_ms()
            user["lastUpdated"] = iso_ms(now)
            self._commit(i, user)
            self._drop_assignment(i, user, now)

    def _drop_assignment(self, i: int, user: dict, now: int) -> None:
        del self._assignments[i]
        self._assigned_sorted.remove(i)
        self._emit("application.user_membership.remove", user, at=now, app=True)

    def delete_user(self, user_id: str) -> None:
        """Delete a user for good (their worker, if any, stays: Flex never deletes it)."""
        with self._lock:
            i, user = self._mutable(user_id)
            now = self._now_ms()
            if i in self._assignments:
                self._drop_assignment(i, user, now)
            self._emit("user.lifecycle.delete.initiated", user, at=now)
            self._deleted.add(i)
            self._overrides.pop(i, None)
            self._login_overrides = {k: v for k, v in self._login_overrides.items() if v != i}

    def mutate_fraction(self, fraction: float, seed: int) -> list[str]:
        """Change userType or last name of `fraction` of the assigned users; returns their ids."""
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be between 0 and 1")
        ids = self.assigned_user_ids()
        k = min(len(ids), max(1, round(fraction * len(ids)))) if fraction > 0 and ids else 0
        rng = random.Random(key_of("mutate", self.seed, seed))
        chosen = sorted(rng.sample(ids, k))
        for uid in chosen:
            current = self.user(uid)["profile"]
            if rng.random() < 0.5:
                options = [t for t in ("agent", "agent,supervisor", "supervisor", "admin", "agent,admin")
                           if t != current.get("userType")]
                self.set_user_type(uid, rng.choice(options))
            else:
                options = [n for n in LAST_NAMES if n != current.get("lastName")]
                self.set_profile(uid, lastName=rng.choice(options))
        return chosen


def _status_event(old: str, new: str) -> str:
    if new == "SUSPENDED":
        return "user.lifecycle.suspend"
    if new == "DEPROVISIONED":
        return "user.lifecycle.deactivate"
    if new == "LOCKED_OUT":
        return "user.account.lock"
    if new == "PASSWORD_EXPIRED":
        return "user.account.expire_password"
    if new == "ACTIVE" and old == "SUSPENDED":
        return "user.lifecycle.unsuspend"
    if new == "ACTIVE" and old == "LOCKED_OUT":
        return "user.account.unlock"
    if new == "ACTIVE":
        return "user.lifecycle.activate"
    return "user.lifecycle.create" if new == "STAGED" else "user.account.update_profile"


def _format_variant(name: str) -> str:
    """Same name for a human (NFC/NFD or spacing differ), different bytes."""
    nfd = unicodedata.normalize("NFD", name)
    if nfd != name:
        return nfd
    nfc = unicodedata.normalize("NFC", name)
    if nfc != name:
        return nfc
    collapsed = " ".join(name.split())
    if collapsed != name:
        return collapsed
    return name.replace(" ", "  ") if " " in name else f" {name}"
