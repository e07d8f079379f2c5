"""The `syncd` command.

Exit codes: 0 success; 1 the work failed (a check failed, a sync had failed or dead-lettered
writes, a file is invalid); 2 usage or configuration error (the message names file, key and
reason); 3 the database could not be reached or used (unreachable server, a path that cannot be
opened, a SQLite file that does not exist yet).

The database: `syncd run` creates (and migrates) it on first start, as a daemon should;
`syncd sync` and `syncd backfill` create it only with `--create`; every other command needs it to
exist, so a typo in the path never runs against a fresh empty database and prints zeros.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

import click

from syncd.errors import ConfigError

EXIT_OK, EXIT_FAIL, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 1, 2, 3


def _default_config() -> str:
    for p in (os.environ.get("SYNCD_CONFIG"), "config.toml", "/etc/syncd/config.toml"):
        if p and Path(p).exists():
            return p
    return os.environ.get("SYNCD_CONFIG") or "config.toml"


def _fail_config(exc: ConfigError) -> NoReturn:
    click.echo(f"config error: {exc}", err=True)
    sys.exit(EXIT_CONFIG)


def _fail_database(reason: str) -> NoReturn:
    from syncd.logs import redact_text

    click.echo(redact_text(f"database: {reason}"), err=True)
    sys.exit(EXIT_UNREACHABLE)


def _settings(ctx: click.Context) -> Any:
    from syncd.config import load_settings
    from syncd.logs import configure_logging, register_secret

    try:
        settings = load_settings(ctx.obj["config"])
    except ConfigError as exc:
        _fail_config(exc)
    for s in settings.secrets:
        register_secret(s)
    configure_logging(ctx.obj.get("log_format") or settings.daemon.log_format, settings.daemon.log_level,
                      stream=sys.stderr)
    return settings


def _database_error(exc: BaseException, db_file: Path | None = None) -> str | None:
    """One line for an error that means "the database cannot be used", else None.

    An OSError counts only when it is about `db_file` or a folder on its way (making the folder of
    a SQLite file); a connector's network or file error is not the database's.
    """
    from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

    if isinstance(exc, OperationalError):
        return str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {str(exc.orig).strip().splitlines()[0]}"
    if isinstance(exc, SQLAlchemyError):
        return str(exc).splitlines()[0]
    if isinstance(exc, OSError) and db_file is not None and exc.filename:
        on_the_way = [db_file, *db_file.parents]
        if Path(str(exc.filename)) in on_the_way:
            return f"{exc.strerror or exc}: {exc.filename}"
    return None


def _require_database(settings: Any, create: bool, mark: bool = True) -> None:
    """Exit 3 when the SQLite file is missing (unless `create` on a first start) or is not a file."""
    from syncd.check import creatable, database_mark, mark_database, missing_database, sqlite_file

    path = sqlite_file(settings.daemon.database_url)
    if path is None:
        return
    if path.exists() and not path.is_file():
        _fail_database(f"{path} is not a file")
    if path.exists() and create and mark and database_mark(settings.daemon.state_dir, settings.path) is None:
        mark_database(settings.daemon.state_dir, settings.path, path)      # made by a version that kept no record
    if not path.exists():
        if not create:
            _fail_database(f"{path} does not exist (check database_url in {settings.path}; `syncd run` "
                           f"creates it on first start, `syncd sync --create` by hand)")
        problem = creatable(path, settings.daemon.state_dir) or (missing_database(path, settings.daemon.state_dir, settings.path) if mark else None)
        if problem:
            _fail_database(f"cannot create {path}: {problem}" if not problem.startswith(str(path)) else problem)
        if mark:
            mark_database(settings.daemon.state_dir, settings.path, path)


def _runtime(ctx: click.Context, connect: bool = True, create: bool = False, settings: Any = None,
             mark: bool = True) -> Any:
    """`mark`: record a database this creates as the config's (not for check's scratch database)."""
    from syncd.daemon.runtime import Runtime

    settings = settings or _settings(ctx)
    _require_database(settings, create, mark)
    try:
        return Runtime(settings, connect=connect)
    except ConfigError as exc:
        _fail_config(exc)
    except Exception as exc:  # noqa: BLE001 - named for the user, with the exit code for scripts
        from syncd.check import sqlite_file

        reason = _database_error(exc, sqlite_file(settings.daemon.database_url))
        if reason is not None:
            _fail_database(f"{reason} ({_safe_url(settings.daemon.database_url)})")
        if isinstance(exc, OSError) and exc.filename:
            # a path the config names (a spool or state folder) that cannot be used
            click.echo(f"config error: {exc.filename}: {exc.strerror or exc}", err=True)
            sys.exit(EXIT_CONFIG)
        raise


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "database_url"


def _emit(ctx: click.Context, data: Any, table: Callable[[Any], None]) -> None:
    if ctx.obj.get("json"):
        click.echo(json.dumps(data, ensure_ascii=False, default=str, indent=None))
    else:
        table(data)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(dict)
        ctx.obj["json"] = True


def _with_json_option(cmd: click.Command) -> None:
    """`--json` after the subcommand too (`syncd stats --json`), on every command."""
    if not any(isinstance(p, click.Option) and "--json" in p.opts for p in cmd.params):
        cmd.params.append(click.Option(["--json"], is_flag=True, expose_value=False, is_eager=True,
                                       callback=_set_json, help="machine-readable output"))
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _with_json_option(sub)


def _remember(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[f"syncd.{param.name}"] = True


def _print_version(ctx: click.Context) -> None:
    """`--version [--verbose]`: both flags are eager and only remembered; this runs from the first
    non-eager option's callback, after both are seen in whichever order they were given."""
    if not ctx.meta.get("syncd.version") or ctx.resilient_parsing:
        return
    if ctx.meta.get("syncd.verbose"):
        from syncd.versions import versions

        for name, v in versions().items():
            click.echo(f"{name} {v}")
    else:
        click.echo(f"syncd, version {_version()}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", default=_default_config, show_default="$SYNCD_CONFIG or ./config.toml",
              help="config file", callback=lambda c, _p, v: _print_version(c) or v)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default=None)
