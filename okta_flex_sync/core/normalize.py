"""Turn raw Okta and TaskRouter JSON into the typed records that reconciliation compares.

Pure code: only the stdlib and `okta_flex_sync.models.records`, so it is fast to test and cheap to run on
100k users.  Every normalizer takes hostile input (wrong types, control characters, 10 MB
strings, malformed JSON) and returns a value; the only exception it raises is
`MalformedRecord`, for a record that has no usable id and so cannot even be reported by key.

Conventions, decided once here:

* Text is a `str`; anything else (number, bool, list, object, null) is "no value" and the
  record's `problems` says so.  Okta's profile schema types these fields as strings, so a number
  there is corrupt data whose SSO rendering nobody can know; skipping it matches "null parts
  omitted" in `String.join`.  (Worker attributes are the exception: see `_worker_text`.)
* Every run of Unicode whitespace (tabs, newlines, NBSP, U+2028 ...) collapses to one space and
  the ends are trimmed: the issue says inner whitespace is not drift, and Okta's
  `String.join(" ", first, last)` leaves doubled spaces that Flex then stores verbatim.
* C0/C1 control characters (other than whitespace ones) and lone surrogates are removed: SAML
  (XML) cannot carry them and Postgres/UTF-8 cannot store them.  Format characters (ZWJ, ...)
  are kept: emoji and some scripts need them.
* Text is NFC-normalized and capped at `MAX_TEXT` characters.
* Roles are split on commas, trimmed, lower-cased, de-duplicated and sorted.  A junk role value
  becomes an invalid entry named after its JSON type or value (`5`, `true`, `<object>`,
  `<array>`), never a crash.
* Identifiers (Okta user id, worker sid) are kept verbatim; `app_username` and `friendly_name`
  are kept verbatim except control characters, because they are join keys.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from functools import lru_cache

from okta_flex_sync.core import fastjson
from okta_flex_sync.models.records import AppAssignment, Expected, OktaUser, Worker

MAX_TEXT = 1024  # longest text kept from any field (Okta itself caps names at 50, emails at 100)
MAX_ID = 64  # longest identifier accepted as a record key (the key columns hold 64)
MAX_ROLE_TEXT = 4 * MAX_TEXT  # a role string is cut here before splitting, so 10 MB stays cheap
MAX_ROLE_ITEMS = 1000  # list elements looked at in a roles array
MAX_INVALID_ROLES = 50  # invalid role values kept per record

ROLE_SOURCES = ("user_type", "app_user")

# Already-normal text: words of printable ASCII and Latin-1/Latin Extended-A/B letters separated by
# single spaces.  Every string of those characters is NFC (checked pairwise in the tests), so it
# needs no further work; anything else takes the full path.
_PLAIN_WORD = "[!-~\u00a1-\u024f]+"
_is_plain = re.compile(f"{_PLAIN_WORD}(?: {_PLAIN_WORD})*").fullmatch
_is_plain_id = re.compile(r"[!-~]{1,%d}" % MAX_ID).fullmatch
# C0/C1 controls that are not Unicode whitespace (\t \n \v \f \r and NEL collapse to a space
# instead), plus lone surrogates.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff]")


class MalformedRecord(ValueError):
    """The record has no usable id, so the caller must skip it and report it by position."""


# --------------------------------------------------------------------------- text


def _clean(s: str, label: str | None = None, problems: list[str] | None = None) -> str:
    """normalize_text for a str, noting what was odd when `problems` is given."""
    if len(s) <= MAX_TEXT and _is_plain(s):  # hot path: nothing to change
        return s
    if len(s) <= _CACHED_TEXT:  # names repeat: "Zoë" is normalized once per run, not per user
        s, notes = _clean_cached(s)
        if notes and problems is not None:
            problems.extend(f"{label}: {note}" for note in notes)
        return s
    return _clean_slow(s, label, problems)


_CACHED_TEXT = 128


@lru_cache(maxsize=16384)
def _clean_cached(s: str) -> tuple[str, tuple[str, ...]]:
    notes: list[str] = []
    return _clean_slow(s, "", notes), tuple(n.removeprefix(": ") for n in notes)


def _clean_slow(s: str, label: str | None, problems: list[str] | None) -> str:
    cut = len(s) > MAX_ROLE_TEXT
    if cut:  # don't NFC/split megabytes only to keep 1024 characters
        s = s[:MAX_ROLE_TEXT]
    if _CONTROL.search(s):
        s = _CONTROL.sub("", s)
        if problems is not None:
            problems.append(f"{label}: control characters removed")
    if not unicodedata.is_normalized("NFC", s):
        s = unicodedata.normalize("NFC", s)
    s = " ".join(s.split())
    if len(s) > MAX_TEXT:
        s = s[:MAX_TEXT].rstrip()
        cut = True
    if cut and problems is not None:
        problems.append(f"{label}: truncated to {MAX_TEXT} characters")
    return s


def _text(value: object, label: str | None = None, problems: list[str] | None = None) -> str | None:
    """Text of a JSON value per the module conventions; None for no value."""
    if type(value) is str:
        return _clean(value, label, problems)
    if value is None:
        return None
    return _text_other(value, label, problems)


def _text_other(value: object, label: str | None, problems: list[str] | None) -> str | None:
    if isinstance(value, str):
        return _clean(value, label, problems)
    if problems is not None:
        problems.append(f"{label}: {_json_type(value)} instead of a string")
    return None


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "<number>"
    try:
        return _clean(str(value)).lower()
    except ValueError:  # an int beyond sys.get_int_max_str_digits()
        return "<number>"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _storable(s: str) -> str:
    """A join key kept verbatim except what no database or SAML assertion can hold."""
    if not s.isascii() or not s.isprintable():
        s = _CONTROL.sub("", s)
    return s[:MAX_TEXT]


def normalize_text(value: object) -> str | None:
    """NFC, controls removed, whitespace collapsed and trimmed, capped.  None for a non-string.

    Idempotent: normalize_text(normalize_text(x)) == normalize_text(x).
    """
    return _text(value)


def full_name(first: object, last: object) -> str:
    """Okta's `String.join(" ", user.firstName, user.lastName)` with missing parts omitted."""
    return _full_name(first, last)


