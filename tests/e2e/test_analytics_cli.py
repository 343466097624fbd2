"""`roles snapshot`, `roles changes` and `export`: formats, the instant used, and bad input
(one line, exit 2, nothing created) on SQLite and Postgres."""
import csv
import io
import json
from datetime import datetime

import pandas as pd
import pytest
from typer.testing import CliRunner

from okta_flex_sync.cli import app
from okta_flex_sync.models.tables import role_history
from okta_flex_sync.storage.bulk import insert_tuples

OPEN = datetime(9999, 12, 31)
D = datetime
COLS = ["okta_user_id", "login", "app_username", "status", "assigned", "roles", "full_name", "email",
        "valid_from", "valid_to", "run_id", "source"]
ROWS = [
    ("00u1", "ann@x.com", "ann", "ACTIVE", True, "agent", "Ann", None, D(2026, 1, 1), D(2026, 3, 1, 10), "r1", "nightly"),
    ("00u1", "ann@x.com", "ann", "ACTIVE", True, "admin,agent", "Ann", None, D(2026, 3, 1, 10), OPEN, "r2", "nightly"),
    ("00u2", "=cmd@x.com", "bob", "ACTIVE", True, "agent", "Bob", None, D(2026, 2, 1), OPEN, "r1", "nightly"),
]


@pytest.fixture
def db(engine, monkeypatch, tmp_path):
    with engine.begin() as conn:
        insert_tuples(conn, role_history, COLS, ROWS)
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.chdir(tmp_path)
    return engine


def invoke(*args):
    return CliRunner().invoke(app, list(args))


def test_snapshot_csv_names_the_instant(db):
    result = invoke("roles", "snapshot", "--as-of", "2026-03-01 10:00", "--format", "csv")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip() == "as of 2026-03-01T10:00:00Z"
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["okta_user_id"], r["login"], r["roles"], r["assigned"], r["valid_from"]) for r in rows] == [
        ("00u1", "ann@x.com", "admin,agent", "true", "2026-03-01T10:00:00Z"),
        ("00u2", "'=cmd@x.com", "agent", "true", "2026-02-01T00:00:00Z"),
    ]
    assert list(rows[0]) == ["okta_user_id", "login", "status", "assigned", "roles", "valid_from", "run_id"]


def test_changes_json(db):
    result = invoke("roles", "changes", "--from", "2026-03-01", "--to", "2026-03-02T00:00:00Z", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert "from 2026-03-01T00:00:00Z (inclusive) to 2026-03-02T00:00:00Z (exclusive)" in result.stderr
    assert json.loads(result.stdout) == [{
        "okta_user_id": "00u1", "login": "ann@x.com", "changed_at": "2026-03-01T10:00:00Z", "change_type": "roles",
        "roles_before": "agent", "roles_after": "admin,agent", "status_before": "ACTIVE", "status_after": "ACTIVE",
        "assigned_before": True, "assigned_after": True}]
    seen = invoke("roles", "changes", "--from", "2026-01-01", "--to", "2026-02-02", "--include-first-seen", "-f", "json")
    assert [(r["okta_user_id"], r["change_type"]) for r in json.loads(seen.stdout)] == [
        ("00u1", "first_seen"), ("00u2", "first_seen")]


def test_export_parquet_keeps_types(db, tmp_path):
    out = tmp_path / "snap.parquet"
    result = invoke("export", "snapshot", "--as-of", "2026-03-02", "--format", "parquet", "--output", str(out))
    assert result.exit_code == 0, result.stderr
    df = pd.read_parquet(out)
    assert [list(r) for r in df.roles] == [["admin", "agent"], ["agent"]]
    assert str(df.valid_from.dtype) == "datetime64[us, UTC]" and df.assigned.dtype == bool
    hist = tmp_path / "h.parquet"
    assert invoke("export", "role_history", "-f", "parquet", "-o", str(hist)).exit_code == 0
    h = pd.read_parquet(hist)
    assert len(h) == 3 and h.valid_to.isna().sum() == 2 and h.valid_to.max() == pd.Timestamp("2026-03-01T10:00Z")


def test_export_grants_csv_to_file(db, tmp_path):
    out = tmp_path / "g.csv"
    assert invoke("export", "grants", "--format", "csv", "--output", str(out)).exit_code == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["okta_user_id"], r["role"], r["granted_at"], r["revoked_at"]) for r in rows] == [
        ("00u1", "admin", "2026-03-01T10:00:00Z", ""), ("00u1", "agent", "2026-01-01T00:00:00Z", ""),
        ("00u2", "agent", "2026-02-01T00:00:00Z", "")]


