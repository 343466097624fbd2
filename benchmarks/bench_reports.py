"""Issue 15's report benchmark: every report format for 20,000 findings.

    python benchmarks/bench_reports.py                    # 20,000 findings, fastest of 3
    python benchmarks/bench_reports.py --findings 500 --repeat 1
    python benchmarks/bench_reports.py --keep /tmp/r      # keep the written files to look at

Builds a drift.json document the way `okta-flex-sync report` does (findings with their delta, a
resolved list, a 30-run trend, console links) from generated findings shaped like a large org's
drift: pairs of roles_mismatch + privilege_escalation on one worker, deactivated users, orphans,
name/email/image drift, missing workers, and a few hostile values.  Then times building the
document and writing each format (render + atomic write), and checks the targets: all formats
under 2 s together, the HTML under 10 MB.  Exit code 1 when a target is missed and --strict.
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from okta_flex_sync.models.records import FINDING_KINDS  # noqa: E402
from okta_flex_sync.reports.document import FILE_NAMES, build_report  # noqa: E402
from okta_flex_sync.reports.files import RENDERERS, atomic_write  # noqa: E402

TARGET_SECONDS = 2.0
TARGET_HTML_BYTES = 10 * 1024 * 1024
WORKSPACE = "WS" + "0c413c08689c9eae58c4796b88f58fae"
HOSTILE = ["<script>alert(1)</script>", "=HYPERLINK(\"http://x\")", "\u202eevil\x00", "A" * 5000]


def sid(prefix: str, n: int) -> str:
    return f"{prefix}{n:032x}"


def findings(n: int, seed: int = 15) -> list[dict]:
    """n findings; about 75% persisting from earlier runs, the rest new."""
    rng = random.Random(seed)
    first_seen = datetime(2026, 11, 1, 2)
    out: list[dict] = []
    i = 0
    while len(out) < n:
        i += 1
        user, login, worker = f"00u{i:017d}", f"agent.{i}@example.com", sid("WK", i)
        if i % 97 == 0:
            login = rng.choice(HOSTILE) + login
        roll = rng.random()
        base = {"okta_user_id": user, "login": login, "app_username": login, "worker_sid": worker}
        if roll < 0.25:
            batch = [{"kind": "roles_mismatch", "severity": "medium", "field": "roles", "expected": "agent",
                      "actual": "admin,agent"},
                     {"kind": "privilege_escalation", "severity": "high", "field": "roles", "expected": "agent",
                      "actual": "admin"}]
        elif roll < 0.35:
            batch = [{"kind": "deactivated_user_has_worker", "severity": "high", "actual": "SUSPENDED"}]
        elif roll < 0.45:
            batch = [{"kind": "orphan_worker", "severity": "medium", "expected": "matched by email"}]
        elif roll < 0.75:
            batch = [{"kind": "full_name_mismatch", "severity": "low", "field": "full_name",
                      "expected": f"Agent {i} Smith", "actual": f"Agent {i}"},
                     {"kind": "email_mismatch", "severity": "low", "field": "email",
                      "expected": login, "actual": f"old.{i}@example.com"}]
        elif roll < 0.85:
            batch = [{"kind": "image_url_mismatch", "severity": "low", "field": "image_url",
                      "expected": f"https://img.example.com/{i}.png", "actual": None}]
        elif roll < 0.95:
            batch = [{"kind": "missing_worker", "severity": "info"}]
            base = {**base, "worker_sid": None}
        else:
            batch = [{"kind": "invalid_role", "severity": "medium", "field": "userType", "expected": "agent",
                      "actual": "superuser"}]
        persisting = rng.random() < 0.75
        for b in batch:
            out.append({**base, **b, "status": "persisting" if persisting else "new",
                        "first_seen_run_id": "20261101T020000Z-00000000" if persisting else "run-now",
                        "first_seen_at": first_seen if persisting else datetime(2026, 12, 3, 2)})
    return out[:n]


def trend(runs: int = 30) -> list[dict]:
    start = datetime(2026, 11, 3, 2, tzinfo=timezone.utc)
    return [{"run_id": f"2026{11 + (d + 3) // 31:02d}{(d + 3) % 31 + 1:02d}T020000Z-{d:08x}",
             "started_at": start + timedelta(days=d),
             "summary": dict.fromkeys(FINDING_KINDS, 1500 + d * 10),
             "roles": {"admin": 40, "supervisor": 900, "agent": 14000},
             "delta": {"new": 200 + d, "resolved": 150, "persisting": 15000}} for d in range(runs)]


def measure(n: int, out_dir: Path) -> dict:
    rows = findings(n)
    resolved = findings(n // 10, seed=16)
    started = time.perf_counter()
    doc = build_report("20261203T020000Z-bench000", datetime(2026, 12, 3, 2, 5, tzinfo=timezone.utc),
                       {"okta_users": 100_000, "assigned_users": 15_000, "workers": 15_000}, rows,
                       trend=trend(), skipped=[{"source": "users", "id": f"00u{i}", "reason": "kept, but bad"}
                                               for i in range(200)],
                       delta={"previous_run_id": "20261202T020000Z-prev0000"}, resolved=resolved,
                       org_url="https://acme.okta.com", workspace_sid=WORKSPACE, max_changes=25)
    figures = {"build": time.perf_counter() - started}
    out_dir.mkdir(parents=True, exist_ok=True)
    for fmt, render in RENDERERS.items():
        t = time.perf_counter()
        data = render(doc).encode("utf-8")
        atomic_write(out_dir / FILE_NAMES[fmt], data)
        figures[fmt] = time.perf_counter() - t
        figures[f"{fmt}_bytes"] = len(data)
    figures["total"] = figures["build"] + sum(figures[f] for f in RENDERERS)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="report the fastest of N runs")
    parser.add_argument("--keep", type=Path, help="write the reports here instead of a temp directory")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-reports-"))
    try:
        runs = [measure(args.findings, args.keep or tmp) for _ in range(max(1, args.repeat))]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = min(runs, key=lambda r: r["total"])
    print(f"{args.findings:,} findings, fastest of {len(runs)}:")
    print(f"  build document  {best['build']:6.3f} s")
    for fmt in RENDERERS:
        print(f"  {FILE_NAMES[fmt]:<15} {best[fmt]:6.3f} s  {best[f'{fmt}_bytes'] / 1e6:7.2f} MB")
    print(f"  total           {best['total']:6.3f} s")
    ok_time = best["total"] < TARGET_SECONDS
    ok_size = best["html_bytes"] < TARGET_HTML_BYTES
    print(f"[{'ok' if ok_time else 'MISSED'}] all reports under {TARGET_SECONDS:g} s ({best['total']:.2f} s)")
    print(f"[{'ok' if ok_size else 'MISSED'}] HTML under 10 MB ({best['html_bytes'] / 1024 / 1024:.2f} MiB)")
    return 1 if args.strict and not (ok_time and ok_size) else 0


if __name__ == "__main__":
    sys.exit(main())