@click.option("--env-file", type=click.Path(dir_okay=False), default=None,
              help="read NAME=value lines into the environment first (the unit's EnvironmentFile)")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_remember,
              help="show the version and exit (with --verbose: lxml, libxml2, SQLAlchemy, drivers)")
@click.option("--verbose", is_flag=True, expose_value=False, is_eager=True, callback=_remember,
              help="with --version: every version")
@click.pass_context
def main(ctx: click.Context, config: str, as_json: bool, log_format: str | None,
         env_file: str | None) -> None:
    """syncd keeps an online shop, 1C and a CRM in step."""
    ctx.ensure_object(dict)
    ctx.obj.update(config=config, json=as_json, log_format=log_format)
    if env_file:
        _load_env_file(env_file)


def _load_env_file(path: str) -> None:
    """systemd EnvironmentFile= syntax: NAME=value lines, `#`/`;` comments, optional quotes."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        click.echo(f"config error: {path}: cannot read: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_CONFIG)
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name.replace("_", "a").isalnum() or name[0].isdigit():
            click.echo(f"config error: {path}: line {n}: expected NAME=value", err=True)
            sys.exit(EXIT_CONFIG)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ[name] = value


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon (scheduler, HTTP) until SIGTERM.

    Creates and migrates the database on first start.
    """
    import structlog

    from syncd.daemon.main import Daemon

    settings = _settings(ctx)
    structlog.get_logger("syncd").info("starting", version=_version(), config=str(settings.path),
                                       database=_safe_url(settings.daemon.database_url))
    rt = _runtime(ctx, create=True, settings=settings)     # a daemon creates its database on first start
    try:
        Daemon(settings, runtime=rt).run_forever()
    except ConfigError as exc:
        _fail_config(exc)


def _waiting_text(s: dict[str, Any]) -> str:
    """"3 since 2026-12-07T10:00, last exchange never" for a system that fetches its writes (1C)."""
    w = s.get("waiting_peer")
    if w is None:
        return "-"
    if not w["documents"]:
        return f"0, last exchange {w['last_exchange'] or 'never'}"
    return f"{w['documents']} since {w['since']}, last exchange {w['last_exchange'] or 'never'}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("syncd")
    except PackageNotFoundError:
        return "unknown"


