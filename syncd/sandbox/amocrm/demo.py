"""An amoCRM account set up for the shop as an integrator does it in the web UI: three managers, the
main pipeline «Интернет-магазин» with the shop's stages, and the fields syncd's example mapping
(mappings/amocrm.toml) names — the order's number, "from the shop" and syncd's key on leads,
contacts and companies, ИНН/КПП on companies. Used by `syncd demo --crm amocrm` and the scenario
tests; a real account gets the same by hand (the mapping's header lists what to create).
"""

from __future__ import annotations

from typing import Any

from syncd.sandbox.amocrm.state import Account

# the rules' managers (mappings/rules.toml names Bitrix24's user ids 2, 3, 4) and who they are here
MANAGERS = [("Анна Смирнова", "anna@example.com"), ("Борис Петров", "boris@example.com"),
            ("Ольга Кузнецова", "olga@example.com")]
PIPELINE = "Интернет-магазин"
STAGES = ["Новый заказ", "Счёт оплачен", "Передан в доставку", "Доставлен"]
FIELDS = [("leads", "Номер заказа в магазине", "text", "SHOP_ORDER"),
          ("leads", "Из магазина", "checkbox", "FROM_SHOP"),
          ("leads", "Ключ syncd", "text", "SYNCD_KEY"),
          ("contacts", "Ключ syncd", "text", "SYNCD_KEY"),
          ("companies", "Ключ syncd", "text", "SYNCD_KEY"),
          ("companies", "ИНН", "text", "INN"),
          ("companies", "КПП", "text", "KPP")]


def seed_shop(acc: Account) -> dict[str, Any]:
    """Returns {"managers": {rules id "2"|"3"|"4": amo user id}, "pipeline": id, "statuses": {name: id}}."""
    with acc.lock:
        by_email = {u.email: u.id for u in acc.users.values()}
        ids = []
        for name, email in MANAGERS:
            ids.append(by_email[email] if email in by_email else acc.add_user(name, email).id)
        p = acc.add_pipeline(PIPELINE, STAGES, is_main=True)
        have = {(f.entity_type, f.code) for f in acc.fields.values()}
        for et, name, type_, code in FIELDS:
            if (et, code) not in have:
                acc.add_field(et, name, type_, code=code)
        return {"managers": {str(i + 2): uid for i, uid in enumerate(ids)}, "pipeline": p.id,
                "statuses": {s.name: s.id for s in p.statuses}}
