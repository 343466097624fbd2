"""This run's share of Okta's org-wide rate-limit buckets (`OKTA_RATE_LIMIT_PERCENT`).

Okta's per-minute buckets belong to the whole org: every integration draws on them, and a job
that spends a whole bucket starves the others.  `BucketShare` lets one run send at most
`percent` of a bucket's `X-Rate-Limit-Limit` in each window, counting requests still in flight,
and remembers the most it sent in any one window.  No httpx here: it is fed numbers.
"""
from __future__ import annotations

import math
import threading

RESET_MARGIN_SECONDS = 1.0  # Okta's reset is whole epoch seconds; start the next window safely after it
FALLBACK_WINDOW_SECONDS = 60.0  # Okta's windows are a minute long; used only when no reset was ever sent
POLL_SECONDS = 0.05  # how long to hold a request while the window's answer is still in flight


def share_bucket_name(bucket: str) -> str:
    """`users`, `apps`, `logs`, `users/*`, ... for a bucket path such as `/api/v1/apps/*`."""
    name = bucket.strip("/")
    for prefix in ("api/v1/", "oauth2/v1/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    if name.endswith("/*") and name[:-2] in ("apps", "logs"):
        name = name[:-2]
    return name or "/"


class BucketShare:
    """At most `percent` of one bucket's limit per window, requests in flight included.

    `acquire(now)` returns 0 when a request may go (and counts it) or the seconds to wait before
    asking again; `release(limit, reset, now)` ends a request with the budget headers of its
    answer (`reset` in local epoch seconds, None when absent).  Thread-safe.
    """

    def __init__(self, percent: float):
        if not 0 < percent <= 100:
            raise ValueError("percent must be in 1..100")
        self.percent = percent
        self.limit: int | None = None
        self.window_end: float | None = None  # local epoch seconds; None until an answer tells it
        self.window_start: float | None = None
        self.used = 0  # sent in the current window, in flight included
        self.in_flight = 0
        self.max_used = 0
        self.answered = False  # an answer came back (with or without budget headers)
        self._lock = threading.Lock()

    def allowed(self) -> int | None:
        """Requests this run may send per window, or None while the limit is unknown."""
        if self.limit is None:
            return None
        return max(1, math.floor(self.limit * self.percent / 100))

    def acquire(self, now: float) -> float:
        with self._lock:
            self._roll(now)
            allowed = self.allowed()
            if allowed is None:
                # The budget is unknown until the first answer: one request at a time until then;
                # a server that never sends the headers is not throttled here at all.
                if self.in_flight and not self.answered:
                    return POLL_SECONDS
            elif self.used >= allowed:
                if self.window_end is None:
                    if self.window_start is not None and self.in_flight == 0:
                        return max(POLL_SECONDS, self.window_start + FALLBACK_WINDOW_SECONDS - now)
                    return POLL_SECONDS  # an answer in flight will say when this window ends
                return self.window_end - now + RESET_MARGIN_SECONDS
            if self.window_start is None:
                self.window_start = now
            self.used += 1
            self.in_flight += 1
            self.max_used = max(self.max_used, self.used)
            return 0.0

    def release(self, limit: int | None, reset: float | None, now: float) -> None:
        with self._lock:
            self.in_flight = max(0, self.in_flight - 1)
            self.answered = True
            if limit is not None and limit > 0:  # 0/0 is a concurrency 429, not this bucket's budget
                self.limit = limit
                if reset is not None and reset > now and (self.window_end is None or reset > self.window_end + 0.5):
                    self.window_end = reset

    def _roll(self, now: float) -> None:
        if self.window_end is not None and now >= self.window_end + RESET_MARGIN_SECONDS:
            self.window_end = None
            self.window_start = None
            self.used = 0
        elif self.window_end is None and self.window_start is not None and self.in_flight == 0 \
                and now >= self.window_start + FALLBACK_WINDOW_SECONDS:
            self.window_start = None  # the server never said when windows end: assume a minute
            self.used = 0

    def usage(self) -> dict:
        with self._lock:
            return {"limit": self.limit, "max_used": self.max_used, "percent": self.percent}


class RateShares:
    """One `BucketShare` per bucket name, created on first use."""

    def __init__(self, percent: float):
        self.percent = percent
        self._shares: dict[str, BucketShare] = {}
        self._lock = threading.Lock()

    def share(self, bucket: str) -> BucketShare:
        name = share_bucket_name(bucket)
        with self._lock:
            if name not in self._shares:
                self._shares[name] = BucketShare(self.percent)
            return self._shares[name]

    def usage(self) -> dict[str, dict]:
        """Per bucket: its limit, the most this run sent in any one window, and the share."""
        with self._lock:
            shares = dict(self._shares)
        return {name: share.usage() for name, share in sorted(shares.items()) if share.max_used}
