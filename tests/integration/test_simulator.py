"""The bundled Okta + TaskRouter simulator, exercised over real HTTP with httpx."""
from __future__ import annotations

import io
import json
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import simulator.server as sim_server
from simulator import SimulatorConfig, serve, start_simulator
from simulator.ids import InvalidCursor, seal, unseal
from simulator.limits import FaultPlan
from simulator.people import VALID_ROLES, contact_identity, sso_full_name, sso_roles

USERS = 600


@pytest.fixture(scope="module")
def sim():
    """One read-only org for the module; tests that change anything start their own."""
    s = start_simulator(SimulatorConfig(users=USERS, seed=11))
    yield s
    s.stop()


def okta(s, **kw) -> httpx.Client:
    return httpx.Client(base_url=s.url, headers={"Authorization": f"SSWS {s.okta_api_token}"}, timeout=30, **kw)


def taskrouter(s) -> httpx.Client:
    return httpx.Client(base_url=f"{s.url}/v1/Workspaces/{s.workspace_sid}", auth=(s.account_sid, s.auth_token),
                        timeout=30)


def walk(client: httpx.Client, url: str, params=None) -> tuple[list[dict], int]:
    """Follow Link rel=next to the end; returns (items, pages)."""
    items, pages = [], 0
    response = client.get(url, params=params)
    while True:
        assert response.status_code == 200, response.text
        items.extend(response.json())
        pages += 1
        nxt = response.links.get("next")
        if not nxt:
            return items, pages
        response = client.get(nxt["url"])


def live_ids(s, include_deprovisioned: bool) -> list[str]:
    org = s.org
    out = []
    for i in range(org.users):
        user = org.peek_user(i)
        if user and (include_deprovisioned or user["status"] != "DEPROVISIONED"):
            out.append(user["id"])
    return out


# ---------------------------------------------------------------------------- credentials
@pytest.mark.parametrize("attr,pattern", [
    ("account_sid", r"^AC[0-9a-f]{32}$"),
    ("workspace_sid", r"^WS[0-9a-f]{32}$"),
    ("api_key_sid", r"^SK[0-9a-f]{32}$"),
    ("flex_app_id", r"^0oa[0-9A-Za-z]{17}$"),
    ("oauth_client_id", r"^0oa[0-9A-Za-z]{17}$"),
    ("url", r"^http://127\.0\.0\.1:\d+$"),
])
def test_credentials_have_real_formats(sim, attr, pattern):
    assert re.match(pattern, getattr(sim, attr))


def test_env_and_repr_do_not_leak(sim):
    env = sim.env()
    assert set(env) == {"OKTA_ORG_URL", "OKTA_API_TOKEN", "OKTA_FLEX_APP_ID", "TWILIO_ACCOUNT_SID",
                        "TWILIO_AUTH_TOKEN", "TWILIO_WORKSPACE_SID", "TASKROUTER_BASE_URL"}
    assert env["TASKROUTER_BASE_URL"] == env["OKTA_ORG_URL"] == sim.url
    for secret in (sim.okta_api_token, sim.auth_token, sim.api_key_secret):
        assert secret not in repr(sim) and "FAKE" in secret.upper()


