"""TaskRouter v1 Workers handlers (twilio_taskrouter_v1.json; API_NOTES §2).

Lists page by an opaque PageToken and, for a configurable fraction of workers, show
`"attributes": null` the way the spec says lists may; the single fetch has the real string.
"""
from __future__ import annotations

import base64
import binascii
import bisect
import hmac
import logging
import threading
from urllib.parse import unquote

from simulator.ids import InvalidCursor, iso_s, key_of, seal, unseal
from simulator.org import Org
from simulator.workspace import (
    ACTIVITIES, InvalidRequest, PreconditionFailed, UnknownWorker, WorkerConflict, WorkerRecord,
)
from simulator.wire import Request, Response, dumps, json_response, ordered_params, with_query

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
_LISTED_CACHE_SIZE = 50_000
_TRUTHY = frozenset({"true", "1", "yes"})


class TwilioError(Exception):
    """An error answered with Twilio's JSON error body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def twilio_error_body(status: int, code: int, message: str) -> dict:
    return {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}


class TaskRouterApi:
    """Routes and answers `/v1/Workspaces/...` requests against one Org."""

    def __init__(self, org: Org, url: str, *, account_sid: str, auth_token: str, api_key_sid: str,
                 api_key_secret: str, workspace_sid: str, on_write=None) -> None:
        self.org = org
        self.url = url
        self.account_sid = account_sid
        self.workspace_sid = workspace_sid
        self._logins = {account_sid: auth_token, api_key_sid: api_key_secret}
        self._k_page = key_of("page-token", org.seed)
        self._on_write = on_write or (lambda kind: None)
        self._listed_json: dict[tuple, str] = {}  # a listed worker's JSON, by everything it shows
        self._listed_lock = threading.Lock()

    @property
    def workspace_url(self) -> str:
        return f"{self.url}/v1/Workspaces/{self.workspace_sid}"

    # ---------------------------------------------------------------- routing
    def handle(self, req: Request) -> Response:
        self.authenticate(req)
        parts = req.path.rstrip("/").split("/")[1:]  # v1, Workspaces, WS, Workers, WK
        if len(parts) < 3 or parts[:2] != ["v1", "Workspaces"] or unquote(parts[2]) != self.workspace_sid:
            raise self._not_found(req.path)
        rest = parts[3:]
        if not rest:
            return self._only(req, "GET", lambda: json_response(200, self._workspace_json()))
        if rest == ["Activities"]:
            return self._only(req, "GET", lambda: json_response(200, self._activities_json()))
        if rest[0] != "Workers" or len(rest) > 2:
            raise self._not_found(req.path)
        if len(rest) == 1:
            if req.method == "GET":
                return self.list_workers(req)
            if req.method == "POST":
                return self.create_worker(req)
            raise TwilioError(405, 20004, "Method not allowed")
        sid = unquote(rest[1])
        if req.method == "GET":
            return self.fetch_worker(sid, req.path)
        if req.method == "POST":
            return self.update_worker(req, sid)
        if req.method == "DELETE":
            return self.delete_worker(req, sid)
        raise TwilioError(405, 20004, "Method not allowed")

    @staticmethod
    def _only(req: Request, method: str, answer) -> Response:
        if req.method != method:
            raise TwilioError(405, 20004, "Method not allowed")
        return answer()

    def _not_found(self, path: str) -> TwilioError:
        return TwilioError(404, 20404, f"The requested resource {path} was not found")

    def authenticate(self, req: Request) -> None:
        header = req.header("Authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = password = ""
            expected = self._logins.get(user)
            if expected is not None and hmac.compare_digest(password, expected):
                return
        raise TwilioError(401, 20003, "Authenticate")

    # ---------------------------------------------------------------- workers
    def list_workers(self, req: Request) -> Response:
        page_size = _int_arg(req, "PageSize", 50, 1, MAX_PAGE_SIZE)
        page = _int_arg(req, "Page", 0, 0, 10**9)
        if req.arg("TargetWorkersExpression"):
            raise TwilioError(400, 20001, "TargetWorkersExpression is not supported by this simulator")
        sids = self._filtered_sids(req)
        token = req.arg("PageToken")
        if token:
            direction, anchor = self._read_token(token)
            if direction == "PA":
                start = bisect.bisect_right(sids, anchor)
            else:
                start = max(0, bisect.bisect_left(sids, anchor) - page_size)
        else:
            start = page * page_size
        chunk = sids[start:start + page_size]
        records = self.org.workspace.snapshots(chunk)
        base = f"{self.workspace_url}/Workers"
        keep = ordered_params(req.query, {"PageSize", "Page", "PageToken"})
        meta = {
            "page": page,
            "page_size": page_size,
            "first_page_url": with_query(base, keep + [("PageSize", str(page_size)), ("Page", "0")]),
            "previous_page_url": None,
            "next_page_url": None,
            "url": with_query(base, keep + [("PageSize", str(page_size)), ("Page", str(page))]
                              + ([("PageToken", token)] if token else [])),
            "key": "workers",
        }
        if chunk and start + page_size < len(sids):
            meta["next_page_url"] = with_query(base, keep + [
                ("PageSize", str(page_size)), ("Page", str(page + 1)),
                ("PageToken", "PA" + seal(self._k_page, chunk[-1]))])
        if chunk and start > 0:
            meta["previous_page_url"] = with_query(base, keep + [
                ("PageSize", str(page_size)), ("Page", str(max(0, page - 1))),
                ("PageToken", "PB" + seal(self._k_page, chunk[0]))])
        # Same bytes as json_response({"workers": [...], "meta": meta}); serializing 1,000 workers
        # per page dominated the benchmark's incremental run, so each worker's text is kept.
        workers = ",".join(self._listed_worker_text(r) for r in records)
        body = '{"workers":[' + workers + '],"meta":' + dumps(meta) + "}"
        return Response(200, body.encode("utf-8"))

    def _listed_worker_text(self, key: tuple) -> str:
        """A listed worker's JSON, by its snapshot (every field it shows; whether its attributes
        list as null follows from its sid)."""
        with self._listed_lock:
            text = self._listed_json.get(key)
        if text is None:
            text = dumps(self._worker_json(WorkerRecord(*key), listed=True))
            with self._listed_lock:
                if len(self._listed_json) >= _LISTED_CACHE_SIZE:
                    self._listed_json.clear()
                self._listed_json[key] = text
        return text

    def _filtered_sids(self, req: Request) -> list[str]:
        name = req.arg("FriendlyName")
        if name is not None:
            found = self.org.workspace.by_name(name)
            sids = [found["sid"]] if found else []
        else:
            sids = self.org.workspace.sids()
        activity_name, activity_sid, available = req.arg("ActivityName"), req.arg("ActivitySid"), req.arg("Available")
        if activity_name is None and activity_sid is None and available is None:
            return sids
        out = []
        for r in self.org.workspace.records(sids):
            if activity_name is not None and r.activity_name != activity_name:
                continue
            if activity_sid is not None and r.activity_sid != activity_sid:
                continue
            if available is not None and r.available != (available.lower() in _TRUTHY):
                continue
            out.append(r.sid)
        return out

    def _read_token(self, token: str) -> tuple[str, str]:
        try:
            direction, anchor = token[:2], unseal(self._k_page, token[2:])
            if direction not in ("PA", "PB") or not isinstance(anchor, str):
                raise InvalidCursor(token)
            return direction, anchor
        except InvalidCursor:
            raise TwilioError(400, 20001, "Invalid PageToken") from None

    def fetch_worker(self, sid: str, path: str) -> Response:
        try:
            record = self.org.workspace.record(sid)
        except UnknownWorker:
            raise self._not_found(path) from None
        return json_response(200, self._worker_json(record), [("ETag", record.etag)])

    def update_worker(self, req: Request, sid: str) -> Response:
        form = req.form()
        try:
            record = self.org.workspace.update(
                sid,
                attributes=_first(form, "Attributes"),
                friendly_name=_first(form, "FriendlyName"),
                activity_sid=_first(form, "ActivitySid"),
                if_match=req.header("If-Match"),
            )
        except UnknownWorker:
            raise self._not_found(req.path) from None
        except PreconditionFailed:
            raise TwilioError(412, 20001, "The If-Match header does not match the Worker's current ETag") from None
        except (WorkerConflict, InvalidRequest) as exc:
            raise TwilioError(400, 20001, _conflict_message(exc)) from None
        self._on_write("worker_updates")
        return json_response(200, self._worker_json(record), [("ETag", record.etag)])

    def create_worker(self, req: Request) -> Response:
        form = req.form()
        name = _first(form, "FriendlyName")
        if not name:
            raise TwilioError(400, 20001, "Missing required parameter FriendlyName in the post body")
        try:
            record = self.org.workspace.create(name, _first(form, "Attributes") or "{}", _first(form, "ActivitySid"))
        except (WorkerConflict, InvalidRequest) as exc:
            raise TwilioError(400, 20001, _conflict_message(exc)) from None
        self._on_write("worker_creates")
        return json_response(201, self._worker_json(record), [("ETag", record.etag)])

    def delete_worker(self, req: Request, sid: str) -> Response:
        try:
            self.org.workspace.delete(sid, if_match=req.header("If-Match"))
        except UnknownWorker:
            raise self._not_found(req.path) from None
        except PreconditionFailed:
            raise TwilioError(412, 20001, "The If-Match header does not match the Worker's current ETag") from None
        self._on_write("worker_deletes")
        return Response(204)

    # ---------------------------------------------------------------- rendering
    def _worker_json(self, r: WorkerRecord, listed: bool = False) -> dict:
        url = f"{self.workspace_url}/Workers/{r.sid}"
        attributes = None if listed and self.org.workspace.lists_null(r.sid) else r.attributes
        return {
            "sid": r.sid, "friendly_name": r.friendly_name, "account_sid": self.account_sid,
            "activity_sid": r.activity_sid, "activity_name": r.activity_name,
            "workspace_sid": self.workspace_sid, "attributes": attributes, "available": r.available,
            "date_created": iso_s(r.date_created_ms), "date_updated": iso_s(r.date_updated_ms),
            "date_status_changed": iso_s(r.date_status_changed_ms), "url": url,
            "links": {
                "channels": f"{url}/Channels", "worker_channels": f"{url}/Channels",
                "activity": f"{self.workspace_url}/Activities/{r.activity_sid}",
                "workspace": self.workspace_url, "reservations": f"{url}/Reservations",
                "worker_statistics": f"{url}/Statistics",
                "statistics": f"{self.workspace_url}/Workers/Statistics",
                "real_time_statistics": f"{self.workspace_url}/Workers/RealTimeStatistics",
                "cumulative_statistics": f"{self.workspace_url}/Workers/CumulativeStatistics",
            },
        }

    def _workspace_json(self) -> dict:
        created = iso_s(self.org.created_ms - 900 * 86_400_000)
        return {"sid": self.workspace_sid, "account_sid": self.account_sid,
                "friendly_name": "Flex Task Assignment", "date_created": created, "date_updated": created,
                "default_activity_name": "Offline", "default_activity_sid": self.org.activities["Offline"],
                "url": self.workspace_url, "links": {"workers": f"{self.workspace_url}/Workers",
                                                     "activities": f"{self.workspace_url}/Activities"}}

    def _activities_json(self) -> dict:
        items = [{"sid": self.org.activities[name], "friendly_name": name, "available": available,
                  "account_sid": self.account_sid, "workspace_sid": self.workspace_sid,
                  "url": f"{self.workspace_url}/Activities/{self.org.activities[name]}"}
                 for name, available in ACTIVITIES]
        url = f"{self.workspace_url}/Activities?PageSize=50&Page=0"
        return {"activities": items, "meta": {"page": 0, "page_size": 50, "first_page_url": url,
                                              "previous_page_url": None, "next_page_url": None,
                                              "url": url, "key": "activities"}}


def _first(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def _int_arg(req: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = req.arg(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise TwilioError(400, 20001, f"Invalid {name}: {raw!r} is not an integer") from None
    if value < lo:
        raise TwilioError(400, 20001, f"Invalid {name}: must be at least {lo}")
    return min(value, hi)


def _conflict_message(exc: Exception) -> str:
    if isinstance(exc, WorkerConflict):
        return "A Worker with this FriendlyName already exists in the Workspace"
    return str(exc)
