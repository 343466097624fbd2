"""TaskRouterClient against an in-process fake workspace (httpx.MockTransport)."""
from __future__ import annotations

import base64
import json
import logging
import time
from urllib.parse import parse_qs

import httpx
import pytest
from cassette_support import (
    CASSETTE_SEED,
    SIM_FILE,
    SIM_ORIGIN,
    FakeTime,
    remember,
)
from conftest import FAKE_SECRETS

from okta_flex_sync.clients.http import (
    AuthError,
    ConflictError,
    NotFoundError,
    PaginationError,
    RetriesExhausted,
)
from okta_flex_sync.clients.taskrouter import TaskRouterClient
from okta_flex_sync.settings import ConfigError, Settings

BASE = "https://taskrouter.twilio.com"
ACCOUNT = "AC" + "a" * 32
WORKSPACE = "WS" + "b" * 32
AUTH_TOKEN = FAKE_SECRETS["twilio_auth_token"]
WORKERS = f"/v1/Workspaces/{WORKSPACE}/Workers"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def worker(n: int, attributes: str | None = '{"roles":["agent"]}') -> dict:
    return {"sid": f"WK{n:032d}", "friendly_name": f"u{n}@acme.test", "attributes": attributes,
            "workspace_sid": WORKSPACE}


class FakeTaskRouter:
    """Workers with Twilio-style pages (meta.next_page_url), ETags and scripted faults."""

    def __init__(self, workers=(), *, list_hides_attributes=False, auth=basic(ACCOUNT, AUTH_TOKEN)):
        self.workers = {w["sid"]: dict(w) for w in workers}
        self.versions = {sid: 1 for sid in self.workers}
        self.list_hides_attributes = list_hides_attributes
        self.auth = auth
        self.requests: list[httpx.Request] = []
        self.faults: list = []
        self.drop_after_apply = 0  # apply a write, then drop the connection this many times

    def etag(self, sid: str) -> str:
        return f'"v{self.versions[sid]}"'

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.faults:
            fault = self.faults.pop(0)
            if isinstance(fault, Exception):
                raise fault
            return fault
        if request.headers.get("authorization") != self.auth:
            return httpx.Response(401, json={"code": 20003, "message": "Authenticate", "status": 401},
                                  headers={"Twilio-Request-Id": "RQ401"})
        if request.url.path == WORKERS:
            return self.list(request)
        sid = request.url.path.rsplit("/", 1)[-1]
        if sid not in self.workers:
            return httpx.Response(404, json={"code": 20404, "message": "The requested resource was not found"},
                                  headers={"Twilio-Request-Id": "RQ404"})
        if request.method == "GET":
            return httpx.Response(200, json=self.workers[sid], headers={"ETag": self.etag(sid)})
        if request.headers.get("if-match") not in (None, self.etag(sid)):
            return httpx.Response(412, json={"code": 20412, "message": "Precondition failed"})
        if request.method == "DELETE":
            del self.workers[sid]
            response = httpx.Response(204)
        else:
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            self.workers[sid]["attributes"] = form["Attributes"]
            self.versions[sid] += 1
            response = httpx.Response(200, json=self.workers[sid], headers={"ETag": self.etag(sid)})
        if self.drop_after_apply:
            self.drop_after_apply -= 1
            raise httpx.RemoteProtocolError("connection dropped after the write")
        return response

    def list(self, request: httpx.Request) -> httpx.Response:
        size = int(request.url.params.get("PageSize", "50"))
        page = int(request.url.params.get("Page", "0"))
        rows = list(self.workers.values())[page * size:(page + 1) * size]
        if self.list_hides_attributes:
            rows = [{**w, "attributes": None} for w in rows]
        more = (page + 1) * size < len(self.workers)
        url = f"{BASE}{WORKERS}?PageSize={size}&Page={page}"
        nxt = f"{BASE}{WORKERS}?PageSize={size}&Page={page + 1}&PageToken=PT{page + 1}" if more else None
        return httpx.Response(200, json={"workers": rows, "meta": {
            "page": page, "page_size": size, "url": url, "next_page_url": nxt, "key": "workers"}},
            headers={"Twilio-Request-Id": f"RQlist{page}"})


def make_client(fake, ft: FakeTime | None = None, **kwargs) -> TaskRouterClient:
    ft = ft or FakeTime()
    return TaskRouterClient(BASE, WORKSPACE, ACCOUNT, AUTH_TOKEN, transport=httpx.MockTransport(fake),
                            sleep=ft.sleep, clock=ft.clock, **kwargs)


