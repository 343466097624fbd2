"""Drift artifacts published from a real Prefect flow run (the session's Prefect test harness)."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from okta_flex_sync.models.records import Finding
from okta_flex_sync.reports.document import build_report
from okta_flex_sync.tasks import artifacts

GENERATED = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)


def report_for(findings) -> dict:
    return build_report("run-1", GENERATED, {"okta_users": 3, "assigned_users": 2, "workers": 2}, findings)


def hostile_findings(payload: str) -> list[Finding]:
    return [Finding("privilege_escalation", "high", okta_user_id="00u1", login=payload, app_username=payload,
                    worker_sid="WK1", field="roles", expected="agent", actual=payload),
            Finding("missing_worker", "info", okta_user_id="00u3", login="carol@example.com",
                    app_username="carol@example.com")]


@pytest.mark.slow
def test_publish_artifacts_in_a_real_flow_run(prefect_harness):
    @flow
    def publish(findings):
        artifacts.publish_artifacts(report_for(findings))

    publish([])  # an empty high-severity table must be accepted too
    publish(hostile_findings("<b>|x"))

    async def latest():
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["drift-summary", "drift-high-severity", "drift-report"])))
        return {a.key: a for a in found}

    latest_by_key = asyncio.run(latest())
    assert set(latest_by_key) == {"drift-summary", "drift-high-severity", "drift-report"}
    assert latest_by_key["drift-report"].type == "markdown"
