"""Rate limits, the concurrency gate, deterministic faults and request statistics."""
from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from simulator.ids import h64, key_of, unit

WINDOW_SECONDS = 60
FAULT_KINDS = ("rate_limit", "server_error", "unavailable", "slow", "drop")


@dataclass(frozen=True)
class Quota:
    """The state of one bucket after counting a request."""

    limit: int
    remaining: int
    reset: int  # UTC epoch seconds when the window ends
    allowed: bool


class RateLimiter:
    """Fixed one-minute windows per bucket, each starting at the bucket's first request.

    Anchoring the window at the first request (rather than the wall-clock minute) keeps tests
    deterministic: N+1 quick requests always see exactly one 429.
    """

    def __init__(self, limits: dict[str, int]) -> None:
        self._limits = dict(limits)
        self._windows: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def set_limits(self, limits: dict[str, int]) -> None:
        with self._lock:
            self._limits.update(limits)
            for bucket in limits:
                self._windows.pop(bucket, None)

    def limits(self) -> dict[str, int]:
        with self._lock:
            return dict(self._limits)

    def hit(self, bucket: str, now: float | None = None) -> Quota:
        """Count one request against `bucket` and say whether it is within the limit."""
        now = time.time() if now is None else now
        with self._lock:
            limit = self._limits.get(bucket, self._limits["default"])
            start, count = self._windows.get(bucket, (0.0, 0))
            if now >= start + WINDOW_SECONDS:
                start, count = now, 0
            count += 1
            self._windows[bucket] = (start, count)
        reset = int(start + WINDOW_SECONDS + 0.999)
        return Quota(limit, max(0, limit - count), reset, count <= limit)

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()


class ConcurrencyGate:
    """Counts in-flight requests; the first one over the limit is refused (Okta's 429)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_flight = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self._in_flight >= self.limit:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


class FaultPlan:
    """Which API request (by arrival number) fails and how: a pure function of (seed, n)."""

    def __init__(self, seed: int, rate: float) -> None:
        self.rate = rate
        self._k_hit = key_of("fault", seed)
        self._k_kind = key_of("fault-kind", seed)
        self._counter = 0
        self._lock = threading.Lock()

    def next_number(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def fault_for(self, n: int) -> str | None:
        if self.rate <= 0 or unit(self._k_hit, n) >= self.rate:
            return None
        return FAULT_KINDS[h64(self._k_kind, n) % len(FAULT_KINDS)]

    def reset(self) -> None:
        with self._lock:
            self._counter = 0


class Stats:
    """Thread-safe counters behind `sim.stats()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._requests: Counter = Counter()
            self._status: Counter = Counter()
            self._counts: Counter = Counter()

    def request(self, bucket: str) -> None:
        with self._lock:
            self._requests[bucket] += 1

    def response(self, status: int) -> None:
        with self._lock:
            self._status[status] += 1
            if status == 429:
                self._counts["429"] += 1

    def bump(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "requests": dict(self._requests),
                "status": dict(self._status),
                "429": self._counts["429"],
                "faults": self._counts["faults"],
                "worker_updates": self._counts["worker_updates"],
                "worker_creates": self._counts["worker_creates"],
                "worker_deletes": self._counts["worker_deletes"],
                "dropped_connections": self._counts["dropped_connections"],
            }
