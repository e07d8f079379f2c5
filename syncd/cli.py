"""The `syncd` command.

Exit codes: 0 success; 1 the work failed (a check failed, a sync had failures, a file is invalid);
2 usage or configuration error (the message names file, key and reason); 3 the database or a
peer could not be reached.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from syncd.errors import ConfigError

EXIT_OK, EXIT_FAIL, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 1, 2, 3


def _default_config() -> str:
    for p in (os.environ.get("SYNCD_CONFIG"), "config.toml", "/etc/syncd/config.toml"):
        if p and Path(p).exists():
            return p
    return os.environ.get("SYNCD_CONFIG") or "config.toml"


def _fail_config(exc: ConfigError) -> None:
    click.echo(f"config error: {exc}", err=True)
    sys.exit(EXIT_CONFIG)


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


def _runtime(ctx: click.Context, connect: bool = True) -> Any:
    from syncd.daemon.runtime import Runtime

    settings = _settings(ctx)
    try:
        return Runtime(settings, connect=connect)
    except ConfigError as exc:
        _fail_config(exc)
    except Exception as exc:  # noqa: BLE001 - named for the user, with the exit code for scripts
        from sqlalchemy.exc import OperationalError

        if isinstance(exc, OperationalError):
            click.echo(f"database unreachable: {exc.orig}", err=True)
            sys.exit(EXIT_UNREACHABLE)
        raise


def _emit(ctx: click.Context, data: Any, table: Callable[[Any], None]) -> None:
    if ctx.obj.get("json"):
        click.echo(json.dumps(data, ensure_ascii=False, default=str, indent=None))
    else:
        table(data)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", default=_default_config, show_default="$SYNCD_CONFIG or ./config.toml",
              help="config file")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default=None)
@click.version_option(package_name="syncd")
@click.pass_context
def main(ctx: click.Context, config: str, as_json: bool, log_format: str | None) -> None:
    """syncd keeps an online shop, 1C and a CRM in step."""
    ctx.ensure_object(dict)
    ctx.obj.update(config=config, json=as_json, log_format=log_format)


@main.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon: scheduler, HTTP endpoints, until SIGTERM."""
    from syncd.daemon.main import Daemon

    settings = _settings(ctx)
    try:
        Daemon(settings).run_forever()
    except ConfigError as exc:
        _fail_config(exc)


