"""Compare TaskRouter workers with what the next Flex SSO login would write, and say what drifted.

Pure code (stdlib, `okta_flex_sync.models.records` and the pure `okta_flex_sync.core.normalize` only).  The rules are the issue's, verbatim where it
was precise; where it left a choice, the choice is written next to the code that makes it:

* Join: worker `friendly_name` = the Flex app assignment's Application username
  (`credentials.userName`), case-insensitively (`username_key`).
* An assignment counts only while its app-user status is not one of `UNASSIGNED_STATUSES`.
  Exception: for a SUSPENDED/DEPROVISIONED Okta user every assignment record still names the
  worker's owner, because Okta moves a deactivated user's app users to a deprovisioned state
  and dropping them would turn a high `deactivated_user_has_worker` into a medium orphan.
* An assignment whose user is not in `users` (deleted from Okta) does not count: its worker is
  an orphan with no owner.  One without an application username counts (missing_worker,
  invalid_role) but matches no worker; a worker with an empty friendly_name is an orphan.
* Users in PENDING_STATUSES (STAGED, PROVISIONED) and unknown statuses get no findings at all.
* `orphan_worker` convention: `app_username` = the worker's friendly_name; when `find_owner`
  finds the Okta user it belongs to, `okta_user_id`/`login` are that user's and `expected` says
  how it was found ("matched by login" / "matched by email"); otherwise they are None.
* `deactivated_user_has_worker`: `field` = None, `actual` = the Okta status (SUSPENDED/DEPROVISIONED).
* `unparseable_attributes`: `field` = "attributes", `actual` = why they don't parse.
* `invalid_role`: one per user, `field` = "userType" (or "roles" with role_source=app_user),
  `actual` = the invalid values comma-joined, `expected` = the valid roles Flex will get.
* Attribute findings: `expected`/`actual` are the Okta and worker values (roles comma-joined,
  only roles in the valid list; wfo.* and other roles on the worker are not compared).
  `privilege_escalation` adds to `roles_mismatch`; its `actual` is the elevated roles Okta
  does not grant.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from okta_flex_sync.core.normalize import (
    ROLE_SOURCES,
    emails_equal,
    expected_claims,
    join_roles,
    names_equal,
    split_roles,
    urls_equal,
    username_key,
)
from okta_flex_sync.models.records import (
    ACTIVE_STATUSES,
    DEACTIVATED_STATUSES,
    FINDING_KINDS,
    KIND_RANK,
    SEVERITIES,
    SEVERITY_RANK,
    AppAssignment,
    Expected,
    Finding,
    OktaUser,
    Worker,
)

log = logging.getLogger(__name__)

SEVERITY = {
    "privilege_escalation": "high",
    "deactivated_user_has_worker": "high",
    "roles_mismatch": "medium",
    "invalid_role": "medium",
    "orphan_worker": "medium",
    "unparseable_attributes": "medium",
    "full_name_mismatch": "low",
    "email_mismatch": "low",
    "image_url_mismatch": "low",
    "missing_worker": "info",
}
ELEVATED_ROLES = frozenset({"admin", "supervisor"})
# App-user statuses that mean "no longer assigned" (AppUser.status in the Okta spec).
UNASSIGNED_STATUSES = frozenset({"INACTIVE", "UNASSIGNED", "DEPROVISIONED", "REVOKED"})



def _finding(kind: str, **fields) -> Finding:
    return Finding(kind=kind, severity=SEVERITY[kind], **fields)


def _sort_key(f: Finding) -> tuple:
    return (
        SEVERITY_RANK.get(f.severity, len(SEVERITIES)),
        KIND_RANK.get(f.kind, len(FINDING_KINDS)),
        f.app_username or "",
        f.worker_sid or "",
        f.field or "",
        f.okta_user_id or "",
    )


def _counts_as_assigned(assignment: AppAssignment, user: OktaUser | None) -> bool:
    if user is None:
        return False
    return assignment.status not in UNASSIGNED_STATUSES or user.status in DEACTIVATED_STATUSES


def assigned_by_username(
    users: Mapping[str, OktaUser], assignments: Iterable[AppAssignment]
) -> dict[str, tuple[AppAssignment, OktaUser]]:
    """username_key -> (assignment, user) for assignments that count; the first of duplicates wins."""
    out: dict[str, tuple[AppAssignment, OktaUser]] = {}
    seen_users: set[str] = set()
    for a in sorted(assignments, key=lambda a: a.okta_user_id):
        if a.okta_user_id in seen_users:  # a page fetched twice
            continue
        seen_users.add(a.okta_user_id)
        user = users.get(a.okta_user_id)
        if not _counts_as_assigned(a, user):
            continue
        # No application username: no worker can match, but the user still counts as assigned
        # (missing_worker, invalid_role).  A key with a control character is never a real key.
        key = username_key(a.app_username) or f"\x00{a.okta_user_id}"
        if key in out:
            log.warning("two Flex assignments share one application username; %s is kept",
                        out[key][0].okta_user_id)
            continue
        out[key] = (a, user)
    return out


def _active_unmatched(assigned, matched_keys) -> Iterable[tuple[AppAssignment, OktaUser]]:
    for key, (a, user) in assigned.items():
        if key not in matched_keys and user.status in ACTIVE_STATUSES:
            yield a, user


def _orphan(worker: Worker, find_owner: Callable[[str], OktaUser | None]) -> Finding:
    owner = find_owner(worker.friendly_name) if worker.friendly_name else None
    how = None
    if owner is not None:
        by_login = username_key(owner.login) == username_key(worker.friendly_name)
        how = "matched by login" if by_login else "matched by email"
    return _finding(
        "orphan_worker",
        okta_user_id=owner.okta_user_id if owner else None,
        login=owner.login if owner else None,
        app_username=worker.friendly_name,
        worker_sid=worker.worker_sid,
        expected=how,
    )


def compare_worker(worker: Worker, exp: Expected, valid_roles: frozenset[str]) -> list[Finding]:
    """Attribute findings for a parseable worker of an active user."""
    who = {
        "okta_user_id": exp.okta_user_id,
        "login": exp.login,
        "app_username": worker.friendly_name,
        "worker_sid": worker.worker_sid,
    }
    out = []
    want = frozenset(split_roles(exp.roles))
    have = frozenset(split_roles(worker.roles)) & valid_roles
    if have != want:
        out.append(_finding("roles_mismatch", field="roles", expected=exp.roles, actual=join_roles(have), **who))
        elevated = (have - want) & ELEVATED_ROLES
        if elevated:
            out.append(_finding("privilege_escalation", field="roles", expected=exp.roles,
                                actual=join_roles(elevated), **who))
    if not names_equal(worker.full_name, exp.full_name):
        out.append(_finding("full_name_mismatch", field="full_name", expected=exp.full_name,
                            actual=worker.full_name, **who))
    if not emails_equal(worker.email, exp.email):
        out.append(_finding("email_mismatch", field="email", expected=exp.email, actual=worker.email, **who))
    if not urls_equal(worker.image_url, exp.image_url):
        out.append(_finding("image_url_mismatch", field="image_url", expected=exp.image_url,
                            actual=worker.image_url, **who))
    return out


def reconcile(
    users: Mapping[str, OktaUser],
    assignments: Iterable[AppAssignment],
    workers: Iterable[Worker],
    *,
    role_source: str = "user_type",
    valid_roles: frozenset[str],
    find_owner: Callable[[str], OktaUser | None] = lambda name: None,
) -> list[Finding]:
    """Every finding, sorted by severity, kind, app username and worker sid.

    `users` holds at least every assigned user by id; `find_owner(friendly_name)` looks an Okta
    user up by login or email (case-insensitive) to say whose an orphan worker is.
    """
    if role_source not in ROLE_SOURCES:
        raise ValueError(f"role_source must be one of {ROLE_SOURCES}, not {role_source!r}")
    assigned = assigned_by_username(users, assignments)
    findings: list[Finding] = []
    matched_keys: set[str] = set()
    first_worker: dict[str, str] = {}  # user id -> sid of a worker, for invalid_role findings
    for worker in sorted(workers, key=lambda w: w.worker_sid):
        key = username_key(worker.friendly_name)
        hit = assigned.get(key) if key else None
        if hit is None:
            findings.append(_orphan(worker, find_owner))
            continue
        a, user = hit
        matched_keys.add(key)
        first_worker.setdefault(user.okta_user_id, worker.worker_sid)
        who = {"okta_user_id": user.okta_user_id, "login": user.login,
               "app_username": worker.friendly_name, "worker_sid": worker.worker_sid}
        if user.status in DEACTIVATED_STATUSES:
            findings.append(_finding("deactivated_user_has_worker", actual=user.status, **who))
        elif user.status not in ACTIVE_STATUSES:
            continue  # STAGED/PROVISIONED (or unknown): the next login is not theirs to make yet
        elif worker.parse_error is not None:
            findings.append(_finding("unparseable_attributes", field="attributes",
                                     actual=worker.parse_error, **who))
        else:
            exp = expected_claims(user, a, role_source=role_source)
            findings.extend(compare_worker(worker, exp, valid_roles))

    for a, user in _active_unmatched(assigned, matched_keys):
        findings.append(_finding("missing_worker", okta_user_id=user.okta_user_id, login=user.login,
                                 app_username=a.app_username))
    from_user_type = role_source == "user_type"
    for a, user in assigned.values():
        source = user if from_user_type else a
        if source.invalid_roles and user.status in ACTIVE_STATUSES:
            findings.append(_finding(
                "invalid_role", okta_user_id=user.okta_user_id, login=user.login, app_username=a.app_username,
                worker_sid=first_worker.get(user.okta_user_id), field="userType" if from_user_type else "roles",
                expected=source.roles, actual=source.invalid_roles,
            ))
    findings.sort(key=_sort_key)
    return findings


def summarize(findings: Iterable[Finding | Mapping]) -> dict[str, int]:
    """kind -> count: every known kind in FINDING_KINDS order (0 when none), unknown kinds after.
    Takes `Finding`s or their dict form (a stored report's findings)."""
    counts = dict.fromkeys(FINDING_KINDS, 0)
    for f in findings:
        kind = f.kind if isinstance(f, Finding) else f["kind"]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def expected_by_worker(
    users: Mapping[str, OktaUser],
    assignments: Iterable[AppAssignment],
    workers: Iterable[Worker],
    *,
    role_source: str = "user_type",
) -> dict[str, Expected]:
    """worker_sid -> Expected for every parseable worker matched to an active user (for repairs)."""
    assigned = assigned_by_username(users, assignments)
    out = {}
    for worker in workers:
        key = username_key(worker.friendly_name)
        hit = assigned.get(key) if key else None
        if hit is None or worker.parse_error is not None:
            continue
        a, user = hit
        if user.status in ACTIVE_STATUSES:
            out[worker.worker_sid] = expected_claims(user, a, role_source=role_source)
    return out
