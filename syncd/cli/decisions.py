"""What a person decides: conflicts, quarantine, identify review, dead letters replayed."""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

from syncd.cli.base import (
    EXIT_CONFIG,
    EXIT_FAIL,
    EXIT_OK,
    _emit,
    _push_with_progress,
    _rows_table,
    _runtime,
    main,
)


def _list(ctx: click.Context, rows_of: Callable[[Any], list[dict[str, Any]]], title: str, cols: list[str]) -> None:
    rt = _runtime(ctx, connect=False)
    rows = rows_of(rt.store)
    rt.close()
    _emit(ctx, rows, _rows_table(title, cols))


@main.group(invoke_without_command=True)
@click.pass_context
def conflicts(ctx: click.Context) -> None:
    """List open conflicts (or resolve one)."""
    if ctx.invoked_subcommand is None:
        def rows_of(store: Any) -> list[dict[str, Any]]:
            rows = store.list_conflicts()
            for r in rows:
                r["candidates"] = ", ".join(f"{c['system']}={c['value']!r}" for c in r["candidates"])
            return rows

        _list(ctx, rows_of, "open conflicts", ["id", "entity_id", "field", "policy", "candidates"])


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
        _list(ctx, lambda store: store.list_quarantine(), "quarantine",
              ["id", "system", "kind", "external_id", "reason", "created_at"])


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
        _list(ctx, lambda store: store.list_review(), "review",
              ["id", "system", "type", "external_id", "reason", "candidates"])


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
