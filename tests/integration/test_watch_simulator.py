"""What the watch needs from the simulator, per the Okta and TaskRouter specs: one app user,
the app's groups, the workers list filtered by FriendlyName, and a control hook that changes one
user the way an admin would (with the System Log event Okta writes)."""
from __future__ import annotations

import httpx
import pytest

from okta_flex_sync.clients.http import NotFoundError
from okta_flex_sync.clients.okta import OktaClient, SSWSAuth
from okta_flex_sync.clients.taskrouter import TaskRouterClient

pytestmark = pytest.mark.slow


@pytest.fixture
def sim(fresh_simulator):
    return fresh_simulator(users=120, seed=9)


def _clients(sim):
    return (OktaClient(sim.url, SSWSAuth(sim.okta_api_token)),
            TaskRouterClient(sim.url, sim.workspace_sid, sim.account_sid, sim.auth_token))


def test_app_user_app_groups_and_workers_by_friendly_name(sim):
    okta, tr = _clients(sim)
    with okta, tr:
        uid = next(u for u in sim.org.assigned_user_ids()
                   if sim.org.workspace.by_name(sim.org.assignment(u).app_username) is not None)
        name = sim.org.assignment(uid).app_username
        app_user = okta.get_app_user(sim.flex_app_id, uid)
        assert (app_user["id"], app_user["credentials"]["userName"]) == (uid, name)
        unassigned = next(u["id"] for u in (sim.org.user(sim.org.user_id(i)) for i in range(120))
                          if u and sim.org.assignment(u["id"]) is None)
        with pytest.raises(NotFoundError):
            okta.get_app_user(sim.flex_app_id, unassigned)
        groups = [g for page in okta.iter_app_group_pages(sim.flex_app_id) for g in page.items]
        assert [g["id"] for g in groups] == [sim.org.group_id]
        worker = sim.org.workspace.by_name(name)
        listed = [w for page in tr.iter_worker_pages(friendly_name=name.upper()) for w in page.items]
        assert [w["sid"] for w in listed] == [worker["sid"]]
        assert [w for page in tr.iter_worker_pages(friendly_name="nobody@example.invalid") for w in page.items] == []


@pytest.mark.parametrize("change, event", [
    ({"status": "SUSPENDED"}, "user.lifecycle.suspend"),
    ({"userType": "agent,admin"}, "user.account.update_profile"),
    ({"unassign": True}, "application.user_membership.remove"),
])
def test_control_hook_changes_one_user_and_logs_it(sim, change, event):
    uid = sim.org.assigned_user_ids()[1]
    response = httpx.post(f"{sim.url}/__sim/user", json={"user_id": uid, **change})
    assert response.status_code == 200
    records, n = sim.org.log.snapshot()
    assert (records[n - 1].event_type, records[n - 1].user_id) == (event, uid)


@pytest.mark.parametrize("payload, message", [
    ({"user_id": "00uNOBODY", "status": "SUSPENDED"}, "no user"),
    ({"status": "SUSPENDED"}, "no user"),
    ({"user_id": "<unassigned>", "unassign": True}, "not assigned"),
    ({"user_id": "<assigned>", "status": "ASLEEP"}, "unknown Okta user status"),
])
def test_control_hook_refuses_bad_input(sim, payload, message):
    assigned = sim.org.assigned_user_ids()[2]
    unassigned = next(u["id"] for u in (sim.org.user(sim.org.user_id(i)) for i in range(120))
                      if u and sim.org.assignment(u["id"]) is None)
    payload = {k: {"<assigned>": assigned, "<unassigned>": unassigned}.get(v, v) if isinstance(v, str) else v
               for k, v in payload.items()}
    response = httpx.post(f"{sim.url}/__sim/user", json=payload)
    assert response.status_code == 400 and message in response.json()["error"]
