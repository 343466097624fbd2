"""Access-review evidence (SOC 2 / ISO 27001): who had which Flex role at a moment, what changed
since the previous review, the latest findings, and a manifest with SHA-256 of every file."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Engine, select

from okta_flex_sync.analytics import frames
from okta_flex_sync.analytics.export import write
from okta_flex_sync.analytics.timeparse import format_instant, parse_when, to_storage
from okta_flex_sync.models.tables import sync_runs
from okta_flex_sync.storage.runs import new_run_id

EVIDENCE_FLOW = "evidence"
COVERING_FLOWS = ("nightly-sync", "backfill", "reconcile")
FILES = ("snapshot.csv", "changes.csv", "findings.csv")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def previous_review(engine: Engine, as_of: datetime) -> datetime | None:
    """The `as_of` of the latest earlier evidence run before this one, if any."""
    with engine.connect() as conn:
        rows = conn.execute(select(sync_runs.c.parameters).where(sync_runs.c.flow == EVIDENCE_FLOW,
                                                                 sync_runs.c.status == "succeeded")).scalars().all()
    earlier = []
    for params in rows:
        try:
            moment = parse_when(str((params or {}).get("as_of", "")))
        except ValueError:
            continue
        if moment < as_of:
            earlier.append(moment)
    return max(earlier, default=None)


def covering_runs(engine: Engine, since: datetime | None, as_of: datetime) -> list[dict]:
    """Successful runs that produced the data of [since, as_of]: the last one at or before
    `since` and every one after it up to `as_of`."""
    r = sync_runs.c
    lo, hi = to_storage(since or EPOCH), to_storage(as_of)
    base = select(r.run_id, r.flow, r.status, r.started_at, r.finished_at).where(
        r.status == "succeeded", r.flow.in_(COVERING_FLOWS))
    with engine.connect() as conn:
        before = conn.execute(base.where(r.started_at <= lo).order_by(r.started_at.desc()).limit(1)).mappings().all()
        inside = conn.execute(base.where(r.started_at > lo, r.started_at <= hi).order_by(r.started_at)).mappings().all()
    return [{"run_id": x["run_id"], "flow": x["flow"], "status": x["status"],
             "started_at": format_instant(x["started_at"]),
             "finished_at": format_instant(x["finished_at"]) if x["finished_at"] else None}
            for x in [*before, *inside]]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_evidence(engine: Engine, out_dir: Path, *, as_of: datetime, since: datetime | None, org_url: str | None,
                   workspace: str | None, version: str, now: datetime) -> dict:
    """Write snapshot.csv, changes.csv, findings.csv and manifest.json into `out_dir` (created
    whole or not at all) and record the review, so the next one starts where this one ended."""
    previous = previous_review(engine, as_of) if since is None else None
    start = since or previous
    snap = frames.snapshot(engine, as_of)
    changes = frames.changes(engine, start or EPOCH, as_of)
    with engine.connect() as conn:
        run = frames.latest_findings_run(conn, as_of)
    found = frames.findings(engine, run["run_id"]) if run else frames.as_frame([], frames.FINDING_COLUMNS)
    org_url = org_url or (run or {}).get("org_url")

    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        files = {}
        for name, df in zip(FILES, (snap, changes, found)):
            write(df, "csv", tmp / name, stdout=None)
            files[name] = {"rows": len(df), "bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
        manifest = {
            "org_url": org_url,
            "workspace": workspace,
            "tool": "okta-flex-sync",
            "tool_version": version,
            "generated_at": format_instant(now),
            "as_of": format_instant(as_of),
            "since": format_instant(start) if start else None,
            "previous_review": format_instant(previous) if previous else None,
            "findings_run": run["run_id"] if run else None,
            "runs": covering_runs(engine, start, as_of),
            "files": files,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()  # an empty directory (checked by the caller)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _record(engine, manifest, out_dir, now)
    return manifest


def _record(engine: Engine, manifest: dict, out_dir: Path, now: datetime) -> None:
    stamp = to_storage(now)
    with engine.begin() as conn:
        conn.execute(sync_runs.insert().values(
            run_id=new_run_id(stamp), flow=EVIDENCE_FLOW, org_url=manifest["org_url"], started_at=stamp,
            finished_at=stamp, status="succeeded",
            parameters={"as_of": manifest["as_of"], "since": manifest["since"], "output": str(out_dir)},
            counts={name: f["rows"] for name, f in manifest["files"].items()}, watermarks={}))
