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
    # Issue 17: the floor, walked alone against the same simulator, and CPU per stage.
    details = result["details"]
    assert 0 < details["floor_wall"] < result["wall"]
    assert len(details["floor_walls"]) == 2
    assert details["floor_pages"] == {"users": details["pages"]["users"], "assignments": details["pages"]["assignments"],
                                      "workers": details["pages"]["workers"]}
    assert details["times_floor"] == round(result["wall"] / details["floor_wall"], 2)
    checks = dict(result["checks"])
    assert any(text.startswith("whole run at most 3x the floor") for text in checks)
    assert [ok for text, ok in checks.items() if text.startswith("the floor walked the run's pages")] == [True]
    per_k = details["stage_cpu_per_1000_users"]
    assert set(per_k) >= {"extract", "publish", "report"} and per_k["extract"] > 0
    assert per_k["extract"] == round(details["stage_cpu"]["extract"] * 1000 / bench.QUICK.users, 4)
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
        if mode == "floor":  # a bare client walking the run's pages in 5 s
            return {"wall": 5.0, "cpu": 1.0, "listings": {"users": 5.0}, "pages": dict(self._run["counts"]["pages"])}
        if mode == "pure":  # the pure stages alone take what the run says they took, less a third
            total = self._run["counts"]["timings"]["pure_total"] * 2 / 3
            return {"normalize": total, "history_diff": 0.0, "reconcile": 0.0, "pure_total": total}
        return self._run


class FakeSim:
    def mutate(self, *, fraction_of_assigned, seed=1):
        return [f"00u{i}" for i in range(round(fraction_of_assigned * bench.FULL.assigned))]


def _checks(result):
    return [ok for _, ok in result.checks]


# Checks of scenario 1: floor walked the run's pages, at most 3x the floor (5 s), under 20 s,
# under 400 MB, pure stages alone under 2 s, pure stages in the run under 2 s.
@pytest.mark.parametrize("run, passed", [
    (_run(wall=15, rss=180, pure=1.5), [True, True, True, True, True, True]),
    (_run(wall=16, rss=180, pure=1.5), [True, False, True, True, True, True]),   # 3.2x the floor
    (_run(wall=21, rss=180, pure=1.5), [True, False, False, True, True, True]),
    (_run(wall=15, rss=401, pure=1.5), [True, True, True, False, True, True]),
    (_run(wall=15, rss=180, pure=2.1), [True, True, True, True, True, False]),   # 1.4 s alone, 2.1 s in the run
    (_run(wall=15, rss=180, pure=3.3), [True, True, True, True, False, False]),
])
def test_scenario_1_targets(run, passed):
    result = bench.scenario_1(FakeBench(run), sim=None)
    assert _checks(result) == passed
    assert result.details["times_floor"] == round(run["wall"] / 5.0, 2)


@pytest.mark.parametrize("wall, passed", [(20.0, [True, True]), (20.5, [True, False])])
def test_stress_target_is_4x_the_floor(wall, passed):
    result = bench.scenario_stress(FakeBench(_run(wall=wall)), sim=None)
    assert _checks(result) == passed


def test_floor_that_walked_other_pages_is_flagged():
    class ShortFloor(FakeBench):
        def run(self, sim, database_url, mode="plain", **kwargs):
            out = super().run(sim, database_url, mode=mode, **kwargs)
            return {**out, "pages": {"users": 1}} if mode == "floor" else out
    result = bench.scenario_stress(ShortFloor(_run(wall=10.0)), sim=None)
    assert _checks(result) == [False, True]


# Checks of scenario 6: the floor walked the run's pages (no x-floor target), under 30 s, under
# 1.5 GB, at most 1.5x scenario 1's peak RSS.
@pytest.mark.parametrize("wall, rss, passed", [
    (29.0, 300.0, [True, True, True, True]),
    (31.0, 300.0, [True, False, True, True]),
    (29.0, 301.0, [True, True, True, False]),   # scenario 1 peaked at 200 MB: 1.5x is 300 MB
])
def test_big_org_targets(wall, rss, passed):
    first = bench.Result("1", "scenario 1", peak_rss_mb=200.0)
    result = bench.scenario_6(FakeBench(_run(wall=wall, rss=rss), results={"1": first}), sim=None)
    assert _checks(result) == passed


@pytest.mark.parametrize("listing, throttled, passed", [
    (50.0, 0, [True, True]),     # at the floor: 501 pages / 600 per minute = 50.1 s
    (55.0, 5, [True, True]),     # within 10%, a handful of 429s
    (56.0, 0, [False, True]),    # more than 10% over the floor
    (20.0, 6, [True, False]),    # too many 429s
])
def test_rate_limit_targets(listing, throttled, passed):
    run = _run(wall=listing + 5, listings={"users": listing}, throttled=throttled)
    assert _checks(bench.scenario_5(FakeBench(run), sim=None)) == passed


# The last check, the incremental night under a quarter of the full one at this latency, fails
# here: the fake answers the incremental run with the full run itself.
@pytest.mark.parametrize("extract, listings, passed", [   # the users listing alone: 50 s
    (54.0, {"users": 54.0, "workers": 20.0, "assignments": 4.0}, [True, True, False]),
    (56.0, {"users": 56.0, "workers": 20.0, "assignments": 4.0}, [False, True, False]),
    (54.0, {"users": 30.0, "workers": 30.0, "assignments": 5.0}, [True, False, False]),
])
def test_latency_targets(extract, listings, passed):
    run = _run(wall=extract + 4, extract=extract, listings=listings)
    result = bench.scenario_4(FakeBench(run), sim=FakeSim())
    assert _checks(result) == passed
    assert result.details["incremental_changed_users"] == 1000
    assert any("an incremental run at this latency after 1,000 users changed" in n for n in result.notes)
