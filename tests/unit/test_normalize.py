"""Normalizers: table-driven cases for every rule, hostile inputs, and Hypothesis invariants."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import unicodedata
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from okta_flex_sync.core.normalize import (
    MAX_TEXT,
    OKTA_USER_FIELDS,
    MalformedRecord,
    emails_equal,
    expected_claims,
    full_name,
    join_roles,
    names_equal,
    normalize_assignment,
    normalize_email,
    normalize_roles,
    normalize_text,
    normalize_user,
    parse_timestamp,
    parse_worker,
    split_roles,
    username_key,
)
from okta_flex_sync.models.records import OktaUser

VALID = frozenset({"agent", "admin", "supervisor"})
TEN_MB = "x" * (10 * 1024 * 1024)


def _storable(s: str | None) -> bool:
    """No character Postgres text or UTF-8 cannot hold."""
    return s is None or ("\x00" not in s and not any(0xD800 <= ord(c) <= 0xDFFF for c in s))


# --------------------------------------------------------------------------- purity


@pytest.mark.parametrize("module", ["okta_flex_sync.core.normalize", "okta_flex_sync.core.reconcile", "okta_flex_sync.core.repair_plan"])
def test_module_imports_no_framework(module):
    code = (
        f"import sys, {module}; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'httpx', 'sqlalchemy', 'pydantic'));"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize("value, expected", [
    ("Ann Veal", "Ann Veal"),
    ("  Ann   Veal ", "Ann Veal"),
    ("Ann\t\nVeal\r\n", "Ann Veal"),
    ("Ann\u00a0Veal", "Ann Veal"),  # NBSP counts as whitespace
    ("Ann\u3000\u2028Veal", "Ann Veal"),  # ideographic space, line separator
    ("Ann\x85Veal", "Ann Veal"),  # NEL is Unicode whitespace
    ("Zoe\u0308", "Zo\u00eb"),  # NFD -> NFC
    ("\u212b", "\u00c5"),  # singleton ANGSTROM SIGN -> A with ring
    ("\uff21", "\uff21"),  # fullwidth A: NFC, not NFKC
    ("A\x00nn", "Ann"),
    ("\x00", ""),
    ("Ann\x1b[31m", "Ann[31m"),  # ESC removed, the rest is text
    ("Ann\x9bVeal", "AnnVeal"),  # C1 control
    ("a\ud800b", "ab"),  # lone surrogate
    ("\U0001f469\u200d\U0001f4bb", "\U0001f469\u200d\U0001f4bb"),  # ZWJ kept
    ("", ""),
    ("   ", ""),
    (None, None),
    (5, None),
    (-1.5, None),
    (math.nan, None),
    (True, None),
    ([], None),
    ({}, None),
    (["Ann"], None),
])
def test_normalize_text(value, expected):
    assert normalize_text(value) == expected


def test_plain_alphabet_is_always_nfc():
    """The fast path trusts that any string of these characters is already NFC: check every pair."""
    alphabet = [chr(c) for c in range(0x21, 0x7F)] + [chr(c) for c in range(0xA1, 0x250)] + [" "]
    assert all(normalize_text(c) == c for c in alphabet if c != " ")
    assert all(unicodedata.is_normalized("NFC", a + b) for a in alphabet for b in alphabet)


@pytest.mark.parametrize("value", [TEN_MB, " " * 5000 + "x" * 5000, "é" * 3000, "a " * 4000])
def test_normalize_text_caps_huge_strings(value):
    out = normalize_text(value)
    assert len(out) <= MAX_TEXT
    assert normalize_text(out) == out


@pytest.mark.parametrize("first, last, expected", [
    ("Ann", "Veal", "Ann Veal"),
    ("  Ann ", " Veal  ", "Ann Veal"),
    ("Mary  Ann", "Veal", "Mary Ann Veal"),
    (None, "Veal", "Veal"),
    ("Ann", None, "Ann"),
    ("", "Veal", "Veal"),
    ("   ", "Veal", "Veal"),
    (None, None, ""),
    ("Zoe\u0308", "Veal", "Zo\u00eb Veal"),
    (5, "Veal", "Veal"),
    ({}, "Veal", "Veal"),
    ("Ann", ["Veal"], "Ann"),
])
def test_full_name(first, last, expected):
    assert full_name(first, last) == expected


@pytest.mark.parametrize("value, expected", [
    (" Ann@Example.COM ", "Ann@Example.COM"),
    ("", None),
    ("  ", None),
    (None, None),
    (["a@b.c"], None),
    ("a@b.c\x00", "a@b.c"),
])
def test_normalize_email(value, expected):
    assert normalize_email(value) == expected


@pytest.mark.parametrize("a, b, equal", [
    ("Ann@X.com", "ann@x.COM", True),
    (" ann@x.com", "ann@x.com ", True),
    (None, "", True),
    (None, None, True),
    ("ann@x.com", None, False),
    ("ann@x.com", "ann@y.com", False),
    ("STRASSE@x.de", "stra\u00dfe@x.de", True),  # casefold
])
def test_emails_equal(a, b, equal):
    assert emails_equal(a, b) is equal
    assert emails_equal(b, a) is equal


@pytest.mark.parametrize("a, b, equal", [
    ("Zo\u00eb Veal", "Zoe\u0308 Veal", True),
    ("Ann Veal", "  Ann   Veal ", True),
    ("Ann Veal", "Ann\u00a0Veal", True),
    ("Ann Veal", "ann veal", False),  # case in names is drift
    ("", None, True),
    ("Ann", None, False),
    ("Ann Veal", "Ann Veal Jr", False),
])
def test_names_equal(a, b, equal):
    assert names_equal(a, b) is equal


@pytest.mark.parametrize("name, key", [
    ("Ann@X.com", "ann@x.com"),
    ("ANN@X.COM", "ann@x.com"),
    (" ann@x.com", " ann@x.com"),  # identifiers are not trimmed
    ("", ""),
    (None, ""),
    (5, ""),
])
def test_username_key(name, key):
    assert username_key(name) == key


# --------------------------------------------------------------------------- roles


@pytest.mark.parametrize("value, valid, invalid", [
    (" Admin , agent,,AGENT", ("admin", "agent"), ()),
    ("agent", ("agent",), ()),
    ("supervisor,agent,admin", ("admin", "agent", "supervisor"), ()),
    ("agent,wfo.full_access", ("agent",), ("wfo.full_access",)),
    ("Agent\t,\u00a0admin\n", ("admin", "agent"), ()),
    ("super visor", (), ("super visor",)),
    ("\uff41gent", (), ("\uff41gent",)),  # fullwidth a is not agent
    ("", (), ()),
    (",,, ,", (), ()),
    (None, (), ()),
    (["admin", "Agent"], ("admin", "agent"), ()),
    (["admin,agent"], ("admin", "agent"), ()),
    ([None, "agent", 3, [], {}], ("agent",), ("3", "<array>", "<object>")),
    (5, (), ("5",)),
    ([1.5, math.inf, 10**5000], (), ("1.5", "<number>")),
    (True, (), ("true",)),
    ({"a": "admin"}, (), ("<object>",)),
    ("ag\x00ent", ("agent",), ()),  # controls are removed before comparing, as in every text
])
def test_normalize_roles(value, valid, invalid):
    assert normalize_roles(value, VALID) == (valid, invalid)


def test_normalize_roles_hostile_sizes():
    ok, bad = normalize_roles(TEN_MB, VALID)
    assert ok == () and len(bad) == 1 and len(bad[0]) <= MAX_TEXT
    ok, bad = normalize_roles(",".join(["agent"] + [f"r{i}" for i in range(5000)]), VALID)
    assert ok == ("agent",)


@pytest.mark.parametrize("roles, joined", [
    (["b", "a", "a"], "a,b"),
    ([], ""),
    (("agent",), "agent"),
])
def test_join_roles(roles, joined):
    assert join_roles(roles) == joined
    assert split_roles(joined) == tuple(sorted(set(roles)))


@pytest.mark.parametrize("s, parts", [("", ()), (None, ()), ("a, b,,", ("a", "b")), ("admin", ("admin",))])
def test_split_roles(s, parts):
    assert split_roles(s) == parts


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize("value, expected", [
    ("2024-05-01T12:34:56.789Z", datetime(2024, 5, 1, 12, 34, 56, 789000)),
    ("2024-05-01T12:34:56Z", datetime(2024, 5, 1, 12, 34, 56)),
    ("2024-05-01T14:34:56+02:00", datetime(2024, 5, 1, 12, 34, 56)),
    ("2024-05-01T12:34:56", datetime(2024, 5, 1, 12, 34, 56)),
    ("2024-05-01T12:34:56+02:00Z", None),
    ("0001-01-01T00:00:00+01:00", None),  # before datetime.min in UTC
    ("yesterday", None),
    ("", None),
    (None, None),
    (1714566896, None),
    ("2024-05-01T12:34:56Z" * 100, None),
])
def test_parse_timestamp(value, expected):
    assert parse_timestamp(value) == expected


# --------------------------------------------------------------------------- users


def _user(**profile):
    base = {"login": "ann@x.com", "email": "Ann@X.com", "firstName": "Ann", "lastName": "Veal", "userType": "agent"}
    base.update(profile)
    return {"id": "00u1", "status": "ACTIVE", "lastUpdated": "2024-05-01T12:34:56.000Z", "profile": base}


@pytest.mark.parametrize("raw, field, value, problem", [
    (_user(), "full_name", "Ann Veal", ""),
    (_user(), "last_updated", datetime(2024, 5, 1, 12, 34, 56), ""),
    (_user(), "roles", "agent", ""),
    (_user(userType="Admin , agent,,AGENT,manager"), "roles", "admin,agent", ""),
    (_user(userType="Admin , agent,,AGENT,manager"), "invalid_roles", "manager", ""),
    (_user(userType="Admin , agent"), "user_type", "Admin , agent", ""),
    (_user(userType=None), "roles", "", ""),
    (_user(userType=["admin"]), "roles", "admin", ""),
    (_user(userType=7), "invalid_roles", "7", "profile.userType: number"),
    (_user(userType=7), "user_type", None, "profile.userType: number"),
    (_user(userType="a" * 100_000), "invalid_roles", "a" * MAX_TEXT, "profile.userType: truncated"),
    (_user(userType=",".join(f"r{i}" for i in range(200))), "invalid_roles",
     ",".join(sorted(f"r{i}" for i in range(200))[:50]), "200 invalid values"),
    (_user(firstName="Zoe\u0308", lastName=" Veal\t"), "full_name", "Zo\u00eb Veal", ""),
    (_user(firstName=None), "full_name", "Veal", ""),
    (_user(firstName=5), "full_name", "Veal", "profile.firstName: number instead of a string"),
    (_user(firstName={"x": 1}), "full_name", "Veal", "profile.firstName: object"),
    (_user(firstName="A\x00nn"), "full_name", "Ann Veal", "profile.firstName: control characters removed"),
    (_user(lastName=TEN_MB), "full_name", ("Ann " + TEN_MB)[:MAX_TEXT], "profile.lastName: truncated"),
    (_user(login=None), "login", "00u1", "profile.login missing"),
    (_user(login="  "), "login", "00u1", "profile.login missing"),
    (_user(login=["a"]), "login", "00u1", "profile.login: array"),
    (_user(email=""), "email", None, ""),
    (_user(email=" Ann@X.com "), "email", "Ann@X.com", ""),
    (_user(imageUrl="https://i/a.png"), "image_url", "https://i/a.png", ""),
    (_user(imageUrl=""), "image_url", None, ""),
    (_user(imageUrl=False), "image_url", None, "profile.imageUrl: boolean"),
    ({"id": "00u1", "profile": {"login": "a"}}, "status", "UNKNOWN", "status missing"),
    ({"id": "00u1", "status": "suspended", "profile": {"login": "a"}}, "status", "SUSPENDED", ""),
    ({"id": "00u1", "status": 3, "profile": {"login": "a"}}, "status", "UNKNOWN", "status: number"),
    ({"id": "00u1", "status": "ACTIVE", "profile": "junk"}, "login", "00u1", "profile: string instead of an object"),
    ({"id": "00u1", "status": "ACTIVE", "profile": None}, "full_name", "", "login missing"),
    ({"id": "00u1", "status": "ACTIVE", "lastUpdated": "soon"}, "last_updated", None, "lastUpdated: not an ISO"),
    ({"id": "00u1", "status": "ACTIVE", "lastUpdated": "2024-05-01T14:00:00+02:00", "profile": {"login": "a"}},
     "last_updated",
     datetime(2024, 5, 1, 12), ""),
])
def test_normalize_user(raw, field, value, problem):
    user = normalize_user(raw, valid_roles=VALID)
    assert getattr(user, field) == value
    if problem:
        assert problem in user.problems
    else:
        assert user.problems == ""


def test_okta_user_field_order_matches_positional_construction():
    assert tuple(f.name for f in dataclasses.fields(OktaUser)) == OKTA_USER_FIELDS


def test_normalize_user_custom_image_attribute():
    raw = _user(photo="https://i/p.png", imageUrl="https://i/ignored.png")
    assert normalize_user(raw, valid_roles=VALID, image_url_attribute="photo").image_url == "https://i/p.png"


@pytest.mark.parametrize("raw", [
    None, [], "00u1", 5, {}, {"id": None}, {"id": ""}, {"id": "   "}, {"id": 5}, {"id": ["00u1"]},
    {"id": "00u\x001"}, {"id": "x" * 1000},
])
def test_normalize_user_malformed(raw):
    with pytest.raises(MalformedRecord):
        normalize_user(raw, valid_roles=VALID)


# --------------------------------------------------------------------------- assignments


def _app_user(**over):
    base = {"id": "00u1", "status": "ACTIVE", "scope": "USER", "credentials": {"userName": "Ann@X.com"},
            "profile": {"roles": ["agent"]}, "lastUpdated": "2024-05-01T12:00:00.000Z"}
    base.update(over)
    return base


@pytest.mark.parametrize("raw, field, value, problem", [
    (_app_user(), "app_username", "Ann@X.com", ""),
    (_app_user(), "roles", "agent", ""),
    (_app_user(), "scope", "USER", ""),
    (_app_user(), "last_updated", datetime(2024, 5, 1, 12), ""),
    (_app_user(profile={"roles": "Admin, agent"}), "roles", "admin,agent", ""),
    (_app_user(profile={"roles": ["admin", "wfo.full_access"]}), "invalid_roles", "wfo.full_access", ""),
    (_app_user(profile={}), "roles", "", ""),
    (_app_user(profile=None), "roles", "", ""),
    (_app_user(profile=[]), "roles", "", "profile: array"),
    (_app_user(profile={"roles": {"a": 1}}), "invalid_roles", "<object>", "profile.roles: object"),
    (_app_user(status="inactive"), "status", "INACTIVE", ""),
    (_app_user(status=None), "status", None, ""),
    (_app_user(credentials={}, _embedded={"user": {"profile": {"login": "ann@x.com"}}}),
     "app_username", "ann@x.com", "taken from _embedded.user.profile.login"),
    (_app_user(credentials=None), "app_username", "", "no application username"),
    (_app_user(credentials={"userName": 5}), "app_username", "", "credentials.userName missing"),
    (_app_user(credentials={"userName": "ann\x00@x.com"}), "app_username", "ann@x.com", ""),
])
def test_normalize_assignment(raw, field, value, problem):
    a = normalize_assignment(raw, valid_roles=VALID)
    assert getattr(a, field) == value
    if problem:
        assert problem in a.problems
    else:
        assert a.problems == ""


@pytest.mark.parametrize("raw", [None, [], {"credentials": {"userName": "a"}}, {"id": 1}, {"id": ""}])
def test_normalize_assignment_malformed(raw):
    with pytest.raises(MalformedRecord):
        normalize_assignment(raw, valid_roles=VALID)


# --------------------------------------------------------------------------- workers


def _worker(attributes, **over):
    base = {"sid": "WK1", "friendly_name": "ann@x.com", "attributes": attributes,
            "date_updated": "2024-05-01T12:00:00Z"}
    base.update(over)
    return base


GOOD = json.dumps({"full_name": "Ann Veal", "email": "ann@x.com", "image_url": "https://i/a.png",
                   "roles": ["agent", "wfo.full_access"], "routing": {"skills": ["en"]}})


@pytest.mark.parametrize("raw, field, value", [
    (_worker(GOOD), "full_name", "Ann Veal"),
    (_worker(GOOD), "email", "ann@x.com"),
    (_worker(GOOD), "image_url", "https://i/a.png"),
    (_worker(GOOD), "roles", "agent,wfo.full_access"),
    (_worker(GOOD), "parse_error", None),
    (_worker(GOOD), "attributes_raw", GOOD),
    (_worker(GOOD), "date_updated", datetime(2024, 5, 1, 12)),
    (_worker('{"roles": "Admin, wfo.x"}'), "roles", "admin,wfo.x"),
    (_worker('{"roles": ["b", "a", "A"]}'), "roles", "a,b"),
    (_worker('{"roles": []}'), "roles", ""),
    (_worker('{"roles": [1, null, {}]}'), "roles", "1,<object>"),
    (_worker("{}"), "roles", None),
    (_worker("{}"), "full_name", None),
    (_worker('{"email": 5}'), "email", "5"),
    (_worker('{"full_name": {"a": 1}}'), "full_name", '{"a": 1}'),
    (_worker('{"full_name": true}'), "full_name", "true"),
    (_worker('{"full_name": "Ann\\u0000"}'), "full_name", "Ann"),
    (_worker('{"full_name": "Ann", "full_name": "Bob"}'), "full_name", "Bob"),  # last duplicate wins
    (_worker({"email": "a@b.c"}), "email", "a@b.c"),  # an already-decoded object is accepted
    (_worker(GOOD, friendly_name=None), "friendly_name", ""),
    (_worker(GOOD, friendly_name="Ann@X.com"), "friendly_name", "Ann@X.com"),
    (_worker(GOOD, date_updated="junk"), "date_updated", None),
])
def test_parse_worker(raw, field, value):
    assert getattr(parse_worker(raw), field) == value


@pytest.mark.parametrize("attributes, reason", [
    ("[]", "array"),
    ("null", "null"),
    ("5", "number"),
    ('"{}"', "string"),
    ("NaN", "number"),
    ("{", "not valid JSON"),
    ("", "not valid JSON"),
    ('{"a": 1} trailing', "not valid JSON"),
    ("[" * 100_000, "nested too deeply"),
    ("1" * 5000, "not valid JSON"),
    (None, "null"),
    (42, "not a string"),
    (["roles"], "not a string"),
])
def test_parse_worker_unparseable(attributes, reason):
    w = parse_worker(_worker(attributes))
    assert reason in w.parse_error
    assert (w.full_name, w.email, w.image_url, w.roles) == (None, None, None, None)


@pytest.mark.parametrize("raw", [None, [], {"friendly_name": "a"}, {"sid": ""}, {"sid": 7}])
def test_parse_worker_malformed(raw):
    with pytest.raises(MalformedRecord):
        parse_worker(raw)


# --------------------------------------------------------------------------- expected claims


@pytest.mark.parametrize("role_source, roles, invalid", [
    ("user_type", "agent", "manager"),
    ("app_user", "admin", "wfo.full_access"),
])
def test_expected_claims(role_source, roles, invalid):
    user = normalize_user(_user(userType="agent,manager", imageUrl="https://i/a.png"), valid_roles=VALID)
    a = normalize_assignment(_app_user(profile={"roles": ["admin", "wfo.full_access"]}), valid_roles=VALID)
    exp = expected_claims(user, a, role_source=role_source)
    assert (exp.roles, exp.invalid_roles) == (roles, invalid)
    assert (exp.full_name, exp.email, exp.image_url, exp.app_username) == (
        "Ann Veal", "Ann@X.com", "https://i/a.png", "Ann@X.com")


def test_expected_claims_rejects_unknown_role_source():
    user = normalize_user(_user(), valid_roles=VALID)
    a = normalize_assignment(_app_user(), valid_roles=VALID)
    with pytest.raises(ValueError, match="role_source"):
        expected_claims(user, a, role_source="groups")


# --------------------------------------------------------------------------- properties

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
hostile_text = st.text(alphabet=st.characters(), max_size=60) | st.sampled_from(
    ["\u00a0", "\u2028", "e\u0301", "\x00", "\ud800", " ,", "\u0130", "\u1e9e", "\ufb01"])


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_normalize_text_total_and_idempotent(value):
    out = normalize_text(value)
    assert out is None or isinstance(out, str)
    if out is not None:
        assert normalize_text(out) == out
        assert out == out.strip() and "  " not in out and len(out) <= MAX_TEXT
        assert unicodedata.is_normalized("NFC", out) and _storable(out)


@settings(max_examples=200, deadline=None)
@given(st.lists(hostile_text, max_size=5).map("".join))
def test_normalize_text_idempotent_on_hostile_unicode(s):
    out = normalize_text(s)
    assert normalize_text(out) == out and _storable(out)


@settings(max_examples=200, deadline=None)
@given(json_values | st.lists(hostile_text, max_size=6) | st.lists(hostile_text, max_size=6).map(",".join))
def test_normalize_roles_invariants(value):
    ok, bad = normalize_roles(value, VALID)
    assert list(ok) == sorted(set(ok)) and list(bad) == sorted(set(bad))
    assert set(ok) <= VALID and not set(bad) & VALID
    assert all(r and "," not in r for r in ok + bad)
    assert normalize_roles(",".join(ok + bad), VALID) == (ok, bad)
    assert normalize_roles(list(ok + bad), VALID) == (ok, bad)


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
def test_full_name_idempotent(first, last):
    name = full_name(first, last)
    assert full_name(name, None) == name and names_equal(name, name)


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
def test_emails_equal_is_symmetric_and_reflexive(a, b):
    assert emails_equal(a, b) == emails_equal(b, a)
    assert emails_equal(a, a)


profiles = st.dictionaries(
    st.sampled_from(["login", "email", "firstName", "lastName", "userType", "imageUrl", "other"]),
    json_values | hostile_text)


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({"id": st.text(min_size=1, max_size=20)},
                             optional={"status": json_values, "profile": profiles | json_values,
                                       "lastUpdated": json_values | st.sampled_from(["2024-05-01T12:00:00Z"])}))
def test_normalize_user_never_raises_anything_else(raw):
    try:
        user = normalize_user(raw, valid_roles=VALID)
    except MalformedRecord:
        return
    assert user.okta_user_id == raw["id"] and user.login and user.status
    for value in (user.login, user.email, user.full_name, user.user_type, user.roles, user.invalid_roles,
                  user.image_url, user.problems):
        assert value is None or (isinstance(value, str) and _storable(value))
    assert set(split_roles(user.roles)) <= VALID


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({"id": st.just("00u1")},
                             optional={"credentials": st.dictionaries(st.just("userName"), json_values | hostile_text)
                                       | json_values,
                                       "profile": st.dictionaries(st.just("roles"), json_values) | json_values,
                                       "status": json_values, "scope": json_values, "_embedded": json_values}))
def test_normalize_assignment_never_raises(raw):
    a = normalize_assignment(raw, valid_roles=VALID)
    assert isinstance(a.app_username, str) and _storable(a.app_username)


@settings(max_examples=200, deadline=None)
@given(json_values.map(lambda v: json.dumps(v)) | st.text(max_size=40) | json_values,
       json_values | hostile_text)
def test_parse_worker_never_raises(attributes, name):
    w = parse_worker({"sid": "WK1", "friendly_name": name, "attributes": attributes})
    if w.parse_error is None:
        assert isinstance(json.loads(w.attributes_raw), dict)
    else:
        assert (w.full_name, w.email, w.image_url, w.roles) == (None, None, None, None)
    for value in (w.full_name, w.email, w.image_url, w.roles, w.friendly_name):
        assert value is None or (isinstance(value, str) and _storable(value))


_LOOSE = st.one_of(st.none(), st.integers(), st.text(alphabet=st.sampled_from(list("aA é\u0065\u0301 \t\x00Zß")), max_size=8))


@given(_LOOSE, _LOOSE)
def test_equality_helpers_agree_with_normalizing_both_sides(a, b):
    """The `a == b` shortcut in names_equal/emails_equal/urls_equal changes no answer."""
    from okta_flex_sync.core.normalize import (
        emails_equal,
        names_equal,
        normalize_email,
        normalize_text,
        urls_equal,
    )

    assert names_equal(a, b) == ((normalize_text(a) or "") == (normalize_text(b) or ""))
    assert urls_equal(a, b) == ((normalize_text(a) or "") == (normalize_text(b) or ""))
    assert emails_equal(a, b) == ((normalize_email(a) or "").casefold() == (normalize_email(b) or "").casefold())
