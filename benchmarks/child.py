"""One measured nightly run in a process of its own (started by `bench.py`).

Settings come from the environment (the simulator's, plus DATABASE_URL and REPORT_DIR).  Prints
one JSON line: wall and CPU time, peak RSS of this process, time per stage, and the run's
stored counts (requests, pages, pure-stage timings).  Modes:

* `plain`   - `okta_flex_sync.jobs.nightly.run_nightly`, no orchestrator;
* `prefect` - a plain run and the `nightly-sync` flow on a temporary Prefect server (its start
  is not timed), each on its own database, for the overhead Prefect adds;
* `listing` - only the Okta users listing (fetch and parse every page, nothing else): the
  longest single listing, which a run whose listings overlap should take about as long as;
* `floor`   - `floor.py`: a bare urllib client walking the same three listings, nothing else;
* `pure`    - the pure stages alone, on the raw pages the last run stored: normalize every
  user, assignment and worker, then the history diff and reconcile, one thread, nothing else
  running in the process (CPU seconds, fastest of three, as `timeit` does).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import threading
import time

import floor  # benchmarks/floor.py, beside this script

STAGES = ("prepare", "extract", "publish", "repair", "report")


def _cpu() -> float:
    """CPU seconds of this process and of its finished children: the users landing process
    (okta_flex_sync.jobs.landing) is counted once it has exited, at the end of extract."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _rss_kb(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _children() -> list[str]:
    out = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                out += f.read().split()
    except OSError:
        pass
    return out


class RssSampler:
    """Peak RSS of this process and its children (the users landing process) *together*,
    sampled every 20 ms from /proc (Linux): the two peak at different moments, so adding their
    separate peaks would overstate what the run held at once."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak_kb = 0
        self.children_peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        children = sum(_rss_kb(pid) for pid in _children())
        self.children_peak_kb = max(self.children_peak_kb, children)
        self.peak_kb = max(self.peak_kb, _rss_kb("self") + children)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def peak_mb(self) -> float:
        """The sampled peak, never below this process's own `ru_maxrss` (which misses nothing)."""
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(max(self.peak_kb, own) / 1024, 1)


def _time_stages(cls, sink: dict, cpu_sink: dict | None = None) -> None:
    """Wrap the stage methods of NightlySync so each run records how long each took, and how
    many CPU seconds the whole process (listing threads included) spent in it."""
    cpu_sink = {} if cpu_sink is None else cpu_sink
    for name in STAGES:
        original = getattr(cls, name)

        def timed(self, *args, _original=original, _name=name, **kwargs):
            started, cpu = time.perf_counter(), _cpu()
            try:
                return _original(self, *args, **kwargs)
            finally:
                sink[_name] = sink.get(_name, 0.0) + time.perf_counter() - started
                cpu_sink[_name] = cpu_sink.get(_name, 0.0) + _cpu() - cpu
        setattr(cls, name, timed)


def _stored_counts(database_url: str) -> dict:
    """The latest nightly run's counts as stored in `sync_runs`."""
    from okta_flex_sync.storage import runs as runs_db
    from okta_flex_sync.storage.engine import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            run = runs_db.last_run(conn)
        return (run or {}).get("counts") or {}
    finally:
        engine.dispose()


def measure(run, database_url: str, stages: dict, stage_cpu: dict | None = None) -> dict:
    """Run `run()` once against `database_url`; wall, CPU and the stored counts."""
    os.environ["DATABASE_URL"] = database_url
    stages.clear()
    stage_cpu = {} if stage_cpu is None else stage_cpu
    stage_cpu.clear()
    wall, cpu = time.perf_counter(), _cpu()
    run()
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    counts = _stored_counts(database_url)
    keep = ("okta_users", "assigned_users", "workers", "users_pulled", "history_rows_written", "findings",
            "pages", "requests", "timings", "rate_limits")
    return {"wall": round(wall, 3), "cpu": round(cpu, 3), "stages": {k: round(v, 3) for k, v in stages.items()},
            "stage_cpu": {k: round(v, 3) for k, v in stage_cpu.items()},
            "counts": {k: counts.get(k) for k in keep}}


