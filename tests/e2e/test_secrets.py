"""Tokens and auth secrets never appear in logs (any level), exceptions, reports, the database,
Prefect artifacts/logs/states or test cassettes.

Each test runs the pipeline with known fake secrets, collects every place text ends up, and
scans it for the secrets themselves and for anything shaped like a credential.
"""
from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from cassette_support import CASSETTES
from conftest import FAKE_SECRETS, _truncate_all
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from okta_flex_sync.cli import app
from okta_flex_sync.jobs.nightly import run_nightly
from okta_flex_sync.settings import load_settings
from okta_flex_sync.storage.engine import make_engine

DB_PASSWORD = "pgPassw0rd-do-not-leak-5e1f"

# Shapes of a credential, whatever its value.  "***" is what redaction leaves behind.
LEAK_PATTERNS = {
    "simulator credential": re.compile(r"simfake", re.IGNORECASE),  # every credential the simulator issues has it
    "SSWS header": re.compile(r"SSWS\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]{6,}"),
    "Bearer header": re.compile(r"Bearer\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]{8,}"),
    "Basic header": re.compile(r"Basic\s+(?!\*\*\*)[A-Za-z0-9+/]{16,}=*"),
    "client assertion": re.compile(r"client_assertion=(?!\*\*\*)[A-Za-z0-9._-]{20,}"),
    "JWT": re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\."),
    "private key": re.compile(r"PRIVATE KEY-----"),
    "database password": re.compile(re.escape(DB_PASSWORD)),
}


def _b64(text_: str) -> str:
    return base64.b64encode(text_.encode()).decode()


def sim_secrets(sim) -> list[str]:
    """Every secret value a run against `sim` could hold, including derived Basic credentials."""
    pem_lines = [ln for ln in sim.oauth_private_key_pem.splitlines() if len(ln) > 40]
    return [sim.okta_api_token, sim.auth_token, sim.api_key_secret, *FAKE_SECRETS.values(), *pem_lines[:3],
            _b64(f"{sim.account_sid}:{sim.auth_token}"), _b64(f"{sim.api_key_sid}:{sim.api_key_secret}")]


def leaks(where: str, text_: str, secrets) -> list[str]:
    found = [f"{where}: secret value {s[:6]}…" for s in secrets if s and s in text_]
    found += [f"{where}: {name} ({m.group()[:24]}…)" for name, pat in LEAK_PATTERNS.items()
              for m in [pat.search(text_)] if m]
    return found


def scan(sources: dict[str, str], secrets) -> list[str]:
    return [hit for where, text_ in sources.items() for hit in leaks(where, text_, secrets)]


# --- what gets scanned ------------------------------------------------------------------------

def database_dump(url: str) -> dict[str, str]:
    """Every column of every table and view, raw API pages decompressed."""
    out = {}
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            for name in [*insp.get_table_names(), *insp.get_view_names()]:
                rows = conn.execute(text(f'SELECT * FROM "{name}"')).all()  # names from the catalog
                parts = []
                for row in rows:
                    for value in row:
                        if isinstance(value, (bytes, memoryview)):
                            value = gzip.decompress(bytes(value)).decode("utf-8", "replace")
                        parts.append(json.dumps(value, default=str, ensure_ascii=False))
                out[f"db:{name}"] = "\n".join(parts)
    finally:
        engine.dispose()
    return out


def report_files(root: Path) -> dict[str, str]:
    return {f"report:{p.relative_to(root)}": p.read_text(encoding="utf-8", errors="replace")
            for p in root.rglob("*") if p.is_file()}


def log_text(records) -> str:
    fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(fmt.format(r) for r in records)


def exception_text(exc: BaseException) -> str:
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


def with_password(url: str) -> str:
    """The Postgres URL with a password (trust auth ignores it): it must never show up either."""
    return url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1) if url.startswith("postgresql") else url