@pytest.mark.parametrize("args, message", [
    (["export", "users"], "unknown export 'users'"),
    (["roles", "snapshot", "--as-of", "yesterday"], "--as-of must be a date"),
    (["roles", "snapshot", "--as-of", "2026-13-01"], "--as-of must be a date"),
    (["roles", "snapshot", "--as-of", "2999-01-01"], "is in the future"),
    (["roles", "changes", "--from", "2026-03-02", "--to", "2026-03-01"], "--from 2026-03-02T00:00:00Z is after --to"),
    (["roles", "changes", "--to", "2026-03-01"], "--from WHEN is required"),
    (["roles", "changes", "--from", "2026-01-01", "--to", "2999-01-01"], "--to 2999-01-01T00:00:00Z is in the future"),
    (["export", "snapshot", "--from", "2026-01-01"], "--from does not apply to export snapshot"),
    (["export", "snapshot", "--format", "parquet"], "--format parquet needs --output FILE"),
    (["export", "snapshot", "--output", "missing/dir/x.csv"], "does not exist"),
])
def test_bad_input_one_line_exit_2_nothing_written(db, tmp_path, args, message):
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_missing_sqlite_database_is_not_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'nope.db'}")
    for args in (["roles", "snapshot"], ["export", "role_history", "-o", "x.csv"],
                 ["evidence", "--as-of", "2026-01-01", "--output", "ev"]):
        result = invoke(*args)
        assert result.exit_code == 2 and f"no database at {tmp_path / 'nope.db'}" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_is_a_usage_error(db):
    result = invoke("roles", "snapshot", "--format", "xlsx")
    assert result.exit_code == 2


def test_evidence_writes_files_and_manifest(db, tmp_path):
    import hashlib

    from okta_flex_sync.models.tables import sync_runs

    with db.begin() as conn:
        conn.execute(sync_runs.insert().values(run_id="r1", flow="nightly-sync", org_url="https://acme.okta.com",
                                               started_at=D(2026, 1, 1), finished_at=D(2026, 1, 1, 0, 5),
                                               status="succeeded", parameters={}, counts={}, watermarks={}))
        conn.execute(sync_runs.insert().values(run_id="r2", flow="nightly-sync", org_url="https://acme.okta.com",
                                               started_at=D(2026, 3, 2), finished_at=D(2026, 3, 2, 0, 5),
                                               status="succeeded", parameters={}, counts={}, watermarks={}))
    first = invoke("evidence", "--as-of", "2026-02-15", "--since", "2026-01-01", "--output", str(tmp_path / "q1"))
    assert first.exit_code == 0, first.stderr
    manifest = json.loads((tmp_path / "q1" / "manifest.json").read_text())
    assert manifest["org_url"] == "https://acme.okta.com" and manifest["tool_version"]
    assert manifest["as_of"] == "2026-02-15T00:00:00Z" and manifest["since"] == "2026-01-01T00:00:00Z"
    assert manifest["generated_at"].endswith("Z")
    assert [r["run_id"] for r in manifest["runs"]] == ["r1"]
    for name in ("snapshot.csv", "changes.csv", "findings.csv"):
        data = (tmp_path / "q1" / name).read_bytes()
        assert manifest["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["files"]["snapshot.csv"]["rows"] == 2 and manifest["files"]["changes.csv"]["rows"] == 0

    # The next review starts where the previous one ended.
    second = invoke("evidence", "--as-of", "2026-03-05", "--output", str(tmp_path / "q2"))
    assert second.exit_code == 0, second.stderr
    manifest = json.loads((tmp_path / "q2" / "manifest.json").read_text())
    assert manifest["since"] == "2026-02-15T00:00:00Z" and manifest["previous_review"] == "2026-02-15T00:00:00Z"
    assert [r["run_id"] for r in manifest["runs"]] == ["r1", "r2"]
    changes = list(csv.DictReader((tmp_path / "q2" / "changes.csv").open()))
    assert [(c["okta_user_id"], c["change_type"], c["roles_after"]) for c in changes] == [("00u1", "roles", "admin,agent")]

    again = invoke("evidence", "--as-of", "2026-03-05", "--output", str(tmp_path / "q2"))
    assert again.exit_code == 2 and "not an empty directory" in again.stderr
    late = invoke("evidence", "--as-of", "2026-03-05", "--since", "2026-03-06", "--output", str(tmp_path / "q3"))
    assert late.exit_code == 2 and "--since 2026-03-06T00:00:00Z is after --as-of" in late.stderr
    assert not (tmp_path / "q3").exists()


def test_piped_output_defaults_to_csv_and_findings_without_run_is_empty(db):
    result = invoke("roles", "snapshot", "--as-of", "2026-02-15")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["okta_user_id,login,status,assigned,roles,valid_from,run_id",
                                          "00u1,ann@x.com,ACTIVE,true,agent,2026-01-01T00:00:00Z,r1",
                                          "00u2,'=cmd@x.com,ACTIVE,true,agent,2026-02-01T00:00:00Z,r1"]
    empty = invoke("export", "findings", "--format", "json")
    assert empty.exit_code == 0 and json.loads(empty.stdout) == [] and "no findings" in empty.stderr


def test_missing_postgres_database(engine, monkeypatch, tmp_path):
    if engine.dialect.name != "postgresql":
        pytest.skip("Postgres only")
    missing = engine.url.set(database="ofs_no_such_database_14").render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", missing)
    result = invoke("export", "snapshot", "--output", str(tmp_path / "s.csv"))
    assert result.exit_code == 2 and "database 'ofs_no_such_database_14' does not exist (DATABASE_URL=" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "s.csv").exists()
