"""The one place secrets are scrubbed from text: log records, error messages, stored run errors.

Stdlib only, so every layer (clients, jobs, logging, the CLI) can use it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

_AUTH_PATTERNS = [
    re.compile(r"\b(SSWS|Bearer|Basic|DPoP)(\s+)[A-Za-z0-9._~+/=\-]+", re.I),
    re.compile(r"(client_assertion=)()[^&\s]+", re.I),
    re.compile(r"(access_token\"?\s*[:=]\s*\"?)()[^\"&\s]+", re.I),
]


def redact(text: str, secrets: Iterable[str] = (), *, limit: int | None = None) -> str:
    """`text` without the known secret values and anything shaped like a credential
    (`SSWS …`, `Bearer …`, `Basic …`, a client assertion or access token).

    With `limit`, also one line of at most `limit` characters (for messages built from
    server responses)."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    for pat in _AUTH_PATTERNS:
        text = pat.sub(lambda m: f"{m.group(1)}{m.group(2) or ''}***", text)
    if limit is not None:
        text = " ".join(text.split())
        if len(text) > limit:
            text = text[: limit - 1] + "…"
    return text
