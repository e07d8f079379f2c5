"""Helpers for the amoCRM connector tests: the sandbox driven through its control API."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import requests

from connectors.amocrm import AmoCRMConnector, AmoCRMSettings
from syncd.connector import WriteOp
from syncd.sandbox.amocrm import Account

_seq = itertools.count(1)

# what the integrator sets up once in the account (Settings -> fields): syncd's key on every kind,
# the shop's order number and the "from shop" flag on leads (mappings/amocrm.toml)
SETUP_FIELDS = [
    *({"entity_type": et, "name": "Ключ syncd", "type": "text", "code": "SYNCD_KEY"}
      for et in ("leads", "contacts", "companies")),
    {"entity_type": "leads", "name": "Заказ магазина", "type": "text", "code": "SHOP_ORDER"},
    {"entity_type": "leads", "name": "Из магазина", "type": "checkbox", "code": "FROM_SHOP"},
]


def ctl(h: Any, method: str, path: str, body: Any = None) -> Any:
    r = requests.request(method, f"{h.url}/_sandbox/{path}", json=body, timeout=10)
    assert r.status_code < 300, (r.status_code, r.text)
    return r.json() if r.content else None


def api(h: Any, method: str, path: str, **kw: Any) -> Any:
    """A direct API call as a third party makes it (to check what the account holds)."""
    r = requests.request(method, f"{h.url}/api/v4/{path}", timeout=10,
                         headers={"Authorization": f"Bearer {h.extra['long_lived_token']}"}, **kw)
    assert r.status_code < 300, (r.status_code, r.text)
    return r.json() if r.content else None


def acc_of(h: Any) -> Account:
    acc: Account = h.extra["state"]
    return acc


def prepare(h: Any) -> Any:
    acc_of(h).reset()
    ctl(h, "PATCH", "limits", {"enabled": False})
    for f in SETUP_FIELDS:
        ctl(h, "POST", "custom_fields", f)
    return h


def connector(h: Any, name: str = "crm", ctx: Any = None, **kw: Any) -> AmoCRMConnector:
    kw.setdefault("token", h.extra["long_lived_token"])
    kw.setdefault("rate", 500.0)          # the sandbox's limit is off unless a test turns it on
    kw.setdefault("burst", 500.0)
    return AmoCRMConnector(name, AmoCRMSettings(base_url=h.url, **kw), ctx)


def all_of(h: Any, etype: str, **params: Any) -> list[dict[str, Any]]:
    out, page = [], 1
    while True:
        data = api(h, "GET", etype, params={"limit": 250, "page": page, **params})
        rows = (data or {}).get("_embedded", {}).get(etype, [])
        out += rows
        if len(rows) < 250:
            return out
        page += 1


class Ctx:
    """A ConnectorContext: state in a dict with compare-and-set, triggers recorded."""

    def __init__(self, system: str = "crm", kv: dict[str, Any] | None = None) -> None:
        self.system = system
        self.kv: dict[str, Any] = {} if kv is None else kv
        self.triggers: list[str] = []
        self.swaps = 0
        self.lock = threading.Lock()

    def state_get(self, key: str, default: Any = None) -> Any:
        return self.kv.get(key, default)

    def state_set(self, key: str, value: Any) -> None:
        self.kv[key] = value

    def state_swap(self, key: str, expected: Any, value: Any) -> bool:
        with self.lock:
            if self.kv.get(key) != expected:
                return False
            self.swaps += 1
            if value is None:
                self.kv.pop(key, None)
            else:
                self.kv[key] = value
            return True

    def trigger(self, stream: str) -> None:
        self.triggers.append(stream)


def op(kind: str, eid: str, fields: dict[str, Any], ext: str | None = None, system: str = "crm",
       **kw: Any) -> WriteOp:
    return WriteOp(op_id=f"op-{eid}-{next(_seq)}", system=system, kind=kind,
                   op="create" if ext is None else "update", entity="x", entity_id=eid, external_id=ext,
                   fields=fields, external_key=f"syncd-{eid}", **kw)
