"""`syncd sync` (one pass, or a dry run that reports first) and `syncd backfill`."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import click

from syncd.cli.base import (
    _CREATE,
    EXIT_FAIL,
    EXIT_OK,
    _database_error,
    _emit,
    _fail_database,
    _push_with_progress,
    _runtime_for,
    main,
)


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
