"""A RetailCRM account set up for the shop as an integrator does it in the web UI: three managers and
the order field mappings/retailcrm.toml names (`from_shop`, the checkbox a manager ticks on an order
taken by phone that the shop should have). Used by `syncd demo --crm retailcrm` and the scenario
tests; a real account gets the same by hand (Settings → Custom fields).
"""

from __future__ import annotations

from typing import Any

from syncd.sandbox.retailcrm.state import Sandbox

MANAGERS = [("Ирина", "Петрова", "irina@shop.example"), ("Олег", "Смирнов", "oleg@shop.example"),
            ("Ольга", "Кузнецова", "olga@shop.example")]


def seed_shop(sb: Sandbox) -> dict[str, Any]:
    """Returns {"managers": {rules id "2"|"3"|"4": RetailCRM user id}, "site": code}."""
    with sb.lock:
        by_email = {u["email"]: u["id"] for u in sb.users.values()}
        ids = []
        for first, last, email in MANAGERS:
            if email not in by_email:
                uid = max(sb.users, default=0) + 1
                sb.users[uid] = {"id": uid, "createdAt": sb.now_s(), "active": True, "email": email,
                                 "firstName": first, "lastName": last, "status": "free", "online": True,
                                 "isAdmin": False, "isManager": True,
                                 "groups": [{"id": 1, "name": "Менеджеры", "code": "manager"}]}
                by_email[email] = uid
            ids.append(by_email[email])
        sb.custom_fields["order"]["from_shop"] = {"name": "Заказ для магазина", "type": "boolean"}
        site = next(iter(sb.refs["sites"]))
        return {"managers": {str(i + 2): uid for i, uid in enumerate(ids)}, "site": site}
