"""Timers ("unpaid for 24 h -> a task to call the client"), fired once per (record, rule, stage
entry), plus the task and notice helpers the scheduled rules share.

State lives in kv: `rules:timer:<rule>:<entity id>` = {since, entry, fired}. A record leaving
the condition drops its marker, so entering it again (or entering another stage while the
condition holds) starts a new wait.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from syncd import schema
from syncd.rules import expr
from syncd.rules.config import TaskSpec, TimerRule, parse_duration
from syncd.rules.context import Context, load_all, render, version_time
from syncd.store import utcnow
from syncd.store import tables as t

TIMER_PREFIX = "rules:timer:"


def kv_prefix(conn: Connection, prefix: str) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in conn.execute(
        select(t.kv.c.key, t.kv.c.value).where(t.kv.c.key.like(prefix + "%")))}


def kv_put(conn: Connection, key: str, value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False, default=str)
    if not conn.execute(update(t.kv).where(t.kv.c.key == key).values(value=text, updated_at=utcnow())).rowcount:
        conn.execute(insert(t.kv).values(key=key, value=text, updated_at=utcnow()))


def kv_drop(conn: Connection, keys: list[str]) -> None:
    if keys:
        conn.execute(delete(t.kv).where(t.kv.c.key.in_(keys)))


def make_task(spec: TaskSpec, rule: str, ctx: Context, now: dt.datetime, *,
              responsible: str | None) -> dict[str, Any]:
    """Canonical `task` fields for a rule's task on the record in `ctx`."""
    fields: dict[str, Any] = {"task.title": render(spec.title, ctx), "task.rule": rule}
    if spec.description:
        fields["task.description"] = render(spec.description, ctx)
    if responsible:
        fields["task.responsible"] = str(responsible)
    if spec.deadline:
        fields["task.deadline"] = now + parse_duration(spec.deadline)
    if ctx.etype == "order" and ctx.entity_id:
        fields["task.order"] = ctx.entity_id
    ctype, _, cid = ctx.client()
    if ctype in ("person", "company") and cid:
        fields[f"task.{ctype}"] = cid
    return fields


def responsible_of(ctx: Context, explicit: str | None = None) -> str | None:
    if explicit:
        return explicit
    own = ctx.golden.get(f"{ctx.etype}.responsible")
    if own:
        return str(own)
    ctype, fields, _ = ctx.client()
    if ctype and fields and fields.get(f"{ctype}.responsible"):
        return str(fields[f"{ctype}.responsible"])
    return None


def notice(system: str | None, user: str | None, text: str, rule: str, subject: str | None = None,
           *, on: str | None = None) -> tuple[str, dict[str, Any]]:
    """A notice to a user, as a new `notice` entity: planned through the outbox to the system
    whose notice map (only_when notice.system) matches, sent once (its key is looked up or
    replaces an earlier one with the same tag). `on="created"`: only once syncd has created the
    subject in that system (payload.py) — "a new deal" is not news when the deal existed."""
    fields: dict[str, Any] = {"notice.text": text, "notice.rule": rule}
    if on:
        fields["notice.on"] = on
    if system:
        fields["notice.system"] = system
    if user:
        fields["notice.user"] = str(user)
    if subject:
        fields["notice.subject"] = subject
    return ("notice", fields)


class Timers:
    def __init__(self, rules: list[TimerRule]) -> None:
        self.rules = rules
        self.conds = {r.name: expr.parse(r.when or "", r.name) for r in rules}

    def stage_field(self, rule: TimerRule) -> str | None:
        if rule.stage_field:
            return rule.stage_field
        cand = f"{rule.entity}.stage"
        return cand if schema.is_field(cand) else None

    def run(self, conn: Connection, now: dt.datetime, won_when: expr.Node | None = None
            ) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[TimerRule, Context, str | None]],
                       dict[str, Any], list[str], list[str]]:
        """(task creates, notices to send, markers to write, markers to drop, warnings)."""
        creates: list[tuple[str, dict[str, Any]]] = []
        notices: list[tuple[TimerRule, Context, str | None]] = []
        put: dict[str, Any] = {}
        drop: list[str] = []
        warnings: list[str] = []
        markers = kv_prefix(conn, TIMER_PREFIX)
        by_type: dict[str, Any] = {}
        for rule in self.rules:
            ents = by_type.get(rule.entity)
            if ents is None:
                ents = by_type[rule.entity] = load_all(conn, rule.entity)
            cond = self.conds[rule.name]
            reads = expr.paths(cond)
            sfield = self.stage_field(rule)
            wait = parse_duration(rule.after)
            live_keys = set()
            for eid, (fields, versions, created) in ents.items():
                key = f"{TIMER_PREFIX}{rule.name}:{eid}"
                ctx = Context(rule.entity, fields, conn, entity_id=eid)
                ctx.won_when = won_when
                if not expr.evaluate(cond, ctx):
                    continue
                live_keys.add(key)
                entry = str(fields.get(sfield)) if sfield else ""
                m = markers.get(key)
                if m is None or m.get("entry") != entry:
                    since = version_time(versions, [r for r in reads if schema.is_field(r)]
                                         + ([sfield] if sfield else [])) or created or now
                    since = min(since, now)
                    m = {"since": since.isoformat(), "entry": entry, "fired": False}
                    put[key] = m
                if m.get("fired"):
                    continue
                if now - dt.datetime.fromisoformat(m["since"]) < wait:
                    continue
                who = responsible_of(ctx, rule.task.responsible if rule.task else None)
                if rule.task is not None:
                    if not who:
                        warnings.append(f"timer {rule.name!r}: {rule.entity} {eid} has no responsible; "
                                        "no task made")
                    else:
                        creates.append(("task", make_task(rule.task, rule.name, ctx, now, responsible=who)))
                if rule.notify:
                    notices.append((rule, ctx, who))
                put[key] = dict(m, fired=True, fired_at=now.isoformat())
            prefix = f"{TIMER_PREFIX}{rule.name}:"
            drop.extend(k for k in markers if k.startswith(prefix) and k not in live_keys)
        return creates, notices, put, drop, warnings


def check_timers(rules: list[TimerRule], systems: Mapping[str, Any]) -> list[str]:
    out = []
    for i, r in enumerate(rules):
        if r.notify and r.notify_system and r.notify_system not in systems:
            out.append(f"rules.timers[{i}] ({r.name}): notify_system {r.notify_system!r} is not configured")
    return out
