"""S4 end to end: site forms posted over real HTTP to `syncd run`, leads read back from the portal's
public REST (crm.lead.list)."""

from __future__ import annotations

import time
from typing import Any

from conftest import TOKEN, World
from formshelpers import Portal


def wait_leads(portal: Portal, n: int, timeout: float = 20.0, **flt: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got = portal.leads(**flt)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_a_post_becomes_a_lead_with_the_mapped_fields_and_the_forms_manager(world: World) -> None:
    r = world.daemon.post("contact", {"your_name": "Иван Петров", "tel": "8 (903) 111-22-01",
                                      "mail": "ivan.p@example.ru", "msg": "Перезвоните", "agree": "on"},
                          token=TOKEN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["id"]
    leads = wait_leads(world.portal, 1, NAME="Иван Петров")
    assert len(leads) == 1, leads
    lead = leads[0]
    assert lead["ASSIGNED_BY_ID"] == world.managers["anna"]
    assert lead["COMMENTS"] == "Перезвоните" and lead["SOURCE_ID"] == "WEB"
    assert [p["VALUE"] for p in lead["PHONE"]] == ["+79031112201"]
    assert [e["VALUE"] for e in lead["EMAIL"]] == ["ivan.p@example.ru"]
