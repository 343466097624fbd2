"""OktaClient against an in-process fake org (httpx.MockTransport) with injected clock and sleep.

The end-to-end tests at the bottom replay cassettes recorded once against the bundled simulator.
"""
from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cassette_support import (
    CASSETTE_SEED,
    NOW,
    SIM_FILE,
    SIM_ORIGIN,
    FakeTime,
    remember,
)
from conftest import FAKE_SECRETS
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from okta_flex_sync.clients.http import (
    AuthError,
    NotFoundError,
    PaginationError,
    RetriesExhausted,
)
from okta_flex_sync.clients.okta import (
    OktaClient,
    PrivateKeyJWTAuth,
    SSWSAuth,
    okta_timestamp,
)
from okta_flex_sync.settings import ConfigError, Settings

ORG = "https://acme.okta.com"
TOKEN = FAKE_SECRETS["okta_api_token"]


def user(n: int, status: str = "ACTIVE", updated: str = "2024-01-01T00:00:00.000Z") -> dict:
    return {"id": f"00u{n:04d}", "status": status, "lastUpdated": updated,
            "profile": {"login": f"u{n}@acme.test", "email": f"u{n}@acme.test"}}


def page_response(request: httpx.Request, items: list, *, offset: int, limit: int, total: int,
                  headers: dict | None = None) -> httpx.Response:
    """A list page with Okta-style self/next Link headers (cursor is opaque to the client)."""
    links = [f'<{request.url}>; rel="self"']
    if offset + limit < total:
        nxt = request.url.copy_set_param("after", f"cur{offset + limit}")
        links.append(f'<{nxt}>; rel="next"')
    return httpx.Response(200, json=items, headers={"Link": ", ".join(links), "X-Okta-Request-Id": "req-list",
                                                    **(headers or {})})


class FakeOkta:
    """A tiny Okta: users, one app's assignments and the System Log, plus scripted faults."""

    def __init__(self, users=(), app_users=(), logs=(), *, auth=f"SSWS {TOKEN}"):
        self.users = list(users)
        self.app_users = list(app_users)
        self.logs = list(logs)
        self.auth = auth
        self.requests: list[httpx.Request] = []
        self.faults: list = []  # responses or exceptions served before the real answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.faults:
            fault = self.faults.pop(0)
            if isinstance(fault, Exception):
                raise fault
            return fault
        if request.headers.get("authorization") != self.auth:
            return httpx.Response(401, json={"errorCode": "E0000011", "errorSummary": "Invalid token provided"},
                                  headers={"X-Okta-Request-Id": "req-401"})
        return self.route(request)

    def route(self, request: httpx.Request) -> httpx.Response:
        path, params = request.url.path, request.url.params
        limit = int(params.get("limit", "200"))
        offset = int(params.get("after", "cur0")[3:])
        if path == "/api/v1/users":
            rows = self.select_users(params.get("filter"))
        elif path == "/api/v1/apps/0oaFLEX/users":
            rows = self.app_users
        elif path.startswith("/api/v1/users/"):
            found = [u for u in self.users if u["id"] == path.rsplit("/", 1)[-1]]
            return httpx.Response(200, json=found[0]) if found else httpx.Response(404, json={"errorCode": "E0000007"})
        elif path == "/api/v1/logs":
            rows = self.logs
        else:
            return httpx.Response(404, json={"errorCode": "E0000007", "errorSummary": "Not found: Resource not found"},
                                  headers={"X-Okta-Request-Id": "req-404"})
        return page_response(request, rows[offset:offset + limit], offset=offset, limit=limit, total=len(rows))

    def select_users(self, filter_: str | None) -> list[dict]:
        if filter_ is None:
            return [u for u in self.users if u["status"] != "DEPROVISIONED"]
        if filter_ == 'status eq "DEPROVISIONED"':
            return [u for u in self.users if u["status"] == "DEPROVISIONED"]
        match = re.fullmatch(r'lastUpdated gt "(.+)"', filter_)
        assert match, f"unexpected filter {filter_!r}"
        return [u for u in self.users if u["lastUpdated"] > match.group(1)]


def make_client(fake, ft: FakeTime | None = None, *, auth=None, **kwargs) -> OktaClient:
    ft = ft or FakeTime()
    return OktaClient(ORG, auth or SSWSAuth(TOKEN), transport=httpx.MockTransport(fake),
                      sleep=ft.sleep, clock=ft.clock, **kwargs)


def ids(pages) -> list[str]:
    return [item["id"] for page in pages for item in page.items]


def rate(limit, remaining, reset) -> dict:
    return {"X-Rate-Limit-Limit": str(limit), "X-Rate-Limit-Remaining": str(remaining),
            "X-Rate-Limit-Reset": str(int(reset))}