def _full_name(first: object, last: object, problems: list[str] | None = None) -> str:
    return _join_name(_text(first, "profile.firstName", problems), _text(last, "profile.lastName", problems))


def _join_name(first: str | None, last: str | None) -> str:
    if first and last:
        name = f"{first} {last}"
        return name if len(name) <= MAX_TEXT else name[:MAX_TEXT].rstrip()
    return first or last or ""


def normalize_email(value: object) -> str | None:
    """Trimmed email with its case kept for display; None when empty."""
    return _text(value) or None


# The comparisons below first try `a == b` (equal inputs normalize equally): most workers have
# not drifted, and that spares reconciling 15k workers three normalizations each.

def emails_equal(a: object, b: object) -> bool:
    """Case-insensitive; None and "" are the same (no email)."""
    return a == b or (normalize_email(a) or "").casefold() == (normalize_email(b) or "").casefold()


def names_equal(a: object, b: object) -> bool:
    """Equal after normalize_text: whitespace and Unicode-form differences are not drift."""
    return a == b or (_text(a) or "") == (_text(b) or "")


def urls_equal(a: object, b: object) -> bool:
    """Absent, null and empty image URLs are the same."""
    return a == b or (_text(a) or "") == (_text(b) or "")


def username_key(name: object) -> str:
    """The key workers and assignments are joined on: Okta compares usernames case-insensitively."""
    if type(name) is str and _is_plain_id(name):  # the usual case, without the control-character scan
        return name.lower()
    return _storable(name).lower() if isinstance(name, str) else ""


# --------------------------------------------------------------------------- roles


def _junk_role(value: object) -> str:
    """An invalid-role entry for a non-string role value (no commas, bounded size)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number_text(value)
    return f"<{_json_type(value)}>"


def _role_parts(value: object) -> Iterator[str]:
    """Every normalized role value in a comma string, a list of them, or junk."""
    if value is None:
        return
    items = value[:MAX_ROLE_ITEMS] if isinstance(value, (list, tuple)) else (value,)
    for item in items:
        if isinstance(item, str):
            for part in item[:MAX_ROLE_TEXT].split(","):
                role = _clean(part.lower())
                if role:
                    yield role
        elif item is not None:
            yield _junk_role(item)


def normalize_roles(value: object, valid: frozenset[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(valid roles, invalid values), each sorted and unique.

    `value` is a comma-separated string (userType), a list (app user profile.roles), None or junk.
    """
    if type(value) is str and len(value) <= _CACHED_ROLE_TEXT:
        return _normalize_role_text(value, valid)
    if _short_role_list(value):  # app-user profile.roles: a few lists repeated 15k times
        return _normalize_role_text(tuple(value), valid)
    return _normalize_roles(value, valid)


