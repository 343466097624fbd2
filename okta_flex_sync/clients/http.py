"""Shared HTTP plumbing for the Okta and TaskRouter clients.

One place decides what is retriable (`classify`), one object paces requests from the
`X-Rate-Limit-*` headers (`RateLimitState`), and one loop sends a request with both
(`RetryingSession`).  Every error message is a single line that names the endpoint path and the
server's request id and never a credential, so operators can quote it in a ticket.
"""
from __future__ import annotations

import email.utils
import functools
import json
import logging
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from okta_flex_sync.clients.rate_share import RateShares
from okta_flex_sync.core import fastjson
from okta_flex_sync.redaction import redact

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 120.0  # no single wait is longer, whatever the server claims
RESET_MARGIN_SECONDS = 1.0  # Okta's reset is whole epoch seconds; land safely after it
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
CONCURRENCY_BACKOFF_CAP_SECONDS = 5.0  # a concurrency 429's Reset is only an estimate
DEFAULT_WINDOW_SECONDS = 1.0  # pacing window when a server sends Remaining but no Reset
MESSAGE_SNIPPET_CHARS = 200
THROTTLE_BUDGET_SECONDS = 300.0  # total wait one request may spend on 429s before giving up
MAX_THROTTLED_ATTEMPTS = 100

_SECRET_QUERY_KEYS = frozenset({
    "access_token", "token", "api_key", "apikey", "key", "secret", "client_secret", "password",
    "client_assertion", "assertion", "signature", "sig", "auth", "authorization", "code",
})
_NEVER_RETRY_5XX = frozenset({501, 505})


# --- errors ---------------------------------------------------------------------------------

class ApiError(Exception):
    """A call to Okta or TaskRouter failed; `str()` is one line safe to log."""

    def __init__(self, message: str, *, status: int | None = None, endpoint: str = "",
                 request_id: str | None = None, code: str | None = None, attempts: int = 1):
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint
        self.request_id = request_id
        self.code = code
        self.attempts = attempts  # how many times the request was sent before giving up


class AuthError(ApiError):
    """401/403: the credential is wrong, expired or lacks a scope/role. Retrying cannot help."""


class NotFoundError(ApiError):
    """404: usually a wrong app id or workspace sid in the configuration."""


class ConflictError(ApiError):
    """409/412: someone else changed the resource (e.g. an `If-Match` ETag no longer matches)."""


class RetriesExhausted(ApiError):
    """A retriable failure kept happening until the attempt budget ran out."""


class MalformedResponseError(ApiError):
    """A 2xx response whose body is not the JSON shape the contract promises."""


class PaginationError(ApiError):
    """The server's next links do not converge (e.g. endless empty pages)."""


# --- classification -------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    retriable: bool
    wait_seconds: float | None
    reason: str


