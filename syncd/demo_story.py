"""The demo's story: a portal as a company has it before syncd, set up through its REST API the
way its managers would have — so that the first sync shows what an integrator wants to see:

- a buyer of the shop is already a contact in the CRM, entered from a phone call (the phone in
  another spelling, no e-mail): the order's deal gets that contact, which gains the e-mail;
- a deal the shop's own CRM integration made before syncd (ORIGINATOR_ID/ORIGIN_ID naming the
  order): adopted, not duplicated;
- a deal a manager took by phone, ticked "from shop": it becomes a shop order;
- every deal's sum is its order's total with the delivery;
- 1C pays the order it received: the deal moves to its paid stage.

`prepare(portal_webhook, shop_state)` makes the portal's side and returns what to look for;
`tell(rt, story, shop_state, onec)` says, in words, what happened to each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests


@dataclass
class Story:
    contact_order: str = ""                 # the shop order whose buyer the CRM already knew
    contact_id: str = ""
    contact_phone: str = ""
    adopted_order: str = ""                 # the order whose deal was made before syncd
    adopted_deal: str = ""
    phone_deal: str = ""                    # the deal taken by phone, ticked "from shop"
    notes: list[str] = field(default_factory=list)


def _rest(webhook: str, method: str, params: dict[str, Any]) -> Any:
    r = requests.post(webhook.rstrip("/") + "/" + method + ".json", json=params, timeout=30)
    body = r.json()
    if "error" in body:
        raise RuntimeError(f"{method}: {body['error']}: {body.get('error_description')}")
    return body["result"]


def _respell(phone: str) -> str:
    """The same number as a manager types it: +7 (AAA) BBB-CC-DD."""
    digits = "".join(c for c in phone if c.isdigit())[-10:]
    return f"+7 ({digits[:3]}) {digits[3:6]}-{digits[6:8]}-{digits[8:]}"


def prepare(webhook: str, shop: Any) -> Story:
    snap = shop.snapshot()
    users = {u["id"]: u for u in snap["users"]}
    orders = sorted(snap["orders"], key=lambda o: int(o["id"]))
    persons = [o for o in orders if users.get(o["user_id"], {}).get("kind") == "person"]
    s = Story()
    if persons:
        o = persons[0]
        u = users[o["user_id"]]
        s.contact_order, s.contact_phone = str(o["number"]), _respell(u["phone"])
        s.contact_id = str(_rest(webhook, "crm.contact.add", {"fields": {
            "NAME": u.get("first_name") or "", "LAST_NAME": u.get("last_name") or "",
            "PHONE": [{"VALUE": s.contact_phone, "VALUE_TYPE": "MOBILE"}], "SOURCE_ID": "CALL",
            "COMMENTS": "звонил до первого заказа"}}))
    rest = [o for o in orders if str(o["number"]) != s.contact_order]
    if rest:
        o = rest[0]
        s.adopted_order = str(o["number"])
        s.adopted_deal = str(_rest(webhook, "crm.deal.add", {"fields": {
            "TITLE": f"Заказ №{o['number']} с сайта", "STAGE_ID": "NEW", "CATEGORY_ID": 0, "CURRENCY_ID": "RUB",
            "ORIGINATOR_ID": "shop", "ORIGIN_ID": str(o.get("xml_id") or o["id"]),
            "UF_CRM_SHOP_ORDER": str(o["number"]), "SOURCE_ID": "STORE"}}))
    caller = str(_rest(webhook, "crm.contact.add", {"fields": {
        "NAME": "Ольга", "LAST_NAME": "Белова", "PHONE": [{"VALUE": "+7 903 222-33-44", "VALUE_TYPE": "MOBILE"}],
        "EMAIL": [{"VALUE": "o.belova@example.ru", "VALUE_TYPE": "WORK"}], "SOURCE_ID": "CALL"}}))
    s.phone_deal = str(_rest(webhook, "crm.deal.add", {"fields": {
        "TITLE": "Заказ по телефону", "CONTACT_ID": caller, "STAGE_ID": "NEW", "CATEGORY_ID": 0,
        "UF_CRM_FROM_SHOP": "Y", "CURRENCY_ID": "RUB"}}))
    _rest(webhook, "crm.deal.productrows.set", {"id": s.phone_deal, "rows": [
        {"PRODUCT_NAME": "Кружка керамическая 350 мл", "PRICE": 490, "QUANTITY": 3}]})
    return s


def tell(rt: Any, s: Story, shop: Any, onec: Any = None) -> list[str]:
    """What happened to each part of the story, in words (checked against the store)."""
    st = rt.store
    lines: list[str] = []
    snap = shop.snapshot()
    by_number = {str(o["number"]): o for o in snap["orders"]}

    def deal_of(number: str) -> tuple[str | None, dict[str, Any]]:
        o = by_number.get(number)
        eid = st.find_entity("shop", "order", str(o.get("xml_id") or o["id"])) if o else None
        return (st.external_id(eid, "crm") if eid else None), (st.entity(eid)["fields"] if eid else {})

    if s.contact_order:
        deal, f = deal_of(s.contact_order)
        person = st.find_entity("crm", "person", s.contact_id)
        email = (st.entity(person)["fields"].get("person.email") if person else None) or "-"
        bound = person is not None and f.get("order.customer") == person
        lines.append(f"  buyer of order {s.contact_order} = CRM contact {s.contact_id} entered by phone "
                     f"({s.contact_phone}): {'bound' if bound else 'NOT bound'}, its e-mail now {email}")
    if s.adopted_order:
        deal, _f = deal_of(s.adopted_order)
        lines.append(f"  order {s.adopted_order}: deal {s.adopted_deal} made before syncd "
                     + ("adopted (no second deal)" if deal == s.adopted_deal else f"NOT adopted (deal {deal})"))
    if s.phone_deal:
        eid = st.find_entity("crm", "order", s.phone_deal)
        shop_id = st.external_id(eid, "shop") if eid else None
        made = next((o for o in snap["orders"] if shop_id and str(o.get("xml_id")) == shop_id), None)
        lines.append(f"  deal {s.phone_deal} taken by phone -> shop order "
                     + (f"{made['number'] if made else '?'} (Ид {shop_id}, {made['total'] if made else '?'} руб)"
                        if shop_id else "not yet"))
    for o in snap["orders"]:
        if o.get("delivery_price") and float(o["delivery_price"]):
            deal, f = deal_of(str(o["number"]))
            lines.append(f"  order {o['number']}: total {o['total']} with delivery {o['delivery_price']}; "
                         f"deal {deal} sum {f.get('order.total', '-')}")
            break
    if onec is not None and onec.db.payments:
        pay = onec.db.payments[0]
        order = next((d for d in onec.db.orders.values() if d.id == pay.base or d.number == pay.base), None)
        eid = st.find_entity("onec", "order", order.id) if order else None
        stage = st.entity(eid)["fields"].get("order.stage") if eid else None
        lines.append(f"  1C paid order {order.number if order else pay.base}: the deal's stage is now {stage or '-'}")
    return lines


def settled(rt: Any, s: Story, shop: Any, onec: Any = None) -> bool:
    """The story has played out: the phone deal is a shop order, 1C's payment reached the deal."""
    st = rt.store
    if s.phone_deal:
        eid = st.find_entity("crm", "order", s.phone_deal)
        if not eid or not st.external_id(eid, "shop"):
            return False
    if onec is not None and onec.db.orders:
        if not onec.db.payments:
            return False
        pay = onec.db.payments[0]
        order = next((d for d in onec.db.orders.values() if d.id == pay.base or d.number == pay.base), None)
        eid = st.find_entity("onec", "order", order.id) if order else None
        if not eid or not st.entity(eid)["fields"].get("order.paid"):
            return False
    return True


__all__ = ["Story", "prepare", "tell", "settled"]
