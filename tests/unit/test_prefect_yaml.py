"""Every deployment in prefect.yaml points to an existing flow that has a docstring."""
import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


def _load_flow(entrypoint: str):
    path, name = entrypoint.split(":")
    spec = importlib.util.spec_from_file_location(f"_deploy_{Path(path).stem}", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_deployment_points_to_documented_flow(deployment):
    from prefect import Flow

    flow = _load_flow(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    assert flow.name == deployment["name"], "deployment names match flow names: 'flow/deployment' reads well"
    assert (flow.fn.__doc__ or "").strip(), f"{flow.name} needs a docstring (it becomes the deployment description)"
    params = set(flow.parameters.properties)
    assert set(deployment.get("parameters") or {}) <= params


def test_nightly_schedule_is_cron_with_iana_timezone():
    from zoneinfo import ZoneInfo

    nightly = next(d for d in DEPLOYMENTS if d["name"] == "nightly-sync")
    (schedule,) = nightly["schedules"]
    assert schedule["cron"] == "0 2 * * *"
    ZoneInfo(schedule["timezone"])  # raises for a non-IANA name


def test_no_secrets_in_prefect_yaml():
    text = (ROOT / "prefect.yaml").read_text().lower()
    for needle in ("token:", "secret:", "password", "auth_token", "api_token"):
        assert needle not in text
