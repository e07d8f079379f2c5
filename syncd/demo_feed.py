"""The demo's terminal after its banner: one line per write that landed in a peer, in words an
integrator reads («shop заказ 1001 → crm сделка 15: создана: сумма, товары»), as it happens. Read
from the store — the change log's confirmed pushes and the records' bindings; the demo prints what
`Feed.lines` returns every second."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from syncd import schema
from syncd.store import tables as t

# what a canonical record is called in a system (the CRM's order is a deal)
NOUN = {"order": "заказ", "person": "контакт", "company": "компания", "lead": "лид", "product": "товар",
        "task": "задача", "notice": "уведомление", "comment": "комментарий", "payment": "оплата"}
CRM_NOUN = {"order": "сделка"}
FIELD = {"stage": "стадия", "total": "сумма", "items": "товары", "status": "статус", "paid": "оплата",
         "phone": "телефон", "email": "e-mail", "name": "имя", "address": "адрес", "comment": "комментарий",
         "responsible": "ответственный", "number": "номер", "delivery": "доставка", "emails": "e-mail",
         "phones": "телефон", "delivery_price": "доставка", "title": "название", "probability": "вероятность",
         "middle_name": "отчество", "first_name": "имя", "last_name": "фамилия", "company": "компания",
         "person": "контакт", "inn": "ИНН", "kpp": "КПП", "price": "цена", "sku": "артикул"}
SHOWN = 4          # changed fields named on a line


@dataclass
class Feed:
    """Remembers the last change-log row it told."""

    last: int | None = None

    def lines(self, conn: Any, crm_systems: frozenset[str] = frozenset(), limit: int = 100) -> list[str]:
        c, b, e = t.changelog.c, t.bindings.c, t.entities.c
        if self.last is None:       # from now on (what came before the banner is the banner's)
            self.last = int(conn.execute(select(c.id).order_by(c.id.desc()).limit(1)).scalar() or 0)
        rows = conn.execute(select(c.id, c.entity_id, c.system, c.fields, c.observed_at)
                            .where(c.origin == "push", c.id > self.last).order_by(c.id).limit(limit)).all()
        out: list[str] = []
        for r in rows:
            self.last = int(r.id)
            etype = conn.execute(select(e.type).where(e.id == r.entity_id)).scalar() or "?"
            binds = conn.execute(select(b.system, b.external_id, b.created_at, b.how)
                                 .where(b.entity_id == r.entity_id, b.alias.is_(False)).order_by(b.created_at)).all()
            here = next((x for x in binds if x.system == r.system), None)
            src = next((x for x in binds if x.system != r.system), None)
            made = here is not None and here.how == "created" and here.created_at == r.observed_at
            what = f"{r.system} {_noun(etype, r.system, crm_systems)} {here.external_id if here else ''}".rstrip()
            came = f"{src.system} {_noun(etype, src.system, crm_systems)} {src.external_id} → " if src else ""
            names = [FIELD.get(k.split(".", 1)[-1], k.split(".", 1)[-1]) for k in _keys(r.fields)]
            said = ", ".join(names[:SHOWN]) + (f" и ещё {len(names) - SHOWN}" if len(names) > SHOWN else "")
            verb = "создана запись" if made else "обновлено"
            out.append(f"  {_clock(r.observed_at)}  {came}{what}: {verb}" + (f" ({said})" if said and not made else ""))
        return out


def _keys(fields: str) -> list[str]:
    try:
        return sorted(schema.decode(fields))
    except Exception:  # noqa: BLE001 - a line without field names is still a line
        return []


def _noun(etype: str, system: str, crm_systems: frozenset[str]) -> str:
    if system in crm_systems:
        return CRM_NOUN.get(etype, NOUN.get(etype, etype))
    return NOUN.get(etype, etype)


def _clock(ts: Any) -> str:
    """Moscow time, as the status page shows it."""
    if not isinstance(ts, dt.datetime):
        return ""
    msk = dt.timezone(dt.timedelta(hours=3), "MSK")
    return ts.replace(tzinfo=dt.UTC).astimezone(msk).strftime("%H:%M:%S")