def sids(pages) -> list[str]:
    return [w["sid"] for p in pages for w in p.items]


# --- listing --------------------------------------------------------------------------------

def test_pages_follow_next_page_url():
    fake = FakeTaskRouter([worker(i) for i in range(5)])
    with make_client(fake) as client:
        pages = list(client.iter_worker_pages(page_size=2))
    assert sids(pages) == [f"WK{i:032d}" for i in range(5)]
    assert [r.url.params.get("PageToken") for r in fake.requests] == [None, "PT1", "PT2"]
    assert pages[1].request_id == "RQlist1" and AUTH_TOKEN not in pages[1].url
    assert all(r.headers["authorization"] == basic(ACCOUNT, AUTH_TOKEN) for r in fake.requests)


def test_null_list_attributes_are_fetched_one_by_one():
    fake = FakeTaskRouter([worker(1, '{"roles":["admin"]}'), worker(2, "{}")], list_hides_attributes=True)
    with make_client(fake) as client:
        items = [w for p in client.iter_worker_pages() for w in p.items]
    assert [w["attributes"] for w in items] == ['{"roles":["admin"]}', "{}"]
    fetched = [r.url.path.rsplit("/", 1)[-1] for r in fake.requests if r.url.path != WORKERS]
    assert fetched == [f"WK{1:032d}", f"WK{2:032d}"]


def test_known_attributes_answer_for_a_pages_null_rows_and_the_rest_are_fetched():
    fake = FakeTaskRouter([worker(1, '{"roles":["admin"]}'), worker(2, "{}"), worker(3, '{"a":1}')],
                          list_hides_attributes=True)
    asked = []

    def known(rows):
        asked.append([r["sid"] for r in rows])
        return {f"WK{2:032d}": '{"cached":true}'}

    with make_client(fake) as client:
        items = [w for p in client.iter_worker_pages(known_attributes=known) for w in p.items]
    assert asked == [[f"WK{n:032d}" for n in (1, 2, 3)]]  # once per page, with every null row
    assert [w["attributes"] for w in items] == ['{"roles":["admin"]}', '{"cached":true}', '{"a":1}']
    fetched = [r.url.path.rsplit("/", 1)[-1] for r in fake.requests if r.url.path != WORKERS]
    assert fetched == [f"WK{1:032d}", f"WK{3:032d}"]


def test_non_null_attributes_are_not_fetched_again():
    fake = FakeTaskRouter([worker(1), worker(2, "not json at all")])
    with make_client(fake) as client:
        list(client.iter_worker_pages())
    assert len(fake.requests) == 1


def test_next_page_url_equal_to_current_page_stops():
    def serve(request):
        return httpx.Response(200, json={"workers": [worker(1)], "meta": {
            "url": str(request.url), "next_page_url": str(request.url), "key": "workers"}})

    with make_client(serve) as client:
        assert len(sids(client.iter_worker_pages())) == 1


def test_endless_empty_pages_raise():
    def serve(request):
        n = int(request.url.params.get("Page", "0"))
        return httpx.Response(200, json={"workers": [], "meta": {
            "next_page_url": f"{BASE}{WORKERS}?Page={n + 1}", "key": "workers"}})

    with make_client(serve) as client, pytest.raises(PaginationError):
        list(client.iter_worker_pages())


def test_next_page_naming_another_host_is_followed_on_the_configured_base_only(caplog):
    """e.g. a server that writes another hostname (a region, a proxy) into `next_page_url` while it is
    reached through TASKROUTER_BASE_URL: follow the path there, never send credentials away."""
    seen = []

    def serve(request):
        seen.append(request)
        page = int(request.url.params.get("Page", "0"))
        nxt = (f"https://taskrouter.us1.twilio.com/v1/Workspaces/{WORKSPACE}/Workers?PageSize=1&Page={page + 1}"
               if page < 2 else None)
        return httpx.Response(200, json={"workers": [worker(page)], "meta": {"next_page_url": nxt, "key": "workers"}})

    with caplog.at_level("WARNING"), make_client(serve) as client:
        got = sids(client.iter_worker_pages(page_size=1))
    assert got == [worker(i)["sid"] for i in range(3)]
    base = httpx.URL(BASE)
    assert {(r.url.scheme, r.url.host, r.url.port) for r in seen} == {(base.scheme, base.host, base.port)}
    assert [r.url.params.get("Page") for r in seen] == [None, "1", "2"]
    assert len([r for r in caplog.records if "another host" in r.getMessage()]) == 1


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"[]", b'{"meta": {}}', b'{"workers": "nope"}'])
def test_malformed_list_bodies_are_retried_then_given_up(body):
    ft = FakeTime()
    with make_client(lambda r: httpx.Response(200, content=body), ft, max_retries=2) as client, \
            pytest.raises(RetriesExhausted):
        list(client.iter_worker_pages())
    assert len(ft.sleeps) == 2


