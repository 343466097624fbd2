"""Okta Management API client: users, the Flex app's assignments and the System Log.

Pages are followed only through the opaque `Link: rel="next"` URL; the client never builds a
cursor.  Auth is either an SSWS API token or OAuth 2.0 client credentials with
`private_key_jwt` against the org authorization server (the only one that mints `okta.*` scopes).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import httpx

from okta_flex_sync.clients.http import (
    MESSAGE_SNIPPET_CHARS,
    ApiError,
    AuthError,
    MalformedResponseError,
    Page,
    PaginationError,
    RequestStats,
    RetryingSession,
    error_details,
    next_link,
    onto_origin,
    parse_link_header,
    redact_url,
    shared_ssl_context,
    utc_from_epoch,
)
from okta_flex_sync.clients.http import (
    warn_foreign_link_once as _warn_once,
)
from okta_flex_sync.redaction import redact
from okta_flex_sync.settings import ConfigError

log = logging.getLogger(__name__)

DEFAULT_SCOPES = "okta.users.read okta.apps.read okta.logs.read"
REQUEST_ID_HEADER = "X-Okta-Request-Id"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Okta answers slow filtered queries with short, even empty, pages that still link onward, so
# empty pages are normal; only an absurd run of them means the server is looping.
MAX_EMPTY_PAGES = 1000
USER_AGENT = "okta-flex-sync/0.1"


# --- auth ---------------------------------------------------------------------------------

class SSWSAuth(httpx.Auth):
    """`Authorization: SSWS <token>` (an Okta API token)."""

    def __init__(self, token: str):
        if not token:
            raise ConfigError("configuration error: OKTA_API_TOKEN is empty")
        self._token = token

    def auth_flow(self, request: httpx.Request):
        request.headers["Authorization"] = f"SSWS {self._token}"
        yield request

    def secret_values(self) -> list[str]:
        return [self._token]

    def __repr__(self) -> str:
        return "SSWSAuth(token=***)"


# PyJWT and cryptography load only for OAuth (~50 ms of imports an API-token run never needs).

def _signing_algorithm(key) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: "ES256", 384: "ES384", 521: "ES512"}.get(key.curve.key_size, "ES256")
    raise ConfigError("configuration error: OKTA_PRIVATE_KEY must be an RSA or EC private key")


def _load_key(pem: str):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        return load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError("configuration error: OKTA_PRIVATE_KEY is not an unencrypted PEM private key") from None


class PrivateKeyJWTAuth(httpx.Auth):
    """OAuth 2.0 client credentials with a `private_key_jwt` client assertion.

    The access token is cached until shortly before `expires_in` and shared by all threads;
    a 401 on an API call refreshes it once (the token may have been revoked early).  The token
    request goes through the same client and transport as the API calls.
    """

    requires_response_body = True

    def __init__(self, org_url: str, client_id: str, private_key_pem: str, *, key_id: str | None = None,
                 scopes: str = DEFAULT_SCOPES, clock: Callable[[], float] = time.time,
                 assertion_lifetime: int = 300, refresh_margin: float = 60.0):
        if not client_id:
            raise ConfigError("configuration error: OKTA_CLIENT_ID is empty")
        self.token_url = f"{org_url.rstrip('/')}/oauth2/v1/token"
        self.client_id = client_id
        self.key_id = key_id
        self.scopes = " ".join(scopes.split())
        self.clock = clock
        self.assertion_lifetime = min(assertion_lifetime, 3600)  # Okta rejects exp > 1 h ahead
        self.refresh_margin = refresh_margin
        self._key = _load_key(private_key_pem)
        self._algorithm = _signing_algorithm(self._key)
        self._lock = threading.RLock()
        self._token: str | None = None
        self._expires_at = 0.0

    def __repr__(self) -> str:
        return f"PrivateKeyJWTAuth(client_id={self.client_id!r}, token_url={self.token_url!r})"

    def secret_values(self) -> list[str]:
        return [self._token] if self._token else []

    def client_assertion(self) -> str:
        """A freshly signed JWT: iss = sub = client id, aud = the token URL, unique jti."""
        now = int(self.clock())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url,
                  "iat": now, "exp": now + self.assertion_lifetime, "jti": uuid.uuid4().hex}
        import jwt

        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self._key, algorithm=self._algorithm, headers=headers)

    def token_request(self) -> httpx.Request:
        return httpx.Request("POST", self.token_url, data={
            "grant_type": "client_credentials",
            "scope": self.scopes,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.client_assertion(),
        }, headers={"Accept": "application/json"})

    def auth_flow(self, request: httpx.Request):
        token = yield from self._current_token(stale=None)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            log.info("Okta returned 401 on %s; refreshing the access token once", request.url.path)
            token = yield from self._current_token(stale=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def _current_token(self, *, stale: str | None):
        # The lock is held across the yield: other threads wait for this one refresh.
        with self._lock:
            fresh = self._token and self._token != stale and self.clock() < self._expires_at
            if not fresh:
                response = yield self.token_request()
                self._store(response)
            return self._token

    def _store(self, response: httpx.Response) -> None:
        request_id = response.headers.get(REQUEST_ID_HEADER)
        endpoint = httpx.URL(self.token_url).path
        if response.status_code != 200:
            code, summary = error_details(response)
            cls = AuthError if response.status_code in (400, 401, 403) else ApiError
            detail = f" {code}" if code else ""
            detail += f" {redact(summary, limit=MESSAGE_SNIPPET_CHARS)}" if summary else ""
            raise cls(f"Okta token request POST {endpoint} failed: HTTP {response.status_code}{detail}"
                      f" (request id {request_id or 'unknown'})", status=response.status_code,
                      endpoint=endpoint, request_id=request_id, code=code)
        try:
            body = response.json()
            token = body["access_token"]
            if not isinstance(token, str) or not token:
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise MalformedResponseError(
                f"Okta token response from {endpoint} has no access_token (request id {request_id or 'unknown'})",
                status=response.status_code, endpoint=endpoint, request_id=request_id) from None
        lifetime = _expires_in(body.get("expires_in"))
        self._token = token
        self._expires_at = self.clock() + max(0.0, lifetime - min(self.refresh_margin, lifetime / 2))


def _expires_in(value: Any) -> float:
    """Token lifetime in seconds; a missing or absurd value falls back to a cautious 5 minutes."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 300.0
    return seconds if 0 < seconds <= 86400 else 300.0


