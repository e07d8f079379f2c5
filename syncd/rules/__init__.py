"""Business rules on canonical records: assignment, defaults, stage chains, cross-entity rules
(in the pull, through the engine's rule hook) and timers, repeat sales, customer metrics (in the
scheduler's tick, through `Engine.apply_effects`). Rules know no protocol: they read canonical
records, the store, and what a connector's `describe()` exposes (users, presence, pipelines).

    build_rule_hook(rules_cfg, store, connectors) -> RuleHook
    build_tick(rules_cfg, store, connectors) -> tick(engine, now) -> int
    explain(rules_cfg, entity) -> list[str]
    check(rules_cfg, live_schemas) -> list[str]
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from syncd.connector import LiveSchema
from syncd.errors import ConfigError
from syncd.pipeline.engine import Engine, RuleEffects, RuleHook, RuleInput
from syncd.rules import expr
from syncd.rules.assign import Assigner, check_assign
from syncd.rules.config import RulesConfig, parse_duration, parse_rules
from syncd.rules.context import Context, Directory, render, warn
from syncd.rules.metrics import Metrics
from syncd.rules.repeat import RepeatSales
from syncd.rules.stages import (
    CrossRules,
    StageChains,
    check_stages,
    defaults_for,
    drain_pending,
    queue_updates,
)
from syncd.rules.timers import Timers, check_timers, kv_drop, kv_put, notice
from syncd.store import Store

__all__ = ["RuleSet", "RulesConfig", "build_rule_hook", "build_tick", "check", "explain", "parse_rules"]

log = structlog.get_logger("syncd.rules")


class RuleSet:
    """Every rule of a mapping set, compiled once."""

    def __init__(self, rules_cfg: Mapping[str, Any] | RulesConfig, store: Store | None,
                 connectors: Mapping[str, Any] | None, *, rng: random.Random | None = None,
                 directory: Directory | None = None) -> None:
        self.cfg = parse_rules(dict(rules_cfg) if isinstance(rules_cfg, Mapping) else rules_cfg)
        self.store = store
        self.connectors = dict(connectors or {})
        ttl = min([a.presence_ttl for a in self.cfg.assign.values()] or [60.0])
        self.directory = directory or Directory(self.connectors, ttl=ttl)
        self.assigners = {ent: Assigner(ent, a, store, self.directory, rng)  # type: ignore[arg-type]
                          for ent, a in self.cfg.assign.items()}
        self.stages = StageChains(self.cfg.stages, self.directory)
        self.cross = CrossRules(self.cfg.cross)
        self.timers = Timers(self.cfg.timers)
        won = (self.cfg.repeat_sales.won_when if self.cfg.repeat_sales else
               self.cfg.metrics.won_when if self.cfg.metrics else "order.status == 'completed'")
        self.won_when = expr.parse(won, "won_when")
        self.repeat = RepeatSales(self.cfg.repeat_sales) if self.cfg.repeat_sales else None
        self.metrics = Metrics(self.cfg.metrics) if self.cfg.metrics else None

    def _notify_system(self, etype: str) -> str | None:
        d = self.cfg.defaults.get(etype)
        if d and d.notify_system:
            return d.notify_system
        a = self.cfg.assign.get(etype)
        return a.system if a else None

    # -- in the pull ------------------------------------------------------------------------------
    def hook(self, inp: RuleInput) -> RuleEffects | None:
        etype = inp.entity_type
        golden = dict(inp.golden)
        updates: dict[str, Any] = {}
        ctx = Context(etype, golden, inp.conn, created=inp.created, system=inp.system,
                      entity_id=inp.entity_id)
        ctx.won_when = self.won_when
        if inp.created:
            d = defaults_for(self.cfg.defaults.get(etype), golden, ctx)
            golden.update(d)
            updates.update(d)
            a = self.assigners.get(etype)
            if a is not None and (a.cfg.override or not golden.get(a.field)):
                pick = a.decide(ctx, inp.conn)
                if pick.manager:
                    golden[a.field] = updates[a.field] = pick.manager
                log.info("rule_assign", entity_id=inp.entity_id, step=pick.step, manager=pick.manager)
        for move in self.stages.apply(etype, ctx, golden, inp.changed, inp.created):
            if move.skipped is None:
                golden.update(move.updates)
                updates.update(move.updates)
                log.info("rule_stage", rule=move.rule, entity_id=inp.entity_id, updates=list(move.updates))
            elif move.updates:
                log.info("rule_stage_skipped", rule=move.rule, entity_id=inp.entity_id, reason=move.skipped)
        creates: list[tuple[str, dict[str, Any]]] = []
        if inp.created:
            d = self.cfg.defaults.get(etype)
            if d is not None and d.notify:
                who = golden.get(f"{etype}.responsible")
                if who:
                    creates.append(notice(self._notify_system(etype), who, render(d.notify, ctx),
                                          f"defaults {etype}", inp.entity_id, on="created"))
                else:
                    warn(self.store, inp.conn, f"defaults {etype}", f"{etype} {inp.entity_id} has no responsible "
                         "to notify")
        for rule in self.cross.matched(etype, ctx, inp.changed, inp.created):
            targets = self.cross.targets(rule, ctx, golden, inp.conn)
            if targets:
                queue_updates(inp.conn, rule.name, targets)
                log.info("rule_cross", rule=rule.name, entity_id=inp.entity_id, targets=sorted(targets))
        return RuleEffects(updates=updates, creates=creates) if (updates or creates) else None

    # -- in the scheduler -------------------------------------------------------------------------
    def tick(self, engine: Engine, now: dt.datetime | None = None) -> int:
        """Run timers, repeat sales, metrics, queued cross-entity updates and notices once.
        Returns the number of actions: tasks made, records updated, notices sent."""
        store = self.store or engine.store
        now = now or dt.datetime.now(dt.UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.UTC)
        actions = 0
        actions += drain_pending(store, lambda eff: (engine.apply_effects(
            {eid: RuleEffects(updates=u) for eid, u in eff.items()}), len(eff))[1])
        creates: list[tuple[str, dict[str, Any]]] = []
        markers: dict[str, Any] = {}
        drop: list[str] = []
        warnings: list[tuple[str, str]] = []
        with store.begin() as conn:
            if self.timers.rules:
                c, notices, put, dr, w = self.timers.run(conn, now, self.won_when)
                creates += c
                markers.update(put)
                drop += dr
                warnings += [("timers", x) for x in w]
                for rule, ctx, who in notices:
                    if not who:
                        warnings.append((rule.name, f"{rule.entity} {ctx.entity_id} has no responsible to notify"))
                        continue
                    creates.append(notice(rule.notify_system or self._notify_system(rule.entity), who,
                                          render(rule.notify or "", ctx), rule.name, ctx.entity_id))
            if self.repeat is not None:
                c, put, w = self.repeat.run(conn, now)
                creates += c
                markers.update(put)
                warnings += [(self.repeat.cfg.name, x) for x in w]
            metric_updates = self.metrics.run(conn, now) if self.metrics is not None else {}
        effects: dict[str, RuleEffects] = {eid: RuleEffects(updates=u) for eid, u in metric_updates.items()}
        if creates:
            effects[""] = RuleEffects(creates=creates)
        if effects:
            engine.apply_effects(effects)
            actions += len(creates) + len(metric_updates)
        if markers or drop:
            with store.begin() as conn:
                for k, v in markers.items():
                    kv_put(conn, k, v)
                kv_drop(conn, drop)
        for rule, message in warnings:
            warn(store, None, rule, message)
        return actions

    # -- explain ----------------------------------------------------------------------------------
    def explain(self, entity: Mapping[str, Any], *, conn: Any = None) -> list[str]:
        etype, fields, eid = _entity_parts(entity)
        golden = dict(fields)
        ctx = Context(etype, golden, conn, created=True, entity_id=eid)
        ctx.won_when = self.won_when
        out: list[str] = []
        d = self.cfg.defaults.get(etype)
        if d is not None:
            dv = defaults_for(d, golden)
            if dv:
                out.append("defaults (on create): set " + ", ".join(f"{k} = {v!r}" for k, v in dv.items()))
                golden.update(dv)
            else:
                out.append("defaults (on create): every default field already has a value")
        a = self.assigners.get(etype)
        if a is not None:
            if golden.get(a.field) and not a.cfg.override:
                out.append(f"assign: {a.field} is already {golden[a.field]!r}; the chain is not run")
            else:
                pick = a.decide(ctx, conn, dry=True)
                out += [f"assign: {line}" for line in pick.trail]
                if pick.step is None:
                    out.append("assign: no step matched; the record keeps no responsible")
                elif pick.manager:
                    golden[a.field] = pick.manager
        if d is not None and d.notify:
            out.append(f"notify (on create) {golden.get(f'{etype}.responsible') or 'nobody'}: "
                       f"{render(d.notify, ctx)!r}")
        moves = {m.rule: m for m in self.stages.apply(etype, ctx, golden, {}, True, explain=True)}
        for r in self.cfg.stages:
            if r.entity != etype:
                continue
            move = moves.get(r.name)
            if move is None:
                out.append(f"stage rule {r.name!r}: does not apply ({r.when})")
            elif move.skipped:
                out.append(f"stage rule {r.name!r}: matches, but {move.skipped}")
            else:
                out.append(f"stage rule {r.name!r}: set " + ", ".join(f"{k} = {v!r}" for k, v in move.updates.items()))
                golden.update(move.updates)
        for rule in self.cross.matched(etype, ctx, {}, True, explain=True):
            out.append(f"cross rule {rule.name!r}: would set " + ", ".join(f"{k} = {v!r}" for k, v in rule.set.items())
                       + f" on {rule.target} records sharing {rule.via}"
                       + (f" where {rule.target_when}" if rule.target_when else ""))
        for r in self.cfg.timers:
            if r.entity == etype and expr.evaluate(self.timers.conds[r.name], ctx):
                what = f"task {r.task.title!r}" if r.task else f"notice {r.notify!r}"
                out.append(f"timer {r.name!r}: condition holds; after {r.after} in it: {what}")
        if not out:
            out.append(f"no rule applies to this {etype}")
        return out

    # -- check ------------------------------------------------------------------------------------
    def check(self, live: Mapping[str, LiveSchema]) -> list[str]:
        out: list[str] = []
        for ent, a in self.cfg.assign.items():
            users = live[a.system].users if a.system and a.system in live else (None if a.system else {})
            out += check_assign(ent, a, users)
        out += check_stages(self.cfg.stages, dict(live))
        out += check_timers(self.cfg.timers, live)
        for ent, d in self.cfg.defaults.items():
            if d.notify_system and d.notify_system not in live:
                out.append(f"rules.defaults.{ent}.notify_system: {d.notify_system!r} is not configured")
            out += _check_default_stage(ent, d, self.cfg.assign.get(ent), live)
        return out


def _check_default_stage(ent: str, d: Any, assign: Any, live: Mapping[str, LiveSchema]) -> list[str]:
    """A default stage (and pipeline) must exist in the system whose pipelines it names: the
    entity's assign system, else every configured system that has pipelines."""
    stage, pipeline = d.fields.get(f"{ent}.stage"), d.fields.get(f"{ent}.pipeline")
    if stage is None and pipeline is None:
        return []
    if "{" in str(stage or "") or "{" in str(pipeline or ""):
        return []                             # filled from the record: known only then
    systems = [assign.system] if assign is not None and assign.system in live else \
        [n for n, ls in live.items() if ls.pipelines]
    out = []
    for name in systems:
        pipes = live[name].pipelines
        if not pipes:
            continue
        where = f"rules.defaults.{ent}"
        if pipeline is not None and str(pipeline) not in pipes:
            out.append(f"{where}.\"{ent}.pipeline\": {name} has no pipeline {str(pipeline)!r} "
                       f"(has: {', '.join(sorted(pipes))})")
            continue
        if stage is None:
            continue
        allowed = [str(x) for x in pipes[str(pipeline)]] if pipeline is not None else \
            sorted({str(x) for stages in pipes.values() for x in stages})
        if str(stage) not in allowed:
            in_pipe = f" of pipeline {str(pipeline)!r}" if pipeline is not None else ""
            out.append(f"{where}.\"{ent}.stage\": {name} has no stage {str(stage)!r}{in_pipe} "
                       f"(has: {', '.join(allowed)})")
    return out