# ---------------------------------------------------------------------------- users
def test_plain_listing_walks_every_non_deprovisioned_user_once(sim):
    with okta(sim) as c:
        items, pages = walk(c, "/api/v1/users", {"limit": 97})
    ids = [u["id"] for u in items]
    assert ids == live_ids(sim, include_deprovisioned=False)
    assert len(set(ids)) == len(ids) and pages == -(-len(ids) // 97)
    assert "DEPROVISIONED" not in {u["status"] for u in items}


def test_filtered_listing_includes_deprovisioned(sim):
    with okta(sim) as c:
        items, _ = walk(c, "/api/v1/users", {"search": 'lastUpdated gt "1970-01-01T00:00:00.000Z"'})
    assert [u["id"] for u in items] == live_ids(sim, include_deprovisioned=True)
    assert "DEPROVISIONED" in {u["status"] for u in items}


def test_limit_is_clamped_and_links_are_absolute_and_preserve_the_query(sim):
    with okta(sim) as c:
        r = c.get("/api/v1/users", params={"limit": 500, "filter": 'status eq "ACTIVE"'})
    assert r.status_code == 200 and len(r.json()) == 200
    assert r.links["self"]["url"].startswith(sim.url + "/api/v1/users?")
    nxt = httpx.URL(r.links["next"]["url"])
    assert str(nxt).startswith(sim.url) and nxt.params["filter"] == 'status eq "ACTIVE"'
    assert nxt.params["limit"] == "500"
    after = nxt.params["after"]
    assert not after.isdigit() and not after.startswith("00u")  # opaque cursor


def test_last_page_has_no_next_link(sim):
    with okta(sim) as c:
        r = c.get("/api/v1/users", params={"limit": 200, "search": f'id eq "{sim.org.user_id(5)}"'})
    assert [u["id"] for u in r.json()] == [sim.org.user_id(5)] and "next" not in r.links


@pytest.mark.parametrize("param,expression,expected", [
    ("filter", 'status eq "ACTIVE"', lambda u: u["status"] == "ACTIVE"),
    ("filter", 'status eq "active"', lambda u: False),  # filter values are case-sensitive
    ("search", 'status eq "active"', lambda u: u["status"] == "ACTIVE"),  # search values are not
    ("filter", 'status eq "SUSPENDED" or status eq "STAGED"', lambda u: u["status"] in ("SUSPENDED", "STAGED")),
    ("filter", 'lastUpdated lt "2000-01-01T00:00:00Z"', lambda u: False),
    ("search", 'profile.lastName sw "M"', lambda u: str(u["profile"].get("lastName", "")).casefold().startswith("m")),
    ("search", 'profile.department eq "Billing" and status eq "ACTIVE"',
     lambda u: u["profile"]["department"] == "Billing" and u["status"] == "ACTIVE"),
])
def test_filter_and_search_match_ground_truth(sim, param, expression, expected):
    with okta(sim) as c:
        items, _ = walk(c, "/api/v1/users", {param: expression})
    truth = [sim.org.peek_user(i) for i in range(sim.org.users)]
    assert [u["id"] for u in items] == [u["id"] for u in truth if expected(u)]


@pytest.mark.parametrize("key", ["id", "login"])
def test_filter_by_id_or_login_and_single_fetch(sim, key):
    user = sim.org.peek_user(17)
    value = user["id"] if key == "id" else user["profile"]["login"]
    expr = f'id eq "{value}"' if key == "id" else f'profile.login eq "{value}"'
    with okta(sim) as c:
        assert [u["id"] for u in c.get("/api/v1/users", params={"filter": expr}).json()] == [user["id"]]
        fetched = c.get(f"/api/v1/users/{value}")
    assert fetched.status_code == 200 and fetched.json() == user


@pytest.mark.parametrize("param,expression,code", [
    ("filter", 'status ne "ACTIVE"', "E0000031"),
    ("filter", 'profile.department eq "QA"', "E0000031"),
    ("filter", 'status sw "ACT"', "E0000031"),
    ("search", 'status ne "ACTIVE"', "E0000031"),
    ("filter", 'status eq "ACTIVE', "E0000053"),
    ("filter", 'status eq', "E0000053"),
    ("filter", '(status eq "ACTIVE"', "E0000053"),
    ("filter", 'lastUpdated gt "yesterday"', "E0000053"),
])
def test_bad_expressions_get_okta_400s(sim, param, expression, code):
    with okta(sim) as c:
        r = c.get("/api/v1/users", params={param: expression})
    body = r.json()
    assert r.status_code == 400 and body["errorCode"] == code
    assert set(body) == {"errorCode", "errorSummary", "errorLink", "errorId", "errorCauses"}


@pytest.mark.parametrize("path", ["/api/v1/users/00uDOESNOTEXIST00000", "/api/v1/users/nobody@example.com",
                                  "/api/v1/apps/0oaNOTTHEFLEXAPP0000/users"])
def test_unknown_resources_are_404_e0000007(sim, path):
    with okta(sim) as c:
        r = c.get(path)
    assert r.status_code == 404 and r.json()["errorCode"] == "E0000007"
    assert r.headers["X-Okta-Request-Id"] and r.headers["X-Rate-Limit-Limit"]


@pytest.mark.parametrize("header", [None, "SSWS wrong-token", "Bearer not-a-token", "Basic abc", "SSWS"])
def test_bad_okta_credentials_are_401(sim, header):
    headers = {"Authorization": header} if header else {}
    r = httpx.get(f"{sim.url}/api/v1/users", headers=headers)
    assert r.status_code == 401 and r.json()["errorCode"] == "E0000011"
    assert r.json()["errorSummary"] == "Invalid token provided"
    assert {"X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset"} <= set(r.headers.keys()) | {
        k.title() for k in r.headers.keys()}


# ---------------------------------------------------------------------------- app users
def test_app_users_walk_matches_assignments_and_limits(sim):
    with okta(sim) as c:
        first = c.get(f"/api/v1/apps/{sim.flex_app_id}/users")
        big = c.get(f"/api/v1/apps/{sim.flex_app_id}/users", params={"limit": 5000})
        items, _ = walk(c, f"/api/v1/apps/{sim.flex_app_id}/users", {"limit": 13})
    assert len(first.json()) == min(50, len(sim.org.assigned_user_ids()))
    assert len(big.json()) == len(sim.org.assigned_user_ids())  # <= 500 here, so one page
    assert [a["id"] for a in items] == sim.org.assigned_user_ids()
    a = items[0]
    assert a["credentials"]["userName"] and a["scope"] in ("USER", "GROUP") and "_links" in a
    scopes = {x["scope"] for x in items}
    assert scopes == {"USER", "GROUP"}
    assert any(x["credentials"]["userName"] != (sim.org.peek_user(sim.org.index_of(x["id"]))["profile"]["login"])
               for x in items)  # some custom app usernames


def test_expand_user_embeds_the_full_user(sim):
    with okta(sim) as c:
        r = c.get(f"/api/v1/apps/{sim.flex_app_id}/users", params={"limit": 3, "expand": "user"})
    for a in r.json():
        assert a["_embedded"]["user"] == sim.org.user(a["id"])


# ---------------------------------------------------------------------------- rate limits
def test_rate_limit_headers_and_429_when_exceeded(fresh_simulator):
    s = fresh_simulator(users=50, seed=3, rate_limits={"users": 3})
    with okta(s) as c:
        responses = [c.get("/api/v1/users", params={"limit": 1}) for _ in range(4)]
        other = c.get(f"/api/v1/users/{s.org.user_id(0)}")  # a different bucket is unaffected
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["X-Rate-Limit-Remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert all(r.headers["X-Rate-Limit-Limit"] == "3" for r in responses)
    reset = int(responses[-1].headers["X-Rate-Limit-Reset"])
    assert time.time() < reset <= time.time() + 61
    assert responses[-1].json()["errorCode"] == "E0000047"
    assert responses[-1].json()["errorSummary"] == "API call exceeded rate limit due to too many requests."
    assert other.status_code == 200
    assert s.stats()["429"] == 1


def test_taskrouter_429_uses_twilio_shape(fresh_simulator):
    s = fresh_simulator(users=50, seed=3, rate_limits={"taskrouter": 1})
    with taskrouter(s) as c:
        ok, limited = c.get("/Workers"), c.get("/Workers")
    assert ok.status_code == 200 and ok.headers["X-Rate-Limit-Config"]
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert limited.json() == {"code": 20429, "message": "Too Many Requests",
                              "more_info": "https://www.twilio.com/docs/errors/20429", "status": 429}


def test_concurrency_limit_429_has_zero_limit_headers(fresh_simulator):
    s = fresh_simulator(users=50, seed=3, concurrency_limit=2, latency_ms=300)
    with ThreadPoolExecutor(6) as pool, okta(s) as c:
        responses = list(pool.map(lambda _: c.get("/api/v1/users", params={"limit": 1}), range(6)))
    refused = [r for r in responses if r.status_code == 429]
    assert refused and len(refused) <= 4 and any(r.status_code == 200 for r in responses)
    assert all(r.headers["X-Rate-Limit-Limit"] == "0" and r.headers["X-Rate-Limit-Remaining"] == "0"
               for r in refused)


# ---------------------------------------------------------------------------- system log
def test_bounded_log_query_ends_without_next_link(sim):
    since = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 89 * 86400))
    until = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 60))
    with okta(sim) as c:
        events, pages = walk(c, "/api/v1/logs", {"since": since, "until": until, "limit": 25})
    assert pages > 1 and len({e["uuid"] for e in events}) == len(events)
    published = [e["published"] for e in events]
    assert published == sorted(published)
    membership = [e for e in events if e["eventType"] == "application.user_membership.add"]
    assert membership and all({"User", "AppInstance"} <= {t["type"] for t in e["target"]} for e in membership)
    updates = [e for e in events if e["eventType"] == "user.account.update_profile"]
    assert updates and all(re.fullmatch(r"[A-Za-z]+(,[A-Za-z]+)*", e["debugContext"]["debugData"]["changedAttributes"])
                           for e in updates)


