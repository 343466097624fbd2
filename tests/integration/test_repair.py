"""Opt-in repair against the simulator: exactly the drifted workers and SSO-managed attributes change."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from okta_flex_sync.cli import app
from okta_flex_sync.jobs.nightly import run_nightly
from okta_flex_sync.jobs.repair import RepairRefused
from okta_flex_sync.models.tables import repair_audit
from okta_flex_sync.settings import load_settings
from okta_flex_sync.storage.engine import make_engine

pytestmark = pytest.mark.slow

SSO_KEYS = {"full_name", "email", "image_url", "roles"}
ATTRIBUTE_KINDS = {"roles_mismatch", "privilege_escalation", "full_name_mismatch", "email_mismatch",
                   "image_url_mismatch"}


def _members(raw: str) -> dict[str, str]:
    """Top-level key -> the exact JSON text of its value (an independent walk of the object text)."""
    from json.decoder import scanstring

    dec = json.JSONDecoder()
    out, i = {}, raw.index("{") + 1

    def ws(j):
        while raw[j] in " \t\r\n":
            j += 1
        return j

    i = ws(i)
    while raw[i] != "}":
        key, i = scanstring(raw, i + 1)
        i = ws(ws(i) + 1)  # skip ':'
        _, end = dec.raw_decode(raw, i)
        out[key] = raw[i:end]
        i = ws(end)
        if raw[i] == ",":
            i = ws(i + 1)
    return out


def test_apply_rewrites_only_sso_attributes_of_drifted_workers(fresh_simulator, sim_env, database_url):
    sim = fresh_simulator(users=400, seed=21, null_attributes_fraction=0.0)
    sim_env(sim, database_url)
    before = {w["sid"]: w for w in sim.org.workers()}
    settings = load_settings()

    outcome = run_nightly(settings, apply=True, max_changes=1000)
    drifted = {f["worker_sid"] for f in json.loads(outcome.report_paths["json"].read_text())["findings"]
               if f["kind"] in ATTRIBUTE_KINDS}
    assert drifted, "the simulated org has attribute drift"
    after = {w["sid"]: w for w in sim.org.workers()}
    changed = {sid for sid in before if before[sid]["attributes"] != after[sid]["attributes"]}
    assert changed == drifted
    assert outcome.repaired == len(drifted)
    assert sim.stats()["worker_updates"] == len(drifted)

    for sid in changed:
        old, new = _members(before[sid]["attributes"]), _members(after[sid]["attributes"])
        for key in set(old) - SSO_KEYS:
            assert new[key] == old[key], f"{sid}: non-SSO attribute {key} must be byte-identical"
        assert set(new) - SSO_KEYS == set(old) - SSO_KEYS

    # The next (dry) run sees no attribute drift on the repaired workers.
    again = run_nightly(settings)
    left = {f["worker_sid"] for f in json.loads(again.report_paths["json"].read_text())["findings"]
            if f["kind"] in ATTRIBUTE_KINDS}
    assert not (left & changed)

    engine = make_engine(database_url)
    with engine.connect() as conn:
        audit = conn.execute(select(repair_audit).where(repair_audit.c.run_id == outcome.run_id)).mappings().all()
    engine.dispose()
    applied = [a for a in audit if a["outcome"] == "applied"]
    assert {a["worker_sid"] for a in applied} == changed
    for a in applied:
        assert a["attributes_before"] == before[a["worker_sid"]]["attributes"]
        assert a["attributes_after"] == after[a["worker_sid"]]["attributes"]
        assert a["actor"] and a["applied_at"]


def test_dry_run_is_the_default_and_writes_nothing(fresh_simulator, sim_env):
    sim = fresh_simulator(users=200, seed=5)
    sim_env(sim)
    result = CliRunner().invoke(app, ["run", "--no-prefect"])
    assert result.exit_code == 0, result.output
    assert sim.stats()["worker_updates"] == 0


def test_max_changes_refuses_and_writes_nothing(fresh_simulator, sim_env, tmp_path):
    sim = fresh_simulator(users=400, seed=21)
    sim_env(sim)
    with pytest.raises(RepairRefused, match="more than --max-changes 1"):
        run_nightly(load_settings(), apply=True, max_changes=1)
    assert sim.stats()["worker_updates"] == 0
    assert list((tmp_path / "reports").glob("*/drift.html")), "reports are still written"

    result = CliRunner().invoke(app, ["run", "--no-prefect", "--apply", "--max-changes", "1"])
    assert result.exit_code == 1 and "max-changes" in result.output
    assert sim.stats()["worker_updates"] == 0


def test_worker_changed_since_listing_is_reread_before_write(fresh_simulator, sim_env, monkeypatch):
    """A worker fixed by an SSO login between listing and repair is not written again."""
    sim = fresh_simulator(users=400, seed=21, null_attributes_fraction=0.0)
    sim_env(sim)
    from okta_flex_sync.jobs import repair as repair_mod

    real_update = repair_mod._update

    def login_first(engine, taskrouter, run_id, action, who, **kw):
        # Simulate the agent's SSO login: Flex rewrites the attributes to what Okta says.
        worker, _ = taskrouter.fetch_worker(action.worker_sid)
        fixed = repair_mod.apply_plan_to_attributes(worker["attributes"], action)
        sim.org.update_worker(action.worker_sid, attributes=fixed)
        return real_update(engine, taskrouter, run_id, action, who, **kw)

    monkeypatch.setattr(repair_mod, "_update", login_first)
    updates_before = sim.stats()["worker_updates"]
    outcome = run_nightly(load_settings(), apply=True, max_changes=1000)
    assert outcome.repaired == 0
    assert sim.stats()["worker_updates"] == updates_before
