"""`syncd rules`, `syncd audit`, `syncd trace`: why a record is as it is, and whether systems agree."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import click

from syncd.cli.base import EXIT_FAIL, EXIT_OK, _emit, _runtime, _runtime_for, main


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
    from syncd.mapping.live import canonical_views
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
    lines = explain(rt.mapper.ms.rules, ent, store=rt.store, connectors=canonical_views(rt.mapper, rt.connectors))
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
    from syncd.trace import local_time, record_links
    from syncd.trace import trace as story

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
    from syncd.mapping.live import canonical_schema
    from syncd.rules import check

    rt = _runtime(ctx)
    live = {}
    unread = []
    for name, conn in rt.connectors.items():
        try:
            live[name] = canonical_schema(rt.mapper, name, conn.describe())
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
