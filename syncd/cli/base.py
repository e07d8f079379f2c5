"""The `syncd` command: the group, its options and what every command shares (config, runtime,
output, exit codes). The commands live beside it, one module per group.

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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("syncd")
    except PackageNotFoundError:
        return "unknown"


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


_CREATE = click.option("--create", is_flag=True, help="create the SQLite database if it does not exist yet")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


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
