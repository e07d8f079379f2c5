"""The acceptance harness: syncd set up from scratch the way an integrator does it.

Each test gets a fresh sandbox portal and a fresh sandbox shop and sets them up only through what a
person has there — the sandboxes' control APIs (the portal's and the shop's admin UI, a customer's
browser) and the portal's public REST — never the demo's seed and never their Python state:

- the portal: the company's own staff with presence (managers among other employees, so their ids are
  not the examples'), its own pipeline for shop orders and a wholesale lead pipeline with its own stage
  ids, its own user fields (the order number, the "from the site" flag), an existing client base made
  with ``crm.contact.add`` / ``crm.company.add`` / ``crm.requisite.add``, phones typed in several ways;
- the shop: its catalogue (what the shop admin has), orders placed by customers;
- syncd: ``syncd init DIR --systems shop,bitrix24[,onec]`` as the README says, then the integrator's
  edits — the secrets into ``env``, the shop's address into ``config.toml``, and in the example mappings
  the few values that differ on this portal (`Adaptation`: pipeline and stage ids, user field names,
  manager ids). The daemon's `Runtime` runs over that directory, as ``syncd run`` would.

Tests check what a user checks, through the peers' public APIs: counts, keys, sums, links, stages, who
is responsible. Time is driven with `Integration.sync` / `Runtime.tick_rules(now=...)`, never by sleeping.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests

# ---- what the shop sells, and who buys --------------------------------------------------------------

MUG = "b7d1c2e0-7a1f-4c55-9d0e-000000000101"
TEAPOT = "b7d1c2e0-7a1f-4c55-9d0e-000000000102"
THERMOS = "b7d1c2e0-7a1f-4c55-9d0e-000000000103"
SAMOVAR = "b7d1c2e0-7a1f-4c55-9d0e-000000000104"
INSTALL = "b7d1c2e0-7a1f-4c55-9d0e-000000000105"
CATALOGUE = [  # xml_id, name, price, sku
    (MUG, "Кружка керамическая 350 мл", "490", "KR-350"),
    (TEAPOT, "Чайник заварочный стеклянный 1 л", "1290", "CH-1000"),
    (THERMOS, "Термос стальной 0,75 л", "1890", "TR-075"),
    (SAMOVAR, "Самовар электрический 5 л", "125000", "SM-5"),
    (INSTALL, "Монтаж и пусконаладка", "3500", "SRV-1"),
]

BIK = "044525225"


def person(last: str, first: str, email: str = "", phone: str = "", **more: Any) -> dict[str, Any]:
    """A person buyer as typed on the checkout page."""
    return {"kind": "person", "last_name": last, "first_name": first, "email": email, "phone": phone, **more}


def company(name: str, inn: str, kpp: str = "", **more: Any) -> dict[str, Any]:
    """A company buyer as it registers in the shop (valid ИНН/КПП and a bank account)."""
    from syncd.keys.generate import make_account, make_corr_account

    rng = random.Random(inn)
    body = {"kind": "company", "company_name": name, "full_name": f"Общество с ограниченной ответственностью {name[4:]}",
            "inn": inn, "kpp": kpp, "legal_address": "119991, г. Москва, ул. Лесная, д. 5",
            "contact_person": "Петров Иван Сергеевич", "email": f"zakaz@{inn}.example", "phone": "",
            "bank_accounts": [{"account": make_account(BIK, rng=rng), "bik": BIK,
                               "corr_account": make_corr_account(BIK, rng=rng), "bank_name": "ПАО Сбербанк"}]}
    body.update(more)
    return body


def money(v: Any) -> Decimal:
    return Decimal(str(v)).quantize(Decimal("0.01"))


def digits(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())[-10:]


# ---- the peers, through their public faces ---------------------------------------------------------

class PeerError(AssertionError):
    pass


class _Http:
    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()

    def call(self, method: str, path: str, body: Any = None, *, ok: bool = True) -> Any:
        r = self.http.request(method, self.base + path, json=body, timeout=30)
        if ok and r.status_code >= 300:
            raise PeerError(f"{method} {path} -> {r.status_code} {r.text}")
        return r.json() if r.content else None


class Shop(_Http):
    """The sandbox shop: its admin's and customers' browser (control API), read as a user reads it."""

    def __init__(self, handle: Any) -> None:
        super().__init__(handle.url + "/_sandbox")
        self.handle = handle
        self.exchange_url = str(handle.extra["exchange_url"])
        self.login, self.password = str(handle.extra["login"]), str(handle.extra["password"])

    def add_product(self, xml_id: str, name: str, price: str, sku: str) -> None:
        self.call("POST", "/products", {"xml_id": xml_id, "name": name, "price": price, "sku": sku})

    def place(self, buyer: dict[str, Any] | int, items: list[tuple[str, int]], **extra: Any) -> dict[str, Any]:
        """A customer checks out (`buyer` a user id or the checkout form); extra: delivery_price,
        created, number, comment…"""
        body: dict[str, Any] = {"items": [{"product_id": p, "quantity": q} for p, q in items], **extra}
        body.update({"user_id": buyer} if isinstance(buyer, int) else {"user": buyer})
        return self.call("POST", "/orders", body)

    def register(self, buyer: dict[str, Any]) -> int:
        """A customer registers an account (the personal account page), a new shop user."""
        return int(self.call("POST", "/users", buyer)["id"])

    def orders(self) -> list[dict[str, Any]]:
        return self.call("GET", "/orders")

    def order(self, oid: Any) -> dict[str, Any]:
        return self.call("GET", f"/orders/{oid}")

    def pay(self, oid: Any, amount: Any = None) -> dict[str, Any]:
        return self.call("POST", f"/orders/{oid}/pay", {} if amount is None else {"amount": str(amount)})

    def status(self, oid: Any, status: str) -> dict[str, Any]:
        return self.call("POST", f"/orders/{oid}/status", {"status": status})

    def edit(self, oid: Any, **fields: Any) -> dict[str, Any]:
        return self.call("PATCH", f"/orders/{oid}", fields)

    def users(self) -> list[dict[str, Any]]:
        return self.call("GET", "/users")

    def user(self, uid: Any) -> dict[str, Any]:
        return self.call("GET", f"/users/{uid}")

    def edit_user(self, uid: Any, **fields: Any) -> dict[str, Any]:
        return self.call("PATCH", f"/users/{uid}", fields)

    def reject(self, **rule: Any) -> dict[str, Any]:
        return self.call("POST", "/rejections", rule)

    def clear_rejections(self) -> None:
        self.call("DELETE", "/rejections")

    def imports(self) -> list[dict[str, Any]]:
        return self.call("GET", "/imports")


class Portal(_Http):
    """The sandbox portal: its admin and managers in the UI (control API) and the REST API."""

    def __init__(self, handle: Any) -> None:
        super().__init__(handle.url + "/_sandbox/default")
        self.handle = handle
        info = self.call("GET", "")
        self.webhook_url = str(handle.extra["webhook_url"])
        self.application_token = str(info.get("application_token", ""))

    def rest(self, method: str, params: dict[str, Any] | None = None) -> Any:
        r = self.http.post(self.webhook_url + method + ".json", json=params or {}, timeout=30)
        body = r.json()
        if "error" in body:
            raise PeerError(f"{method}: {body}")
        return body["result"]

    def log(self) -> dict[str, Any]:
        return self.call("GET", "/log")

    def clear_log(self) -> None:
        self.call("DELETE", "/log")

    def writes(self) -> list[str]:
        """REST methods in the request log that change something (also those inside a batch)."""
        out = []
        for e in self.log()["entries"]:
            for m in [e.get("method")] + list(e.get("batch_methods") or []):
                if isinstance(m, str) and (m.rsplit(".", 1)[-1] in ("add", "update", "set", "delete")
                                           or m.startswith("im.notify")):
                    out.append(m)
        return out

    def all(self, method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every page of a list method."""
        out: list[dict[str, Any]] = []
        start = 0
        while True:
            r = self.http.post(self.webhook_url + method + ".json", json={**params, "start": start}, timeout=30)
            body = r.json()
            if "error" in body:
                raise PeerError(f"{method}: {body}")
            out += body["result"]
            if "next" not in body:
                return out
            start = body["next"]

    # -- what a user looks at -----------------------------------------------------------------
    def deals(self, **flt: Any) -> list[dict[str, Any]]:
        return self.all("crm.deal.list", {"filter": flt, "select": ["*", "UF_*"], "order": {"ID": "ASC"}})

    def deal(self, did: Any) -> dict[str, Any]:
        return self.rest("crm.deal.get", {"id": did})

    def rows(self, did: Any) -> list[dict[str, Any]]:
        return self.rest("crm.deal.productrows.get", {"id": did})

    def contacts(self, **flt: Any) -> list[dict[str, Any]]:
        return self.all("crm.contact.list", {"filter": flt, "select": ["*", "PHONE", "EMAIL"]})

    def contact(self, cid: Any) -> dict[str, Any]:
        return self.rest("crm.contact.get", {"id": cid})

    def companies(self, **flt: Any) -> list[dict[str, Any]]:
        return self.all("crm.company.list", {"filter": flt, "select": ["*", "PHONE", "EMAIL"]})

    def requisites(self, company_id: Any) -> list[dict[str, Any]]:
        return self.rest("crm.requisite.list", {"filter": {"ENTITY_TYPE_ID": 4, "ENTITY_ID": company_id}})

    def tasks(self) -> list[dict[str, Any]]:
        return self.rest("tasks.task.list", {"select": ["ID", "TITLE", "RESPONSIBLE_ID", "UF_CRM_TASK"]})["tasks"]

    def notifications(self, user_id: Any = None) -> list[dict[str, Any]]:
        q = f"?user_id={user_id}" if user_id is not None else ""
        return self.call("GET", "/notifications" + q)["notifications"]

    # -- what the admin and the managers do ------------------------------------------------------
    def add_user(self, name: str, last_name: str, position: str, *, online: bool = True,
                 workday: str = "OPENED") -> int:
        u = self.call("POST", "/users", {"name": name, "last_name": last_name, "position": position,
                                         "online": online, "workday": workday})
        return int(u["ID"])

    def add_pipeline(self, name: str, stages: list[tuple[str, str, str]]) -> int:
        body = {"name": name, "stages": [{"id": i, "name": n, "semantics": s} for i, n, s in stages]}
        return int(self.call("POST", "/pipelines", body)["id"])

    def add_userfield(self, entity: str, name: str, type_: str, label: str) -> None:
        self.call("POST", "/userfields", {"entity": entity, "field_name": name, "type": type_, "label": label})

    def ui_add(self, entity: str, fields: dict[str, Any], user_id: int | None = None) -> int:
        body: dict[str, Any] = {"fields": fields}
        if user_id:
            body["user_id"] = user_id
        return int(self.call("POST", f"/ui/{entity}", body)["id"])

    def ui_edit(self, entity: str, rid: Any, fields: dict[str, Any]) -> Any:
        return self.call("PATCH", f"/ui/{entity}/{rid}", {"fields": fields})

    def clock(self, **kw: Any) -> dict[str, Any]:
        return self.call("PATCH", "/clock", kw)

    def reject(self, method: str, **rule: Any) -> dict[str, Any]:
        return self.call("POST", "/rejections", {"method": method, **rule})

    def clear_rejections(self) -> None:
        self.call("DELETE", "/rejections")


