"""Okta Management API handlers: users, Flex app assignments, System Log and the token endpoint.

Shapes follow `okta-management-2026.06.3-minimal.yaml`; behaviour follows API_NOTES §1
(limits, cursors, DEPROVISIONED defaults, bounded vs polling System Log queries).
"""
from __future__ import annotations

import bisect
import hmac
import json
import logging
import secrets
import threading
import time
from datetime import datetime
from urllib.parse import unquote

from simulator import scim
from simulator.ids import InvalidCursor, fake_uuid, iso_ms, key_of, seal, token62, unseal
from simulator.logs import DISPLAY_MESSAGES, RETENTION_MS, LogRecord
from simulator.org import ABSENT, Assignment, Org
from simulator.wire import Request, Response, dumps, json_response, ordered_params, with_query

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000
SCAN_BUDGET = 25_000  # users generated per request before a short page is returned
PREFILTER_BUDGET = 400_000  # indices checked by the cheap status pre-filter per request
OKTA_SCOPES = frozenset({"okta.users.read", "okta.apps.read", "okta.logs.read"})
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_LIFETIME = 3600

# OAuth error descriptions, worded like Okta's org authorization server.
GRANT_UNSUPPORTED = "The authorization grant type is not supported by the authorization server."
CLIENT_AUTH_FAILED = "Client authentication failed. Either the client or the client credentials are invalid."
BAD_ASSERTION = "The client_assertion signature is invalid or it is not a valid JWT."
EXP_TOO_FAR = "The client_assertion token has an expiration too far in the future."
SCOPE_MISSING = ("The authorization server resource does not have any configured default scopes, "
                 "'scope' must be provided.")
SCOPE_UNKNOWN = "One or more scopes are not configured for the authorization server resource."

USER_FILTER_ATTRS = frozenset({"status", "lastUpdated", "id", "profile.login", "profile.email",
                               "profile.firstName", "profile.lastName"})
USER_DATE_ATTRS = frozenset({"created", "activated", "statusChanged", "lastUpdated", "lastLogin",
                             "passwordChanged"})
SEARCH_TOP_ATTRS = frozenset({"id", "status", "created", "activated", "statusChanged", "lastUpdated",
                              "type.id"})
SEARCH_CO_ATTRS = frozenset({"profile.firstName", "profile.lastName", "profile.email", "profile.login"})
LOG_LITE_ROOTS = frozenset({"eventType", "severity", "displayMessage", "actor", "target", "outcome",
                            "debugContext"})


class OktaError(Exception):
    """An error answered with Okta's error body."""

    def __init__(self, status: int, code: str, summary: str, causes: tuple[str, ...] = ()) -> None:
        super().__init__(summary)
        self.status, self.code, self.summary, self.causes = status, code, summary, causes


_APP_USER_CACHE_SIZE = 50_000


def _assignment_key(a: Assignment) -> tuple | None:
    """Everything an unexpanded AppUser shows, hashable; None when `roles` is not hashable as
    is.  Values carry their type, so roles True and 1 (equal in Python) are different keys."""
    roles = a.roles
    if isinstance(roles, list):
        roles = ("list", *((type(r), r) for r in roles))
    elif roles is not ABSENT:
        roles = (type(roles), roles)
    key = (a.index, a.user_id, a.app_username, a.scope, a.status, a.created_ms, a.last_updated_ms,
           a.status_changed_ms, roles, a.group_id)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def okta_error_body(code: str, summary: str, error_id: str, causes=()) -> dict:
    return {"errorCode": code, "errorSummary": summary, "errorLink": code, "errorId": error_id,
            "errorCauses": [{"errorSummary": c} for c in causes]}


def _not_found(what: str, ident: str) -> OktaError:
    return OktaError(404, "E0000007", f"Not found: Resource not found: {ident} ({what})")


def _bad_param(name: str, detail: str) -> OktaError:
    return OktaError(400, "E0000053", "Invalid value for parameter", (f"{name}: {detail}",))