def plain(full: bool) -> dict:
    from okta_flex_sync.jobs.nightly import NightlySync, run_nightly
    from okta_flex_sync.settings import load_settings

    stages: dict = {}
    stage_cpu: dict = {}
    _time_stages(NightlySync, stages, stage_cpu)
    with RssSampler() as rss:
        out = measure(lambda: run_nightly(load_settings(), full=full), os.environ["DATABASE_URL"], stages, stage_cpu)
    out["peak_rss_mb"] = rss.peak_mb()
    out["landing_process_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    return out


def prefect_pair(full: bool, second_database_url: str) -> dict:
    """The flow first, then the plain run (which so gets the warmer caches: the overhead found
    is, if anything, too high)."""
    from prefect.testing.utilities import prefect_test_harness

    from okta_flex_sync.jobs.nightly import NightlySync, run_nightly
    from okta_flex_sync.settings import load_settings

    stages: dict = {}
    _time_stages(NightlySync, stages)
    first_database_url = os.environ["DATABASE_URL"]
    with prefect_test_harness(server_startup_timeout=120):
        from okta_flex_sync.flows.nightly import nightly_sync

        flow = measure(lambda: nightly_sync(full=full), first_database_url, stages)
        plain_run = measure(lambda: run_nightly(load_settings(), full=full), second_database_url, stages)
    outside = {name: run["wall"] - sum(run["stages"].values()) for name, run in (("flow", flow), ("plain", plain_run))}
    return {"prefect": flow, "plain": plain_run,
            "overhead": round(flow["wall"] - plain_run["wall"], 3),
            "orchestration": round(outside["flow"] - outside["plain"], 3)}


def users_listing() -> dict:
    from okta_flex_sync.clients.okta import OktaClient
    from okta_flex_sync.settings import load_settings

    with OktaClient.from_settings(load_settings()) as okta:
        wall, pages, items = time.perf_counter(), 0, 0
        for page in okta.iter_user_pages():
            pages, items = pages + 1, items + len(page.items)
        return {"wall": round(time.perf_counter() - wall, 3), "pages": pages, "items": items}


def pure_alone(database_url: str, repeat: int = 3) -> dict:
    return min((_pure_once(database_url) for _ in range(repeat)), key=lambda r: r["pure_total"])


def _pure_once(database_url: str) -> dict:
    from okta_flex_sync.core.history import diff_history
    from okta_flex_sync.core.normalize import (
        normalize_assignment,
        normalize_user,
        parse_worker,
    )
    from okta_flex_sync.core.reconcile import reconcile
    from okta_flex_sync.settings import load_settings
    from okta_flex_sync.storage import runs as runs_db
    from okta_flex_sync.storage import staging as staging_db
    from okta_flex_sync.storage.engine import make_engine

    settings = load_settings()
    valid, role_source = settings.valid_role_set, settings.role_source
    engine = make_engine(database_url)
    spent = dict.fromkeys(("normalize", "history_diff", "reconcile"), 0.0)

    def timed(stage, fn, *args, **kwargs):
        started = _cpu()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[stage] += _cpu() - started

    try:
        with engine.connect() as conn:
            run = runs_db.last_run(conn)
            assignments: dict = {}
            for doc in staging_db.iter_raw_pages(conn, run["run_id"], "assignments"):
                for a in timed("normalize", lambda d: [normalize_assignment(i, valid_roles=valid) for i in d], doc):
                    assignments[a.okta_user_id] = a
            users: dict = {}
            for doc in staging_db.iter_raw_pages(conn, run["run_id"], "users"):
                for u in timed("normalize", lambda d: [normalize_user(
                        i, valid_roles=valid, image_url_attribute=settings.image_url_attribute) for i in d], doc):
                    if u.okta_user_id in assignments:
                        users[u.okta_user_id] = u
            workers = []
            for doc in staging_db.iter_raw_pages(conn, run["run_id"], "workers"):
                workers += timed("normalize", lambda d: [parse_worker(w) for w in d["workers"] if w.get("attributes")
                                                         is not None], doc)
    finally:
        engine.dispose()
    timed("history_diff", diff_history, {}, users, assignments, role_source=role_source, observed_at=run["started_at"])
    timed("reconcile", reconcile, users, list(assignments.values()), workers, role_source=role_source,
          valid_roles=valid)
    out = {k: round(v, 3) for k, v in spent.items()}
    out["pure_total"] = round(sum(spent.values()), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("plain", "prefect", "listing", "pure", "floor"), default="plain")
    parser.add_argument("--full", action="store_true", help="force a full pull")
    parser.add_argument("--second-database-url", help="database of the plain run in --mode prefect")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.mode == "listing":
        result = users_listing()
    elif args.mode == "floor":
        result = floor.measure(dict(os.environ))
    elif args.mode == "pure":
        result = pure_alone(os.environ["DATABASE_URL"])
    elif args.mode == "prefect":
        result = prefect_pair(args.full, args.second_database_url)
    else:
        result = plain(args.full)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