def _entity_parts(entity: Mapping[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """A store entity ({id, type, fields}) or a flat canonical record."""
    if "fields" in entity and "type" in entity:
        return str(entity["type"]), dict(entity["fields"]), entity.get("id")
    keys = [k for k in entity if "." in k]
    if not keys:
        raise ValueError("not a canonical record: no `entity.field` keys")
    return keys[0].split(".", 1)[0], dict(entity), None


def build_rule_hook(rules_cfg: Mapping[str, Any] | RulesConfig, store: Store, connectors: Mapping[str, Any]
                    ) -> RuleHook:
    """The engine's rule hook for the `[rules]` section (raises ConfigError when it is invalid)."""
    return RuleSet(rules_cfg, store, connectors).hook


def build_tick(rules_cfg: Mapping[str, Any] | RulesConfig, store: Store, connectors: Mapping[str, Any]
               ) -> Callable[[Engine, dt.datetime], int]:
    """The scheduler's per-minute job: `tick(engine, now) -> actions taken`."""
    return RuleSet(rules_cfg, store, connectors).tick


def explain(rules_cfg: Mapping[str, Any], entity: Mapping[str, Any] | str, *, store: Store | None = None,
            connectors: Mapping[str, Any] | None = None) -> list[str]:
    """Which rules match a record, in order, and what each would do (nothing is changed).

    `entity` is a flat canonical record, a store entity ({id, type, fields}), or — with `store` —
    an entity id. With `store` (and `connectors`) the client, loads and users are looked up too.
    """
    rs = RuleSet(rules_cfg, store, connectors)
    if isinstance(entity, str):
        if store is None:
            raise ValueError("an entity id needs `store`")
        found = store.entity(entity)
        if found is None:
            raise KeyError(f"no entity {entity}")
        entity = found
    if store is not None:
        with store.read() as conn:     # read only: never committed
            try:
                return rs.explain(entity, conn=conn)
            finally:
                conn.rollback()
    return rs.explain(entity)


def check(rules_cfg: Mapping[str, Any] | RulesConfig, live_schemas: Mapping[str, LiveSchema]) -> list[str]:
    """Config errors of the rules against the live users, pipelines and stages of each system."""
    try:
        rs = RuleSet(rules_cfg, None, None)
    except ConfigError as exc:
        return [str(exc)]
    return rs.check(live_schemas)


__all__ += ["parse_duration"]
