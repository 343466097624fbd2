"""The shared HTTP rules: what is retriable, how long to wait, pacing, Link parsing, redaction."""
from __future__ import annotations

import email.utils
import json
import random
import threading

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from okta_flex_sync.clients.http import (
    MAX_WAIT_SECONDS,
    ApiError,
    AuthError,
    ConflictError,
    MalformedResponseError,
    NotFoundError,
    PaginationError,
    RateLimitState,
    RetriesExhausted,
    backoff_seconds,
    classify,
    error_details,
    error_for_status,
    is_retriable_error,
    next_link,
    onto_origin,
    parse_link_header,
    parse_retry_after,
    rate_limit_bucket,
    redact_url,
    retry_condition,
    same_origin,
)
from okta_flex_sync.redaction import redact

NOW = 1_700_000_000.0
URL = "https://acme.okta.com/api/v1/users"


def response(status: int, headers: dict | None = None, body=None, *, url: str = URL) -> httpx.Response:
    content = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
    return httpx.Response(status, headers=headers or {}, content=content, request=httpx.Request("GET", url))


def rl(limit, remaining, reset) -> dict:
    return {"X-Rate-Limit-Limit": str(limit), "X-Rate-Limit-Remaining": str(remaining),
            "X-Rate-Limit-Reset": str(reset)}


def http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


E0000047 = {"errorCode": "E0000047", "errorSummary": "API call exceeded rate limit due to too many requests."}
E0000009 = {"errorCode": "E0000009", "errorSummary": "Internal Server Error"}


# --- classify -------------------------------------------------------------------------------

@pytest.mark.parametrize("resp, retriable, low, high", [
    (response(429, rl(600, 0, int(NOW) + 10), E0000047), True, 11.0, 11.25),             # wait for reset + margin
    (response(429, rl(0, 0, int(NOW) + 40), E0000047), True, 0.25, 0.5),                 # concurrency: short backoff
    (response(429, rl(600, 0, int(NOW) + 10_000), E0000047), True, MAX_WAIT_SECONDS, MAX_WAIT_SECONDS),  # absurd
    (response(429, rl(600, 0, int(NOW * 1000)), E0000047), True, MAX_WAIT_SECONDS, MAX_WAIT_SECONDS),   # reset in ms
    (response(429, rl(600, 0, "soon"), E0000047), True, 0.25, 0.5),                      # unparseable reset
    (response(429, {"Retry-After": "7"}, {"code": 20429}), True, 7.0, 7.0),              # Twilio-style
    (response(429, {"Retry-After": http_date(NOW + 30)}), True, 30.0, 30.0),             # HTTP-date Retry-After
    (response(429, {}, b"<html>slow down</html>"), True, 0.25, 0.5),                     # no hints at all
    (response(429, {**rl(600, 0, int(NOW) + 10), "Date": http_date(NOW + 60)}), True, 0.0, 1.25),  # server clock ahead
    (response(503, {"Retry-After": "3"}), True, 3.0, 3.0),
    (response(503, {"Retry-After": "86400"}), True, MAX_WAIT_SECONDS, MAX_WAIT_SECONDS),
    (response(500, {}, E0000009), True, 0.25, 0.5),                                      # Okta 30 s query timeout
    (response(502, {}, b"<html>Bad Gateway</html>"), True, 0.25, 0.5),
    (response(504, {}), True, 0.25, 0.5),
    (response(408, {}), True, 0.25, 0.5),
    (response(501, {}), False, None, None),
    (response(400, {}, {"errorCode": "E0000031"}), False, None, None),
    (response(401, {}, {"errorCode": "E0000011"}), False, None, None),
    (response(403, {}, {"errorCode": "E0000006"}), False, None, None),
    (response(404, {}, {"errorCode": "E0000007"}), False, None, None),
    (response(409, {}), False, None, None),
    (response(412, {}), False, None, None),
    (response(200, {}, []), False, None, None),
    (response(302, {"Location": "https://evil.example"}), False, None, None),
])
def test_classify_response(resp, retriable, low, high):
    decision = classify(resp, None, attempt=1, now=NOW, rng=random.Random(1))
    assert decision.retriable is retriable
    if retriable:
        assert low <= decision.wait_seconds <= high
    else:
        assert decision.wait_seconds is None


