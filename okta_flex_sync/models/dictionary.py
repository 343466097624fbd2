"""The data dictionary: every table, view and column of the schema, with its type and meaning.

Pure data.  `okta_flex_sync.models.tables` copies it onto the tables as comments, the 0003 migration writes it
to Postgres with `COMMENT ON`, `okta_flex_sync.analytics.dictionary_markdown` renders it, and
`tests/integration/test_data_dictionary.py` fails when it and the schema drift apart.

Types are logical: `text`, `integer`, `boolean`, `timestamp` (UTC, naive in storage: on SQLite
text `YYYY-MM-DD HH:MM:SS.ffffff`, on Postgres `timestamp without time zone`), `json`, `bytes`.
"""
from __future__ import annotations

import sys
from typing import NamedTuple


class Entry(NamedTuple):
    kind: str  # table or view
    meaning: str
    columns: dict[str, tuple[str, str]]  # name -> (type, meaning)


TIMESTAMP_FORM = "YYYY-MM-DD HH:MM:SS.ffffff"
OPEN_PERIOD = "9999-12-31 00:00:00"

_RUN = ("text", "Run id (`sync_runs.run_id`).")
_USER_ID = ("text", "Okta user id (`00u…`).")

_USER_COLUMNS = {
    "okta_user_id": _USER_ID,
    "status": ("text", "Okta lifecycle status (ACTIVE, SUSPENDED, DEPROVISIONED, …)."),
    "login": ("text", "Okta login (normalized text, at most 1,024 characters)."),
    "email": ("text", "Primary email, or NULL."),
    "full_name": ("text", "Full name as the SSO `full_name` claim would carry it."),
    "user_type": ("text", "Okta `userType` as received (normalized text)."),
    "roles": ("text", "Valid Flex roles as the SSO `roles` claim: comma-separated, no spaces, e.g. `admin,agent`; empty for none."),
    "invalid_roles": ("text", "Role values not in VALID_ROLES, comma-separated."),
    "image_url": ("text", "Value of IMAGE_URL_ATTRIBUTE, or NULL."),
    "last_updated": ("timestamp", "Okta's `lastUpdated` of the user, UTC."),
    "problems": ("text", "Data problems found while normalizing (wrong types, control characters, truncation); empty when none."),
}