@main.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check the config, the mappings against the live systems, and every connection."""
    rt = _runtime(ctx)
    ok = True
    lines = []
    try:
        rt.store.ping()
        lines.append(("database", True, rt.store.engine.url.render_as_string(hide_password=True)))
    except Exception as exc:  # noqa: BLE001
        lines.append(("database", False, str(exc)))
        ok = False
    for name, h in rt.health().items():
        lines.append((name, h.ok, h.detail))
        ok &= h.ok
    try:
        from syncd.mapping.live import check_live

        for name, problem in check_live(rt.mapper, rt.connectors):
            lines.append((f"{name} mapping", False, problem))
            ok = False
    except ImportError:
        pass
    if ctx.obj["json"]:
        click.echo(json.dumps([{"name": n, "ok": o, "detail": d} for n, o, d in lines], ensure_ascii=False))
    else:
        for name, good, detail in lines:
            mark = click.style("✓", fg="green") if good else click.style("✗", fg="red")
            click.echo(f"{mark} {name}: {detail}")
    rt.close()
    sys.exit(EXIT_OK if ok else EXIT_FAIL)


def _progress_sync(ctx: click.Context, integration: str | None, since: dt.datetime | None) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    rt = _runtime(ctx)
    systems = [integration] if integration else None
    if integration and integration not in rt.connectors:
        click.echo(f"no integration named {integration!r} (configured: {', '.join(rt.connectors)})", err=True)
        sys.exit(EXIT_CONFIG)
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed} records"),
                  TimeElapsedColumn(), console=console, disable=ctx.obj["json"] or not console.is_terminal) as prog:
        task = prog.add_task("syncing" if since is None else f"backfill since {since:%Y-%m-%d}", total=None)
        started = dt.datetime.now(dt.timezone.utc)
        counts = rt.sync_once(systems, since=since, progress=lambda n: prog.advance(task, n))
    data = counts.as_dict()
    # a stream that failed is named with its reason; the others ran all the same
    failed = [r for r in rt.store.recent_runs(200) if r["status"] == "failed" and r["started_at"] >= started]
    rt.close()
    for r in reversed(failed):
        click.echo(f"failed: {r['system']}/{r['stream']}: {r['error']}", err=True)
    if ctx.obj["json"]:
        data["failures"] = [{"system": r["system"], "stream": r["stream"], "error": r["error"]} for r in failed]
    _emit(ctx, data, lambda d: click.echo("  ".join(f"{k}={v}" for k, v in d.items())))
    sys.exit(EXIT_FAIL if data["failed"] or data["dead"] else EXIT_OK)


@main.command()
@click.argument("integration", required=False)
@click.pass_context
def sync(ctx: click.Context, integration: str | None) -> None:
    """One pass: pull every stream (of INTEGRATION), then push what was planned."""
    _progress_sync(ctx, integration, None)


@main.command()
@click.option("--since", required=True, type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="import records changed since this date")
@click.argument("integration", required=False)
@click.pass_context
def backfill(ctx: click.Context, since: dt.datetime, integration: str | None) -> None:
    """Initial import of a period, then regular sync picks up from the cursors."""
    _progress_sync(ctx, integration, since.replace(tzinfo=dt.timezone.utc))


@main.command()
@click.pass_context
def stats(ctx: click.Context) -> None:
    """Statistics per integration (as on /stats)."""
    rt = _runtime(ctx, connect=False)
    systems = sorted(rt.settings.systems)
    from syncd.store.stats import collect

    data = collect(rt.store, systems, dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))
    rt.close()

    def table(d: dict[str, Any]) -> None:
        from rich.console import Console
        from rich.table import Table

        tbl = Table(title="syncd integrations")
        for col in ("integration", "last run", "result", "created", "updated", "failed", "conflicts",
                    "quarantined", "pending", "dead", "lag s"):
            tbl.add_column(col)
        for name, s in d["integrations"].items():
            lr = s["last_run"] or {}
            c = s["counts"]
            tbl.add_row(name, str(lr.get("finished_at") or "-"), str(lr.get("result") or "-"), str(c["created"]),
                        str(c["updated"]), str(c["failed"]), str(c["conflicts"]), str(c["quarantined"]),
                        str(s["outbox"]["pending"]), str(s["outbox"]["dead"]),
                        "-" if s["lag_seconds"] is None else f"{s['lag_seconds']:.0f}")
        Console().print(tbl)

    _emit(ctx, data, table)


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
    rt = _runtime(ctx, connect=False)
    try:
        eid = rt.syncer.engine.resolve_conflict(conflict_id, take=take, value=value)
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
    """Take a quarantined record in again (after its cause was fixed); what waited for it follows."""
    from syncd.errors import BadInput

    rt = _runtime(ctx, connect=False)
    try:
        outcome = rt.syncer.engine.release_quarantine(qid)
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
    """List records waiting for an identity decision (or resolve one)."""
    if ctx.invoked_subcommand is None:
        rt = _runtime(ctx, connect=False)
        rows = rt.store.list_review()
        rt.close()
        _emit(ctx, rows, _rows_table("review", ["id", "system", "type", "external_id", "reason", "candidates"]))


@review.command("resolve")
@click.argument("review_id", type=int)
@click.option("--create", is_flag=True, help="create a new entity")
@click.option("--entity", "entity_id", help="bind to this entity id")
@click.pass_context
def review_resolve(ctx: click.Context, review_id: int, create: bool, entity_id: str | None) -> None:
    if create == bool(entity_id):
        click.echo("give exactly one of --create or --entity ID", err=True)
        sys.exit(EXIT_CONFIG)
    rt = _runtime(ctx, connect=False)
    try:
        eid = rt.syncer.engine.resolve_review(review_id, entity_id=entity_id, create=create)
    except (KeyError, ValueError) as exc:
        click.echo(str(exc.args[0] if exc.args else exc), err=True)
        sys.exit(EXIT_FAIL)
    finally:
        rt.close()
    click.echo(f"review {review_id} resolved: entity {eid}")


@main.command()
@click.argument("ids", nargs=-1, type=int)
@click.option("--list", "list_only", is_flag=True, help="only list dead-lettered writes")
@click.pass_context
def replay(ctx: click.Context, ids: tuple[int, ...], list_only: bool) -> None:
    """Put dead-lettered writes (all, or IDS) back in the outbox."""
    rt = _runtime(ctx, connect=False)
    if list_only:
        rows = rt.store.list_outbox("dead")
        rt.close()
        _emit(ctx, rows, _rows_table("dead letters", ["id", "system", "entity_type", "entity_id", "attempts",
                                                       "last_error"]))
        return
    n = rt.store.replay(list(ids) or None)
    rt.close()
    click.echo(f"{n} write(s) back in the outbox")


@main.command()
@click.option("--until-synced", is_flag=True, help="exit 0 once the seeded work has flowed; print /stats")
@click.option("--port", type=int, default=8787, show_default=True, help="daemon HTTP port")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None, help="where the demo keeps its SQLite file")
@click.option("--timeout", type=float, default=180.0, show_default=True)
def demo(until_synced: bool, port: int, state_dir: str | None, timeout: float) -> None:
    """Run the daemon against the sandbox peers on SQLite (nothing to configure)."""
    from syncd.demo import run_demo

    sys.exit(run_demo(until_synced=until_synced, port=port, state_dir=state_dir, timeout=timeout))


@main.group()
def rules() -> None:
    """Business rules: explain and check."""


@rules.command("explain")
@click.argument("entity_id")
@click.pass_context
def rules_explain(ctx: click.Context, entity_id: str) -> None:
    """Which rules match ENTITY_ID (an entity id, or SYSTEM:TYPE:EXTERNAL_ID), in order, and what each would do."""
    from syncd.rules import explain

    rt = _runtime(ctx)
    eid = entity_id
    if entity_id.count(":") == 2:
        system, type_, ext = entity_id.split(":")
        eid = rt.store.find_entity(system, type_, ext) or ""
    ent = rt.store.entity(eid) if eid else None
    if ent is None:
        rt.close()
        click.echo(f"no entity {entity_id!r}", err=True)
        sys.exit(EXIT_FAIL)
    lines = explain(rt.mapper.ms.rules, ent, store=rt.store, connectors=rt.connectors)
    rt.close()
    _emit(ctx, lines, lambda ls: click.echo("\n".join(ls) if ls else "no rule matches"))


@rules.command("check")
@click.pass_context
def rules_check(ctx: click.Context) -> None:
    """Validate every rule against the live users, pipelines and stages of the configured systems."""
    from syncd.rules import check

    rt = _runtime(ctx)
    live = {}
    for name, conn in rt.connectors.items():
        try:
            live[name] = conn.describe()
        except Exception as exc:  # noqa: BLE001
            click.echo(f"✗ {name}: cannot read users/pipelines: {exc}", err=True)
    problems = check(rt.mapper.ms.rules, live)
    rt.close()
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
    """Validate CommerceML files (XML or zip); print their documents as JSON lines."""
    from syncd.commerceml.check import check_files

    sys.exit(check_files(list(files)))


if __name__ == "__main__":  # pragma: no cover
    main()