def test_classify_429_names_error_code():
    assert "E0000047" in classify(response(429, rl(600, 0, int(NOW) + 5), E0000047), None, attempt=1, now=NOW).reason


def test_classify_500_names_okta_timeout_code():
    assert "E0000009" in classify(response(500, {}, E0000009), None, attempt=1, now=NOW).reason


def test_absurd_reset_reason_says_capped():
    reason = classify(response(429, rl(600, 0, int(NOW) + 10_000)), None, attempt=1, now=NOW).reason
    assert "capped" in reason


REQ = httpx.Request("GET", URL)


@pytest.mark.parametrize("exc, retriable", [
    (httpx.ReadTimeout("read timed out", request=REQ), True),
    (httpx.ConnectTimeout("connect timed out", request=REQ), True),
    (httpx.PoolTimeout("pool", request=REQ), True),
    (httpx.ConnectError("refused", request=REQ), True),
    (httpx.ReadError("connection reset", request=REQ), True),
    (httpx.RemoteProtocolError("peer closed connection", request=REQ), True),
    (httpx.DecodingError("bad gzip", request=REQ), True),
    (MalformedResponseError("not JSON", status=200), True),
    (ApiError("token endpoint 503", status=503), True),
    (AuthError("token endpoint 401", status=401), False),
    (RetriesExhausted("gave up", status=503), False),
    (httpx.UnsupportedProtocol("ftp", request=REQ), False),
    (httpx.LocalProtocolError("bad header", request=REQ), False),
    (ValueError("a bug"), False),
])
def test_classify_exception(exc, retriable):
    decision = classify(None, exc, attempt=1, now=NOW)
    assert decision.retriable is retriable
    assert (decision.wait_seconds is not None) is retriable


def test_classify_needs_something():
    with pytest.raises(ValueError):
        classify(None, None, attempt=1, now=NOW)


@pytest.mark.parametrize("attempt, low, high", [
    (1, 0.25, 0.5), (2, 0.5, 1.0), (3, 1.0, 2.0), (8, 15.0, 30.0), (40, 15.0, 30.0),
])
def test_backoff_grows_and_is_bounded(attempt, low, high):
    assert low <= backoff_seconds(attempt, rng=random.Random(attempt)) <= high


header_values = st.one_of(st.none(), st.text(max_size=12), st.integers(-10**13, 10**13).map(str),
                          st.floats(allow_nan=True, allow_infinity=True).map(str))


@given(status=st.sampled_from([408, 429, 500, 502, 503, 504]), attempt=st.integers(1, 100),
       limit=header_values, remaining=header_values, reset=header_values, retry_after=header_values)
def test_retriable_waits_are_never_negative_or_unbounded(status, attempt, limit, remaining, reset, retry_after):
    headers = {k: v for k, v in {"X-Rate-Limit-Limit": limit, "X-Rate-Limit-Remaining": remaining,
                                 "X-Rate-Limit-Reset": reset, "Retry-After": retry_after}.items() if v is not None}
    headers = {k: v for k, v in headers.items() if v.isprintable() and v.isascii()}
    decision = classify(response(status, headers), None, attempt=attempt, now=NOW)
    assert decision.retriable
    assert 0.0 <= decision.wait_seconds <= MAX_WAIT_SECONDS


