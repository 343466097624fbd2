"""The HTTP layer against the in-process simulator, and the recorded cassettes' hygiene."""
from __future__ import annotations

import json

import httpx
import pytest
from cassette_support import CASSETTES
from conftest import FAKE_SECRETS

# --- cassettes must never hold a credential ---------------------------------------------------

CREDENTIAL_MARKERS = ("SSWS ", "Basic ", "Bearer ey", "simfake", "00SIMFAKE", "PRIVATE KEY", "client_assertion=",
                      "!!binary")  # a base64 body would hide anything from this scan


def leaked(text: str, secrets: dict[str, str]) -> list[str]:
    """Labels (never values) of the secrets or credential markers found in `text`."""
    found = [label for label, value in secrets.items() if value and value in text]
    return found + [f"marker {m!r}" for m in CREDENTIAL_MARKERS if m in text]


def simulator_secrets() -> dict[str, str]:
    from simulator import SimulatorConfig, start_simulator

    seed = json.loads((CASSETTES / "simulator.json").read_text())["seed"]
    with start_simulator(SimulatorConfig(users=1, seed=seed)) as sim:
        return {"okta api token": sim.okta_api_token, "auth token": sim.auth_token,
                "api key secret": sim.api_key_secret}


@pytest.mark.parametrize("text, expected", [
    ("authorization: SSWS abc", ["marker 'SSWS '"]),
    ("authorization: Basic QUM6eA==", ["marker 'Basic '"]),
    ('{"access_token":"simfake.x"}', ["marker 'simfake'"]),
    ("token=s3cr3t-value", ["fake"]),
    ("body: !!binary |\n  U1NXUyA=", ["marker '!!binary'"]),
    ('{"access_token":"REDACTED"}', []),
])
def test_leak_scanner_catches_credentials(text, expected):
    assert leaked(text, {"fake": "s3cr3t-value"}) == expected


def test_cassettes_hold_no_secrets():
    files = sorted(p for p in CASSETTES.rglob("*.yaml"))
    assert files, "no cassettes found under tests/cassettes"
    secrets = {**{f"conftest {k}": v for k, v in FAKE_SECRETS.items()}, **simulator_secrets()}
    problems = {str(p.relative_to(CASSETTES)): found for p in files if (found := leaked(p.read_text(), secrets))}
    assert not problems, f"cassettes contain credentials: {problems}"


def test_read_responses_are_freed_without_the_cyclic_collector(simulator, monkeypatch):
    """httpx 0.28 ties each Response to its stream in a reference cycle; left alone, every page
    body waited for a cyclic GC pass (hundreds of MB at 1M users with the run's GC thresholds)."""
    import gc

    from okta_flex_sync.clients.okta import OktaClient
    from okta_flex_sync.settings import load_settings

    for k, v in simulator.env().items():
        monkeypatch.setenv(k, v)
    with OktaClient.from_settings(load_settings()) as okta:
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # keep what the collector finds, to look at it
        try:
            pages = list(okta.iter_user_pages())
            gc.collect()
            # Only the client's own garbage counts: the in-process simulator makes some too, and
            # so may other clients in this process (Prefect's, in a background thread).
            responses = [o for o in gc.garbage if isinstance(o, httpx.Response)
                         and getattr(o, "_request", None) is not None
                         and str(o._request.url).startswith(f"{simulator.url}/api/v1/users")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert len(pages) >= 2 and responses == []
