"""What each finding kind means, which columns say what, and what an admin runs next.

Data, not logic: the report renderers read it.  Commands are exact: `--max-changes N` is the
number of workers that command would change (repair refuses when more than MAX_CHANGES would).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from models.records import FINDING_KINDS
from tasks.repair_plan import REPAIRABLE

REPAIR, STRIP, DELETE = "repair", "strip", "delete"


@dataclass(frozen=True)
class KindGuide:
    meaning: str
    # (header, finding field) of the columns shown for this kind, after the user and the worker;
    # every row of a kind shows the same thing under the same header.  For orphan_worker the
    # "Okta user" column is the user the worker's name points to, if any (none: nobody found).
    columns: tuple[tuple[str, str], ...]
    remedy: str  # what to do; "{repair}", "{strip}" and "{delete}" become exact commands
    fix_in_okta: bool = False  # the fix is a change in Okta, not in TaskRouter


GUIDE: dict[str, KindGuide] = {
    "privilege_escalation": KindGuide(
        "The worker holds admin or supervisor rights that Okta does not grant; they last until the "
        "person's next SSO login, or forever if they never log in again.",
        (("Roles Okta grants", "expected"), ("Elevated roles on the worker", "actual")),
        "Repair the workers' roles: {repair}"),
    "deactivated_user_has_worker": KindGuide(
        "The Okta user is suspended or deprovisioned but still has a Flex worker with its roles.",
        (("Okta status", "actual"),),
        "Remove the user's Flex assignment in Okta; to take the Flex roles off the workers now: {strip}",
        fix_in_okta=True),
    "roles_mismatch": KindGuide(
        "The worker's Flex roles differ from what the next SSO login would write from Okta.",
        (("Roles in Okta", "expected"), ("Roles on the worker", "actual")),
        "Repair the workers: {repair}"),
    "invalid_role": KindGuide(
        "Okta holds role values Flex does not accept (dropped at login); the user gets only the valid ones.",
        (("Okta attribute", "field"), ("Roles Flex will get", "expected"), ("Values Flex rejects", "actual")),
        "Correct the user's roles in Okta, or add the value to VALID_ROLES if Flex should accept it.",
        fix_in_okta=True),
    "orphan_worker": KindGuide(
        "A worker that no active Flex assignment in Okta names: someone who left, was unassigned or renamed.",
        (("Worker name", "app_username"), ("Okta user found by", "expected")),
        "Assign the Flex app in Okta to the owner if they should keep Flex; otherwise delete the workers: {delete}"),
    "unparseable_attributes": KindGuide(
        "The worker's attributes are not a JSON object: Flex routing and this tool cannot read them.",
        (("Why they do not parse", "actual"),),
        "Fix the worker's attributes in the Twilio console; the next SSO login then rewrites the SSO fields."),
    "full_name_mismatch": KindGuide(
        "The worker shows another name than Okta's (a rename that has not reached Flex).",
        (("Name in Okta", "expected"), ("Name on the worker", "actual")),
        "Repair the workers: {repair}"),
    "email_mismatch": KindGuide(
        "The worker's email differs from Okta's.",
        (("Email in Okta", "expected"), ("Email on the worker", "actual")),
        "Repair the workers: {repair}"),
    "image_url_mismatch": KindGuide(
        "The worker's picture URL differs from Okta's.",
        (("Image URL in Okta", "expected"), ("Image URL on the worker", "actual")),
        "Repair the workers: {repair}"),
    "missing_worker": KindGuide(
        "Assigned to Flex in Okta and active, but without a worker yet: Flex creates it at the first SSO login.",
        (),
        "Nothing to do unless the user should already be taking tasks: ask them to sign in to Flex once."),
}
UNKNOWN = KindGuide("A finding kind this version of the report does not describe.",
                    (("Field", "field"), ("Expected", "expected"), ("Actual", "actual")),
                    "See the okta-flex-sync documentation for this kind.")


def guide_for(kind: str) -> KindGuide:
    return GUIDE.get(kind, UNKNOWN)


def planned_changes(findings: Sequence[Mapping]) -> dict[str, int]:
    """How many workers each repair command would change, from the findings alone (as the repair
    planner counts them: one write per worker, whatever the number of its findings)."""
    repair = {f["worker_sid"] for f in findings if f["kind"] in REPAIRABLE and f.get("worker_sid")}
    deactivated = {f["worker_sid"] for f in findings
                   if f["kind"] == "deactivated_user_has_worker" and f.get("worker_sid")}
    orphans = {f["worker_sid"] for f in findings if f["kind"] == "orphan_worker" and f.get("worker_sid")}
    return {REPAIR: len(repair), STRIP: len(repair | deactivated), DELETE: len(repair | deactivated | orphans)}


def command(flags: str, changes: int, max_changes: int) -> str:
    """The exact command: with `--max-changes N` only when N exceeds the configured limit."""
    cmd = f"okta-flex-sync run --apply{flags}"
    return f"{cmd} --max-changes {changes}" if changes > max_changes else cmd


def next_steps(findings: Sequence[Mapping], *, max_changes: int = 25) -> list[dict]:
    """One entry per kind with findings, most severe first: counts, meaning and the remedy."""
    changes = planned_changes(findings)
    commands = {REPAIR: command("", changes[REPAIR], max_changes),
                STRIP: command(" --strip-deactivated", changes[STRIP], max_changes),
                DELETE: command(" --delete-orphan-workers", changes[DELETE], max_changes)}
    by_kind: dict[str, dict] = {}
    for f in findings:
        entry = by_kind.setdefault(f["kind"], {"kind": f["kind"], "severity": f["severity"], "count": 0, "new": 0})
        entry["count"] += 1
        entry["new"] += f.get("status") == "new"
    rank = {k: i for i, k in enumerate(FINDING_KINDS)}
    out = []
    for kind in sorted(by_kind, key=lambda k: (rank.get(k, len(rank)), k)):
        g = guide_for(kind)
        out.append(by_kind[kind] | {"meaning": g.meaning, "remedy": g.remedy.format(**commands),
                                    "commands": [commands[k] for k in (REPAIR, STRIP, DELETE)
                                                 if "{" + k + "}" in g.remedy]})
    return out