@pytest.mark.parametrize("value, expected", [
    (None, None), ("5", 5.0), ("1.5", 1.5), ("-3", 0.0), ("tomorrow", None),
    (http_date(NOW + 12), 12.0), (http_date(NOW - 12), 0.0),
])
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize("exc, expected", [
    (RetriesExhausted("503 x7", status=503), True),
    (AuthError("401", status=401), False),
    (NotFoundError("404", status=404), False),
    (ConflictError("412", status=412), False),
    (PaginationError("endless"), False),
    (ApiError("400", status=400), False),
    (ApiError("503", status=503), True),
    (httpx.ReadTimeout("slow", request=REQ), True),
    (httpx.ConnectError("refused", request=REQ), True),
    (KeyError("bug"), False),
    (KeyboardInterrupt(), False),
])
def test_is_retriable_error(exc, expected):
    assert is_retriable_error(exc) is expected


@pytest.mark.parametrize("exc, expected", [
    (RetriesExhausted("503 x7", status=503), True),
    (httpx.ConnectError("refused", request=REQ), True),
    (AuthError("401", status=401), False),
    (ValueError("bug"), False),
])
def test_prefect_retry_condition(exc, expected):
    from prefect.states import Failed

    assert retry_condition(None, None, Failed(data=exc)) is expected


@pytest.mark.parametrize("status, cls", [
    (401, AuthError), (403, AuthError), (404, NotFoundError), (409, ConflictError), (412, ConflictError),
    (400, ApiError), (422, ApiError),
])
def test_error_for_status(status, cls):
    assert error_for_status(status) is cls


@pytest.mark.parametrize("body, expected", [
    ({"errorCode": "E0000007", "errorSummary": "Not found: Resource not found: x (AppInstance)"},
     ("E0000007", "Not found: Resource not found: x (AppInstance)")),
    ({"errorCode": "E0000001", "errorSummary": "Api validation failed",
      "errorCauses": [{"errorSummary": "limit: bad"}]}, ("E0000001", "Api validation failed: limit: bad")),
    ({"code": 20404, "message": "The requested resource was not found", "status": 404},
     ("20404", "The requested resource was not found")),
    ({"error": "invalid_client", "error_description": "bad assertion"}, ("invalid_client", "bad assertion")),
    (b"<html>oops</html>", (None, None)),
    (b"", (None, None)),
    ([1, 2], (None, None)),
    ({"errorCauses": "not a list"}, (None, None)),
])
def test_error_details(body, expected):
    assert error_details(response(400, {}, body)) == expected


# --- rate-limit state ---------------------------------------------------------------------

@pytest.mark.parametrize("headers, expected", [
    ({}, 0.0),                                                    # nothing known: go
    (rl(600, 599, int(NOW) + 30), 0.0),                           # plenty left
    (rl(600, 1, int(NOW) + 30), 0.0),                             # one left is still one
    (rl(600, 0, int(NOW) + 30), 31.0),                            # spent: wait for reset + margin
    (rl(600, 0, int(NOW) - 5), 0.0),                              # reset already passed
    (rl(0, 0, int(NOW) + 30), 0.0),                               # a concurrency 429 is not the bucket budget
    (rl(600, 0, int(NOW) + 10_000), 1.0),                         # absurd reset ignored: short default window
    (rl(600, "lots", int(NOW) + 30), 0.0),                        # garbage
    ({"X-Rate-Limit-Limit": "100", "X-Rate-Limit-Remaining": "0"}, 1.0),  # TaskRouter: no reset header
    ({"x-rate-limit-limit": "600", "x-rate-limit-remaining": "0", "x-rate-limit-reset": str(int(NOW) + 5)}, 6.0),
    ({**rl(600, 0, int(NOW) + 70), "Date": http_date(NOW + 60)}, 11.0),  # server clock 60 s ahead
])
def test_rate_limit_wait_seconds(headers, expected):
    state = RateLimitState()
    state.update(headers, NOW)
    assert state.wait_seconds(NOW) == pytest.approx(expected, abs=0.01)


def test_rate_limit_acquire_counts_down_then_waits_for_reset():
    state = RateLimitState()
    state.update(rl(600, 2, int(NOW) + 20), NOW)
    assert [state.acquire(NOW), state.acquire(NOW)] == [0.0, 0.0]
    assert state.acquire(NOW) == pytest.approx(21.0)
    assert state.acquire(NOW + 25) == 0.0  # next window: budget unknown until the next response