# ---- the integrator's portal ---------------------------------------------------------------------

SHOP_STAGES = [("NEW", "Новый заказ", "P"), ("PAID", "Оплачен", "P"), ("SHIPPING", "Передан в доставку", "P"),
               ("DELIVERED", "Доставлен", "P"), ("WON", "Заказ выполнен", "S"), ("LOSE", "Отменён", "F")]
WHOLESALE_STAGES = [("NEW", "Заявка", "P"), ("TALKS", "Переговоры", "P"), ("READY", "Готов к первому заказу", "P"),
                    ("WON", "Первый заказ сделан", "S"), ("LOSE", "Отказ", "F")]
ORDER_FIELD = "UF_CRM_SITE_ORDER"        # the integrator's names, not the examples'
FROM_SITE_FIELD = "UF_CRM_FROM_SITE"


@dataclass
class PortalSetup:
    """What the integrator found or made on the portal: the ids the mappings must name."""

    accountant: int = 0
    senior: int = 0                 # big orders
    managers: list[int] = field(default_factory=list)   # the sales team (two engineers first)
    shop_pipeline: int = 0
    wholesale_pipeline: int = 0

    def stage(self, sid: str, pipeline: int | None = None) -> str:
        return f"C{pipeline if pipeline is not None else self.shop_pipeline}:{sid}"