# --- helpers -------------------------------------------------------------------------------

def okta_timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and `Z`, as Okta filters expect; naive means UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _expect_list(body: Any) -> None:
    if not isinstance(body, list):
        raise ValueError(f"a JSON {type(body).__name__} where an array was expected")


def _expect_object(body: Any) -> None:
    if not isinstance(body, dict):
        raise ValueError(f"a JSON {type(body).__name__} where an object was expected")


def _path_segment(value: str, name: str) -> str:
    if not value or not isinstance(value, str) or "/" in value or value in (".", ".."):
        raise ValueError(f"{name} must be a non-empty id without '/'")
    return quote(value, safe="")


def _dict_items(body: list, endpoint: str) -> list[dict]:
    items = [item for item in body if isinstance(item, dict)]
    if len(items) != len(body):
        log.warning("dropped %d non-object items from a page of %s", len(body) - len(items), endpoint)
    return items


class _ReadAhead:
    """One page requested ahead of the one being handled, on a thread of its own.

    `start(url)` sends the request for `url` (the `Link` of the page just received); `take(url)`
    returns the response for `url`: the one requested ahead when it is for that very URL, else
    a new request.  Responses come back with their body read, not yet parsed or checked: the
    caller parses, and when the body is not what the contract promises it asks for that page
    again, so a garbled page costs one more request and changes nothing else.  A failure of the
    request ahead (retries exhausted, a rejected credential) is raised by `take`, exactly as
    the request would have raised it without reading ahead."""

    def __init__(self, session: RetryingSession):
        self._session = session
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="okta-read-ahead")
        self._url: str | None = None
        self._future: Future | None = None

    def start(self, url: str | None) -> None:
        self._url = url
        self._future = self._pool.submit(self._session.request, "GET", url, expect_json=False) if url else None
        if self._future is not None:
            time.sleep(0)  # let go of the interpreter lock, so the request goes out before this page is parsed

    def take(self, url: str, params: dict[str, Any] | None) -> httpx.Response:
        if self._future is not None and url == self._url and not params:
            future, self._future = self._future, None
            return future.result().response
        return self.request(url, params=params, expect_json=False).response

    def request(self, url: str, **kwargs):
        """`session.request("GET", url, ...)` on the read-ahead thread: every request of the
        listing leaves from one thread, so rate-limit pacing sees one caller, not two."""
        return self._pool.submit(self._session.request, "GET", url, **kwargs).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# --- client --------------------------------------------------------------------------------

