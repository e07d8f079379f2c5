"""Helpers: a sandbox account (control API, plain API calls) and connectors and write ops for it."""

from __future__ import annotations

import itertools
import json
from typing import Any

import requests

from connectors.retailcrm import RetailCRMConnector, RetailCRMSettings
from syncd.connector import WriteOp

_ops = itertools.count(1)


class Account:
    def __init__(self, handle: Any) -> None:
        self.h = handle
        self.url = handle.url
        self.key = handle.extra["api_key"]
        self.sb = handle.extra["state"]

    def ctl(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = requests.request(method, f"{self.url}/_sandbox{path}", json=body, timeout=10)
        r.raise_for_status()
        return r.json()

    def api(self, method: str, path: str, **kw: Any) -> Any:
        r = requests.request(method, f"{self.url}/api/v5/{path}", headers={"X-API-KEY": self.key}, timeout=10, **kw)
        return r.json()

    def connector(self, name: str = "crm", **settings: Any) -> RetailCRMConnector:
        conn = RetailCRMConnector(name, RetailCRMSettings(url=self.url, api_key=self.key, **settings))
        conn.write_retries = 3
        return conn

    def ui_order(self, order: dict[str, Any], user_id: int = 2) -> int:
        return int(self.ctl("POST", "/ui/orders", {"order": order, "user_id": user_id})["id"])

    def ui_edit(self, what: str, rid: int | str, data: dict[str, Any], user_id: int = 2) -> None:
        key = {"orders": "order", "customers": "customer", "customers-corporate": "customerCorporate"}[what]
        self.ctl("PATCH", f"/ui/{what}/{rid}", {key: data, "user_id": user_id})

    def faults(self, **kw: Any) -> None:
        self.ctl("PATCH", "/faults", kw)

    def log(self) -> list[dict[str, Any]]:
        return list(self.ctl("GET", "/log")["entries"])

    def clear_log(self) -> None:
        self.ctl("DELETE", "/log")

    def orders(self) -> list[dict[str, Any]]:
        return list(self.sb.orders.values())


def op(kind: str, fields: dict[str, Any], *, key: str = "syncd-e1", origin: tuple[str, str] | None = None,
       ext: str | None = None, unsent: bool = False, entity: str = "order", full: dict[str, Any] | None = None
       ) -> WriteOp:
    return WriteOp(op_id=f"op{next(_ops)}", system="crm", kind=kind, op="create" if ext is None else "update",
                   entity=entity, entity_id=key.removeprefix("syncd-"), external_id=ext, fields=fields,
                   external_key=key, origin=origin, unsent=unsent, full=full or fields)


def form(entry: dict[str, Any]) -> Any:
    return json.loads(entry) if isinstance(entry, str) else entry
