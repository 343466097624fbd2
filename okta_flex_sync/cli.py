"""The `okta-flex-sync` command. It only parses options and calls library functions; heavy
imports (Prefect, httpx, SQLAlchemy models) happen inside the commands that need them."""
from __future__ import annotations

import sys
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Keep Twilio Flex TaskRouter workers honest about what Okta says each agent is.")
db_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Database schema commands.")
app.add_typer(db_app, name="db")

EXIT_FAILED, EXIT_CONFIG, EXIT_DRIFT, EXIT_LOCKED = 1, 2, 3, 4


class Format(str, Enum):
    json = "json"
    csv = "csv"
    html = "html"
    md = "md"


class RowFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class FailOn(str, Enum):
    none = "none"
    high = "high"
    medium = "medium"
    low = "low"


class FailOnNew(str, Enum):
    high = "high"
    medium = "medium"
    low = "low"




def _epilog(codes: str, settings: str) -> str:
    """`--help`'s closing lines: exit codes and the settings (environment or .env) a command reads."""
    return (f"Exit codes: {codes}.\n\nSettings (environment or .env): {settings}; "
            f"see the README's Configuration table.")


_DB = "2 bad option or DATABASE_URL problem (missing SQLite file, unreachable server, schema behind)"
_EPILOGS = {
    "run": _epilog("0 success (drift is data, not failure), 1 run failed, 2 configuration or database error, "
                   "3 --fail-on or --fail-on-new threshold met, 4 another run holds the writer lock",
                   "OKTA_ORG_URL, OKTA_API_TOKEN or OKTA_CLIENT_ID + OKTA_PRIVATE_KEY, OKTA_FLEX_APP_ID, "
                   "TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN or TWILIO_API_KEY_SID + _SECRET, TWILIO_WORKSPACE_SID, "
                   "DATABASE_URL, REPORT_DIR, OKTA_RATE_LIMIT_PERCENT, MAX_CHANGES, SHRINK_GUARD_PERCENT, "
                   "LOCK_WAIT_SECONDS, PREFECT_API_URL"),
    "demo": _epilog("0 success, 1 run failed, 2 bad option", "none needed (the simulator provides them)"),
    "report": _epilog(f"0 written, 1 no such run, {_DB}", "DATABASE_URL, REPORT_DIR"),
    "history": _epilog(f"0 shown, 1 no history for that login, {_DB}", "DATABASE_URL"),
    "backfill": _epilog("0 done, 1 failed, 2 bad range, configuration or database error, "
                        "4 another run holds the writer lock",
                        "OKTA_ORG_URL, OKTA_API_TOKEN or OKTA_CLIENT_ID, OKTA_FLEX_APP_ID, DATABASE_URL, "
                        "OKTA_RATE_LIMIT_PERCENT"),
    "reconcile": _epilog(f"0 done, 1 no staged run or reconcile failed, {_DB}", "DATABASE_URL, REPORT_DIR"),
    "db upgrade": _epilog("0 upgraded, 1 migration failed, 2 DATABASE_URL problem", "DATABASE_URL"),
    "roles": _epilog("0 written, 2 unusable WHEN, format or output, or a database problem", "DATABASE_URL"),
    "evidence": _epilog("0 written, 2 unusable WHEN or output directory, or a database problem",
                        "DATABASE_URL, OKTA_ORG_URL, TWILIO_WORKSPACE_SID (named in the manifest)"),
    "watch": _epilog("0 polled (or skipped: another run holds the writer lock), 1 poll failed or the System Log "
                     "has a gap (run `okta-flex-sync run --full`), 2 configuration error or no okta.logs.read",
                     "OKTA_ORG_URL, OKTA_API_TOKEN or OKTA_CLIENT_ID, OKTA_FLEX_APP_ID, TWILIO_ACCOUNT_SID, "
                     "TWILIO_AUTH_TOKEN or TWILIO_API_KEY_SID + _SECRET, TWILIO_WORKSPACE_SID, DATABASE_URL, "
                     "REPORT_DIR, OKTA_RATE_LIMIT_PERCENT, MAX_CHANGES"),
}


def _die(message: str, code: int) -> None:
    typer.echo(f"okta-flex-sync: {message}", err=True)
    raise typer.Exit(code)


