"""Simulator configuration and the fake credentials derived from its seed."""
from __future__ import annotations

from dataclasses import dataclass, field

from simulator.ids import b62, hex32, key_of, okta_id, org_suffix, MAX_USERS

# Requests per minute per bucket (Okta Workforce defaults from API_NOTES §1.6).
DEFAULT_RATE_LIMITS = {
    "users": 600,       # GET /api/v1/users
    "user": 2000,       # GET /api/v1/users/{idOrLogin}
    "apps": 100,        # /api/v1/apps/*
    "logs": 120,        # /api/v1/logs
    "token": 600,       # POST /oauth2/v1/token
    "default": 1200,    # any other /api/v1 path
    "taskrouter": 3000,  # every TaskRouter call
}


class SimulatorConfigError(ValueError):
    """A SimulatorConfig value is out of range."""


@dataclass
class SimulatorConfig:
    """What org to simulate and how hostile the network around it should be."""

    users: int = 1000
    seed: int = 42
    assigned: int | None = None
    workers: int | None = None
    latency_ms: float = 0.0
    fault_rate: float = 0.0
    rate_limits: dict[str, int] | None = None
    concurrency_limit: int = 75
    null_attributes_fraction: float = 0.05
    drift: bool = True
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.users <= MAX_USERS:
            raise SimulatorConfigError(f"users must be between 0 and {MAX_USERS}")
        if self.assigned is not None and self.assigned < 0:
            raise SimulatorConfigError("assigned must be >= 0")
        if self.workers is not None and self.workers < 0:
            raise SimulatorConfigError("workers must be >= 0")
        check_faults(self.fault_rate, self.latency_ms, self.rate_limits)
        if not 0 <= self.null_attributes_fraction <= 1:
            raise SimulatorConfigError("null_attributes_fraction must be between 0 and 1")
        if self.concurrency_limit < 1:
            raise SimulatorConfigError("concurrency_limit must be >= 1")

    def merged_rate_limits(self) -> dict[str, int]:
        return {**DEFAULT_RATE_LIMITS, **(self.rate_limits or {})}


def check_faults(fault_rate, latency_ms, rate_limits) -> None:
    """Validate runtime-changeable fault settings (None means "leave unchanged")."""
    if fault_rate is not None and not 0 <= fault_rate <= 1:
        raise SimulatorConfigError("fault_rate must be between 0 and 1")
    if latency_ms is not None and latency_ms < 0:
        raise SimulatorConfigError("latency_ms must be >= 0")
    for bucket, limit in (rate_limits or {}).items():
        if bucket not in DEFAULT_RATE_LIMITS:
            raise SimulatorConfigError(f"unknown rate-limit bucket {bucket!r}; known: {sorted(DEFAULT_RATE_LIMITS)}")
        if not isinstance(limit, int) or limit < 1:
            raise SimulatorConfigError(f"rate limit for {bucket!r} must be a positive integer")


@dataclass(frozen=True)
class Credentials:
    """Obviously fake credentials, a pure function of the seed. Secrets never appear in repr."""

    okta_api_token: str = field(repr=False)
    flex_app_id: str
    account_sid: str
    auth_token: str = field(repr=False)
    api_key_sid: str
    api_key_secret: str = field(repr=False)
    workspace_sid: str
    oauth_client_id: str
    oauth_key_id: str


def make_credentials(seed: int, flex_app_id: str) -> Credentials:
    k = key_of("credentials", seed)
    return Credentials(
        okta_api_token="00SIMFAKE" + b62(int(hex32(k, 1), 16), 22) + "sim",
        flex_app_id=flex_app_id,
        account_sid="AC" + hex32(k, 2),
        auth_token="simfake" + hex32(k, 3)[:25],
        api_key_sid="SK" + hex32(k, 4),
        api_key_secret="simfake" + b62(int(hex32(k, 5), 16), 25),
        workspace_sid="WS" + hex32(k, 6),
        oauth_client_id=okta_id("0oa", key_of("client", seed), 2, org_suffix(seed)),
        oauth_key_id="sim-key-" + hex32(k, 7)[:12],
    )