# --- listings -------------------------------------------------------------------------------

def test_full_pull_includes_deprovisioned_through_a_second_listing():
    users = [user(i) for i in range(5)] + [user(90, "DEPROVISIONED"), user(91, "SUSPENDED")]
    fake = FakeOkta(users)
    with make_client(fake) as client:
        got = ids(client.iter_user_pages(limit=2))
    assert sorted(got) == sorted(u["id"] for u in users)
    filters = [r.url.params.get("filter") for r in fake.requests]
    assert filters.count('status eq "DEPROVISIONED"') == 1
    assert all(r.headers["authorization"] == f"SSWS {TOKEN}" for r in fake.requests)


def test_pagination_follows_next_links_only():
    fake = FakeOkta([user(i) for i in range(5)])
    with make_client(fake) as client:
        list(client.iter_user_pages(limit=2))
    plain = [r for r in fake.requests if "filter" not in r.url.params]
    assert [r.url.params.get("after") for r in plain] == [None, "cur2", "cur4"]


def test_incremental_pull_filters_on_last_updated():
    users = [user(1, updated="2024-01-01T00:00:00.000Z"), user(2, "DEPROVISIONED", "2024-03-01T00:00:00.000Z")]
    fake = FakeOkta(users)
    since = datetime(2024, 2, 1, 3, 4, 5, 678901, tzinfo=timezone.utc)
    with make_client(fake) as client:
        got = ids(client.iter_user_pages(updated_since=since))
    assert got == ["00u0002"]
    assert fake.requests[0].url.params["filter"] == 'lastUpdated gt "2024-02-01T03:04:05.678Z"'


@pytest.mark.parametrize("moment, expected", [
    (datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "2024-01-02T03:04:05.000Z"),
    (datetime(2024, 1, 2, 3, 4, 5, 999999), "2024-01-02T03:04:05.999Z"),
    (datetime.fromisoformat("2024-01-02T05:04:05+02:00"), "2024-01-02T03:04:05.000Z"),
])
def test_okta_timestamp(moment, expected):
    assert okta_timestamp(moment) == expected


def test_app_user_pages_use_app_path_and_expand():
    fake = FakeOkta(app_users=[{"id": f"00u{i}", "credentials": {"userName": f"u{i}"}} for i in range(3)])
    with make_client(fake) as client:
        pages = list(client.iter_app_user_pages("0oaFLEX", limit=2, expand_user=True))
    assert [len(p.items) for p in pages] == [2, 1]
    assert fake.requests[0].url.params["expand"] == "user"
    assert pages[0].request_id == "req-list"
    assert TOKEN not in pages[0].url and pages[0].url.startswith(ORG)


def test_wrong_app_id_fails_fast_with_not_found():
    fake = FakeOkta()
    with make_client(fake) as client, pytest.raises(NotFoundError) as info:
        list(client.iter_app_user_pages("0oaWRONG"))
    assert "/api/v1/apps/0oaWRONG/users" in str(info.value) and "req-404" in str(info.value)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("app_id", ["", "../users", "a/b"])
def test_app_id_must_be_a_plain_id(app_id):
    with make_client(FakeOkta()) as client, pytest.raises(ValueError):
        list(client.iter_app_user_pages(app_id))


def test_get_user():
    fake = FakeOkta([user(7)])
    with make_client(fake) as client:
        assert client.get_user("00u0007")["id"] == "00u0007"
        with pytest.raises(NotFoundError):
            client.get_user("00u9999")


# --- retries and pacing ---------------------------------------------------------------------

def test_429_waits_until_reset_then_succeeds(caplog):
    ft = FakeTime()
    fake = FakeOkta([user(1)])
    fake.faults = [httpx.Response(429, json={"errorCode": "E0000047"}, headers=rate(600, 0, NOW + 12))]
    with caplog.at_level(logging.INFO), make_client(fake, ft) as client:
        assert ids(client.iter_user_pages()) == ["00u0001"]
    assert len(ft.sleeps) == 1 and 13.0 <= ft.sleeps[0] <= 13.25
    assert client.stats.throttled_429 == 1 and client.stats.retries == 1
    assert "rate limit reached on /api/v1/users; waiting 13." in caplog.text


def test_concurrency_429_backs_off_briefly():
    ft = FakeTime()
    fake = FakeOkta([user(1)])
    fake.faults = [httpx.Response(429, json={"errorCode": "E0000047"}, headers=rate(0, 0, NOW + 60))]
    with make_client(fake, ft) as client:
        list(client.iter_user_pages())
    assert ft.sleeps[0] < 1.0


