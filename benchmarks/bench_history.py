"""Data-team benchmark: a 1,000,000-row role history of 100,000 users, built by bulk insert
(not through the pipeline), then, each in a fresh child process, a snapshot, 30 days of changes
and the snapshot's Parquet export, with peak RSS, on SQLite and Postgres.

    .venv/bin/python benchmarks/bench_history.py [--rows 1000000] [--users 100000]
        [--databases sqlite,postgres] [--postgres-url URL] [--json FILE]

Targets: snapshot < 2 s, changes < 2 s, Parquet export < 3 s, peak RSS < 500 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from okta_flex_sync.models.records import VALID_TO_CURRENT
from okta_flex_sync.models.tables import role_history  # noqa: E402
from okta_flex_sync.storage.bulk import insert_tuples
from okta_flex_sync.storage.engine import make_engine, upgrade  # noqa: E402

TARGETS = {"snapshot_s": 2.0, "changes_s": 2.0, "parquet_s": 3.0, "peak_rss_mb": 500.0}
NOW = datetime(2026, 12, 1)
ROLES = ["agent", "agent", "agent", "admin,agent", "agent,supervisor", "supervisor", "admin"]
COLS = ["okta_user_id", "login", "app_username", "status", "assigned", "roles", "full_name", "email",
        "valid_from", "valid_to", "run_id", "source"]


def history_rows(rows: int, users: int, seed: int = 14):
    """`rows` contiguous periods spread over `users` users, the last ending in the open period."""
    rnd = random.Random(seed)
    per_user = rows // users
    start = NOW - timedelta(days=730)
    for u in range(users):
        uid, login = f"00u{u:07d}", f"user{u}@example.com"
        moments = sorted(start + timedelta(seconds=rnd.randrange(730 * 86400)) for _ in range(per_user))
        for i, moment in enumerate(moments):
            end = moments[i + 1] if i + 1 < per_user else VALID_TO_CURRENT
            assigned = rnd.random() > 0.05
            yield (uid, login, login, "ACTIVE" if assigned else "SUSPENDED", assigned,
                   rnd.choice(ROLES) if assigned else "", f"User {u}", login, moment, end, f"run{i}", "nightly")


def build(url: str, rows: int, users: int) -> float:
    engine = make_engine(url)
    upgrade(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        insert_tuples(conn, role_history, COLS, history_rows(rows, users))
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


def measure(url: str, out_dir: str) -> dict:
    """Runs in a fresh child: the three operations and this process's peak RSS."""
    from okta_flex_sync.analytics import frames
    from okta_flex_sync.analytics.export import write

    engine = make_engine(url)
    figures = {}
    t = time.perf_counter()
    snap = frames.snapshot(engine, NOW)
    figures["snapshot_s"], figures["snapshot_rows"] = time.perf_counter() - t, len(snap)
    t = time.perf_counter()
    changes = frames.changes(engine, NOW - timedelta(days=30), NOW)
    figures["changes_s"], figures["changes_rows"] = time.perf_counter() - t, len(changes)
    t = time.perf_counter()
    write(frames.snapshot(engine, NOW), "parquet", Path(out_dir) / "snapshot.parquet", stdout=None)
    figures["parquet_s"] = time.perf_counter() - t
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    engine.dispose()
    return figures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--databases", default="sqlite,postgres")
    ap.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL",
                                                             "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.out)))
        return 0
    results, missed = {}, 0
    with tempfile.TemporaryDirectory() as tmp:
        for db in [d.strip() for d in args.databases.split(",") if d.strip()]:
            admin = scratch = None
            if db == "sqlite":
                url = f"sqlite:///{tmp}/history.db"
            else:
                admin = make_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
                scratch = f"ofs_bench_history_{uuid.uuid4().hex[:8]}"
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{scratch}"'))
                url = admin.url.set(database=scratch).render_as_string(hide_password=False)
            try:
                built = build(url, args.rows, args.users)
                child = subprocess.run([sys.executable, __file__, "--measure", url, "--out", tmp],
                                       capture_output=True, text=True, check=True)
                figures = {"build_s": built, **json.loads(child.stdout.strip().splitlines()[-1])}
            finally:
                if scratch:
                    with admin.connect() as conn:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
                    admin.dispose()
            results[db] = figures
            print(f"{db}: {args.rows:,} history rows of {args.users:,} users built in {figures['build_s']:.1f} s; "
                  f"snapshot {figures['snapshot_rows']:,} rows, 30-day changes {figures['changes_rows']:,} rows")
            for key, target in TARGETS.items():
                ok = figures[key] < target
                missed += not ok
                unit = "MB" if key.endswith("mb") else "s"
                print(f"  [{'ok' if ok else 'MISSED'}] {key[:-2] if unit == 's' else 'peak RSS'} "
                      f"{figures[key]:.2f} {unit} (target < {target:g} {unit})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
