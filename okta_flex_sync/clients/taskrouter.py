"""Twilio TaskRouter v1 Workers client: list, fetch, update and delete workers.

Lists follow `meta.next_page_url` as given.  Worker `attributes` is a JSON-encoded *string*;
this client passes it through untouched (parsing is the normalizer's job), except that list
rows whose `attributes` is null are completed by fetching that worker, because the spec says
attributes may only be shown on single-resource fetches.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import httpx

from okta_flex_sync.clients.http import (
    ConflictError,
    NotFoundError,
    Page,
    PaginationError,
    RequestStats,
    RetryingSession,
    onto_origin,
    redact_url,
    shared_ssl_context,
    utc_from_epoch,
)
from okta_flex_sync.clients.http import (
    warn_foreign_link_once as _warn_once,
)
from okta_flex_sync.settings import ConfigError

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "Twilio-Request-Id"
MAX_EMPTY_PAGES = 3
USER_AGENT = "okta-flex-sync/0.1"


def _expect_worker_page(body: Any) -> None:
    if not isinstance(body, dict):
        raise ValueError(f"a JSON {type(body).__name__} where a page object was expected")
    key = _items_key(body)
    if not isinstance(body.get(key), list):
        raise ValueError(f"a page without a '{key}' array")


def _expect_object(body: Any) -> None:
    if not isinstance(body, dict):
        raise ValueError(f"a JSON {type(body).__name__} where an object was expected")


def _items_key(body: dict) -> str:
    meta = body.get("meta")
    key = meta.get("key") if isinstance(meta, dict) else None
    return key if isinstance(key, str) and key else "workers"


def _next_page_url(body: dict) -> str | None:
    meta = body.get("meta")
    url = meta.get("next_page_url") if isinstance(meta, dict) else None
    return url if isinstance(url, str) and url.strip() else None


def _sid_segment(sid: str) -> str:
    if not sid or not isinstance(sid, str) or "/" in sid or sid in (".", ".."):
        raise ValueError("sid must be a non-empty id without '/'")
    return quote(sid, safe="")


def _fill_known(rows: list[dict], known: Callable[[list[dict]], dict[str, str]] | None) -> list[dict]:
    """Rows with null `attributes` completed from `known`, which is given a page's null rows at
    once and answers sid -> attributes for those it can vouch for (the rest get fetched)."""
    if known is None:
        return rows
    nulls = [row for row in rows if row.get("attributes") is None and isinstance(row.get("sid"), str)]
    found = known(nulls) if nulls else None
    if not found:
        return rows
    return [{**row, "attributes": found[row["sid"]]}
            if row.get("attributes") is None and isinstance(row.get("sid"), str) and row["sid"] in found else row
            for row in rows]


def _same_attributes(a: str | None, b: str | None) -> bool:
    """Whether two attribute strings carry the same JSON (whitespace and key order aside)."""
    if a == b:
        return True
    try:
        return json.loads(a) == json.loads(b)
    except (TypeError, ValueError):
        return False


class TaskRouterClient:
    """Reads and repairs the Workers of one TaskRouter Workspace (HTTP Basic auth)."""

    def __init__(self, base_url: str, workspace_sid: str, username: str, password: str, *,
                 timeout: float = 30.0, max_retries: int = 6, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 max_concurrency: int = 4):
        if not (username and password):
            raise ConfigError("configuration error: Twilio credentials are not set")
        self.base_url = base_url.rstrip("/")
        self._foreign_links_warned: set[str] = set()
        self.workspace_sid = workspace_sid
        self.clock = clock
        self._max_concurrency = max(1, max_concurrency)
        self.workers_path = f"/v1/Workspaces/{_sid_segment(workspace_sid)}/Workers"
        self._http = httpx.Client(
            base_url=self.base_url, auth=httpx.BasicAuth(username, password), timeout=timeout,
            transport=transport, follow_redirects=False, verify=shared_ssl_context(),
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=max(1, max_concurrency) + 1),
        )
        self._session = RetryingSession(
            self._http, service="TaskRouter", request_id_header=REQUEST_ID_HEADER, max_retries=max_retries,
            max_concurrency=max_concurrency, sleep=sleep, clock=clock, secrets=lambda: (password,))

    @classmethod
    def from_settings(cls, settings, **kwargs) -> TaskRouterClient:
        """Build from `Settings`: an API key SID/secret when set, else account SID/auth token."""
        if not settings.twilio_workspace_sid:
            raise ConfigError("configuration error: TWILIO_WORKSPACE_SID is not set")
        key_secret = settings.twilio_api_key_secret.get_secret_value() if settings.twilio_api_key_secret else ""
        auth_token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        if settings.twilio_api_key_sid and key_secret:
            username, password = settings.twilio_api_key_sid, key_secret
        elif settings.twilio_account_sid and auth_token:
            username, password = settings.twilio_account_sid, auth_token
        else:
            raise ConfigError("configuration error: TWILIO_AUTH_TOKEN (or TWILIO_API_KEY_SID and "
                              "TWILIO_API_KEY_SECRET) is not set")
        kwargs.setdefault("timeout", settings.http_timeout_seconds)
        kwargs.setdefault("max_retries", settings.http_max_retries)
        return cls(settings.taskrouter_base_url, settings.twilio_workspace_sid, username, password, **kwargs)

    @property
    def stats(self) -> RequestStats:
        return self._session.stats

    def __repr__(self) -> str:
        return f"TaskRouterClient(base_url={self.base_url!r}, workspace_sid={self.workspace_sid!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TaskRouterClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- reads ------------------------------------------------------------------------------

    def iter_worker_pages(self, *, page_size: int = 1000,
                          known_attributes: Callable[[list[dict]], dict[str, str]] | None = None,
                          friendly_name: str | None = None) -> Iterator[Page]:
        """Every worker, a page at a time, with null list `attributes` filled in by a fetch.

        `known_attributes(null_rows)` may answer for some of a page's null rows instead (sid ->
        the caller's copy of an unchanged worker's attributes, see `okta_flex_sync.jobs.nightly`); the others are
        fetched.  `Page.raw` is the list response exactly as received (before any fill-in).
        """
        url: str | None = self.workers_path
        query: dict[str, Any] | None = {"PageSize": page_size}
        if friendly_name is not None:  # the list's FriendlyName filter (case-insensitive, at most one worker)
            query["FriendlyName"] = friendly_name
        visited: set[str] = set()
        empty_in_a_row = 0
        while url:
            result = self._session.request("GET", url, params=query, check=_expect_worker_page)
            response, body = result.response, result.body
            current = str(response.request.url)
            visited.add(current)
            listed = body[_items_key(body)]
            objects = [w for w in listed if isinstance(w, dict)]
            items = self._complete_page(_fill_known(objects, known_attributes))
            yield Page(items=items, raw=response.content, url=redact_url(current),
                       fetched_at=utc_from_epoch(self.clock()), request_id=response.headers.get(REQUEST_ID_HEADER),
                       dropped=len(listed) - len(objects))
            url, query = self._next_url(body, response, visited), None
            empty_in_a_row = empty_in_a_row + 1 if (url and not items) else 0
            if empty_in_a_row >= MAX_EMPTY_PAGES:
                raise PaginationError(f"TaskRouter GET {self.workers_path} returned {empty_in_a_row} empty pages "
                                      f"in a row that still link to a next page; refusing to continue",
                                      endpoint=self.workers_path, request_id=response.headers.get(REQUEST_ID_HEADER))

    def fetch_worker(self, sid: str) -> tuple[dict, str | None]:
        """One worker and its `ETag` (for an `If-Match` update)."""
        result = self._session.request("GET", self._worker_path(sid), check=_expect_object)
        return result.body, result.response.headers.get("etag")

    # --- writes -----------------------------------------------------------------------------

    def update_worker(self, sid: str, *, attributes: str, if_match: str | None = None) -> dict:
        """Replace the worker's whole `attributes` string (TaskRouter has no merge).

        If a retried update meets 412 because our own earlier attempt already landed (the
        connection dropped after the server applied it), the current worker is returned.
        """
        if not isinstance(attributes, str):
            raise TypeError("attributes must be a JSON string")
        headers = {"If-Match": if_match} if if_match else None
        try:
            result = self._session.request("POST", self._worker_path(sid), data={"Attributes": attributes},
                                           headers=headers, check=_expect_object)
        except ConflictError as exc:
            if exc.attempts <= 1:
                raise
            current, _ = self.fetch_worker(sid)
            if not _same_attributes(current.get("attributes"), attributes):
                raise
            log.info("update of worker %s had already been applied before the retry", sid)
            return current
        return result.body

    def delete_worker(self, sid: str, *, if_match: str | None = None) -> None:
        """Delete the worker; a 404 on a retry means our earlier attempt already did it."""
        headers = {"If-Match": if_match} if if_match else None
        try:
            self._session.request("DELETE", self._worker_path(sid), headers=headers, expect_json=False)
        except NotFoundError as exc:
            if exc.attempts <= 1:
                raise
            log.info("worker %s was already deleted before the retry", sid)

    # --- helpers ----------------------------------------------------------------------------

    def _worker_path(self, sid: str) -> str:
        return f"{self.workers_path}/{_sid_segment(sid)}"

    def _complete_page(self, rows: list[dict]) -> list[dict]:
        """`_complete` for every row of a page, in order; rows needing a fetch are fetched
        `max_concurrency` at a time (one by one, 750 fetches at 100 ms took longer than the
        whole Okta users listing)."""
        todo = [i for i, w in enumerate(rows) if w.get("attributes") is None and isinstance(w.get("sid"), str)]
        if len(todo) <= 1 or self._max_concurrency <= 1:
            done = [self._complete(w) for w in rows]
        else:
            with ThreadPoolExecutor(max_workers=min(self._max_concurrency, len(todo)),
                                    thread_name_prefix="taskrouter-fetch") as pool:
                futures = {i: pool.submit(self._complete, rows[i]) for i in todo}
                try:
                    done = [futures[i].result() if i in futures else w for i, w in enumerate(rows)]
                except BaseException:
                    for f in futures.values():
                        f.cancel()
                    raise
        return [w for w in done if w is not None]

    def _complete(self, worker: dict) -> dict | None:
        """The list row, with `attributes` fetched when the list left it null."""
        if worker.get("attributes") is not None or not isinstance(worker.get("sid"), str):
            return worker
        try:
            fetched, _ = self.fetch_worker(worker["sid"])
        except NotFoundError:
            log.info("worker %s disappeared between list and fetch; skipping it", worker["sid"])
            return None
        return {**worker, **fetched}

    def _next_url(self, body: dict, response: httpx.Response, visited: set[str]) -> str | None:
        target = _next_page_url(body)
        if target is None:
            return None
        named = str(response.request.url.join(target))
        target, moved = onto_origin(named, self.base_url)
        if moved:
            _warn_once(self._foreign_links_warned, "TaskRouter", self.workers_path, named, self.base_url)
        meta_url = (body.get("meta") or {}).get("url")
        own = set(visited)
        if isinstance(meta_url, str) and meta_url:
            own.add(str(response.request.url.join(meta_url)))
        if target in own:
            log.info("TaskRouter next_page_url points back to a page already read; stopping")
            return None
        return target
