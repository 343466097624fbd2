"""When a Prefect task may retry: only what the HTTP layer calls retriable."""
from __future__ import annotations

from okta_flex_sync.clients.http import is_retriable_error


def retry_if_transient(task_, task_run, state) -> bool:
    """Retry only what the HTTP layer calls retriable (outages, 5xx, timeouts), never auth/404/data errors."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:  # the state carries no result: decide on what was raised
        exc = err
    return isinstance(exc, BaseException) and is_retriable_error(exc)

