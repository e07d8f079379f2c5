"""The sandbox shop's state: users, products, the order book, exchange sessions, faults, request log.

Everything is guarded by one re-entrant lock; the ASGI app and the control API call these methods.
Orders carry a change sequence number (`seq`): `mode=query` exports the orders whose `seq` is above
the committed export point and not last changed by an exchange import (Bitrix's ``UPDATED_1C=Y``);
`mode=success` commits the point that query reached.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import random
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from lxml import etree

TZ = dt.timezone(dt.timedelta(hours=3), "MSK")
TWO = Decimal("0.01")

# Bitrix status ids -> names (N, P, F are Bitrix's defaults; the rest are typical custom statuses)
STATUSES: dict[str, str] = {
    "N": "Принят, ожидается оплата",
    "P": "Оплачен, формируется к отправке",
    "G": "Готов к отгрузке",
    "S": "Отгружен",
    "D": "Доставлен",
    "F": "Выполнен",
    "C": "Отменен",
}
PAY_SYSTEMS = {"1": "Наличные курьеру", "2": "Банковская карта", "3": "Счет"}
DELIVERIES = {"1": "Курьер по Москве", "2": "Самовывоз", "3": "СДЭК до пункта выдачи"}
DELIVERY_ID = "ORDER_DELIVERY"


def now() -> dt.datetime:
    """Real shop time (a ShopState's own clock is `ShopState.now()`, which a test may move)."""
    return dt.datetime.now(TZ).replace(microsecond=0)


def parse_when(value: Any, what: str = "date") -> dt.datetime:
    """A date or date-time from the control API: ISO text (``2024-02-01``, ``2024-02-01T10:30:00``,
    with or without an offset; without one it is shop time, MSK) or a datetime. Bad text is a 400."""
    if isinstance(value, dt.datetime):
        d = value
    elif isinstance(value, dt.date):
        d = dt.datetime(value.year, value.month, value.day)
    else:
        try:
            d = dt.datetime.fromisoformat(str(value).strip().replace(" ", "T", 1))
        except ValueError:
            raise ShopError(f"{what}: {value!r} is not an ISO date or date-time (2024-02-01[T10:30:00])") from None
    return (d if d.tzinfo else d.replace(tzinfo=TZ)).astimezone(TZ).replace(microsecond=0)


def money(v: Any) -> Decimal:
    return Decimal(str(v)).quantize(TWO)


def fmt(v: Decimal) -> str:
    s = format(v.normalize() if v == v.to_integral_value() else v, "f")
    return s


class ShopError(Exception):
    """A control-API error: (status, message)."""

    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.status = status


@dataclass
class BankAccount:
    account: str
    bik: str
    corr_account: str = ""
    bank_name: str = ""
    bank_address: str = ""


@dataclass
class User:
    id: int
    login: str
    kind: str = "person"                  # person | company
    last_name: str = ""
    first_name: str = ""
    middle_name: str = ""
    email: str = ""
    phone: str = ""
    address: str = ""
    company_name: str = ""                # short name, ООО «Ромашка»
    full_name: str = ""                   # official name
    inn: str = ""
    kpp: str = ""
    ogrn: str = ""
    okpo: str = ""
    legal_address: str = ""
    contact_person: str = ""
    bank_accounts: list[BankAccount] = field(default_factory=list)
    xml_id: str = ""                      # set when the user came in through an exchange import

    @property
    def cml_id(self) -> str:
        """The counterparty Ид in exports: the XML_ID if set, else `<ID>#<login>` (Bitrix style)."""
        return self.xml_id or f"{self.id}#{self.login}"

    @property
    def person_name(self) -> str:
        return " ".join(p for p in (self.last_name, self.first_name, self.middle_name) if p)

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d["cml_id"] = self.cml_id
        return d


@dataclass
class Product:
    xml_id: str
    name: str
    price: Decimal
    sku: str = ""
    unit: str = "шт"
    vat_rate: str = "20"
    active: bool = True
    quantity: Decimal | None = None


@dataclass
class Item:
    product_id: str
    name: str
    price: Decimal
    quantity: Decimal
    discount: Decimal = Decimal(0)
    vat_rate: str = "20"
    unit: str = "шт"
    kind: str = "Товар"                   # Товар | Услуга

    @property
    def sum(self) -> Decimal:
        return money(self.price * self.quantity - self.discount)


@dataclass
class Order:
    id: int
    xml_id: str
    number: str
    created: dt.datetime
    user_id: int
    items: list[Item]
    currency: str = "RUB"
    comment: str = ""
    status: str = "N"
    status_changed: dt.datetime | None = None
    paid_sum: Decimal = Decimal(0)
    paid_at: dt.datetime | None = None
    pay_system: str = "3"
    payment_doc: str = ""
    canceled: bool = False
    cancel_reason: str = ""
    delivery: str = "1"
    delivery_price: Decimal = Decimal(0)
    delivery_address: str = ""
    delivery_allowed: bool = False
    onec_number: str = ""
    onec_date: str = ""
    posted: bool = False
    shipment_number: str = ""
    version: int = 1
    seq: int = 0
    updated_at: dt.datetime | None = None
    updated_1c: bool = False              # last change came from an exchange import (not exported)
    broken: str = ""                      # control API: export this order malformed ("date"|"sum"|"byte")

    @property
    def total(self) -> Decimal:
        return money(sum((i.sum for i in self.items), Decimal(0)) + self.delivery_price)

    @property
    def paid(self) -> bool:
        return self.total > 0 and self.paid_sum >= self.total

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "xml_id": self.xml_id, "number": self.number, "created": self.created.isoformat(),
            "user_id": self.user_id, "currency": self.currency, "comment": self.comment,
            "status": self.status, "status_name": STATUSES.get(self.status, self.status),
            "paid": self.paid, "paid_sum": str(self.paid_sum), "total": str(self.total),
            "paid_at": self.paid_at.isoformat() if self.paid_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "status_changed": self.status_changed.isoformat() if self.status_changed else None,
            "canceled": self.canceled, "cancel_reason": self.cancel_reason,
            "delivery": DELIVERIES.get(self.delivery, self.delivery), "delivery_price": str(self.delivery_price),
            "delivery_address": self.delivery_address, "onec_number": self.onec_number,
            "posted": self.posted, "shipment_number": self.shipment_number, "version": self.version,
            "updated_1c": self.updated_1c,
            "items": [{"product_id": i.product_id, "name": i.name, "price": str(i.price),
                       "quantity": str(i.quantity), "discount": str(i.discount), "sum": str(i.sum),
                       "vat_rate": i.vat_rate} for i in self.items],
        }