@pytest.mark.parametrize("fault", [
    httpx.Response(503, text="<html>Service Unavailable</html>"),
    httpx.Response(500, json={"errorCode": "E0000009", "errorSummary": "Internal Server Error"}),
    httpx.Response(200, text="{not json"),
    httpx.Response(200, json={"not": "a list"}),
    httpx.ReadError("connection reset by peer"),
    httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
    httpx.ReadTimeout("timed out"),
    httpx.ConnectError("connection refused"),
])
def test_transient_failure_is_retried(fault):
    ft = FakeTime()
    fake = FakeOkta([user(1)])
    fake.faults = [fault]
    with make_client(fake, ft) as client:
        assert ids(client.iter_user_pages()) == ["00u0001"]
    assert client.stats.retries == 1 and len(ft.sleeps) == 1 and 0 < ft.sleeps[0] <= 0.5


def test_retries_are_capped_and_exhaustion_is_named():
    ft = FakeTime()
    fake = FakeOkta([user(1)])
    fake.faults = [httpx.Response(503, headers={"X-Okta-Request-Id": "req-503"})] * 10
    with make_client(fake, ft, max_retries=3) as client, pytest.raises(RetriesExhausted) as info:
        list(client.iter_user_pages())
    assert len(fake.requests) == 4 and info.value.attempts == 4
    assert "req-503" in str(info.value) and "/api/v1/users" in str(info.value)


def test_429s_do_not_use_up_the_failure_budget():
    ft = FakeTime()
    fake = FakeOkta([user(1)])
    fake.faults = [httpx.Response(429, json={"errorCode": "E0000047"}, headers={"Retry-After": "1"})] * 8
    with make_client(fake, ft, max_retries=2) as client:
        assert ids(client.iter_user_pages()) == ["00u0001"]
    assert client.stats.throttled_429 == 8 and ft.sleeps == [1.0] * 8


def test_endless_429s_give_up_after_the_throttle_budget():
    ft = FakeTime()
    fake = FakeOkta([user(1)])
    fake.faults = [httpx.Response(429, headers={**rate(600, 0, NOW + 10_000), "X-Okta-Request-Id": "req-429"})] * 20
    with make_client(fake, ft) as client, pytest.raises(RetriesExhausted) as info:
        list(client.iter_user_pages())
    assert ft.sleeps == [120.0, 120.0]  # absurd reset capped; 300 s budget allows two waits
    assert "req-429" in str(info.value) and "HTTP 429" in str(info.value)


def test_error_pages_do_not_feed_the_pacer():
    ft = FakeTime()
    fake = FakeOkta([user(1)])
    fake.faults = [httpx.Response(503, headers={**rate(600, 0, NOW + 60), "Retry-After": "1"})]
    with make_client(fake, ft) as client:
        list(client.iter_user_pages())
    assert ft.sleeps == [1.0]


@pytest.mark.parametrize("status, code", [(401, "E0000011"), (403, "E0000006")])
def test_auth_failure_is_fast_and_never_shows_the_token(status, code):
    fake = FakeOkta([user(1)])
    body = {"errorCode": code, "errorSummary": f"Invalid token provided: SSWS {TOKEN}"}  # hostile echo
    fake.faults = [httpx.Response(status, json=body, headers={"X-Okta-Request-Id": "req-abc123"})]
    with make_client(fake) as client, pytest.raises(AuthError) as info:
        list(client.iter_user_pages())
    message = str(info.value)
    assert len(fake.requests) == 1
    assert "/api/v1/users" in message and "req-abc123" in message and code in message
    assert TOKEN not in message and "\n" not in message
    assert info.value.status == status and info.value.request_id == "req-abc123"


def test_long_error_bodies_are_truncated():
    fake = FakeOkta()
    fake.faults = [httpx.Response(400, text="x" * 10_000)]
    with make_client(fake) as client, pytest.raises(Exception) as info:
        list(client.iter_user_pages())
    assert len(str(info.value)) < 400


def test_pacing_sleeps_until_reset_when_budget_is_spent(caplog):
    ft = FakeTime()
    fake = FakeOkta([user(i) for i in range(4)])
    original = fake.route

    def spent(request):
        resp = original(request)
        resp.headers.update(rate(600, 0, ft.now + 5))
        return resp

    fake.route = spent
    with caplog.at_level(logging.INFO), make_client(fake, ft) as client:
        list(client.iter_user_pages(limit=2))
    assert ft.sleeps and all(s == pytest.approx(6.0) for s in ft.sleeps)
    assert client.stats.throttled_429 == 0
    assert "rate limit reached on /api/v1/users; waiting 6.0 s" in caplog.text


# --- hostile pagination ---------------------------------------------------------------------