@main.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check config, mappings, jobs and rules against live systems.

    One ✓/✗ line per finding, each fault naming its file and key; exit 1 if any fails.
    """
    import shutil
    import tempfile

    from syncd import check as checks

    from syncd.versions import describe

    settings = _settings(ctx)
    # first, so a support request that pastes the output carries them
    findings: list[checks.Finding] = [checks.Finding("versions", True, describe(settings.daemon.database_url))]
    db_file = checks.sqlite_file(settings.daemon.database_url)
    scratch = None
    if db_file is not None and not db_file.exists():
        # not created yet: check everything else against a scratch database, say whether it can be
        problem = checks.creatable(db_file, settings.daemon.state_dir)
        refused = checks.missing_database(db_file, settings.daemon.state_dir, settings.path)
        findings.append(checks.Finding(
            "database", problem is None and refused is None,
            refused or (f"{db_file} does not exist yet; `syncd run` creates it" if problem is None
                        else f"{db_file} cannot be created: {problem}")))
        scratch = tempfile.mkdtemp(prefix="syncd-check-")
        settings = settings.model_copy(update={"daemon": settings.daemon.model_copy(
            update={"database_url": f"sqlite:///{scratch}/check.db"})})
    if not Path(settings.daemon.state_dir).exists():
        # nor is the state directory (systemd's StateDirectory= makes it): check creates nothing there
        scratch = scratch or tempfile.mkdtemp(prefix="syncd-check-")
        settings = settings.model_copy(update={"daemon": settings.daemon.model_copy(
            update={"state_dir": f"{scratch}/state"})})
    rt = None
    try:
        rt = _runtime(ctx, settings=settings, create=db_file is not None and not db_file.exists(), mark=False)
        if not any(f.name == "database" for f in findings):
            try:
                rt.store.ping()
                findings.append(checks.Finding("database", True, _safe_url(settings.daemon.database_url)))
            except Exception as exc:  # noqa: BLE001
                findings.append(checks.Finding("database", False, _database_error(exc) or str(exc)))
        for name, h in rt.health().items():
            # a connector's error names its system already ("shop: checkauth: …"): said once
            detail = h.detail[len(name) + 2:] if h.detail.startswith(f"{name}: ") else h.detail
            findings.append(checks.Finding(name, h.ok, detail))
        findings += checks.check_waiting(rt)
        try:
            origins = checks.MappingOrigins(settings)
        except ConfigError as exc:
            _fail_config(exc)
        findings += checks.check_jobs(settings, rt.connectors)
        findings += checks.check_map_targets(settings, rt.mapper, rt.connectors, origins)
        findings += checks.check_flows(settings, rt.mapper, rt.connectors, origins)
        findings += checks.check_names(rt)          # first: names become ids the checks below compare
        findings += checks.check_live_mappings(rt.mapper, rt.connectors, origins)
        findings += checks.check_rules(rt.mapper, rt.connectors, origins, rt.rules_cfg)
    finally:
        if rt is not None:
            rt.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    ok = all(f.ok for f in findings)
    if ctx.obj["json"]:
        click.echo(json.dumps([f.as_dict() for f in findings], ensure_ascii=False))
    else:
        for f in findings:
            mark = click.style("✓", fg="green") if f.ok else click.style("✗", fg="red")
            click.echo(f"{mark} {f.name}: {f.detail}")
    sys.exit(EXIT_OK if ok else EXIT_FAIL)


def _pending(rt: Any, system: str) -> Callable[[], int]:
    from sqlalchemy import func, select

    from syncd.store import tables as t

    def count() -> int:
        with rt.store.read() as c:
            return int(c.execute(select(func.count()).select_from(t.outbox).where(
                t.outbox.c.system == system, t.outbox.c.status.in_(("pending", "sending")))).scalar() or 0)
    return count


def _push_with_progress(rt: Any, bars: Any, systems: list[str]) -> Any:
    from syncd.pipeline.engine import Counts

    total = Counts()
    for name in systems:
        with bars.writing(name, _pending(rt, name)):
            total.add(rt.push(name))
    return total


def _runtime_for(ctx: click.Context, integration: str | None, since: dt.datetime | None = None, *,
                 create: bool = False) -> tuple[Any, dt.datetime | None]:
    """The runtime for a command on one integration (or all), and `since` as a UTC moment: a day
    without a zone is a day of the company's calendar (daemon.timezone), not of UTC. An unknown
    integration is a usage error naming the configured ones."""
    rt = _runtime(ctx, create=create)
    if integration and integration not in rt.connectors:
        rt.close()
        click.echo(f"no integration named {integration!r} (configured: {', '.join(rt.connectors)})", err=True)
        sys.exit(EXIT_CONFIG)
    if since is not None and since.tzinfo is None:
        from zoneinfo import ZoneInfo

        since = since.replace(tzinfo=ZoneInfo(rt.settings.daemon.timezone)).astimezone(dt.timezone.utc)
    return rt, since


def _progress_sync(ctx: click.Context, integration: str | None, since: dt.datetime | None,
                   create: bool) -> None:
    from syncd.pipeline.engine import Counts
    from syncd.progress import SyncProgress

    rt, since = _runtime_for(ctx, integration, since, create=create)
    counts = Counts()
    started = dt.datetime.now(dt.timezone.utc)
    failed: list[dict[str, Any]] = []
    try:
        with SyncProgress(enabled=not ctx.obj["json"]) as bars:
            for name in [integration] if integration else list(rt.connectors):
                for stream in rt.connectors[name].streams:
                    try:
                        c = rt.run_stream(name, stream, since=since, progress=bars.reading(name, stream))
                    except Exception as exc:  # noqa: BLE001 - recorded as a failed run; the others go on
                        reason = _database_error(exc)
                        if reason is not None:
                            _fail_database(reason)
                        from syncd.logs import redact_text

                        click.echo(redact_text(f"{name} {stream}: {type(exc).__name__}: {exc}"), err=True)
                        counts.failed += 1
                        continue
                    if c:
                        counts.add(c)
            counts.add(_push_with_progress(rt, bars, list(rt.connectors)))
        # a stream that failed is named with its reason; the others ran all the same
        failed = [r for r in rt.store.recent_runs(200) if r["status"] == "failed" and r["started_at"] >= started]
    finally:
        rt.close()
    data: dict[str, Any] = counts.as_dict()
    from syncd.logs import redact_text

    for r in reversed(failed):
        click.echo(redact_text(f"failed: {r['system']}/{r['stream']}: {r['error']}"), err=True)
    if ctx.obj["json"]:
        data["failures"] = [{"system": r["system"], "stream": r["stream"], "error": redact_text(r["error"] or "")}
                            for r in failed]
    _emit(ctx, data, lambda d: click.echo("  ".join(f"{k}={v}" for k, v in d.items())))
    sys.exit(EXIT_FAIL if data["failed"] or data["dead"] else EXIT_OK)


_CREATE = click.option("--create", is_flag=True, help="create the SQLite database if it does not exist yet")


@main.command()
@click.argument("integration", required=False)
@_CREATE
@click.option("--dry-run", is_flag=True,
              help="read and decide everything, change nothing: report what would be bound, created, written")
@click.pass_context
def sync(ctx: click.Context, integration: str | None, create: bool, dry_run: bool) -> None:
    """One pass: pull every stream, then push what was planned.

    Only INTEGRATION's streams when given; progress bars in a terminal. With --dry-run nothing is
    written anywhere, no source is acknowledged and no cursor moves.
    """
    if dry_run:
        _dry_run(ctx, integration, create)
        return
    _progress_sync(ctx, integration, None, create)


# bindings.how as the dry run reports it (syncd/store/tables.py BINDING_HOW)
_HOW = {"read": "new record", "stamp": "syncd's or the source's stamp", "origin": "made from another system's record",
        "link": "named by a link", "review": "a person's decision", "found": "syncd's key found there",
        "created": "created by syncd"}


def _dry_run(ctx: click.Context, integration: str | None, create: bool) -> None:
    from syncd.dryrun import dry_run

    rt, _ = _runtime_for(ctx, integration, create=create)
    try:
        report = dry_run(rt.syncer, [integration] if integration else None)
    finally:
        rt.close()

    def show(r: dict[str, Any]) -> None:
        click.echo("dry run: nothing was written, acknowledged or moved")
        for name, c in r["read"].items():
            click.echo(f"  {name}: read {c['created'] + c['bound'] + c['updated'] + c['skipped']} records — "
                       f"{c['created']} new, {c['bound']} bound to records syncd has, {c['updated']} updated, "
                       f"{c['review']} to review, {c['quarantined']} to quarantine")
            if c.get("bound_by"):
                click.echo("      bound by: " + ", ".join(f"{_HOW.get(k, k.replace('key:', 'match key '))} {v}"
                                                       for k, v in sorted(c["bound_by"].items())))
        for name, w in r["writes"].items():
            kinds = ", ".join(f"{k} {v['create']}+{v['update']}" for k, v in sorted(w["by_kind"].items()))
            click.echo(f"  -> {name}: would create {w['create']}, update {w['update']}"
                       + (f" ({kinds}: created+updated)" if kinds else "")
                       + (f", {w['waiting']} waiting for a linked record" if w["waiting"] else "")
                       + (f", {w['refused']} refused" if w["refused"] else ""))
            for smp in w["samples"]:
                src = f" from {smp['from'][0]} {smp['from'][1]}" if smp.get("from") else ""
                what = f": {', '.join(smp['fields'])}" if smp["fields"] else f" (after {smp['after']})"
                click.echo(f"       {smp['op']} {smp['kind']} {smp['id'] or smp['key'] or ''}{src}{what}")
        for f in r["failures"]:
            click.echo(f"failed: {f['system']}/{f['stream']}: {f['error']}", err=True)
    _emit(ctx, report, show)
    sys.exit(EXIT_FAIL if report["failures"] else EXIT_OK)


@main.command()
@click.option("--since", required=True, type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="import records changed since this date (a date of daemon.timezone, Europe/Moscow by default)")
@click.argument("integration", required=False)
@_CREATE
@click.pass_context
def backfill(ctx: click.Context, since: dt.datetime, integration: str | None, create: bool) -> None:
    """Import what changed since a date; sync goes on from there.

    The initial import of a period; regular sync then picks up from the cursors.
    """
    _progress_sync(ctx, integration, since, create)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@main.command()
@click.pass_context
def stats(ctx: click.Context) -> None:
    """Statistics per integration and the database size (/stats)."""
    from syncd.store.retention import database_size
    from syncd.store.stats import collect

    rt = _runtime(ctx, connect=False)
    try:
        data = collect(rt.store, sorted(rt.settings.systems), dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc),
                       downloads=rt.downloads())
        data["database"] = database_size(rt.store)
    finally:
        rt.close()

    def table(d: dict[str, Any]) -> None:
        from rich.console import Console
        from rich.table import Table

        tbl = Table(title="syncd integrations", caption=f"database {_size(d['database']['size_bytes'])}")
        for col in ("integration", "last run", "result", "created", "updated", "failed", "conflicts",
                    "quarantined", "pending", "blocked", "dead", "lag s", "wait for peer"):
            tbl.add_column(col)
        for name, s in d["integrations"].items():
            lr = s["last_run"] or {}
            c = s["counts"]
            tbl.add_row(name, str(lr.get("finished_at") or "-"), str(lr.get("result") or "-"), str(c["created"]),
                        str(c["updated"]), str(c["failed"]), str(c["conflicts"]), str(c["quarantined"]),
                        str(s["outbox"]["pending"]), str(s["outbox"].get("blocked", 0)), str(s["outbox"]["dead"]),
                        "-" if s["lag_seconds"] is None else f"{s['lag_seconds']:.0f}", _waiting_text(s))
        Console().print(tbl)

    _emit(ctx, data, table)


@main.command()
@click.option("--days", type=float, default=None,
              help="purge what is older than this (default: retention_days)")
@click.pass_context
def purge(ctx: click.Context, days: float | None) -> None:
    """Purge old done writes, runs and change log (retention_days).

    What the daemon's daily retention job does, now.
    """
    from syncd.store.retention import database_size
    from syncd.store.retention import purge as do_purge

    rt = _runtime(ctx, connect=False)
    days = rt.settings.daemon.retention_days if days is None else days
    try:
        if not days:
            data: dict[str, Any] = {"skipped": "retention_days = 0 keeps everything"}
        else:
            data = do_purge(rt.store, dt.timedelta(days=days)).as_dict()
        data["database"] = database_size(rt.store)
    finally:
        rt.close()
    _emit(ctx, data, lambda d: click.echo(d["skipped"] if "skipped" in d else
                                          f"purged {d['outbox']} done write(s), {d['runs']} run(s), "
                                          f"{d['changelog']} change-log row(s) older than {d['cutoff']}; "
                                          f"database {_size(d['database']['size_bytes'])}"))


def _rows_table(title: str, cols: list[str]) -> Callable[[list[dict[str, Any]]], None]:
    def table(rows: list[dict[str, Any]]) -> None:
        from rich.console import Console
        from rich.table import Table

        tbl = Table(title=title)
        for c in cols:
            tbl.add_column(c)
        for r in rows:
            tbl.add_row(*[str(r.get(c, "")) for c in cols])
        Console().print(tbl)
    return table


@main.group(invoke_without_command=True)
@click.pass_context
def conflicts(ctx: click.Context) -> None:
    """List open conflicts (or resolve one)."""
    if ctx.invoked_subcommand is None:
        rt = _runtime(ctx, connect=False)
        rows = rt.store.list_conflicts()
        rt.close()
        for r in rows:
            r["candidates"] = ", ".join(f"{c['system']}={c['value']!r}" for c in r["candidates"])
        _emit(ctx, rows, _rows_table("open conflicts", ["id", "entity_id", "field", "policy", "candidates"]))


@conflicts.command("resolve")
@click.argument("conflict_id", type=int)
@click.option("--take", help="take this system's value")
@click.option("--value", help="set this value")
@click.pass_context
def conflicts_resolve(ctx: click.Context, conflict_id: int, take: str | None, value: str | None) -> None:
    """Resolve conflict ID by taking a system's value or giving one."""
    if (take is None) == (value is None):
        click.echo("give exactly one of --take SYSTEM or --value V", err=True)
        sys.exit(EXIT_CONFIG)
    from syncd.pipeline import settle

    rt = _runtime(ctx, connect=False)
    try:
        eid = settle.resolve_conflict(rt.syncer.engine, conflict_id, take=take, value=value)
    except (KeyError, ValueError) as exc:
        click.echo(str(exc.args[0] if exc.args else exc), err=True)
        sys.exit(EXIT_FAIL)
    finally:
        rt.close()
    click.echo(f"resolved conflict {conflict_id}; entity {eid} planned for sync")