def _settings(**overrides):
    from okta_flex_sync.observability import setup_logging
    from okta_flex_sync.settings import ConfigError, load_settings

    try:
        s = load_settings(**overrides)
    except ConfigError as exc:
        _die(str(exc), EXIT_CONFIG)
    setup_logging(s.log_level, s.secret_values())
    return s


def _print_outcome(outcome, *, apply: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False)
    c = outcome.counts
    console.print(f"[bold]run {outcome.run_id}[/bold]")
    console.print(f"okta users: {c.get('okta_users', 0):,}  flex assignments: {c.get('assigned_users', 0):,}  "
                  f"workers: {c.get('workers', 0):,}", soft_wrap=True)
    table = Table(title="Drift summary", show_lines=False)
    table.add_column("finding")
    table.add_column("count", justify="right")
    for kind, n in outcome.summary.items():
        table.add_row(kind, str(n), style="bold red" if n and kind in ("privilege_escalation",
                                                                        "deactivated_user_has_worker") else None)
    console.print(table)
    if apply:
        console.print(f"repaired workers: {outcome.repaired}")
    for fmt, path in outcome.report_paths.items():
        console.print(f"{fmt:>5} report: {path}")


def _run_and_report(settings, *, prefect: bool, fail_on: FailOn, fail_on_new: Optional["FailOnNew"] = None,
                    **options):
    from okta_flex_sync.observability import Progress
    from okta_flex_sync.redaction import redact
    from okta_flex_sync.storage.connect import SchemaOutOfDate
    from okta_flex_sync.storage.lock import RunLockedError

    try:
        if prefect:
            from okta_flex_sync.flows.nightly import nightly_sync

            outcome = nightly_sync(**{k: v for k, v in options.items()}, return_outcome=True)
        else:
            from okta_flex_sync.jobs.nightly import run_nightly

            with Progress() as progress:
                outcome = run_nightly(settings, progress=progress, **options)
    except RunLockedError as exc:
        _die(str(exc), EXIT_LOCKED)
    except SchemaOutOfDate as exc:
        _die(str(exc), EXIT_CONFIG)
    except Exception as exc:  # one clear line; details are in the log above
        from okta_flex_sync.settings import ConfigError

        code = EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_FAILED
        _die(redact(f"run failed: {_one_line(exc, settings)}", settings.secret_values()), code)
    _print_outcome(outcome, apply=options.get("apply", False))
    if outcome.summary_line:
        typer.echo(outcome.summary_line)
    from okta_flex_sync.models.records import SEVERITY_RANK

    if fail_on != FailOn.none:
        threshold = SEVERITY_RANK[fail_on.value]
        if any(n and SEVERITY_RANK.get(sev, 9) <= threshold for sev, n in outcome.severities.items()):
            _die(f"drift at or above '{fail_on.value}' severity found (--fail-on {fail_on.value})", EXIT_DRIFT)
    if fail_on_new is not None:
        threshold = SEVERITY_RANK[fail_on_new.value]
        new = sum(n for sev, n in outcome.new_severities.items() if SEVERITY_RANK.get(sev, 9) <= threshold)
        if new:
            _die(f"{new} new finding(s) at or above '{fail_on_new.value}' severity (--fail-on-new {fail_on_new.value})",
                 EXIT_DRIFT)
    return outcome


def _use_prefect(flag: Optional[bool]) -> bool:
    if flag is not None:
        return flag
    import os

    return bool(os.environ.get("PREFECT_API_URL"))