def _int_param(req: Request, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter; values above the maximum are clamped like Okta does."""
    raw = req.arg(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad_param(name, f"'{raw}' is not an integer") from None
    if value < lo:
        raise _bad_param(name, f"must be at least {lo}")
    return min(value, hi)


def _parse_time(name: str, raw: str) -> int:
    try:
        text = scim.canonical_time(raw)
    except scim.FilterError:
        raise _bad_param(name, f"'{raw}' is not an ISO 8601 timestamp") from None
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


class OktaApi:
    """Routes and answers Okta requests against one Org."""

    def __init__(self, org: Org, url: str, *, api_token: str, client_id: str, key_id: str,
                 private_key_pem) -> None:
        self.org = org
        self.url = url
        self._api_token = api_token
        self.client_id = client_id
        self.key_id = key_id
        self._private_key_pem = private_key_pem  # callable: the key is built lazily
        self._public_key = None
        self._tokens: dict[str, tuple[frozenset[str], float]] = {}
        self._used_jti: dict[str, float] = {}
        self._lock = threading.Lock()
        self._app_user_json: dict[tuple, str] = {}
        self._k_users = key_of("users-cursor", org.seed)
        self._k_apps = key_of("apps-cursor", org.seed)
        self._k_logs = key_of("logs-cursor", org.seed)
        self._k_uuid = key_of("log-uuid", org.seed)

    # ---------------------------------------------------------------- routing
    @staticmethod
    def bucket(path: str) -> str:
        """The rate-limit bucket of an Okta path."""
        if path == "/oauth2/v1/token":
            return "token"
        if path.rstrip("/") == "/api/v1/users":
            return "users"
        if path.startswith("/api/v1/users/"):
            return "user"
        if path.startswith("/api/v1/apps"):
            return "apps"
        if path.startswith("/api/v1/logs"):
            return "logs"
        return "default"

    def handle(self, req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        if path == "/oauth2/v1/token":
            if req.method != "POST":
                raise OktaError(405, "E0000022", "The endpoint does not support the provided HTTP method")
            return self.token(req)
        if not path.startswith("/api/v1/"):
            raise OktaError(404, "E0000022", "The endpoint does not support the provided HTTP method")
        parts = path.split("/")[3:]  # after /api/v1
        if req.method != "GET":
            raise OktaError(405, "E0000022", "The endpoint does not support the provided HTTP method")
        scope = {"users": "okta.users.read", "apps": "okta.apps.read", "logs": "okta.logs.read"}.get(parts[0])
        self.authenticate(req, scope)
        if parts[0] == "users" and len(parts) == 1:
            return self.list_users(req)
        if parts[0] == "users" and len(parts) == 2:
            return self.get_user(unquote(parts[1]))
        if parts[0] == "apps" and len(parts) >= 2:
            return self.apps(req, parts[1:])
        if parts[0] == "logs" and len(parts) == 1:
            return self.list_logs(req)
        raise OktaError(404, "E0000022", "The endpoint does not support the provided HTTP method")

    # ---------------------------------------------------------------- auth
    def authenticate(self, req: Request, scope: str | None) -> None:
        header = req.header("Authorization") or ""
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme == "SSWS" and credential and hmac.compare_digest(credential, self._api_token):
            return
        if scheme == "Bearer" and credential:
            with self._lock:
                entry = self._tokens.get(credential)
            if entry and entry[1] > time.time():
                if scope is None or scope in entry[0]:
                    return
                raise OktaError(403, "E0000006", "You do not have permission to perform the requested action",
                                (f"The access token does not contain the required scope {scope}",))
        raise OktaError(401, "E0000011", "Invalid token provided")

    def _public(self):
        if self._public_key is None:
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            self._public_key = load_pem_private_key(self._private_key_pem().encode(), None).public_key()
        return self._public_key

    def token(self, req: Request) -> Response:
        """client_credentials with a private_key_jwt client assertion (the org authorization server)."""
        import jwt

        form = {k: v[0] for k, v in req.form().items() if v}
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", GRANT_UNSUPPORTED)
        if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
            return _oauth_error(401, "invalid_client", CLIENT_AUTH_FAILED)
        assertion = form["client_assertion"]
        audience = f"{self.url}/oauth2/v1/token"
        try:
            header = jwt.get_unverified_header(assertion)
            if header.get("alg") != "RS256":
                raise jwt.InvalidTokenError("alg")
            if header.get("kid") not in (None, self.key_id):
                raise jwt.InvalidTokenError("kid")
            claims = jwt.decode(assertion, self._public(), algorithms=["RS256"], audience=audience,
                                options={"require": ["exp", "iss", "sub", "aud"]}, leeway=5)
        except jwt.ExpiredSignatureError:
            return _oauth_error(401, "invalid_client", "The client_assertion token is expired.")
        except jwt.InvalidTokenError:
            return _oauth_error(401, "invalid_client", BAD_ASSERTION)
        now = time.time()
        if claims.get("iss") != self.client_id or claims.get("sub") != self.client_id:
            return _oauth_error(401, "invalid_client", "The client_assertion token has an invalid issuer or subject.")
        if form.get("client_id") not in (None, self.client_id):
            return _oauth_error(401, "invalid_client", "The client_id does not match the client_assertion.")
        if claims["exp"] > now + TOKEN_LIFETIME + 5:
            return _oauth_error(401, "invalid_client", EXP_TOO_FAR)
        jti = claims.get("jti")
        with self._lock:
            self._used_jti = {k: v for k, v in self._used_jti.items() if v > now}
            if jti is not None:
                if jti in self._used_jti:
                    return _oauth_error(401, "invalid_client", "The client_assertion token has already been used.")
                self._used_jti[str(jti)] = claims["exp"]
        scopes = form.get("scope", "").split()
        if not scopes:
            return _oauth_error(400, "invalid_scope", SCOPE_MISSING)
        if not set(scopes) <= OKTA_SCOPES:
            return _oauth_error(400, "invalid_scope", SCOPE_UNKNOWN)
        access_token = "simfake." + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
            self._tokens[access_token] = (frozenset(scopes), now + TOKEN_LIFETIME)
        return json_response(200, {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME,
                                   "access_token": access_token, "scope": " ".join(scopes)},
                             [("Cache-Control", "no-store"), ("Pragma", "no-cache")])

    # ---------------------------------------------------------------- users
    def get_user(self, ident: str) -> Response:
        i = self.org.find(ident)
        user = self.org.peek_user(i) if i is not None else None
        if user is None:
            raise _not_found("User", ident)
        return json_response(200, user)

    def list_users(self, req: Request) -> Response:
        filter_text, search_text, q = req.arg("filter"), req.arg("search"), req.arg("q")
        if filter_text is not None and search_text is not None:
            raise _bad_param("filter", "filter and search cannot be used together")
        node, fold = None, False
        if search_text is not None:
            node, fold = _user_expression(search_text, search=True), True
        elif filter_text is not None:
            node = _user_expression(filter_text, search=False)
        after = self._after_index(req.arg("after"), self._k_users)
        if q is not None and node is None:
            limit = _int_param(req, "limit", 10, 1, 200)
            items, _, _ = self._scan(after, limit, _q_matcher(q), False, None, None)
            return self._users_page(req, items, None)
        limit = _int_param(req, "limit", 200, 1, 200)
        predicate = (lambda u: scim.evaluate(node, u, fold=fold)) if node is not None else None
        candidates = self._plan(node) if node is not None else None
        status = _status_prefilter(node, fold) if node is not None else None
        items, last, more = self._scan(after, limit, predicate, node is not None, candidates, status)
        next_cursor = seal(self._k_users, {"i": last}) if more else None
        return self._users_page(req, items, next_cursor)

    def _users_page(self, req: Request, items: list[str], cursor: str | None) -> Response:
        """A page from pre-serialized users (see Org.user_json) plus Okta's Link headers."""
        headers = [("Link", f'<{self.url}{req.raw_path}>; rel="self"')]
        if cursor:
            params = ordered_params(req.query, {"after"}) + [("after", cursor)]
            headers.append(("Link", f'<{with_query(self.url + "/api/v1/users", params)}>; rel="next"'))
        if "omitcredentials" in (req.header("Content-Type") or "").lower().replace(" ", ""):
            users = [json.loads(u) for u in items]
            return json_response(200, [{k: v for k, v in u.items() if k != "credentials"} for u in users], headers)
        return Response(200, ("[" + ",".join(items) + "]").encode("utf-8"), headers)

    def _after_index(self, token: str | None, key: int) -> int:
        if not token:
            return -1
        try:
            payload = unseal(key, token)
            return int(payload["i"])
        except (InvalidCursor, KeyError, TypeError, ValueError):
            raise _bad_param("after", "the cursor is not valid") from None

    def _plan(self, node) -> list[int] | None:
        """Candidate indices when the expression pins users down (id, login, recent change)."""
        org = self.org
        if isinstance(node, scim.Cmp):
            if node.attr == "id" and node.op == "eq" and isinstance(node.value, str):
                i = org.index_of(node.value)
                return [] if i is None else [i]
            if node.attr == "profile.login" and node.op == "eq" and isinstance(node.value, str):
                i = org.find(node.value)
                return [] if i is None else [i]
            if node.attr == "lastUpdated" and node.op in ("gt", "ge"):
                return org.updated_since_candidates(node.value)  # None: too far back to narrow
            return None
        if isinstance(node, scim.And):
            left, right = self._plan(node.left), self._plan(node.right)
            if left is None:
                return right
            if right is None:
                return left
            return sorted(set(left) & set(right))
        if isinstance(node, scim.Or):
            left, right = self._plan(node.left), self._plan(node.right)
            if left is None or right is None:
                return None
            return sorted(set(left) | set(right))
        return None

    def _scan(self, after: int, limit: int, predicate, include_deprovisioned: bool,
              candidates: list[int] | None, status: str | None) -> tuple[list[str], int, bool]:
        """Users with index > after, in id order: (page, last index examined, more to examine)."""
        org = self.org
        if candidates is None:
            indices = range(after + 1, org.users)
        else:
            indices = candidates[bisect.bisect_right(candidates, after):]
        out: list[str] = []
        last = after
        generated = checked = 0
        for i in indices:
            last = i
            checked += 1
            if status is not None or not include_deprovisioned:
                current = org.base_status(i)
                if (status is not None and current != status) or (
                        not include_deprovisioned and current == "DEPROVISIONED"):
                    if checked >= PREFILTER_BUDGET:
                        break
                    continue
            generated += 1
            if predicate is None:
                text = org.user_json(i)
                if text is not None:
                    out.append(text)
            else:
                user = org.peek_user(i)
                if user is not None and predicate(user):
                    out.append(dumps(user))
            if len(out) >= limit or generated >= SCAN_BUDGET or checked >= PREFILTER_BUDGET:
                break  # a full page, or a short page with a next link as Okta does for slow queries
        final = indices[-1] if len(indices) else after
        return out, last, last < final

    # ---------------------------------------------------------------- apps
    def apps(self, req: Request, parts: list[str]) -> Response:
        app_id = unquote(parts[0])
        if app_id != self.org.app_id:
            raise _not_found("App", app_id)
        if len(parts) == 1:
            return json_response(200, self._app_json())
        if parts[1] == "groups" and len(parts) == 2:
            return self.list_app_groups()
        if parts[1] != "users" or len(parts) > 3:
            raise OktaError(404, "E0000022", "The endpoint does not support the provided HTTP method")
        if len(parts) == 3:
            a = self.org.assignment(unquote(parts[2]))
            if a is None:
                raise _not_found("AppUser", unquote(parts[2]))
            return json_response(200, self._app_user(a, req.arg("expand") == "user"))
        return self.list_app_users(req)

    def list_app_groups(self) -> Response:
        """The app's one group assignment ("Flex Agents", which GROUP-scoped app users come from)."""
        group = {"id": self.org.group_id, "priority": 0, "profile": {},
                 "lastUpdated": iso_ms(self.org.created_ms),
                 "_links": {"app": {"href": f"{self.url}/api/v1/apps/{self.org.app_id}"},
                            "group": {"href": f"{self.url}/api/v1/groups/{self.org.group_id}"}}}
        return json_response(200, [group])

    def list_app_users(self, req: Request) -> Response:
        limit = _int_param(req, "limit", 50, 1, 500)
        after = self._after_index(req.arg("after"), self._k_apps)
        expand = req.arg("expand") == "user"
        q = (req.arg("q") or "").casefold()
        items: list[str] = []  # each item's JSON text
        cursor, more = after, False
        while True:
            batch, batch_more = self.org.assignments_page(cursor, 500 if q else limit)
            for a in batch:
                if len(items) >= limit:
                    more = True
                    break
                cursor = a.index
                if not q or self._app_user_matches(a, q):
                    items.append(self._app_user_text(a, expand))
            else:
                if batch_more and len(items) < limit:
                    continue
                more = batch_more
            break
        headers = [("Link", f'<{self.url}{req.raw_path}>; rel="self"')]
        if more and items:
            params = ordered_params(req.query, {"after"}) + [("after", seal(self._k_apps, {"i": cursor}))]
            base = f"{self.url}/api/v1/apps/{self.org.app_id}/users"
            headers.append(("Link", f'<{with_query(base, params)}>; rel="next"'))
        # Same bytes as json_response(200, [item, ...]).
        return Response(200, ("[" + ",".join(items) + "]").encode("utf-8"), headers)

    def _app_user_text(self, a: Assignment, expand: bool) -> str:
        """An AppUser's JSON text; without `expand` kept by everything it shows (building and
        encoding 500 of them per page was most of this server's work in an incremental run)."""
        key = None if expand else _assignment_key(a)
        if key is not None:
            with self._lock:
                text = self._app_user_json.get(key)
            if text is not None:
                return text
        text = dumps(self._app_user(a, expand))
        if key is not None:
            with self._lock:
                if len(self._app_user_json) >= _APP_USER_CACHE_SIZE:
                    self._app_user_json.clear()
                self._app_user_json[key] = text
        return text

    def _app_user_matches(self, a: Assignment, q: str) -> bool:
        user = self.org.peek_user(a.index) or {}
        p = user.get("profile", {})
        fields = (a.app_username, p.get("firstName"), p.get("lastName"), p.get("email"))
        return any(isinstance(f, str) and f.casefold().startswith(q) for f in fields)

    def _app_user(self, a: Assignment, expand: bool) -> dict:
        profile = {} if a.roles is ABSENT else {"roles": a.roles}
        links = {"app": {"href": f"{self.url}/api/v1/apps/{self.org.app_id}"},
                 "user": {"href": f"{self.url}/api/v1/users/{a.user_id}"}}
        if a.group_id:
            links["group"] = {"name": "Flex Agents", "href": f"{self.url}/api/v1/groups/{a.group_id}"}
        out = {
            "id": a.user_id, "created": iso_ms(a.created_ms), "lastUpdated": iso_ms(a.last_updated_ms),
            "scope": a.scope, "status": a.status, "statusChanged": iso_ms(a.status_changed_ms),
            "passwordChanged": None, "syncState": "DISABLED",
            "credentials": {"userName": a.app_username}, "profile": profile, "_links": links,
        }
        if expand:
            user = self.org.peek_user(a.index)
            if user is not None:
                out["_embedded"] = {"user": user}
        return out

    def _app_json(self) -> dict:
        app_id = self.org.app_id
        return {
            "id": app_id, "name": "twilioflex", "label": "Twilio Flex", "status": "ACTIVE",
            "signOnMode": "SAML_2_0", "created": iso_ms(self.org.created_ms - 900 * DAY_MS),
            "lastUpdated": iso_ms(self.org.created_ms - 30 * DAY_MS),
            "features": [], "visibility": {"autoSubmitToolbar": False, "hide": {"iOS": False, "web": False}},
            "credentials": {"userNameTemplate": {"template": "${source.login}", "type": "BUILT_IN"}},
            "_links": {"self": {"href": f"{self.url}/api/v1/apps/{app_id}"},
                       "users": {"href": f"{self.url}/api/v1/apps/{app_id}/users"}},
        }

    # ---------------------------------------------------------------- logs
    def list_logs(self, req: Request) -> Response:
        now_ms = int(time.time() * 1000)
        limit = _int_param(req, "limit", 100, 0, 1000)
        order = (req.arg("sortOrder") or "ASCENDING").upper()
        if order not in ("ASCENDING", "DESCENDING"):
            raise _bad_param("sortOrder", "must be ASCENDING or DESCENDING")
        node = _log_expression(req.arg("filter")) if req.arg("filter") else None
        keywords = _log_keywords(req.arg("q"))
        match = _log_matcher(self, node, keywords)
        after, since, until = req.arg("after"), req.arg("since"), req.arg("until")
        store = self.org.log
        if after:
            if since:
                raise _bad_param("after", "after cannot be used together with since")
            try:
                cursor = unseal(self._k_logs, after)
                mode, pos, lo, hi = cursor["m"], int(cursor["p"]), cursor.get("lo"), cursor.get("hi")
            except (InvalidCursor, KeyError, TypeError, ValueError):
                raise _bad_param("after", "the cursor is not valid") from None
        else:
            until_ms = _parse_time("until", until) if until else None
            since_ms = _parse_time("since", since) if since else (until_ms or now_ms) - 7 * DAY_MS
            if since_ms < now_ms - 180 * DAY_MS:
                raise _bad_param("since", "must not be more than 180 days in the past")
            if until_ms is not None and until_ms < since_ms:
                raise _bad_param("until", "must not be before since")
            lo, hi = since_ms, until_ms
            if until_ms is None and order == "ASCENDING":
                mode, pos = "p", store.first_at_or_after(since_ms)
            else:
                hi = until_ms if until_ms is not None else now_ms
                mode = "a" if order == "ASCENDING" else "d"
                pos = store.first_at_or_after(since_ms) if mode == "a" else store.first_at_or_after(hi) - 1
        records, count = store.snapshot()
        cutoff = now_ms - RETENTION_MS
        out: list[dict] = []
        more = False
        if mode == "p":
            while pos < count and len(out) < limit:
                r = records[pos]
                if r.published_ms >= cutoff and match(r, pos):
                    out.append(self._event(r, pos))
                pos += 1
            more = True  # polling: the next link is always there, even on an empty page
        elif mode == "a":
            end = store.first_at_or_after(hi)
            while pos < end:
                r = records[pos]
                if r.published_ms >= max(lo, cutoff) and match(r, pos):
                    if len(out) >= limit:
                        more = True
                        break
                    out.append(self._event(r, pos))
                pos += 1
        else:
            while pos >= 0:
                r = records[pos]
                if r.published_ms < max(lo, cutoff):
                    break
                if r.published_ms < hi and match(r, pos):
                    if len(out) >= limit:
                        more = True
                        break
                    out.append(self._event(r, pos))
                pos -= 1
        headers = [("Link", f'<{self.url}{req.raw_path}>; rel="self"')]
        if more:
            token = seal(self._k_logs, {"m": mode, "p": pos, "lo": lo, "hi": hi})
            params = ordered_params(req.query, {"after", "since", "until"}) + [("after", token)]
            headers.append(("Link", f'<{with_query(self.url + "/api/v1/logs", params)}>; rel="next"'))
        return json_response(200, out, headers)

    def lite_event(self, r: LogRecord, seq: int) -> dict:
        """Just the fields filters usually touch, so filtering skips full rendering."""
        return {"eventType": r.event_type, "severity": "INFO",
                "displayMessage": DISPLAY_MESSAGES.get(r.event_type, r.event_type),
                "actor": self._actor(r), "target": self._targets(r, seq),
                "outcome": {"result": r.outcome, "reason": None},
                "debugContext": {"debugData": self._debug_data(r, seq)}}

    def _actor(self, r: LogRecord) -> dict:
        if r.event_type in ("user.authentication.sso", "user.session.start"):
            return {"id": r.user_id, "type": "User", "alternateId": r.login, "displayName": r.display_name,
                    "detailEntry": None}
        return {"id": self.org.admin_id, "type": "User", "alternateId": "sim.admin@example.com",
                "displayName": "Simulated Admin", "detailEntry": None}

    def _targets(self, r: LogRecord, seq: int) -> list[dict]:
        targets = []
        if r.user_id:
            targets.append({"id": r.user_id, "type": "User", "alternateId": r.login,
                            "displayName": r.display_name, "detailEntry": None})
        if r.app:
            targets.append({"id": self.org.app_id, "type": "AppInstance", "alternateId": "Twilio Flex",
                            "displayName": "Twilio Flex", "detailEntry": {"signOnModeType": "SAML_2_0"}})
            if r.event_type.startswith("application.user_membership"):
                targets.append({"id": "0ua" + r.user_id[3:], "type": "AppUser", "alternateId": r.login,
                                "displayName": r.display_name, "detailEntry": None})
        if r.group_id:
            targets.append({"id": r.group_id, "type": "UserGroup", "alternateId": "unknown",
                            "displayName": "Flex Agents", "detailEntry": None})
        if len(targets) > 1:  # clients must find targets by type, not by position
            k = seq % len(targets)
            targets = targets[k:] + targets[:k]
        return targets

    def _debug_data(self, r: LogRecord, seq: int) -> dict:
        data = {"requestId": token62(self._k_uuid ^ 1, seq, 24),
                "requestUri": f"/api/v1/users/{r.user_id}" if r.user_id else "/api/v1/logs"}
        if r.changed_attributes:
            data["changedAttributes"] = r.changed_attributes
        return data

    def _event(self, r: LogRecord, seq: int) -> dict:
        return {
            "actor": self._actor(r),
            "client": {"userAgent": {"rawUserAgent": "okta-flex-sync-simulator", "os": "Unknown",
                                     "browser": "UNKNOWN"},
                       "zone": "null", "device": "Computer", "id": None, "ipAddress": "127.0.0.1",
                       "geographicalContext": None},
            "authenticationContext": {"authenticationProvider": None, "credentialProvider": None,
                                      "credentialType": None, "issuer": None, "interface": None,
                                      "authenticationStep": 0,
                                      "externalSessionId": "trs" + token62(self._k_uuid ^ 2, seq, 19)},
            "displayMessage": DISPLAY_MESSAGES.get(r.event_type, r.event_type),
            "eventType": r.event_type,
            "outcome": {"result": r.outcome, "reason": None},
            "published": iso_ms(r.published_ms),
            "securityContext": {"asNumber": None, "asOrg": None, "isp": None, "domain": None, "isProxy": None},
            "severity": "INFO",
            "debugContext": {"debugData": self._debug_data(r, seq)},
            "legacyEventType": None,
            "transaction": {"type": "WEB", "id": token62(self._k_uuid ^ 3, seq, 24), "detail": {}},
            "uuid": fake_uuid(self._k_uuid, seq, r.published_ms),
            "version": "0",
            "request": {"ipChain": [{"ip": "127.0.0.1", "geographicalContext": None, "version": "V4",
                                     "source": None}]},
            "target": self._targets(r, seq),
        }


def _oauth_error(status: int, error: str, description: str) -> Response:
    return json_response(status, {"error": error, "error_description": description})


def _user_expression(text: str, *, search: bool):
    """Parse and validate a users `filter`/`search`; raise OktaError 400 like Okta."""
    try:
        node = scim.parse(text)
        if scim.has_not(node):
            raise scim.UnsupportedFilter("the 'not' operator is not supported")
        for cmp in scim.comparisons(node):
            _check_user_cmp(cmp, search)
        node = scim.normalize_dates(node, USER_DATE_ATTRS)
    except scim.FilterError as exc:
        name = "search" if search else "filter"
        if isinstance(exc, scim.UnsupportedFilter):
            raise OktaError(400, "E0000031", "Invalid search criteria.", (f"{name}: {exc}",)) from None
        raise _bad_param(name, str(exc)) from None
    return node


def _check_user_cmp(cmp: scim.Cmp, search: bool) -> None:
    attr, op = cmp.attr, cmp.op
    if not search:
        if attr not in USER_FILTER_ATTRS:
            raise scim.UnsupportedFilter(f"filtering on '{attr}' is not supported")
        allowed = {"eq", "gt", "ge", "lt", "le"} if attr == "lastUpdated" else {"eq"}
        if op not in allowed:
            raise scim.UnsupportedFilter(f"operator '{op}' is not supported for '{attr}'")
        return
    if attr not in SEARCH_TOP_ATTRS and not attr.startswith("profile."):
        raise scim.UnsupportedFilter(f"searching on '{attr}' is not supported")
    if op in ("ne", "ew"):
        raise scim.UnsupportedFilter(f"operator '{op}' is not supported")
    if op == "co" and attr not in SEARCH_CO_ATTRS:
        raise scim.UnsupportedFilter(f"operator 'co' is not supported for '{attr}'")


def _status_prefilter(node, fold: bool) -> str | None:
    """The status every match must have, if the expression requires one (cheap pre-check)."""
    if isinstance(node, scim.Cmp) and node.attr == "status" and node.op == "eq" and isinstance(node.value, str):
        return node.value.upper() if fold else node.value
    if isinstance(node, scim.And):
        return _status_prefilter(node.left, fold) or _status_prefilter(node.right, fold)
    return None


def _q_matcher(q: str):
    folded = q.casefold()

    def match(user: dict) -> bool:
        p = user["profile"]
        return any(isinstance(p.get(k), str) and p[k].casefold().startswith(folded)
                   for k in ("firstName", "lastName", "email", "login"))
    return match


def _log_expression(text: str):
    try:
        node = scim.parse(text)
        for cmp in scim.comparisons(node):
            if cmp.attr == "published":
                raise scim.UnsupportedFilter("'published' cannot be used in filter; use since and until")
        return node
    except scim.FilterError as exc:
        if isinstance(exc, scim.UnsupportedFilter):
            raise OktaError(400, "E0000031", "Invalid search criteria.", (f"filter: {exc}",)) from None
        raise _bad_param("filter", str(exc)) from None


def _log_keywords(q: str | None) -> list[str]:
    if not q:
        return []
    words = q.split()
    if len(words) > 10 or any(len(w) > 40 for w in words):
        raise _bad_param("q", "at most 10 keywords of at most 40 characters")
    return [w.casefold() for w in words]


def _log_matcher(api: OktaApi, node, keywords: list[str]):
    lite = node is None or all(c.attr.split(".")[0] in LOG_LITE_ROOTS for c in scim.comparisons(node))

    def match(r: LogRecord, seq: int) -> bool:
        if node is None and not keywords:
            return True
        view = api.lite_event(r, seq) if lite else api._event(r, seq)
        if node is not None and not scim.evaluate(node, view):
            return False
        if keywords:
            text = " ".join(str(x) for x in (r.event_type, r.login, r.display_name, r.user_id,
                                             view["displayMessage"])).casefold()
            return all(k in text for k in keywords)
        return True
    return match