@main.group(invoke_without_command=True)
@click.pass_context
def quarantine(ctx: click.Context) -> None:
    """List quarantined records (or release one)."""
    if ctx.invoked_subcommand is None:
        rt = _runtime(ctx, connect=False)
        rows = rt.store.list_quarantine()
        rt.close()
        _emit(ctx, rows, _rows_table("quarantine", ["id", "system", "kind", "external_id", "reason", "created_at"]))


@quarantine.command("release")
@click.argument("qid", type=int)
@click.pass_context
def quarantine_release(ctx: click.Context, qid: int) -> None:
    """Take a quarantined record in again; what waited for it follows.

    Use it once the cause is fixed (a mapping, a missing status); a record that still cannot be
    processed stays in quarantine and the reason is printed.
    """
    from syncd.errors import BadInput
    from syncd.pipeline import settle

    rt = _runtime(ctx, connect=False)
    try:
        outcome = settle.release_quarantine(rt.syncer.engine, qid)
    except (KeyError, ValueError, BadInput) as exc:
        rt.close()
        click.echo(f"quarantine {qid}: {exc.args[0] if isinstance(exc, KeyError) else exc}", err=True)
        sys.exit(EXIT_FAIL)
    rt.close()
    click.echo(f"quarantine {qid}: {outcome}")
    sys.exit(EXIT_OK)