def test_polling_always_has_a_next_link_and_sees_new_events(fresh_simulator):
    s = fresh_simulator(users=200, seed=5)
    with okta(s) as c:
        url = "/api/v1/logs"
        params = {"limit": 1000, "filter": 'eventType eq "user.lifecycle.suspend"'}
        first = c.get(url, params=params)
        assert first.status_code == 200 and "next" in first.links
        empty = c.get(first.links["next"]["url"])
        assert empty.json() == [] and "next" in empty.links  # even an empty page links on
        victim = s.org.assigned_user_ids()[0]
        s.org.set_status(victim, "SUSPENDED")
        s.org.set_profile(victim, title="Moved")  # a different event type: filtered out
        new = c.get(empty.links["next"]["url"])
    assert [e["eventType"] for e in new.json()] == ["user.lifecycle.suspend"]
    assert [t["id"] for t in new.json()[0]["target"] if t["type"] == "User"] == [victim]
    assert "next" in new.links


def test_bounded_descending_is_the_ascending_walk_reversed(sim):
    bounds = {"since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 30 * 86400)),
              "until": sim.org.created_iso, "limit": 40}
    with okta(sim) as c:
        up, _ = walk(c, "/api/v1/logs", bounds)
        down, _ = walk(c, "/api/v1/logs", {**bounds, "sortOrder": "DESCENDING"})
    assert up and [e["uuid"] for e in down] == [e["uuid"] for e in reversed(up)]
    assert all(bounds["since"] <= e["published"] < sim.org.created_iso for e in up)


