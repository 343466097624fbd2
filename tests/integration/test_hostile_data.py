"""Okta profile values and worker attributes are attacker-controllable text.

A nightly run over an org full of markup, script, spreadsheet formulas, control characters
(NUL included: Postgres TEXT cannot hold it), 100 kB strings, wrong JSON types and malformed
worker JSON must complete on SQLite and Postgres, keep every SQL statement parameterized,
store only storable text, report what it could not parse, and write reports that stay inert.
"""
from __future__ import annotations

import ast
import csv
import dataclasses
import io
import json
import re
from pathlib import Path

import pytest
from conftest import DATABASES, _truncate_all
from sqlalchemy import inspect, select

from okta_flex_sync.jobs.nightly import run_nightly
from okta_flex_sync.models.tables import (
    drift_findings,
    okta_users,
    role_history,
    staged_workers,
    sync_runs,
)
from okta_flex_sync.settings import load_settings
from okta_flex_sync.storage.engine import make_engine

ROOT = Path(__file__).resolve().parents[2]
BIG = 100_000

# (case, profile attributes set on one assigned user, a note expected in okta_users.problems or None)
PROFILE_CASES = [
    ("script name", {"firstName": "<script>alert('x')</script>", "lastName": "Smith"}, None),
    ("markup name", {"lastName": '<img src=x onerror="alert(1)"><b>bold</b>'}, None),
    ("formula name", {"firstName": "=HYPERLINK(\"http://evil.example\",\"x\")", "lastName": "+1-1"}, None),
    ("formula behind blanks", {"firstName": " \t@SUM(A1)"}, None),
    ("sql in name", {"lastName": "Robert'); DROP TABLE role_history;--"}, None),
    ("nul and escapes", {"firstName": "Nul\x00Byte\x1b[31m", "lastName": "Bell\x07"}, "control characters removed"),
    ("nul in email", {"email": "nul\x00user@example.com"}, "control characters removed"),
    ("100 kB name", {"firstName": "A" * BIG}, "truncated to 1024"),
    ("name is an object", {"firstName": {"first": "Eve"}}, "profile.firstName: object instead of a string"),
    ("name is a list", {"lastName": ["Eve", "Mallory"]}, "profile.lastName: array instead of a string"),
    ("userType is a number", {"userType": 42}, "profile.userType: number"),
    ("userType is an object", {"userType": {"role": "admin"}}, "profile.userType: object"),
    ("userType is a boolean", {"userType": True}, "profile.userType: boolean"),
    ("userType is huge", {"userType": "agent," * (BIG // 6)}, "profile.userType: truncated"),
    ("javascript image url", {"imageUrl": "javascript:alert(document.domain)"}, None),
    ("bidi and zero width", {"firstName": "Zero\u200bWidth", "lastName": "\u202eevil\u202c"}, None),
]

# (case, attributes JSON of an existing worker, expected parse_error fragment or None when it parses)
WORKER_CASES = [
    ("wrong types", '{"full_name": {"x": 1}, "email": 5, "roles": "admin", "image_url": [1]}', None),
    ("junk roles", '{"full_name": "Junk Roles", "roles": [1, null, {"a": 1}, "admin", true]}', None),
    ("escaped nul", '{"full_name": "nul\\u0000byte", "email": "a\\u0000@x.com", "roles": ["agent"]}', None),
    ("100 kB name", json.dumps({"full_name": "W" * BIG, "roles": ["agent"]}), None),
    ("markup everywhere", json.dumps({"full_name": "<script>alert(2)</script>", "roles": ["<b>admin</b>"],
                                      "email": "=cmd|' /C calc'!A0"}), None),
    ("array", "[1, 2, 3]", "not an object"),
    ("number", "17", "not an object"),
]

# Attributes an independent TaskRouter may hand back although the simulator's API refuses them.
RAW_WORKER_CASES = [
    ("malformed with raw nul", '{"full_name": "raw\x00nul", "roles": ["admin"', "not valid JSON"),
    ("truncated json", '{"full_name": "Cut O', "not valid JSON"),
    ("deeply nested", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("control characters only", "\x00\x01\x02", "not valid JSON"),
]

# Items a hostile or broken Okta could put in a users page: none has a usable id.
JUNK_USERS = [
    ["an", "array"],
    "a string",
    42,
    None,
    {"id": None, "profile": {"login": "noid@example.com"}},
    {"id": "nul\x00id", "profile": {"login": "nulid@example.com"}},
    {"id": "x" * 300, "profile": {"login": "longid@example.com"}},
    {"id": {"$gt": ""}, "profile": {"login": "objectid@example.com"}},
    {"profile": {"login": "<script>alert(3)</script>"}},
]


# --- helpers ------------------------------------------------------------------------------

def _matched_workers(sim, users: list[str]) -> list[tuple[str, str]]:
    """(sid, friendly_name) of the workers of ACTIVE assigned users: the ones reconciled field by field."""
    out = []
    for uid in users:
        assignment, user = sim.org.assignment(uid), sim.org.user(uid)
        worker = sim.org.worker_by_name(assignment.app_username) if user["status"] == "ACTIVE" else None
        if worker is not None:
            out.append((worker["sid"], worker["friendly_name"]))
    return out


def plant(sim) -> dict:
    """Apply every case to its own assigned user / worker; returns what was planted where."""
    assigned = sorted(sim.org.assigned_user_ids())
    users = dict(zip((c[0] for c in PROFILE_CASES), assigned[10:]))
    for case, attrs, _note in PROFILE_CASES:
        sim.org.set_profile(users[case], **attrs)
    targets = _matched_workers(sim, assigned[10 + len(PROFILE_CASES):])
    assert len(targets) >= len(WORKER_CASES) + len(RAW_WORKER_CASES), "org too small for the worker cases"
    workers = {}
    for (case, attributes, _why), (sid, _name) in zip(WORKER_CASES, targets):
        sim.org.update_worker(sid, attributes=attributes)
        workers[case] = sid
    raw_workers = {}
    for (case, attributes, _why), (sid, name) in zip(RAW_WORKER_CASES, targets[len(WORKER_CASES):]):
        sim.org.delete_worker(sid)  # the simulator's API refuses such attributes: plant them directly
        raw_workers[case] = sim.org.workspace.add(name, attributes, 1_700_000_000_000).sid
    hostile_username = assigned[9]
    sim.org.assign(hostile_username, "<script>alert(4)</script>@evil.example")
    return {"users": users, "workers": workers, "raw_workers": raw_workers, "hostile_username": hostile_username}


def with_junk_users(settings):
    """An Okta client whose first users page also carries JUNK_USERS."""
    from okta_flex_sync.clients.okta import OktaClient

    okta = OktaClient.from_settings(settings)
    pages = okta.iter_user_pages

    def iter_user_pages(**kw):
        for n, page in enumerate(pages(**kw)):
            yield dataclasses.replace(page, items=[*page.items, *JUNK_USERS]) if n == 0 else page

    okta.iter_user_pages = iter_user_pages
    return okta


def db_rows(url: str, table, where=None) -> list[dict]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            q = select(table) if where is None else select(table).where(where)
            return [dict(r) for r in conn.execute(q).mappings()]
    finally:
        engine.dispose()


def all_text_values(url: str):
    """Every str stored in every column of every table."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            for name in inspect(conn).get_table_names():
                for row in conn.exec_driver_sql(f'SELECT * FROM "{name}"'):  # table names from the catalog
                    for value in row:
                        if isinstance(value, str):
                            yield name, value
    finally:
        engine.dispose()


@pytest.fixture(scope="module", params=DATABASES)
def hostile_run(request, tmp_path_factory):
    """One run over the hostile org per database, shared by the tests that inspect it."""
    from simulator import SimulatorConfig, start_simulator

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'run.db'}"
    else:
        url = request.getfixturevalue("pg_database_url")
        engine = make_engine(url)
        _truncate_all(engine)
        engine.dispose()
    sim = start_simulator(SimulatorConfig(users=450, seed=13))
    try:
        with pytest.MonkeyPatch.context() as mp:
            env = {**sim.env(), "DATABASE_URL": url, "REPORT_DIR": str(tmp_path_factory.mktemp("reports"))}
            for k, v in env.items():
                mp.setenv(k, v)
            planted = plant(sim)
            settings = load_settings()
            outcome = run_nightly(settings, okta=with_junk_users(settings))
        yield sim, planted, outcome, url
    finally:
        sim.stop()


# --- the run ------------------------------------------------------------------------------

def test_hostile_org_run_completes_and_stores_only_storable_text(hostile_run):
    sim, planted, outcome, url = hostile_run
    assert db_rows(url, sync_runs, sync_runs.c.run_id == outcome.run_id)[0]["status"] == "succeeded"
    assert outcome.counts["okta_users"] == 450 and outcome.counts["workers"] == len(sim.org.workers())
    for table, value in all_text_values(url):
        assert "\x00" not in value, f"NUL stored in {table}"
        assert not re.search("[\ud800-\udfff]", value), f"lone surrogate stored in {table}"

    users = {r["okta_user_id"]: r for r in db_rows(url, okta_users)}
    for case, attrs, note in PROFILE_CASES:
        row = users[planted["users"][case]]
        assert len(row["full_name"]) <= 1024 and len(row["email"] or "") <= 1024, case
        if note:
            assert note in row["problems"], (case, row["problems"])
    assert users[planted["users"]["sql in name"]]["full_name"].endswith("Robert'); DROP TABLE role_history;--")
    assert db_rows(url, role_history), "role_history survived the name that tried to drop it"


def test_publish_gets_in_memory_exactly_what_staging_holds(hostile_run, monkeypatch, tmp_path):
    """Publish takes the landed assignments and workers from memory instead of reading them
    back; with NUL, surrogates, junk types and 100 kB values they must equal the staged rows."""
    import okta_flex_sync.jobs.nightly as sync
    from okta_flex_sync.storage import staging as staging_db

    sim, _planted, _outcome, url = hostile_run
    compared = []
    real_publish = sync.publish

    def checking_publish(ctx, extracted, **kw):
        with ctx.engine.connect() as conn:
            staged_assignments = staging_db.staged_assignments(conn, ctx.run_id)
            staged_workers_ = staging_db.staged_worker_list(conn, ctx.run_id)
        assert extracted.landed_assignments == staged_assignments
        assert sorted(extracted.landed_workers.values(), key=lambda w: w.worker_sid) == staged_workers_
        compared.append((len(staged_assignments), len(staged_workers_)))
        return real_publish(ctx, extracted, **kw)

    monkeypatch.setattr(sync, "publish", checking_publish)
    for k, v in {**sim.env(), "DATABASE_URL": url, "REPORT_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    run_nightly(load_settings(), full=True)
    assert compared and compared[0][1] == len(sim.org.workers())
    assert any("\\x00" in (w.attributes_raw or "") for w in store_workers(url)), "the NUL case was not exercised"


def store_workers(url: str):
    from okta_flex_sync.storage import runs as runs_db
    from okta_flex_sync.storage import staging as staging_db

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return staging_db.staged_worker_list(conn, runs_db.last_run(conn)["run_id"])
    finally:
        engine.dispose()


def test_unparseable_records_are_reported_not_fatal(hostile_run):
    _sim, planted, outcome, url = hostile_run
    workers = {r["worker_sid"]: r for r in db_rows(url, staged_workers, staged_workers.c.run_id == outcome.run_id)}
    for case, attributes, why in WORKER_CASES:
        row = workers[planted["workers"][case]]
        if why is None:
            assert row["parse_error"] is None, (case, row["parse_error"])
        else:
            assert why in (row["parse_error"] or ""), (case, row["parse_error"])
        assert len(row["full_name"] or "") <= 1024, case
    for case, _attributes, why in RAW_WORKER_CASES:
        row = workers[planted["raw_workers"][case]]
        assert why in row["parse_error"], (case, row["parse_error"])
    unparseable = {f["worker_sid"] for f in db_rows(url, drift_findings, drift_findings.c.run_id == outcome.run_id)
                   if f["kind"] == "unparseable_attributes"}
    bad = {planted["workers"][c] for c, _a, why in WORKER_CASES if why} | set(planted["raw_workers"].values())
    assert bad <= unparseable

    doc = json.loads(Path(outcome.report_paths["json"]).read_text(encoding="utf-8"))
    run = db_rows(url, sync_runs, sync_runs.c.run_id == outcome.run_id)[0]
    assert run["counts"]["skipped_records"] == len(JUNK_USERS)
    dropped = [s for s in doc["skipped"] if not s["reason"].startswith("kept, but")]
    kept = [s for s in doc["skipped"] if s["reason"].startswith("kept, but")]
    assert len(dropped) == len(JUNK_USERS) and {s["source"] for s in dropped} == {"users"}
    assert kept and run["counts"]["problem_records"] >= len(kept), "kept records with unreadable values are reported"
    assert all(s["reason"] and "\x00" not in (s["id"] or "") for s in doc["skipped"])


def test_reports_stay_inert_and_readable(hostile_run):
    _sim, _planted, outcome, _url = hostile_run
    paths = {fmt: Path(p) for fmt, p in outcome.report_paths.items()}
    page = paths["html"].read_text(encoding="utf-8")
    for raw in ("<script>alert", "<img src=x", "<b>bold", "<b>admin", "\x00", "\x1b"):
        assert raw not in page, raw
    assert len(re.findall(r"<script\b", page)) == 2, "only the report's own JSON data and code blocks"
    assert not re.search(r"""(?:href|src|action)\s*=\s*["']?\s*javascript:""", page, re.IGNORECASE)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page, "hostile names are shown, escaped"

    rows = list(csv.reader(io.StringIO(paths["csv"].read_text(encoding="utf-8-sig"))))
    assert all(len(r) == len(rows[0]) for r in rows), "no value breaks the CSV structure"
    for row in rows:
        for cell in row:
            assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r") and cell.lstrip()[:1] not in ("=", "+", "@"), cell
    assert any(cell.startswith("'=") for row in rows for cell in row), "formulas kept, defused"

    md = paths["md"].read_text(encoding="utf-8")
    assert "<script" not in md and "<img" not in md and "\x00" not in md
    json.loads(paths["json"].read_text(encoding="utf-8"))


# --- SQL stays parameterized ----------------------------------------------------------------

_SQL_CALLS = {"text", "execute", "exec_driver_sql", "executescript", "executemany"}
# Every module that runs against data (the frozen migrations only issue fixed DDL).
_RUNTIME_SOURCES = sorted(p for p in (ROOT / "okta_flex_sync").rglob("*.py") if "migrations" not in p.parts)


def _built_sql(node: ast.AST) -> bool:
    """An SQL argument assembled at run time: f-string, concatenation, % or .format()."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return isinstance(node.left, (ast.Constant, ast.JoinedStr, ast.BinOp)) and not (
            isinstance(node.left, ast.Constant) and isinstance(node.right, ast.Constant))
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"
            and isinstance(node.func.value, ast.Constant))


@pytest.mark.parametrize("source", _RUNTIME_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_sql_is_never_built_from_strings(source):
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in _SQL_CALLS:
                assert not _built_sql(node.args[0]), f"{source.name}:{node.lineno} builds SQL text from values"


@pytest.mark.parametrize("snippet,built", [
    ('conn.execute(text(f"SELECT * FROM t WHERE a = {x}"))', True),
    ('conn.execute(text("SELECT * FROM t WHERE a = " + x))', True),
    ('conn.exec_driver_sql("SELECT %s" % x)', True),
    ('conn.execute(text("SELECT {}".format(x)))', True),
    ('conn.execute(text("SELECT * FROM t WHERE a = :a"), {"a": x})', False),
    ("conn.execute(select(t).where(t.c.a == x))", False),
])
def test_the_sql_scan_itself_catches_string_building(snippet, built):
    calls = [n for n in ast.walk(ast.parse(snippet)) if isinstance(n, ast.Call) and n.args
             and getattr(n.func, "attr", getattr(n.func, "id", "")) in _SQL_CALLS]
    assert any(_built_sql(c.args[0]) for c in calls) is built
