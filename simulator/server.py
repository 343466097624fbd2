"""The HTTP server: one port serving the Okta API, the TaskRouter API and `/__sim/` controls.

Every API request passes the same gates, in the order a real edge applies them: concurrency
(Okta only), latency, the per-bucket one-minute window, then a deterministic fault; only then
does a handler run, so a faulted or throttled write never touches state.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from simulator.config import Credentials, SimulatorConfig, check_faults, make_credentials
from simulator.ids import hex32, key_of, rsa_private_key_pem, token62
from simulator.limits import ConcurrencyGate, FaultPlan, RateLimiter, Stats
from simulator.okta_api import OktaApi, OktaError, okta_error_body
from simulator.org import Org
from simulator.taskrouter_api import TaskRouterApi, TwilioError, twilio_error_body
from simulator.wire import Request, Response, json_response

logger = logging.getLogger(__name__)

SLOW_FAULT_SECONDS = 1.5
_RATE_SUMMARY = "API call exceeded rate limit due to too many requests."


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, app: "_App | None" = None) -> None:
        super().__init__(address, _Handler)
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request, client_address):
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut idle keep-alive connections so a stopped simulator really stops answering."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "okta-flex-sync-simulator/1.0"
    sys_version = ""
    timeout = 120

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle + delayed ACK
        # add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):  # noqa: N802 (http.server naming)
        self.server.app.dispatch(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, fmt, *args):
        logger.debug("%s %s", self.address_string(), fmt % args)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


class _App:
    """Gates, dispatch and the control API; shared by all handler threads."""

    def __init__(self, config: SimulatorConfig, org: Org, creds: Credentials, url: str) -> None:
        self.config = config
        self.org = org
        self.url = url
        self.stats = Stats()
        self.limiter = RateLimiter(config.merged_rate_limits())
        self.gate = ConcurrencyGate(config.concurrency_limit)
        self.faults = FaultPlan(config.seed, config.fault_rate)
        self.latency_ms = config.latency_ms
        self._k_request = key_of("request-id", config.seed)
        self.okta = OktaApi(org, url, api_token=creds.okta_api_token, client_id=creds.oauth_client_id,
                            key_id=creds.oauth_key_id, private_key_pem=lambda: rsa_private_key_pem(config.seed))
        self.taskrouter = TaskRouterApi(org, url, account_sid=creds.account_sid, auth_token=creds.auth_token,
                                        api_key_sid=creds.api_key_sid, api_key_secret=creds.api_key_secret,
                                        workspace_sid=creds.workspace_sid, on_write=self.stats.bump)

    # ---------------------------------------------------------------- entry point
    def dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        try:
            body = _read_body(handler)
        except (ValueError, OSError):
            handler.close_connection = True
            return
        req = Request(handler.command, split.path, handler.path, parse_qs(split.query, keep_blank_values=True),
                      handler.headers, body)
        if split.path.startswith("/__sim/"):
            self._send(handler, self.control(req))
            return
        response = self.api(req)
        if response is None:  # a dropped-connection fault: close without a byte
            self.stats.bump("dropped_connections")
            handler.close_connection = True
            return
        self.stats.response(response.status)
        self._send(handler, response)

    def api(self, req: Request) -> Response | None:
        okta = not req.path.startswith("/v1/")
        bucket = self.okta.bucket(req.path) if okta else "taskrouter"
        n = self.faults.next_number()
        self.stats.request(bucket)
        extra = [("X-Okta-Request-Id", token62(self._k_request, n, 24))] if okta else [
            ("Twilio-Request-Id", "RQ" + hex32(self._k_request, n))]
        if okta and not self.gate.enter():
            reset = int(time.time()) + 1
            return _okta_429(n, reset, 0, 0, extra)
        try:
            if self.latency_ms:
                time.sleep(self.latency_ms / 1000)
            quota = self.limiter.hit(bucket)
            rate = ([("X-Rate-Limit-Limit", str(quota.limit)), ("X-Rate-Limit-Remaining", str(quota.remaining)),
                     ("X-Rate-Limit-Reset", str(quota.reset))] if okta else
                    [("X-Rate-Limit-Limit", str(quota.limit)), ("X-Rate-Limit-Remaining", str(quota.remaining)),
                     ("X-Rate-Limit-Config", "Workers")])
            if not quota.allowed:
                response = (_okta_429(n, quota.reset, quota.limit, 0, extra) if okta
                            else _twilio_429(extra + rate))
                return response
            fault = self.faults.fault_for(n)
            if fault is not None:
                self.stats.bump("faults")
                if fault == "drop":
                    return None
                if fault == "slow":
                    time.sleep(SLOW_FAULT_SECONDS)
                else:
                    return _fault_response(fault, okta, n, quota.limit, extra + (rate if not okta else []))
            response = self._handle(req, okta, n)
            response.headers.extend(extra + rate)
            return response
        finally:
            if okta:
                self.gate.leave()

    def _handle(self, req: Request, okta: bool, n: int) -> Response:
        try:
            return self.okta.handle(req) if okta else self.taskrouter.handle(req)
        except OktaError as exc:
            headers = []
            if exc.status == 401:
                headers.append(("WWW-Authenticate", 'SSWS realm="IdpMyAccountAPI"'))
            return json_response(exc.status, okta_error_body(exc.code, exc.summary, _error_id(n), exc.causes), headers)
        except TwilioError as exc:
            return json_response(exc.status, twilio_error_body(exc.status, exc.code, exc.message))
        except Exception:  # a simulator bug must still look like a server error, not a hang
            logger.exception("simulator handler failed for %s %s", req.method, req.path)
            if okta:
                return json_response(500, okta_error_body("E0000009", "Internal Server Error", _error_id(n)))
            return json_response(500, twilio_error_body(500, 20500, "Internal Server Error"))

    # ---------------------------------------------------------------- control API
    def control(self, req: Request) -> Response:
        route = (req.method, req.path.rstrip("/"))
        try:
            if route == ("GET", "/__sim/stats"):
                return json_response(200, self.stats.snapshot())
            if route == ("GET", "/__sim/health"):
                return json_response(200, {"ok": True, "users": self.org.users})
            if route == ("GET", "/__sim/planted"):
                return json_response(200, self.org.planted)
            if route == ("POST", "/__sim/reset-stats"):
                self.stats.reset()
                return json_response(200, {"ok": True})
            if route == ("POST", "/__sim/mutate"):
                payload = req.json() or {}
                ids = self.org.mutate_fraction(float(payload.get("fraction", 0.01)), int(payload.get("seed", 1)))
                return json_response(200, {"user_ids": ids})
            if route == ("POST", "/__sim/user"):
                return json_response(200, self.change_user(req.json() or {}))
            if route == ("POST", "/__sim/faults"):
                payload = req.json() or {}
                self.set_faults(fault_rate=payload.get("fault_rate"), latency_ms=payload.get("latency_ms"),
                                rate_limits=payload.get("rate_limits"),
                                concurrency_limit=payload.get("concurrency_limit"))
                return json_response(200, self.fault_settings())
        except (ValueError, TypeError, AttributeError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(404, {"error": f"no control endpoint {req.method} {req.path}"})

    def change_user(self, payload: dict) -> dict:
        """One user's change as an admin would make it in Okta (each emits its System Log event):
        `{"user_id": ..., "status": "SUSPENDED"}`, `{"user_id": ..., "userType": "agent"}`,
        `{"user_id": ..., "unassign": true}`."""
        uid = payload.get("user_id")
        if not isinstance(uid, str) or self.org.user(uid) is None:
            raise ValueError(f"no user {uid!r}")
        if "status" in payload:
            self.org.set_status(uid, str(payload["status"]))
        if "userType" in payload:
            self.org.set_user_type(uid, payload["userType"])
        if payload.get("unassign"):
            try:
                self.org.unassign(uid)
            except KeyError as exc:
                raise ValueError(str(exc).strip("'\"")) from None
        return {"user": self.org.user(uid)}

    def set_faults(self, *, fault_rate=None, latency_ms=None, rate_limits=None, concurrency_limit=None) -> None:
        check_faults(fault_rate, latency_ms, rate_limits)
        if fault_rate is not None:
            self.faults.rate = float(fault_rate)
        if latency_ms is not None:
            self.latency_ms = float(latency_ms)
        if rate_limits:
            self.limiter.set_limits({k: int(v) for k, v in rate_limits.items()})
        if concurrency_limit is not None:
            if int(concurrency_limit) < 1:
                raise ValueError("concurrency_limit must be >= 1")
            self.gate.limit = int(concurrency_limit)

    def fault_settings(self) -> dict:
        return {"fault_rate": self.faults.rate, "latency_ms": self.latency_ms,
                "rate_limits": self.limiter.limits(), "concurrency_limit": self.gate.limit}

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, response: Response) -> None:
        try:
            handler.send_response(response.status)
            for name, value in response.headers:
                handler.send_header(name, value)
            if response.body:
                handler.send_header("Content-Type", response.content_type)
            handler.send_header("Content-Length", str(len(response.body)))
            handler.end_headers()
            if response.body:
                handler.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True


def _error_id(n: int) -> str:
    return "oae" + token62(0xE77, n, 19)


def _okta_429(n: int, reset: int, limit: int, remaining: int, extra) -> Response:
    body = okta_error_body("E0000047", _RATE_SUMMARY, _error_id(n))
    return json_response(429, body, extra + [("X-Rate-Limit-Limit", str(limit)),
                                             ("X-Rate-Limit-Remaining", str(remaining)),
                                             ("X-Rate-Limit-Reset", str(reset))])


def _twilio_429(headers) -> Response:
    return json_response(429, twilio_error_body(429, 20429, "Too Many Requests"), headers + [("Retry-After", "1")])


def _fault_response(fault: str, okta: bool, n: int, limit: int, headers) -> Response:
    """A synthetic failure; none of them has touched any state."""
    if fault == "rate_limit":
        if okta:
            return _okta_429(n, int(time.time()) + 1 + n % 2, limit, 0, headers)
        return _twilio_429(headers)
    status = 500 if fault == "server_error" else 503
    retry = [("Retry-After", "1")] if status == 503 else []
    if okta:
        summary = "Internal Server Error" if status == 500 else "Service Unavailable"
        body = okta_error_body("E0000009", summary, _error_id(n))
        return json_response(status, body, headers + retry + [("X-Rate-Limit-Limit", str(limit)),
                                                              ("X-Rate-Limit-Remaining", str(max(0, limit - 1))),
                                                              ("X-Rate-Limit-Reset", str(int(time.time()) + 60))])
    code = 20500 if status == 500 else 20503
    return json_response(status, twilio_error_body(status, code, "Internal Server Error" if status == 500
                                                   else "Service Unavailable"), headers + retry)


class Simulator:
    """A running simulator: its URL, fake credentials, org state and fault controls."""

    def __init__(self, config: SimulatorConfig, server: _Server, app: _App, creds: Credentials,
                 thread: threading.Thread) -> None:
        self.config = config
        self._server = server
        self._app = app
        self._thread = thread
        self.url = app.url
        self.org = app.org
        self.okta_api_token = creds.okta_api_token
        self.flex_app_id = creds.flex_app_id
        self.account_sid = creds.account_sid
        self.auth_token = creds.auth_token
        self.api_key_sid = creds.api_key_sid
        self.api_key_secret = creds.api_key_secret
        self.workspace_sid = creds.workspace_sid
        self.oauth_client_id = creds.oauth_client_id
        self.oauth_key_id = creds.oauth_key_id
        self._stopped = False

    def __repr__(self) -> str:
        return f"Simulator(url={self.url!r}, users={self.config.users}, seed={self.config.seed})"

    @cached_property
    def oauth_private_key_pem(self) -> str:
        """The service app's fake private key (built on first use; deterministic per seed)."""
        return rsa_private_key_pem(self.config.seed)

    @property
    def oauth_token_url(self) -> str:
        return f"{self.url}/oauth2/v1/token"

    def env(self) -> dict[str, str]:
        """Environment variables that point okta-flex-sync at this simulator."""
        return {
            "OKTA_ORG_URL": self.url,
            "OKTA_API_TOKEN": self.okta_api_token,
            "OKTA_FLEX_APP_ID": self.flex_app_id,
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_WORKSPACE_SID": self.workspace_sid,
            "TASKROUTER_BASE_URL": self.url,
        }

    def info(self) -> dict[str, str]:
        """`env()` plus every other credential: what `python -m simulator` prints."""
        return {
            **self.env(),
            "url": self.url,
            "okta_api_token": self.okta_api_token,
            "flex_app_id": self.flex_app_id,
            "account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "api_key_sid": self.api_key_sid,
            "api_key_secret": self.api_key_secret,
            "workspace_sid": self.workspace_sid,
            "oauth_client_id": self.oauth_client_id,
            "oauth_key_id": self.oauth_key_id,
            "oauth_private_key_pem": self.oauth_private_key_pem,
            "oauth_token_url": self.oauth_token_url,
        }

    def stats(self) -> dict:
        return self._app.stats.snapshot()

    def reset_stats(self) -> None:
        self._app.stats.reset()

    def set_faults(self, *, fault_rate: float | None = None, latency_ms: float | None = None,
                   rate_limits: dict[str, int] | None = None, concurrency_limit: int | None = None) -> None:
        """Change fault injection at runtime; arguments left as None are unchanged."""
        self._app.set_faults(fault_rate=fault_rate, latency_ms=latency_ms, rate_limits=rate_limits,
                             concurrency_limit=concurrency_limit)

    def reset_rate_limits(self) -> None:
        """Start every rate-limit window afresh (tests use it between scenarios)."""
        self._app.limiter.reset()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_simulator(config: SimulatorConfig | None = None, **overrides) -> Simulator:
    """Build the org and serve it on a background thread; returns once it accepts requests."""
    if config is None:
        config = SimulatorConfig(**overrides)
    elif overrides:
        raise TypeError("pass either a SimulatorConfig or keyword overrides, not both")
    server = _Server((config.host, config.port))
    host, port = server.server_address[:2]
    url = f"http://{host}:{port}"
    try:
        org = Org(config, url)
        creds = make_credentials(config.seed, org.app_id)
        app = _App(config, org, creds, url)
    except Exception:
        server.server_close()
        raise
    server.app = app
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"simulator-{port}", daemon=True)
    thread.start()
    logger.info("simulator serving %d users on %s", config.users, url)
    return Simulator(config, server, app, creds, thread)


def dumps_info(sim: Simulator) -> str:
    """One JSON line with the URL and every credential (what the benchmark subprocess reads)."""
    return json.dumps(sim.info(), separators=(",", ":"))