def test_rate_limit_late_response_from_an_old_window_is_ignored():
    state = RateLimitState()
    state.update(rl(600, 500, int(NOW) + 60), NOW)
    state.update(rl(600, 0, int(NOW) - 1), NOW)
    assert state.remaining == 500


def test_rate_limit_newest_window_wins():
    state = RateLimitState()
    state.update(rl(600, 3, int(NOW) + 60), NOW)
    state.update(rl(600, 590, int(NOW) + 30), NOW)  # the server says the window is different now
    assert (state.remaining, state.reset) == (590, int(NOW) + 30)


def test_rate_limit_same_window_keeps_the_lowest_remaining():
    state = RateLimitState()
    state.update(rl(600, 10, int(NOW) + 60), NOW)
    state.update(rl(600, 12, int(NOW) + 60), NOW)  # an earlier request answered late
    assert state.remaining == 10


def test_rate_limit_spreads_budget_when_threads_share_a_bucket():
    state = RateLimitState()
    state.update(rl(100, 10, int(NOW) + 10), NOW)
    other = threading.Thread(target=state.acquire, args=(NOW,))
    other.start()
    other.join()
    # 9 requests left for 10 s among two threads: about one every 1.1 s.
    waits = [state.acquire(NOW) for _ in range(3)]
    assert waits[0] == 0.0
    assert waits[1] == pytest.approx(10 / 9, rel=0.01)
    assert waits[2] > waits[1]


def test_rate_limit_single_thread_is_not_slowed_down():
    state = RateLimitState()
    state.update(rl(100, 10, int(NOW) + 10), NOW)
    assert [state.acquire(NOW) for _ in range(10)] == [0.0] * 10


@given(remaining=st.integers(0, 1000), reset_in=st.floats(-1000, 10**7), now_offset=st.floats(0, 1000))
def test_rate_limit_wait_is_bounded(remaining, reset_in, now_offset):
    state = RateLimitState()
    state.update(rl(1000, remaining, NOW + reset_in), NOW)
    assert 0.0 <= state.acquire(NOW + now_offset) <= MAX_WAIT_SECONDS


@pytest.mark.parametrize("path, bucket", [
    ("/api/v1/users", "/api/v1/users"),
    ("/api/v1/users/00u1", "/api/v1/users/*"),
    ("/api/v1/apps/0oa1/users", "/api/v1/apps/*"),
    ("/api/v1/logs", "/api/v1/logs"),
    ("/v1/Workspaces/WS1/Workers/WK1", "/v1/Workspaces/WS1/*"),
    ("/", "/"),
])
def test_rate_limit_bucket(path, bucket):
    assert rate_limit_bucket(path) == bucket


# --- Link headers ---------------------------------------------------------------------------

@pytest.mark.parametrize("header, expected", [
    (None, {}),
    ("", {}),
    ('<https://a/api/v1/users?after=1&limit=2>; rel="next"', {"next": "https://a/api/v1/users?after=1&limit=2"}),
    ('<https://a/x?limit=2>; rel="self", <https://a/x?after=9>; rel="next"',
     {"self": "https://a/x?limit=2", "next": "https://a/x?after=9"}),
    ("<https://a/x?after=9>; rel=next", {"next": "https://a/x?after=9"}),
    ('<https://a/x?after=9>; REL="NEXT"', {"next": "https://a/x?after=9"}),
    ('<https://a/x?after=9>; rel="self next"', {"self": "https://a/x?after=9", "next": "https://a/x?after=9"}),
    ('<https://a/x?filter=a,b;c>; title="t"; rel="next"', {"next": "https://a/x?filter=a,b;c"}),
    ('<https://a/x?after=9>;rel="next",<https://a/x>;rel="self"',
     {"next": "https://a/x?after=9", "self": "https://a/x"}),
    ('<https://a/x?after=9>', {}),                       # no rel
    ('<>; rel="next"', {}),                              # empty target
    ('https://a/x?after=9; rel="next"', {}),             # no angle brackets
    ('<https://a/x?after=9; rel="next"', {}),            # unterminated
    ("garbage, more garbage", {}),
    ('<https://a/1>; rel="next", <https://a/2>; rel="next"', {"next": "https://a/1"}),  # first wins
])
def test_parse_link_header(header, expected):
    assert parse_link_header(header) == expected