@dataclass
class Faults:
    latency: float = 0.0                  # seconds added to every exchange request
    error_rate: float = 0.0               # share of exchange requests answered 500/503 (HTML)
    failure_rate: float = 0.0             # share answered `failure\n<reason>` (HTTP 200)
    drop_rate: float = 0.0                # share whose connection is dropped mid-answer
    fail_next: int = 0                    # the next N exchange requests answer 503
    failure_next: int = 0                 # the next N answer `failure`
    drop_next: int = 0                    # the next N drop the connection
    modes: list[str] = field(default_factory=list)   # limit faults to these modes (empty = all)
    seed: int | None = None


@dataclass
class Rejection:
    """An import the shop refuses until cleared (a validation rule of the site, a locked order, an
    event handler that throws): the document is not applied and the import answers ``success`` with
    the error appended (``Импорт завершен с ошибками: …``), as Bitrix reports loader errors.

    `kind` order | user | company | counterparty (user or company) | any. A document matches when every
    given key matches: `number` (the document's Номер, or the number of the order its Ид names), `xml_id`
    (its Ид), `order_id` (the shop's id of the order it updates), `inn`, `email` (counterparties), and
    `requisites` (each ЗначениеРеквизита of the document, value compared as text). `times` None: every
    matching import until cleared; N: the next N of them.
    """

    id: int
    kind: str = "order"
    number: str | None = None
    xml_id: str | None = None
    order_id: int | None = None
    inn: str | None = None
    email: str | None = None
    requisites: dict[str, str] = field(default_factory=dict)
    message: str = "Заказ заблокирован для изменений"
    times: int | None = None
    hits: int = 0

    def view(self) -> dict[str, Any]:
        return asdict(self)


