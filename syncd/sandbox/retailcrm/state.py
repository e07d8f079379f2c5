"""Sandbox state: reference books, users, API keys, entities and their history, the token bucket,
fault knobs, the clock and the request log. One `Sandbox` is one RetailCRM account."""

from __future__ import annotations

import collections
import copy
import datetime as dt
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

# Accounts on *.retailcrm.ru print local (Moscow) time without an offset: "2021-02-25 17:05:06".
TZ = dt.timezone(dt.timedelta(hours=3), "MSK")
FMT = "%Y-%m-%d %H:%M:%S"

# Reference books served under /reference/<kind>; the value is the key of the answer.
REF_KINDS = {"sites": "sites", "statuses": "statuses", "status-groups": "statusGroups",
             "order-methods": "orderMethods", "order-types": "orderTypes", "payment-types": "paymentTypes",
             "payment-statuses": "paymentStatuses", "delivery-types": "deliveryTypes"}
ENTITIES = ("order", "customer", "customer_corporate")


class ApiError(Exception):
    """An error answer in RetailCRM's envelope: {"success": false, "errorMsg", "errors"?}."""

    def __init__(self, status: int, msg: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(msg)
        self.status, self.msg, self.errors = status, msg, errors or {}

    def body(self) -> dict[str, Any]:
        b: dict[str, Any] = {"success": False, "errorMsg": self.msg}
        if self.errors:
            b["errors"] = self.errors
        return b


@dataclass
class Actor:
    """Who writes: the API (with the key used, so history can say `apiKey.current`) or a manager in the UI."""

    source: str                      # "api" | "user"
    api_key: str | None = None
    user_id: int | None = None


@dataclass
class ApiKey:
    key: str
    sites: list[str] | None = None   # None: every site ("siteAccess": "access_full")


@dataclass
class Limits:
    enabled: bool = True
    rate: float = 10.0               # tokens added per second (requests/s per key)
    burst: float = 10.0              # bucket size
    status: int = 503                # RetailCRM answers 503; some stacks 429


@dataclass
class Faults:
    fail_next: int = 0               # answer an error instead of doing the call
    fail_status: int = 500
    html: bool = False               # errors as an nginx HTML page (as a proxy answers) instead of JSON
    drop_next: int = 0               # close the connection, nothing done
    lose_next: int = 0               # do the call, then close the connection (the answer is lost)
    latency: float = 0.0             # seconds to wait before answering
    path: str = ""                   # only API paths starting with this ("/api/v5/orders/create"); "" = all


def _status(code: str, name: str, group: str, ordering: int) -> dict[str, Any]:
    return {"name": name, "code": code, "active": True, "ordering": ordering, "group": group}


def default_refs() -> dict[str, dict[str, dict[str, Any]]]:
    """A small shop: one site, the usual status groups, two payment types per delivery type."""
    groups = [("new", "Новый", False), ("approval", "Согласование", True),
              ("assembling", "Комплектация", True), ("delivery", "Доставка", True),
              ("complete", "Выполнен", False), ("cancel", "Отменен", False)]
    statuses = [("new", "Новый", "new"), ("client-confirmed", "Согласовано с клиентом", "approval"),
                ("assembling", "Комплектуется", "assembling"), ("delivering", "Доставляется", "delivery"),
                ("complete", "Выполнен", "complete"), ("cancel-other", "Отменен", "cancel")]
    pay = [("cash", "Наличные"), ("bank-card", "Банковская карта"), ("bank-transfer", "Безналичный расчет")]
    return {
        "sites": {"shop": {"id": 1, "name": "Интернет-магазин", "url": "https://shop.example", "code": "shop",
                           "defaultForCrm": True, "countryIso": "RU", "currency": "RUB", "_suffix": "A"}},
        "status-groups": {c: {"name": n, "code": c, "active": True, "ordering": 10 * (i + 1), "process": p}
                          for i, (c, n, p) in enumerate(groups)},
        "statuses": {c: _status(c, n, g, 10 * (i + 1)) for i, (c, n, g) in enumerate(statuses)},
        "order-methods": {c: {"name": n, "code": c, "active": True, "defaultForCrm": c == "phone",
                              "defaultForApi": c == "shopping-cart"}
                          for c, n in [("shopping-cart", "Через корзину"), ("phone", "По телефону"),
                                       ("one-click", "В один клик")]},
        "order-types": {c: {"name": n, "code": c, "active": True, "ordering": 10 * (i + 1),
                            "defaultForCrm": i == 0, "defaultForApi": i == 0}
                        for i, (c, n) in enumerate([("eshop-individual", "Физическое лицо"),
                                                    ("eshop-legal", "Юридическое лицо")])},
        "payment-types": {c: {"name": n, "code": c, "active": True, "defaultForCrm": False,
                              "defaultForApi": False,
                              "deliveryTypes": ["courier", "self-delivery", "russian-post"],
                              "paymentStatuses": ["not-paid", "paid", "invoice"]} for c, n in pay},
        "payment-statuses": {c: {"name": n, "code": c, "active": True, "defaultForCrm": c == "not-paid",
                                 "defaultForApi": c == "not-paid", "paymentComplete": c == "paid",
                                 "ordering": 10 * (i + 1), "paymentTypes": [p for p, _ in pay]}
                             for i, (c, n) in enumerate([("not-paid", "Не оплачен"), ("paid", "Оплачен"),
                                                         ("invoice", "Выставлен счет")])},
        "delivery-types": {c: {"name": n, "code": c, "active": True, "defaultCost": cost, "defaultNetCost": 0,
                               "paymentTypes": [p for p, _ in pay], "deliveryServices": [],
                               "defaultForCrm": False}
                           for c, n, cost in [("courier", "Доставка курьером", 300),
                                              ("self-delivery", "Самовывоз", 0),
                                              ("russian-post", "Почта России", 350)]},
    }


def default_users(created: str) -> dict[int, dict[str, Any]]:
    rows = [(1, "Админ", "Системный", "admin@shop.example", True, False),
            (2, "Ирина", "Петрова", "irina@shop.example", False, True),
            (3, "Олег", "Смирнов", "oleg@shop.example", False, True)]
    return {i: {"id": i, "createdAt": created, "active": True, "email": e, "firstName": f, "lastName": l,
                "status": "free", "online": True, "isAdmin": adm, "isManager": man,
                "groups": [{"id": 1, "name": "Менеджеры", "code": "manager"}] if man else []}
            for i, f, l, e, adm, man in rows}


class Sandbox:
    """One account. Every mutation happens under `lock` (the server thread and a test may both write)."""

    def __init__(self, *, rate_limit: bool = True, api_key: str | None = None,
                 limit_status: int = 503) -> None:
        self.lock = threading.RLock()
        self.limits = Limits(enabled=rate_limit, status=limit_status)
        self.faults = Faults()
        self.keys: dict[str, ApiKey] = {}
        self.api_key = self.add_key(api_key).key
        self.clock_offset = 0.0
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=20000)
        self._buckets: dict[str, tuple[float, float]] = {}
        self.reset(references=True)

    # ---- configuration ------------------------------------------------------------------------
    def add_key(self, key: str | None = None, sites: list[str] | None = None) -> ApiKey:
        with self.lock:
            k = ApiKey(key or secrets.token_hex(16), list(sites) if sites is not None else None)
            self.keys[k.key] = k
            return k

    def reset(self, *, references: bool = False) -> None:
        """Wipe entities, history, the log and faults; `references` also restores the default books."""
        with self.lock:
            if references:
                self.refs = default_refs()
                self.users = default_users(self.now_s())
                self.custom_fields: dict[str, dict[str, dict[str, Any]]] = {e: {} for e in ENTITIES}
            self.orders: dict[int, dict[str, Any]] = {}
            self.customers: dict[int, dict[str, Any]] = {}
            self.corporate: dict[int, dict[str, Any]] = {}
            self.tasks: dict[int, dict[str, Any]] = {}
            self.payments: dict[int, int] = {}                  # payment id -> order id
            self.calls: dict[int, dict[str, Any]] = {}          # telephony/calls/upload, by sandbox id
            self.modules: dict[str, dict[str, Any]] = {}        # integration-modules, by code
            self.history: dict[str, list[dict[str, Any]]] = {e: [] for e in ENTITIES}
            self._seq: collections.Counter[str] = collections.Counter()
            self.faults = Faults()
            self.log.clear()
            self._buckets.clear()

    def next_id(self, kind: str) -> int:
        with self.lock:
            self._seq[kind] += 1
            return self._seq[kind]

    def ref(self, kind: str) -> dict[str, dict[str, Any]]:
        return self.refs[kind]

    def render_ref(self, kind: str, codes: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """A reference book as the API prints it (internal `_` keys dropped; groups list their statuses)."""
        out = {}
        for code, row in self.refs[kind].items():
            if codes is not None and code not in codes:
                continue
            r = {k: copy.deepcopy(v) for k, v in row.items() if not k.startswith("_")}
            if kind == "status-groups":
                r["statuses"] = [s for s, st in self.refs["statuses"].items() if st["group"] == code]
            out[code] = r
        return out

    def default_code(self, kind: str, flag: str) -> str | None:
        return next((c for c, r in self.refs[kind].items() if r.get(flag)), next(iter(self.refs[kind]), None))

    def site_codes(self, key: ApiKey) -> list[str]:
        return [s for s in self.refs["sites"] if key.sites is None or s in key.sites]

    # ---- clock ----------------------------------------------------------------------------------
    def now(self) -> dt.datetime:
        """The account's time (a test may move it); the rate limit keeps real time."""
        return dt.datetime.fromtimestamp(time.time() + self.clock_offset, TZ).replace(microsecond=0)

    def now_s(self) -> str:
        return self.now().strftime(FMT)

    def set_clock(self, *, advance: float | None = None, now: str | None = None) -> dict[str, Any]:
        with self.lock:
            if advance is not None:
                self.clock_offset += float(advance)
            if now is not None:
                target = dt.datetime.strptime(now, FMT).replace(tzinfo=TZ)
                self.clock_offset = target.timestamp() - time.time()
            return {"now": self.now_s(), "offset": round(self.clock_offset, 3)}

    # ---- rate limit and request log --------------------------------------------------------------
    def admit(self, key: str) -> bool:
        """Token bucket per API key: True if the request may pass (it then takes one token)."""
        with self.lock:
            lim, t = self.limits, time.monotonic()
            tokens, ts = self._buckets.get(key, (lim.burst, t))
            tokens = min(lim.burst, tokens + (t - ts) * lim.rate)
            if lim.enabled and tokens < 1:
                self._buckets[key] = (tokens, t)
                return False
            self._buckets[key] = (max(0.0, tokens - 1), t)
            return True

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.log.append(entry)