@main.group(invoke_without_command=True)
@click.pass_context
def review(ctx: click.Context) -> None:
    """List records waiting for an identity decision."""
    if ctx.invoked_subcommand is None:
        rt = _runtime(ctx, connect=False)
        rows = rt.store.list_review()
        rt.close()
        _emit(ctx, rows, _rows_table("review", ["id", "system", "type", "external_id", "reason", "candidates"]))


@review.command("resolve")
@click.argument("review_id", type=int)
@click.option("--create", is_flag=True, help="create a new entity")
@click.option("--entity", "entity_id", help="bind to this entity id")
@click.option("--dismiss", is_flag=True, help="junk (a spam form post): send it nowhere")
@click.pass_context
def review_resolve(ctx: click.Context, review_id: int, create: bool, entity_id: str | None,
                   dismiss: bool) -> None:
    """Decide a review: create, bind (--entity) or dismiss as junk."""
    if create + bool(entity_id) + dismiss != 1:
        click.echo("give exactly one of --create, --entity ID or --dismiss", err=True)
        sys.exit(EXIT_CONFIG)
    from syncd.pipeline import settle

    rt = _runtime(ctx, connect=False)
    try:
        if dismiss:
            settle.dismiss_review(rt.syncer.engine, review_id)
            click.echo(f"review {review_id} dismissed: sent nowhere")
            return
        eid = settle.resolve_review(rt.syncer.engine, review_id, entity_id=entity_id, create=create)
    except (KeyError, ValueError) as exc:
        click.echo(str(exc.args[0] if exc.args else exc), err=True)
        sys.exit(EXIT_FAIL)
    finally:
        rt.close()
    click.echo(f"review {review_id} resolved: entity {eid}")


