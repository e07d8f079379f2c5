"""`syncd stats` and `syncd purge`: what the database holds, and keeping it small."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from syncd.cli.base import _emit, _runtime, _size, main


def _waiting_text(s: dict[str, Any]) -> str:
    """"3 since 2026-12-07T10:00, last exchange never" for a system that fetches its writes (1C)."""
    w = s.get("waiting_peer")
    if w is None:
        return "-"
    if not w["documents"]:
        return f"0, last exchange {w['last_exchange'] or 'never'}"
    return f"{w['documents']} since {w['since']}, last exchange {w['last_exchange'] or 'never'}"


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
