"""The sandbox 1C client: exchange sequence, a small "1C database", an accountant's actions."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
import threading
import uuid
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from syncd.commerceml import (
    MOSCOW,
    Address,
    Bank,
    BankAccount,
    CmlWriter,
    Counterparty,
    Document,
    Offer,
    Price,
    PriceType,
    Product,
)
from syncd.commerceml.reader import iter_records
from syncd.commerceml.writer import (
    counterparty_element,
    document_element,
    offer_element,
    price_type_element,
    product_element,
)

PAYMENT_OP = "Выплата безналичных денег"
SHIPMENT_OP = "Отпуск товара"


class OneCExchangeError(Exception):
    """The site answered `failure` / `error` (or something that is no status line)."""

    def __init__(self, status: str, reason: str, mode: str = "") -> None:
        super().__init__(f"{mode}: {status}: {reason}" if mode else f"{status}: {reason}")
        self.status, self.reason, self.mode = status, reason, mode


def guid() -> str:
    return str(uuid.uuid4())


def _now() -> dt.datetime:
    return dt.datetime.now(MOSCOW).replace(microsecond=0)


def _req(doc: Document, **changes: str) -> Document:
    reqs = [(k, v) for k, v in doc.requisites if k not in changes]
    reqs += list(changes.items())
    return dataclasses.replace(doc, requisites=tuple(reqs))


@dataclass
class OneCDatabase:
    """What 1C holds: orders (by Ид) with their payments/shipments, counterparties, goods."""

    orders: dict[str, Document] = field(default_factory=dict)
    counterparties: dict[str, Counterparty] = field(default_factory=dict)
    payments: list[Document] = field(default_factory=list)
    shipments: list[Document] = field(default_factory=list)
    products: dict[str, Product] = field(default_factory=dict)
    offers: dict[str, Offer] = field(default_factory=dict)
    received: list[Document] = field(default_factory=list)     # every order document taken by query

    def order(self, number_or_id: str) -> Document:
        if number_or_id in self.orders:
            return self.orders[number_or_id]
        for d in self.orders.values():
            if d.number == number_or_id:
                return d
        raise KeyError(f"no order {number_or_id!r} in 1C")

    def counterparty(self, key: str) -> Counterparty:
        if key in self.counterparties:
            return self.counterparties[key]
        for c in self.counterparties.values():
            if key in (c.inn, c.name):
                return c
        raise KeyError(f"no counterparty {key!r} in 1C")


class OneCClient:
    """1C's exchange node, pointed at `base_url` (the full exchange URL, e.g. http://h:p/1c/exchange)."""

    def __init__(self, base_url: str, login: str, password: str, *, version: str = "2.08",
                 encoding: str = "windows-1251", bom: bool = True, timeout: float = 30.0,
                 use_zip: bool = True, temp_prefix: str | None = None, send_version: bool = True,
                 send_sessid: bool = True, auth_encoding: str = "utf-8", send_complete: bool = True,
                 post_query: bool = False) -> None:
        """The knobs mimic older 1C configurations and third-party exchange processors:
        `send_version=False` — no `version` at init, so the site speaks the old sale protocol
        (the posted file is imported at once; 1C never calls `mode=import` for sale);
        `send_sessid=False` — never sends `sessid`; `auth_encoding="cp1251"` — Basic auth in the
        Windows code page (older platforms); `send_complete=False` — the catalog exchange ends
        after its last import, without `mode=complete`; `post_query=True` — `mode=query` posted
        as a form (`type=sale&mode=query&sessid=…` in the body); `use_zip=False` — plain files
        even when the site offers zip. Uploads are always cut in the site's `file_limit` chunks."""
        self.url = base_url
        self.login, self.password = login, password
        self.version, self.encoding, self.bom = version, encoding, bom
        self.use_zip = use_zip
        self.send_version, self.send_sessid, self.auth_encoding = send_version, send_sessid, auth_encoding
        self.send_complete, self.post_query = send_complete, post_query
        self.temp_prefix = temp_prefix if temp_prefix is not None else f"/tmp/v8_{uuid.uuid4().hex[:6].upper()}/"
        self.http = httpx.Client(timeout=timeout)
        self.db = OneCDatabase()
        self.log: list[tuple[str, str, str]] = []          # (type, mode, first line of the answer)
        self._changed_orders: list[str] = []                 # Ид of orders to upload
        self._linked: list[Document] = []                   # payments / shipments to upload
        self._changed_cps: list[str] = []
        self._catalog_dirty = False
        self._lock = threading.Lock()
        self._cookie: tuple[str, str] | None = None
        self._sessid: str | None = None
        self._timestamp: str | None = None
        self.last: dict[str, Any] = {}

    def close(self) -> None:
        self.http.close()

    # -- the accountant's actions (uploaded by the next cycle) ----------------------------------
    def pay(self, order_number: str, amount: Decimal | str | None = None, *,
            when: dt.datetime | None = None) -> Document:
        """A non-cash payment (платёжное поручение входящее) against the order; the order is paid."""
        with self._lock:
            order = self.db.order(order_number)
            when = when or _now()
            pay = Document(id=guid(), number=f"П-{len(self.db.payments) + 1:05d}", date=when,
                           operation=PAYMENT_OP, role="Продавец", currency=order.currency or "руб",
                           rate=Decimal(1), total=Decimal(str(amount)) if amount is not None else order.total,
                           base=order.number)
            self.db.payments.append(pay)
            self.db.orders[order.id] = _req(order, **{"Заказ оплачен": "true",
                                                      "Дата оплаты": when.strftime("%d.%m.%Y %H:%M:%S")})
            self._linked.append(pay)
            self._touch(order.id)
            return pay

    def ship(self, order_number: str, shipment_no: str, *, when: dt.datetime | None = None) -> Document:
        """A shipment (реализация) against the order."""
        with self._lock:
            order = self.db.order(order_number)
            when = when or _now()
            doc = Document(id=guid(), number=shipment_no, date=when, operation=SHIPMENT_OP, role="Продавец",
                           currency=order.currency or "руб", rate=Decimal(1), total=order.total,
                           base=order.number, items=order.items)
            self.db.shipments.append(doc)
            self.db.orders[order.id] = _req(order, **{"Отгружено": "true", "Номер отгрузки": shipment_no,
                                                      "Дата отгрузки": when.strftime("%d.%m.%Y %H:%M:%S")})
            self._linked.append(doc)
            self._touch(order.id)
            return doc

    def sign_documents(self, order_number: str, signed: bool = True) -> None:
        """The closing documents came back signed (a flag in the order's ЗначенияРеквизитов)."""
        self._set(order_number, **{"Документы подписаны": "true" if signed else "false"})

    def set_status(self, order_number: str, status: str) -> None:
        self._set(order_number, **{"Статус заказа": status})

    def post(self, order_number: str, number_1c: str | None = None) -> None:
        """Post (провести) the order in 1C; it gets 1C's own number."""
        order = self.db.order(order_number)
        self._set(order_number, **{"Проведен": "true", "Номер по 1С": number_1c or f"ЗК-{order.number}",
                                   "Дата по 1С": _now().strftime("%d.%m.%Y %H:%M:%S")})

    def edit_requisites(self, key: str, *, name: str | None = None, full_name: str | None = None,
                        inn: str | None = None, kpp: str | None = None, ogrn: str | None = None,
                        legal_address: str | None = None, phone: str | None = None, email: str | None = None,
                        bank_account: dict[str, str] | None = None) -> Counterparty:
        """Edit a counterparty's card (by Ид, ИНН or name). bank_account: {account, bik, corr_account, bank_name}."""
        with self._lock:
            cp = self.db.counterparty(key)
            changes: dict[str, Any] = {k: v for k, v in (("name", name), ("full_name", full_name),
                                                          ("inn", inn), ("kpp", kpp), ("ogrn", ogrn)) if v}
            if full_name:
                changes["official_name"] = full_name
            if legal_address:
                changes["addresses"] = tuple(a for a in cp.addresses if a.kind != "ЮридическийАдрес") + (
                    Address("ЮридическийАдрес", legal_address),)
            contacts = list(cp.contacts)
            for typ, value in (("Почта", email), ("ТелефонРабочий", phone)):
                if value:
                    contacts = [c for c in contacts if c.type not in (typ, "Электронная почта", "Телефон рабочий")
                                or (typ == "Почта") != (c.type in ("Почта", "Электронная почта"))]
                    from syncd.commerceml import Contact
                    contacts.append(Contact(typ, value))
            changes["contacts"] = tuple(contacts)
            if bank_account:
                acc = BankAccount(bank_account["account"], Bank(name=bank_account.get("bank_name"),
                                                                bic=bank_account.get("bik"),
                                                                correspondent_account=bank_account.get("corr_account")))
                changes["bank_accounts"] = tuple(a for a in cp.bank_accounts if a.number != acc.number) + (acc,)
            cp = dataclasses.replace(cp, **changes)
            self.db.counterparties[cp.id or ""] = cp
            if cp.id not in self._changed_cps:
                self._changed_cps.append(cp.id or "")
            return cp

    def new_counterparty(self, name: str, *, inn: str | None = None, kpp: str | None = None,
                         email: str | None = None, phone: str | None = None) -> Counterparty:
        """A counterparty typed into 1C directly (it gets a GUID); uploaded with the next cycle."""
        from syncd.commerceml import Contact

        contacts = tuple(c for c in (Contact("Почта", email) if email else None,
                                     Contact("ТелефонРабочий", phone) if phone else None) if c)
        cp = Counterparty(id=guid(), name=name, full_name=name, official_name=name if kpp else None,
                          role="Покупатель", inn=inn, kpp=kpp, contacts=contacts)
        with self._lock:
            self.db.counterparties[cp.id or ""] = cp
            self._changed_cps.append(cp.id or "")
        return cp

    def set_product(self, name: str, *, sku: str | None = None, price: Decimal | str | None = None,
                    stock: Decimal | str | None = None, product_id: str | None = None) -> Product:
        """A good in 1C's catalog (with a retail price and stock); sent by the next catalog exchange."""
        with self._lock:
            pid = product_id or next((p.id for p in self.db.products.values() if sku and p.sku == sku), None) or guid()
            p = Product(id=pid, sku=sku, name=name)
            self.db.products[pid] = p
            prices = (Price("retail", Decimal(str(price)), "Розничная", "RUB", "шт", Decimal(1)),) if price is not None else ()
            self.db.offers[pid] = Offer(id=pid, sku=sku, name=name, prices=prices,
                                        quantity=Decimal(str(stock)) if stock is not None else None)
            self._catalog_dirty = True
            return p

    def remove_product(self, sku: str) -> None:
        """Take a good out of the catalog (the next full upload does not list it)."""
        with self._lock:
            for pid in [p.id for p in self.db.products.values() if p.sku == sku]:
                self.db.products.pop(pid)
                self.db.offers.pop(pid, None)
            self._catalog_dirty = True

    def _set(self, order_number: str, **reqs: str) -> None:
        with self._lock:
            order = self.db.order(order_number)
            self.db.orders[order.id] = _req(order, **reqs)
            self._touch(order.id)

    def _touch(self, order_id: str | None) -> None:
        if order_id and order_id not in self._changed_orders:
            self._changed_orders.append(order_id)

    # -- the exchange ---------------------------------------------------------------------------
    def run_cycle(self) -> dict[str, Any]:
        """One full exchange: catalog (if goods changed), then sale query/success and 1C's upload."""
        out: dict[str, Any] = {}
        if self._catalog_dirty:
            out["catalog"] = self.exchange_catalog()
        out.update(self.exchange_sale())
        self.last = out
        return out

    def exchange_catalog(self) -> dict[str, Any]:
        self.checkauth("catalog")
        zip_ok, limit = self.init("catalog")
        files = {"import.xml": self._catalog_xml(), "offers.xml": self._offers_xml()}
        self._upload("catalog", files, zip_ok, limit)
        answers = [self.import_file("catalog", name) for name in files]
        if self._timestamp:                      # newer 1C: goods not in a full upload are deactivated
            self._call("catalog", "deactivate", timestamp=self._timestamp)
        if self.send_complete:
            self._call("catalog", "complete")
        self._catalog_dirty = False
        return {"imported": answers}

    def exchange_sale(self) -> dict[str, Any]:
        self.checkauth("sale")
        zip_ok, limit = self.init("sale")
        received = self.query()
        self._call("sale", "success")
        uploaded = 0
        with self._lock:
            orders = [self.db.orders[i] for i in self._changed_orders if i in self.db.orders]
            linked = list(self._linked)
            cps = [self.db.counterparties[i] for i in self._changed_cps if i in self.db.counterparties]
        answer = None
        if orders or linked or cps:
            name = f"orders-{guid()}.xml"
            last = self._upload("sale", {name: self._orders_xml(orders, linked, cps)}, zip_ok, limit)
            # the old protocol imports at mode=file: the last chunk's answer is the result
            answer = self.import_file("sale", name) if self.send_version else last
            uploaded = len(orders) + len(linked) + len(cps)
            with self._lock:
                self._changed_orders = [i for i in self._changed_orders if i not in {o.id for o in orders}]
                self._linked = [d for d in self._linked if d not in linked]
                self._changed_cps = [i for i in self._changed_cps if i not in {c.id for c in cps}]
        return {"received": received, "uploaded": uploaded, "import": answer}

    # -- single steps (public so tests can drive the protocol by hand) ---------------------------
    def checkauth(self, typ: str) -> list[str]:
        token = base64.b64encode(f"{self.login}:{self.password}".encode(self.auth_encoding)).decode("ascii")
        r = self.http.get(self.url, params={"type": typ, "mode": "checkauth"},
                          headers={"Authorization": f"Basic {token}"})
        lines = self._lines(r, typ, "checkauth")
        if len(lines) < 3:
            raise OneCExchangeError("failure", f"short checkauth answer {lines!r}", "checkauth")
        self._cookie = (lines[1], lines[2])
        self._sessid = lines[3].partition("=")[2] if len(lines) > 3 and lines[3].startswith("sessid=") else None
        self._timestamp = next((x.partition("=")[2] for x in lines[3:] if x.startswith("timestamp=")), None)
        return lines

    def init(self, typ: str) -> tuple[bool, int]:
        params = {"version": self.version} if self.send_version else {}
        lines = self._call(typ, "init", **params)
        opts = dict(x.split("=", 1) for x in lines if "=" in x)
        if opts.get("sessid"):
            self._sessid = opts["sessid"]
        if opts.get("version"):
            self.version = min(self.version, opts["version"], key=lambda v: tuple(int(p) for p in v.split(".")))
        return opts.get("zip") == "yes" and self.use_zip, int(opts.get("file_limit", 204800))

    def query(self) -> int:
        if self.post_query:
            r = self.http.post(self.url, data=self._params("sale", "query"), headers=self._headers())
        else:
            r = self.http.get(self.url, params=self._params("sale", "query"), headers=self._headers())
        if r.status_code != 200 or not r.content.lstrip(b"\xef\xbb\xbf").lstrip().startswith(b"<"):
            self._lines(r, "sale", "query")
            raise OneCExchangeError("failure", "query answer is not XML", "query")
        self.log.append(("sale", "query", "xml"))
        n = 0
        with self._lock:
            for obj in iter_records(r.content, ("Документ", "Контрагент")):
                if isinstance(obj, Document):
                    n += 1
                    self.db.received.append(obj)
                    self.db.orders[obj.id or ""] = self._merge_order(obj)
                    for cp in obj.counterparties:
                        if cp.id:
                            self.db.counterparties[cp.id] = cp
                elif isinstance(obj, Counterparty) and obj.id:
                    n += 1
                    self.db.counterparties[obj.id] = obj
        return n

    def _merge_order(self, doc: Document) -> Document:
        """1C keeps its own requisites (paid, posted…) when the site sends the order again."""
        old = self.db.orders.get(doc.id or "")
        if old is None:
            return doc
        own = {"Заказ оплачен", "Дата оплаты", "Отгружено", "Номер отгрузки", "Дата отгрузки", "Проведен",
               "Номер по 1С", "Дата по 1С", "Документы подписаны"}
        keep = {k: v for k, v in old.requisites if k in own}
        return _req(doc, **keep)

    def import_file(self, typ: str, name: str, max_steps: int = 10_000) -> list[str]:
        for _ in range(max_steps):
            lines = self._call(typ, "import", filename=self.temp_prefix + name, _ok=("success", "progress"))
            if lines[0] == "success":
                return lines
        raise OneCExchangeError("failure", f"import of {name} never finished", "import")

    def upload_chunk(self, typ: str, name: str, data: bytes) -> list[str]:
        return self._call(typ, "file", filename=self.temp_prefix + name, _body=data)

    def _upload(self, typ: str, files: dict[str, bytes], zip_ok: bool, limit: int) -> list[str]:
        if zip_ok:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                for name, data in files.items():
                    zf.writestr(name, data)
            files_to_send = {f"{typ}-{guid()[:8]}.zip": buf.getvalue()}
        else:
            files_to_send = files
        last: list[str] = []
        for name, data in files_to_send.items():
            for i in range(0, max(len(data), 1), limit):
                last = self.upload_chunk(typ, name, data[i:i + limit])
        return last

    # -- HTTP -----------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Cookie": f"{self._cookie[0]}={self._cookie[1]}"} if self._cookie else {}

    def _params(self, typ: str, mode: str, **extra: Any) -> dict[str, Any]:
        p = {"type": typ, "mode": mode, **extra}
        if self._sessid and self.send_sessid:
            p["sessid"] = self._sessid
        return p

    def _call(self, typ: str, mode: str, *, _body: bytes | None = None, _ok: Iterable[str] = ("success",),
              **params: Any) -> list[str]:
        self.http.cookies.clear()        # 1C sends the cookie from the checkauth lines, nothing else
        if _body is not None:
            r = self.http.post(self.url, params=self._params(typ, mode, **params), content=_body,
                               headers={**self._headers(), "Content-Type": "application/octet-stream"})
        else:
            r = self.http.get(self.url, params=self._params(typ, mode, **params), headers=self._headers())
        lines = self._lines(r, typ, mode, ok=tuple(_ok) + (("zip=yes", "zip=no") if mode == "init" else ()))
        return lines

    def _lines(self, r: httpx.Response, typ: str, mode: str, ok: tuple[str, ...] = ("success",)) -> list[str]:
        self.http.cookies.clear()
        text = r.content.decode("cp1251" if self.encoding.lower() in ("windows-1251", "cp1251") else "utf-8",
                                errors="replace")
        lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
        self.log.append((typ, mode, lines[0] if lines else ""))
        if not lines or lines[0] not in ok:
            raise OneCExchangeError(lines[0] if lines else "", "\n".join(lines[1:]), mode)
        return lines

    # -- files 1C writes ------------------------------------------------------------------------
    def _writer(self, buf: io.BytesIO) -> CmlWriter:
        return CmlWriter(buf, encoding=self.encoding, bom=False, schema_version=self.version)

    def _finish(self, buf: io.BytesIO) -> bytes:
        data = buf.getvalue()
        return (b"\xef\xbb\xbf" + data) if self.bom else data

    def _orders_xml(self, orders: list[Document], linked: list[Document], cps: list[Counterparty]) -> bytes:
        buf = io.BytesIO()
        with self._writer(buf) as w:
            by_base: dict[str, list[Document]] = {}
            for d in linked:
                by_base.setdefault(d.base or "", []).append(d)
            for o in orders:
                with w.section("Контейнер"):
                    w.write(document_element(o))
                    for d in by_base.pop(o.number or "", []):
                        w.write(document_element(d))
            for rest in by_base.values():
                for d in rest:
                    w.write(document_element(d))
            if cps:
                with w.section("Контрагенты"):
                    for cp in cps:
                        w.write(counterparty_element(cp))
        return self._finish(buf)

    def _catalog_xml(self) -> bytes:
        buf = io.BytesIO()
        with self._writer(buf) as w:
            with w.section("Классификатор"):
                w.text("Ид", "classifier-1")
                w.text("Наименование", "Классификатор (Основной каталог товаров)")
            with w.section("Каталог", {"СодержитТолькоИзменения": "false"}):
                w.text("Ид", "catalog-1")
                w.text("ИдКлассификатора", "classifier-1")
                w.text("Наименование", "Основной каталог товаров")
                with w.section("Товары"):
                    for p in self.db.products.values():
                        w.write(product_element(p))
        return self._finish(buf)

    def _offers_xml(self) -> bytes:
        buf = io.BytesIO()
        with self._writer(buf) as w, w.section("ПакетПредложений", {"СодержитТолькоИзменения": "false"}):
            w.text("Ид", "catalog-1#")
            w.text("Наименование", "Пакет предложений (Основной каталог товаров)")
            w.text("ИдКаталога", "catalog-1")
            with w.section("ТипыЦен"):
                w.write(price_type_element(PriceType("retail", "Розничная", "RUB")))
            with w.section("Предложения"):
                for o in self.db.offers.values():
                    w.write(offer_element(o))
        return self._finish(buf)