@main.command()
@click.argument("ids", nargs=-1, type=int)
@click.option("--list", "list_only", is_flag=True, help="only list dead-lettered writes")
@click.option("--no-push", is_flag=True, help="only put them back; the daemon pushes them on its next tick")
@click.pass_context
def replay(ctx: click.Context, ids: tuple[int, ...], list_only: bool, no_push: bool) -> None:
    """Put dead-lettered writes back in the outbox and push them.

    All of them, or only IDS; --list shows them, --no-push leaves the push to the daemon.
    """
    from sqlalchemy import select

    from syncd.pipeline import outbox
    from syncd.progress import SyncProgress
    from syncd.store import tables as t

    rt = _runtime(ctx, connect=not list_only and not no_push)
    if list_only:
        rows = rt.store.list_outbox("dead")
        rt.close()
        _emit(ctx, rows, _rows_table("dead letters", ["id", "system", "entity_type", "entity_id", "attempts",
                                                       "last_error"]))
        return
    q = select(t.outbox.c.system).where(t.outbox.c.status == "dead").distinct()
    if ids:
        q = q.where(t.outbox.c.id.in_(ids))
    with rt.store.read() as c:
        systems = sorted(c.execute(q).scalars())
    n = outbox.replay(rt.store, list(ids) or None)
    data: dict[str, Any] = {"replayed": n}
    try:
        if n and not no_push:
            with SyncProgress(enabled=not ctx.obj["json"]) as bars:
                counts = _push_with_progress(rt, bars, [s for s in systems if s in rt.connectors])
            data.update(counts.as_dict())
    finally:
        rt.close()
    _emit(ctx, data, lambda d: click.echo(f"{d['replayed']} write(s) back in the outbox" + (
        f"; pushed {d['pushed']}, dead {d['dead']}, failed {d['failed']}" if "pushed" in d else "")))
    sys.exit(EXIT_FAIL if data.get("dead") or data.get("failed") else EXIT_OK)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--systems", default="shop,bitrix24,onec", show_default=True,
              help="connector types to configure: shop, bitrix24, onec (comma-separated)")