@pytest.mark.parametrize("params,code", [
    ({"since": "2001-01-01T00:00:00Z"}, "E0000053"),
    ({"since": "not-a-date"}, "E0000053"),
    ({"filter": 'published gt "2024-01-01T00:00:00Z"'}, "E0000031"),
    ({"after": "forged-cursor"}, "E0000053"),
])
def test_log_parameter_errors(sim, params, code):
    with okta(sim) as c:
        r = c.get("/api/v1/logs", params=params)
    assert r.status_code == 400 and r.json()["errorCode"] == code


def test_log_filters_by_event_type_prefix_and_target(sim):
    target = sim.org.assigned_user_ids()[3]
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 89 * 86400))
    with okta(sim) as c:
        by_prefix, _ = walk(c, "/api/v1/logs", {"since": since, "until": sim.org.created_iso,
                                                 "filter": 'eventType sw "application.user_membership"'})
        by_target, _ = walk(c, "/api/v1/logs", {"since": since, "until": sim.org.created_iso,
                                                 "filter": f'target.id eq "{target}"'})
    assert by_prefix and all(e["eventType"].startswith("application.user_membership") for e in by_prefix)
    assert by_target and all(target in {t["id"] for t in e["target"]} for e in by_target)


# ---------------------------------------------------------------------------- OAuth
def _assertion(s, key_pem=None, **overrides) -> str:
    now = int(time.time())
    claims = {"iss": s.oauth_client_id, "sub": s.oauth_client_id, "aud": f"{s.url}/oauth2/v1/token",
              "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    claims.update(overrides)
    return jwt.encode(claims, key_pem or s.oauth_private_key_pem, algorithm="RS256",
                      headers={"kid": s.oauth_key_id})


def _token(s, assertion: str, scope: str = "okta.users.read") -> httpx.Response:
    return httpx.post(f"{s.url}/oauth2/v1/token", data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})


def test_oauth_private_key_jwt_flow_and_scopes(sim):
    r = _token(sim, _assertion(sim), "okta.users.read okta.logs.read")
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"] == "okta.users.read okta.logs.read"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert httpx.get(f"{sim.url}/api/v1/users?limit=1", headers=headers).status_code == 200
    forbidden = httpx.get(f"{sim.url}/api/v1/apps/{sim.flex_app_id}/users", headers=headers)
    assert forbidden.status_code == 403 and forbidden.json()["errorCode"] == "E0000006"


def _other_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.mark.parametrize("case,status,error", [
    ("wrong_key", 401, "invalid_client"),
    ("wrong_audience", 401, "invalid_client"),
    ("wrong_issuer", 401, "invalid_client"),
    ("expires_too_late", 401, "invalid_client"),
    ("expired", 401, "invalid_client"),
    ("bad_scope", 400, "invalid_scope"),
    ("replayed", 401, "invalid_client"),
])
def test_oauth_rejections(sim, case, status, error):
    now = int(time.time())
    overrides = {"wrong_audience": {"aud": "https://example.okta.com/oauth2/v1/token"},
                 "wrong_issuer": {"iss": "0oaSomeoneElse000000"},
                 "expires_too_late": {"exp": now + 7200},
                 "expired": {"exp": now - 120}}.get(case, {})
    assertion = _assertion(sim, _other_key() if case == "wrong_key" else None, **overrides)
    if case == "replayed":
        assert _token(sim, assertion).status_code == 200
    r = _token(sim, assertion, "okta.users.manage" if case == "bad_scope" else "okta.users.read")
    assert r.status_code == status and r.json()["error"] == error


# ---------------------------------------------------------------------------- TaskRouter
def test_worker_paging_walks_all_once_and_lists_null_attributes(sim):
    seen = []
    with taskrouter(sim) as c:
        page = c.get("/Workers", params={"PageSize": 7}).json()
        while True:
            seen.extend(page["workers"])
            assert page["meta"]["key"] == "workers" and page["meta"]["page_size"] == 7
            if not page["meta"]["next_page_url"]:
                break
            assert page["meta"]["next_page_url"].startswith(sim.url)
            page = c.get(page["meta"]["next_page_url"]).json()
        nulls = [w["sid"] for w in seen if w["attributes"] is None]
        fetched = c.get(f"/Workers/{nulls[0]}")
    assert [w["sid"] for w in seen] == [w["sid"] for w in sim.org.workers()]
    assert nulls == sim.org.planted["null_attributes"]
    assert fetched.status_code == 200 and isinstance(fetched.json()["attributes"], str)
    w = seen[0]
    assert re.match(r"^WK[0-9a-f]{32}$", w["sid"]) and w["account_sid"] == sim.account_sid
    assert set(w) >= {"sid", "friendly_name", "account_sid", "workspace_sid", "activity_sid", "activity_name",
                      "attributes", "available", "date_created", "date_updated", "date_status_changed", "url",
                      "links"}


