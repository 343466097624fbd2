"""The `okta-flex-sync` command. It only parses options and calls library functions; heavy
imports (Prefect, httpx, SQLAlchemy models) happen inside the commands that need them."""
from __future__ import annotations

import sys
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Keep Twilio Flex TaskRouter workers honest about what Okta says each agent is.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema commands.")
app.add_typer(db_app, name="db")

EXIT_FAILED, EXIT_CONFIG, EXIT_DRIFT, EXIT_LOCKED = 1, 2, 3, 4


class Format(str, Enum):
    json = "json"
    csv = "csv"
    html = "html"
    md = "md"


class FailOn(str, Enum):
    none = "none"
    high = "high"
    medium = "medium"
    low = "low"


class FailOnNew(str, Enum):
    high = "high"
    medium = "medium"
    low = "low"


_SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2, "info": 3}


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
    from okta_flex_sync.db import RunLockedError
    from okta_flex_sync.pipeline import SchemaOutOfDate
    from okta_flex_sync.observability import Progress, redact

    try:
        if prefect:
            from flows.nightly import nightly_sync

            outcome = nightly_sync(**{k: v for k, v in options.items()}, return_outcome=True)
        else:
            from okta_flex_sync.pipeline import run_nightly

            with Progress() as progress:
                outcome = run_nightly(settings, progress=progress, **options)
    except RunLockedError as exc:
        _die(str(exc), EXIT_LOCKED)
    except SchemaOutOfDate as exc:
        _die(str(exc), EXIT_CONFIG)
    except Exception as exc:  # one clear line; details are in the log above
        from okta_flex_sync.settings import ConfigError

        code = EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_FAILED
        _die(redact(f"run failed: {exc}", settings.secret_values()), code)
    _print_outcome(outcome, apply=options.get("apply", False))
    if outcome.summary_line:
        typer.echo(outcome.summary_line)
    if fail_on != FailOn.none:
        threshold = _SEVERITY_RANK[fail_on.value]
        if any(n and _SEVERITY_RANK.get(sev, 9) <= threshold for sev, n in outcome.severities.items()):
            _die(f"drift at or above '{fail_on.value}' severity found (--fail-on {fail_on.value})", EXIT_DRIFT)
    if fail_on_new is not None:
        threshold = _SEVERITY_RANK[fail_on_new.value]
        new = sum(n for sev, n in outcome.new_severities.items() if _SEVERITY_RANK.get(sev, 9) <= threshold)
        if new:
            _die(f"{new} new finding(s) at or above '{fail_on_new.value}' severity (--fail-on-new {fail_on_new.value})",
                 EXIT_DRIFT)
    return outcome


def _use_prefect(flag: Optional[bool]) -> bool:
    if flag is not None:
        return flag
    import os

    return bool(os.environ.get("PREFECT_API_URL"))


@app.command()
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


@app.command()
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


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")):
    """Bring the database at DATABASE_URL to the latest schema."""
    from okta_flex_sync.db import current_revision, make_engine, upgrade

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine, revision)
        typer.echo(f"database at revision {current_revision(engine)}")
    except Exception as exc:
        _die(f"db upgrade failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", EXIT_FAILED)
    finally:
        engine.dispose()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def simulator(ctx: typer.Context):
    """Serve the bundled Okta + TaskRouter simulator standalone (prints its URL and credentials).

    Options are passed through, e.g. `okta-flex-sync simulator --users 5000 --seed 1 --port 8080`;
    see `okta-flex-sync simulator --help-simulator`.
    """
    from simulator import main

    args = ["--help" if a == "--help-simulator" else a for a in ctx.args]
    raise typer.Exit(main(args) or 0)


@app.command()
def report(
    run_id: Optional[str] = typer.Argument(None, help="Run id (default: the latest successful run)."),
    fmt: Format = typer.Option(Format.html, "--format", "-f"),
    stdout: bool = typer.Option(False, "--stdout", help="Print the report instead of writing a file."),
):
    """Regenerate the drift report of a stored run."""
    from tasks import store
    from tasks.sync import report as build

    settings = _settings()
    engine = _open(settings)
    try:
        if run_id is None:
            with engine.connect() as conn:
                last = store.last_run(conn, flows=("nightly-sync", "reconcile"))
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
    from okta_flex_sync.pipeline import SchemaOutOfDate, open_database

    try:
        return open_database(settings)
    except SchemaOutOfDate as exc:
        _die(str(exc), EXIT_CONFIG)