class OktaClient:
    """Reads users, app assignments and System Log events; yields raw pages.

    Thread-safe: listings may run in parallel threads and share the rate-limit buckets.
    """

    def __init__(self, org_url: str, auth: httpx.Auth, *, timeout: float = 30.0, max_retries: int = 6,
                 max_concurrency: int = 4, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 rate_limit_percent: float | None = None):
        self.org_url = org_url.rstrip("/")
        self._foreign_links_warned: set[str] = set()
        self.clock = clock
        self._http = httpx.Client(
            base_url=self.org_url, auth=auth, timeout=timeout, transport=transport, follow_redirects=False,
            verify=shared_ssl_context(),
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=max(1, max_concurrency) + 1),
        )
        secrets = getattr(auth, "secret_values", lambda: [])
        self._session = RetryingSession(
            self._http, service="Okta", request_id_header=REQUEST_ID_HEADER, max_retries=max_retries,
            max_concurrency=max_concurrency, sleep=sleep, clock=clock, secrets=secrets,
            rate_limit_percent=rate_limit_percent)

    @classmethod
    def from_settings(cls, settings, **kwargs) -> OktaClient:
        """Build from `Settings`; OAuth (client id + private key) wins over an API token."""
        if not settings.okta_org_url:
            raise ConfigError("configuration error: OKTA_ORG_URL is not set")
        pem = settings.private_key_pem() if settings.okta_client_id else None
        if settings.okta_client_id and pem:
            auth: httpx.Auth = PrivateKeyJWTAuth(settings.okta_org_url, settings.okta_client_id, pem,
                                                 key_id=settings.okta_key_id, scopes=settings.okta_scopes,
                                                 clock=kwargs.get("clock", time.time))
        elif settings.okta_api_token is not None and settings.okta_api_token.get_secret_value():
            auth = SSWSAuth(settings.okta_api_token.get_secret_value())
        else:
            raise ConfigError("configuration error: OKTA_API_TOKEN (or OKTA_CLIENT_ID with OKTA_PRIVATE_KEY) "
                              "is not set")
        kwargs.setdefault("timeout", settings.http_timeout_seconds)
        kwargs.setdefault("max_retries", settings.http_max_retries)
        kwargs.setdefault("max_concurrency", settings.okta_max_concurrency)
        kwargs.setdefault("rate_limit_percent", settings.okta_rate_limit_percent)
        return cls(settings.okta_org_url, auth, **kwargs)

    @property
    def stats(self) -> RequestStats:
        return self._session.stats

    def rate_limit_usage(self) -> dict[str, dict]:
        """Per bucket (`users`, `apps`, `logs`): limit, the most sent in one window, the share."""
        return self._session.rate_limit_usage()

    def __repr__(self) -> str:
        return f"OktaClient(org_url={self.org_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OktaClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- listings ---------------------------------------------------------------------------

    def iter_user_pages(self, *, updated_since: datetime | None = None, limit: int = 200) -> Iterator[Page]:
        """All users, or those changed after `updated_since`; DEPROVISIONED users included.

        A plain listing hides DEPROVISIONED users, so a full pull is two listings; a user can
        appear in both if their status changes mid-pull, so callers dedupe by id.
        """
        if updated_since is not None:
            since = okta_timestamp(updated_since)
            yield from self._iter_pages("/api/v1/users", {"limit": limit, "filter": f'lastUpdated gt "{since}"'},
                                        read_ahead=True)
            return
        yield from self._iter_pages("/api/v1/users", {"limit": limit}, read_ahead=True)
        yield from self._iter_pages("/api/v1/users", {"limit": limit, "filter": 'status eq "DEPROVISIONED"'},
                                    read_ahead=True)

    def iter_app_user_pages(self, app_id: str, *, limit: int = 500, expand_user: bool = False) -> Iterator[Page]:
        """The app's assignments (`AppUser`: `id` is the Okta user id)."""
        params: dict[str, Any] = {"limit": limit}
        if expand_user:
            params["expand"] = "user"
        yield from self._iter_pages(f"/api/v1/apps/{_path_segment(app_id, 'app_id')}/users", params)

    def iter_log_pages(self, since: datetime, until: datetime, *, filter: str | None = None,
                       limit: int = 1000) -> Iterator[Page]:
        """System Log events published in [since, until), oldest first.

        Always bounded (both ends set) so the listing ends; it also stops on an empty page or a
        page that only repeats events already seen, because a misbehaving server may hand out
        next links forever.  Deduplicating by `uuid` is the caller's job.
        """
        if okta_timestamp(until) <= okta_timestamp(since):
            raise ValueError("until must be after since")
        params: dict[str, Any] = {"since": okta_timestamp(since), "until": okta_timestamp(until),
                                  "limit": limit, "sortOrder": "ASCENDING"}
        if filter:
            params["filter"] = filter
        seen: set[str] = set()
        for page in self._iter_pages("/api/v1/logs", params, stop_on_empty=True):
            uuids = {str(item.get("uuid")) for item in page.items if item.get("uuid")}
            if uuids and uuids <= seen and len(uuids) == len(page.items):
                log.warning("System Log page repeats events already seen; stopping (%s)", page.url)
                return
            seen |= uuids
            yield page

    def get_app_user(self, app_id: str, user_id: str) -> dict:
        """One user's assignment of the app (`AppUser`); `NotFoundError` when not assigned."""
        result = self._session.request(
            "GET", f"/api/v1/apps/{_path_segment(app_id, 'app_id')}/users/{_path_segment(user_id, 'user_id')}",
            check=_expect_object)
        return result.body

    def iter_app_group_pages(self, app_id: str, *, limit: int = 200) -> Iterator[Page]:
        """The groups assigned to the app (`ApplicationGroupAssignment`: `id` is the group id)."""
        yield from self._iter_pages(f"/api/v1/apps/{_path_segment(app_id, 'app_id')}/groups", {"limit": limit})

    def get_user(self, user_id: str) -> dict:
        """One user, read from the strongly consistent `/api/v1/users/{id}`."""
        result = self._session.request("GET", f"/api/v1/users/{_path_segment(user_id, 'user_id')}",
                                       check=_expect_object)
        return result.body

    # --- pagination -------------------------------------------------------------------------

    def _iter_pages(self, path: str, params: dict[str, Any], *, stop_on_empty: bool = False,
                    read_ahead: bool = False) -> Iterator[Page]:
        """Follow `rel="next"` from `path`.  With `read_ahead`, the next page is requested as soon
        as a page's `Link` header is read, before its body is parsed and handed on, so Okta
        works on page N+1 while this side handles page N (see `_ReadAhead`)."""
        url: str | None = path
        query: dict[str, Any] | None = params
        visited: set[str] = set()
        empty_in_a_row = 0
        ahead = _ReadAhead(self._session) if read_ahead else None
        try:
            while url:
                if ahead is None:
                    result = self._session.request("GET", url, params=query, check=_expect_list)
                    response, body = result.response, result.body
                    following = self._next_url(response, visited, path)
                else:
                    response = ahead.take(url, query)
                    following = self._next_url(response, visited, path)
                    ahead.start(following)
                    try:
                        body = self._session.parse_json(response, _expect_list)
                    except MalformedResponseError as garbled:
                        # As a listing that does not read ahead would: back off, ask for this
                        # page again until its body is whole, read ahead again if its Link differs.
                        result = ahead.request(url, params=query, check=_expect_list, failed=garbled)
                        response, body = result.response, result.body
                        confirmed = self._next_url(response, visited, path)
                        if confirmed != following:
                            following = confirmed
                            ahead.start(following)
                current = str(response.request.url)
                items = _dict_items(body, path)
                yield Page(items=items, raw=response.content, url=redact_url(current),
                           fetched_at=utc_from_epoch(self.clock()),
                           request_id=response.headers.get(REQUEST_ID_HEADER), dropped=len(body) - len(items))
                url, query = following, None
                if url and not items:
                    if stop_on_empty:
                        return
                    empty_in_a_row += 1
                    if empty_in_a_row >= MAX_EMPTY_PAGES:
                        raise PaginationError(f"Okta GET {path} returned {empty_in_a_row} empty pages in a row "
                                              f"that still link to a next page; refusing to continue",
                                              endpoint=path, request_id=response.headers.get(REQUEST_ID_HEADER))
                else:
                    empty_in_a_row = 0
        finally:
            if ahead is not None:
                ahead.close()

    def _next_url(self, response: httpx.Response, visited: set[str], path: str) -> str | None:
        """Where to go after `response` (recorded in `visited`), or None: no next link, or one
        back to a page already read."""
        visited.add(str(response.request.url))
        target = next_link(response)
        if target is None:
            return None
        named = target
        target, moved = onto_origin(named, self.org_url)
        if moved:
            _warn_once(self._foreign_links_warned, "Okta", path, named, self.org_url)
        self_link = parse_link_header(", ".join(response.headers.get_list("link"))).get("self")
        # `visited` holds `str(request.url)`, already in httpx's normal form: look the target up
        # directly (re-parsing every visited URL per page made long listings quadratic).
        normal = str(httpx.URL(target))
        own_self = str(response.request.url.join(self_link)) if self_link else None
        if normal in visited or normal == own_self:
            log.info("Okta GET %s: next link points back to a page already read; stopping", path)
            return None
        return target