def test_friendly_name_filter_is_case_insensitive(sim):
    worker = sim.org.workers()[4]
    with taskrouter(sim) as c:
        r = c.get("/Workers", params={"FriendlyName": worker["friendly_name"].upper()})
    assert [w["sid"] for w in r.json()["workers"]] == [worker["sid"]]


def test_update_honours_if_match_and_replaces_attributes(fresh_simulator):
    s = fresh_simulator(users=100, seed=9)
    sid = s.org.workers()[0]["sid"]
    with taskrouter(s) as c:
        fetched = c.get(f"/Workers/{sid}")
        etag = fetched.headers["ETag"]
        ok = c.post(f"/Workers/{sid}", data={"Attributes": '{"roles":["agent"]}'}, headers={"If-Match": etag})
        stale = c.post(f"/Workers/{sid}", data={"Attributes": '{"roles":["admin"]}'}, headers={"If-Match": etag})
        invalid = c.post(f"/Workers/{sid}", data={"Attributes": "{not json"})
        after = c.get(f"/Workers/{sid}")
    assert ok.status_code == 200 and ok.headers["ETag"] != etag
    assert ok.json()["attributes"] == '{"roles":["agent"]}'
    assert stale.status_code == 412 and invalid.status_code == 400
    assert after.json()["attributes"] == '{"roles":["agent"]}' and after.headers["ETag"] == ok.headers["ETag"]
    assert after.json()["date_updated"] >= fetched.json()["date_updated"]
    assert s.stats()["worker_updates"] == 1


def test_create_and_delete_worker(fresh_simulator):
    s = fresh_simulator(users=100, seed=9)
    with taskrouter(s) as c:
        created = c.post("/Workers", data={"FriendlyName": "new.agent@example.com"})
        duplicate = c.post("/Workers", data={"FriendlyName": "NEW.agent@example.com"})
        sid = created.json()["sid"]
        deleted = c.delete(f"/Workers/{sid}")
        gone = c.get(f"/Workers/{sid}")
    assert created.status_code == 201 and created.json()["attributes"] == "{}"
    assert duplicate.status_code == 400
    assert deleted.status_code == 204 and deleted.content == b""
    assert gone.status_code == 404 and gone.json()["code"] == 20404


@pytest.mark.parametrize("auth,path,status,code", [
    (("ACwrong", "nope"), "/Workers", 401, 20003),
    (None, "/Workers", 401, 20003),
    ("api_key", "/Workers", 200, None),
    ("good", "/v1/Workspaces/WS00000000000000000000000000000000/Workers", 404, 20404),
])
def test_taskrouter_auth_and_unknown_workspace(sim, auth, path, status, code):
    creds = {"good": (sim.account_sid, sim.auth_token), "api_key": (sim.api_key_sid, sim.api_key_secret)}
    auth = creds.get(auth, auth)
    url = path if path.startswith("/v1/") else f"/v1/Workspaces/{sim.workspace_sid}{path}"
    r = httpx.get(sim.url + url, auth=auth)
    assert r.status_code == status
    if code:
        assert r.json()["code"] == code and r.json()["status"] == status


# ---------------------------------------------------------------------------- faults
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), rate=st.floats(0, 1))
def test_fault_plan_is_a_pure_function_of_seed_and_counter(seed, rate):
    a, b = FaultPlan(seed, rate), FaultPlan(seed, rate)
    assert [a.fault_for(n) for n in range(200)] == [b.fault_for(n) for n in range(200)]
    hits = sum(a.fault_for(n) is not None for n in range(200))
    assert (hits == 0) if rate == 0 else (hits == 200 if rate == 1 else True)


def _outcomes(s, n: int) -> list[object]:
    out = []
    with okta(s) as c:
        for _ in range(n):
            try:
                out.append(c.get("/api/v1/users", params={"limit": 1}).status_code)
            except httpx.TransportError:
                out.append("dropped")
    return out


def test_faults_are_deterministic_over_http(fresh_simulator, monkeypatch):
    monkeypatch.setattr(sim_server, "SLOW_FAULT_SECONDS", 0.01)
    runs = [_outcomes(fresh_simulator(users=30, seed=21, fault_rate=0.5), 40) for _ in range(2)]
    assert runs[0] == runs[1]
    assert {"dropped", 500, 503, 429} <= set(runs[0]) and 200 in runs[0]


