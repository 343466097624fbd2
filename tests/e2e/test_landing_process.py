"""The users landing process (issue 17): past LANDING_PROCESS_AFTER_PAGES users pages, a child
process lands the users.  It must land exactly what the run's own process would have (hostile
values, items that are not objects, a user listed twice across the hand-over), on SQLite and
Postgres; a child that fails or dies fails the run, which then leaves nothing behind; a child
that cannot start leaves the run to land the users itself."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal

import pytest
from sqlalchemy import func, select

import okta_flex_sync.jobs.landing as landing
import okta_flex_sync.jobs.nightly as nightly
from okta_flex_sync.clients.okta import OktaClient
from okta_flex_sync.jobs.nightly import run_nightly
from okta_flex_sync.models.tables import staged_okta_users, sync_runs
from okta_flex_sync.settings import load_settings
from okta_flex_sync.storage.engine import make_engine

pytestmark = pytest.mark.slow

from tests.e2e.test_reliability import comparable_state  # noqa: E402
from tests.integration.test_hostile_data import JUNK_USERS, plant  # noqa: E402

USERS_PER_PAGE = 20
REPEATED: list[str] = []  # ids the last users page lists again


class CountingProcess(landing.UsersLandingProcess):
    """The real landing process, counting the pages it was handed and reading its environment."""

    submitted: list[int] = []
    environment: list[str] = []

    def submit(self, seq, page):
        if not CountingProcess.submitted:
            with open(f"/proc/{self._proc.pid}/environ", "rb") as f:
                CountingProcess.environment = [v.decode(errors="replace") for v in f.read().split(b"\0") if v]
        super().submit(seq, page)
        CountingProcess.submitted.append(seq)


def _page(page, items: list) -> object:
    """`page` carrying `items`, its bytes rebuilt to match (the child parses the bytes)."""
    raw = json.dumps(items).encode()
    return dataclasses.replace(page, items=[i for i in items if isinstance(i, dict)], raw=raw,
                               dropped=sum(not isinstance(i, dict) for i in items))


def hostile_okta(settings):
    """Small users pages; junk items on the first page and on a page after the hand-over; and a
    last page listing the first page's users again, now suspended (the later listing wins)."""
    okta = OktaClient.from_settings(settings)
    pages = okta.iter_user_pages

    def iter_user_pages(**kw):
        first = None
        for n, page in enumerate(pages(**{**kw, "limit": USERS_PER_PAGE})):
            if n in (0, 7):
                page = _page(page, [*page.items, *JUNK_USERS])
            first = first or page
            yield page
        again = [{**item, "status": "SUSPENDED"} for item in first.items
                 if isinstance(item.get("id"), str) and item.get("status") == "ACTIVE"][:5]
        REPEATED[:] = [item["id"] for item in again]
        yield _page(first, again)

    okta.iter_user_pages = iter_user_pages
    return okta


def _run(url: str, env: dict, monkeypatch, after_pages: int):
    for k, v in {**env, "DATABASE_URL": url, "LANDING_PROCESS_AFTER_PAGES": str(after_pages)}.items():
        monkeypatch.setenv(k, v)
    settings = load_settings()
    return run_nightly(settings, okta=hostile_okta(settings))


def test_landing_process_lands_what_the_run_would_have(fresh_simulator, database_url, tmp_path, monkeypatch):
    sim = fresh_simulator(users=300, seed=13)
    plant(sim)
    env = {**sim.env(), "REPORT_DIR": str(tmp_path / "reports")}
    in_process_url = f"sqlite:///{tmp_path / 'in-process.db'}"
    alone = _run(in_process_url, env, monkeypatch, after_pages=-1)

    CountingProcess.submitted = []
    monkeypatch.setattr(nightly, "UsersLandingProcess", CountingProcess)
    handed = _run(database_url, env, monkeypatch, after_pages=3)

    state = comparable_state(database_url, handed.run_id)
    assert state == comparable_state(in_process_url, alone.run_id)
    pages = state["counts"]["pages"]["users"]
    assert pages == 300 // USERS_PER_PAGE + 2  # the listing, one empty DEPROVISIONED page, the repeat page
    # Pages 1-3 and any queued with them land here (the hand-over waits for a batch boundary),
    # every later page there, in order.
    first = CountingProcess.submitted[0]
    assert 4 <= first <= 11 and CountingProcess.submitted == list(range(first, pages + 1))
    assert state["counts"]["users_pulled"] == 300
    names = {v.split("=", 1)[0] for v in CountingProcess.environment}
    assert "PATH" in names and not names & {"OKTA_API_TOKEN", "TWILIO_AUTH_TOKEN", "DATABASE_URL", "OKTA_ORG_URL"}
    suspended = _staged(database_url, handed.run_id, status="SUSPENDED")
    assert len(REPEATED) == 5 and set(REPEATED) <= set(suspended)  # page 1 (here), last page (there): the later wins
    reasons = [s["reason"] for s in state["counts"]["skipped_sample"] if s["source"] == "users"]
    assert reasons.count("4 list item(s) on a page were not JSON objects") == 2, reasons  # pages 1 and 8