def set_up_portal(portal: Portal) -> PortalSetup:
    """The company's staff, pipelines and user fields, made in the portal's admin UI."""
    s = PortalSetup()
    # staff who are not sales managers come first: the managers' ids are not the examples' 2, 3, 4
    s.accountant = portal.add_user("Галина", "Фёдорова", "Главный бухгалтер", online=False, workday="CLOSED")
    portal.add_user("Олег", "Зайцев", "Кладовщик", online=True, workday="OPENED")
    s.managers = [portal.add_user("Марина", "Соколова", "Менеджер по продажам"),
                  portal.add_user("Денис", "Орлов", "Менеджер по продажам"),
                  portal.add_user("Светлана", "Лебедева", "Менеджер по продажам")]
    s.senior = portal.add_user("Виктор", "Лебедев", "Руководитель отдела продаж", online=False, workday="CLOSED")
    s.shop_pipeline = portal.add_pipeline("Интернет-магазин", SHOP_STAGES)
    s.wholesale_pipeline = portal.add_pipeline("Оптовые клиенты", WHOLESALE_STAGES)
    portal.add_userfield("deal", ORDER_FIELD, "string", "Номер заказа на сайте")
    portal.add_userfield("deal", FROM_SITE_FIELD, "boolean", "Заказ с сайта")
    return s


