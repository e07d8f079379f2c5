"""End-to-end scenario world: the sandbox shop and the sandbox Bitrix24 portal over HTTP, and a
Runtime built from a config file written the way `syncd demo` writes it (SQLite, the example
mappings in `mappings/`). Peers are driven only through their control APIs (what a customer, a
manager or an operator does in a UI); syncd talks to them through their real protocols.
Time is driven with `runtime.sync_once()` / `runtime.tick_rules(now=...)`, never by sleeping.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from syncd.config import load_settings
from syncd.daemon.runtime import Runtime
from syncd.store import utcnow

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = REPO / "mappings"

# a person and a company buyer as a customer types them on the shop's checkout page
PERSON = {"kind": "person", "last_name": "Петров", "first_name": "Иван", "middle_name": "Сергеевич",
          "email": "Ivan.Petrov@Mail.example", "phone": "8 (495) 123-45-67",
          "address": "Москва, ул. Лесная, д. 5, кв. 12"}
BIK = "044525225"


def company_buyer(**over: Any) -> dict[str, Any]:
    from syncd.keys.generate import make_account, make_corr_account  # valid checksums for БИК
    import random

    rng = random.Random(7)
    body = {"kind": "company", "company_name": "ООО «Ромашка»",
            "full_name": "Общество с ограниченной ответственностью «Ромашка»",
            "inn": "7707083893", "kpp": "773601001", "ogrn": "1027700132195",
            "legal_address": "119991, г. Москва, ул. Лесная, д. 5", "contact_person": "Петров Иван Сергеевич",
            "email": "zakaz@romashka.example", "phone": "+7 (495) 765-43-21",
            "bank_accounts": [{"account": make_account(BIK, rng=rng), "bik": BIK,
                               "corr_account": make_corr_account(BIK, rng=rng), "bank_name": "ПАО Сбербанк"}]}
    body.update(over)
    return body


PRODUCTS = [("9f1c2a10-0000-4c1e-8a00-000000000001", "Кружка керамическая 350 мл", "490", "KR-350"),
            ("9f1c2a10-0000-4c1e-8a00-000000000002", "Чайник заварочный стеклянный 1 л", "1290", "CH-1000"),
            ("9f1c2a10-0000-4c1e-8a00-000000000004", "Термос стальной 0,75 л", "1890", "TR-075"),
            ("9f1c2a10-0000-4c1e-8a00-000000000009", "Самовар электрический 5 л", "125000", "SM-5")]
MUG, TEAPOT, THERMOS, SAMOVAR = (p[0] for p in PRODUCTS)


class Shop:
    """The sandbox shop through its control API (a customer's and the shop admin's browser)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.ctl = handle.url + "/_sandbox"
        self.http = requests.Session()

    def _j(self, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(method, self.ctl + path, json=body, timeout=30)
        assert r.status_code < 300, (method, path, r.status_code, r.text)
        return r.json()

    def add_product(self, xml_id: str, name: str, price: str, sku: str) -> None:
        self._j("POST", "/products", {"xml_id": xml_id, "name": name, "price": price, "sku": sku})

    def place(self, user: dict[str, Any] | None = None, items: list[tuple[str, int]] | None = None, *,
              user_id: int | None = None, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"items": [{"product_id": p, "quantity": q} for p, q in (items or [(MUG, 2)])]}
        body.update({"user": user} if user_id is None else {"user_id": user_id})
        body.update(extra)
        return self._j("POST", "/orders", body)

    def order(self, oid: Any) -> dict[str, Any]:
        return self._j("GET", f"/orders/{oid}")

    def orders(self) -> list[dict[str, Any]]:
        return self._j("GET", "/orders")

    def pay(self, oid: Any, amount: Any = None) -> dict[str, Any]:
        return self._j("POST", f"/orders/{oid}/pay", {} if amount is None else {"amount": str(amount)})

    def status(self, oid: Any, status: str) -> dict[str, Any]:
        return self._j("POST", f"/orders/{oid}/status", {"status": status})

    def users(self) -> list[dict[str, Any]]:
        return self._j("GET", "/users")

    def user(self, uid: Any) -> dict[str, Any]:
        return self._j("GET", f"/users/{uid}")

    def edit_user(self, uid: Any, **fields: Any) -> dict[str, Any]:
        return self._j("PATCH", f"/users/{uid}", fields)

    def log(self) -> list[dict[str, Any]]:
        return self._j("GET", "/log")

    def uploads(self) -> list[dict[str, Any]]:
        """Exchange calls that put data into the shop (file chunks and imports)."""
        return [e for e in self.log() if e.get("mode") in ("file", "import")]

    def faults(self, **kw: Any) -> Any:
        return self._j("PATCH", "/faults", kw)


class Portal:
    """The sandbox portal: the control API (a manager in the UI, the operator) and read-only REST
    calls for checking what the portal holds."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.ctl = handle.url + "/_sandbox/default"
        self.webhook_url = str(handle.extra["webhook_url"])
        self.http = requests.Session()

    def _j(self, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(method, self.ctl + path, json=body, timeout=30)
        assert r.status_code < 300, (method, path, r.status_code, r.text)
        return r.json()

    def rest(self, method: str, params: dict[str, Any] | None = None) -> Any:
        r = self.http.post(self.webhook_url + method + ".json", json=params or {}, timeout=30)
        body = r.json()
        assert "error" not in body, body
        return body["result"]

    def deals(self, **flt: Any) -> list[dict[str, Any]]:
        return self.rest("crm.deal.list", {"filter": flt, "select": ["*", "UF_*"], "order": {"ID": "ASC"}})

    def deal(self, did: Any) -> dict[str, Any]:
        return self.rest("crm.deal.get", {"id": did})

    def rows(self, did: Any) -> list[dict[str, Any]]:
        return self.rest("crm.deal.productrows.get", {"id": did})

    def contacts(self, **flt: Any) -> list[dict[str, Any]]:
        return self.rest("crm.contact.list", {"filter": flt, "select": ["*", "PHONE", "EMAIL"]})

    def companies(self, **flt: Any) -> list[dict[str, Any]]:
        return self.rest("crm.company.list", {"filter": flt, "select": ["*", "PHONE", "EMAIL"]})

    def requisites(self, company_id: Any) -> list[dict[str, Any]]:
        return self.rest("crm.requisite.list", {"filter": {"ENTITY_TYPE_ID": 4, "ENTITY_ID": company_id}})

    def bank_details(self, requisite_id: Any) -> list[dict[str, Any]]:
        return self.rest("crm.requisite.bankdetail.list", {"filter": {"ENTITY_ID": requisite_id}})

    def products(self) -> list[dict[str, Any]]:
        return self.rest("crm.product.list", {"select": ["ID", "NAME", "PRICE", "XML_ID"]})

    def tasks(self) -> list[dict[str, Any]]:
        return self.rest("tasks.task.list", {"select": ["ID", "TITLE", "RESPONSIBLE_ID", "UF_CRM_TASK"]})["tasks"]

    def ui_add(self, entity: str, fields: dict[str, Any], user_id: int | None = None) -> int:
        body: dict[str, Any] = {"fields": fields}
        if user_id:
            body["user_id"] = user_id
        return int(self._j("POST", f"/ui/{entity}", body)["id"])

    def ui_edit(self, entity: str, rid: Any, fields: dict[str, Any]) -> Any:
        return self._j("PATCH", f"/ui/{entity}/{rid}", {"fields": fields})

    def notifications(self, user_id: Any = None) -> list[dict[str, Any]]:
        """The notices users see (a notice replaced by one with the same tag is gone)."""
        q = f"?user_id={user_id}" if user_id is not None else ""
        return self._j("GET", "/notifications" + q)["notifications"]

    def users(self) -> list[dict[str, Any]]:
        return self._j("GET", "/users")

    def set_user(self, uid: Any, **kw: Any) -> Any:
        return self._j("PATCH", f"/users/{uid}", kw)

    def pipelines(self) -> Any:
        return self._j("GET", "/pipelines")

    def faults(self, **kw: Any) -> Any:
        return self._j("PATCH", "/faults", kw)

    def log(self) -> dict[str, Any]:
        return self.http.get(self.ctl + "/log", timeout=30).json()

    def clear_log(self) -> None:
        self._j("DELETE", "/log")

    def writes(self) -> list[str]:
        """REST methods in the request log that change something (also those inside a batch)."""
        out = []
        for e in self.log()["entries"]:
            for m in [e.get("method")] + list(e.get("batch_methods") or []):
                if isinstance(m, str) and (m.rsplit(".", 1)[-1] in ("add", "update", "set", "delete")
                                           or m.startswith("im.notify")):
                    out.append(m)
        return out

    def expire_tokens(self) -> Any:
        return self._j("POST", "/oauth/expire")


def write_config(state_dir: Path, shop: Any, b24: Any, *, extra_crm: dict[str, Any] | None = None) -> Path:
    """config.toml as `syncd demo` writes it (syncd.demo.write_config), without 1C: the shop and the
    portal, the example mappings, SQLite. The portal's limit is off in these tests; the connector
    keeps its own bucket, opened up here so the scenarios run fast."""
    patterns = [str(MAPPINGS / n) for n in ("sync.toml", "shop.toml", "bitrix24.toml", "rules.toml")]
    info = b24.extra["state"].portal().info()
    crm = {"webhook_url": b24.extra["webhook_url"], "application_token": info.get("application_token", ""),
           "rate": 500.0, "burst": 1000.0, **(extra_crm or {})}
    lines = ["[daemon]", f'database_url = "sqlite:///{state_dir}/syncd.db"', 'listen = "127.0.0.1:0"',
             f"mappings = {json.dumps(patterns)}", f'state_dir = "{state_dir}"', "",
             "[push]", "base_delay = 0.0", "",
             "[systems.shop]", 'type = "shop"', f'url = "{shop.extra["exchange_url"]}"',
             f'login = "{shop.extra["login"]}"', f'password = "{shop.extra["password"]}"', "",
             "[systems.crm]", 'type = "bitrix24"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in crm.items()] + [""]
    for system, stream in (("shop", "orders"), ("crm", "deals"), ("crm", "contacts"), ("crm", "companies")):
        lines += ["[[jobs]]", f'system = "{system}"', f'stream = "{stream}"', 'every = "3s"', ""]
    path = state_dir / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class World:
    def __init__(self, tmp_path: Path) -> None:
        from syncd.sandbox import bitrix24, shop
        from syncd.sandbox.bitrix24 import seed_demo

        self.tmp = tmp_path
        self.shop_h = shop.start()
        self.b24_h = bitrix24.start(rate_limit=False)
        ids = seed_demo(self.b24_h.extra["state"], deals=False)   # managers, PRO.Leads, UF fields
        self.managers: dict[str, int] = ids["managers"]
        self.pro_leads: int = ids["pipeline_pro_leads"]
        self.shop, self.portal = Shop(self.shop_h), Portal(self.b24_h)
        for p in PRODUCTS:
            self.shop.add_product(*p)
        self.rt: Runtime | None = None

    def runtime(self, **extra_crm: Any) -> Runtime:
        if self.rt is None:
            settings = load_settings(write_config(self.tmp, self.shop_h, self.b24_h, extra_crm=extra_crm))
            self.rt = Runtime(settings)
        return self.rt

    def restart(self) -> Runtime:
        """A new Runtime over the same store and config (the daemon restarted)."""
        assert self.rt is not None
        settings = self.rt.settings
        self.rt.close()
        self.rt = Runtime(settings)
        return self.rt

    def sync(self, rounds: int = 6, now: dt.datetime | None = None) -> None:
        """Run passes (pull every stream, push the outbox, tick rules) until one changes nothing."""
        rt = self.runtime()
        for _ in range(rounds):
            c = rt.sync_once()
            t = rt.tick_rules(now=now or utcnow())
            if t:
                rt.push_all()
            if not (c.created or c.updated or c.pushed or c.planned or t):
                return
        from sqlalchemy import select

        from syncd.store import tables as tb
        with rt.store.engine.connect() as conn:
            last = conn.execute(select(tb.outbox.c.system, tb.outbox.c.entity_type, tb.outbox.c.status,
                                       tb.outbox.c.payload, tb.outbox.c.last_error)
                                .order_by(tb.outbox.c.id.desc()).limit(3)).all()
        raise AssertionError(f"no quiescence after {rounds} passes: {c.as_dict()}; last writes: {last}")

    # -- look-ups ----------------------------------------------------------------------------------
    def deal_of(self, order: dict[str, Any]) -> dict[str, Any]:
        deals = self.portal.deals(UF_CRM_SHOP_ORDER=str(order["number"]))
        assert len(deals) == 1, (order["number"], deals)
        return deals[0]

    def close(self) -> None:
        if self.rt is not None:
            self.rt.close()
        self.shop_h.stop()
        self.b24_h.stop()


def money(v: Any) -> Decimal:
    return Decimal(str(v)).quantize(Decimal("0.01"))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.close()
