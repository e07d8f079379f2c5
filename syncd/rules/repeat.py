"""Repeat sales: a client with exactly one won order, N days after it was won, gets one
"call for a repeat order" task for the responsible manager — once per client.

"Once" holds twice over: a kv marker `rules:repeat:<client id>`, and the task entity itself
(`task.rule` + `task.person`/`task.company`) which is looked for before making another.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.engine import Connection

from syncd import schema
from syncd.rules import expr
from syncd.rules.config import RepeatConfig, parse_duration
from syncd.rules.context import Context, load_all, version_time
from syncd.rules.timers import TIMER_PREFIX, kv_prefix, make_task, responsible_of

REPEAT_PREFIX = "rules:repeat:"


def client_of(fields: dict[str, Any]) -> tuple[str, str] | None:
    if fields.get("order.company"):
        return "company", str(fields["order.company"])
    if fields.get("order.customer"):
        return "person", str(fields["order.customer"])
    return None


class RepeatSales:
    def __init__(self, cfg: RepeatConfig, exclude_when: expr.Node | None = None) -> None:
        self.cfg = cfg
        self.won = expr.parse(cfg.won_when, cfg.name)
        self.won_reads = [p for p in expr.paths(self.won) if schema.is_field(p)]
        self.wait = parse_duration(cfg.after)

    def run(self, conn: Connection, now: dt.datetime
            ) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any], list[str]]:
        """(task creates, markers to write, warnings)."""
        orders = load_all(conn, "order")
        won: dict[tuple[str, str], list[tuple[str, dict[str, Any], dt.datetime]]] = {}
        for eid, (fields, versions, created) in orders.items():
            client = client_of(fields)
            if client is None or not expr.evaluate(self.won, fields):
                continue
            when = version_time(versions, self.won_reads) or created or now
            won.setdefault(client, []).append((eid, fields, when))
        markers = kv_prefix(conn, REPEAT_PREFIX)
        done = {(f.get("task.company") and ("company", f["task.company"])) or
                (f.get("task.person") and ("person", f["task.person"])) or None
                for f, _, _ in load_all(conn, "task").values() if f.get("task.rule") == self.cfg.name}
        creates, put, warnings = [], {}, []
        for client, deals in won.items():
            key = f"{REPEAT_PREFIX}{client[1]}"
            if len(deals) != 1 or key in markers or client in done:
                continue
            eid, fields, when = deals[0]
            if now - when < self.wait:
                continue
            ctx = Context("order", fields, conn, entity_id=eid)
            who = responsible_of(ctx, self.cfg.task.responsible)
            if not who:
                warnings.append(f"{self.cfg.name}: client {client[1]} has no responsible manager; no task")
                put[key] = {"at": now.isoformat(), "order": eid, "skipped": "no responsible"}
                continue
            creates.append(("task", make_task(self.cfg.task, self.cfg.name, ctx, now, responsible=who)))
            put[key] = {"at": now.isoformat(), "order": eid}
        return creates, put, warnings


__all__ = ["REPEAT_PREFIX", "TIMER_PREFIX", "RepeatSales"]