@click.option("--state-dir", default="/var/lib/syncd", show_default=True,
              help="where the daemon keeps its database (systemd's StateDirectory overrides it)")
@click.option("--group", default=None, help="group that may read the config (the unit's SupplementaryGroups)")
@click.option("--force", is_flag=True, help="overwrite config.toml, mappings and the unit (never env)")
@click.pass_context
def init(ctx: click.Context, directory: str, systems: str, state_dir: str, group: str | None,
         force: bool) -> None:
    """Write a config, mappings, env template and unit into a folder.

    DIRECTORY gets config.toml (commented), mappings/, env (secrets, mode 0600) and syncd.service.
    """
    from syncd.init import InitError, init_directory, parse_systems

    try:
        res = init_directory(directory, parse_systems(systems), state_dir=state_dir, group=group, force=force)
    except InitError as exc:
        click.echo(f"syncd init: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except OSError as exc:
        click.echo(f"syncd init: {exc.strerror or exc}: {exc.filename or directory}", err=True)
        sys.exit(EXIT_FAIL)
    data = {"directory": str(res.directory), "written": [str(p) for p in res.written],
            "kept": [str(p) for p in res.kept], "secrets": res.secrets}

    def text(d: dict[str, Any]) -> None:
        for p in d["written"]:
            click.echo(f"wrote {p}")
        for p in d["kept"]:
            click.echo(f"kept  {p} (holds your secrets; not overwritten)")
        cfg = Path(d["directory"]) / "config.toml"
        env = Path(d["directory"]) / "env"
        click.echo(f"next: fill in {env} ({', '.join(d['secrets'])}) and the URLs in {cfg}, "
                   f"then `syncd -c {cfg} --env-file {env} check`")

    _emit(ctx, data, text)


@main.command()
@click.option("--until-synced", is_flag=True, help="exit 0 once the seeded work has flowed; print /stats")
@click.option("--port", type=int, default=8787, show_default=True, help="daemon HTTP port")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None, help="where the demo keeps its SQLite file")
@click.option("--timeout", type=float, default=180.0, show_default=True)
@click.option("--no-1c-client", "no_onec_client", is_flag=True,
              help="do not run the demo's own 1C client: your 1C (or exchange tool) takes the documents")
def demo(until_synced: bool, port: int, state_dir: str | None, timeout: float, no_onec_client: bool) -> None:
    """Run the daemon against the sandbox peers on SQLite.

    Nothing to configure; --until-synced exits once the seeded work has flowed.
    """
    from syncd.demo import run_demo

    sys.exit(run_demo(until_synced=until_synced, port=port, state_dir=state_dir, timeout=timeout,
                      onec_client=not no_onec_client))


@main.group()
def rules() -> None:
    """Business rules: explain and check."""


@rules.command("explain")
@click.argument("entity_id")
@click.pass_context
def rules_explain(ctx: click.Context, entity_id: str) -> None:
    """Which rules match an entity, in order, and what each would do.

    ENTITY_ID is an entity id or SYSTEM:TYPE:EXTERNAL_ID.
    """
    from syncd.rules import explain

    rt = _runtime(ctx)
    eid = entity_id
    if entity_id.count(":") >= 2:
        # the system's own kind (crm:deal:3) or the canonical type (crm:order:3)
        from syncd.trace import find

        with rt.store.read() as conn:
            found = find(conn, rt.mapper, entity_id)
        eid = found[0] if found else ""
    ent = rt.store.entity(eid) if eid else None
    if ent is None:
        rt.close()
        click.echo(f"no entity {entity_id!r}", err=True)
        sys.exit(EXIT_FAIL)
    lines = explain(rt.mapper.ms.rules, ent, store=rt.store, connectors=rt.connectors)
    rt.close()
    _emit(ctx, lines, lambda ls: click.echo("\n".join(ls) if ls else "no rule matches"))