@app.command(epilog=_EPILOGS["run"], short_help="The nightly sync: extract, history, reconcile, report; repair with --apply.")
def run(
    full: bool = typer.Option(False, "--full", help="Pull every Okta user instead of those changed since the last run."),
    apply: bool = typer.Option(False, "--apply", help="Repair mismatched workers (dry-run is the default)."),
    max_changes: Optional[int] = typer.Option(None, "--max-changes", min=0,
                                              help="Refuse to repair when more workers would change [MAX_CHANGES]."),
    strip_deactivated: bool = typer.Option(False, "--strip-deactivated",
                                           help="With --apply: remove Flex roles from workers of deactivated users."),
    delete_orphans: bool = typer.Option(False, "--delete-orphan-workers",
                                        help="With --apply: delete workers of deactivated users and orphans."),
    allow_shrink: bool = typer.Option(False, "--allow-shrink",
                                      help="Proceed even if Okta returns far fewer records than last run."),
    fail_on: FailOn = typer.Option(FailOn.none, "--fail-on", help="Exit 3 when drift of this severity or worse is found."),
    fail_on_new: Optional[FailOnNew] = typer.Option(
        None, "--fail-on-new", help="Exit 3 only when findings of this severity or worse are new since the previous run."),
    prefect: Optional[bool] = typer.Option(None, "--prefect/--no-prefect",
                                           help="Run as a Prefect flow (default: when PREFECT_API_URL is set)."),
):
    """Run the nightly sync: extract, stage, history, reconcile, report (and repair with --apply)."""
    settings = _settings()
    _run_and_report(settings, prefect=_use_prefect(prefect), fail_on=fail_on, fail_on_new=fail_on_new,
                    full=full, apply=apply,
                    max_changes=max_changes, strip_deactivated=strip_deactivated, delete_orphans=delete_orphans,
                    allow_shrink=allow_shrink)


@app.command(epilog=_EPILOGS["demo"], short_help="Run the nightly job against the bundled simulator on SQLite.")
def demo(
    users: int = typer.Option(2000, "--users", min=1, help="Size of the simulated Okta org."),
    seed: int = typer.Option(42, "--seed", help="Seed of the simulated org."),
    database_url: str = typer.Option("sqlite:///okta_flex_sync_demo.db", "--database-url"),
    report_dir: Path = typer.Option(Path("reports"), "--report-dir"),
    prefect: Optional[bool] = typer.Option(None, "--prefect/--no-prefect", help="Run the flow under Prefect."),
):
    """Start the bundled simulator and run the nightly job against it on SQLite."""
    import os

    from simulator import SimulatorConfig, start_simulator

    sim = start_simulator(SimulatorConfig(users=users, seed=seed))
    try:
        typer.echo(f"simulator serving a {users:,}-user org at {sim.url}")
        for k, v in sim.env().items():
            os.environ[k] = v
        os.environ["DATABASE_URL"] = database_url
        os.environ["REPORT_DIR"] = str(report_dir)
        settings = _settings()
        outcome = _run_and_report(settings, prefect=_use_prefect(prefect), fail_on=FailOn.none, full=False)
        html = outcome.report_paths.get("html")
        if html:
            typer.echo(f"\nopen the drift report: file://{Path(html).resolve()}")
    finally:
        sim.stop()


@db_app.command("upgrade", epilog=_EPILOGS["db upgrade"])
def db_upgrade(revision: str = typer.Argument("head")):
    """Bring the database at DATABASE_URL to the latest schema."""
    from okta_flex_sync.settings import ConfigError
    from okta_flex_sync.storage.connect import check_connection
    from okta_flex_sync.storage.engine import current_revision, make_engine, upgrade

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        check_connection(engine, settings.database_url)
    except ConfigError as exc:
        engine.dispose()
        _die(str(exc), EXIT_CONFIG)
    try:
        upgrade(engine, revision)
        typer.echo(f"database at revision {current_revision(engine)}")
    except Exception as exc:
        _die(f"db upgrade failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", EXIT_FAILED)
    finally:
        engine.dispose()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
             short_help="Serve the bundled Okta + TaskRouter simulator (prints URL and credentials).")
def simulator(ctx: typer.Context):
    """Serve the bundled Okta + TaskRouter simulator standalone (prints its URL and credentials).

    Options are passed through, e.g. `okta-flex-sync simulator --users 5000 --seed 1 --port 8080`;
    see `okta-flex-sync simulator --help-simulator`.
    """
    from simulator import main

    args = ["--help" if a == "--help-simulator" else a for a in ctx.args]
    raise typer.Exit(main(args, prog="okta-flex-sync simulator") or 0)


