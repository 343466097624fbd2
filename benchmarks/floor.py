"""The floor of a nightly run: a bare client walking the same listings, and nothing else.

Plain `urllib` and the standard library's `json`, no pipeline code: the Okta users listing (all
users, then the DEPROVISIONED ones a plain listing hides, as a full run does), the Flex app's
users and the TaskRouter workers, each in its own thread, every page fetched and decoded and its
next link followed.  Workers listed with `attributes: null` are not fetched one by one: a bare
listing does not need them, the run does (so the floor is, if anything, low).

    python benchmarks/floor.py        # settings from the environment, as for the run; prints JSON
"""
from __future__ import annotations

import base64
import json
import os
import re
import resource
import sys
import threading
import time
import urllib.parse
import urllib.request

_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')


def _get(url: str, headers: dict) -> tuple[bytes, str]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read(), ", ".join(response.headers.get_all("Link") or ())


def walk_okta(url: str, headers: dict) -> tuple[int, int]:
    """(pages, items) of one Okta listing, following `Link: <...>; rel="next"`."""
    pages = items = 0
    while url:
        body, link = _get(url, headers)
        items += len(json.loads(body))
        pages += 1
        found = [m.group(1) for part in link.split(",") if (m := _NEXT.search(part))]
        url = found[0] if found else None
    return pages, items


def walk_taskrouter(url: str, headers: dict) -> tuple[int, int]:
    """(pages, items) of the TaskRouter workers listing, following `meta.next_page_url`."""
    pages = items = 0
    while url:
        body, _link = _get(url, headers)
        doc = json.loads(body)
        items += len(doc["workers"])
        pages += 1
        url = (doc.get("meta") or {}).get("next_page_url")
    return pages, items


def listings(env: dict) -> dict:
    """name -> (walk function, first URL, headers) for the settings in `env`."""
    okta = env["OKTA_ORG_URL"].rstrip("/")
    okta_headers = {"Authorization": f"SSWS {env['OKTA_API_TOKEN']}", "Accept": "application/json"}
    basic = base64.b64encode(f"{env['TWILIO_ACCOUNT_SID']}:{env['TWILIO_AUTH_TOKEN']}".encode()).decode()
    twilio_headers = {"Authorization": f"Basic {basic}", "Accept": "application/json"}
    deprovisioned = urllib.parse.quote('status eq "DEPROVISIONED"')
    app = urllib.parse.quote(env["OKTA_FLEX_APP_ID"], safe="")
    workers = f"{env['TASKROUTER_BASE_URL'].rstrip('/')}/v1/Workspaces/{env['TWILIO_WORKSPACE_SID']}/Workers?PageSize=1000"
    return {
        "users": [(walk_okta, f"{okta}/api/v1/users?limit=200", okta_headers),
                  (walk_okta, f"{okta}/api/v1/users?limit=200&filter={deprovisioned}", okta_headers)],
        "assignments": [(walk_okta, f"{okta}/api/v1/apps/{app}/users?limit=500", okta_headers)],
        "workers": [(walk_taskrouter, workers, twilio_headers)],
    }


def measure(env: dict) -> dict:
    """Walk the three listings concurrently (one thread each, as the run does); wall and CPU
    seconds of the whole, and when each listing ended."""
    out: dict = {"listings": {}, "pages": {}, "items": {}}
    errors: list[BaseException] = []
    started, cpu = time.perf_counter(), time.process_time()

    def walk(name: str, parts: list) -> None:
        try:
            pages = items = 0
            for fn, url, headers in parts:
                p, i = fn(url, headers)
                pages, items = pages + p, items + i
            out["pages"][name], out["items"][name] = pages, items
            out["listings"][name] = round(time.perf_counter() - started, 3)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=walk, args=(name, parts)) for name, parts in listings(env).items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    out["wall"] = round(time.perf_counter() - started, 3)
    out["cpu"] = round(time.process_time() - cpu, 3)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


if __name__ == "__main__":
    sys.stdout.write(json.dumps(measure(dict(os.environ))) + "\n")
