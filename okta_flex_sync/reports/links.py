"""Links from a finding to the user's page in the Okta admin console and the worker's page in
the Twilio console.  Ids come from attacker-influenced data, so a link is made only from ids of
the documented shape, and only http(s) URLs come out."""
from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_OKTA_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_WORKSPACE_SID = re.compile(r"WS[0-9a-fA-F]{32}")
_WORKER_SID = re.compile(r"WK[0-9a-fA-F]{32}")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}")
TWILIO_WORKER_URL = "https://console.twilio.com/us1/develop/taskrouter/workspaces/{workspace}/workers/{worker}"


def okta_admin_base(org_url: str | None) -> str | None:
    """https://acme.okta.com -> https://acme-admin.okta.com (the admin console's host); a local
    test server (localhost, an IP address) keeps its host.  None for anything else odd."""
    if not org_url:
        return None
    try:
        parts = urlsplit(org_url)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not _HOST.fullmatch(host) or parts.username or parts.password:
        return None
    if not _is_local(host):
        if parts.scheme != "https" or "." not in host:
            return None
        first, rest = host.split(".", 1)
        if not first.endswith("-admin"):
            host = f"{first}-admin.{rest}"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}"


def _is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def okta_user_url(admin_base: str | None, okta_user_id: str | None) -> str | None:
    if not admin_base or not okta_user_id or not _OKTA_ID.fullmatch(okta_user_id):
        return None
    return f"{admin_base}/admin/user/profile/view/{okta_user_id}"


def twilio_worker_url(workspace_sid: str | None, worker_sid: str | None) -> str | None:
    if not workspace_sid or not worker_sid or not _WORKSPACE_SID.fullmatch(workspace_sid) \
            or not _WORKER_SID.fullmatch(worker_sid):
        return None
    return TWILIO_WORKER_URL.format(workspace=workspace_sid, worker=worker_sid)