def use_oauth_and_api_key(sim, monkeypatch) -> None:
    monkeypatch.delenv("OKTA_API_TOKEN", raising=False)
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("OKTA_CLIENT_ID", sim.oauth_client_id)
    monkeypatch.setenv("OKTA_KEY_ID", sim.oauth_key_id)
    monkeypatch.setenv("OKTA_PRIVATE_KEY", sim.oauth_private_key_pem)
    monkeypatch.setenv("TWILIO_API_KEY_SID", sim.api_key_sid)
    monkeypatch.setenv("TWILIO_API_KEY_SECRET", sim.api_key_secret)


# --- the scans ----------------------------------------------------------------------------------

@pytest.mark.parametrize("secret,text_,found", [
    ("s3cr3t-value", "GET /users failed with s3cr3t-value", True),
    (None, "Authorization: SSWS 00abcdefghijklmnop", True),
    (None, "Authorization: SSWS ***", False),
    (None, "Authorization: Basic QUMxMjM0NTY3ODkwOnNlY3JldA==", True),
    (None, "headers={'authorization': 'Bearer abc.def.ghi-jkl'}", True),
    (None, "client_assertion=eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIwb2EifQ.sig", True),
    (None, "-----BEGIN PRIVATE KEY-----", True),
    (None, '{"token_type":"Bearer","access_token":"REDACTED"}', False),
    (None, "okta users: 200 records from 1 pages", False),
])
def test_the_scanner_finds_what_it_looks_for(secret, text_, found):
    assert bool(leaks("t", text_, [secret] if secret else [])) is found


def empty_database(request, name: str, tmp_path: Path) -> str:
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'secrets.db'}"
    url = request.getfixturevalue("pg_database_url")
    engine = make_engine(url)
    _truncate_all(engine)
    engine.dispose()
    return url


@pytest.mark.slow
@pytest.mark.parametrize("auth,database", [("api-token+auth-token", "sqlite"), ("oauth+api-key", "postgres")])
def test_no_secret_in_logs_exceptions_reports_or_database(auth, database, request, fresh_simulator, sim_env, caplog,
                                                          monkeypatch, tmp_path):
    sim = fresh_simulator(users=150, seed=21)  # seed 21: a 503 with Retry-After, then a 429, on the way
    url = with_password(empty_database(request, database, tmp_path))
    sim_env(sim, url)
    if auth.startswith("oauth"):
        use_oauth_and_api_key(sim, monkeypatch)
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    for name in (None, "httpx", "httpcore", "hpack", "okta_flex_sync", "sqlalchemy"):
        caplog.set_level(logging.DEBUG, logger=name)
    secrets = sim_secrets(sim)
    sources: dict[str, str] = {}

    settings = load_settings()
    sim.set_faults(fault_rate=0.1)  # retries and their warnings are where credentials like to slip out
    cli = CliRunner().invoke(app, ["run", "--no-prefect", "--apply", "--max-changes", "10000"])
    assert cli.exit_code == 0, cli.output
    sim.set_faults(fault_rate=0)
    sources["cli output"] = cli.output
    sources["reprs"] = " ".join(repr(x) for x in (settings.okta_api_token, settings.twilio_auth_token,
                                                   settings.okta_private_key, settings.twilio_api_key_secret))

    # Failing runs: a wrong Okta credential, then a wrong Twilio one (both are secrets too).
    for which, okta_token, twilio_token in (("Okta", FAKE_SECRETS["okta_api_token"], sim.auth_token),
                                            ("Twilio", sim.okta_api_token, FAKE_SECRETS["twilio_auth_token"])):
        bad = load_settings(okta_api_token=okta_token, twilio_auth_token=twilio_token, okta_client_id=None,
                            twilio_api_key_sid=None)
        with pytest.raises(Exception) as err:
            run_nightly(bad, full=True)
        assert "401" in str(err.value)
        sources[f"exception with a bad {which} credential"] = exception_text(err.value)
    monkeypatch.setenv("OKTA_API_TOKEN", FAKE_SECRETS["okta_api_token"])
    monkeypatch.delenv("OKTA_CLIENT_ID", raising=False)
    failed = CliRunner().invoke(app, ["run", "--no-prefect"])
    assert failed.exit_code == 1
    sources["cli output of a failed run"] = failed.output

    sources["logs"] = log_text(caplog.records)
    sources.update(report_files(Path(settings.report_dir)))
    sources.update(database_dump(url))
    assert "DEBUG" in sources["logs"] and any(k.startswith("report:") for k in sources)
    assert "retrying in" in sources["logs"], "the scan covers retry warnings"
    assert not scan(sources, secrets)