def _normalize_roles(value: object, valid: frozenset[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    parts = set(_role_parts(value))
    if not parts:
        return (), ()
    ok = parts & valid
    return tuple(sorted(ok)), tuple(sorted(parts - ok))


# An org has a handful of distinct userType values; 100k users parse them once.
_CACHED_ROLE_TEXT = 256
_normalize_role_text = lru_cache(maxsize=4096)(_normalize_roles)


def _short_role_list(value: object) -> bool:
    """A list of a few short strings: cacheable as a tuple (same parts, same order)."""
    return (type(value) is list and len(value) <= 16
            and all(type(v) is str and len(v) <= _CACHED_ROLE_TEXT for v in value))


@lru_cache(maxsize=4096)
def _joined_role_list(value: tuple[str, ...]) -> str:
    return join_roles(_role_parts(value))


def all_roles(value: object) -> str:
    """Every role value (valid or not), sorted, unique and comma-joined: a worker's roles."""
    if _short_role_list(value):
        return _joined_role_list(tuple(value))
    return join_roles(_role_parts(value))


def join_roles(roles: Iterable[str]) -> str:
    """The stored comma-joined form: sorted, unique, "" when none."""
    return ",".join(sorted(set(roles)))


def split_roles(s: str | None) -> tuple[str, ...]:
    """Inverse of join_roles; tolerant of spaces and empty parts."""
    if not s:
        return ()
    if " " not in s and ",," not in s and s[0] != "," and s[-1] != ",":  # the stored form
        return tuple(s.split(","))
    return tuple(p for p in (x.strip() for x in s.split(",")) if p)


def _roles_field(value: object, valid: frozenset[str], label: str, problems: list[str]) -> tuple[str, str]:
    if value is not None and not isinstance(value, (str, list, tuple)):
        problems.append(f"{label}: {_json_type(value)} instead of a string or array")
    elif isinstance(value, str) and len(value) > MAX_ROLE_TEXT:
        problems.append(f"{label}: truncated to {MAX_ROLE_TEXT} characters")
    elif isinstance(value, (list, tuple)) and len(value) > MAX_ROLE_ITEMS:
        problems.append(f"{label}: only the first {MAX_ROLE_ITEMS} entries read")
    ok, bad = normalize_roles(value, valid)
    if len(bad) > MAX_INVALID_ROLES:
        problems.append(f"{label}: {len(bad)} invalid values, first {MAX_INVALID_ROLES} kept")
        bad = bad[:MAX_INVALID_ROLES]
    return ",".join(ok), ",".join(bad)


@lru_cache(maxsize=4096)
def _role_fields_cached(value: str, valid: frozenset[str]) -> tuple[str, str, str, str]:
    """_roles_field for a short userType, cached: (roles, invalid roles, problem note, storable raw)."""
    problems: list[str] = []
    roles, invalid = _roles_field(value, valid, "", problems)
    return roles, invalid, "; ".join(p.removeprefix(": ") for p in problems), _storable(value)


# --------------------------------------------------------------------------- records

_fromisoformat = datetime.fromisoformat


def parse_timestamp(value: object) -> datetime | None:
    """ISO 8601 (Okta's `...T00:00:00.000Z`, Twilio's `...T00:00:00Z`) as naive UTC, else None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        if value[-1:] == "Z":  # the usual form: parsed naive, it is UTC already (astimezone is slow)
            dt = datetime.fromisoformat(value[:-1])
            return dt if dt.tzinfo is None else None
        dt = datetime.fromisoformat(value)
        if dt.tzinfo is not None:
            dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError):
        return None
    return dt


def _timestamp(value: object, label: str, problems: list[str]) -> datetime | None:
    dt = parse_timestamp(value)
    if dt is None and value is not None:
        problems.append(f"{label}: not an ISO 8601 timestamp")
    return dt


def _record_id(raw: object, key: str, what: str) -> str:
    """The record's key, or MalformedRecord (the message never echoes the value)."""
    if not isinstance(raw, dict):
        raise MalformedRecord(f"{what} is a JSON {_json_type(raw)}, not an object")
    value = raw.get(key)
    if not isinstance(value, str):
        raise MalformedRecord(f"{what} has no string {key!r} ({_json_type(value)})")
    if not value.strip() or len(value) > MAX_ID or _CONTROL.search(value):
        raise MalformedRecord(f"{what} has an unusable {key!r} (empty, too long or control characters)")
    return value


def _object(raw: dict, key: str, label: str, problems: list[str]) -> dict:
    value = raw.get(key)
    if isinstance(value, dict):
        return value
    if value is not None:
        problems.append(f"{label}: {_json_type(value)} instead of an object")
    return {}


def _status(value: object, label: str, problems: list[str]) -> str | None:
    s = _text(value, label, problems)
    return s.upper() if s else None


def _problems(problems: list[str]) -> str:
    return "; ".join(dict.fromkeys(problems))


def _texts(values: tuple, labels: tuple[str, ...], problems: list[str]) -> list[str | None]:
    """_text over several fields at once; already-plain text skips the per-field calls."""
    return [
        v if type(v) is str and len(v) <= MAX_TEXT and _is_plain(v) else _text(v, label, problems)
        for v, label in zip(values, labels)
    ]


_USER_LABELS = ("status", "profile.login", "profile.email", "profile.firstName", "profile.lastName")
# Five already-normal values joined by newlines; a value with a newline of its own adds a segment.
_five_plain = re.compile(f"{_PLAIN_WORD}(?: {_PLAIN_WORD})*(?:\n{_PLAIN_WORD}(?: {_PLAIN_WORD})*){{4}}").fullmatch


def normalize_user(raw: dict, *, valid_roles: frozenset[str], image_url_attribute: str = "imageUrl") -> OktaUser:
    """An Okta User JSON object as an OktaUser; roles come from profile.userType."""
    # Written for speed (100k users in well under a second on a small box): when every text
    # field is already plain, one regex call vouches for all five.
    user_id = raw.get("id") if type(raw) is dict else None
    if not (type(user_id) is str and _is_plain_id(user_id)):
        user_id = _record_id(raw, "id", "Okta user")
    problems: list[str] = []
    profile = raw.get("profile")
    if type(profile) is not dict:
        profile = _object(raw, "profile", "profile", problems)
    get = profile.get
    values = (raw.get("status"), get("login"), get("email"), get("firstName"), get("lastName"))
    try:
        joined = "\n".join(values)
    except TypeError:  # a None or a non-string: take the careful path
        joined = None
    if joined is not None and len(joined) <= MAX_TEXT and _five_plain(joined):
        status, login, email, first, last = values
    else:
        status, login, email, first, last = _texts(values, _USER_LABELS, problems)
    image_url = get(image_url_attribute)
    if image_url is not None:
        image_url = _text(image_url, f"profile.{image_url_attribute}", problems)
    if not status:
        problems.append("status missing")
        status = "UNKNOWN"
    if not login:
        problems.append("profile.login missing, id used")
        login = user_id
    user_type = get("userType")
    if type(user_type) is str and len(user_type) <= _CACHED_ROLE_TEXT:
        roles, invalid, note, user_type = _role_fields_cached(user_type, valid_roles)
        if note:
            problems.append(f"profile.userType: {note}")
    else:
        roles, invalid = _roles_field(user_type, valid_roles, "profile.userType", problems)
        user_type = _storable(user_type) if isinstance(user_type, str) else None
    stamp = raw.get("lastUpdated")
    try:  # Okta's "...T12:34:56.789Z" inline; anything else through parse_timestamp
        last_updated = _fromisoformat(stamp[:-1]) if type(stamp) is str and stamp[-1:] == "Z" else None
        if last_updated is not None and last_updated.tzinfo is not None:
            last_updated = None
    except ValueError:
        last_updated = None
    if last_updated is None and stamp is not None:
        last_updated = parse_timestamp(stamp)
        if last_updated is None:
            problems.append("lastUpdated: not an ISO 8601 timestamp")
    # Positional: a third faster than keywords for this frozen dataclass; the order is
    # OKTA_USER_FIELDS, which a test checks against okta_flex_sync.models.records.
    return OktaUser(
        user_id,
        status.upper(),
        login,
        email or None,
        _join_name(first, last),
        user_type,
        roles,
        invalid,
        image_url or None,
        last_updated,
        "; ".join(dict.fromkeys(problems)) if problems else "",
    )


OKTA_USER_FIELDS = ("okta_user_id", "status", "login", "email", "full_name", "user_type", "roles",
                    "invalid_roles", "image_url", "last_updated", "problems")


def _app_username(raw: dict, problems: list[str]) -> str:
    credentials = _object(raw, "credentials", "credentials", problems)
    name = credentials.get("userName")
    if isinstance(name, str) and name.strip():
        return _storable(name)
    problems.append("credentials.userName missing")
    embedded = raw.get("_embedded")
    user = embedded.get("user") if isinstance(embedded, dict) else None
    profile = user.get("profile") if isinstance(user, dict) else None
    login = profile.get("login") if isinstance(profile, dict) else None
    if isinstance(login, str) and login.strip():
        problems.append("app username taken from _embedded.user.profile.login")
        return _storable(login)
    problems.append("no application username")
    return ""


def normalize_assignment(raw: dict, *, valid_roles: frozenset[str]) -> AppAssignment:
    """An AppUser JSON object (`/api/v1/apps/{appId}/users`) as an AppAssignment."""
    user_id = _record_id(raw, "id", "Flex app user")
    problems: list[str] = []
    app_username = _app_username(raw, problems)
    profile = _object(raw, "profile", "profile", problems)
    roles, invalid = _roles_field(profile.get("roles"), valid_roles, "profile.roles", problems)
    return AppAssignment(
        okta_user_id=user_id,
        app_username=app_username,
        scope=_status(raw.get("scope"), "scope", problems),
        status=_status(raw.get("status"), "status", problems),
        roles=roles,
        invalid_roles=invalid,
        last_updated=_timestamp(raw.get("lastUpdated"), "lastUpdated", problems),
        problems=_problems(problems),
    )


def parse_attributes(raw: object) -> tuple[dict | None, str | None]:
    """(object, None) when `raw` is the JSON text of an object, else (None, why not)."""
    if raw is None:
        return None, "attributes are null"
    if isinstance(raw, dict):  # already decoded by a lenient client; still an object
        return raw, None
    if not isinstance(raw, str):
        return None, f"attributes are a JSON {_json_type(raw)}, not a string"
    try:
        value = fastjson.loads(raw)
    except RecursionError:
        return None, "attributes JSON is nested too deeply"
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        return None, f"attributes are not valid JSON ({str(exc)[:80]})"
    if not isinstance(value, dict):
        return None, f"attributes JSON is a {_json_type(value)}, not an object"
    return value, None


def _worker_text(value: object) -> str | None:
    """A worker attribute as stored: str kept (minus unstorable chars), other JSON as JSON text.

    Non-strings are rendered rather than dropped so a junk value shows up as drift.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return _storable(value)
    try:
        return _storable(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return f"<{_json_type(value)}>"


def parse_worker(raw: dict) -> Worker:
    """A TaskRouter worker JSON object as a Worker; its `attributes` JSON string is parsed defensively."""
    sid = _record_id(raw, "sid", "TaskRouter worker")
    name = raw.get("friendly_name")
    attributes_raw = raw.get("attributes")
    attrs, error = parse_attributes(attributes_raw)
    if isinstance(attributes_raw, dict):
        try:
            attributes_raw = json.dumps(attributes_raw, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            attributes_raw, attrs, error = None, None, "attributes are not JSON-serializable"
    elif not isinstance(attributes_raw, str):
        attributes_raw = None
    attrs = attrs or {}
    roles = attrs.get("roles")
    return Worker(
        worker_sid=sid,
        friendly_name=_storable(name) if isinstance(name, str) else (_text(name) or ""),
        attributes_raw=attributes_raw,
        full_name=_worker_text(attrs.get("full_name")),
        email=_worker_text(attrs.get("email")),
        image_url=_worker_text(attrs.get("image_url")),
        roles=None if roles is None else all_roles(roles),
        parse_error=error,
        date_updated=parse_timestamp(raw.get("date_updated")),
    )


def expected_claims(user: OktaUser, assignment: AppAssignment, *, role_source: str = "user_type") -> Expected:
    """What the next SSO login would write for this user and assignment."""
    if role_source == "user_type":
        roles, invalid = user.roles, user.invalid_roles
    elif role_source == "app_user":
        roles, invalid = assignment.roles, assignment.invalid_roles
    else:
        raise ValueError(f"role_source must be one of {ROLE_SOURCES}, not {role_source!r}")
    return Expected(
        okta_user_id=user.okta_user_id,
        login=user.login,
        app_username=assignment.app_username,
        status=user.status,
        full_name=user.full_name,
        email=user.email,
        image_url=user.image_url,
        roles=roles,
        invalid_roles=invalid,
    )
