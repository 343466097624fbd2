"""Thin Prefect tasks around the pipeline stages, shared by the flows.

Tasks hold no logic: each calls one method of `NightlySync` (or one plain function). Retries are
coarse (a whole listing), and only for errors the HTTP layer calls retriable.  Also here, for
every flow: settings from the environment or Prefect Secret blocks (`flow_settings`), the
one-writer guard (`one_writer`) and the deployments' pull step (`project_directory`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from okta_flex_sync.db import RunLockedError
from okta_flex_sync.tasks.known_errors import quiet_task
from okta_flex_sync.settings import Settings, load_settings

WRITER_LIMIT = "okta-flex-sync-writer"
SECRET_BLOCK_PREFIX = "okta-flex-sync-"
log = logging.getLogger(__name__)
_limit_lock = threading.Lock()  # one creator per process: concurrent creates make the server log a conflict


def wanted_secrets(settings: Settings) -> list[str]:
    """The secret settings still needed to call Okta and Twilio (mirrors `Settings.require_sources`),
    so a fully configured environment costs no Secret block look-ups."""
    s = settings
    wanted = []
    if not s.okta_api_token and not s.okta_client_id:
        wanted.append("okta_api_token")
    if s.okta_client_id and not s.okta_api_token and not (s.okta_private_key or s.okta_private_key_file):
        wanted.append("okta_private_key")
    if s.twilio_api_key_sid and not s.twilio_api_key_secret:
        wanted.append("twilio_api_key_secret")
    if not s.twilio_api_key_sid and not s.twilio_auth_token:
        wanted.append("twilio_auth_token")
    return wanted


def secret_block_name(field_name: str) -> str:
    """`okta_api_token` -> `okta-flex-sync-okta-api-token` (block names allow dashes, not underscores)."""
    return SECRET_BLOCK_PREFIX + field_name.replace("_", "-")


def _read_secret_block(name: str) -> str | None:
    from prefect.blocks.system import Secret

    try:
        return Secret.load(name).get()
    except ValueError:  # no such block: the setting stays unset and require_sources names it
        return None


def flow_settings() -> Settings:
    """Settings for a flow run: the environment (or `.env`) first, then a Prefect Secret block
    `okta-flex-sync-<setting>` for each needed secret the environment lacks, so deployments and
    their job variables never carry a secret."""
    settings = load_settings()
    found = {f: v for f in wanted_secrets(settings) if (v := _read_secret_block(secret_block_name(f)))}
    if found:
        log.info("read %s from Prefect Secret blocks", ", ".join(secret_block_name(f) for f in found))
        settings = load_settings(**found)
    return settings


def project_directory(directory: str | None = None) -> dict:
    """Prefect pull step: run deployed flows from the okta-flex-sync checkout on the worker's host.

    The place is decided on the worker at run time: `directory` if given, else the worker's
    OKTA_FLEX_SYNC_HOME, else the checkout this package was installed from.  (A `{{ $VAR }}`
    template in prefect.yaml would not do: `prefect deploy` freezes it when the deploying shell
    has the variable.)
    """
    chosen = directory or os.environ.get("OKTA_FLEX_SYNC_HOME")
    path = Path(chosen).expanduser().resolve() if chosen else Path(__file__).resolve().parent.parent
    if not (path / "flows" / "nightly.py").is_file():
        raise FileNotFoundError(f"{path} is not an okta-flex-sync checkout (no flows/nightly.py); "
                                f"set OKTA_FLEX_SYNC_HOME on the worker to the project directory")
    os.chdir(path)
    return {"directory": str(path)}


def retry_if_transient(task_, task_run, state) -> bool:
    """Retry only what the HTTP layer calls retriable (outages, 5xx, timeouts), never auth/404/data errors."""
    from tasks.http import is_retriable_error

    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:  # the state carries no result: decide on what was raised
        exc = err
    return isinstance(exc, BaseException) and is_retriable_error(exc)


def nightly_run_name() -> str:
    """"nightly-sync 2026-11-28" plus " full" / " apply", so the UI's run list says what each run did."""
    from prefect.runtime import flow_run

    p = flow_run.parameters or {}
    flags = [name for name in ("full", "apply") if p.get(name)]
    return " ".join([f"nightly-sync {datetime.now(timezone.utc):%Y-%m-%d}", *flags])


@task(name="prepare run", cache_policy=NO_CACHE)
@quiet_task
def task_prepare(job) -> str:
    return job.prepare()


@task(name="extract okta users, flex assignments, taskrouter workers", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=[30, 120], retry_condition_fn=retry_if_transient)
@quiet_task
def task_extract(job):
    e = job.extract()
    return {"users": e.users_pulled, "assignments": e.assignments, "workers": e.workers, "skipped": len(e.skipped)}


@task(name="publish history and findings", cache_policy=NO_CACHE)
@quiet_task
def task_publish(job):
    p = job.publish()
    return {"history_rows": p.history_rows, "findings": len(p.findings)}


@task(name="repair workers", cache_policy=NO_CACHE)
@quiet_task
def task_repair(job) -> int:
    return job.repair()


@task(name="write reports", cache_policy=NO_CACHE)
def task_report(job):
    outcome = job.report()
    from tasks.artifacts import publish_artifacts
    import json

    publish_artifacts(json.loads(outcome.report_paths["json"].read_text(encoding="utf-8")))
    return outcome


@contextlib.contextmanager
def one_writer(settings: Settings, timeout_seconds: float = 6 * 3600):
    """Prefect-level guard: one writer at a time across nightly, backfill and reconcile runs (the
    database lock in `okta_flex_sync.db.writer_lock` is the last line).  A second run waits for the
    slot; after `timeout_seconds` it stops with `RunLockedError` (the CLI's exit code 4)."""
    from prefect.concurrency.sync import concurrency

    limit = _ensure_limit(WRITER_LIMIT)
    if limit is not None and limit.active_slots >= limit.limit:
        log.warning("another okta-flex-sync run holds the Prefect concurrency limit %r; waiting up to %s for it",
                    WRITER_LIMIT, _duration(timeout_seconds))
    acquired = False
    try:
        with concurrency(WRITER_LIMIT, occupy=1, timeout_seconds=timeout_seconds):
            acquired = True
            yield
    except TimeoutError:
        if acquired:  # raised by the run itself, not by the wait for the slot
            raise
        raise RunLockedError(f"another okta-flex-sync run held the Prefect concurrency limit {WRITER_LIMIT!r} for "
                             f"{_duration(timeout_seconds)}; try again when it finishes") from None


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"


def _ensure_limit(name: str):
    """Create the one-slot global concurrency limit on first use; return it, or None when the
    Prefect API cannot say (the run then relies on the database lock alone)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    try:
        with _limit_lock, get_client(sync_client=True) as client:
            try:
                return client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                pass
            with contextlib.suppress(ObjectAlreadyExists):  # another process created it meanwhile
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            return client.read_global_concurrency_limit_by_name(name)
    except Exception as exc:  # noqa: BLE001 - never fail a run over the optional Prefect-level guard
        log.warning("could not ensure Prefect concurrency limit %s (%s); relying on the database lock",
                    name, type(exc).__name__)
        return None
