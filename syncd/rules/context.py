"""What rules read besides the record itself: linked entities from the store, the users and
pipelines a connector exposes (cached), templates, and the warnings counter in stats."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from syncd import schema
from syncd.connector import LiveSchema
from syncd.pipeline.link import load_all_orders_linked
from syncd.rules import expr
from syncd.store import Store, utcnow
from syncd.store import tables as t

log = structlog.get_logger("syncd.rules")

WARNINGS_KEY = "rules:warnings"


# -- entities -----------------------------------------------------------------------------------

def load_entity(conn: Connection, entity_id: Any) -> dict[str, Any] | None:
    if not entity_id or not isinstance(entity_id, str):
        return None
    row = conn.execute(select(t.entities.c.fields).where(t.entities.c.id == entity_id)).first()
    return schema.decode(row[0]) if row else None


def load_all(conn: Connection, etype: str) -> dict[str, tuple[dict[str, Any], dict[str, Any], dt.datetime]]:
    """id -> (fields, versions, created_at) of every entity of a type."""
    out = {}
    for eid, fields, versions, created in conn.execute(
            select(t.entities.c.id, t.entities.c.fields, t.entities.c.versions, t.entities.c.created_at)
            .where(t.entities.c.type == etype)):
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        out[eid] = (schema.decode(fields), json.loads(versions or "{}"), created)
    return out


def version_time(versions: Mapping[str, Any], names: Iterable[str]) -> dt.datetime | None:
    """Latest time any of the fields got its current value (from the golden record's versions)."""
    best = None
    for n in names:
        v = versions.get(n)
        if v and len(v) > 1 and v[1]:
            try:
                when = dt.datetime.fromisoformat(v[1])
            except ValueError:
                continue
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            best = when if best is None or when > best else best
    return best


# entity type -> the field naming its person, where it is not `<type>.customer` (a call's client
# is `call.person`): person.* and client.* of a rule on such a record read that person
PERSON_LINK: Mapping[str, str] = {"call": "call.person"}


class Context:
    """The values a condition can read for one record: its fields, linked client's, aliases."""

    def __init__(self, etype: str, golden: Mapping[str, Any], conn: Connection | None = None, *,
                 created: bool = False, system: str = "", entity_id: str | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        self.etype, self.golden, self.conn = etype, golden, conn
        self.created, self.system, self.entity_id = created, system, entity_id
        self.extra = dict(extra or {})
        self._linked: dict[str, dict[str, Any] | None] = {}
        self._counts: tuple[int, int] | None = None
        self.won_when: expr.Node | None = None

    def linked(self, etype: str) -> dict[str, Any] | None:
        """The person / company this record links to (order.customer, order.company, person.company)."""
        if etype in self._linked:
            return self._linked[etype]
        ref = None
        if self.etype == etype:
            ref = None
        elif etype == "person":
            ref = self.golden.get(PERSON_LINK.get(self.etype, f"{self.etype}.customer"))
        elif etype == "company":
            ref = self.golden.get(f"{self.etype}.company")
        out = load_entity(self.conn, ref) if self.conn is not None and ref else None
        self._linked[etype] = out
        return out

    def client(self) -> tuple[str | None, dict[str, Any] | None, str | None]:
        """(entity type, fields, id) of the client: the company if any, else the person."""
        if self.etype in ("person", "company"):
            return self.etype, dict(self.golden), self.entity_id
        for etype, name in (("company", f"{self.etype}.company"),
                            ("person", PERSON_LINK.get(self.etype, f"{self.etype}.customer"))):
            ref = self.golden.get(name)
            if ref:
                return etype, self.linked(etype), ref
        return None, None, None

    def _client_counts(self) -> tuple[int, int]:
        if self._counts is None:
            ctype, _, cid = self.client()
            n = won = 0
            if cid and self.conn is not None:
                link = "order.company" if ctype == "company" else "order.customer"
                orders = load_all_orders_linked(self.conn, link, cid)
                for oid, (fields, _, _) in orders.items():
                    if oid == self.entity_id:
                        fields = dict(self.golden)
                    n += 1
                    if self.won_when is not None and expr.evaluate(self.won_when, fields):
                        won += 1
                if self.entity_id and self.etype == "order" and self.entity_id not in orders:
                    n += 1      # this record is not in the store yet (created in this batch)
                    if self.won_when is not None and expr.evaluate(self.won_when, self.golden):
                        won += 1
            self._counts = (n, won)
        return self._counts

    def get(self, name: str) -> Any:
        if name in self.extra:
            return self.extra[name]
        if name == "record.created":
            return self.created
        if name == "record.system":
            return self.system
        if name.startswith("client."):
            ctype, fields, cid = self.client()
            key = name[len("client."):]
            if key == "id":
                return cid
            if key == "orders_count":
                return self._client_counts()[0]
            if key == "won_count":
                return self._client_counts()[1]
            if key == "type":
                key = "client_type"
            if fields is None or ctype is None:
                return None
            return fields.get(f"{ctype}.{key}")
        head = name.split(".", 1)[0]
        if head == self.etype or head not in ("person", "company"):
            return expr.resolve_path(self.golden, name)
        other = self.linked(head)
        return expr.resolve_path(other, name) if other else None

    def __call__(self, name: str) -> Any:
        return self.get(name)


# -- templates ----------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\}")


def _show(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "да" if v else "нет"
    if isinstance(v, dt.datetime):
        return v.strftime("%d.%m.%Y %H:%M")
    if isinstance(v, dt.date):
        return v.strftime("%d.%m.%Y")
    if isinstance(v, Decimal):
        return format(v.normalize(), "f") if v == v.to_integral_value() else str(v)
    if isinstance(v, (list, tuple)):
        return ", ".join(_show(x) for x in v)
    return str(v)


def render(template: str, get: Callable[[str], Any]) -> str:
    """`{order.number}` placeholders filled from the record (missing -> empty); nothing evaluated."""
    return _PLACEHOLDER.sub(lambda m: _show(get(m.group(1))), template)


# -- warnings -----------------------------------------------------------------------------------

def warn(store: Store, conn: Connection | None, rule: str, message: str, **kw: Any) -> None:
    """Count a run-time warning in stats (kv `rules:warnings`) and log it."""
    log.warning("rule_warning", rule=rule, message=message, **kw)

    def _do(c: Connection) -> None:
        raw = c.execute(select(t.kv.c.value).where(t.kv.c.key == WARNINGS_KEY)).scalar()
        cur = json.loads(raw) if raw else {"total": 0, "by_rule": {}, "last": []}
        cur["total"] = int(cur.get("total", 0)) + 1
        cur.setdefault("by_rule", {})[rule] = int(cur["by_rule"].get(rule, 0)) + 1
        cur["last"] = ([{"rule": rule, "message": message, "at": utcnow().isoformat()}]
                       + list(cur.get("last", [])))[:20]
        text = json.dumps(cur, ensure_ascii=False)
        if raw is None:
            c.execute(insert(t.kv).values(key=WARNINGS_KEY, value=text, updated_at=utcnow()))
        else:
            c.execute(update(t.kv).where(t.kv.c.key == WARNINGS_KEY).values(value=text, updated_at=utcnow()))

    if conn is not None:
        _do(conn)
    else:
        with store.begin() as c:
            _do(c)


# -- live schemas (users, presence, pipelines) ----------------------------------------------------

class Directory:
    """`describe()` of each connector, cached for `ttl` seconds; a failing describe is empty."""

    def __init__(self, connectors: Mapping[str, Any], ttl: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.connectors, self.ttl, self.clock = connectors, ttl, clock
        self._cache: dict[str, tuple[float, LiveSchema]] = {}
        self._lock = threading.Lock()

    def schema(self, system: str | None) -> LiveSchema:
        if not system or system not in self.connectors:
            return LiveSchema()
        with self._lock:
            hit = self._cache.get(system)
            if hit and self.clock() - hit[0] < self.ttl:
                return hit[1]
        try:
            live = self.connectors[system].describe()
        except Exception as exc:  # noqa: BLE001 - rules go on without presence data
            log.warning("describe_failed", system=system, error=f"{type(exc).__name__}: {exc}")
            live = LiveSchema()
        with self._lock:
            self._cache[system] = (self.clock(), live)
        return live

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()