DICTIONARY: dict[str, Entry] = {
    "sync_runs": Entry("table", "One row per run of any flow (nightly-sync, backfill, reconcile, watch, evidence).", {
        "run_id": ("text", "Run id: UTC start time and a random suffix."),
        "flow": ("text", "Flow that ran: nightly-sync, backfill, reconcile, watch or evidence."),
        "org_url": ("text", "Okta org URL the run read, or NULL."),
        "started_at": ("timestamp", "When the run started, UTC."),
        "finished_at": ("timestamp", "When the run ended, UTC; NULL while running."),
        "status": ("text", "running, succeeded, failed, aborted or abandoned."),
        "parameters": ("json", "The run's parameters (full, apply, range, …)."),
        "counts": ("json", "Counts and timings of the run (users, assignments, workers, requests, findings, …)."),
        "watermarks": ("json", "Watermarks the run read and wrote."),
        "error": ("text", "One-line error of a failed or aborted run, else NULL."),
        "workspace_sid": ("text", "TaskRouter workspace SID the run read (`WS…`), or NULL; runs are compared with the previous run of the same org and workspace."),
    }),
    "staged_okta_users": Entry("table", "Normalized Okta users as one run pulled them (kept STAGING_RETENTION_RUNS runs).",
                               {"run_id": _RUN, **_USER_COLUMNS}),
    "okta_users": Entry("table", "The latest known state of every Okta user (all statuses), refreshed by every committed run.",
                        {**_USER_COLUMNS, "run_id": ("text", "The run that last saw this user.")}),
    "staged_app_assignments": Entry("table", "The Flex app's user assignments as one run pulled them.", {
        "run_id": _RUN,
        "okta_user_id": _USER_ID,
        "app_username": ("text", "The app user's username (the SAML subject Flex sees)."),
        "scope": ("text", "USER (direct) or GROUP (through a group)."),
        "status": ("text", "App user status (ACTIVE, PROVISIONED, …); some statuses mean unassigned."),
        "roles": ("text", "Valid roles of the app user's `profile.roles`, comma-separated (used with ROLE_SOURCE=app_user)."),
        "invalid_roles": ("text", "Role values not in VALID_ROLES, comma-separated."),
        "last_updated": ("timestamp", "Okta's `lastUpdated` of the app user, UTC."),
        "problems": ("text", "Data problems found while normalizing; empty when none."),
    }),
    "staged_workers": Entry("table", "TaskRouter workers as one run pulled them.", {
        "run_id": _RUN,
        "worker_sid": ("text", "Worker SID (`WK…`)."),
        "friendly_name": ("text", "Worker friendly name (the Flex login)."),
        "attributes_raw": ("text", "Worker attributes JSON as received (NUL and lone surrogates escaped)."),
        "full_name": ("text", "`full_name` attribute, or NULL."),
        "email": ("text", "`email` attribute, or NULL."),
        "image_url": ("text", "`image_url` attribute, or NULL."),
        "roles": ("text", "`roles` attribute, comma-separated, or NULL."),
        "parse_error": ("text", "Why the attributes could not be parsed, else NULL."),
        "date_updated": ("timestamp", "TaskRouter's `date_updated`, UTC."),
    }),
    "raw_pages": Entry("table", "Every API page as received (gzip), kept RAW_PAGE_RETENTION_DAYS for backfills.", {
        "run_id": _RUN,
        "source": ("text", "users, assignments, workers or logs."),
        "seq": ("integer", "Page number within the run and source, from 0."),
        "fetched_at": ("timestamp", "When the page arrived, UTC."),
        "url": ("text", "Request URL (never carries credentials)."),
        "item_count": ("integer", "Records in the page."),
        "body_gz": ("bytes", "The response body, gzip-compressed."),
    }),
    "watermarks": Entry("table", "Per org and stream: how far incremental pulls and System Log reads have got.", {
        "org_url": ("text", "Okta org URL."),
        "stream": ("text", "users (the `lastUpdated` watermark) or a System Log day mark."),
        "value": ("timestamp", "The watermark, UTC."),
        "run_id": ("text", "Run that set it."),
        "updated_at": ("timestamp", "When it was set, UTC."),
    }),
    "role_history": Entry("table", "Point-in-time role history (SCD type 2): one row per tracked user per period in which "
                          "login, app username, status, assignment, roles, name and email stayed the same. A user's rows "
                          "are contiguous: each ends where the next begins.", {
        "id": ("integer", "Row id."),
        "okta_user_id": _USER_ID,
        "login": ("text", "Okta login during the period."),
        "app_username": ("text", "Flex app username during the period, or NULL."),
        "status": ("text", "Okta status during the period; DELETED once the user is gone from Okta."),
        "assigned": ("boolean", "Whether the user was assigned to the Flex app."),
        "roles": ("text", "Flex roles during the period, comma-separated as in the SSO claim; empty when unassigned."),
        "full_name": ("text", "Full name during the period."),
        "email": ("text", "Email during the period, or NULL."),
        "valid_from": ("timestamp", "Start of the period (inclusive), UTC. A user's first row starts at Okta's `lastUpdated` "
                       "when the pipeline first saw them, which may be long before the pipeline existed."),
        "valid_to": ("timestamp", f"End of the period (exclusive), UTC; `{OPEN_PERIOD}` while current."),
        "run_id": ("text", "Run that wrote the row."),
        "source": ("text", "nightly, backfill or watch (a System Log poll, dated by the event)."),
    }),
    "drift_findings": Entry("table", "Findings of each reconciliation of TaskRouter workers against Okta.", {
        "id": ("integer", "Row id."),
        "run_id": _RUN,
        "kind": ("text", "missing_worker, orphan_worker, roles_mismatch, privilege_escalation, … (see the report)."),
        "severity": ("text", "high, medium, low or info."),
        "okta_user_id": ("text", "Okta user id, or NULL for workers without an Okta owner."),
        "login": ("text", "Okta login, or NULL."),
        "app_username": ("text", "Flex app username, or NULL."),
        "worker_sid": ("text", "Worker SID, or NULL when no worker exists."),
        "field": ("text", "Worker attribute that differs (roles, full_name, email, image_url), or NULL."),
        "expected": ("text", "What Okta says the value should be."),
        "actual": ("text", "What the worker holds."),
        "status": ("text", "new (first reported by this run) or persisting (also reported by the previous run of the same org and workspace); NULL for rows written before revision 0004."),
        "first_seen_run_id": ("text", "First run of the unbroken series of runs that reported this finding (same kind and worker, or user where there is no worker)."),
        "first_seen_at": ("timestamp", "Start time (UTC) of that first run: how long the finding has been open."),
    }),
    "repair_audit": Entry("table", "Every worker write attempted by `run --apply`.", {
        "id": ("integer", "Row id."),
        "run_id": _RUN,
        "worker_sid": ("text", "Worker SID."),
        "friendly_name": ("text", "Worker friendly name."),
        "action": ("text", "update_attributes, strip_roles or delete_worker."),
        "attributes_before": ("text", "Attributes JSON before the write."),
        "attributes_after": ("text", "Attributes JSON written, or NULL for a delete."),
        "actor": ("text", "Who ran the repair (user@host)."),
        "applied_at": ("timestamp", "When it was written, UTC."),
        "outcome": ("text", "applied, skipped or failed."),
        "detail": ("text", "Why it was skipped or failed, else NULL."),
    }),
    "okta_log_events": Entry("table", "Okta System Log events (lifecycle, profile, Flex membership), one row per uuid, for backfills.", {
        "uuid": ("text", "Event uuid."),
        "published": ("timestamp", "When Okta published the event, UTC."),
        "event_type": ("text", "Okta event type, e.g. `application.user_membership.add`."),
        "target_user_id": ("text", "Okta user id the event is about, or NULL."),
        "target_app_id": ("text", "App id the event is about, or NULL."),
        "outcome": ("text", "Event outcome (SUCCESS, FAILURE, …)."),
        "payload": ("text", "The event JSON as received."),
        "run_id": ("text", "Run that stored it."),
    }),
    "current_roles": Entry("view", "The current row of every tracked user.", {
        "okta_user_id": _USER_ID,
        "login": ("text", "Okta login."),
        "app_username": ("text", "Flex app username, or NULL."),
        "status": ("text", "Okta status (DELETED when gone)."),
        "assigned": ("boolean", "Assigned to the Flex app now."),
        "roles": ("text", "Flex roles now, comma-separated; empty when unassigned."),
        "full_name": ("text", "Full name."),
        "email": ("text", "Email, or NULL."),
        "since": ("timestamp", "Start of the current period, UTC."),
        "run_id": ("text", "Run that wrote the current row."),
    }),
    "role_changes": Entry("view", "Real changes of role history: one row per kind of change (roles, assignment, status) "
                          "when a row differs from the user's previous one, several rows when several changed at once; "
                          "a user's first row is `first_seen` and is not a change.", {
        "okta_user_id": _USER_ID,
        "login": ("text", "Okta login after the change."),
        "app_username": ("text", "Flex app username after the change, or NULL."),
        "changed_at": ("timestamp", "When the change took effect (the new row's `valid_from`), UTC."),
        "change_type": ("text", "roles, assignment, status or first_seen."),
        "roles_before": ("text", "Roles before, comma-separated; NULL for first_seen."),
        "roles_after": ("text", "Roles after, comma-separated."),
        "status_before": ("text", "Okta status before; NULL for first_seen."),
        "status_after": ("text", "Okta status after."),
        "assigned_before": ("boolean", "Assigned before; NULL for first_seen."),
        "assigned_after": ("boolean", "Assigned after."),
        "run_id": ("text", "Run that wrote the new row."),
        "source": ("text", "nightly, backfill or watch (a System Log poll, dated by the event)."),
    }),
    "role_grants": Entry("view", "One row per user, role and uninterrupted period in which the user held the role "
                         "while assigned to the Flex app.", {
        "okta_user_id": _USER_ID,
        "login": ("text", "Okta login at the end of the grant."),
        "role": ("text", "One Flex role, e.g. admin."),
        "granted_at": ("timestamp", "When the role was granted (inclusive), UTC."),
        "revoked_at": ("timestamp", f"When it was revoked (exclusive), UTC; `{OPEN_PERIOD}` while held."),
    }),
}


def dictionary_markdown() -> str:
    """The dictionary as Markdown: one section per table or view, one row per column."""
    out = ["# Data dictionary", "",
           f"Timestamps are UTC. SQLite stores them as text in the one form `{TIMESTAMP_FORM}`; write "
           "literals in that form, or compare with `datetime(...)`. Open periods end at "
           f"`{OPEN_PERIOD}` in the tables and views; the Python API and exports show them as empty (NaT).", ""]
    for name, entry in DICTIONARY.items():
        out += [f"## `{name}` ({entry.kind})", "", entry.meaning, "", "| Column | Type | Meaning |", "| --- | --- | --- |"]
        out += [f"| `{col}` | {typ} | {meaning} |" for col, (typ, meaning) in entry.columns.items()]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":  # python -m okta_flex_sync.models.dictionary > docs/DATA_DICTIONARY.md
    sys.stdout.write(dictionary_markdown())
