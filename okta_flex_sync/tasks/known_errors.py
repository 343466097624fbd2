"""Errors a Prefect run ends on quietly: one line as the Failed state's message, no traceback.

A wrong setting, a refused backfill range, an unreachable database, a rejected credential or the
shrink guard is not a bug: the operator needs the one line that says what to fix (which
`prefect deployment run ... --watch` prints as the state message), not two tracebacks in the
worker log.  Anything else still fails loudly.
"""
from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass

from prefect import get_run_logger
from prefect.states import Failed
from sqlalchemy.exc import SQLAlchemyError

from okta_flex_sync.clients.http import AuthError, NotFoundError
from okta_flex_sync.core.backfill_plan import BackfillError
from okta_flex_sync.jobs.nightly import ShrinkGuardError
from okta_flex_sync.jobs.repair import RepairRefused
from okta_flex_sync.settings import ConfigError, load_settings
from okta_flex_sync.storage.connect import describe_database_error
from okta_flex_sync.storage.lock import RunLockedError

KNOWN_ERRORS = (ConfigError, BackfillError, RunLockedError, ShrinkGuardError, RepairRefused, AuthError,
                NotFoundError, SQLAlchemyError)


def known_message(exc: BaseException) -> str | None:
    """The one-line message of a known error, or None for anything else."""
    if not isinstance(exc, KNOWN_ERRORS):
        return None
    if isinstance(exc, SQLAlchemyError):
        try:
            url = load_settings().database_url
        except ConfigError:
            url = "sqlite://"
        return describe_database_error(exc, url)
    return " ".join(str(exc).split())


@dataclass
class KnownFailure:
    """What a task returns instead of raising a known error (so the engine logs no traceback);
    the flow raises it again with `unwrap`."""
    error: BaseException


def quiet_task(fn: Callable) -> Callable:
    """Under `@task`: a known error ends the task with one logged line and comes back as a
    `KnownFailure` value (not retried: none of these is transient)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KNOWN_ERRORS as exc:
            get_run_logger().error("%s", known_message(exc))
            return KnownFailure(exc)
    return wrapper


def unwrap(result):
    """A task's result, or its known error raised again in the flow."""
    if isinstance(result, KnownFailure):
        raise result.error
    return result


def quiet_flow(fn: Callable) -> Callable:
    """Under `@flow`: a known error ends the run Failed with its one line as the state message.
    Called with `return_outcome=True` (the CLI's `run --prefect`) the error is raised as before,
    so the CLI can map it to its exit code."""
    signature = inspect.signature(fn, eval_str=True)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KNOWN_ERRORS as exc:
            if signature.bind_partial(*args, **kwargs).arguments.get("return_outcome"):
                raise
            message = known_message(exc)
            get_run_logger().error("%s", message)
            return Failed(message=message)
    # Resolved annotations: a flow module's `from __future__ import annotations` strings would be
    # looked up in this module when Prefect builds the parameter model.
    wrapper.__annotations__ = typing.get_type_hints(fn, include_extras=True)
    wrapper.__signature__ = signature
    return wrapper
