"""The bundled simulator as a child process, driven through its `/__sim/` control endpoints.

It runs in its own process so the pipeline's memory and CPU are measured alone, and so a 1M-user
org's server work happens on the other core, as a real Okta would.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Self

import httpx

UNLIMITED = 1_000_000  # requests per minute: far above anything a run sends
RATE_LIMIT_BUCKETS = ("users", "user", "apps", "logs", "token", "default", "taskrouter")


class SimulatorStartError(RuntimeError):
    """The simulator process exited or printed nothing usable."""


class SimulatorProcess:
    """`python -m simulator` serving one generated org on a free localhost port."""

    def __init__(self, *, users: int, assigned: int, workers: int, seed: int = 42, start_timeout: float = 300.0):
        self.args = ["--users", str(users), "--assigned", str(assigned), "--workers", str(workers),
                     "--seed", str(seed), "--port", "0"]
        self.users = users
        self.start_timeout = start_timeout
        self.info: dict = {}
        self._proc: subprocess.Popen | None = None
        self._http: httpx.Client | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait for the JSON line with its URL and credentials."""
        self._proc = subprocess.Popen([sys.executable, "-m", "simulator", *self.args], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
        line = _read_line(self._proc, self.start_timeout)
        try:
            self.info = json.loads(line)
        except ValueError:
            self.stop()
            raise SimulatorStartError(f"the simulator printed no JSON line (got {line[:80]!r})") from None
        self._http = httpx.Client(base_url=self.info["url"], timeout=60)

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def env(self) -> dict[str, str]:
        """The settings that point okta-flex-sync at this simulator."""
        keys = ("OKTA_ORG_URL", "OKTA_API_TOKEN", "OKTA_FLEX_APP_ID", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN",
                "TWILIO_WORKSPACE_SID", "TASKROUTER_BASE_URL")
        return {k: self.info[k] for k in keys}

    # --- control endpoints ------------------------------------------------------------------

    def configure(self, *, latency_ms: float = 0.0, rate_limits: dict[str, int] | None = None) -> dict:
        """Set latency and rate limits; buckets not named are lifted to `UNLIMITED`.  Setting a
        bucket's limit also starts its one-minute window afresh, so scenarios don't share one."""
        limits = {b: UNLIMITED for b in RATE_LIMIT_BUCKETS}
        limits.update(rate_limits or {})
        return self._post("/__sim/faults", {"latency_ms": latency_ms, "fault_rate": 0.0, "rate_limits": limits})

    def reset_stats(self) -> None:
        self._post("/__sim/reset-stats", {})

    def stats(self) -> dict:
        response = self._http.get("/__sim/stats")
        response.raise_for_status()
        return response.json()

    def mutate(self, *, fraction_of_assigned: float, seed: int = 1) -> list[str]:
        """Change the userType or last name of that fraction of the assigned users."""
        return self._post("/__sim/mutate", {"fraction": fraction_of_assigned, "seed": seed})["user_ids"]

    def change_user(self, user_id: str, **change) -> dict:
        """`POST /__sim/user`: e.g. `change_user(uid, status="SUSPENDED")` (emits the System Log event)."""
        return self._post("/__sim/user", {"user_id": user_id, **change})

    def cpu_seconds(self) -> float:
        """User + system CPU the simulator process has used so far (Linux /proc)."""
        try:
            with open(f"/proc/{self._proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError, AttributeError):
            return float("nan")

    def _post(self, path: str, payload: dict) -> dict:
        response = self._http.post(path, json=payload)
        response.raise_for_status()
        return response.json()


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first stdout line of `proc`, or SimulatorStartError after `timeout` seconds."""
    import selectors

    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                line = proc.stdout.readline()
                if line:
                    return line
            if proc.poll() is not None:
                raise SimulatorStartError(f"the simulator exited with code {proc.returncode} before serving")
    proc.kill()
    raise SimulatorStartError(f"the simulator did not start within {timeout:.0f} s")
