"""The benchmark script must keep working: run it on a tiny org and check what it reports.

Also the pieces of `benchmarks/` whose logic a broken run would hide: argument parsing and the
target checks.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench.py"

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench


@pytest.mark.slow
def test_quick_scenario_1_runs_and_reports_every_figure(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--scenarios", "1", "--json", str(out)],
                          check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    [result] = doc["results"]
    assert result["error"] is None
    assert result["scenario"] == "1"
    assert 0 < result["wall"] < 60
    assert result["peak_rss_mb"] > 10
    assert result["requests"] > 3 and result["throttled"] == 0
    assert result["details"]["users"] == bench.QUICK.users
    assert result["details"]["pure_seconds"]["pure_total"] >= 0
    assert set(result["details"]["stages"]) >= {"extract", "publish", "report"}
    assert doc["machine"]["cpus"] >= 1
    for header in ("wall s", "requests", "429s", "peak RSS MB"):
        assert header in proc.stdout


@pytest.mark.parametrize("argv, wanted", [
    ([], list(bench.ALL_SCENARIOS)),
    (["--quick"], [s for s in bench.ALL_SCENARIOS if s != "5b"]),
    (["--scenarios", "6,1"], ["1", "6"]),
    (["--quick", "--scenarios", "5b"], ["5b"]),
    (["--scenarios", " 3 , prefect "], ["3", "prefect"]),
])
def test_scenario_selection(argv, wanted):
    assert bench.parse_args(argv).wanted == wanted


@pytest.mark.parametrize("argv", [["--scenarios", "7"], ["--scenarios", "1,x"]])
def test_unknown_scenario_is_refused(argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def _run(wall=10.0, rss=100.0, pure=1.0, users_pages=501, listings=None, throttled=0, extract=None):
    return {"wall": wall, "cpu": wall, "peak_rss_mb": rss,
            "stages": {"extract": wall if extract is None else extract},
            "counts": {"pages": {"users": users_pages},
                       "timings": {"pure_total": pure, "listings": listings or {"users": wall}}},
            "sim": {"requests": 10, "429": throttled, "by_bucket": {}, "cpu": 1.0}, "load_average": [0, 0]}


class FakeBench:
    """Stands in for `bench.Bench`: hands out a canned child run, no processes."""

    def __init__(self, run, sizes=bench.FULL, results=None):
        self.sizes, self.results, self._run, self.s1_database = sizes, results or {}, run, None

    def sqlite_url(self, name):
        return f"sqlite:///{name}.db"

    def run(self, sim, database_url, mode="plain", **kwargs):
        if mode == "listing":
            return {"wall": 50.0}
        if mode == "pure":  # the pure stages alone take what the run says they took, less a third
            total = self._run["counts"]["timings"]["pure_total"] * 2 / 3
            return {"normalize": total, "history_diff": 0.0, "reconcile": 0.0, "pure_total": total}
        return self._run


class FakeSim:
    def mutate(self, *, fraction_of_assigned, seed=1):
        return [f"00u{i}" for i in range(round(fraction_of_assigned * bench.FULL.assigned))]


def _checks(result):
    return [ok for _, ok in result.checks]


@pytest.mark.parametrize("run, passed", [
    (_run(wall=15, rss=180, pure=1.5), [True, True, True, True]),
    (_run(wall=21, rss=180, pure=1.5), [False, True, True, True]),
    (_run(wall=15, rss=401, pure=1.5), [True, False, True, True]),
    (_run(wall=15, rss=180, pure=2.1), [True, True, True, False]),   # 1.4 s alone, 2.1 s in the run
    (_run(wall=15, rss=180, pure=3.3), [True, True, False, False]),
])
def test_scenario_1_targets(run, passed):
    assert _checks(bench.scenario_1(FakeBench(run), sim=None)) == passed


@pytest.mark.parametrize("listing, throttled, passed", [
    (50.0, 0, [True, True]),     # at the floor: 501 pages / 600 per minute = 50.1 s
    (55.0, 5, [True, True]),     # within 10%, a handful of 429s
    (56.0, 0, [False, True]),    # more than 10% over the floor
    (20.0, 6, [True, False]),    # too many 429s
])
def test_rate_limit_targets(listing, throttled, passed):
    run = _run(wall=listing + 5, listings={"users": listing}, throttled=throttled)
    assert _checks(bench.scenario_5(FakeBench(run), sim=None)) == passed


@pytest.mark.parametrize("extract, listings, passed", [   # the users listing alone: 50 s
    (54.0, {"users": 54.0, "workers": 20.0, "assignments": 4.0}, [True, True]),
    (56.0, {"users": 56.0, "workers": 20.0, "assignments": 4.0}, [False, True]),
    (54.0, {"users": 30.0, "workers": 30.0, "assignments": 5.0}, [True, False]),
])
def test_latency_targets(extract, listings, passed):
    run = _run(wall=extract + 4, extract=extract, listings=listings)
    result = bench.scenario_4(FakeBench(run), sim=FakeSim())
    assert _checks(result) == passed
    # the incremental night at the same latency is context, not a target (the fake answers with
    # the same run, so it "takes" as long as the full one)
    assert result.details["incremental_changed_users"] == 1000
    assert any("an incremental run at this latency after 1,000 users changed" in n for n in result.notes)