@app.command(epilog=_EPILOGS["report"], short_help="Regenerate the drift report of a stored run.")
def report(
    run_id: Optional[str] = typer.Argument(None, help="Run id (default: the latest successful run)."),
    fmt: Format = typer.Option(Format.html, "--format", "-f"),
    stdout: bool = typer.Option(False, "--stdout", help="Print the report instead of writing a file."),
):
    """Regenerate the drift report of a stored run."""
    from okta_flex_sync.jobs.report import report as build
    from okta_flex_sync.storage import runs as runs_db

    settings = _settings()
    engine = _open(settings)
    try:
        if run_id is None:
            with engine.connect() as conn:
                last = runs_db.last_run(conn, flows=("nightly-sync", "reconcile"))
            if last is None:
                _die("no successful run in the database yet", EXIT_FAILED)
            run_id = last["run_id"]
        try:
            _doc, paths = build(engine, settings, run_id, formats=(fmt.value,))
        except LookupError as exc:
            _die(str(exc), EXIT_FAILED)
        path = paths[fmt.value]
        if stdout:
            sys.stdout.write(Path(path).read_text(encoding="utf-8-sig"))
        else:
            typer.echo(str(path))
    finally:
        engine.dispose()


def _open(settings):
    """The existing database of a read-only command (nothing is created), or exit 2."""
    from okta_flex_sync.settings import ConfigError
    from okta_flex_sync.storage.connect import open_existing_database

    try:
        return open_existing_database(settings)
    except ConfigError as exc:
        _die(str(exc), EXIT_CONFIG)


def _refuse_missing_database(settings) -> None:
    from okta_flex_sync.settings import ConfigError
    from okta_flex_sync.storage.connect import refuse_missing_sqlite

    try:
        refuse_missing_sqlite(settings)
    except ConfigError as exc:
        _die(str(exc), EXIT_CONFIG)


def _one_line(exc: BaseException, settings) -> str:
    """A database driver's error as one plain line; other errors as they are."""
    from sqlalchemy.exc import SQLAlchemyError

    from okta_flex_sync.storage.connect import describe_database_error

    if isinstance(exc, SQLAlchemyError):
        return describe_database_error(exc, settings.database_url)
    return str(exc)


def _parse_day(value: str, name: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time())
    except ValueError:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
        except ValueError:
            _die(f"{name} must be a date like 2026-03-03 (got {value!r})", EXIT_CONFIG)


_HISTORY_COLUMNS = (("valid_from", "from"), ("valid_to", "to"), ("status", "status"), ("assigned", "assigned"),
                    ("roles", "roles"), ("full_name", "full name"), ("email", "email"), ("run_id", "run"))


def _history_record(r) -> dict:
    """A history row for CSV/JSON: ISO times in UTC, `valid_to` empty while current."""
    to = r["valid_to"]
    return {"valid_from": r["valid_from"].isoformat() + "Z", "valid_to": None if to.year == 9999 else to.isoformat() + "Z",
            "status": r["status"], "assigned": bool(r["assigned"]), "roles": r["roles"] or "",
            "full_name": r["full_name"], "email": r["email"], "run_id": r["run_id"]}