REJECTION_KINDS = {"order", "user", "company", "counterparty", "any"}


@dataclass
class Peer:
    """How this shop's exchange differs from 1C-Bitrix: the habits of other CommerceML sites
    (django-cml2, PHP modules), one knob each. Control API: ``PATCH /_sandbox/peer``."""

    # checkauth: bitrix = cookie in the body (lines 2-3) + sessid line + Set-Cookie; body = the body
    # only (no Set-Cookie); cookie = Set-Cookie only, the body is just `success`; basic = no session at
    # all, every request must carry HTTP Basic; basic-cookie = a cookie is handed out but only HTTP Basic
    # is honoured
    session: str = "bitrix"
    init_minimal: bool = False              # init answers zip= and file_limit= only; sessid never checked
    query_content_type: str = "application/xml; charset=windows-1251"   # e.g. "text/xml" (no charset)
    export_encoding: str = "windows-1251"
    schema_version: str | None = None       # ВерсияСхемы of exports (default: version sent at init, 2.08)
    xmlns: bool = False                     # root in urn:1C.ru:commerceml_2
    # where a buyer's address goes: bitrix = АдресРегистрации / ЮридическийАдрес; plain = <Адрес> in the
    # Контрагент; beside = <Адрес> directly under <Контрагенты>, next to the Контрагент
    address: str = "bitrix"
    company_inn: str = "element"            # element | comment: no ИНН/КПП elements, ИНН in an XML comment
    missing_modes: list[str] = field(default_factory=list)   # modes answered HTTP 404 (import, info…)
    file_writes: str = "append"             # append (Bitrix, fopen "ab") | overwrite (each POST replaces)
    export_prefix: str = ""                 # text before the XML (a PHP warning): export unreadable


PEER_CHOICES = {"session": {"bitrix", "body", "cookie", "basic", "basic-cookie"}, "address": {"bitrix", "plain", "beside"},
                "company_inn": {"element", "comment"}, "file_writes": {"append", "overwrite"}}


@dataclass
class Session:
    cookie: str
    sessid: str
    login: str
    created: float
    version: dict[str, str] = field(default_factory=dict)          # type -> version sent at init
    files: dict[str, bytearray] = field(default_factory=dict)       # (type:filename) -> content
    import_steps: dict[str, int] = field(default_factory=dict)
    pending_point: int | None = None                                # what the last query exported


