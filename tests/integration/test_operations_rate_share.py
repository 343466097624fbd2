"""Issue 16, Okta's shared rate limits: one run spends at most OKTA_RATE_LIMIT_PERCENT of each
bucket's X-Rate-Limit-Limit per window, requests in flight included, and records per bucket the
most it spent in any window."""
from __future__ import annotations

import threading
import time

import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from okta_flex_sync.cli import app
from okta_flex_sync.clients.http import RetryingSession
from okta_flex_sync.clients.rate_share import BucketShare, RateShares, share_bucket_name
from okta_flex_sync.settings import ConfigError, load_settings
from okta_flex_sync.storage.engine import make_engine


@pytest.mark.parametrize("bucket, name", [
    ("/api/v1/users", "users"), ("/api/v1/apps/*", "apps"), ("/api/v1/logs", "logs"),
    ("/api/v1/users/*", "users/*"), ("/oauth2/v1/token", "token"), ("/v1/Workspaces/*", "v1/Workspaces/*"),
])
def test_buckets_are_named_as_okta_documents_them(bucket, name):
    assert share_bucket_name(bucket) == name


@pytest.mark.parametrize("value, ok", [("1", True), ("50", True), ("100", True), ("0", False), ("101", False),
                                       ("half", False)])
def test_the_share_is_a_percent_from_1_to_100(value, ok, monkeypatch):
    monkeypatch.setenv("OKTA_RATE_LIMIT_PERCENT", value)
    if ok:
        assert load_settings().okta_rate_limit_percent == int(value)
    else:
        with pytest.raises(ConfigError, match="^configuration error: OKTA_RATE_LIMIT_PERCENT "):
            load_settings()


def test_the_default_share_is_half(monkeypatch):
    monkeypatch.delenv("OKTA_RATE_LIMIT_PERCENT", raising=False)
    assert load_settings().okta_rate_limit_percent == 50


@pytest.mark.parametrize("limit, percent, allowed", [(600, 50, 300), (100, 50, 50), (120, 34, 40), (600, 100, 600),
                                                     (10, 1, 1), (3, 50, 1)])
def test_requests_in_flight_count_against_the_share(limit, percent, allowed):
    share = BucketShare(percent)
    assert share.acquire(1000.0) == 0.0
    share.release(limit, 1060.0, 1000.5)  # the first answer tells the budget and the window's end
    sent = 1
    while share.acquire(1001.0) == 0.0:  # none of these is answered yet
        sent += 1
    assert sent == allowed
    assert share.acquire(1001.0) == pytest.approx(1060.0 - 1001.0 + 1.0)  # held until the next window
    assert share.usage() == {"limit": limit, "max_used": allowed, "percent": percent}


def test_only_one_request_goes_before_the_budget_is_known():
    share = BucketShare(50)
    assert share.acquire(10.0) == 0.0
    assert share.acquire(10.0) > 0  # the first answer has not come back
    share.release(100, 70.0, 10.2)
    assert share.acquire(10.3) == 0.0


def test_a_server_without_budget_headers_is_not_throttled():
    share = BucketShare(50)
    assert share.acquire(0.0) == 0.0
    share.release(None, None, 0.1)
    assert [share.acquire(0.2) for _ in range(20)] == [0.0] * 20


def test_a_new_window_starts_a_new_count():
    share = BucketShare(50)
    for _ in range(2):
        assert share.acquire(0.0) == 0.0
        share.release(4, 60.0, 0.1)
    assert share.acquire(0.5) > 0
    assert share.acquire(61.0) == 0.0  # after the reset (plus margin): a fresh window
    share.release(4, 121.0, 61.1)
    assert share.usage()["max_used"] == 2


def test_a_concurrency_429_says_nothing_about_the_bucket():
    share = BucketShare(50)
    share.acquire(0.0)
    share.release(0, 5.0, 0.1)  # Limit=Remaining=0 is Okta's concurrency 429
    assert share.limit is None


def test_usage_lists_only_buckets_used():
    shares = RateShares(50)
    shares.share("/api/v1/logs")  # created, never used
    users = shares.share("/api/v1/users")
    users.acquire(0.0)
    users.release(600, 60.0, 0.1)
    assert shares.usage() == {"users": {"limit": 600, "max_used": 1, "percent": 50}}


