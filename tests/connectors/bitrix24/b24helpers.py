"""Helpers for the Bitrix24 connector tests: portals driven through the sandbox control API."""

from __future__ import annotations

import itertools
import time
from typing import Any

import requests

from connectors.bitrix24 import Bitrix24Connector, Bitrix24Settings
from syncd.connector import WriteOp

_seq = itertools.count(1)


class Portal:
    """A portal on the sandbox, driven through the control API only (what a person does in the UI)."""

    def __init__(self, base: str, info: dict[str, Any]) -> None:
        self.base, self.info = base, info
        self.name = info["portal"]
        self.ctl = f"{base}/_sandbox/{self.name}"
        self.webhook_url = info["webhook_url"]
        self.http = requests.Session()

    def _j(self, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(method, self.ctl + path, json=body, timeout=30)
        assert r.status_code < 300, (r.status_code, r.text)
        return r.json()

    def faults(self, **kw: Any) -> Any:
        return self._j("PATCH", "/faults", kw)

    def limits(self, **kw: Any) -> Any:
        return self._j("PATCH", "/limits", kw)

    def log(self, since: float = 0.0) -> Any:
        return self.http.get(f"{self.ctl}/log", params={"since": since}, timeout=30).json()

    def clear_log(self) -> None:
        self._j("DELETE", "/log")

    def ui_add(self, entity: str, fields: dict[str, Any]) -> int:
        return int(self._j("POST", f"/ui/{entity}", {"fields": fields})["id"])

    def ui_edit(self, entity: str, rid: Any, fields: dict[str, Any]) -> Any:
        return self._j("PATCH", f"/ui/{entity}/{rid}", {"fields": fields})

    def rest(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """A direct REST call as a third party would make it (for checking what the portal holds)."""
        r = self.http.post(self.webhook_url + method + ".json", json=params or {}, timeout=30)
        return r.json()

    def connector(self, name: str = "crm", **kw: Any) -> Bitrix24Connector:
        ctx = kw.pop("ctx", None)
        kw.setdefault("rate", 200.0)       # test portals run with the limit off unless a test says so
        kw.setdefault("burst", 1000.0)
        return Bitrix24Connector(name, Bitrix24Settings(webhook_url=self.webhook_url, **kw), ctx)


class State:
    """A minimal ConnectorContext: state in a dict, triggers recorded."""

    def __init__(self, system: str = "crm") -> None:
        self.system = system
        self.kv: dict[str, Any] = {}
        self.triggers: list[tuple[float, str]] = []

    def state_get(self, key: str, default: Any = None) -> Any:
        return self.kv.get(key, default)

    def state_set(self, key: str, value: Any) -> None:
        self.kv[key] = value

    def ingest(self, batch: Any) -> Any:
        raise NotImplementedError

    def trigger(self, stream: str) -> None:
        self.triggers.append((time.time(), stream))


def new_portal(sandbox: Any, **opts: Any) -> Portal:
    body = {"name": f"t{next(_seq)}-{int(time.time() * 1000) % 100000}", "rate_limit": False, **opts}
    r = requests.post(f"{sandbox.url}/_sandbox/portals", json=body, timeout=30)
    assert r.status_code == 201, r.text
    return Portal(sandbox.url, r.json())


def op(kind: str, eid: str, fields: dict[str, Any], ext: str | None = None, system: str = "crm") -> WriteOp:
    return WriteOp(op_id=f"op-{eid}-{next(_seq)}", system=system, kind=kind,
                   op="create" if ext is None else "update", entity="x", entity_id=eid, external_id=ext,
                   fields=fields, external_key=f"syncd-{eid}")