# ---- syncd's config directory: `syncd init`, then the integrator's edits --------------------------

class Adaptation:
    """Edits of the files `syncd init` wrote, each a literal text the example has and its new text —
    what the integrator changes by hand. Each edit replaces every occurrence, in the order given. An
    edit whose text is missing fails loudly: the example file changed, and so must the README's advice."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def edit(self, name: str, *pairs: tuple[str, str]) -> None:
        path = self.dir / name
        text = path.read_text(encoding="utf-8")
        for old, new in pairs:
            if old not in text:
                raise AssertionError(f"{name}: {old!r} not found: the example changed; adapt the harness")
            text = text.replace(old, new)
        path.write_text(text, encoding="utf-8")


def adapt_mappings(a: Adaptation, s: PortalSetup) -> None:
    """The example mappings edited for this portal: pipeline and stage ids, user field names, managers."""
    shop, wholesale = str(s.shop_pipeline), str(s.wholesale_pipeline)
    eng1, eng2, third = (str(m) for m in s.managers)
    a.edit("mappings/bitrix24.toml",
           ('"UF_CRM_SHOP_ORDER"', f'"{ORDER_FIELD}"'),
           ('field = "UF_CRM_FROM_SHOP"', f'field = "{FROM_SITE_FIELD}"'),
           ("CATEGORY_ID = 0 ", f"CATEGORY_ID = {shop} "))
    stage = s.stage
    a.edit("mappings/rules.toml",
           # managers: the senior for big orders, the sales team in the groups
           ('manager = "4"', f'manager = "{s.senior}"'),
           ('group = ["2", "3", "4"]', f'group = ["{eng1}", "{eng2}", "{third}"]'),
           ('group = ["2", "3"]', f'group = ["{eng1}", "{eng2}"]'),
           # the wholesale pipeline the first order closes (before the shop's stages: "C1:WON" is the
           # example's wholesale stage, and the shop pipeline's own "WON" becomes a C<n>:WON below)
           ("order.pipeline == '1' and order.stage == 'C1:READY'",
            f"order.pipeline == '{wholesale}' and order.stage == '{stage('READY', s.wholesale_pipeline)}'"),
           ('"order.stage" = "C1:WON"', f'"order.stage" = "{stage("WON", s.wholesale_pipeline)}"'),
           # the shop's orders live in the "Интернет-магазин" pipeline with its own stage ids
           ('"order.pipeline" = "0"', f'"order.pipeline" = "{shop}"'),
           ('"order.stage" = "NEW"', f'"order.stage" = "{stage("NEW")}"'),
           ('pipeline = "0"', f'pipeline = "{shop}"'),
           ('"order.stage" = "PREPAYMENT_INVOICE"', f'"order.stage" = "{stage("PAID")}"'),
           ('"order.stage" = "EXECUTING"', f'"order.stage" = "{stage("SHIPPING")}"'),
           ('"order.stage" = "FINAL_INVOICE"', f'"order.stage" = "{stage("DELIVERED")}"'),
           ('"order.stage" = "WON"', f'"order.stage" = "{stage("WON")}"'),
           ("order.stage == 'WON'", f"order.stage == '{stage('WON')}'"),
           ('"order.stage" = "LOSE"', f'"order.stage" = "{stage("LOSE")}"'),
           ("order.stage == 'LOSE'", f"order.stage == '{stage('LOSE')}'"),
           # the shop pipeline's orders are the ones that close a wholesale deal
           ("when = \"order.pipeline == '0'\"", f"when = \"order.pipeline == '{shop}'\""))


def configure(directory: Path, state: Path, shop: Shop, portal: Portal, s: PortalSetup, *,
              onec: bool = False) -> tuple[Path, dict[str, str]]:
    """`syncd init` and the integrator's edits; returns the config file and the env file's values."""
    from syncd.init import init_directory

    init_directory(directory, ["shop", "bitrix24"] + (["onec"] if onec else []), state_dir=str(state))
    a = Adaptation(directory)
    a.edit("config.toml",
           ('url = "https://shop.example.ru/bitrix/admin/1c_exchange.php"', f'url = "{shop.exchange_url}"'),
           ('login = "syncd"', f'login = "{shop.login}"'),
           ('from_shop_field = "UF_CRM_FROM_SHOP"', f'from_shop_field = "{FROM_SITE_FIELD}"'),
           # the sandbox portal's limit is off in these tests: the connector's own bucket opened up too
           ("rate = 2.0 ", "rate = 500.0 "), ("burst = 50.0 ", "burst = 1000.0 "),
           # retries right away: time is driven by the test, not by sleeping
           ("base_delay = 2.0", "base_delay = 0.0"),
           ('listen = "127.0.0.1:8787"', 'listen = "127.0.0.1:0"'))
    adapt_mappings(a, s)
    env = {"SHOP_PASSWORD": shop.password, "B24_WEBHOOK_URL": portal.webhook_url,
           "B24_APP_TOKEN": portal.application_token, "STATE_DIRECTORY": str(state)}
    if onec:
        env["ONEC_PASSWORD"] = "пароль-1С"
    lines = [line for line in (directory / "env").read_text(encoding="utf-8").splitlines()
             if not any(line.lstrip("# ").startswith(k + "=") for k in env)]
    (directory / "env").write_text("\n".join(lines + [f"{k}={v}" for k, v in env.items()]) + "\n", encoding="utf-8")
    return directory / "config.toml", read_env(directory / "env")


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


# ---- the whole integration ---------------------------------------------------------------------

class Integration:
    """A fresh portal and shop set up as an integrator does, and syncd over them (see the module doc)."""

    def __init__(self, tmp: Path, *, onec: bool = False) -> None:
        from syncd.sandbox import bitrix24
        from syncd.sandbox import shop as shop_sandbox

        self.tmp = tmp
        self.shop_h = shop_sandbox.start()
        self.b24_h = bitrix24.start(rate_limit=False)
        self.shop, self.portal = Shop(self.shop_h), Portal(self.b24_h)
        self.setup = set_up_portal(self.portal)
        for p in CATALOGUE:
            self.shop.add_product(*p)
        self.config, self.env = configure(tmp / "etc", tmp / "state", self.shop, self.portal, self.setup, onec=onec)
        self.onec_enabled = onec
        self.rt: Any = None
        self.onec_server: Any = None
        self.onec_clients: list[Any] = []

    # -- the existing client base (REST, as an earlier import or the managers made it) --------------
    def crm_contact(self, name: str, last_name: str, *, phone: str = "", email: str = "",
                    manager: int | None = None, **more: Any) -> int:
        f: dict[str, Any] = {"NAME": name, "LAST_NAME": last_name, "OPENED": "Y", "TYPE_ID": "CLIENT", **more}
        if phone:
            f["PHONE"] = [{"VALUE": phone, "VALUE_TYPE": "WORK"}]
        if email:
            f["EMAIL"] = [{"VALUE": email, "VALUE_TYPE": "WORK"}]
        if manager:
            f["ASSIGNED_BY_ID"] = manager
        return int(self.portal.rest("crm.contact.add", {"fields": f}))

    def crm_company(self, title: str, *, inn: str = "", kpp: str = "", phone: str = "",
                    manager: int | None = None) -> int:
        f: dict[str, Any] = {"TITLE": title, "COMPANY_TYPE": "CUSTOMER", "OPENED": "Y"}
        if phone:
            f["PHONE"] = [{"VALUE": phone, "VALUE_TYPE": "WORK"}]
        if manager:
            f["ASSIGNED_BY_ID"] = manager
        cid = int(self.portal.rest("crm.company.add", {"fields": f}))
        if inn:
            self.portal.rest("crm.requisite.add", {"fields": {
                "ENTITY_TYPE_ID": 4, "ENTITY_ID": cid, "PRESET_ID": 1, "NAME": title, "RQ_INN": inn,
                **({"RQ_KPP": kpp} if kpp else {})}})
        return cid

    # -- syncd ---------------------------------------------------------------------------------
    def settings(self) -> Any:
        from syncd.config import load_settings

        return load_settings(self.config, env=self.env)

    def runtime(self) -> Any:
        if self.rt is None:
            from syncd.daemon.runtime import Runtime

            self.rt = Runtime(self.settings())
            if self.onec_enabled:
                self._serve_onec()
        return self.rt

    def sync(self, rounds: int = 8, now: dt.datetime | None = None) -> None:
        """Passes (pull every stream, push, tick the rules) until one changes nothing."""
        from syncd.store import utcnow

        rt = self.runtime()
        for _ in range(rounds):
            c = rt.sync_once()
            t = rt.tick_rules(now=now or utcnow())
            if t:
                rt.push_all()
            if not (c.created or c.updated or c.pushed or c.planned or t):
                return
        raise AssertionError(f"no quiescence after {rounds} passes: {c.as_dict()}; dead: {self.dead()}")

    def dead(self) -> list[dict[str, Any]]:
        return self.runtime().store.list_outbox("dead")

    def cli(self, *args: str) -> tuple[int, str]:
        """`syncd -c CONFIG --env-file ENV ARGS…` as the integrator types it; (exit code, output)."""
        from click.testing import CliRunner

        from syncd.cli import main

        saved = dict(os.environ)
        try:
            r = CliRunner().invoke(main, ["-c", str(self.config), "--env-file", str(self.config.parent / "env"),
                                          *args], catch_exceptions=False)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return r.exit_code, r.output

    def cli_json(self, *args: str) -> tuple[int, Any]:
        code, out = self.cli("--json", *args)
        return code, json.loads(out.strip().splitlines()[-1])

    # -- 1C (S6/S7): the endpoint syncd serves, and the sandbox 1C client calling it ---------------
    def _serve_onec(self) -> None:
        from starlette.applications import Starlette
        from starlette.routing import Route

        from syncd.sandbox.server import serve_in_thread

        conn = self.rt.connectors["onec"]
        app = Starlette(routes=[Route(r.path, r.endpoint, methods=list(r.methods)) for r in conn.http_routes()])
        self.onec_server = serve_in_thread(app)
        self.onec_url = self.onec_server.url + conn.settings.path

    def onec(self) -> Any:
        """The accountant's 1C, exchanging with syncd as with a site."""
        from syncd.sandbox.onec import OneCClient

        self.runtime()
        c = OneCClient(self.onec_url, "onec", self.env["ONEC_PASSWORD"])
        self.onec_clients.append(c)
        return c

    # -- look-ups a user makes -------------------------------------------------------------------
    def deal_of(self, order: dict[str, Any]) -> dict[str, Any]:
        """The deal of a shop order, found by the order number field the integrator made."""
        deals = self.portal.deals(**{ORDER_FIELD: str(order["number"])})
        if len(deals) != 1:
            store = self.runtime().store
            raise AssertionError(f"order {order['number']}: {len(deals)} deals {[d['ID'] for d in deals]}; "
                                 f"open review: {[(r['type'], r['reason']) for r in store.list_review()]}; "
                                 f"dead writes: {[(d['entity_type'], d['last_error']) for d in self.dead()]}")
        return deals[0]

    def reinstall(self) -> None:
        """syncd installed again beside the same systems: a new empty database and state folder
        (a disaster recovery, a second environment), the same config and mappings."""
        import shutil

        if self.rt is not None:
            self.rt.close()
            self.rt = None
        state = Path(self.env["STATE_DIRECTORY"])
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir(parents=True)

    def close(self) -> None:
        for c in self.onec_clients:
            c.close()
        if self.rt is not None:
            self.rt.close()
        if self.onec_server is not None:
            self.onec_server.stop()
        self.shop_h.stop()
        self.b24_h.stop()


@contextmanager
def integration(tmp: Path, **kw: Any) -> Iterator[Integration]:
    i = Integration(tmp, **kw)
    try:
        yield i
    finally:
        i.close()
