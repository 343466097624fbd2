"""Plain request/response values shared by the Okta, TaskRouter and control handlers."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from email.message import Message
from urllib.parse import parse_qs, urlencode


@dataclass
class Request:
    method: str
    path: str
    raw_path: str  # path + query exactly as received (for `self` links)
    query: dict[str, list[str]]
    headers: Message
    body: bytes = b""

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def form(self) -> dict[str, list[str]]:
        """The form-encoded body (TaskRouter writes and the OAuth token request)."""
        try:
            return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return {}

    def json(self) -> object:
        return json.loads(self.body.decode("utf-8") or "null")


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


def dumps(obj: object) -> str:
    """Compact JSON text, as every simulator response writes it (list pages join these)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def json_response(status: int, payload: object, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, dumps(payload).encode("utf-8"), list(headers or []))


def with_query(base: str, params: list[tuple[str, str]]) -> str:
    """`base?params` with the parameters URL-encoded in the order given."""
    return f"{base}?{urlencode(params)}" if params else base


def ordered_params(query: dict[str, list[str]], drop: set[str]) -> list[tuple[str, str]]:
    """The request's own parameters (first values), minus `drop`, to carry into a next link."""
    return [(k, v[0]) for k, v in query.items() if k not in drop and v]