def test_faulted_writes_are_never_applied(fresh_simulator, monkeypatch):
    monkeypatch.setattr(sim_server, "SLOW_FAULT_SECONDS", 0.01)
    s = fresh_simulator(users=100, seed=13, fault_rate=0.5)
    sid = s.org.workers()[0]["sid"]
    expected = s.org.worker(sid)["attributes"]
    with taskrouter(s) as c:
        for k in range(30):
            body = json.dumps({"n": k})
            try:
                r = c.post(f"/Workers/{sid}", data={"Attributes": body})
            except httpx.TransportError:
                continue
            if r.status_code == 200:
                expected = body
            assert s.org.worker(sid)["attributes"] == expected
    assert s.stats()["faults"] > 0 and s.stats()["worker_updates"] >= 1


# ---------------------------------------------------------------------------- the org
def test_same_seed_same_org_and_different_seed_different_org():
    a, b, c = (start_simulator(SimulatorConfig(users=200, seed=s)) for s in (4, 4, 5))
    try:
        def shape(s):
            users = [s.org.peek_user(i) for i in range(200)]
            return ([(u["id"], u["status"], u["profile"]) for u in users],
                    [(w["sid"], w["friendly_name"], w["attributes"]) for w in s.org.workers()],
                    s.org.planted, s.okta_api_token, s.workspace_sid)
        assert shape(a) == shape(b)
        assert shape(a) != shape(c)
    finally:
        for s in (a, b, c):
            s.stop()


def test_a_million_users_are_lazy_and_incremental_filters_are_fast(fresh_simulator):
    s = fresh_simulator(users=1_000_000, seed=2, assigned=60)
    assert s.org.updated_since_candidates(s.org.quiet_before_iso) is not None
    started = time.perf_counter()
    last = s.org.user(s.org.user_id(999_999))
    assert time.perf_counter() - started < 0.05 and last["id"] == s.org.user_id(999_999)
    assert s.org.mutated_indices() == []
    changed = s.org.user_id(777_777)
    s.org.set_profile(changed, firstName="Renamed")
    with okta(s) as c:
        started = time.perf_counter()
        r = c.get("/api/v1/users", params={"filter": f'lastUpdated gt "{s.org.created_iso}"'})
        elapsed = time.perf_counter() - started
        overlap = c.get("/api/v1/users", params={"search": f'lastUpdated gt "{s.org.quiet_before_iso}"'})
        page = c.get("/api/v1/users", params={"limit": 200})
    assert [u["id"] for u in r.json()] == [changed] and elapsed < 1.0
    assert changed in {u["id"] for u in overlap.json()} and "next" not in overlap.links
    assert len(page.json()) == 200 and s.org.mutated_indices() == [777_777]


@pytest.mark.parametrize("op,days_back", [("gt", 0), ("ge", 0), ("gt", 1), ("ge", 30), ("gt", 89)])
def test_incremental_watermarks_before_creation_match_a_full_scan(sim, op, days_back):
    """Watermarks shortly before the org existed are narrowed too; results must not change."""
    mark = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(sim.org.created_ms / 1000 - days_back * 86400))
    with okta(sim) as c:
        narrowed, _ = walk(c, "/api/v1/users", {"filter": f'lastUpdated {op} "{mark}"'})
    truth = [sim.org.peek_user(i) for i in range(sim.org.users)]
    expected = [u["id"] for u in truth if (u["lastUpdated"] > mark if op == "gt" else u["lastUpdated"] >= mark)]
    assert [u["id"] for u in narrowed] == expected
    assert days_back < 30 or expected  # assigned users have ~60 days of recent history


def test_base_users_predate_the_org_and_mutations_bump_last_updated(fresh_simulator):
    s = fresh_simulator(users=300, seed=8)
    assert all(s.org.peek_user(i)["lastUpdated"] < s.org.created_iso for i in range(300))
    uid = s.org.assigned_user_ids()[0]
    user = s.org.set_user_type(uid, "supervisor")
    assert user["lastUpdated"] >= s.org.created_iso and user["profile"]["userType"] == "supervisor"
    s.org.set_status(uid, "DEPROVISIONED")
    assert uid not in s.org.assigned_user_ids()  # Okta drops app assignments on deactivation
    s.org.delete_user(uid)
    assert s.org.user(uid) is None
    with okta(s) as c:
        assert c.get(f"/api/v1/users/{uid}").status_code == 404


def test_assign_and_unassign_show_up_in_app_users(fresh_simulator):
    s = fresh_simulator(users=300, seed=8)
    outsider = next(s.org.user_id(i) for i in range(300)
                    if s.org.user_id(i) not in s.org.assigned_user_ids()
                    and s.org.peek_user(i)["status"] == "ACTIVE")
    s.org.assign(outsider, "EMP-NEW-1", scope="GROUP")
    with okta(s) as c:
        r = c.get(f"/api/v1/apps/{s.flex_app_id}/users/{outsider}")
        assert r.json()["credentials"]["userName"] == "EMP-NEW-1" and r.json()["scope"] == "GROUP"
        s.org.unassign(outsider)
        assert c.get(f"/api/v1/apps/{s.flex_app_id}/users/{outsider}").status_code == 404


