"""The three CRMs as the parametrised scenarios see them: each sandbox set up as an integrator sets up
the account (through its control API: managers, pipeline and stages, custom fields), the config
block and mapping syncd runs with, and what a person checks afterwards, read through that CRM's
public API and put in one shape (`Deal`, `Person`, `Task`), so one scenario asserts on all three.

A CRM that cannot express something says so in `cannot` (the reason a scenario's step is skipped);
nothing is skipped silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = REPO / "mappings"
CRMS = ("bitrix24", "amocrm", "retailcrm")

# canonical stages the rules use (mappings/rules.toml), and the shop-facing names of the steps
STAGES = ("NEW", "PREPAYMENT_INVOICE", "EXECUTING", "FINAL_INVOICE", "WON", "LOSE")


@dataclass(frozen=True)
class Deal:
    id: str
    title: str
    number: str | None          # the shop's order number as the CRM shows it
    stage: str                  # the CRM's own value (compare with `crm.stage(canonical)`)
    total: Decimal
    contact: str | None
    responsible: str | None
    rows: tuple[tuple[str, Decimal, Decimal], ...] | None   # (name, price, quantity); None: not kept


@dataclass(frozen=True)
class Person:
    id: str
    first_name: str
    last_name: str
    phones: tuple[str, ...]
    emails: tuple[str, ...]
    responsible: str | None


@dataclass(frozen=True)
class Notice:
    user: str
    text: str


@dataclass(frozen=True)
class Task:
    id: str
    title: str
    responsible: str
    deal: str | None


def money(v: Any) -> Decimal:
    return Decimal(str(v or 0)).quantize(Decimal("0.01"))


def digits(s: str) -> str:
    d = re.sub(r"\D", "", s)
    return "7" + d[1:] if len(d) == 11 and d[0] == "8" else d


def rules_text(crm_type: str, managers: dict[str, str]) -> str:
    """mappings/rules.toml as `syncd init` writes it for this CRM, with the rules' managers (Bitrix24's
    user ids 2, 3, 4) replaced by this account's, as the demo does (an integrator puts their own)."""
    from syncd.demo_crm import with_managers
    from syncd.init import mapping_text

    return with_managers(mapping_text("rules.toml", ["shop", crm_type], (MAPPINGS / "rules.toml").read_text("utf-8")),
                         managers)


class Crm:
    """What every CRM adapter offers; see the module's docstring."""

    type: str
    handle: Any
    managers: dict[str, str]                 # the rules' manager ids -> this CRM's user ids
    streams: tuple[str, ...]
    cannot: dict[str, str] = {}

    def config_lines(self) -> list[str]:
        raise NotImplementedError

    def mapping(self) -> str:
        return str(MAPPINGS / f"{self.type}.toml")

    def stage(self, canonical: str) -> str:
        raise NotImplementedError

    def deals(self) -> list[Deal]:
        raise NotImplementedError

    def deal_of(self, order: dict[str, Any]) -> Deal:
        found = [d for d in self.deals() if d.number == str(order["number"])]
        assert len(found) == 1, (order["number"], found)
        return found[0]

    def contacts(self) -> list[Person]:
        raise NotImplementedError

    def add_contact(self, first: str, last: str, phone: str, responsible: str) -> str:
        raise NotImplementedError

    def set_stage(self, deal: Deal, canonical: str) -> None:
        raise NotImplementedError

    def set_quantity(self, deal: Deal, name: str, quantity: int) -> None:
        """A manager changes one line's quantity in the deal (CRMs that keep rows)."""
        raise NotImplementedError

    def deal_by_phone(self, title: str, contact: str, item: tuple[str, int, int], responsible: str) -> str:
        """A manager takes an order by phone: a deal marked "from the shop" for the known contact, with
        one line (name, price, quantity) — its sum only where the CRM keeps no rows."""
        raise NotImplementedError

    def tasks(self) -> list[Task]:
        raise NotImplementedError

    def notices(self) -> list[Notice]:
        raise NotImplementedError

    def writes(self) -> int:
        """Write requests the CRM has served so far (for "one more pass writes nothing")."""
        raise NotImplementedError

    def stop(self) -> None:
        self.handle.stop()