@app.command(epilog=_EPILOGS["history"], short_help="Print a user's role timeline (table, CSV or JSON).")
def history(
    login: str = typer.Argument(..., help="Okta login (case-insensitive)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Show the timeline up to this date/time (UTC)."),
    fmt: Optional[RowFormat] = typer.Option(None, "--format", "-f",
                                            help="table, csv or json (default: table on a terminal, csv in a pipe)."),
):
    """Print a user's role timeline."""
    from okta_flex_sync.storage import history as history_db
    from okta_flex_sync.terminal import choose_format, print_rows

    settings = _settings()
    engine = _open(settings)
    when = _parse_day(as_of, "--as-of") if as_of else None
    if when is not None and len(as_of) == 10:
        from datetime import timedelta

        when = when + timedelta(days=1) - timedelta(microseconds=1)  # the whole day
    try:
        with engine.connect() as conn:
            rows = history_db.user_timeline(conn, login, when)
    finally:
        engine.dispose()
    if not rows:
        _die(f"no history for {login!r}" + (f" as of {as_of}" if as_of else ""), EXIT_FAILED)
    out = choose_format(fmt.value if fmt else None)
    if out != "table":
        print_rows(_HISTORY_COLUMNS, [_history_record(r) for r in rows], out)
        current = [r for r in rows if when is not None and r["valid_from"] <= when < r["valid_to"]]
        if current:  # on stderr: stdout stays plain CSV/JSON for the pipe
            r = current[-1]
            typer.echo(f"as of {as_of}: roles={r['roles'] or '(none)'} status={r['status']} "
                       f"assigned={'yes' if r['assigned'] else 'no'}", err=True)
        return
    table_rows = []
    for r in rows:
        to = r["valid_to"]
        table_rows.append({"valid_from": f"{r['valid_from']:%Y-%m-%d %H:%M}",
                           "valid_to": "current" if to.year == 9999 else f"{to:%Y-%m-%d %H:%M}",
                           "status": r["status"], "assigned": "yes" if r["assigned"] else "no",
                           # ", " lets a narrow table wrap between roles instead of inside one
                           "roles": ", ".join((r["roles"] or "-").split(",")), "full_name": r["full_name"],
                           "email": r["email"] or "",
                           "run_id": r["run_id"]})
    print_rows(_HISTORY_COLUMNS, table_rows, "table", title=f"Role history of {login}",
               min_widths={"valid_from": 10, "valid_to": 10, "status": 6, "assigned": 8, "roles": 10})
    if when is not None:
        current = [r for r in rows if r["valid_from"] <= when < r["valid_to"]]
        if current:
            r = current[-1]
            typer.echo(f"as of {as_of}: roles={r['roles'] or '(none)'} status={r['status']} "
                       f"assigned={'yes' if r['assigned'] else 'no'}")


@app.command(epilog=_EPILOGS["backfill"], short_help="Rebuild role history for a past range of days.")
def backfill(
    start: str = typer.Option(..., "--start", help="First day to rebuild (YYYY-MM-DD, UTC)."),
    end: str = typer.Option(..., "--end", help="Last day to rebuild, inclusive (YYYY-MM-DD, UTC)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; write nothing."),
):
    """Rebuild role history for a past range from stored raw pages and the Okta System Log."""
    from okta_flex_sync.core.backfill_plan import BackfillRefused
    from okta_flex_sync.jobs.backfill import run_backfill
    from okta_flex_sync.observability import Progress
    from okta_flex_sync.redaction import redact
    from okta_flex_sync.storage.lock import RunLockedError

    settings = _settings()
    first, last = _parse_day(start, "--start").date(), _parse_day(end, "--end").date()
    try:
        with Progress() as progress:
            result = run_backfill(settings, first, last, dry_run=dry_run, progress=progress)
    except RunLockedError as exc:
        _die(str(exc), EXIT_LOCKED)
    except Exception as exc:
        from okta_flex_sync.settings import ConfigError

        _die(redact(f"backfill failed: {_one_line(exc, settings)}", settings.secret_values()),
             EXIT_CONFIG if isinstance(exc, (ConfigError, ValueError, BackfillRefused)) else EXIT_FAILED)
    typer.echo(f"backfill {first}..{last}{' (dry run)' if dry_run else ''}: {result}")


@app.command("reconcile", epilog=_EPILOGS["reconcile"], short_help="Findings and reports again from staged data, no API calls.")
def reconcile_cmd(
    run_id: Optional[str] = typer.Option(None, "--run", help="Staged run to reconcile (default: the latest)."),
):
    """Reconcile and report again from staged data, without calling Okta or TaskRouter."""
    from okta_flex_sync.jobs.reconcile import reconcile_latest
    from okta_flex_sync.redaction import redact
    from okta_flex_sync.settings import ConfigError

    settings = _settings()
    _refuse_missing_database(settings)
    try:
        outcome = reconcile_latest(settings, source_run_id=run_id)
    except LookupError as exc:
        _die(str(exc).strip("'\""), EXIT_FAILED)
    except ConfigError as exc:
        _die(str(exc), EXIT_CONFIG)
    except Exception as exc:
        _die(redact(f"reconcile failed: {_one_line(exc, settings)}", settings.secret_values()), EXIT_FAILED)
    _print_outcome(outcome, apply=False)
    if outcome.summary_line:
        typer.echo(outcome.summary_line)


