"""benchmarks/bench_reports.py stays runnable (the 20,000-finding figures are in the README)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_report_benchmark_runs_small_and_keeps_the_reports(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_reports.py"), "--findings", "400",
                          "--repeat", "1", "--strict", "--keep", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("400 findings, fastest of 1:")
    for name in ("drift.json", "drift.csv", "drift.html", "drift.md"):
        assert re.search(rf"^  {re.escape(name)}\s+\d+\.\d{{3}} s\s+\d+\.\d\d MB$", out.stdout, re.M), name
        assert (tmp_path / name).stat().st_size > 0
    assert "[ok] all reports under 2 s" in out.stdout and "[ok] HTML under 10 MB" in out.stdout