def test_next_link_joins_relative_and_multiple_headers():
    resp = httpx.Response(200, headers=[("Link", '<https://acme.okta.com/api/v1/users>; rel="self"'),
                                        ("Link", '</api/v1/users?after=00u9>; rel="next"')],
                          request=httpx.Request("GET", URL))
    assert next_link(resp) == "https://acme.okta.com/api/v1/users?after=00u9"


def test_next_link_absent():
    assert next_link(response(200, {"Link": '<https://acme.okta.com/api/v1/users>; rel="self"'})) is None


@pytest.mark.parametrize("a, b, expected", [
    ("https://acme.okta.com/x", "https://acme.okta.com/y?z=1", True),
    ("https://acme.okta.com/x", "https://acme.okta.com:443/y", True),
    ("https://acme.okta.com/x", "http://acme.okta.com/x", False),
    ("https://acme.okta.com/x", "https://evil.example/x", False),
    ("http://127.0.0.1:8000/x", "http://127.0.0.1:8001/x", False),
])
def test_same_origin(a, b, expected):
    assert same_origin(a, b) is expected


@pytest.mark.parametrize("target, base, expected", [
    ("https://acme.okta.com/api/v1/users?after=x", "https://acme.okta.com",
     ("https://acme.okta.com/api/v1/users?after=x", False)),
    ("http://localhost:8080/api/v1/users?after=x", "http://127.0.0.1:8080",
     ("http://127.0.0.1:8080/api/v1/users?after=x", True)),
    ("https://u:p@evil.example:8443/v1/Workers?Page=1", "https://taskrouter.twilio.com",
     ("https://taskrouter.twilio.com/v1/Workers?Page=1", True)),
    ("https://taskrouter.twilio.com/v1/Workers?Page=1", "https://proxy.example/twilio",
     ("https://proxy.example/twilio/v1/Workers?Page=1", True)),
    ("https://other.example/twilio/v1/Workers", "https://proxy.example/twilio",
     ("https://proxy.example/twilio/v1/Workers", True)),
])
def test_onto_origin_keeps_credentials_on_the_configured_origin(target, base, expected):
    assert onto_origin(target, base) == expected


# --- redaction ------------------------------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("https://acme.okta.com/api/v1/users?limit=2&after=00u1", "https://acme.okta.com/api/v1/users?limit=2&after=00u1"),
    ("https://AC1:secret@taskrouter.twilio.com/v1/Workers", "https://taskrouter.twilio.com/v1/Workers"),
    ("https://a.example/x?access_token=abc&limit=2", "https://a.example/x?access_token=%2A%2A%2A&limit=2"),
    ("https://a.example/x?client_assertion=eyJ.x.y", "https://a.example/x?client_assertion=%2A%2A%2A"),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected


@pytest.mark.parametrize("text, secrets, expected", [
    ("Authorization: SSWS 00abcDEF-123", (), "Authorization: SSWS ***"),
    ("header Bearer eyJhbGciOi.x.y was refused", (), "header Bearer *** was refused"),
    ("Basic QUM6c2VjcmV0", (), "Basic ***"),
    ("token is hunter2hunter2 here", ("hunter2hunter2",), "token is *** here"),
    ("line one\nline two", (), "line one line two"),
    ("x" * 500, (), "x" * 199 + "…"),
])
def test_redact_one_line(text, secrets, expected):
    assert redact(text, secrets, limit=200) == expected


def test_clients_share_one_verifying_tls_context():
    import ssl

    from okta_flex_sync.clients.http import shared_ssl_context

    ctx = shared_ssl_context()
    assert ctx is shared_ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