def test_endless_log_next_link_stops_on_empty_page():
    fake = FakeOkta(logs=[{"uuid": "e1"}])

    def endless(request):
        fake.requests.append(request)
        n = int(request.url.params.get("after", "0"))
        items = [{"uuid": "e1", "eventType": "user.lifecycle.create"}] if n == 0 else []
        nxt = request.url.copy_set_param("after", str(n + 1))
        return httpx.Response(200, json=items, headers={"Link": f'<{request.url}>; rel="self", <{nxt}>; rel="next"'})

    since, until = datetime(2024, 1, 1, tzinfo=timezone.utc), datetime(2024, 1, 2, tzinfo=timezone.utc)
    with make_client(endless) as client:
        pages = list(client.iter_log_pages(since, until, filter='eventType sw "application.user_membership"'))
    assert [len(p.items) for p in pages] == [1, 0]
    first = fake.requests[0].url.params
    assert first["since"] == "2024-01-01T00:00:00.000Z" and first["until"] == "2024-01-02T00:00:00.000Z"
    assert first["sortOrder"] == "ASCENDING" and first["limit"] == "1000"


def test_log_pages_repeating_old_events_stop():
    def repeating(request):
        n = int(request.url.params.get("after", "0"))
        nxt = request.url.copy_set_param("after", str(n + 1))
        return httpx.Response(200, json=[{"uuid": "e1"}, {"uuid": "e2"}], headers={"Link": f'<{nxt}>; rel="next"'})

    with make_client(repeating) as client:
        pages = list(client.iter_log_pages(datetime(2024, 1, 1), datetime(2024, 1, 2)))
    assert len(pages) == 1


def test_log_window_must_be_ordered():
    with make_client(FakeOkta()) as client, pytest.raises(ValueError):
        list(client.iter_log_pages(datetime(2024, 1, 2), datetime(2024, 1, 1)))


@pytest.mark.parametrize("link", [
    '<{self}>; rel="next"',                                  # next == self
    '<{self}>; rel="self", <{self}>; rel="next"',
    'rel="next" garbage <',                                  # malformed
])
def test_hostile_next_links_end_the_listing(link):
    def serve(request):
        return httpx.Response(200, json=[user(1)], headers={"Link": link.format(self=request.url)})

    with make_client(serve) as client:
        assert ids(client.iter_user_pages(updated_since=datetime(2024, 1, 1))) == ["00u0001"]


def test_next_links_naming_another_host_are_followed_on_the_org_only(caplog):
    """A server that calls itself `localhost` while configured as 127.0.0.1, a proxy, or a
    hostile link: the path is followed on the configured org, credentials go nowhere else, and
    the mismatch is logged once (not once a page)."""
    seen = []

    def serve(request):
        seen.append(request)
        n = int(request.url.params.get("after", "0"))
        link = (f'<https://u:p@evil.example:8443/api/v1/users?after={n + 1}&limit=1>; rel="next"'
                if n < 3 else None)
        return httpx.Response(200, json=[user(n)], headers={"Link": link} if link else {})

    with caplog.at_level("WARNING"), make_client(serve) as client:
        got = ids(client.iter_user_pages(updated_since=datetime(2024, 1, 1)))
    assert got == ["00u0000", "00u0001", "00u0002", "00u0003"]
    assert {(r.url.scheme, r.url.host, r.url.port) for r in seen} == {(httpx.URL(ORG).scheme, httpx.URL(ORG).host,
                                                                      httpx.URL(ORG).port)}
    assert all(r.headers["Authorization"] == f"SSWS {TOKEN}" for r in seen)  # never the link's user info
    assert [r.url.params.get("after") for r in seen[1:]] == ["1", "2", "3"]
    warnings = [r for r in caplog.records if "another host" in r.getMessage()]
    assert len(warnings) == 1 and "evil.example" in warnings[0].getMessage() and "u:p@" not in caplog.text


def test_short_and_empty_user_pages_are_followed_but_not_forever(monkeypatch):
    monkeypatch.setattr("okta_flex_sync.clients.okta.MAX_EMPTY_PAGES", 5)

    def serve(request):
        n = int(request.url.params.get("after", "0"))
        items = [user(n)] if n in (0, 3) else []  # Okta returns short pages for slow queries
        nxt = request.url.copy_set_param("after", n + 1)
        return httpx.Response(200, json=items, headers={"Link": f'<{nxt}>; rel="next"'})

    with make_client(serve) as client, pytest.raises(PaginationError):
        got = []
        for page in client.iter_user_pages(updated_since=datetime(2024, 1, 1)):
            got += [u["id"] for u in page.items]
    assert got == ["00u0000", "00u0003"]