# --- retries ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fault, low, high", [
    (httpx.Response(429, json={"code": 20429, "message": "Too Many Requests"}), 0.25, 0.5),
    (httpx.Response(429, json={"code": 20429}, headers={"Retry-After": "4"}), 4.0, 4.0),
    (httpx.Response(503, text="upstream unavailable"), 0.25, 0.5),
    (httpx.ReadError("reset"), 0.25, 0.5),
])
def test_transient_failures_are_retried(fault, low, high):
    ft = FakeTime()
    fake = FakeTaskRouter([worker(1)])
    fake.faults = [fault]
    with make_client(fake, ft) as client:
        assert len(sids(client.iter_worker_pages())) == 1
    assert len(ft.sleeps) == 1 and low <= ft.sleeps[0] <= high


def test_pacing_without_reset_header_waits_a_second(caplog):
    ft = FakeTime()
    fake = FakeTaskRouter([worker(i) for i in range(3)])
    original = fake.list

    def spent(request):
        resp = original(request)
        resp.headers.update({"X-Rate-Limit-Limit": "10", "X-Rate-Limit-Remaining": "0"})
        return resp

    fake.list = spent
    with make_client(fake, ft) as client:
        list(client.iter_worker_pages(page_size=1))
    assert ft.sleeps == [1.0, 1.0]


def test_401_fails_fast_with_twilio_request_id_and_no_secret():
    fake = FakeTaskRouter([worker(1)], auth="Basic somebody-else")
    with make_client(fake) as client, pytest.raises(AuthError) as info:
        list(client.iter_worker_pages())
    message = str(info.value)
    assert len(fake.requests) == 1
    assert WORKERS in message and "RQ401" in message and "20003" in message
    assert AUTH_TOKEN not in message and "Basic" not in message


# --- fetch / update / delete -----------------------------------------------------------------

def test_fetch_returns_etag():
    fake = FakeTaskRouter([worker(1)])
    with make_client(fake) as client:
        body, etag = client.fetch_worker(f"WK{1:032d}")
    assert body["sid"] == f"WK{1:032d}" and etag == '"v1"'


def test_update_sends_attributes_and_if_match():
    fake = FakeTaskRouter([worker(1)])
    sid = f"WK{1:032d}"
    with make_client(fake) as client:
        _, etag = client.fetch_worker(sid)
        updated = client.update_worker(sid, attributes='{"roles":["supervisor"]}', if_match=etag)
    post = fake.requests[-1]
    assert post.method == "POST" and post.headers["if-match"] == '"v1"'
    assert parse_qs(post.content.decode()) == {"Attributes": ['{"roles":["supervisor"]}']}
    assert post.headers["content-type"] == "application/x-www-form-urlencoded"
    assert updated["attributes"] == '{"roles":["supervisor"]}'


def test_update_with_stale_etag_is_a_conflict():
    fake = FakeTaskRouter([worker(1)])
    with make_client(fake) as client, pytest.raises(ConflictError) as info:
        client.update_worker(f"WK{1:032d}", attributes="{}", if_match='"v0"')
    assert info.value.status == 412 and len(fake.requests) == 1


def test_update_retried_after_a_dropped_connection_recognises_its_own_write():
    fake = FakeTaskRouter([worker(1)])
    fake.drop_after_apply = 1
    sid = f"WK{1:032d}"
    with make_client(fake) as client:
        result = client.update_worker(sid, attributes='{"roles": ["admin"]}', if_match='"v1"')
    assert json.loads(result["attributes"]) == {"roles": ["admin"]}
    assert [r.method for r in fake.requests] == ["POST", "POST", "GET"]


