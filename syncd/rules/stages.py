"""Stage chains from facts ("paid 100 % -> invoice paid"), defaults for created records and
cross-entity rules ("the company's first order closes its lead-pipeline deal")."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from syncd import schema
from syncd.connector import LiveSchema
from syncd.rules import expr
from syncd.rules.config import CrossRule, DefaultsConfig, StageRule
from syncd.pipeline.link import load_all_orders_linked
from syncd.rules.context import Context, Directory, render
from syncd.store import Store, utcnow
from syncd.store import tables as t

PENDING_PREFIX = "rules:pending:"


@dataclass
class Move:
    rule: str
    updates: dict[str, Any]
    skipped: str | None = None


class StageChains:
    def __init__(self, rules: list[StageRule], directory: Directory) -> None:
        self.rules = rules
        self.directory = directory
        self.conds = {r.name: expr.parse(r.when or "", r.name) for r in rules}
        self.reads = {r.name: expr.paths(self.conds[r.name]) for r in rules}

    def stage_order(self, rule: StageRule) -> list[str] | None:
        if rule.order:
            return [str(s) for s in rule.order]
        if rule.system and rule.pipeline is not None:
            stages = self.directory.schema(rule.system).pipelines.get(str(rule.pipeline))
            return [str(s) for s in stages] if stages else None
        return None

    def _triggered(self, rule: StageRule, changed: dict[str, Any], created: bool) -> bool:
        if rule.on == "always" or created:
            return True
        for p in self.reads[rule.name]:
            if p in changed or any(p.startswith(c + ".") for c in changed):
                return True
        return False

    def apply(self, etype: str, ctx: Context, golden: dict[str, Any], changed: dict[str, Any],
              created: bool, *, explain: bool = False) -> list[Move]:
        """Rules in order; each sees the effect of the ones before it. Returns what matched."""
        cur = dict(golden)
        moves: list[Move] = []
        view = Context(etype, cur, ctx.conn, created=ctx.created, system=ctx.system,
                       entity_id=ctx.entity_id, extra=ctx.extra)
        view._linked = ctx._linked
        for rule in self.rules:
            if rule.entity != etype:
                continue
            if not explain and not self._triggered(rule, changed, created):
                continue
            if rule.pipeline is not None and cur.get(rule.pipeline_field) is not None \
                    and str(cur.get(rule.pipeline_field)) != str(rule.pipeline):
                continue
            if not expr.evaluate(self.conds[rule.name], view):
                continue
            upd = {k: v for k, v in rule.set.items() if _differs(cur.get(k), v)}
            if not upd:
                moves.append(Move(rule.name, {}, "already there"))
                continue
            target = upd.get(rule.field)
            if target is not None and not rule.allow_backwards:
                order = self.stage_order(rule)
                now = cur.get(rule.field)
                if order and now is not None and str(now) in order and str(target) in order \
                        and order.index(str(target)) < order.index(str(now)):
                    moves.append(Move(rule.name, upd, f"would move {rule.field} backwards "
                                                      f"({now} -> {target})"))
                    continue
            cur.update(upd)
            moves.append(Move(rule.name, upd))
        return moves


def _differs(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return not (a is None and b is None)
    return not expr.compare("==", a, b)


def defaults_for(cfg: DefaultsConfig | None, golden: dict[str, Any],
                 get: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """The default fields a created record lacks. A text value with `{field}` placeholders is a
    template filled from the record (`get`: a Context), e.g. "Заказ №{order.number}"; values are
    filled in file order, so a template may read a default set before it."""
    if cfg is None:
        return {}
    out: dict[str, Any] = {}
    for k, v in cfg.fields.items():
        if not (cfg.override or golden.get(k) in (None, "")):
            continue
        if isinstance(v, str) and "{" in v:
            look = get or golden.get
            v = render(v, lambda n: out[n] if n in out else look(n))
        out[k] = v
    return out


# -- cross-entity rules --------------------------------------------------------------------------

class CrossRules:
    """Matches on one record; the updates to its related records are queued in the store (same
    transaction as the pull) and applied by the tick through `engine.apply_effects`."""

    def __init__(self, rules: list[CrossRule]) -> None:
        self.rules = rules
        self.conds = {r.name: expr.parse(r.when, r.name) if r.when else None for r in rules}
        self.tconds = {r.name: expr.parse(r.target_when, r.name) if r.target_when else None for r in rules}

    def targets(self, rule: CrossRule, ctx: Context, golden: dict[str, Any], conn: Connection
                ) -> dict[str, dict[str, Any]]:
        """target entity id -> updates, for one matched rule."""
        link_value = golden.get(rule.via)
        if not link_value:
            return {}
        target_link = rule.target_via or rule.via
        out = {}
        if rule.target == "order" and target_link in ("order.company", "order.customer"):
            cands = {eid: f for eid, (f, _, _) in load_all_orders_linked(conn, target_link, link_value).items()}
        else:
            cands = {}
            pattern = f'%"{target_link}":{json.dumps(link_value, ensure_ascii=False, default=str)}%'
            for eid, text in conn.execute(select(t.entities.c.id, t.entities.c.fields).where(
                    t.entities.c.type == rule.target, t.entities.c.fields.like(pattern))):
                f = schema.decode(text)
                if f.get(target_link) == link_value:
                    cands[eid] = f
        cond = self.tconds[rule.name]
        for eid, fields in cands.items():
            if eid == ctx.entity_id:
                continue
            if cond is not None and not expr.evaluate(cond, fields):
                continue
            upd = {k: v for k, v in rule.set.items() if _differs(fields.get(k), v)}
            if upd:
                out[eid] = upd
        return out

    def matched(self, etype: str, ctx: Context, changed: dict[str, Any], created: bool,
                explain: bool = False) -> list[CrossRule]:
        out = []
        for rule in self.rules:
            if rule.entity != etype:
                continue
            if not explain:
                if rule.on == "created" and not created:
                    continue
                if rule.on == "change" and not changed and not created:
                    continue
            cond = self.conds[rule.name]
            if cond is not None and not expr.evaluate(cond, ctx):
                continue
            if rule.first and not explain and ctx.conn is not None and self._has_earlier(rule, ctx):
                continue
            out.append(rule)
        return out

    def _has_earlier(self, rule: CrossRule, ctx: Context) -> bool:
        """Another record of the same link already matches `when`: this one is not the first."""
        value = ctx.golden.get(rule.via)
        if not value or ctx.conn is None:
            return False
        pattern = f'%"{rule.via}":{json.dumps(value, ensure_ascii=False, default=str)}%'
        cond = self.conds[rule.name]
        for eid, text in ctx.conn.execute(select(t.entities.c.id, t.entities.c.fields).where(
                t.entities.c.type == rule.entity, t.entities.c.fields.like(pattern))):
            if eid == ctx.entity_id:
                continue
            fields = schema.decode(text)
            if fields.get(rule.via) == value and (cond is None or expr.evaluate(
                    cond, Context(rule.entity, fields, ctx.conn, entity_id=eid))):
                return True
        return False


def queue_updates(conn: Connection, rule: str, updates: dict[str, dict[str, Any]]) -> None:
    """Keep cross-entity updates in kv (same transaction as the change that caused them)."""
    for eid, upd in updates.items():
        conn.execute(insert(t.kv).values(
            key=f"{PENDING_PREFIX}{uuid.uuid4().hex}",
            value=json.dumps({"entity_id": eid, "rule": rule, "updates": schema.jsonable(upd)},
                             ensure_ascii=False), updated_at=utcnow()))


def drain_pending(store: Store, apply: Callable[[dict[str, dict[str, Any]]], int]) -> int:
    """Apply queued cross-entity updates, then delete exactly the rows applied."""
    with store.begin() as c:
        rows = c.execute(select(t.kv.c.key, t.kv.c.value).where(
            t.kv.c.key.like(PENDING_PREFIX + "%")).order_by(t.kv.c.updated_at, t.kv.c.key)).all()
    if not rows:
        return 0
    merged: dict[str, dict[str, Any]] = {}
    for _, raw in rows:
        item = json.loads(raw)
        upd = {k: schema.decode_value(k, v) for k, v in item["updates"].items()}
        merged.setdefault(item["entity_id"], {}).update(upd)
    n = apply(merged)
    with store.begin() as c:
        c.execute(delete(t.kv).where(t.kv.c.key.in_([k for k, _ in rows])))
    return n


def check_stages(rules: list[StageRule], live: dict[str, LiveSchema]) -> list[str]:
    out = []
    for i, r in enumerate(rules):
        where = f"rules.stages[{i}] ({r.name})"
        if r.system is None:
            if r.pipeline is not None and not r.order:
                out.append(f"{where}: `pipeline` without `system` or `order`: no stage order to guard "
                           "against moving backwards")
            continue
        ls = live.get(r.system)
        if ls is None:
            out.append(f"{where}: system {r.system!r} is not configured")
            continue
        if r.pipeline is None:
            continue
        stages = ls.pipelines.get(str(r.pipeline))
        if stages is None:
            out.append(f"{where}: {r.system} has no pipeline {r.pipeline!r} "
                       f"(has: {', '.join(sorted(ls.pipelines)) or 'none'})")
            continue
        target = r.set.get(r.field)
        if target is not None and str(target) not in [str(s) for s in stages]:
            out.append(f"{where}: stage {target!r} is not in pipeline {r.pipeline!r} of {r.system} "
                       f"({', '.join(map(str, stages))})")
    return out
