"""Support shared by the client tests: a fake clock, cassette redaction and vcrpy settings.

Credentials never reach a cassette: the Authorization header and client_assertion are dropped,
known secrets and access tokens are masked, and the simulator's random port is replaced by
SIM_ORIGIN so next links stay same-origin on replay.
"""
import re
from pathlib import Path

from conftest import FAKE_SECRETS

CASSETTES = Path(__file__).parent / "cassettes"
SIM_ORIGIN = "http://simulator.test"
SIM_FILE = CASSETTES / "simulator.json"  # ids and the log window recorded with the cassettes
CASSETTE_SEED = 7
REDACTED = "REDACTED"
NOW = 1_700_000_000.0
live_secrets: set[str] = set()
live_origins: set[str] = set()


def remember(sim) -> None:
    """Register a live simulator's secrets and origin for scrubbing while recording."""
    live_secrets.update({sim.okta_api_token, sim.auth_token, sim.api_key_secret})
    live_origins.add(sim.url)


def scrub(text: str) -> str:
    for origin in live_origins:
        text = text.replace(origin, SIM_ORIGIN).replace(origin.split("://", 1)[1], SIM_ORIGIN.split("://", 1)[1])
    for secret in sorted(live_secrets | set(FAKE_SECRETS.values()), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return re.sub(r'"access_token"\s*:\s*"[^"]*"', f'"access_token":"{REDACTED}"', text)


def scrub_request(request):
    request.uri = scrub(request.uri)
    for name in list(request.headers):
        request.headers[name] = scrub(request.headers[name])
    if isinstance(request.body, bytes):
        request.body = scrub(request.body.decode("utf-8", "replace")).encode()
    return request


def scrub_response(response):
    body = response["body"]["string"]
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    response["body"]["string"] = scrub(text).encode()
    headers = {name: [scrub(v) for v in values] for name, values in response["headers"].items()}
    for name in list(headers):
        if name.lower() == "content-length":
            headers[name] = [str(len(response["body"]["string"]))]
        if name.lower() in ("set-cookie", "www-authenticate"):
            del headers[name]
    response["headers"] = headers
    return response


VCR_CONFIG = {
    "match_on": ["method", "path", "query"],  # the simulator's port changes between runs
    "filter_headers": ["authorization", "cookie"],
    "filter_post_data_parameters": ["client_assertion"],
    "before_record_request": scrub_request,
    "before_record_response": scrub_response,
    "decode_compressed_response": True,
}


class FakeTime:
    """A clock and sleep the clients accept, so waits are recorded instead of slept."""

    def __init__(self, start: float = NOW):
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