@main.command()
@click.argument("integration", required=False)
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="only records changed since this day")
@click.option("--repair", is_flag=True, help="bring drifted records back in step through the outbox")
@click.option("--sample", type=int, default=None, help="compare only this many records per system, at random")
@click.pass_context
def audit(ctx: click.Context, integration: str | None, since: dt.datetime | None, repair: bool,
          sample: int | None) -> None:
    """Compare records read back from every system with syncd's.

    One line per difference: the record, the field, what syncd holds, what the system holds and the
    likely cause. Exit 1 when anything drifted (after --repair: what was found before repairing).
    """
    from syncd import audit as audit_mod
    from syncd.progress import SyncProgress

    rt, since = _runtime_for(ctx, integration, since)
    try:
        with SyncProgress(enabled=not ctx.obj["json"]) as bars:
            report = audit_mod.audit(rt.store, rt.mapper, rt.connectors,
                                     systems=[integration] if integration else None, since=since, sample=sample,
                                     repair=repair, ingest=rt.syncer.engine.ingest,
                                     progress=bars.reading(integration or "all", "audit"))
        audit_mod.remember(rt.store, report, sample=sample is not None)
        if repair and report.repaired:
            rt.push_all()
    finally:
        rt.close()

    def show(d: dict[str, Any]) -> None:
        from syncd.logs import redact_text

        for x in d["drift"]:
            click.echo(redact_text(f"✗ {x['system']} {x['entity_type']} {x['external_id']} ({x['entity_id']}): "
                                   f"{x['field']}: syncd {x['held']!r}, {x['system']} {x['found']!r} — {x['why']}"))
        for name, why in d["unreadable"].items():
            click.echo(f"– {name}: not read back: {why}")
        checked = ", ".join(f"{s} {n}" for s, n in d["checked"].items()) or "nothing"
        pending = sum(d["pending"].values())
        click.echo(f"checked {checked}; drift in {d['drift_records']} record(s)"
                   + (f"; {pending} difference(s) a queued write explains" if pending else "")
                   + (f"; repaired {d['repaired']}" if repair else ""))
    _emit(ctx, report.as_dict(), show)
    sys.exit(EXIT_FAIL if report.drift else EXIT_OK)


@main.command()
@click.argument("query")
@click.pass_context
def trace(ctx: click.Context, query: str) -> None:
    """A record's story across systems: changes, decisions, writes.

    QUERY is SYSTEM:KIND:ID (crm:deal:15, shop:order:1001), an order number, a phone, an e-mail,
    an ИНН or any system's id.
    """
    from syncd.trace import local_time, record_links, trace as story

    rt = _runtime(ctx)                      # its connectors give the records' addresses
    data = story(rt.store, rt.mapper, query, link=record_links(rt.connectors, rt.mapper), region=rt.mapper.ms.region)
    zone = rt.settings.daemon.timezone      # the status page's zone: one clock for a person
    rt.close()

    def show(d: dict[str, Any]) -> None:
        if not d["records"]:
            click.echo(f"nothing found for {query!r}")
            return
        for rec in d["records"]:
            ids = ", ".join(f"{s} {rec['kinds'].get(s, rec['type'])} {x}" for s, x in rec["ids"].items()) or "no system yet"
            hold = f" [held: {rec['hold']}]" if rec["hold"] else ""
            click.echo(f"{rec['type']} {rec['entity_id']}{hold} — {ids}")
            for e in rec["events"]:
                click.echo(f"  {local_time(e['at'], zone):23}  {e['kind']:8} {e['summary']}")
    _emit(ctx, data, show)
    sys.exit(EXIT_OK if data["records"] else EXIT_FAIL)


@rules.command("check")
@click.pass_context
def rules_check(ctx: click.Context) -> None:
    """Check every rule against live users, pipelines and stages."""
    from syncd.rules import check

    rt = _runtime(ctx)
    live = {}
    unread = []
    for name, conn in rt.connectors.items():
        try:
            live[name] = conn.describe()
        except Exception as exc:  # noqa: BLE001
            unread.append(name)
            click.echo(f"✗ {name}: cannot read users/pipelines: {exc}", err=True)
    # a configured system that could not be read is said above, not as "not configured"
    problems = [p for p in check(rt.mapper.ms.rules, live)
                if not any(f"system {n!r} is not configured" in p for n in unread)]
    rt.close()
    if unread and not problems:
        sys.exit(EXIT_FAIL)
    for p in problems:
        click.echo(f"✗ {p}")
    if not problems:
        click.echo("✓ rules match the live systems")
    sys.exit(EXIT_FAIL if problems else EXIT_OK)


@main.group()
def cml() -> None:
    """CommerceML tools."""


@cml.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path())
def cml_check(files: tuple[str, ...]) -> None:
    """Validate CommerceML files; print their documents as JSON lines."""
    from syncd.commerceml.check import check_files

    sys.exit(check_files(list(files)))


_with_json_option(main)


if __name__ == "__main__":  # pragma: no cover
    main()