def test_update_retried_into_someone_elses_write_is_a_conflict():
    fake = FakeTaskRouter([worker(1)])
    sid = f"WK{1:032d}"
    fake.faults = [httpx.ReadError("reset")]
    fake.versions[sid] = 2  # someone else wrote in between
    with make_client(fake) as client, pytest.raises(ConflictError):
        client.update_worker(sid, attributes='{"roles":["admin"]}', if_match='"v1"')


def test_update_requires_a_string():
    with make_client(FakeTaskRouter()) as client, pytest.raises(TypeError):
        client.update_worker(f"WK{1:032d}", attributes={"roles": ["agent"]})


def test_delete_sends_if_match_and_treats_a_retried_404_as_done():
    fake = FakeTaskRouter([worker(1), worker(2)])
    fake.drop_after_apply = 1
    with make_client(fake) as client:
        client.delete_worker(f"WK{1:032d}", if_match='"v1"')
        client.delete_worker(f"WK{2:032d}")
        with pytest.raises(NotFoundError):
            client.delete_worker(f"WK{3:032d}")
    assert fake.requests[0].headers["if-match"] == '"v1"' and "if-match" not in fake.requests[2].headers
    assert not fake.workers


# --- construction ---------------------------------------------------------------------------

@pytest.mark.parametrize("env, user", [
    ({"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}, ACCOUNT),
    ({"TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
      "TWILIO_API_KEY_SID": "SK" + "c" * 32, "TWILIO_API_KEY_SECRET": "key-secret"}, "SK" + "c" * 32),
    ({"TWILIO_ACCOUNT_SID": ACCOUNT}, None),
])
def test_from_settings_prefers_api_keys(env, user, monkeypatch):
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY_SID", "TWILIO_API_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None, twilio_workspace_sid=WORKSPACE, **{k.lower(): v for k, v in env.items()})
    if user is None:
        with pytest.raises(ConfigError):
            TaskRouterClient.from_settings(settings)
        return
    captured = []
    with TaskRouterClient.from_settings(settings, transport=httpx.MockTransport(
            lambda r: captured.append(r) or httpx.Response(200, json={"sid": "WK1"}))) as client:
        client.fetch_worker("WK1")
    assert base64.b64decode(captured[0].headers["authorization"][6:]).decode().split(":")[0] == user
    assert captured[0].url.path == f"{WORKERS}/WK1"


def test_repr_hides_password():
    assert AUTH_TOKEN not in repr(make_client(FakeTaskRouter()))


def test_logs_never_contain_credentials(caplog):
    fake = FakeTaskRouter([worker(1)])
    fake.faults = [httpx.Response(503), httpx.ReadError("reset")]
    with caplog.at_level(logging.DEBUG), make_client(fake) as client:
        list(client.iter_worker_pages())
    assert caplog.text and AUTH_TOKEN not in caplog.text and "Basic " not in caplog.text


# --- end to end against the simulator -------------------------------------------------------

def pull_workers(client: TaskRouterClient) -> dict:
    return {w["sid"]: w for page in client.iter_worker_pages(page_size=5) for w in page.items}


@pytest.mark.slow
def test_live_pull_survives_faults_and_tight_limits(fresh_simulator, monkeypatch):
    monkeypatch.setattr("simulator.limits.WINDOW_SECONDS", 1)  # keep rate-limit windows short
    sim = fresh_simulator(users=120, seed=7, null_attributes_fraction=0.3)
    with TaskRouterClient(sim.url, sim.workspace_sid, sim.account_sid, sim.auth_token) as client:
        clean = pull_workers(client)
    assert clean and all(w["attributes"] is not None for w in clean.values())
    fetches = sim.stats()["requests"]["taskrouter"] - (len(clean) + 4) // 5
    assert fetches > 0  # some list rows had null attributes and were fetched one by one

    sim.set_faults(fault_rate=0.05, rate_limits={"taskrouter": 4})
    with TaskRouterClient(sim.url, sim.workspace_sid, sim.api_key_sid, sim.api_key_secret,
                          timeout=1.0, max_retries=8) as client:
        assert pull_workers(client) == clean
    assert client.stats.retries + client.stats.throttled_429 >= 1


@pytest.mark.slow
def test_live_update_with_if_match(fresh_simulator):
    sim = fresh_simulator(users=40, seed=3)
    with TaskRouterClient(sim.url, sim.workspace_sid, sim.account_sid, sim.auth_token) as client:
        sid = next(iter(pull_workers(client)))
        worker, etag = client.fetch_worker(sid)
        assert etag
        new = json.dumps({"full_name": "Test Person", "roles": ["agent"]})
        assert client.update_worker(sid, attributes=new, if_match=etag)["attributes"] == new
        with pytest.raises(ConflictError):
            client.update_worker(sid, attributes="{}", if_match=etag)  # stale now
        assert client.fetch_worker(sid)[0]["attributes"] == new
    with TaskRouterClient(sim.url, sim.workspace_sid, sim.account_sid, "wrong-token") as client, \
            pytest.raises(AuthError) as info:
        client.fetch_worker(sid)
    assert "RQ" in str(info.value) and "wrong-token" not in str(info.value)


# --- cassettes: recorded once against the simulator, replayed offline ----------------------
# Record with `pytest tests/integration/test_taskrouter_client.py --record-mode=rewrite -k cassette`.
# Same redaction rules as tests/integration/test_okta_client.py (both through tests/cassette_support.py).

class Target:
    """A live simulator while recording; the cassette (and its recorded workspace) on replay."""

    def __init__(self, sim=None):
        self.sim = sim
        facts = json.loads(SIM_FILE.read_text()) if SIM_FILE.exists() else {}
        if sim is not None:
            remember(sim)
            facts.update(seed=CASSETTE_SEED, workspace_sid=sim.workspace_sid)
            SIM_FILE.parent.mkdir(parents=True, exist_ok=True)
            SIM_FILE.write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
        self.url = sim.url if sim else SIM_ORIGIN
        self.workspace_sid = facts["workspace_sid"]
        self.sleep = time.sleep if sim else (lambda seconds: None)

    def client(self, **kwargs) -> TaskRouterClient:
        user, password = (self.sim.account_sid, self.sim.auth_token) if self.sim else (ACCOUNT, AUTH_TOKEN)
        return TaskRouterClient(self.url, self.workspace_sid, user, password, sleep=self.sleep, **kwargs)

    def set_faults(self, **kwargs) -> None:
        if self.sim is not None:
            self.sim.set_faults(**kwargs)


@pytest.fixture
def target(vcr, record_mode, fresh_simulator, monkeypatch):
    recording = record_mode != "none" and (record_mode in ("all", "new_episodes") or len(vcr) == 0)
    if not recording:
        assert len(vcr) > 0, "cassette missing: record it with --record-mode=rewrite"
        return Target()
    monkeypatch.setattr("simulator.limits.WINDOW_SECONDS", 1)
    return Target(fresh_simulator(users=60, seed=CASSETTE_SEED, null_attributes_fraction=0.3))


@pytest.mark.vcr
def test_cassette_worker_pull_with_faults_matches_clean_pull(target):
    with target.client() as client:
        clean = pull_workers(client)
    assert clean and all(w["attributes"] is not None for w in clean.values())
    target.set_faults(fault_rate=0.05, rate_limits={"taskrouter": 3})
    with target.client(timeout=1.0, max_retries=8) as client:
        assert pull_workers(client) == clean
    assert client.stats.retries + client.stats.throttled_429 >= 1


@pytest.mark.vcr
def test_cassette_fetch_update_delete_with_if_match(target):
    with target.client() as client:
        sid, other = sorted(pull_workers(client))[:2]
        _, etag = client.fetch_worker(sid)
        new = json.dumps({"email": "a@example.com", "full_name": "A B", "roles": ["agent"]})
        updated = client.update_worker(sid, attributes=new, if_match=etag)
        with pytest.raises(ConflictError):
            client.update_worker(sid, attributes="{}", if_match=etag)
        client.delete_worker(other)
        with pytest.raises(NotFoundError):
            client.fetch_worker(other)
    assert updated["attributes"] == new


def test_live_pull_through_another_name_for_the_host(simulator, caplog):
    """The simulator writes `127.0.0.1` into its next_page_url; reached as `localhost`, every
    page is still read, and all from `localhost`."""
    other = simulator.url.replace("127.0.0.1", "localhost")
    assert other != simulator.url
    with TaskRouterClient(simulator.url, simulator.workspace_sid, simulator.account_sid,
                          simulator.auth_token) as client:
        direct = pull_workers(client)
    with caplog.at_level("WARNING"), TaskRouterClient(other, simulator.workspace_sid, simulator.account_sid,
                                                      simulator.auth_token) as client:
        renamed = pull_workers(client)
    assert renamed == direct and len(direct) > 5
    assert len([r for r in caplog.records if "another host (127.0.0.1)" in r.getMessage()]) == 1
