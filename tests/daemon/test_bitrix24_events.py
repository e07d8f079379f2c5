"""A Bitrix24 outbound event reaches the running daemon and syncs the deal at once (issue 13).

The sandbox portal's "outgoing webhook" posts the event the way Bitrix24 does (form-encoded,
`event`, `data[FIELDS][ID]`, `auth[application_token]`…) to the daemon's `/hooks/bitrix24/crm`.
Every poll is set to an hour, so the manager's edit can only arrive through the event. Checked
through the peers' own APIs: the shop's order status, the portal's request log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from scenarios.scenario_env import MUG, PERSON, PRODUCTS, TEAPOT, Portal, Shop

from syncd.config import load_settings
from syncd.daemon.main import Daemon
from syncd.sandbox import bitrix24, shop
from syncd.sandbox.bitrix24 import seed_demo
from syncd.sandbox.server import free_port

REPO = Path(__file__).resolve().parents[2]
BOUND = 2.0        # the bound: synced within 2 s of the edit


class World:
    def __init__(self, tmp: Path) -> None:
        self.shop_h = shop.start()
        self.b24_h = bitrix24.start(rate_limit=False)
        seed_demo(self.b24_h.extra["state"], deals=False)       # managers, pipelines, UF fields
        self.shop, self.portal = Shop(self.shop_h), Portal(self.b24_h)
        for p in PRODUCTS:
            self.shop.add_product(*p)
        self.port = free_port()
        self.daemon: Daemon | None = None
        # Developer resources → Other → Outgoing webhook: the handler URL and the events; the
        # portal shows the application token to copy into syncd's config
        hook = self.portal._j("POST", "/outgoing_webhooks", {
            "url": f"http://127.0.0.1:{self.port}/hooks/bitrix24/crm",
            "events": ["ONCRMDEALADD", "ONCRMDEALUPDATE"]})
        self.cfg = self._config(tmp, hook["application_token"])

    def _config(self, tmp: Path, app_token: str) -> Path:
        maps = [str(REPO / "mappings" / n) for n in ("sync.toml", "shop.toml", "bitrix24.toml", "rules.toml")]
        lines = ["[daemon]", f'database_url = "sqlite:///{tmp}/syncd.db"', f'listen = "127.0.0.1:{self.port}"',
                 f"mappings = {json.dumps(maps)}", f'state_dir = "{tmp}"', "push_interval = 3600", "",
                 "[push]", "base_delay = 0.0", "",
                 "[systems.shop]", 'type = "shop"', f'url = "{self.shop_h.extra["exchange_url"]}"',
                 f'login = "{self.shop_h.extra["login"]}"', f'password = "{self.shop_h.extra["password"]}"', "",
                 "[systems.crm]", 'type = "bitrix24"', f'webhook_url = "{self.b24_h.extra["webhook_url"]}"',
                 f'application_token = "{app_token}"', "event_debounce = 0.1", "rate = 500.0", "burst = 1000.0",
                 ""]
        for system, stream in (("shop", "orders"), ("crm", "deals"), ("crm", "contacts"), ("crm", "companies"),
                               ("crm", "leads")):
            lines += ["[[jobs]]", f'system = "{system}"', f'stream = "{stream}"', 'every = "1h"', ""]
        path = tmp / "config.toml"
        path.write_text("\n".join(lines), encoding="utf-8")
        return path

    def start(self) -> Daemon:
        self.daemon = Daemon(load_settings(self.cfg))
        self.daemon.start()
        return self.daemon

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        self.shop_h.stop()
        self.b24_h.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.close()


def _until(pred: Any, timeout: float, step: float = 0.02) -> float:
    """Seconds until `pred()` is true (raises after `timeout`)."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached")
        time.sleep(step)
    return time.monotonic() - t0


def test_a_deal_edit_arrives_by_its_event_not_by_the_poll(world: World) -> None:
    w = world
    order = w.shop.place(PERSON, [(MUG, 2), (TEAPOT, 1)])
    daemon = w.start()
    # the start-up runs carry the shop order to the portal (each job runs once at start)
    _until(lambda: len(w.portal.deals(UF_CRM_SHOP_ORDER=str(order["number"]))) == 1, 60, 0.2)
    deal = w.portal.deals(UF_CRM_SHOP_ORDER=str(order["number"]))[0]
    assert w.shop.order(order["id"])["status"] != "F"
    # every event syncd's own writes caused has been delivered and let through (not refused)
    w.portal._j("POST", "/events/wait", {"timeout": 10})
    time.sleep(0.5)
    delivered = [e for e in w.portal.log()["entries"] if e.get("kind") == "event"]
    assert delivered and all(e["status"] == 200 for e in delivered), delivered

    # the manager wins the deal in the portal; the portal posts ONCRMDEALUPDATE to the daemon
    since = time.time()
    t0 = time.monotonic()
    w.portal.ui_edit("deal", deal["ID"], {"STAGE_ID": "WON"})
    _until(lambda: w.shop.order(order["id"])["status"] == "F", 30)
    took = time.monotonic() - t0
    assert took < BOUND, f"the shop order was completed {took:.2f} s after the edit"
    # the portal delivered the event and the daemon's connector accepted it (not the admin route's 401)
    events = [e for e in w.portal.log()["entries"] if e.get("kind") == "event" and e["ts"] >= since]
    assert any(e["event"] == "ONCRMDEALUPDATE" and e["id"] == str(deal["ID"]) and e["status"] == 200
               for e in events), events
    assert daemon.checks.view()["crm"]["state"] == "ok"


def test_a_forged_event_is_refused_and_triggers_nothing(world: World) -> None:
    daemon = world.start()
    url = f"{daemon.url}/hooks/bitrix24/crm"
    body = {"event": "ONCRMDEALUPDATE", "data[FIELDS][ID]": "1", "ts": str(int(time.time())),
            "auth[domain]": "default.bitrix24.ru", "auth[application_token]": "not-the-token"}
    r = requests.post(url, data=body, timeout=10)
    assert r.status_code == 403
    # no admin token in the config: the admin route does not answer for the portal's hook path
    assert requests.post(f"{daemon.url}/admin/poll/crm/deals", timeout=10).status_code == 403