# --- data teams: role history through pandas (okta_flex_sync/analytics) ---------------------

roles_app = typer.Typer(no_args_is_help=True, help="Role history for data teams: snapshots and changes.")
app.add_typer(roles_app, name="roles")

EXPORT_NAMES = ("role_history", "snapshot", "changes", "grants", "findings")


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


_FORMAT_HELP = "table, csv, json or parquet (default: a table on a terminal, CSV when piped)."


def _when(value: Optional[str], option: str, now: datetime) -> Optional[datetime]:
    """A WHEN option as an aware UTC instant (None when not given); exit 2 when unusable."""
    from okta_flex_sync.analytics.timeparse import (
        WhenError,
        check_not_future,
        parse_when,
    )

    if value is None:
        return None
    try:
        return check_not_future(parse_when(value, option), option, now)
    except WhenError as exc:
        _die(str(exc), EXIT_CONFIG)


def _output_format(fmt: Optional[OutputFormat], output: Optional[Path]) -> str:
    from okta_flex_sync.analytics.export import default_format

    chosen = fmt.value if fmt else ("csv" if output is not None else default_format(sys.stdout))
    if chosen == "parquet" and output is None:
        _die("--format parquet needs --output FILE", EXIT_CONFIG)
    if output is not None:
        if output.is_dir():
            _die(f"--output {output} is a directory", EXIT_CONFIG)
        if not output.parent.is_dir():
            _die(f"--output {output}: directory {output.parent} does not exist", EXIT_CONFIG)
    return chosen




def _emit(df, fmt: str, output: Optional[Path], title: str) -> None:
    from okta_flex_sync.analytics.export import write

    write(df, fmt, output, stdout=sys.stdout, title=title)
    if output is not None:
        typer.echo(f"{len(df):,} rows written to {output}", err=True)


def _frame(name: str, engine, *, as_of: Optional[datetime], start: Optional[datetime], end: Optional[datetime],
           include_first_seen: bool, run_id: Optional[str]):
    from okta_flex_sync.analytics import frames
    from okta_flex_sync.analytics.timeparse import format_instant

    if name == "snapshot":
        typer.echo(f"as of {format_instant(as_of)}", err=True)
        return frames.snapshot(engine, as_of)
    if name == "changes":
        typer.echo(f"changes from {format_instant(start)} (inclusive) to {format_instant(end)} (exclusive)", err=True)
        return frames.changes(engine, start, end, include_first_seen=include_first_seen)
    if name == "grants":
        if as_of is not None:
            typer.echo(f"in effect as of {format_instant(as_of)}", err=True)
        return frames.grants(engine, as_of)
    if name == "findings":
        if run_id is None:
            with engine.connect() as conn:
                run = frames.latest_findings_run(conn, as_of)
            if run is None:
                typer.echo(f"no successful run at or before {format_instant(as_of)}: no findings", err=True)
                return frames.as_frame([], frames.FINDING_COLUMNS)
            run_id = run["run_id"]
        typer.echo(f"findings of run {run_id}", err=True)
        return frames.findings(engine, run_id)
    return frames.history(engine)


def _interval(start: Optional[str], end: Optional[str], now: datetime) -> tuple[datetime, datetime]:
    from okta_flex_sync.analytics.timeparse import WhenError, check_interval

    if start is None:
        _die("--from WHEN is required", EXIT_CONFIG)
    lo, hi = _when(start, "--from", now), _when(end, "--to", now) or now
    try:
        check_interval(lo, hi)
    except WhenError as exc:
        _die(str(exc), EXIT_CONFIG)
    return lo, hi


def _now() -> datetime:
    from okta_flex_sync.analytics.timeparse import utcnow

    return utcnow()


def _write_frame(name: str, fmt: str, output: Optional[Path], title: str, *, as_of: Optional[datetime] = None,
                 start: Optional[datetime] = None, end: Optional[datetime] = None, include_first_seen: bool = False,
                 run_id: Optional[str] = None) -> None:
    """Read one data-team frame from the existing database and write it as `fmt`."""
    engine = _open(_settings())
    try:
        df = _frame(name, engine, as_of=as_of, start=start, end=end, include_first_seen=include_first_seen,
                    run_id=run_id)
        _emit(df, fmt, output, title)
    finally:
        engine.dispose()