@pytest.mark.slow
def test_no_secret_on_stderr_of_a_failing_cli_at_debug(fresh_simulator, sim_env, tmp_path):
    """What an operator's log shipper sees: the CLI process's own stderr at LOG_LEVEL=DEBUG."""
    sim = fresh_simulator(users=100, seed=18)
    env = {**os.environ, **sim_env(sim), "LOG_LEVEL": "DEBUG", "TWILIO_AUTH_TOKEN": FAKE_SECRETS["twilio_auth_token"]}
    bad = subprocess.run([sys.executable, "-m", "okta_flex_sync.cli", "run", "--no-prefect"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 1 and "401" in bad.stderr, bad.stderr[-2000:]
    assert not scan({"stderr": bad.stderr, "stdout": bad.stdout}, sim_secrets(sim))


@pytest.mark.slow
def test_no_secret_in_prefect_artifacts_logs_or_states(prefect_harness, fresh_simulator, sim_env, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    from okta_flex_sync.flows.nightly import nightly_sync

    sim = fresh_simulator(users=150, seed=19)
    sim_env(sim)
    good = nightly_sync(return_state=True)
    assert good.is_completed(), good.message
    monkeypatch.setenv("OKTA_API_TOKEN", FAKE_SECRETS["okta_api_token"])
    bad = nightly_sync(full=True, return_state=True)
    assert bad.is_failed()
    ids = [good.state_details.flow_run_id, bad.state_details.flow_run_id]

    async def collect() -> dict[str, str]:
        async with get_client() as client:
            artifacts = await client.read_artifacts()
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
            runs = [await client.read_flow_run(i) for i in ids]
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        return {"artifacts": "\n".join(a.model_dump_json() for a in artifacts),
                "prefect logs": "\n".join(entry.message for entry in logs),
                "flow runs": "\n".join(r.model_dump_json() for r in runs),
                "task runs": "\n".join(t.model_dump_json() for t in tasks)}

    sources = asyncio.run(collect())
    assert "drift" in sources["artifacts"] and sources["prefect logs"], "there was something to scan"
    assert "401" in sources["flow runs"], "the failed run's state says why"
    assert not scan(sources, sim_secrets(sim))


def test_settings_repr_hides_the_database_password(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://sync:{DB_PASSWORD}@db.example/okta")
    settings = load_settings()
    assert not scan({"settings": f"{settings!r} {settings} {settings.model_dump()}"}, [DB_PASSWORD])


def test_no_secret_in_cassettes():
    from simulator.config import make_credentials
    from simulator.ids import rsa_private_key_pem

    recorded = json.loads((CASSETTES / "simulator.json").read_text())
    creds = make_credentials(recorded["seed"], recorded["flex_app_id"])
    pem = [ln for ln in rsa_private_key_pem(recorded["seed"]).splitlines() if len(ln) > 40]
    secrets = [creds.okta_api_token, creds.auth_token, creds.api_key_secret, *FAKE_SECRETS.values(), *pem[:3],
               _b64(f"{creds.account_sid}:{creds.auth_token}"), _b64(f"{creds.api_key_sid}:{creds.api_key_secret}")]
    files = sorted(p for p in CASSETTES.rglob("*") if p.is_file())
    assert files, "no cassettes to scan"
    assert not scan({str(p.relative_to(CASSETTES)): p.read_text(encoding="utf-8", errors="replace") for p in files},
                    secrets)