def test_mutate_fraction_is_deterministic(fresh_simulator):
    a, b = fresh_simulator(users=400, seed=1), fresh_simulator(users=400, seed=1)
    ids = a.org.mutate_fraction(0.1, seed=3)
    assert ids == b.org.mutate_fraction(0.1, seed=3) and len(ids) == round(0.1 * len(a.org.assigned_user_ids()))
    assert [a.org.user(i)["profile"] for i in ids] == [b.org.user(i)["profile"] for i in ids]


def test_planted_drift_is_what_it_claims(sim):
    org, planted = sim.org, sim.org.planted
    workers = {w["sid"]: w for w in org.workers()}
    logins = {org.peek_user(i)["profile"]["login"].casefold() for i in range(org.users)}

    def owner(sid):
        a = next(org.assignment(u) for u in org.assigned_user_ids()
                 if org.assignment(u).app_username.casefold() == workers[sid]["friendly_name"].casefold())
        return org.user(a.user_id)

    for sid in planted["privilege_escalation"]:
        roles = set(json.loads(workers[sid]["attributes"])["roles"])
        assert roles - set(sso_roles(owner(sid)["profile"].get("userType"))) & {"supervisor", "admin"}
    for sid in planted["friendly_name_case"]:
        names = {a.app_username for a in map(org.assignment, org.assigned_user_ids())}
        assert workers[sid]["friendly_name"] not in names
        assert workers[sid]["friendly_name"].casefold() in {n.casefold() for n in names}
    for sid in planted["unparseable_attributes"]:
        try:
            assert not isinstance(json.loads(workers[sid]["attributes"]), dict)
        except ValueError:
            pass
    for sid in planted["orphan_worker"]:
        assert workers[sid]["friendly_name"].casefold() not in logins
    for uid in planted["missing_worker_active"]:
        assert org.worker_by_name(org.assignment(uid).app_username) is None
    for kind in ("hostile", "group_scope", "custom_app_username", "suspended_with_worker", "stale_name",
                 "deprovisioned_with_worker", "unassigned_with_worker", "email_case_only", "wfo_roles"):
        assert planted[kind], kind


def test_without_drift_workers_mirror_sso_exactly(fresh_simulator):
    s = fresh_simulator(users=400, seed=6, drift=False)
    org = s.org
    assert not any(org.planted[k] for k in ("privilege_escalation", "orphan_worker", "stale_name"))
    for uid in org.assigned_user_ids():
        a, user = org.assignment(uid), org.user(uid)
        worker = org.worker_by_name(a.app_username)
        if worker is None:
            continue
        attrs = json.loads(worker["attributes"])
        p = user["profile"]
        assert attrs["roles"] == sso_roles(p.get("userType"))
        assert attrs["full_name"] == sso_full_name(p.get("firstName"), p.get("lastName"))
        assert attrs["email"] == p["email"] and attrs["contact_uri"] == "client:" + contact_identity(p["email"])


# ---------------------------------------------------------------------------- control API and CLI
def test_control_api_over_http(fresh_simulator):
    s = fresh_simulator(users=200, seed=10)
    with okta(s) as c:
        c.get("/api/v1/users", params={"limit": 1})
        stats = c.get("/__sim/stats").json()
        assert stats["requests"]["users"] == 1 and stats["status"]["200"] == 1
        assert c.post("/__sim/reset-stats").json() == {"ok": True}
        assert c.get("/__sim/stats").json()["requests"] == {}
        ids = c.post("/__sim/mutate", json={"fraction": 0.05, "seed": 2}).json()["user_ids"]
        assert ids and all(s.org.user(u)["lastUpdated"] >= s.org.created_iso for u in ids)
        settings_ = c.post("/__sim/faults", json={"fault_rate": 0.25, "rate_limits": {"logs": 7}}).json()
        assert settings_["fault_rate"] == 0.25 and settings_["rate_limits"]["logs"] == 7
        assert c.post("/__sim/faults", json={"fault_rate": 3}).status_code == 400


def test_serve_prints_one_json_line_and_stops():
    out, stop = io.StringIO(), threading.Event()
    thread = threading.Thread(target=serve, args=(SimulatorConfig(users=20, seed=1),),
                              kwargs={"out": out, "stop": stop})
    thread.start()
    for _ in range(100):
        if out.getvalue():
            break
        time.sleep(0.05)
    info = json.loads(out.getvalue().strip())
    assert httpx.get(info["OKTA_ORG_URL"] + "/api/v1/users?limit=1",
                     headers={"Authorization": f"SSWS {info['okta_api_token']}"}).status_code == 200
    assert {"api_key_secret", "oauth_private_key_pem", "oauth_client_id", "TWILIO_WORKSPACE_SID"} <= set(info)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and out.getvalue().count("\n") == 1