@roles_app.command("snapshot", epilog=_EPILOGS["roles"])
def roles_snapshot(
    as_of: Optional[str] = typer.Option(None, "--as-of", help="WHEN: a date or ISO timestamp, naive = UTC (default: now)."),
    fmt: Optional[OutputFormat] = typer.Option(None, "--format", "-f", help=_FORMAT_HELP),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to FILE instead of stdout."),
):
    """One row per Okta user role history knew at that moment."""
    now = _now()
    moment = _when(as_of, "--as-of", now) or now
    chosen = _output_format(fmt, output)
    _write_frame("snapshot", chosen, output, "Role snapshot", as_of=moment)


@roles_app.command("changes", epilog=_EPILOGS["roles"])
def roles_changes(
    start: Optional[str] = typer.Option(None, "--from", help="WHEN the interval starts (inclusive)."),
    end: Optional[str] = typer.Option(None, "--to", help="WHEN it ends (exclusive; default: now)."),
    include_first_seen: bool = typer.Option(False, "--include-first-seen",
                                            help="Also list the first time the pipeline saw each user (never a change)."),
    fmt: Optional[OutputFormat] = typer.Option(None, "--format", "-f", help=_FORMAT_HELP),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to FILE instead of stdout."),
):
    """One row per change of roles, assignment or status in [--from, --to)."""
    lo, hi = _interval(start, end, _now())
    chosen = _output_format(fmt, output)
    _write_frame("changes", chosen, output, "Role changes", start=lo, end=hi, include_first_seen=include_first_seen)


@app.command("export", epilog=_EPILOGS["roles"],
             short_help="Export history, snapshots, changes, grants or findings.")
def export_cmd(
    name: str = typer.Argument(..., help="role_history, snapshot, changes, grants or findings."),
    fmt: Optional[OutputFormat] = typer.Option(None, "--format", "-f", help=_FORMAT_HELP),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to FILE instead of stdout."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="snapshot, grants, findings: WHEN (default: now)."),
    start: Optional[str] = typer.Option(None, "--from", help="changes: WHEN the interval starts (inclusive)."),
    end: Optional[str] = typer.Option(None, "--to", help="changes: WHEN it ends (exclusive; default: now)."),
    include_first_seen: bool = typer.Option(False, "--include-first-seen", help="changes: also list first observations."),
    run_id: Optional[str] = typer.Option(None, "--run", help="findings: this run instead of the latest."),
):
    """Export history, snapshots, changes, grants or findings.

    As CSV, JSON or Parquet (or a table on a terminal)."""
    if name not in EXPORT_NAMES:
        _die(f"unknown export {name!r}; use one of {', '.join(EXPORT_NAMES)}", EXIT_CONFIG)
    given = {"--as-of": as_of is not None, "--from": start is not None, "--to": end is not None,
             "--include-first-seen": include_first_seen, "--run": run_id is not None}
    allowed = {"role_history": set(), "snapshot": {"--as-of"}, "grants": {"--as-of"}, "findings": {"--as-of", "--run"},
               "changes": {"--from", "--to", "--include-first-seen"}}[name]
    wrong = [opt for opt, on in given.items() if on and opt not in allowed]
    if wrong:
        _die(f"{wrong[0]} does not apply to export {name}", EXIT_CONFIG)
    now = _now()
    moment = _when(as_of, "--as-of", now)
    lo = hi = None
    if name == "changes":
        lo, hi = _interval(start, end, now)
    elif name in ("snapshot", "findings"):
        moment = moment or now
    chosen = _output_format(fmt, output)
    _write_frame(name, chosen, output, name, as_of=moment, start=lo, end=hi, include_first_seen=include_first_seen,
                 run_id=run_id)


