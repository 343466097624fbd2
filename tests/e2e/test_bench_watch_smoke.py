"""benchmarks/bench_watch.py keeps working: a small org, short intervals, every figure reported."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_watch_runs_and_reports_every_figure(tmp_path):
    out = tmp_path / "watch.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_watch.py"), "--users", "2000",
                           "--interval", "2", "--idle-polls", "2", "--json", str(out)],
                          check=False, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["users"] == 2000 and doc["idle_poll"]["max_requests"] == 1
    assert doc["idle_poll"]["max_requests_served"] == 1
    assert doc["suspension_reported"]["polls"] == 1 and doc["roles_stripped"]["polls"] == 1
    assert set(doc["targets"]) == {"idle poll under 1 s", "idle poll at most 2 requests",
                                   "suspension reported within two intervals",
                                   "roles stripped within two intervals (--apply-high)"}
    assert all(doc["targets"].values()), doc["targets"]
