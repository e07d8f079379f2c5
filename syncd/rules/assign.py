"""Manager assignment for created orders/deals and leads: a chain of steps, first match wins.

Strategies: `fixed`, `random` (among present managers), `round_robin` (pointer in the store,
atomic per row so several instances stay fair), `least_loaded` (fewest open orders, optional
cap), `keep` (the client's responsible), `table` (rows of `when` -> manager/group) and `none`
(nobody: managers pick the deal). A step naming an unknown or inactive manager is skipped with a
warning counted in stats; `check()` reports it as a config error.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from syncd import schema
from syncd.rules import expr
from syncd.rules.config import AssignConfig, AssignStep
from syncd.rules.context import Context, Directory, warn
from syncd.store import Store, utcnow
from syncd.store import tables as t


@dataclass
class Pick:
    step: str | None                  # label of the step that decided; None: no step matched
    manager: str | None               # None with a step: strategy none
    trail: list[str] = field(default_factory=list)   # what each step did, for explain


def next_pointer(conn: Connection, key: str, *, advance: bool = True) -> int:
    """Read and advance a round-robin counter in kv, atomically within `conn`'s transaction.

    On PostgreSQL the row is locked (`SELECT … FOR UPDATE`) until the transaction ends, so two
    instances never hand out the same position; the first insert races are settled by the
    primary key (a savepoint, then the locked read again).
    """
    q = select(t.kv.c.value).where(t.kv.c.key == key).with_for_update()
    raw = conn.execute(q).scalar()
    if raw is None:
        if not advance:
            return 0
        try:
            with conn.begin_nested():
                conn.execute(insert(t.kv).values(key=key, value="1", updated_at=utcnow()))
            return 0
        except IntegrityError:
            raw = conn.execute(q).scalar()
    n = int(json.loads(raw))
    if advance:
        conn.execute(update(t.kv).where(t.kv.c.key == key).values(value=json.dumps(n + 1),
                                                                  updated_at=utcnow()))
    return n


class Assigner:
    def __init__(self, entity: str, cfg: AssignConfig, store: Store, directory: Directory,
                 rng: random.Random | None = None) -> None:
        self.entity, self.cfg, self.store, self.directory = entity, cfg, store, directory
        self.field = cfg.field or f"{entity}.responsible"
        self.rng = rng or random.Random()
        self.open_when = expr.parse(cfg.open_when, f"assign {entity} open_when")
        self._conds: dict[int, expr.Node | None] = {}
        self._batch_conn: Connection | None = None
        self._batch_load: Counter[str] = Counter()

        def compile_(chain: list[AssignStep], prefix: str) -> None:
            for i, st in enumerate(chain):
                self._conds[id(st)] = st.cond(f"assign {entity} {prefix}{st.label(i)}")
                if st.rows:
                    compile_(st.rows, f"{prefix}{st.label(i)}/")
        compile_(cfg.chain, "")

    # -- users ------------------------------------------------------------------------------------
    def users(self) -> dict[str, dict[str, Any]]:
        return self.directory.schema(self.cfg.system).users if self.cfg.system else {}

    @staticmethod
    def invalid_reason(manager: str, users: dict[str, dict[str, Any]]) -> str | None:
        if not users:
            return None                     # no user list to check against
        info = users.get(str(manager))
        if info is None:
            known = [f"{uid} {u.get('name') or ''}".strip() for uid, u in list(users.items())[:8]
                     if u.get("active") is not False]
            return f"manager {manager!r} is unknown" + (f" (users: {', '.join(known)})" if known else "")
        if info.get("active") is False:
            return f"manager {manager!r} is inactive (fired)"
        return None

    @staticmethod
    def is_present(manager: str, users: dict[str, dict[str, Any]], step: AssignStep) -> bool:
        info = users.get(str(manager))
        present = info.get("present") if info else None
        if present is None:
            return step.unknown_presence_is_present
        return bool(present)

    # -- load -------------------------------------------------------------------------------------
    def _note_batch(self, conn: Connection | None) -> None:
        if conn is not self._batch_conn:
            self._batch_conn, self._batch_load = conn, Counter()

    def load(self, conn: Connection, manager: str, exclude: str | None = None) -> int:
        """Open orders of a manager in the store, plus those assigned earlier in this batch."""
        pattern = f'%"order.responsible":{json.dumps(str(manager), ensure_ascii=False)}%'
        n = 0
        for eid, text in conn.execute(select(t.entities.c.id, t.entities.c.fields).where(
                t.entities.c.type == "order", t.entities.c.fields.like(pattern))):
            if eid == exclude:
                continue
            fields = schema.decode(text)
            if fields.get("order.responsible") == str(manager) and expr.evaluate(self.open_when, fields):
                n += 1
        return n + self._batch_load[str(manager)]

    # -- decide -----------------------------------------------------------------------------------
    def decide(self, ctx: Context, conn: Connection | None, *, dry: bool = False) -> Pick:
        self._note_batch(conn)
        pick = Pick(None, None)
        users = self.users()
        res = self._run(self.cfg.chain, ctx, conn, users, dry, "", pick.trail)
        if res is not None:
            pick.step, pick.manager = res
            if pick.manager and not dry:
                self._batch_load[pick.manager] += 1
        return pick

    def _warn(self, conn: Connection | None, label: str, message: str, dry: bool, trail: list[str]) -> None:
        trail.append(f"{label}: skipped, {message}")
        if not dry:
            warn(self.store, conn, f"assign {self.entity} {label}", message)

    def _run(self, chain: list[AssignStep], ctx: Context, conn: Connection | None,
             users: dict[str, dict[str, Any]], dry: bool, prefix: str,
             trail: list[str]) -> tuple[str, str | None] | None:
        for i, st in enumerate(chain):
            label = prefix + st.label(i)
            cond = self._conds.get(id(st))
            if cond is not None and not expr.evaluate(cond, ctx):
                trail.append(f"{label}: condition false ({st.when})")
                continue
            kind = st.kind
            if kind == "table":
                res = self._run(st.rows or [], ctx, conn, users, dry, label + "/", trail)
                if res is not None:
                    return res
                continue
            if kind == "none":
                trail.append(f"{label}: nobody is assigned")
                return label, None
            if kind == "keep":
                _, fields, _ = ctx.client()
                ctype = ctx.client()[0]
                mgr = (fields or {}).get(f"{ctype}.responsible") if ctype else None
                if not mgr:
                    trail.append(f"{label}: no known client with a responsible manager")
                    continue
                if st.group and str(mgr) not in [str(g) for g in st.group]:
                    # `group` on keep: only when the client's manager is one of these (not the
                    # portal admin who happened to create the contact)
                    trail.append(f"{label}: the client's responsible {mgr} is not in the group")
                    continue
                bad = self.invalid_reason(mgr, users)
                if bad:
                    self._warn(conn, label, f"client's {bad}", dry, trail)
                    continue
                trail.append(f"{label}: the client's responsible {mgr}")
                return label, str(mgr)
            if kind == "fixed":
                assert st.manager
                bad = self.invalid_reason(st.manager, users)
                if bad:
                    self._warn(conn, label, bad, dry, trail)
                    continue
                trail.append(f"{label}: manager {st.manager}")
                return label, st.manager
            # group strategies
            eligible = []
            for m in st.candidates:
                bad = self.invalid_reason(m, users)
                if bad:
                    self._warn(conn, label, bad, dry, trail)
                else:
                    eligible.append(m)
            only_present = st.only_present if st.only_present is not None else kind == "random"
            if only_present:
                eligible = [m for m in eligible if self.is_present(m, users, st)]
            if not eligible:
                trail.append(f"{label}: no {'present ' if only_present else ''}manager in the group")
                continue
            if kind == "random":
                mgr = self.rng.choice(eligible)
                trail.append(f"{label}: random among {', '.join(eligible)} -> {mgr}")
                return label, mgr
            if kind == "round_robin":
                if conn is None:
                    trail.append(f"{label}: the next of {', '.join(eligible)} in turn")
                    return label, None if dry else eligible[0]
                n = next_pointer(conn, f"rules:rr:{self.entity}:{label}", advance=not dry)
                mgr = eligible[n % len(eligible)]
                trail.append(f"{label}: round robin over {', '.join(eligible)} -> {mgr}")
                return label, mgr
            if kind == "least_loaded":
                if conn is None:
                    trail.append(f"{label}: the least loaded of {', '.join(eligible)}")
                    return label, None
                loads = {m: self.load(conn, m, exclude=ctx.entity_id) for m in eligible}
                if st.cap is not None:
                    loads = {m: n for m, n in loads.items() if n < st.cap}
                if not loads:
                    trail.append(f"{label}: every manager has {st.cap} open orders or more")
                    continue
                mgr = min(loads, key=lambda m: (loads[m], eligible.index(m)))
                trail.append(f"{label}: least loaded ({', '.join(f'{m}={n}' for m, n in loads.items())}) -> {mgr}")
                return label, mgr
        return None


def check_assign(entity: str, cfg: AssignConfig, users: dict[str, dict[str, Any]] | None) -> list[str]:
    """Config errors of one assignment chain against a live user list."""
    out: list[str] = []
    if cfg.system and users is None:
        out.append(f"rules.assign.{entity}: system {cfg.system!r} is not configured")
        return out

    def walk(chain: list[AssignStep], prefix: str) -> None:
        for i, st in enumerate(chain):
            where = f"rules.assign.{entity}.chain{prefix}[{i}] ({st.label(i)})"
            for m in st.candidates:
                bad = Assigner.invalid_reason(m, users or {})
                if bad:
                    out.append(f"{where}: {bad}")
            if st.rows:
                walk(st.rows, f"{prefix}[{i}].rows")
    walk(cfg.chain, "")
    if not cfg.system and any(st.candidates for st in cfg.chain):
        out.append(f"rules.assign.{entity}: no `system` named, managers cannot be checked")
    return out