def test_non_object_items_are_dropped():
    def serve(request):
        return httpx.Response(200, json=[user(1), "junk", None, 3])

    with make_client(serve) as client:
        assert ids(client.iter_user_pages(updated_since=datetime(2024, 1, 1))) == ["00u0001"]


# --- auth -----------------------------------------------------------------------------------

def rsa_pem() -> tuple[str, object]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return pem, key.public_key()


@pytest.fixture(scope="module")
def rsa_key():
    return rsa_pem()


class FakeOAuthOkta(FakeOkta):
    """Adds the org authorization server's token endpoint; tokens are numbered."""

    def __init__(self, public_key, *, expires_in=3600, **kwargs):
        super().__init__(**kwargs)
        self.public_key = public_key
        self.expires_in = expires_in
        self.issued: list[str] = []
        self.token_forms: list[dict] = []
        self.revoked: set[str] = set()

    def __call__(self, request):
        if request.url.path == "/oauth2/v1/token":
            self.requests.append(request)
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            self.token_forms.append(form)
            token = f"access-{len(self.issued) + 1}"
            self.issued.append(token)
            return httpx.Response(200, json={"token_type": "Bearer", "expires_in": self.expires_in,
                                             "access_token": token, "scope": form.get("scope")})
        self.auth = f"Bearer {self.issued[-1]}" if self.issued and self.issued[-1] not in self.revoked else "none"
        return super().__call__(request)


def oauth_client(fake, ft, pem, **kwargs):
    auth = PrivateKeyJWTAuth(ORG, "0oaCLIENT", pem, key_id="kid-1", clock=ft.clock, **kwargs)
    return make_client(fake, ft, auth=auth)


def test_private_key_jwt_assertion_and_token_request(rsa_key):
    pem, public = rsa_key
    ft = FakeTime()
    fake = FakeOAuthOkta(public, users=[user(1)])
    with oauth_client(fake, ft, pem) as client:
        assert ids(client.iter_user_pages(updated_since=datetime(2024, 1, 1))) == []
        client.get_user("00u0001")
    assert len(fake.token_forms) == 1  # cached across calls
    form = fake.token_forms[0]
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "okta.users.read okta.apps.read okta.logs.read"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    claims = jwt.decode(form["client_assertion"], public, algorithms=["RS256"],
                        audience=f"{ORG}/oauth2/v1/token", options={"verify_exp": False})
    assert claims["iss"] == claims["sub"] == "0oaCLIENT"
    assert 0 < claims["exp"] - claims["iat"] <= 3600 and claims["iat"] == int(NOW)
    assert claims["jti"]
    assert jwt.get_unverified_header(form["client_assertion"])["kid"] == "kid-1"
    assert all(r.headers["authorization"] == "Bearer access-1" for r in fake.requests if "/api/" in r.url.path)


def test_private_key_jwt_refreshes_before_expiry(rsa_key):
    pem, public = rsa_key
    ft = FakeTime()
    fake = FakeOAuthOkta(public, users=[user(1)], expires_in=3600)
    with oauth_client(fake, ft, pem) as client:
        client.get_user("00u0001")
        ft.now += 3600 - 30  # inside the refresh margin
        client.get_user("00u0001")
    assert fake.issued == ["access-1", "access-2"]
    first, second = (jwt.decode(f["client_assertion"], public, algorithms=["RS256"], options={"verify_aud": False,
                                "verify_exp": False}) for f in fake.token_forms)
    assert first["jti"] != second["jti"]


def test_private_key_jwt_refreshes_once_on_401(rsa_key):
    pem, public = rsa_key
    ft = FakeTime()
    fake = FakeOAuthOkta(public, users=[user(1)])
    with oauth_client(fake, ft, pem) as client:
        client.get_user("00u0001")
        fake.revoked.add("access-1")
        assert client.get_user("00u0001")["id"] == "00u0001"
        assert fake.issued == ["access-1", "access-2"]
        fake.revoked.add("access-2")
        fake.revoked.add("access-3")
        with pytest.raises(AuthError) as info:
            client.get_user("00u0001")
    assert len(fake.issued) == 3  # one refresh per call, then fail fast
    assert "access-" not in str(info.value)


def test_token_endpoint_rejection_is_an_auth_error(rsa_key):
    pem, _ = rsa_key

    def reject(request):
        body = {"error": "invalid_client", "error_description": "The client_assertion signature is invalid."}
        return httpx.Response(401, json=body, headers={"X-Okta-Request-Id": "req-tok"})

    ft = FakeTime()
    with oauth_client(reject, ft, pem) as client, pytest.raises(AuthError) as info:
        client.get_user("00u0001")
    message = str(info.value)
    assert "/oauth2/v1/token" in message and "invalid_client" in message and "req-tok" in message
    assert "eyJ" not in message