def _parse_day(value: str, name: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time())
    except ValueError:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
        except ValueError:
            _die(f"{name} must be a date like 2026-03-03 (got {value!r})", EXIT_CONFIG)


@app.command()
def history(
    login: str = typer.Argument(..., help="Okta login (case-insensitive)."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Show the timeline up to this date/time (UTC)."),
):
    """Print a user's role timeline."""
    from rich.console import Console
    from rich.table import Table

    from tasks import store

    settings = _settings()
    engine = _open(settings)
    when = _parse_day(as_of, "--as-of") if as_of else None
    if when is not None and len(as_of) == 10:
        from datetime import timedelta

        when = when + timedelta(days=1) - timedelta(microseconds=1)  # the whole day
    try:
        with engine.connect() as conn:
            rows = store.user_timeline(conn, login, when)
    finally:
        engine.dispose()
    if not rows:
        _die(f"no history for {login!r}" + (f" as of {as_of}" if as_of else ""), EXIT_FAILED)
    table = Table(title=f"Role history of {login}")
    for col in ("from", "to", "status", "assigned", "roles", "full name", "email", "run"):
        table.add_column(col)
    for r in rows:
        to = r["valid_to"]
        table.add_row(f"{r['valid_from']:%Y-%m-%d %H:%M}", "current" if to.year == 9999 else f"{to:%Y-%m-%d %H:%M}",
                      r["status"], "yes" if r["assigned"] else "no", r["roles"] or "-", r["full_name"],
                      r["email"] or "", r["run_id"])
    Console(soft_wrap=True).print(table)
    if when is not None:
        current = [r for r in rows if r["valid_from"] <= when < r["valid_to"]]
        if current:
            r = current[-1]
            typer.echo(f"as of {as_of}: roles={r['roles'] or '(none)'} status={r['status']} "
                       f"assigned={'yes' if r['assigned'] else 'no'}")


@app.command()
def backfill(
    start: str = typer.Option(..., "--start", help="First day to rebuild (YYYY-MM-DD, UTC)."),
    end: str = typer.Option(..., "--end", help="Last day to rebuild, inclusive (YYYY-MM-DD, UTC)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; write nothing."),
):
    """Rebuild role history for a past range from stored raw pages and the Okta System Log."""
    from okta_flex_sync.db import RunLockedError
    from okta_flex_sync.observability import Progress, redact
    from tasks.backfill import BackfillRefused, run_backfill

    settings = _settings()
    first, last = _parse_day(start, "--start").date(), _parse_day(end, "--end").date()
    try:
        with Progress() as progress:
            result = run_backfill(settings, first, last, dry_run=dry_run, progress=progress)
    except RunLockedError as exc:
        _die(str(exc), EXIT_LOCKED)
    except Exception as exc:
        from okta_flex_sync.settings import ConfigError

        _die(redact(f"backfill failed: {exc}", settings.secret_values()),
             EXIT_CONFIG if isinstance(exc, (ConfigError, ValueError, BackfillRefused)) else EXIT_FAILED)
    typer.echo(f"backfill {first}..{last}{' (dry run)' if dry_run else ''}: {result}")


@app.command("reconcile")
def reconcile_cmd(
    run_id: Optional[str] = typer.Option(None, "--run", help="Staged run to reconcile (default: the latest)."),
):
    """Reconcile and report again from staged data, without calling Okta or TaskRouter."""
    from okta_flex_sync.observability import redact
    from okta_flex_sync.pipeline import reconcile_latest

    settings = _settings()
    try:
        outcome = reconcile_latest(settings, source_run_id=run_id)
    except LookupError as exc:
        _die(str(exc).strip("'\""), EXIT_FAILED)
    except Exception as exc:
        _die(redact(f"reconcile failed: {exc}", settings.secret_values()), EXIT_FAILED)
    _print_outcome(outcome, apply=False)
    if outcome.summary_line:
        typer.echo(outcome.summary_line)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