class FixedWindowOkta:
    """Okta's per-minute bucket in miniature: fixed windows from the first request, a 429 past the limit."""

    def __init__(self, limit: int, window: float, clock):
        self.limit, self.window, self.clock = limit, window, clock
        self.lock = threading.Lock()
        self.start: float | None = None
        self.count = 0
        self.per_window: list[int] = []
        self.throttled = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            now = self.clock()
            if self.start is None or now >= self.start + self.window:
                self.start, self.count = now, 0
                self.per_window.append(0)
            self.count += 1
            self.per_window[-1] += 1
            reset = int(self.start + self.window + 0.999)
            headers = {"X-Rate-Limit-Limit": str(self.limit), "X-Rate-Limit-Remaining": str(max(0, self.limit - self.count)),
                       "X-Rate-Limit-Reset": str(reset), "Content-Type": "application/json"}
            if self.count > self.limit:
                self.throttled += 1
                return httpx.Response(429, headers=headers, json={"errorCode": "E0000047"})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(0.01)  # answered while other threads may be sending
        with self.lock:
            self.in_flight -= 1
        return httpx.Response(200, headers=headers, json=[])


@pytest.mark.parametrize("percent, per_window", [(50, [5, 5, 5]), (100, [10, 5]), (20, [2, 2, 2, 2, 2, 2, 2, 1])])
def test_one_run_spends_at_most_its_share_of_each_window(percent, per_window):
    clock = [1_000_000.0]

    def now():
        return clock[0]

    def sleep(seconds):
        clock[0] += seconds

    okta = FixedWindowOkta(limit=10, window=60.0, clock=now)
    session = RetryingSession(httpx.Client(base_url="https://acme.okta.com", transport=httpx.MockTransport(okta)),
                              service="Okta", request_id_header="X-Okta-Request-Id", sleep=sleep, clock=now,
                              rate_limit_percent=percent)
    for _ in range(15):
        session.request("GET", "/api/v1/users")
    assert okta.throttled == 0
    assert okta.per_window == per_window
    assert session.rate_limit_usage() == {"users": {"limit": 10, "max_used": max(per_window), "percent": percent}}


def test_concurrent_listings_share_one_budget_in_real_time():
    """Four threads on one bucket of 10 per 1-second window at 50%: never more than 5 per window."""
    okta = FixedWindowOkta(limit=10, window=1.0, clock=time.time)
    session = RetryingSession(httpx.Client(base_url="https://acme.okta.com", transport=httpx.MockTransport(okta)),
                              service="Okta", request_id_header="X-Okta-Request-Id", max_concurrency=4,
                              rate_limit_percent=50)

    def pull():
        for _ in range(3):
            session.request("GET", "/api/v1/users")
    threads = [threading.Thread(target=pull) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert okta.throttled == 0 and sum(okta.per_window) == 12
    assert max(okta.per_window) <= 5, okta.per_window
    assert session.rate_limit_usage()["users"]["max_used"] <= 5


def test_each_run_records_per_bucket_the_most_it_spent(fresh_simulator, sim_env, monkeypatch):
    sim = fresh_simulator(users=120, seed=16, rate_limits={"users": 40, "apps": 20, "logs": 30})
    env = sim_env(sim)
    monkeypatch.setenv("OKTA_RATE_LIMIT_PERCENT", "50")
    result = CliRunner().invoke(app, ["run", "--no-prefect"])
    assert result.exit_code == 0, result.output
    engine = make_engine(env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            counts = conn.execute(text("SELECT counts FROM sync_runs")).scalar()
    finally:
        engine.dispose()
    import json

    limits = (json.loads(counts) if isinstance(counts, str) else counts)["rate_limits"]
    assert set(limits) >= {"users", "apps", "logs"}
    assert limits["users"]["limit"] == 40 and limits["apps"]["limit"] == 20 and limits["logs"]["limit"] == 30
    for bucket in ("users", "apps", "logs"):
        assert 1 <= limits[bucket]["max_used"] <= limits[bucket]["limit"] // 2
        assert limits[bucket]["percent"] == 50
    assert sim.stats()["429"] == 0


def test_a_backfill_records_its_log_bucket_use_too(fresh_simulator, sim_env, monkeypatch):
    from datetime import date, timedelta

    sim = fresh_simulator(users=40, seed=17, rate_limits={"logs": 30})
    env = sim_env(sim)
    assert CliRunner().invoke(app, ["run", "--no-prefect"]).exit_code == 0
    day = (date.today() - timedelta(days=1)).isoformat()
    result = CliRunner().invoke(app, ["backfill", "--start", day, "--end", day])
    assert result.exit_code == 0, result.output
    engine = make_engine(env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            counts = conn.execute(text("SELECT counts FROM sync_runs WHERE flow = 'backfill'")).scalar()
    finally:
        engine.dispose()
    import json

    limits = (json.loads(counts) if isinstance(counts, str) else counts)["rate_limits"]
    assert limits["logs"]["limit"] == 30 and 1 <= limits["logs"]["max_used"] <= 15
    assert limits["logs"]["percent"] == 50
