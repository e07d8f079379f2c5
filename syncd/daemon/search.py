"""Find entities the way an operator names them: a name, a phone, an e-mail, an ИНН, an order
number, any system's id, or syncd's own entity id.

The page's review panel uses it to bind a record to an existing entity without knowing syncd's
internal id. Phones, e-mails and ИНН are normalized exactly as identify does and looked up in the
match keys; names and numbers are found in the golden records' fields. Held entities (standing for
a record under review or in quarantine) and merged tombstones are not binding targets and are
never returned.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select

from syncd.keys.match import inn_kpp_key, normalize_email, normalize_phone
from syncd.schema import decode
from syncd.store import Store
from syncd.store import tables as t

_HEX_ID = re.compile(r"^[0-9a-f]{32}$")
_DIGITS = re.compile(r"\D")
# fields shown with a result and searched for text (per entity type, prefix added)
LABEL = ("name", "full_name", "title", "number", "subject")
SHOWN = ("email", "phone", "inn", "kpp", "number", "total", "status", "company")
TEXT = ("name", "first_name", "last_name", "full_name", "title", "number", "onec_number", "email", "emails",
        "phone", "phones", "inn", "sku", "subject")
MAX_SCAN = 400               # rows a text search reads before filtering in Python


@dataclass
class Hit:
    entity_id: str
    matched: str             # how it was found: "email", "phone", "inn", "id:<system>", "name"…

    def __hash__(self) -> int:
        return hash(self.entity_id)


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search(store: Store, query: str, *, type_: str | None = None, region: str = "RU",
           limit: int = 20) -> list[dict[str, Any]]:
    """Entities matching `query`, best matches first (exact keys before text), at most `limit`."""
    q = (query or "").strip()
    if not q or len(q) > 200:
        return []
    hits: dict[str, str] = {}

    def add(ids: Any, how: str) -> None:
        for eid in ids:
            hits.setdefault(eid, how)

    with store.read() as c:
        if _HEX_ID.match(q.lower()):
            add(c.execute(select(t.entities.c.id).where(t.entities.c.id == q.lower())).scalars(), "entity_id")
        for system, eid in c.execute(select(t.bindings.c.system, t.bindings.c.entity_id)
                                     .where(t.bindings.c.external_id == q)):
            hits.setdefault(eid, f"id:{system}")
        keys: list[tuple[str, str]] = []
        email = normalize_email(q) if "@" in q else None
        if email:
            keys.append(("email", f"email:{email}"))
        digits = _DIGITS.sub("", q)
        if len(digits) >= 7 and not email:
            phone = normalize_phone(q, region)
            if phone:
                keys.append(("phone", f"phone:{phone}"))
        if digits == q.replace(" ", "") and len(digits) in (10, 12):
            key = inn_kpp_key(digits)
            if key:
                keys.append(("inn", key))
            add(c.execute(select(t.match_keys.c.entity_id).where(
                t.match_keys.c.key.like(f"inn_kpp:{digits}/%"))).scalars(), "inn")
        for how, key in keys:
            add(c.execute(select(t.match_keys.c.entity_id).where(t.match_keys.c.key == key)).scalars(), how)
        # text: names, numbers, any field value containing the query (case-insensitively); an
        # ИНН or a number typed with spaces is also looked for as its digits
        needles = [q]
        if digits and len(digits) >= 6 and re.fullmatch(r"[\d\s\-.]+", q) and digits != q:
            needles.append(digits)
        for needle_text in needles if len(q) >= 2 else []:
            _text_hits(c, needle_text, type_, hits)
        if not hits:
            return []
        rows = c.execute(select(t.entities).where(t.entities.c.id.in_(list(hits)))).mappings().all()
        binds: dict[str, dict[str, str]] = {}
        for system, ext, eid, alias in c.execute(
                select(t.bindings.c.system, t.bindings.c.external_id, t.bindings.c.entity_id, t.bindings.c.alias)
                .where(t.bindings.c.entity_id.in_(list(hits))).order_by(t.bindings.c.created_at)):
            if not alias:
                binds.setdefault(eid, {}).setdefault(system, ext)
    out = []
    for r in rows:
        if r["hold"] is not None or (type_ and r["type"] != type_):
            continue
        out.append(_result(r, hits[r["id"]], binds.get(r["id"], {})))
    order = list(hits)
    out.sort(key=lambda x: order.index(x["id"]))
    return out[:limit]


def _text_hits(c: Any, q: str, type_: str | None, hits: dict[str, str]) -> None:
    """Entities with a name, number, e-mail… containing `q`: SQL narrows (LIKE over the stored
    fields, in the usual letter cases: SQLite folds only ASCII), Python decides (casefold)."""
    variants = {q, q.lower(), q.upper(), q.capitalize(), q.title()}
    cond = or_(*[t.entities.c.fields.like(f"%{_like_escape(v)}%", escape="\\") for v in variants])
    sel = select(t.entities.c.id, t.entities.c.type, t.entities.c.fields).where(cond, t.entities.c.hold.is_(None))
    if type_:
        sel = sel.where(t.entities.c.type == type_)
    needle = q.casefold()
    for eid, etype, raw in c.execute(sel.limit(MAX_SCAN)):
        if eid in hits:
            continue
        fields = json.loads(raw or "{}")
        for name in TEXT:
            v = fields.get(f"{etype}.{name}")
            vals = v if isinstance(v, list) else [v]
            if any(isinstance(x, (str, int)) and needle in str(x).casefold() for x in vals):
                hits[eid] = "number" if name in ("number", "onec_number") else (
                    "name" if name in ("name", "first_name", "last_name", "full_name", "title") else name)
                break


def _result(row: Any, matched: str, bindings: dict[str, str]) -> dict[str, Any]:
    etype = row["type"]
    fields = decode(row["fields"])
    label = next((str(fields[f"{etype}.{k}"]) for k in LABEL if fields.get(f"{etype}.{k}")), "")
    shown = {}
    for k in SHOWN:
        v = fields.get(f"{etype}.{k}")
        if v not in (None, "", []):
            shown[k] = v if isinstance(v, (str, int, float, bool)) else str(v)
    return {"id": row["id"], "type": etype, "label": label, "fields": shown, "bindings": bindings,
            "matched": matched}