def test_token_endpoint_outage_is_retried(rsa_key):
    pem, public = rsa_key
    ft = FakeTime()
    fake = FakeOAuthOkta(public, users=[user(1)])
    calls = {"n": 0}

    def flaky(request):
        if request.url.path == "/oauth2/v1/token" and calls["n"] == 0:
            calls["n"] += 1
            return httpx.Response(503)
        return fake(request)

    with oauth_client(flaky, ft, pem) as client:
        assert client.get_user("00u0001")["id"] == "00u0001"
    assert client.stats.retries == 1


def test_ec_keys_sign_with_es256():
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    auth = PrivateKeyJWTAuth(ORG, "0oaCLIENT", pem)
    assert jwt.get_unverified_header(auth.client_assertion())["alg"] == "ES256"


@pytest.mark.parametrize("pem", ["", "not a key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"])
def test_bad_private_key_is_a_config_error_without_the_key(pem):
    with pytest.raises(ConfigError) as info:
        PrivateKeyJWTAuth(ORG, "0oaCLIENT", pem)
    assert "AAAA" not in str(info.value)


def test_reprs_hide_secrets(rsa_key):
    pem, _ = rsa_key
    assert TOKEN not in repr(SSWSAuth(TOKEN))
    assert "PRIVATE" not in repr(PrivateKeyJWTAuth(ORG, "0oaCLIENT", pem))
    assert TOKEN not in repr(OktaClient(ORG, SSWSAuth(TOKEN)))