def _staged(url: str, run_id: str, **where) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            q = select(staged_okta_users.c.okta_user_id).where(staged_okta_users.c.run_id == run_id)
            for column, value in where.items():
                q = q.where(staged_okta_users.c[column] == value)
            return list(conn.execute(q).scalars())
    finally:
        engine.dispose()


def _last_run(url: str) -> dict:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(sync_runs).order_by(sync_runs.c.started_at.desc()).limit(1)).mappings().one()
            staged = conn.execute(select(func.count()).select_from(staged_okta_users)
                                  .where(staged_okta_users.c.run_id == row["run_id"])).scalar()
            return {**row, "staged_users": staged}
    finally:
        engine.dispose()


def _garbled_after(n: int):
    """Users pages whose bytes stop being JSON after page `n` (the items stay whole): only the
    landing process, which parses the bytes, trips over them."""
    def wrap(settings):
        okta = OktaClient.from_settings(settings)
        pages = okta.iter_user_pages

        def iter_user_pages(**kw):
            for i, page in enumerate(pages(**{**kw, "limit": USERS_PER_PAGE})):
                yield dataclasses.replace(page, raw=b"{not json") if i >= n else page
        okta.iter_user_pages = iter_user_pages
        return okta
    return wrap


def test_a_failing_landing_process_fails_the_run_and_leaves_nothing(fresh_simulator, sim_env, monkeypatch):
    sim = fresh_simulator(users=200, seed=5)
    env = sim_env(sim)
    monkeypatch.setenv("LANDING_PROCESS_AFTER_PAGES", "2")
    settings = load_settings()
    with pytest.raises(ValueError):  # the child's JSON error, handed back
        run_nightly(settings, okta=_garbled_after(4)(settings))
    run = _last_run(env["DATABASE_URL"])
    assert run["status"] == "failed" and "JSONDecodeError" in run["error"]
    assert run["staged_users"] == 0


def test_a_landing_process_that_dies_fails_the_run(fresh_simulator, sim_env, monkeypatch):
    sim = fresh_simulator(users=200, seed=5)
    env = sim_env(sim)
    monkeypatch.setenv("LANDING_PROCESS_AFTER_PAGES", "2")

    class Killed(landing.UsersLandingProcess):
        def submit(self, seq, page):
            if not self.pages:  # before the first page it is handed
                os.kill(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
            super().submit(seq, page)

    monkeypatch.setattr(nightly, "UsersLandingProcess", Killed)
    with pytest.raises(landing.LandingProcessError, match="users landing process"):
        run_nightly(load_settings(), okta=_garbled_after(10_000)(load_settings()))
    run = _last_run(env["DATABASE_URL"])
    assert run["status"] == "failed" and run["staged_users"] == 0


def test_a_landing_process_that_cannot_start_leaves_the_users_to_the_run(fresh_simulator, sim_env, monkeypatch,
                                                                          caplog):
    sim = fresh_simulator(users=200, seed=5)
    env = sim_env(sim)
    monkeypatch.setenv("LANDING_PROCESS_AFTER_PAGES", "0")

    def no_process(*args, **kwargs):
        raise OSError("fork failed")

    monkeypatch.setattr(landing.subprocess, "Popen", no_process)
    with caplog.at_level(logging.WARNING):
        run_nightly(load_settings())
    run = _last_run(env["DATABASE_URL"])
    assert run["status"] == "succeeded" and run["staged_users"] == 200
    assert "could not start the users landing process: fork failed; landing the users in this process instead" \
        in caplog.text