# -- Bitrix24 -------------------------------------------------------------------------------------

class Bitrix24(Crm):
    type = "bitrix24"
    streams = ("deals", "contacts", "companies")
    cannot: dict[str, str] = {}

    def __init__(self) -> None:
        from syncd.sandbox import bitrix24
        from syncd.sandbox.bitrix24 import seed_demo

        self.handle = bitrix24.start(rate_limit=False)
        seed_demo(self.handle.extra["state"], deals=False)
        self.managers = {"2": "2", "3": "3", "4": "4"}
        self.hook = str(self.handle.extra["webhook_url"])
        self.ctl = self.handle.url + "/_sandbox/default"
        self.http = requests.Session()

    def config_lines(self) -> list[str]:
        info = self.handle.extra["state"].portal().info()
        crm = {"webhook_url": self.hook, "application_token": info.get("application_token", ""),
               "rate": 500.0, "burst": 1000.0}
        return ["[systems.crm]", 'type = "bitrix24"'] + [f"{k} = {json.dumps(v)}" for k, v in crm.items()]

    def rest(self, method: str, params: dict[str, Any] | None = None) -> Any:
        body = self.http.post(self.hook + method + ".json", json=params or {}, timeout=30).json()
        assert "error" not in body, body
        return body["result"]

    def _ctl(self, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(method, self.ctl + path, json=body, timeout=30)
        assert r.status_code < 300, (path, r.status_code, r.text)
        return r.json()

    def stage(self, canonical: str) -> str:
        return canonical

    def deals(self) -> list[Deal]:
        out = []
        for d in self.rest("crm.deal.list", {"select": ["*", "UF_*"], "order": {"ID": "ASC"}}):
            rows = self.rest("crm.deal.productrows.get", {"id": d["ID"]})
            out.append(Deal(str(d["ID"]), d["TITLE"], d.get("UF_CRM_SHOP_ORDER") or None, d["STAGE_ID"],
                            money(d["OPPORTUNITY"]), d.get("CONTACT_ID") or None, d.get("ASSIGNED_BY_ID"),
                            tuple((r["PRODUCT_NAME"], money(r["PRICE"]), Decimal(str(r["QUANTITY"])))
                                  for r in rows if r["PRODUCT_NAME"] != "Доставка")))
        return out

    def contacts(self) -> list[Person]:
        return [Person(str(c["ID"]), c.get("NAME") or "", c.get("LAST_NAME") or "",
                       tuple(p["VALUE"] for p in c.get("PHONE") or []), tuple(e["VALUE"] for e in c.get("EMAIL") or []),
                       c.get("ASSIGNED_BY_ID"))
                for c in self.rest("crm.contact.list", {"select": ["*", "PHONE", "EMAIL"]})]

    def add_contact(self, first: str, last: str, phone: str, responsible: str) -> str:
        return str(self._ctl("POST", "/ui/contact", {"fields": {
            "NAME": first, "LAST_NAME": last, "ASSIGNED_BY_ID": int(responsible),
            "PHONE": [{"VALUE": phone, "VALUE_TYPE": "WORK"}]}})["id"])

    def set_stage(self, deal: Deal, canonical: str) -> None:
        self._ctl("PATCH", f"/ui/deal/{deal.id}", {"fields": {"STAGE_ID": canonical}})

    def set_quantity(self, deal: Deal, name: str, quantity: int) -> None:
        rows = [{k: r[k] for k in ("PRODUCT_ID", "PRODUCT_NAME", "PRICE", "QUANTITY")}
                for r in self.rest("crm.deal.productrows.get", {"id": deal.id})]
        for r in rows:
            if r["PRODUCT_NAME"] == name:
                r["QUANTITY"] = quantity
        self._ctl("PATCH", f"/ui/deal/{deal.id}", {"fields": {"PRODUCT_ROWS": rows}})

    def deal_by_phone(self, title: str, contact: str, item: tuple[str, int, int], responsible: str) -> str:
        return str(self._ctl("POST", "/ui/deal", {"fields": {
            "TITLE": title, "CONTACT_ID": int(contact), "ASSIGNED_BY_ID": int(responsible), "CATEGORY_ID": 0,
            "STAGE_ID": "NEW", "UF_CRM_FROM_SHOP": "Y", "CURRENCY_ID": "RUB",
            "PRODUCT_ROWS": [{"PRODUCT_NAME": item[0], "PRICE": item[1], "QUANTITY": item[2]}]}})["id"])

    def tasks(self) -> list[Task]:
        out = []
        for t in self.rest("tasks.task.list", {"select": ["ID", "TITLE", "RESPONSIBLE_ID", "UF_CRM_TASK"]})["tasks"]:
            deal = next((b[2:] for b in t.get("ufCrmTask") or t.get("UF_CRM_TASK") or [] if b.startswith("D_")), None)
            out.append(Task(str(t.get("id") or t.get("ID")), t.get("title") or t.get("TITLE"),
                            str(t.get("responsibleId") or t.get("RESPONSIBLE_ID")), deal))
        return out

    def notices(self) -> list[Notice]:
        return [Notice(str(n["USER_ID"]), n["MESSAGE"]) for n in self._ctl("GET", "/notifications")["notifications"]]

    def writes(self) -> int:
        n = 0
        for e in self.http.get(self.ctl + "/log", timeout=30).json()["entries"]:
            for m in [e.get("method")] + list(e.get("batch_methods") or []):
                if isinstance(m, str) and m.rsplit(".", 1)[-1] in ("add", "update", "set", "delete"):
                    n += 1
        return n


# -- amoCRM ---------------------------------------------------------------------------------------

class AmoCRM(Crm):
    type = "amocrm"
    streams = ("leads", "contacts", "companies")
    cannot = {"rows": "amoCRM keeps a lead's goods only with its catalog feature (catalogs/{id}/elements), "
                      "which the connector does not use: the order's rows are not in the lead",
              "notices": "amoCRM has no API for a notice to a user"}

    def __init__(self) -> None:
        from syncd.sandbox import amocrm
        from syncd.sandbox.amocrm.demo import seed_shop

        self.handle = amocrm.start(rate_limit=False)
        self.acc = self.handle.extra["state"]
        ids = seed_shop(self.acc)
        self.managers = {k: str(v) for k, v in ids["managers"].items()}
        self.statuses: dict[str, int] = ids["statuses"]
        self.pipeline: int = ids["pipeline"]
        self.token = str(self.handle.extra["long_lived_token"])
        self.api = self.handle.url + "/api/v4/"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        from syncd.mapping import load_mappings

        ms = load_mappings([self.mapping()])
        self._stage_names = dict(ms.values["amo_stages"].map)

    def config_lines(self) -> list[str]:
        return ["[systems.crm]", 'type = "amocrm"', f'base_url = "{self.handle.url}"', f'token = "{self.token}"',
                "rate = 500.0", "burst = 1000.0"]

    def _get(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every page of a list (ends on a short page or 204)."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            r = self.http.get(self.api + path, params={**params, "page": page, "limit": 250}, timeout=30)
            if r.status_code == 204:
                return out
            assert r.status_code == 200, (path, r.status_code, r.text)
            items = next(iter(r.json()["_embedded"].values()))
            out += items
            if len(items) < 250:
                return out
            page += 1

    @staticmethod
    def _cf(rec: dict[str, Any], code: str) -> list[Any]:
        for f in rec.get("custom_fields_values") or []:
            if f.get("field_code") == code:
                return [v.get("value") for v in f.get("values") or []]
        return []

    def stage(self, canonical: str) -> str:
        return str(self._stage_names[canonical])

    def _status_name(self, status_id: int) -> str:
        return next(n for n, i in self.statuses.items() if i == status_id)

    def deals(self) -> list[Deal]:
        out = []
        for d in self._get("leads", **{"with": "contacts", "order[id]": "asc"}):
            main = next((c for c in (d.get("_embedded") or {}).get("contacts") or [] if c.get("is_main")), None)
            number = (self._cf(d, "SHOP_ORDER") or [None])[0]
            out.append(Deal(str(d["id"]), d["name"], str(number) if number else None,
                            self._status_name(int(d["status_id"])), money(d.get("price")),
                            str(main["id"]) if main else None, str(d.get("responsible_user_id")), None))
        return out

    def contacts(self) -> list[Person]:
        return [Person(str(c["id"]), c.get("first_name") or "", c.get("last_name") or "",
                       tuple(map(str, self._cf(c, "PHONE"))), tuple(map(str, self._cf(c, "EMAIL"))),
                       str(c.get("responsible_user_id")))
                for c in self._get("contacts")]

    def _ui(self, method: str, path: str, fields: dict[str, Any], user: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"fields": fields}
        if user:
            body["user_id"] = int(user)
        r = self.http.request(method, self.handle.url + "/_sandbox/ui/" + path, json=body, timeout=30)
        assert r.status_code < 300, (path, r.status_code, r.text)
        return r.json()

    def add_contact(self, first: str, last: str, phone: str, responsible: str) -> str:
        return str(self._ui("POST", "contacts", {
            "first_name": first, "last_name": last, "responsible_user_id": int(responsible),
            "custom_fields_values": [{"field_code": "PHONE", "values": [{"value": phone, "enum_code": "WORK"}]}]},
            responsible)["id"])

    def set_stage(self, deal: Deal, canonical: str) -> None:
        self._ui("PATCH", f"leads/{deal.id}", {"status_id": self.statuses[self.stage(canonical)]})

    def deal_by_phone(self, title: str, contact: str, item: tuple[str, int, int], responsible: str) -> str:
        return str(self._ui("POST", "leads", {
            "name": title, "price": item[1] * item[2], "responsible_user_id": int(responsible), "pipeline_id": self.pipeline,
            "status_id": self.statuses[self.stage("NEW")],
            "custom_fields_values": [{"field_code": "FROM_SHOP", "values": [{"value": True}]}],
            "_embedded": {"contacts": [{"id": int(contact), "is_main": True}]}}, responsible)["id"])

    def tasks(self) -> list[Task]:
        return [Task(str(t["id"]), t.get("text") or "", str(t.get("responsible_user_id")),
                     str(t["entity_id"]) if t.get("entity_type") == "leads" else None)
                for t in self._get("tasks")]

    def writes(self) -> int:
        log = self.http.get(self.handle.url + "/_sandbox/log", timeout=30).json()["entries"]
        return sum(1 for e in log if e.get("method") in ("POST", "PATCH", "DELETE")
                   and "/api/v4/" in str(e.get("path", "")))


# -- RetailCRM ------------------------------------------------------------------------------------

class RetailCRM(Crm):
    type = "retailcrm"
    streams = ("orders", "customers")
    cannot = {"notices": "RetailCRM has no API for a notice to a user"}

    def __init__(self) -> None:
        from syncd.sandbox import retailcrm
        from syncd.sandbox.retailcrm.demo import seed_shop

        self.handle = retailcrm.start(rate_limit=False)
        self.sb = self.handle.extra["state"]
        ids = seed_shop(self.sb)
        self.managers = {k: str(v) for k, v in ids["managers"].items()}
        self.key = str(self.handle.extra["api_key"])
        self.api = self.handle.url + "/api/v5/"
        self.http = requests.Session()
        self.http.headers["X-API-KEY"] = self.key
        from syncd.mapping import load_mappings

        ms = load_mappings([self.mapping()])
        self._stage_codes = dict(ms.values["retail_stages"].map)

    def config_lines(self) -> list[str]:
        return ["[systems.crm]", 'type = "retailcrm"', f'url = "{self.handle.url}"', f'api_key = "{self.key}"',
                'site = "shop"', "rate = 500.0", "burst = 1000.0"]

    def _list(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            r = self.http.get(self.api + path, params={**params, "page": page, "limit": 100}, timeout=30)
            assert r.status_code == 200, (path, r.status_code, r.text)
            body = r.json()
            out += body[key]
            if page >= int(body["pagination"]["totalPageCount"] or 0):
                return out
            page += 1

    def stage(self, canonical: str) -> str:
        return str(self._stage_codes[canonical])

    def deals(self) -> list[Deal]:
        out = []
        for o in sorted(self._list("orders", "orders"), key=lambda o: int(o["id"])):
            cust = o.get("customer") or {}
            out.append(Deal(str(o["id"]), o.get("number") or "", str(o.get("number") or "") or None, o["status"],
                            money(o.get("totalSumm")), str(cust["id"]) if cust.get("id") else None,
                            str(o["managerId"]) if o.get("managerId") else None,
                            tuple((i.get("productName") or (i.get("offer") or {}).get("name") or "",
                                   money(i.get("initialPrice")), Decimal(str(i.get("quantity"))))
                                  for i in o.get("items") or [])))
        return out

    def contacts(self) -> list[Person]:
        return [Person(str(c["id"]), c.get("firstName") or "", c.get("lastName") or "",
                       tuple(p.get("number", "") for p in c.get("phones") or []),
                       tuple([c["email"]] if c.get("email") else []),
                       str(c["managerId"]) if c.get("managerId") else None)
                for c in self._list("customers", "customers")]

    def _ui(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.request(method, self.handle.url + "/_sandbox/ui/" + path, json=body, timeout=30)
        assert r.status_code < 300, (path, r.status_code, r.text)
        return r.json()

    def add_contact(self, first: str, last: str, phone: str, responsible: str) -> str:
        return str(self._ui("POST", "customers", {"user_id": int(responsible), "customer": {
            "firstName": first, "lastName": last, "managerId": int(responsible), "phones": [{"number": phone}]}})["id"])

    def set_stage(self, deal: Deal, canonical: str) -> None:
        self._ui("PATCH", f"orders/{deal.id}", {"order": {"status": self.stage(canonical)}})

    def set_quantity(self, deal: Deal, name: str, quantity: int) -> None:
        r = self.http.get(self.api + f"orders/{deal.id}", params={"by": "id"}, timeout=30)
        items = [{"id": i["id"], "quantity": quantity if i.get("productName") == name else i["quantity"]}
                 for i in r.json()["order"]["items"]]
        self._ui("PATCH", f"orders/{deal.id}", {"order": {"items": items}})

    def deal_by_phone(self, title: str, contact: str, item: tuple[str, int, int], responsible: str) -> str:
        return str(self._ui("POST", "orders", {"user_id": int(responsible), "order": {
            "orderMethod": "phone", "managerId": int(responsible), "customer": {"id": int(contact)},
            "status": self.stage("NEW"), "customFields": {"from_shop": True},
            "items": [{"productName": item[0], "initialPrice": item[1], "quantity": item[2]}]}})["id"])

    def tasks(self) -> list[Task]:
        return [Task(str(t["id"]), t.get("text") or "", str(t.get("performerId") or t.get("performer")),
                     str((t.get("order") or {}).get("id")) if (t.get("order") or {}).get("id") else None)
                for t in self._list("tasks", "tasks")]

    def writes(self) -> int:
        log = self.http.get(self.handle.url + "/_sandbox/log", timeout=30).json()["entries"]
        return sum(1 for e in log if e.get("method") == "POST" and "/api/v5/" in str(e.get("path", "")))


def start(crm_type: str) -> Crm:
    return {"bitrix24": Bitrix24, "amocrm": AmoCRM, "retailcrm": RetailCRM}[crm_type]()
