"""Typed records that flow between pipeline stages.

Pure dataclasses: no SQLAlchemy, httpx or Prefect here, so normalization and reconciliation
can be tested on their own.  Field names match the columns of the staging tables in
`okta_flex_sync.models.tables` so a record can be written with `dataclasses.asdict`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# The end of a role-history period that has not ended (the current row).  Far-future instead of
# NULL so "valid at T" is one range test and (user, valid_to) can be unique.
VALID_TO_CURRENT = datetime(9999, 12, 31)

# Severity levels, highest first.
SEVERITIES = ("high", "medium", "low", "info")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}  # 0 is the most severe

FINDING_KINDS = (
    "privilege_escalation",
    "deactivated_user_has_worker",
    "roles_mismatch",
    "invalid_role",
    "orphan_worker",
    "unparseable_attributes",
    "full_name_mismatch",
    "email_mismatch",
    "image_url_mismatch",
    "missing_worker",
)
# Report and repair order of the kinds (most urgent first); unknown kinds sort after these.
KIND_RANK = {k: i for i, k in enumerate(FINDING_KINDS)}

# Okta statuses in which the user can sign in through SSO (the "active" side).
ACTIVE_STATUSES = frozenset({"ACTIVE", "PASSWORD_EXPIRED", "LOCKED_OUT", "RECOVERY"})
# Okta statuses of users who cannot (yet) sign in but are not deactivated.
PENDING_STATUSES = frozenset({"STAGED", "PROVISIONED"})
# Okta statuses of users who must not keep Flex access.
DEACTIVATED_STATUSES = frozenset({"SUSPENDED", "DEPROVISIONED"})


@dataclass(frozen=True, slots=True)
class OktaUser:
    """An Okta user reduced to what the Flex SSO claims are built from."""

    okta_user_id: str
    status: str
    login: str
    email: str | None
    full_name: str
    user_type: str | None  # the raw userType, kept for audit
    roles: str  # valid roles from userType, sorted and comma-joined ("" when none)
    invalid_roles: str  # values outside the valid list, sorted and comma-joined
    image_url: str | None
    last_updated: datetime | None
    problems: str = ""  # "; "-joined notes about malformed input, "" when clean


@dataclass(frozen=True, slots=True)
class AppAssignment:
    """One assignment of the Flex SAML app (`GET /api/v1/apps/{appId}/users`)."""

    okta_user_id: str
    app_username: str  # credentials.userName, the SAML NameID and the worker's friendly_name
    scope: str | None  # USER or GROUP
    status: str | None
    roles: str  # valid roles from the app user's profile.roles (used when ROLE_SOURCE=app_user)
    invalid_roles: str
    last_updated: datetime | None
    problems: str = ""


@dataclass(frozen=True, slots=True)
class Worker:
    """A TaskRouter worker with its attributes parsed defensively."""

    worker_sid: str
    friendly_name: str
    attributes_raw: str | None  # exactly as TaskRouter returned it
    full_name: str | None  # parsed SSO-managed attributes (None when absent or unparseable)
    email: str | None
    image_url: str | None
    roles: str | None  # the worker's roles sorted and comma-joined, all of them (incl. wfo.*)
    parse_error: str | None  # why attributes are not a JSON object, None when they are
    date_updated: datetime | None = None


@dataclass(frozen=True, slots=True)
class Expected:
    """What the next SSO login would write into the worker's attributes."""

    okta_user_id: str
    login: str
    app_username: str
    status: str
    full_name: str
    email: str | None
    image_url: str | None
    roles: str
    invalid_roles: str


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    severity: str
    okta_user_id: str | None = None
    login: str | None = None
    app_username: str | None = None
    worker_sid: str | None = None
    field: str | None = None
    expected: str | None = None
    actual: str | None = None

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "okta_user_id": self.okta_user_id,
            "login": self.login,
            "app_username": self.app_username,
            "worker_sid": self.worker_sid,
            "field": self.field,
            "expected": self.expected,
            "actual": self.actual,
        }


