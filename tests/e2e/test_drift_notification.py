"""Issue 15: the drift digest reaches the notification automation (automations/notify-on-drift.yaml)
as a Prefect event, and as the `drift-digest` artifact of the flow run."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from string import Template
from uuid import uuid4

import pytest
import yaml

from okta_flex_sync.models.records import Finding
from okta_flex_sync.reports.document import build_report
from okta_flex_sync.storage.common import utcnow
from okta_flex_sync.tasks import artifacts

ROOT = Path(__file__).resolve().parents[2]
AUTOMATION = ROOT / "automations" / "notify-on-drift.yaml"
WK = "WK" + "1" * 32


def _automation(block_id: str = "00000000-0000-4000-8000-000000000000") -> dict:
    return yaml.safe_load(Template(AUTOMATION.read_text()).substitute(NOTIFICATION_BLOCK_ID=block_id))


def _report(status: str, severity: str = "high") -> dict:
    kind = "privilege_escalation" if severity == "high" else "roles_mismatch"
    finding = {**Finding(kind, severity, okta_user_id="00u1", login="ann@example.com", worker_sid=WK).as_dict(),
               "status": status}
    return build_report("r7", datetime(2026, 3, 2, tzinfo=timezone.utc), {}, [finding],
                        delta={"previous_run_id": "r6"})


@pytest.mark.parametrize("status, severity, event", [
    ("new", "high", "okta-flex-sync.drift.new-high"),
    ("persisting", "high", "okta-flex-sync.drift.digest"),
    ("new", "medium", "okta-flex-sync.drift.digest"),
])
def test_digest_event(status, severity, event):
    report = _report(status, severity)
    e = artifacts.digest_event(report, "DIGEST", "reports/r7/")
    assert e["event"] == event
    assert e["resource"] == {"prefect.resource.id": "okta-flex-sync.drift-report.r7",
                             "prefect.resource.name": "drift report r7"}
    assert e["payload"] == {"run_id": "r7", "digest": "DIGEST", "location": "reports/r7/",
                            "new": 1 if status == "new" else 0, "resolved": 0, "open": 1,
                            "new_high": 1 if (status, severity) == ("new", "high") else 0,
                            "open_high": 1 if severity == "high" else 0, "previous_run_id": "r6"}


@pytest.mark.parametrize("event, resource, fires", [
    ("okta-flex-sync.drift.new-high", "okta-flex-sync.drift-report.r7", True),
    ("okta-flex-sync.drift.digest", "okta-flex-sync.drift-report.r7", False),
    ("okta-flex-sync.drift.new-high", "someone-else.report.r7", False),
    ("prefect.flow-run.Completed", "prefect.flow-run.123", False),
])
def test_drift_automation_fires_on_new_high_findings_only(event, resource, fires):
    from prefect.server.events.schemas.automations import EventTrigger
    from prefect.server.events.schemas.events import ReceivedEvent

    trigger = EventTrigger.model_validate(_automation()["trigger"])
    received = ReceivedEvent(occurred=utcnow(), event=event, id=uuid4(), resource={"prefect.resource.id": resource})
    assert trigger.covers(received) is fires


def test_drift_automation_body_uses_the_digest():
    (action,) = _automation()["actions"]
    assert action["type"] == "send-notification"
    assert "{{ event.payload.digest }}" in action["body"] and "{{ event.payload.new_high }}" in action["subject"]


@pytest.mark.usefixtures("prefect_harness")
def test_drift_automation_file_creates_a_working_automation():
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    block_id = CustomWebhookNotificationBlock(name="ops", url="https://alerts.example.invalid/hook").save(
        "okta-flex-sync-test-drift-alerts", overwrite=True)
    with get_client(sync_client=True) as client:
        automation_id = client.create_automation(AutomationCore.model_validate(_automation(str(block_id))))
        try:
            stored = client.read_automation(automation_id)
            assert stored.name == "okta-flex-sync new high-severity drift" and stored.enabled
            assert stored.actions[0].block_document_id == block_id
        finally:
            client.delete_automation(automation_id)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_digest_artifact_and_event_in_a_real_flow_run(monkeypatch):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    sent = []
    real = artifacts.emit_digest_event
    monkeypatch.setattr(artifacts, "emit_digest_event", lambda *a: (sent.append(a[0]["run_id"]), real(*a)))

    @flow
    def publish():
        artifacts.publish_artifacts(_report("new"), location="reports/r7/")

    publish()

    async def digest():
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["drift-digest"])))
        return found

    ours = [a for a in asyncio.run(digest()) if "okta-flex-sync r7" in (a.data or "")]
    assert ours and {a.type for a in ours} == {"markdown"}
    assert ours[0].data.startswith("**okta-flex-sync r7**: 1 new, 0 resolved, 1 open (1 high) — reports/r7/")
    assert sent == ["r7"]