class ShopState:
    """The whole shop. Thread-safe; every public method takes the lock."""

    def __init__(self, *, login: str = "1c_exchange", password: str = "secret", file_limit: int = 204800,
                 zip: bool = False, import_steps: int = 2, rng_seed: int = 7,
                 site: str = "s1") -> None:
        self.lock = threading.RLock()
        self.login, self.password = login, password
        self.file_limit, self.zip, self.import_steps, self.site = file_limit, zip, import_steps, site
        self.rng = random.Random(rng_seed)
        self.faults = Faults()
        self.peer = Peer()
        self.users: dict[int, User] = {}
        self.products: dict[str, Product] = {}
        self.orders: dict[int, Order] = {}
        self.sessions: dict[str, Session] = {}
        self.secure: dict[str, bool] = {"sale": False, "catalog": False}   # the sessid ratchet
        self.export_point = 0
        self.log: list[dict[str, Any]] = []
        self.imports: list[dict[str, Any]] = []        # files imported: name, documents, errors
        self.rejections: list[Rejection] = []           # imports refused until cleared (control API)
        self._rejection_ids = itertools.count(1)
        self.clock_offset = 0.0                         # seconds the shop's clock is ahead of real time
        self._seq = itertools.count(1)
        self._user_ids = itertools.count(1)
        self._order_ids = itertools.count(1001)

    # ---- the shop's clock ---------------------------------------------------------------------
    def now(self) -> dt.datetime:
        """The shop's time: order dates, status and payment dates, `Дата изменения`, the export's
        `ДатаФормирования`. A test moves it with `set_clock` (control API ``/clock``)."""
        return (dt.datetime.now(TZ) + dt.timedelta(seconds=self.clock_offset)).replace(microsecond=0)

    def set_clock(self, *, offset: Any = None, advance: Any = None, now: Any = None) -> dict[str, Any]:
        with self.lock:
            if offset is not None:
                self.clock_offset = float(offset)
            if advance is not None:
                self.clock_offset += float(advance)
            if now is not None:
                self.clock_offset = (parse_when(now, "now") - dt.datetime.now(TZ)).total_seconds()
            return {"now": self.now().isoformat(), "offset": round(self.clock_offset, 3)}

    # ---- refused imports ---------------------------------------------------------------------
    def add_rejection(self, kind: str = "order", **kw: Any) -> Rejection:
        with self.lock:
            if kind not in REJECTION_KINDS:
                raise ShopError(f"kind must be one of {', '.join(sorted(REJECTION_KINDS))}")
            bad = set(kw) - {"number", "xml_id", "order_id", "inn", "email", "requisites", "message", "times"}
            if bad:
                raise ShopError(f"unknown rejection keys: {sorted(bad)}")
            for k in ("number", "xml_id", "inn", "email"):
                if kw.get(k) is not None:
                    kw[k] = str(kw[k])
            if kw.get("order_id") is not None:
                kw["order_id"] = int(kw["order_id"])
            if kw.get("times") is not None:
                kw["times"] = int(kw["times"])
            reqs = kw.pop("requisites", None) or {}
            if not isinstance(reqs, dict):
                raise ShopError("requisites must be an object {name: value}")
            kw = {k: v for k, v in kw.items() if v is not None}
            r = Rejection(next(self._rejection_ids), kind, requisites={str(k): str(v) for k, v in reqs.items()},
                          **kw)
            self.rejections.append(r)
            return r

    def clear_rejections(self, rid: int | None = None) -> int:
        with self.lock:
            before = len(self.rejections)
            self.rejections = [r for r in self.rejections if rid is not None and r.id != rid]
            return before - len(self.rejections)

    def refusal(self, kind: str, *, xml_id: str | None, number: str | None = None, order: Order | None = None,
                inn: str | None = None, email: str | None = None,
                requisites: Any = ()) -> str | None:
        """The message of the first rejection matching this imported record (counted as a hit), else None."""
        reqs: dict[str, str] = {}
        for name, value in requisites:
            reqs.setdefault(name, value)
        numbers = {n for n in (number, order.number if order else None) if n}
        with self.lock:
            for r in self.rejections:
                if r.times is not None and r.hits >= r.times:
                    continue
                if r.kind != "any" and r.kind != kind and not (r.kind == "counterparty" and kind in ("user", "company")):
                    continue
                if r.number is not None and r.number not in numbers:
                    continue
                if r.xml_id is not None and r.xml_id != xml_id:
                    continue
                if r.order_id is not None and (order is None or order.id != r.order_id):
                    continue
                if r.inn is not None and r.inn != (inn or ""):
                    continue
                if r.email is not None and r.email.lower() != (email or "").lower():
                    continue
                if any(reqs.get(k) != v for k, v in r.requisites.items()):
                    continue
                r.hits += 1
                return r.message
            return None

    # ---- sessions --------------------------------------------------------------------------
    def check_password(self, login: str, password: str) -> bool:
        return secrets.compare_digest(login.encode(), self.login.encode()) and \
            secrets.compare_digest(password.encode(), self.password.encode())

    def new_session(self, login: str) -> Session:
        with self.lock:
            s = Session(secrets.token_hex(13), hashlib.md5(secrets.token_bytes(16)).hexdigest(), login,
                        time.time())
            self.sessions[s.cookie] = s
            return s

    def basic_session(self, login: str) -> Session:
        """The exchange state of a site without sessions (Peer.session = "basic"): one per login."""
        with self.lock:
            key = f"basic:{login}"
            s = self.sessions.get(key)
            if s is None:
                s = self.sessions[key] = Session(key, "", login, time.time())
            return s

    def set_peer(self, **kw: Any) -> Peer:
        with self.lock:
            for k, v in kw.items():
                if not hasattr(self.peer, k):
                    raise ShopError(f"unknown peer knob {k!r}")
                if k in PEER_CHOICES and v not in PEER_CHOICES[k]:
                    raise ShopError(f"{k} must be one of {', '.join(sorted(PEER_CHOICES[k]))}")
                setattr(self.peer, k, v)
            return self.peer

    def log_request(self, entry: dict[str, Any]) -> None:
        with self.lock:
            entry["n"] = len(self.log) + 1
            self.log.append(entry)

    def bump(self, o: Order, *, from_1c: bool = False) -> None:
        o.seq = next(self._seq)
        o.version += 1
        o.updated_at = self.now()
        o.updated_1c = from_1c

    # ---- catalogue and users ---------------------------------------------------------------
    def add_product(self, xml_id: str, name: str, price: Any, **kw: Any) -> Product:
        with self.lock:
            p = Product(xml_id, name, money(price), **kw)
            self.products[xml_id] = p
            return p

    def add_user(self, **kw: Any) -> User:
        with self.lock:
            accounts = [a if isinstance(a, BankAccount) else BankAccount(**a) for a in kw.pop("bank_accounts", [])]
            uid = next(self._user_ids)
            kw.setdefault("login", kw.get("email") or f"user{uid}")
            u = User(uid, bank_accounts=accounts, **kw)
            if u.kind not in ("person", "company"):
                raise ShopError("kind must be person or company")
            self.users[uid] = u
            return u

    def edit_user(self, uid: int, **kw: Any) -> User:
        """The user edits the profile / requisites in the personal account."""
        with self.lock:
            u = self.user(uid)
            if "bank_accounts" in kw:
                kw["bank_accounts"] = [a if isinstance(a, BankAccount) else BankAccount(**a)
                                       for a in kw["bank_accounts"]]
            for k, v in kw.items():
                if k in ("id", "cml_id") or not hasattr(u, k):
                    raise ShopError(f"unknown user field {k!r}")
                setattr(u, k, v)
            # Bitrix exports a buyer with the order; the orders of an edited user change too
            for o in self.orders.values():
                if o.user_id == uid:
                    self.bump(o)
            return u

    def user(self, uid: int) -> User:
        try:
            return self.users[int(uid)]
        except (KeyError, ValueError):
            raise ShopError(f"user {uid} not found", 404) from None

    def order(self, oid: int) -> Order:
        try:
            return self.orders[int(oid)]
        except (KeyError, ValueError):
            raise ShopError(f"order {oid} not found", 404) from None

    # ---- what customers and the admin do -----------------------------------------------------
    def _checkout_user(self, user: dict[str, Any]) -> User:
        """A checkout without logging in: like Bitrix's "bind the order to an existing buyer by
        e-mail or phone" option, a buyer of the same kind with that e-mail (any case) or that phone
        (any spelling: the last 10 digits) gets the order; otherwise a new buyer is registered."""
        email = str(user.get("email") or "").strip().lower()
        digits = "".join(ch for ch in str(user.get("phone") or "") if ch.isdigit())[-10:]
        kind = user.get("kind", "person")
        for u in self.users.values():
            if u.kind != kind:
                continue
            if email and str(u.email or "").strip().lower() == email:
                return u
            if len(digits) == 10 and "".join(ch for ch in str(u.phone or "") if ch.isdigit())[-10:] == digits:
                return u
        return self.add_user(**user)

    def place_order(self, *, user_id: int | None = None, user: dict[str, Any] | None = None,
                    items: list[dict[str, Any]], delivery: str = "1", delivery_price: Any = 0,
                    delivery_address: str = "", comment: str = "", pay_system: str = "3",
                    created: dt.datetime | str | None = None, number: Any = None, xml_id: Any = None,
                    status: str | None = None) -> Order:
        """A checkout. `created` places it at that time (a past order: its status and change dates are
        that time too, so it is an order *of* that period); `number` is its account number (Номер,
        unique; default its id), `xml_id` its Ид (default its id); `status` where it stands now."""
        with self.lock:
            when = parse_when(created, "created") if created is not None else None
            if status is not None and status not in STATUSES:
                raise ShopError(f"unknown status {status!r} (known: {', '.join(STATUSES)})")
            number = None if number is None or str(number).strip() == "" else str(number).strip()
            xml_id = None if xml_id is None or str(xml_id).strip() == "" else str(xml_id).strip()
            if number is not None and any(o.number == number for o in self.orders.values()):
                raise ShopError(f"an order numbered {number!r} exists already", 409)
            if xml_id is not None and self.find_order(xml_id) is not None:
                raise ShopError(f"an order with Ид {xml_id!r} exists already", 409)
            if user_id is None:
                if not user:
                    raise ShopError("user_id or user is required")
                u = self._checkout_user(user)
            else:
                u = self.user(user_id)
            lines = []
            for it in items:
                p = self.products.get(str(it.get("product_id", "")))
                if p is None and "name" not in it:
                    raise ShopError(f"unknown product {it.get('product_id')!r}")
                lines.append(Item(
                    product_id=p.xml_id if p else str(it.get("product_id") or
                                                       hashlib.md5(it["name"].encode()).hexdigest()),
                    name=it.get("name") or (p.name if p else ""),
                    price=money(it.get("price", p.price if p else 0)),
                    quantity=Decimal(str(it.get("quantity", 1))),
                    discount=money(it.get("discount", 0)),
                    vat_rate=str(it.get("vat_rate", p.vat_rate if p else "20")),
                    unit=p.unit if p else "шт"))
            if not lines:
                raise ShopError("an order needs items")
            oid = next(self._order_ids)
            taken = {o.number for o in self.orders.values()} | {o.xml_id for o in self.orders.values()}
            while str(oid) in taken:          # an explicit number took this id's default number
                oid = next(self._order_ids)
            o = Order(oid, xml_id or str(oid), number or str(oid), when or self.now(), u.id, lines,
                      comment=comment, delivery=str(delivery), delivery_price=money(delivery_price),
                      delivery_address=delivery_address or u.address or u.legal_address,
                      pay_system=str(pay_system), version=0)
            o.status_changed = o.created
            if status is not None:
                o.status = status
                o.canceled = status == "C"
                o.delivery_allowed = status in ("G", "S", "D", "F")
            self.orders[oid] = o
            self.bump(o)
            if when is not None:
                o.updated_at = when          # placed then and not touched since
            return o

    def pay(self, oid: int, amount: Any = None) -> Order:
        """The customer pays (fully when `amount` is None). Full payment moves N -> P like Bitrix."""
        with self.lock:
            o = self.order(oid)
            amt = o.total - o.paid_sum if amount is None else money(amount)
            if amt <= 0:
                raise ShopError("nothing to pay")
            o.paid_sum = money(o.paid_sum + amt)
            o.payment_doc = f"PAY-{o.id}-{len(o.payment_doc.split(',')) if o.payment_doc else 1}"
            if o.paid:
                o.paid_at = self.now()
                if o.status == "N":
                    o.status, o.status_changed = "P", self.now()
            self.bump(o)
            return o

    def set_status(self, oid: int, status: str) -> Order:
        with self.lock:
            o = self.order(oid)
            if status not in STATUSES:
                raise ShopError(f"unknown status {status!r} (known: {', '.join(STATUSES)})")
            o.status, o.status_changed = status, self.now()
            if status == "C":
                o.canceled = True
            if status in ("G", "S", "D", "F"):
                o.delivery_allowed = True
            self.bump(o)
            return o

    def edit_order(self, oid: int, **kw: Any) -> Order:
        with self.lock:
            o = self.order(oid)
            for k, v in kw.items():
                if k == "status":
                    self.set_status(oid, v)
                elif k == "items":
                    o.items = [Item(product_id=str(i["product_id"]), name=i.get("name", ""),
                                    price=money(i["price"]), quantity=Decimal(str(i["quantity"])),
                                    discount=money(i.get("discount", 0)), vat_rate=str(i.get("vat_rate", "20")))
                               for i in v]
                elif k in ("comment", "canceled", "cancel_reason", "delivery_address", "broken"):
                    setattr(o, k, v)
                elif k == "delivery_price":
                    o.delivery_price = money(v)
                else:
                    raise ShopError(f"unknown order field {k!r}")
            self.bump(o)
            return o

    BACKDATE = ("created", "updated_at", "status_changed", "paid_at")

    def backdate(self, oid: int, **dates: Any) -> Order:
        """A data fix: set an order's dates (`BACKDATE`). Not a change the shop exports (as a direct
        update of the database would not be); `null` clears `paid_at`/`status_changed`/`updated_at`."""
        with self.lock:
            o = self.order(oid)
            bad = set(dates) - set(self.BACKDATE)
            if bad:
                raise ShopError(f"unknown date fields {sorted(bad)} (known: {', '.join(self.BACKDATE)})")
            parsed = {k: None if v is None else parse_when(v, k) for k, v in dates.items()}
            if "created" in parsed and parsed["created"] is None:
                raise ShopError("created cannot be empty")
            for k, v in parsed.items():
                setattr(o, k, v)
            return o

    def find_order(self, cml_id: str) -> Order | None:
        with self.lock:
            for o in self.orders.values():
                if o.xml_id == cml_id:
                    return o
            if cml_id.isdigit() and int(cml_id) in self.orders and self.orders[int(cml_id)].xml_id == cml_id:
                return self.orders[int(cml_id)]
            return None

    def find_user(self, cml_id: str | None, inn: str | None = None, kpp: str | None = None,
                  email: str | None = None) -> User | None:
        with self.lock:
            for u in self.users.values():
                if cml_id and u.cml_id == cml_id:
                    return u
            for u in self.users.values():
                if inn and u.inn == inn and (u.kpp or "") == (kpp or ""):
                    return u
            for u in self.users.values():
                if email and u.email.lower() == email.lower():
                    return u
            return None

    # ---- export (the document: xml.export_orders) -----------------------------------------------
    def commit_export(self, sess: Session) -> None:
        with self.lock:
            if sess.pending_point is not None:
                self.export_point = max(self.export_point, sess.pending_point)
                sess.pending_point = None

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"orders": [o.public() for o in self.orders.values()],
                    "users": [u.public() for u in self.users.values()],
                    "products": [{"xml_id": p.xml_id, "name": p.name, "price": str(p.price), "sku": p.sku,
                                  "active": p.active,
                                  "quantity": None if p.quantity is None else str(p.quantity)}
                                 for p in self.products.values()],
                    "export_point": self.export_point, "secure": dict(self.secure),
                    "clock": {"now": self.now().isoformat(), "offset": round(self.clock_offset, 3)},
                    "rejections": [r.view() for r in self.rejections]}


__all__ = [
    "DELIVERIES",
    "DELIVERY_ID",
    "PAY_SYSTEMS",
    "STATUSES",
    "TZ",
    "BankAccount",
    "Faults",
    "Peer",
    "Item",
    "Order",
    "Product",
    "Rejection",
    "Session",
    "ShopError",
    "ShopState",
    "User",
    "etree",
    "fmt",
    "money",
    "now",
    "parse_when",
]
