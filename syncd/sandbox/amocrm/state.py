"""One amoCRM account: users, pipelines, custom fields, records and their links, the credentials, and
the sandbox's knobs (clock, payment, faults, rate limit) with the request log.

Everything is guarded by `Account.lock` (an RLock): the ASGI app, the webhook thread and tests that
drive the account in-process all touch it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

WON, LOST = 142, 143
ENTITY_TYPES = ("leads", "contacts", "companies")
SINGULAR = {"leads": "lead", "contacts": "contact", "companies": "company"}
PHONE_ENUMS = ("WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER")
EMAIL_ENUMS = ("WORK", "PRIV", "OTHER")
# Separate id ranges per table, as large as real ones, so that an id of the wrong kind is never valid.
_FIRST_IDS = {"user": 5000001, "pipeline": 7000001, "status": 40000001, "field": 600001, "enum": 900001,
              "leads": 20000001, "contacts": 30000001, "companies": 35000001, "tag": 100001, "note": 80000001,
              "task": 90000001, "hook": 1}
_TITLES = {400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
           404: "Not Found"}


class AmoError(Exception):
    """An answer other than success: its HTTP status and problem+json body (None: an empty body)."""

    def __init__(self, status: int, body: dict[str, Any] | None) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


def problem(status: int, detail: str, **extra: Any) -> AmoError:
    return AmoError(status, {"title": _TITLES.get(status, "Error"), "type": f"https://httpstatus.es/{status}",
                             "status": status, "detail": detail, **extra})


def invalid(errors: dict[str, list[dict[str, str]]]) -> AmoError:
    """400 with ``validation-errors``: one entry per refused item, keyed by its request_id."""
    return problem(400, "Request validation failed", **{"validation-errors": [
        {"request_id": rid, "errors": errs} for rid, errs in errors.items()]})


def issue(code: str, path: str, detail: str) -> dict[str, str]:
    return {"code": code, "path": path, "detail": detail}


def self_link(href: str) -> dict[str, Any]:
    return {"self": {"href": href}}


@dataclass
class User:
    id: int
    name: str
    email: str
    is_admin: bool = False
    is_active: bool = True
    lang: str = "ru"

    def view(self, base: str) -> dict[str, Any]:
        rights = {"leads": {"view": "A", "edit": "A", "add": "A", "delete": "A", "export": "A"},
                  "mail_access": True, "catalog_access": True, "status_rights": [], "is_admin": self.is_admin,
                  "is_free": False, "is_active": self.is_active, "group_id": None, "role_id": None}
        return {"id": self.id, "name": self.name, "email": self.email, "lang": self.lang, "rights": rights,
                "_links": self_link(f"{base}/users/{self.id}")}


@dataclass
class Status:
    id: int
    name: str
    sort: int
    pipeline_id: int
    color: str = "#99ccff"
    type: int = 0                      # 1: "Неразобранное" (unsorted), 0: every other status

    def view(self, base: str, account_id: int) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "sort": self.sort, "is_editable": self.id not in (WON, LOST)
                and self.type == 0, "pipeline_id": self.pipeline_id, "color": self.color, "type": self.type,
                "account_id": account_id,
                "_links": self_link(f"{base}/leads/pipelines/{self.pipeline_id}/statuses/{self.id}")}


@dataclass
class Pipeline:
    id: int
    name: str
    sort: int
    is_main: bool
    statuses: list[Status] = field(default_factory=list)

    def status(self, status_id: Any) -> Status | None:
        return next((s for s in self.statuses if s.id == status_id), None)

    def first_status(self) -> Status:
        """Where a lead lands when no status is given: the first open status after "unsorted"."""
        return next(s for s in sorted(self.statuses, key=lambda s: s.sort) if s.type == 0)

    def view(self, base: str, account_id: int) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "sort": self.sort, "is_main": self.is_main,
                "is_unsorted_on": True, "is_archive": False, "account_id": account_id,
                "_links": self_link(f"{base}/leads/pipelines/{self.id}"),
                "_embedded": {"statuses": [s.view(base, account_id) for s in self.statuses]}}


@dataclass
class FieldEnum:
    id: int
    value: str
    sort: int


@dataclass
class CustomField:
    id: int
    entity_type: str
    name: str
    type: str
    code: str | None = None
    sort: int = 500
    enums: list[FieldEnum] | None = None
    is_predefined: bool = False

    def enum(self, enum_id: Any = None, value: Any = None) -> FieldEnum | None:
        """The option with this id, or with this value (case-insensitive: WORK, Сайт)."""
        for e in self.enums or []:
            if (enum_id is not None and e.id == enum_id) or (
                    enum_id is None and isinstance(value, str) and e.value.lower() == value.lower()):
                return e
        return None

    def view(self, base: str, account_id: int) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "type": self.type, "account_id": account_id,
                "code": self.code, "sort": self.sort, "is_api_only": False,
                "enums": None if self.enums is None else [asdict(e) for e in self.enums],
                "group_id": None, "required_statuses": [],
                "is_deletable": not self.is_predefined, "is_predefined": self.is_predefined,
                "entity_type": self.entity_type, "remind": None, "settings": None,
                "_links": self_link(f"{base}/{self.entity_type}/custom_fields/{self.id}")}


@dataclass
class Integration:
    client_id: str
    client_secret: str
    redirect_uri: str
    name: str


@dataclass
class Token:
    value: str
    client_id: str
    user_id: int
    expires_at: float
    long_lived: bool = False


@dataclass
class Grant:
    """An authorization code or a refresh token: each works once."""

    kind: str                          # "code" | "refresh"
    client_id: str
    user_id: int
    expires_at: float
    used: bool = False


@dataclass
class Hook:
    id: int
    destination: str
    settings: list[str]
    created_at: int
    created_by: int
    sort: int = 1

    def view(self, account_id: int) -> dict[str, Any]:
        return {"id": self.id, "destination": self.destination, "created_at": self.created_at,
                "updated_at": self.created_at, "account_id": account_id, "created_by": self.created_by,
                "sort": self.sort, "is_disabled": False, "settings": list(self.settings)}


@dataclass
class Faults:
    """The next `count` API requests (matching `paths` prefixes and `methods`, when given) fail:
    mode "error" answers `status` instead of doing the call, "drop" closes the connection without doing
    it, "lost" does the call and then closes the connection (the answer is lost)."""

    count: int = 0
    status: int = 500
    mode: str = "error"
    paths: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)


@dataclass
class Limits:
    """A token bucket per integration: `rate` requests/s, bursts up to `burst`; over it -> 429. After
    `block_after` refusals in a row (0: never) the integration is locked out for `block_seconds` (403)."""

    enabled: bool = True
    rate: float = 7.0
    burst: float = 7.0
    block_after: int = 0
    block_seconds: float = 60.0


@dataclass
class _Bucket:
    level: float
    at: float
    refused: int = 0
    locked_until: float = 0.0


class Account:
    """The account and the sandbox's knobs; `reset()` restores the seed but keeps the credentials."""

    def __init__(self, subdomain: str = "example", *, rate_limit: bool = True, seed: bool = True) -> None:
        self.lock = threading.RLock()
        self.subdomain, self.id, self.name = subdomain, 29000001, "Пример"
        self.base_url = f"https://{subdomain}.amocrm.ru"    # set to the served address by start()
        self.secret = secrets.token_bytes(32)                 # signs the JWT access tokens
        self.integrations: dict[str, Integration] = {}
        self.tokens: dict[str, Token] = {}
        self.grants: dict[str, Grant] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=20000)
        self._rate_limit, self._seed = rate_limit, seed
        self.credentials: dict[str, Any] = {}     # the default integration, filled by start()/create_app()
        self.webhooks: Any = None                 # hooks.Dispatcher, attached by create_app()
        self.reset()

    def reset(self) -> None:
        """Data, clock, faults, limits and the log as at start; credentials and tokens are kept."""
        with self.lock:
            self.offset, self.paid = 0.0, True
            self.faults, self.limits = Faults(), Limits(enabled=self._rate_limit)
            self.buckets: dict[str, _Bucket] = {}
            self._ids = dict(_FIRST_IDS)
            self.users: dict[int, User] = {}
            self.pipelines: dict[int, Pipeline] = {}
            self.fields: dict[int, CustomField] = {}
            self.records: dict[str, dict[int, dict[str, Any]]] = {t: {} for t in ENTITY_TYPES}
            self.tags: dict[str, dict[str, int]] = {t: {} for t in ENTITY_TYPES}
            # (type, id) -> {(to_type, to_id): metadata}; kept in both directions
            self.links: dict[tuple[str, int], dict[tuple[str, int], dict[str, Any]]] = {}
            self.notes: dict[int, dict[str, Any]] = {}
            self.tasks: dict[int, dict[str, Any]] = {}
            self.hooks: dict[int, Hook] = {}
            self.log.clear()
            if self._seed:
                seed(self)

    # -- clock, ids ---------------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.offset

    def ts(self) -> int:
        return int(self.now())

    def next_id(self, table: str) -> int:
        with self.lock:
            self._ids[table] += 1
            return self._ids[table] - 1

    # -- settings an admin makes in the UI ----------------------------------------------------------
    def add_user(self, name: str, email: str, *, is_admin: bool = False) -> User:
        with self.lock:
            u = User(self.next_id("user"), name, email, is_admin=is_admin)
            self.users[u.id] = u
            return u

    def add_pipeline(self, name: str, statuses: list[Any], *, is_main: bool = False) -> Pipeline:
        """A pipeline with "Неразобранное", the given statuses (names or {name, color}), then 142 and 143."""
        with self.lock:
            p = Pipeline(self.next_id("pipeline"), name, 1 + len(self.pipelines),
                         is_main or not self.pipelines)
            if p.is_main:
                for other in self.pipelines.values():
                    other.is_main = False
            p.statuses.append(Status(self.next_id("status"), "Неразобранное", 10, p.id, "#c1c1c1", 1))
            for i, s in enumerate(statuses):
                s = {"name": s} if isinstance(s, str) else dict(s)
                p.statuses.append(Status(self.next_id("status"), str(s["name"]), 20 + 10 * i, p.id,
                                         str(s.get("color", "#99ccff"))))
            p.statuses.append(Status(WON, "Успешно реализовано", 10000, p.id, "#CCFF66"))
            p.statuses.append(Status(LOST, "Закрыто и не реализовано", 11000, p.id, "#D5D8DB"))
            self.pipelines[p.id] = p
            return p

    def main_pipeline(self) -> Pipeline:
        return next(p for p in self.pipelines.values() if p.is_main)

    def add_field(self, entity_type: str, name: str, type_: str, *, code: str | None = None,
                  enums: list[str] | tuple[str, ...] | None = None, predefined: bool = False) -> CustomField:
        if entity_type not in ENTITY_TYPES:
            raise ValueError(f"entity_type must be one of {ENTITY_TYPES}")
        with self.lock:
            f = CustomField(self.next_id("field"), entity_type, name, type_, code,
                            sort=500 + len(self.fields), is_predefined=predefined)
            if enums is not None:
                f.enums = [FieldEnum(self.next_id("enum"), str(v), 500 + 2 * i) for i, v in enumerate(enums)]
            self.fields[f.id] = f
            return f

    def field(self, entity_type: str, field_id: Any = None, code: Any = None) -> CustomField | None:
        for f in self.fields.values():
            if f.entity_type == entity_type and ((field_id is not None and f.id == field_id) or (
                    field_id is None and isinstance(code, str) and (f.code or "").upper() == code.upper())):
                return f
        return None

    def tag_id(self, entity_type: str, name: str) -> int:
        with self.lock:
            tags = self.tags[entity_type]
            if name not in tags:
                tags[name] = self.next_id("tag")
            return tags[name]

    # -- links between records ----------------------------------------------------------------------
    def link(self, a: tuple[str, int], b: tuple[str, int], metadata: dict[str, Any] | None = None) -> None:
        with self.lock:
            self.links.setdefault(a, {})[b] = dict(metadata or {})
            self.links.setdefault(b, {})[a] = dict(metadata or {})

    def unlink(self, a: tuple[str, int], b: tuple[str, int]) -> None:
        with self.lock:
            self.links.get(a, {}).pop(b, None)
            self.links.get(b, {}).pop(a, None)

    def linked(self, a: tuple[str, int], to_type: str) -> list[tuple[int, dict[str, Any]]]:
        return [(i, m) for (t, i), m in self.links.get(a, {}).items() if t == to_type]

    # -- limits, faults, log ------------------------------------------------------------------------
    def admit(self, key: str) -> int:
        """0 when the request may go; else the status that refuses it (429 over the rate, 403 locked)."""
        lim, t = self.limits, time.monotonic()   # real time: the sandbox clock may jump
        if not lim.enabled:
            return 0
        with self.lock:
            b = self.buckets.setdefault(key, _Bucket(lim.burst, t))
            if b.locked_until > t:
                return 403
            b.level, b.at = min(lim.burst, b.level + (t - b.at) * lim.rate), t
            if b.level >= 1:
                b.level -= 1
                b.refused = 0
                return 0
            b.refused += 1
            if lim.block_after and b.refused >= lim.block_after:
                b.locked_until = t + lim.block_seconds
            return 429

    def take_fault(self, method: str, path: str) -> tuple[str, int] | None:
        with self.lock:
            f = self.faults
            if f.count <= 0 or (f.paths and not any(path.startswith(p) for p in f.paths)) or (
                    f.methods and method.upper() not in [m.upper() for m in f.methods]):
                return None
            f.count -= 1
            return f.mode, f.status

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.log.append(entry)

    def log_view(self, since: float = 0.0, kind: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.log if e["ts"] >= since and (kind is None or e["kind"] == kind)]


def seed(acc: Account) -> None:
    """The default account: an admin and two managers, "Воронка", lead fields, contact/company fields."""
    acc.add_user("Администратор", "admin@example.com", is_admin=True)
    acc.add_user("Анна Смирнова", "anna@example.com")
    acc.add_user("Борис Петров", "boris@example.com")
    acc.add_pipeline("Воронка", ["Первичный контакт", "Переговоры", "Принимают решение"], is_main=True)
    acc.add_field("leads", "Номер заказа", "text", code="ORDER_NO")
    acc.add_field("leads", "Источник", "select", enums=["Сайт", "Телефон", "Магазин"])
    acc.add_field("contacts", "Должность", "text", code="POSITION", predefined=True)
    for et in ("contacts", "companies"):
        acc.add_field(et, "Телефон", "multitext", code="PHONE", enums=PHONE_ENUMS, predefined=True)
        acc.add_field(et, "Email", "multitext", code="EMAIL", enums=EMAIL_ENUMS, predefined=True)
    acc.add_field("companies", "Web", "url", code="WEB", predefined=True)
    acc.add_field("companies", "Адрес", "textarea", code="ADDRESS", predefined=True)