@app.command(epilog=_EPILOGS["evidence"], short_help="Access-review evidence files with a SHA-256 manifest.")
def evidence(
    as_of: Optional[str] = typer.Option(None, "--as-of", help="WHEN the review looks at (a date or ISO timestamp, naive = UTC)."),
    since: Optional[str] = typer.Option(None, "--since",
                                        help="WHEN the changes start (default: the previous review's --as-of, else the beginning)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="New or empty directory for the evidence files."),
):
    """Access-review evidence files with a SHA-256 manifest.

    The snapshot, the changes since the previous review, the latest findings and manifest.json."""
    from okta_flex_sync.analytics.timeparse import WhenError, check_interval

    now = _now()
    if as_of is None:
        _die("--as-of WHEN is required", EXIT_CONFIG)
    if output is None:
        _die("--output DIR is required", EXIT_CONFIG)
    moment = _when(as_of, "--as-of", now)
    start = _when(since, "--since", now)
    if start is not None:
        try:
            check_interval(start, moment, "--since", "--as-of")
        except WhenError as exc:
            _die(str(exc), EXIT_CONFIG)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        _die(f"--output {output} exists and is not an empty directory", EXIT_CONFIG)
    if not output.parent.is_dir():
        _die(f"--output {output}: directory {output.parent} does not exist", EXIT_CONFIG)
    settings = _settings()
    engine = _open(settings)
    try:
        from okta_flex_sync import __version__
        from okta_flex_sync.analytics.evidence import write_evidence

        manifest = write_evidence(engine, output, as_of=moment, since=start, org_url=settings.okta_org_url,
                                  workspace=settings.twilio_workspace_sid, version=__version__, now=now)
    finally:
        engine.dispose()
    typer.echo(f"as of {manifest['as_of']}, changes since {manifest['since'] or 'the beginning'}", err=True)
    for name, f in manifest["files"].items():
        typer.echo(f"{output / name}  {f['rows']:,} rows  sha256 {f['sha256']}")
    typer.echo(f"{output / 'manifest.json'}")


@app.command(epilog=_EPILOGS["watch"], short_help="Poll the Okta System Log: offboarding and role changes in minutes.")
def watch(
    interval: float = typer.Option(300.0, "--interval", min=1.0,
                                   help="Seconds between polls, start to start (default 300)."),
    once: bool = typer.Option(False, "--once", help="Poll once and exit (for cron or a test)."),
    apply_high: bool = typer.Option(False, "--apply-high",
                                    help="Act at once on high-severity drift: strip a deactivated user's worker "
                                         "roles, revert a privilege escalation (guarded by --max-changes)."),
    max_changes: Optional[int] = typer.Option(None, "--max-changes", min=0,
                                              help="With --apply-high: refuse when more workers would change "
                                                   "in one poll [MAX_CHANGES]."),
    delete_orphans: bool = typer.Option(False, "--delete-orphan-workers",
                                        help="With --apply-high: delete a deactivated user's worker instead of "
                                             "stripping its roles."),
):
    """Poll the Okta System Log: offboarding and role changes in minutes.

    Reads the System Log since its cursor and re-reads exactly the users its events name."""
    from okta_flex_sync.redaction import redact
    from okta_flex_sync.settings import ConfigError

    if delete_orphans and not apply_high:
        _die("--delete-orphan-workers needs --apply-high", EXIT_CONFIG)
    settings = _settings()
    from okta_flex_sync.jobs.watch import SystemLogGap, poll_once, run_forever

    options = {"apply_high": apply_high, "max_changes": max_changes, "delete_orphans": delete_orphans}
    try:
        if once:
            outcome = poll_once(settings, **options)
            typer.echo(outcome.line())
            return
        typer.echo(f"watching the Okta System Log every {interval:g} s (Ctrl-C stops)")

        def carry_on(exc: Exception) -> bool:
            typer.echo(redact(f"okta-flex-sync: poll failed, trying again next interval: {exc}",
                              settings.secret_values()), err=True)
            return True
        run_forever(settings, interval=interval, on_poll=lambda o: typer.echo(o.line()), on_error=carry_on,
                    **options)
    except KeyboardInterrupt:
        return
    except SystemLogGap as exc:
        _die(str(exc), EXIT_FAILED)
    except ConfigError as exc:  # LogsForbidden, SchemaOutOfDate, a missing setting
        _die(str(exc), EXIT_CONFIG)
    except Exception as exc:
        _die(redact(f"watch failed: {exc}", settings.secret_values()), EXIT_FAILED)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
