"""benchmarks/bench_history.py runs end to end on a tiny history, so the script cannot rot."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_history_tiny(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_history.py"), "--rows", "3000",
                           "--users", "300", "--databases", "sqlite", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())["sqlite"]
    assert figures["snapshot_rows"] == 300
    assert 0 < figures["changes_rows"] < 3000
    assert "[ok] snapshot" in done.stdout and "[ok] parquet" in done.stdout