@pytest.mark.parametrize("env, auth_type", [
    ({"OKTA_API_TOKEN": TOKEN}, SSWSAuth),
    ({"OKTA_CLIENT_ID": "0oaCLIENT", "OKTA_PRIVATE_KEY": "<pem>"}, PrivateKeyJWTAuth),
    ({"OKTA_API_TOKEN": TOKEN, "OKTA_CLIENT_ID": "0oaCLIENT"}, SSWSAuth),  # no key: token it is
    ({}, None),
])
def test_from_settings_picks_auth(env, auth_type, rsa_key, monkeypatch):
    for name in ("OKTA_API_TOKEN", "OKTA_CLIENT_ID", "OKTA_PRIVATE_KEY", "OKTA_PRIVATE_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    values = {k.lower(): (rsa_key[0] if v == "<pem>" else v) for k, v in env.items()}
    settings = Settings(_env_file=None, okta_org_url=ORG, http_max_retries=2, **values)
    if auth_type is None:
        with pytest.raises(ConfigError):
            OktaClient.from_settings(settings)
        return
    with OktaClient.from_settings(settings) as client:
        assert isinstance(client._http.auth, auth_type)
        assert client._session.max_retries == 2


# --- end to end against the simulator -------------------------------------------------------

def pull_okta(client: OktaClient, app_id: str, *, parallel: bool = False) -> tuple[dict, dict]:
    """Users (full pull) and the Flex app's assignments, keyed by id; optionally in two threads."""
    def users():
        return {u["id"]: u for page in client.iter_user_pages(limit=30) for u in page.items}

    def assignments():
        return {a["id"]: a for page in client.iter_app_user_pages(app_id, limit=10, expand_user=True)
                for a in page.items}

    if not parallel:
        return users(), assignments()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        u, a = pool.submit(users), pool.submit(assignments)
        return u.result(), a.result()


@pytest.mark.slow
def test_live_pull_survives_faults_and_tight_limits(fresh_simulator, monkeypatch):
    """Same users and assignments, byte for byte, with 5 % faults, tiny buckets and a concurrency cap."""
    monkeypatch.setattr("simulator.limits.WINDOW_SECONDS", 1)  # keep rate-limit windows short
    sim = fresh_simulator(users=120, seed=7)  # seed 7 plants drop, 429, slow and drop faults here
    with OktaClient(sim.url, SSWSAuth(sim.okta_api_token)) as client:
        clean_users, clean_assignments = pull_okta(client, sim.flex_app_id)
    assert len(clean_users) == 120 and clean_assignments

    sim.set_faults(fault_rate=0.05, rate_limits={"users": 3, "apps": 2}, concurrency_limit=1)
    with OktaClient(sim.url, SSWSAuth(sim.okta_api_token), timeout=1.0, max_retries=8) as client:
        users, assignments = pull_okta(client, sim.flex_app_id, parallel=True)
    assert users == clean_users and assignments == clean_assignments
    assert sim.stats()["faults"] >= 1 and client.stats.retries >= 1
    assert client.stats.waited_seconds > 1  # the tiny buckets were paced, not hammered


@pytest.mark.slow
def test_live_oauth_private_key_jwt(fresh_simulator):
    sim = fresh_simulator(users=20, seed=6)
    auth = PrivateKeyJWTAuth(sim.url, sim.oauth_client_id, sim.oauth_private_key_pem, key_id=sim.oauth_key_id)
    with OktaClient(sim.url, auth) as client:
        users, _ = pull_okta(client, sim.flex_app_id)
    assert len(users) == 20
    assert sim.stats()["requests"].get("token") == 1


# --- cassettes: recorded once against the simulator, replayed offline ----------------------
# Record with `pytest tests/integration/test_okta_client.py --record-mode=rewrite -k cassette`; replay is
# the default (record mode "none").  Credentials never reach a cassette: the Authorization
# header and client_assertion are dropped, known secrets and access tokens are masked, and the
# simulator's random port is replaced by SIM_ORIGIN so next links stay same-origin on replay.

class Target:
    """Where a cassette test points: a live simulator while recording, the cassette on replay."""

    def __init__(self, sim=None):
        self.sim = sim
        self.facts = json.loads(SIM_FILE.read_text()) if SIM_FILE.exists() else {}
        if sim is not None:
            remember(sim)
            self.save(seed=CASSETTE_SEED, flex_app_id=sim.flex_app_id, oauth_client_id=sim.oauth_client_id,
                      oauth_key_id=sim.oauth_key_id)
        self.url = sim.url if sim else SIM_ORIGIN
        self.sleep = time.sleep if sim else (lambda seconds: None)

    def save(self, **facts) -> None:
        self.facts.update(facts)
        SIM_FILE.parent.mkdir(parents=True, exist_ok=True)
        SIM_FILE.write_text(json.dumps(self.facts, indent=2, sort_keys=True) + "\n")

    def log_window(self) -> tuple[datetime, datetime]:
        """Three recent days, fixed when recording (Okta refuses `since` > 180 days back)."""
        if self.sim is not None:
            midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
            self.save(log_since=(midnight - timedelta(days=3)).isoformat(), log_until=midnight.isoformat())
        return datetime.fromisoformat(self.facts["log_since"]), datetime.fromisoformat(self.facts["log_until"])

    def client(self, auth=None, **kwargs) -> OktaClient:
        token = self.sim.okta_api_token if self.sim else TOKEN
        return OktaClient(self.url, auth or SSWSAuth(token), sleep=self.sleep, **kwargs)

    def set_faults(self, **kwargs) -> None:
        if self.sim is not None:
            self.sim.set_faults(**kwargs)


@pytest.fixture
def target(request, vcr, record_mode, fresh_simulator, monkeypatch):
    recording = record_mode != "none" and (record_mode in ("all", "new_episodes") or len(vcr) == 0)
    if not recording:
        assert len(vcr) > 0, "cassette missing: record it with --record-mode=rewrite"
        return Target()
    monkeypatch.setattr("simulator.limits.WINDOW_SECONDS", 1)
    return Target(fresh_simulator(users=60, seed=CASSETTE_SEED))


@pytest.mark.vcr
def test_cassette_pull_with_faults_matches_clean_pull(target):
    with target.client() as client:
        clean_users, clean_assignments = pull_okta(client, target.facts["flex_app_id"])
    assert len(clean_users) == 60 and clean_assignments
    target.set_faults(fault_rate=0.05, rate_limits={"users": 2, "apps": 1})
    with target.client(timeout=1.0, max_retries=8) as client:
        users, assignments = pull_okta(client, target.facts["flex_app_id"])
    assert users == clean_users and assignments == clean_assignments
    assert client.stats.retries + client.stats.throttled_429 >= 1


@pytest.mark.vcr
def test_cassette_incremental_pull_logs_and_get_user(target):
    with target.client() as client:
        changed = ids(client.iter_user_pages(updated_since=datetime(2000, 1, 1, tzinfo=timezone.utc)))
        since, until = target.log_window()
        events = [e for page in client.iter_log_pages(since, until, limit=50) for e in page.items]
        one = client.get_user(changed[0])
    assert len(set(changed)) == 60  # every user changed after 2000, DEPROVISIONED included
    assert one["id"] == changed[0]
    assert events and all(since.isoformat()[:10] <= e["published"][:10] <= until.isoformat()[:10] for e in events)


@pytest.mark.vcr
def test_cassette_oauth_private_key_jwt(target, rsa_key):
    pem = target.sim.oauth_private_key_pem if target.sim else rsa_key[0]
    auth = PrivateKeyJWTAuth(target.url, target.facts["oauth_client_id"], pem, key_id=target.facts["oauth_key_id"])
    with target.client(auth=auth) as client:
        users, assignments = pull_okta(client, target.facts["flex_app_id"])
    assert len(users) == 60 and assignments


def test_live_pull_through_another_name_for_the_host(simulator, caplog):
    """The simulator's Link headers name `127.0.0.1`; reached as `localhost`, the same users and
    assignments come back, every request to `localhost`."""
    other = simulator.url.replace("127.0.0.1", "localhost")
    assert other != simulator.url
    with OktaClient(simulator.url, SSWSAuth(simulator.okta_api_token)) as client:
        direct = pull_okta(client, simulator.flex_app_id)
    with caplog.at_level("WARNING"), OktaClient(other, SSWSAuth(simulator.okta_api_token)) as client:
        renamed = pull_okta(client, simulator.flex_app_id)
    assert renamed == direct and len(direct[0]) > 200
    assert len([r for r in caplog.records if "another host (127.0.0.1)" in r.getMessage()]) == 2  # users, apps


# --- reading ahead (issue 17): the users listing asks for page N+1 before handing page N on --

class GarbledOnce(FakeOkta):
    """Serves the users listing in pages of 2; the first answer for page `at` (a cursor) is a 200
    whose body is not JSON, with the given Link header (None: no Link at all)."""

    def __init__(self, users, *, at: str, link: str | None):
        super().__init__(users)
        self.at, self.link, self.garbled = at, link, 0

    def route(self, request):
        if request.url.params.get("after") == self.at and not self.garbled:
            self.garbled += 1
            headers = {"Link": self.link.format(self=request.url)} if self.link is not None else {}
            return httpx.Response(200, text='[{"id": "00u0003", "prof', headers=headers)
        return super().route(request)


def _cursors(fake) -> list[str]:
    return [r.url.params.get("after", "-") for r in fake.requests if r.url.path == "/api/v1/users"]


@pytest.mark.parametrize("link,requests", [
    # the garbled page still links onward: the page read ahead is used, one request more in all
    ('<{self}>; rel="self", </api/v1/users?limit=2&after=cur4>; rel="next"', ["-", "cur2", "cur4", "cur2", "-"]),
    # no Link on the garbled answer: the listing must not end there
    (None, ["-", "cur2", "cur2", "cur4", "-"]),
    # a Link somewhere else: what was read ahead from it is dropped, the listing goes on from the real one
    ('</api/v1/users?limit=2&after=cur0>; rel="next"', ["-", "cur2", "cur0", "cur2", "cur4", "-"]),
])
def test_a_garbled_page_read_ahead_is_asked_for_again_and_nothing_else_changes(link, requests):
    ft = FakeTime()
    fake = GarbledOnce([user(n) for n in range(1, 6)], at="cur2", link=link)
    with make_client(fake, ft) as client:
        assert ids(client.iter_user_pages(limit=2)) == ["00u0001", "00u0002", "00u0003", "00u0004", "00u0005"]
    assert fake.garbled == 1
    # The last "-" is the DEPROVISIONED listing's first page (it has none of them).  The page
    # read ahead and the page asked for again are in flight together: their order varies.
    assert sorted(_cursors(fake)) == sorted(requests)
    assert client.stats.retries == 1 and len(ft.sleeps) == 1 and 0 < ft.sleeps[0] <= 0.5


def test_the_next_page_is_asked_for_before_this_one_is_handed_on():
    import threading

    asked_for_page_2 = threading.Event()

    class Watching(FakeOkta):
        def route(self, request):
            if request.url.params.get("after") == "cur2":
                asked_for_page_2.set()
            return super().route(request)

    fake = Watching([user(n) for n in range(1, 6)])
    with make_client(fake) as client:
        pages = client.iter_user_pages(limit=2)
        first = next(pages)
        assert [u["id"] for u in first.items] == ["00u0001", "00u0002"]
        assert asked_for_page_2.wait(5), "page 2 was not requested while page 1 was being handled"
        assert [u["id"] for p in pages for u in p.items] == ["00u0003", "00u0004", "00u0005"]


def test_a_failure_of_the_page_read_ahead_is_the_listings_failure():
    class Revoked(FakeOkta):
        def route(self, request):
            if request.url.params.get("after") == "cur2":
                return httpx.Response(401, json={"errorCode": "E0000011", "errorSummary": "Invalid token provided"},
                                      headers={"X-Okta-Request-Id": "req-401"})
            return super().route(request)

    fake = Revoked([user(n) for n in range(1, 6)])
    with make_client(fake) as client:
        pages = client.iter_user_pages(limit=2)
        assert [u["id"] for u in next(pages).items] == ["00u0001", "00u0002"]
        with pytest.raises(AuthError, match="req-401"):
            next(pages)
    assert _cursors(fake) == ["-", "cur2"]
