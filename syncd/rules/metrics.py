"""Customer metrics from the canonical orders in the store, per person and company.

turnover        sum of `order.total` of orders dated within `window` (before `now`)
orders_count    number of orders
first_order_at  earliest `order.date` (the record's creation time when the order has no date)
last_order_at   latest one
average_order   total of all orders / their number, to 0.01
won_count       orders matching `won_when`
Orders matching `exclude_when` (canceled) count nowhere. Only values that differ from the
client's golden record are returned, so an unchanged metric is never written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy.engine import Connection

from syncd.rules import expr
from syncd.rules.config import MetricsConfig, parse_duration
from syncd.rules.context import load_all

CENT = Decimal("0.01")


def compute(orders: Iterable[tuple[dict[str, Any], dt.datetime | None]], now: dt.datetime,
            window: dt.timedelta, won: expr.Node, exclude: expr.Node) -> dict[str, Any]:
    """Metrics of one client's orders: [(canonical fields, fallback date)]."""
    total = turnover = Decimal(0)
    n = won_n = 0
    first = last = None
    since = now - window
    for fields, fallback in orders:
        if expr.evaluate(exclude, fields):
            continue
        amount = fields.get("order.total") or Decimal(0)
        when = fields.get("order.date") or fallback
        n += 1
        total += amount
        if expr.evaluate(won, fields):
            won_n += 1
        if when is not None:
            if since <= when <= now:
                turnover += amount
            first = when if first is None or when < first else first
            last = when if last is None or when > last else last
    return {
        "turnover": turnover,
        "orders_count": n,
        "first_order_at": first,
        "last_order_at": last,
        "average_order": (total / n).quantize(CENT, ROUND_HALF_UP) if n else None,
        "won_count": won_n,
    }


class Metrics:
    def __init__(self, cfg: MetricsConfig) -> None:
        self.cfg = cfg
        self.window = parse_duration(cfg.window)
        self.won = expr.parse(cfg.won_when, "metrics won_when")
        self.exclude = expr.parse(cfg.exclude_when, "metrics exclude_when")

    def run(self, conn: Connection, now: dt.datetime) -> dict[str, dict[str, Any]]:
        """client entity id -> changed metric fields."""
        orders = load_all(conn, "order")
        per: dict[tuple[str, str], list[tuple[dict[str, Any], dt.datetime | None]]] = {}
        for fields, _, created in orders.values():
            for etype, link in (("person", "order.customer"), ("company", "order.company")):
                if etype in self.cfg.entities and fields.get(link):
                    per.setdefault((etype, str(fields[link])), []).append((fields, created))
        out: dict[str, dict[str, Any]] = {}
        for etype in self.cfg.entities:
            clients = load_all(conn, etype)
            for cid, (golden, _, _) in clients.items():
                mine = per.get((etype, cid))
                if mine is None:
                    continue
                values = compute(mine, now, self.window, self.won, self.exclude)
                upd = {}
                for name in self.cfg.fields:
                    key = f"{etype}.{name}"
                    if golden.get(key) != values[name]:
                        upd[key] = values[name]
                if upd:
                    out[cid] = upd
        return out