def backoff_seconds(attempt: int, *, cap: float = BACKOFF_CAP_SECONDS,
                    rng: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, never above `cap`."""
    ceiling = min(cap, BACKOFF_BASE_SECONDS * (2 ** max(0, attempt - 1)))
    return ceiling / 2 + (rng or random).random() * ceiling / 2


def _to_int(value: str | None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _to_float(value: str | None) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    seconds = _to_float(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def server_clock_offset(headers: Mapping[str, str], now: float) -> float:
    """Local clock minus the server's `Date`, when they differ by more than Date's 1 s grain."""
    date = headers.get("date")
    if not date:
        return 0.0
    try:
        server_now = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError, IndexError, AttributeError):
        return 0.0
    offset = now - server_now
    # Ignore sub-2 s noise (Date has 1 s resolution) and nonsense (a day or more off).
    return offset if 2.0 < abs(offset) < 86400 else 0.0


def _capped(wait: float, reason: str) -> tuple[float, str]:
    if wait > MAX_WAIT_SECONDS:
        return MAX_WAIT_SECONDS, f"{reason}; server asked for {wait:.0f} s, capped at {MAX_WAIT_SECONDS:.0f} s"
    return wait, reason


def _error_code(response: httpx.Response) -> str | None:
    code, _ = error_details(response)
    return code


def _classify_429(response: httpx.Response, *, attempt: int, now: float,
                  rng: random.Random | None) -> Decision:
    headers = response.headers
    code = _error_code(response) or "429"
    limit, remaining = _to_int(headers.get("x-rate-limit-limit")), _to_int(headers.get("x-rate-limit-remaining"))
    if limit == 0 and remaining == 0:
        # Okta's concurrency 429: Limit=Remaining=0 and Reset is only a guess. Back off briefly.
        wait = backoff_seconds(attempt, cap=CONCURRENCY_BACKOFF_CAP_SECONDS, rng=rng)
        return Decision(True, wait, f"429 concurrency limit ({code}); backing off")
    reset = _to_float(headers.get("x-rate-limit-reset"))
    if reset is not None:
        until_reset = reset - (now - server_clock_offset(headers, now))
        if until_reset > -RESET_MARGIN_SECONDS:
            jitter = (rng or random).random() * 0.25
            wait, reason = _capped(max(0.0, until_reset) + RESET_MARGIN_SECONDS + jitter,
                                   f"429 rate limit ({code}); waiting for X-Rate-Limit-Reset")
            return Decision(True, wait, reason)
    retry_after = parse_retry_after(headers.get("retry-after"), now)
    if retry_after is not None:
        wait, reason = _capped(retry_after, f"429 rate limit ({code}); honouring Retry-After")
        return Decision(True, wait, reason)
    return Decision(True, backoff_seconds(attempt, rng=rng), f"429 rate limit ({code}); no usable reset, backing off")


def _classify_status(response: httpx.Response, *, attempt: int, now: float,
                     rng: random.Random | None) -> Decision:
    status = response.status_code
    if status < 300:
        return Decision(False, None, f"{status} success")
    if status < 400:
        return Decision(False, None, f"{status} redirect is not followed")
    if status == 429:
        return _classify_429(response, attempt=attempt, now=now, rng=rng)
    if (status >= 500 and status not in _NEVER_RETRY_5XX) or status == 408:
        label = f"{status} {_error_code(response) or 'server error'}"
        retry_after = parse_retry_after(response.headers.get("retry-after"), now)
        if retry_after is not None:
            wait, reason = _capped(retry_after, f"{label}; honouring Retry-After")
            return Decision(True, wait, reason)
        return Decision(True, backoff_seconds(attempt, rng=rng), f"{label}; backing off")
    return Decision(False, None, f"{status} {_error_code(response) or 'client error'} is not retriable")


# Timeouts, refused/reset connections, a peer that hangs up mid-response, a garbled body encoding.
_RETRIABLE_EXCEPTIONS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.DecodingError)


def classify(response: httpx.Response | None, exc: Exception | None, *, attempt: int, now: float,
             rng: random.Random | None = None) -> Decision:
    """Decide whether a failed attempt may be retried and how long to wait first.

    This is the only place that knows which failures are transient: 429, 408 and 5xx (Okta's
    query timeout E0000009 is a 500), timeouts, refused or dropped connections and bodies that
    are not the promised JSON.  Other 4xx are final.  `attempt` is the 1-based number of the
    attempt that just failed; `now` is epoch seconds.
    """
    if response is not None:
        return _classify_status(response, attempt=attempt, now=now, rng=rng)
    if exc is None:
        raise ValueError("classify needs a response or an exception")
    if isinstance(exc, _RETRIABLE_EXCEPTIONS):
        return Decision(True, backoff_seconds(attempt, rng=rng), f"{type(exc).__name__}; backing off")
    if isinstance(exc, MalformedResponseError):
        return Decision(True, backoff_seconds(attempt, rng=rng), "malformed response body; backing off")
    if isinstance(exc, RetriesExhausted):
        return Decision(False, None, "retries already exhausted")
    if isinstance(exc, ApiError) and exc.status is not None:
        fake = httpx.Response(exc.status)
        decision = _classify_status(fake, attempt=attempt, now=now, rng=rng)
        return Decision(decision.retriable, decision.wait_seconds, f"{type(exc).__name__}: {decision.reason}")
    return Decision(False, None, f"{type(exc).__name__} is not retriable")


def is_retriable_error(exc: BaseException) -> bool:
    """For Prefect's `retry_condition_fn`: retry the task later only for transient failures.

    `RetriesExhausted` counts as transient: the client gave up for now, a task retry minutes
    later may well succeed.  Auth, not-found, conflict and programming errors never are.
    """
    if isinstance(exc, RetriesExhausted):
        return True
    if isinstance(exc, (AuthError, NotFoundError, ConflictError, PaginationError)):
        return False
    if not isinstance(exc, Exception):
        return False
    return classify(None, exc, attempt=1, now=time.time()).retriable


def retry_condition(task, task_run, state) -> bool:
    """Ready-made Prefect `retry_condition_fn`: retry the task only when its error is transient."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # the result could not be loaded; do not guess
        return False
    return isinstance(exc, BaseException) and is_retriable_error(exc)


def error_for_status(status: int) -> type[ApiError]:
    """The named error a final (non-retriable) status maps to."""
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFoundError
    if status in (409, 412):
        return ConflictError
    return ApiError


# --- rate-limit pacing ----------------------------------------------------------------------

class RateLimitState:
    """Remaining request budget of one rate-limit bucket, fed from every response's headers.

    `wait_seconds(now)` answers one question: how long to hold the next request so the bucket
    is used without a 429.  Near zero remaining it waits for the reset; when several threads
    share the bucket it spreads what is left evenly over the rest of the window.  Thread-safe.
    """

    def __init__(self, *, reserve: int = 0, default_window: float = DEFAULT_WINDOW_SECONDS,
                 concurrent_within: float = 2.0):
        self._lock = threading.Lock()
        self.reserve = reserve
        self.default_window = default_window
        self.concurrent_within = concurrent_within
        self.limit: int | None = None
        self.remaining: int | None = None
        self.reset: float | None = None  # local epoch seconds
        self.updated_at: float | None = None
        self._next_slot = 0.0
        self._users: dict[int, float] = {}
        self._warned_absurd = False

    def update(self, headers: Mapping[str, str], now: float) -> None:
        """Record a response's `X-Rate-Limit-*` headers (case-insensitive mapping or dict)."""
        headers = {str(k).lower(): v for k, v in headers.items()}
        limit = _to_int(headers.get("x-rate-limit-limit"))
        remaining = _to_int(headers.get("x-rate-limit-remaining"))
        if remaining is None or remaining < 0 or (limit == 0 and remaining == 0):
            return  # no budget info, garbage, or a concurrency 429 (not this bucket's budget)
        reset = _to_float(headers.get("x-rate-limit-reset"))
        if reset is not None:
            reset += server_clock_offset(headers, now)  # into local clock time
            if reset - now > MAX_WAIT_SECONDS:
                # Okta windows are a minute long; a reset further out is nonsense (or milliseconds).
                if not self._warned_absurd:
                    log.warning("ignoring absurd X-Rate-Limit-Reset (%.0f s ahead)", reset - now)
                    self._warned_absurd = True
                reset = None
        if reset is not None and reset <= now:
            return  # a late answer from a window that is over says nothing about the current one
        with self._lock:
            same_window = self.remaining is not None and (
                (reset is None and self.reset is None and now < self._window_end())
                or (reset is not None and self.reset is not None and abs(reset - self.reset) <= 0.5))
            self.remaining = min(self.remaining, remaining) if same_window else remaining
            if not same_window:
                self.updated_at = now
            self.limit = limit if limit and limit > 0 else self.limit
            self.reset = reset

    def wait_seconds(self, now: float) -> float:
        """How long the next request should wait; reserves nothing."""
        with self._lock:
            if self.remaining is None or now >= self._window_end():
                return 0.0
            if self.remaining <= self.reserve:
                return self._until_reset(now)
            if self._concurrent(now, threading.get_ident()):
                return min(max(0.0, self._next_slot - now), MAX_WAIT_SECONDS)
            return 0.0

    def acquire(self, now: float) -> float:
        """Reserve a slot for one request and return how long to sleep before sending it."""
        me = threading.get_ident()
        with self._lock:
            self._users[me] = now
            if self.remaining is None:
                return 0.0
            end = self._window_end()
            if now >= end:
                self._forget()  # the window rolled over; the next response tells the new budget
                return 0.0
            if self.remaining <= self.reserve:
                return self._until_reset(now)
            delay = 0.0
            if self._concurrent(now, me):
                slot = max(now, self._next_slot)
                self._next_slot = slot + (end - now) / self.remaining
                delay = slot - now
            self.remaining -= 1  # in flight; the server's next count replaces this estimate
            return min(delay, MAX_WAIT_SECONDS)

    def _until_reset(self, now: float) -> float:
        margin = RESET_MARGIN_SECONDS if self.reset is not None else 0.0
        return min(self._window_end() - now + margin, MAX_WAIT_SECONDS)

    def _window_end(self) -> float:
        if self.reset is not None:
            return self.reset
        return (self.updated_at or 0.0) + self.default_window

    def _forget(self) -> None:
        self.remaining = None
        self.reset = None
        self._next_slot = 0.0

    def _concurrent(self, now: float, me: int) -> bool:
        return any(t != me and now - seen <= self.concurrent_within for t, seen in self._users.items())


def rate_limit_bucket(path: str) -> str:
    """Group paths the way Okta buckets them: `/api/v1/users`, `/api/v1/users/*`, `/api/v1/apps/*`."""
    parts = [p for p in path.split("/") if p]
    if len(parts) <= 3:
        return "/" + "/".join(parts)
    return "/" + "/".join(parts[:3]) + "/*"


def _release_stream(response: httpx.Response) -> None:
    """Break httpx 0.28's Response <-> BoundSyncStream reference cycle once the body is read
    and the stream closed (encode/httpx#3733): otherwise every page body waits for the cyclic
    collector, and a 1M-user run held hundreds of MB of finished responses between passes."""
    if response.is_closed and not isinstance(response.stream, httpx.ByteStream):
        response.stream = httpx.ByteStream(response.content)


@functools.lru_cache(maxsize=1)
def shared_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every client of the process (httpx's default, certifi or
    SSL_CERT_FILE): loading the CA bundle took ~20 ms per client."""
    return httpx.create_ssl_context()


# --- pages, stats, redaction, links ---------------------------------------------------------

@dataclass
class Page:
    items: list[dict]
    raw: bytes
    url: str  # redacted: no userinfo, no secret-looking query values
    fetched_at: datetime
    request_id: str | None
    dropped: int = 0  # list items that were not JSON objects (reported as skipped records)


@dataclass
class RequestStats:
    """Counters shared by every thread using one client."""

    requests: int = 0
    retries: int = 0
    throttled_429: int = 0
    waited_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, requests: int = 0, retries: int = 0, throttled_429: int = 0,
            waited_seconds: float = 0.0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries
            self.throttled_429 += throttled_429
            self.waited_seconds += waited_seconds

    def as_dict(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "retries": self.retries,
                    "throttled_429": self.throttled_429, "waited_seconds": round(self.waited_seconds, 3)}


def redact_url(url: str | httpx.URL) -> str:
    """The URL without userinfo and with secret-looking query values replaced by `***`."""
    parts = urlsplit(str(url))
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode([(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_LINK_SPLIT = re.compile(r",\s*(?=<)")
_LINK_ENTRY = re.compile(r"\s*<([^>]*)>(.*)$", re.DOTALL)


def parse_link_header(value: str | None) -> dict[str, str]:
    """Map each `rel` of an RFC 8288 `Link` header to its URL; malformed parts are skipped."""
    links: dict[str, str] = {}
    for entry in _LINK_SPLIT.split(value or ""):
        match = _LINK_ENTRY.match(entry)
        if not match or not match.group(1).strip():
            continue
        url, params = match.group(1).strip(), match.group(2)
        for param in params.split(";"):
            key, _, val = param.partition("=")
            if key.strip().lower() != "rel":
                continue
            for rel in val.strip().strip('"').lower().split():
                links.setdefault(rel, url)
    return links


def next_link(response: httpx.Response) -> str | None:
    """The absolute `rel="next"` URL of a response, or None on the last page."""
    links = parse_link_header(", ".join(response.headers.get_list("link")))
    target = links.get("next")
    return str(response.request.url.join(target)) if target else None


def error_details(response: httpx.Response) -> tuple[str | None, str | None]:
    """(code, summary) from an Okta or Twilio error body; (None, None) when it is not JSON."""
    try:
        body = json.loads(response.content or b"null")
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(body, dict):
        return None, None
    # Okta errorCode/errorSummary, Twilio code/message, OAuth error/error_description.
    code = body.get("errorCode", body.get("code", body.get("error")))
    summary = body.get("errorSummary", body.get("message", body.get("error_description")))
    causes = body.get("errorCauses")
    if isinstance(causes, list) and causes and isinstance(causes[0], dict) and causes[0].get("errorSummary"):
        summary = f"{summary}: {causes[0]['errorSummary']}"
    return (str(code) if code not in (None, "") else None,
            str(summary) if summary not in (None, "") else None)


def same_origin(a: str | httpx.URL, b: str | httpx.URL) -> bool:
    ua, ub = httpx.URL(str(a)), httpx.URL(str(b))
    return (ua.scheme, ua.host, ua.port) == (ub.scheme, ub.host, ub.port)


def onto_origin(target: str | httpx.URL, base: str | httpx.URL) -> tuple[str, bool]:
    """`target`'s path and query on `base`'s origin, and whether it had to move.

    A next-page link naming another host (a server that knows itself as `localhost` while it is
    configured as `127.0.0.1`, a proxy, a regional hostname, or a hostile server) is followed on
    the configured origin: credentials never go anywhere else, and the listing does not die on a
    host name.  User info in the link is dropped."""
    if same_origin(target, base):
        return str(target), False
    t, b = httpx.URL(str(target)), httpx.URL(str(base))
    prefix = b.raw_path.split(b"?")[0].rstrip(b"/")  # a base behind a path prefix keeps it
    raw_path = t.raw_path if not prefix or t.raw_path.startswith(prefix + b"/") else prefix + t.raw_path
    return str(httpx.URL(scheme=b.scheme, host=b.host, port=b.port, raw_path=raw_path)), True


def warn_foreign_link_once(warned: set[str], service: str, endpoint: str, link: str, base: str) -> None:
    """Log, once per endpoint in `warned` (a client's), that next links name another host (see
    `onto_origin`); only the host is logged, never the link's user info or query."""
    if endpoint not in warned:
        warned.add(endpoint)
        log.warning("%s GET %s: next-page links name another host (%s); following them on %s", service,
                    endpoint, httpx.URL(link).host or "?", httpx.URL(base).host)


# --- the retry loop -------------------------------------------------------------------------

@dataclass
class Result:
    response: httpx.Response
    body: Any  # parsed JSON, or None when the request did not ask for JSON


class RetryingSession:
    """Sends requests through an `httpx.Client` with pacing, retries and named errors.

    Shared by both API clients; safe to use from several threads (at most `max_concurrency`
    requests are in flight at once).
    """

    def __init__(self, client: httpx.Client, *, service: str, request_id_header: str,
                 max_retries: int = 6, max_concurrency: int = 4,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 secrets: Callable[[], Iterable[str]] = tuple, rng: random.Random | None = None,
                 throttle_budget_seconds: float = THROTTLE_BUDGET_SECONDS,
                 rate_limit_percent: float | None = None):
        self.client = client
        # This run's share of each org-wide bucket (OKTA_RATE_LIMIT_PERCENT); None: no cap of our own.
        self.shares = RateShares(rate_limit_percent) if rate_limit_percent is not None else None
        self.throttle_budget_seconds = throttle_budget_seconds
        self.service = service
        self.request_id_header = request_id_header
        self.max_retries = max(0, max_retries)
        self.sleep = sleep
        self.clock = clock
        self.secrets = secrets
        self.rng = rng
        self.stats = RequestStats()
        self._slots = threading.BoundedSemaphore(max(1, max_concurrency))
        self._buckets: dict[str, RateLimitState] = {}
        self._buckets_lock = threading.Lock()

    def bucket(self, path: str) -> RateLimitState:
        key = rate_limit_bucket(path)
        with self._buckets_lock:
            return self._buckets.setdefault(key, RateLimitState())

    def request(self, method: str, url: str, *, expect_json: bool = True,
                check: Callable[[Any], None] | None = None, failed: ApiError | None = None, **kwargs) -> Result:
        """Send until success or a final error.

        Failures (5xx, timeouts, dropped connections, malformed bodies) allow `1 + max_retries`
        attempts in all.  A 429 is the server asking us to wait, not a failure: throttled
        attempts are bounded by the total time spent waiting on them instead.
        `check` validates the parsed body; a `ValueError` from it makes the attempt retriable.
        `failed`: the first attempt was already made elsewhere and failed so (a page read ahead
        whose body was garbled): this call is its retry, with the backoff and count of one.
        Raises `AuthError`, `NotFoundError`, `ConflictError`, `ApiError` or `RetriesExhausted`.
        """
        request = self.client.build_request(method, url, **kwargs)
        endpoint = request.url.path
        bucket = self.bucket(endpoint)
        failures = throttled = 0
        throttle_waited = 0.0
        if failed is not None:
            failures = 1
            decision = classify(None, failed, attempt=failures, now=self.clock(), rng=self.rng)
            if not decision.retriable:
                raise failed
            if failures > self.max_retries:
                raise self._exhausted(method, endpoint, None, failed, decision, failures)
            self._wait_before_retry(method, endpoint, None, decision, failures, 1 + self.max_retries)
        share = self.shares.share(rate_limit_bucket(endpoint)) if self.shares is not None else None
        while True:
            self._pace(bucket, endpoint)
            if share is None:
                response, exc = self._send_once(request, bucket)
            else:
                response, exc = self._send_within_share(request, bucket, share, endpoint)
            if response is not None and response.is_success:
                try:
                    return Result(response, self._parse(response, endpoint, expect_json, check))
                except MalformedResponseError as bad:
                    response, exc = None, bad
            is_429 = response is not None and response.status_code == 429
            if is_429:
                throttled += 1
                self.stats.add(throttled_429=1)
            else:
                failures += 1
            attempt = failures + throttled
            decision = classify(response, exc, attempt=throttled if is_429 else failures,
                                now=self.clock(), rng=self.rng)
            if not decision.retriable:
                raise self._final_error(method, endpoint, response, exc, decision, attempt)
            wait = decision.wait_seconds or 0.0
            if is_429:
                throttle_waited += wait
                if throttle_waited > self.throttle_budget_seconds or throttled > MAX_THROTTLED_ATTEMPTS:
                    raise self._exhausted(method, endpoint, response, exc, decision, attempt)
            elif failures > self.max_retries:
                raise self._exhausted(method, endpoint, response, exc, decision, attempt)
            self._wait_before_retry(method, endpoint, response, decision, failures, 1 + self.max_retries)

    def _pace(self, bucket: RateLimitState, endpoint: str) -> None:
        wait = bucket.acquire(self.clock())
        if wait <= 0:
            return
        level = logging.INFO if wait >= 1 else logging.DEBUG
        log.log(level, "rate limit reached on %s; waiting %.1f s", endpoint, wait)
        self._sleep(wait)

    def _send_within_share(self, request: httpx.Request, bucket: RateLimitState, share, endpoint: str):
        """`_send_once` when this run's share of the bucket has room (waiting for it if not)."""
        while True:
            wait = share.acquire(self.clock())
            if wait <= 0:
                break
            if wait >= 1:
                log.info("this run's %g%% share of the rate limit on %s is spent; waiting %.1f s for the next "
                         "window (OKTA_RATE_LIMIT_PERCENT)", share.percent, endpoint, wait)
            self._sleep(min(wait, MAX_WAIT_SECONDS))
        limit = reset = None
        try:
            response, exc = self._send_once(request, bucket)
            if response is not None:
                now = self.clock()
                limit = _to_int(response.headers.get("x-rate-limit-limit"))
                reset = _to_float(response.headers.get("x-rate-limit-reset"))
                if reset is not None:
                    reset += server_clock_offset(response.headers, now)
            return response, exc
        finally:
            share.release(limit, reset, self.clock())

    def rate_limit_usage(self) -> dict[str, dict]:
        """Per bucket, the most this run sent in any one window (only with a share set)."""
        return self.shares.usage() if self.shares is not None else {}

    def _send_once(self, request: httpx.Request, bucket: RateLimitState):
        self.stats.add(requests=1)
        try:
            with self._slots:
                response = self.client.send(request)
                response.read()
                _release_stream(response)
        except httpx.HTTPError as exc:
            return None, exc
        except ApiError as exc:  # raised by an auth flow (e.g. the token endpoint failed)
            return None, exc
        if response.is_success or response.status_code == 429:
            # Error pages (often from proxies or injected faults) carry unreliable budget headers.
            bucket.update(response.headers, self.clock())
        return response, None

    def parse_json(self, response: httpx.Response, check: Callable[[Any], None] | None = None) -> Any:
        """The JSON body of a response `request(..., expect_json=False)` returned, checked by
        `check` as `request` would have; `MalformedResponseError` when it is not that."""
        return self._parse(response, response.request.url.path, True, check)

    def _parse(self, response: httpx.Response, endpoint: str, expect_json: bool,
               check: Callable[[Any], None] | None) -> Any:
        if not expect_json:
            return None
        try:
            body = fastjson.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            request_id = response.headers.get(self.request_id_header)
            raise MalformedResponseError(
                f"{self.service} {endpoint} returned a body that is not JSON (request id {request_id or 'unknown'})",
                status=response.status_code, endpoint=endpoint, request_id=request_id) from None
        if check is not None:
            try:
                check(body)
            except ValueError as bad:
                request_id = response.headers.get(self.request_id_header)
                raise MalformedResponseError(
                    f"{self.service} {endpoint} returned {bad} (request id {request_id or 'unknown'})",
                    status=response.status_code, endpoint=endpoint, request_id=request_id) from None
        return body

    def _wait_before_retry(self, method: str, endpoint: str, response: httpx.Response | None,
                           decision: Decision, attempt: int, attempts: int) -> None:
        wait = decision.wait_seconds or 0.0
        if response is not None and response.status_code == 429:
            log.warning("rate limit reached on %s; waiting %.1f s (%s)", endpoint, wait, decision.reason)
        else:
            log.warning("%s %s %s failed (attempt %d/%d: %s); retrying in %.1f s",
                        self.service, method, endpoint, attempt, attempts, decision.reason, wait)
        self.stats.add(retries=1)
        self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        self.stats.add(waited_seconds=seconds)
        self.sleep(seconds)

    def _describe(self, method: str, endpoint: str, response: httpx.Response | None,
                  exc: BaseException | None) -> tuple[str, str | None, str | None, int | None]:
        """(one-line description, request id, error code, status) with secrets removed."""
        secrets = tuple(self.secrets())
        if response is None:
            if isinstance(exc, ApiError):
                return redact(str(exc), secrets, limit=MESSAGE_SNIPPET_CHARS), exc.request_id, exc.code, exc.status
            detail = redact(str(exc) or type(exc).__name__, secrets, limit=MESSAGE_SNIPPET_CHARS)
            return f"{self.service} {method} {endpoint} failed: {type(exc).__name__}: {detail}", None, None, None
        request_id = response.headers.get(self.request_id_header)
        code, summary = error_details(response)
        if summary is None and response.content:
            summary = response.content[:MESSAGE_SNIPPET_CHARS].decode("utf-8", "replace")
        text = f"{self.service} {method} {endpoint} failed: HTTP {response.status_code}"
        if code:
            text += f" {code}"
        if summary:
            text += f" {redact(summary, secrets, limit=MESSAGE_SNIPPET_CHARS)}"
        text += f" (request id {request_id or 'unknown'})"
        return text, request_id, code, response.status_code

    def _final_error(self, method, endpoint, response, exc, decision, attempt) -> ApiError:
        if isinstance(exc, ApiError) and response is None:
            exc.attempts = attempt
            return exc
        text, request_id, code, status = self._describe(method, endpoint, response, exc)
        cls = error_for_status(status) if status is not None else ApiError
        return cls(text, status=status, endpoint=endpoint, request_id=request_id, code=code, attempts=attempt)

    def _exhausted(self, method, endpoint, response, exc, decision, attempt) -> RetriesExhausted:
        text, request_id, code, status = self._describe(method, endpoint, response, exc)
        return RetriesExhausted(f"{text}; gave up after {attempt} attempts", status=status,
                                endpoint=endpoint, request_id=request_id, code=code, attempts=attempt)


def utc_from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)