def test_cli_parser_maps_rate_limit_flags():
    from simulator.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["--users", "5", "--users-rate-limit", "9", "--no-drift"]))
    assert cfg.users == 5 and cfg.rate_limits == {"users": 9} and cfg.drift is False


# ---------------------------------------------------------------------------- properties
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=5), st.integers(0, 2**63))
def test_cursors_round_trip_and_reject_tampering(payload, key):
    token = seal(key, payload)
    assert unseal(key, token) == payload
    k = len(token) // 2  # (the last character may only carry base64 padding bits)
    tampered = token[:k] + ("A" if token[k] != "A" else "B") + token[k + 1:]
    with pytest.raises(InvalidCursor):
        unseal(key, tampered)


@given(st.integers(0, 999_999), st.integers(0, 999_999))
def test_user_ids_sort_like_their_indices(sim_ids, i, j):
    a, b = sim_ids.user_id(i), sim_ids.user_id(j)
    assert (a < b) == (i < j) and sim_ids.index_of(a) == i
    assert re.fullmatch(r"00u[0-9A-Za-z]{17}", a)


@pytest.fixture(scope="module")
def sim_ids():
    from simulator.org import Org

    return Org(SimulatorConfig(users=1_000_000, seed=99, assigned=10), "http://127.0.0.1:9")


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 999_999))
def test_listing_template_equals_the_user_dict(sim_ids, i):
    """Listing pages use a JSON template; it must say exactly what the dict says."""
    assert json.loads(sim_ids.user_json(i)) == sim_ids.peek_user(i)


def test_listing_template_covers_hostile_and_mutated_users(fresh_simulator):
    s = fresh_simulator(users=300, seed=12)
    s.org.set_profile(s.org.assigned_user_ids()[1], lastName='Quote " and \\ backslash')
    for uid in s.org.planted["hostile"] + s.org.assigned_user_ids()[:3]:
        i = s.org.index_of(uid)
        assert json.loads(s.org.user_json(i)) == s.org.peek_user(i)


@given(st.one_of(st.text(max_size=40), st.lists(st.text(max_size=10), max_size=4), st.integers(), st.none()))
def test_sso_roles_only_ever_yields_valid_unique_roles(user_type):
    roles = sso_roles(user_type)
    assert set(roles) <= set(VALID_ROLES) and len(roles) == len(set(roles))


@given(st.text(max_size=60))
def test_contact_identity_is_alphanumeric_and_underscores(email):
    assert re.fullmatch(r"[A-Za-z0-9_]*", contact_identity(email))


# ---------------------------------------------------------------------------- listing caches
def test_app_user_pages_equal_single_reads_and_follow_changes(fresh_simulator):
    """List pages reuse each AppUser's JSON text; it must be what a single read renders, and a
    changed assignment must show its new values on the next listing."""
    s = fresh_simulator(users=300, seed=8)
    path = f"/api/v1/apps/{s.flex_app_id}/users"
    with okta(s) as c:
        first, _ = walk(c, path, {"limit": 40})
        again, _ = walk(c, path, {"limit": 40})  # served from the cache
        singles = [c.get(f"{path}/{a['id']}").json() for a in first]
        uid = first[3]["id"]
        s.org.assign(uid, "EMP-RENAMED-1", scope="GROUP")
        after, _ = walk(c, path, {"limit": 40})
        single_after = c.get(f"{path}/{uid}").json()
    assert first == again == singles
    changed = next(a for a in after if a["id"] == uid)
    assert changed == single_after and changed["credentials"]["userName"] == "EMP-RENAMED-1"
    assert changed["scope"] == "GROUP" and changed != first[3]


def test_app_user_cache_key_keeps_json_types_apart():
    from simulator.okta_api import _assignment_key
    from simulator.org import ABSENT, Assignment

    def key(roles):
        return _assignment_key(Assignment(1, "00u1", "a@example.com", "USER", "ACTIVE", 1, 2, 3, roles))

    assert key(["agent"]) != key("agent") != key(ABSENT) != key(None)
    assert key([True]) != key([1]) and key(True) != key(1)  # equal in Python, not in JSON
    assert key([["agent"]]) is None and key({"a": 1}) is None  # unhashable: rendered every time


def test_worker_pages_follow_updates(fresh_simulator):
    s = fresh_simulator(users=100, seed=9)
    with taskrouter(s) as c:
        before = c.get("/Workers", params={"PageSize": 1000}).json()["workers"]
        sid = next(w["sid"] for w in before if w["attributes"] is not None)
        assert c.post(f"/Workers/{sid}", data={"Attributes": '{"roles":["admin"]}'}).status_code == 200
        after = c.get("/Workers", params={"PageSize": 1000}).json()["workers"]
    changed = next(w for w in after if w["sid"] == sid)
    assert changed["attributes"] == '{"roles":["admin"]}'
    assert [w for w in after if w["sid"] != sid] == [w for w in before if w["sid"] != sid]
