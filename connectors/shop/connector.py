"""The shop connector: orders (and their buyers and products) from a CommerceML exchange endpoint.

Stream ``orders`` (one Batch per `mode=query`): for each exported `Документ`, first its buyer —
``user`` (a person) or ``company`` — then the products of its lines (``product``), then the ``order``.
Records are yielded in that order so the engine has bound the buyer before the order refers to it.
The batch's ``ack`` sends `mode=success` in the query's session; the engine calls it only after the
batch is committed, so a crash before the commit makes the shop export the same orders again (and the
bindings make that re-pull harmless). The cursor is informational only (the shop keeps the export
point): the latest `Дата изменения` seen.

Reading is all-or-nothing per document, never per file: a document the reader cannot read is one
`Rejected` (its whole raw text and line, quarantined) and the rest of the export is read and acked; an
export that cannot be read at all raises from `read()` and is NOT acknowledged, so the shop keeps it
open and sends the same orders again. The exchange cannot select by date, so `since` (backfill) drops
the orders older than it after reading, and says so in the log.

Counterparties are a company or a person by their structure (`is_company`), not by the presence of an
ИНН: sites leave ИНН/КПП out, or write only `ПолноеНаименование`.

Writes ``order``, ``user``, ``company``: a complete CommerceML document (the whole record when the write
path hands one over as `WriteOp.full`, the changed fields on top; header elements the schema requires
filled from the last read of the order, else defaults), validated against syncd's schema before it is
sent (an invalid one is a PermanentError, never an upload), written with `syncd.commerceml`
(windows-1251 by default), uploaded with `init` + `type=sale&mode=file`, then `mode=import` is repeated
while the shop answers `progress`. The file goes up in one piece (zipped when the shop says `zip=yes`
and that makes it fit `file_limit`); it is split into chunks only with `split_uploads` on, because
sites differ: 1C-Bitrix appends chunks, others (django-cml2) overwrite the file with each POST. A create
stamps the document's `Ид` with the op's external key (``crm-15`` for deal 15); the exchange cannot
search orders by `Ид`, but the shop's import matches documents on `Ид` (Bitrix: XML_ID), so a retried
create updates the order it created the first time instead of making a second one. Users and companies
(S7 requisites edits) go up as a root-level `Контрагенты` document, matched the same way.

Capabilities: before the first read or write, and at every `health()` (`syncd check`), the connector
asks for `sale&mode=import` and `sale&mode=info`. A site without import (HTTP 404/405/501 or `failure`
"unknown command") keeps the files it is sent and applies none: `writes` becomes empty, health says so
in one line, and a write that still arrives is a PermanentError (a dead letter), never an upload.

No ``products`` stream: Bitrix sites do not export the catalog through this protocol (catalog exchange
is 1C -> site only); products reach syncd as the lines of orders.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog

from connectors.shop.client import Answer, ExchangeClient, Session, SessionLost, Unsupported
from connectors.shop.settings import ShopSettings
from syncd.commerceml import (
    Address,
    Bank,
    BankAccount,
    Contact,
    Counterparty,
    Discount,
    Document,
    Item,
    Representative,
    Tax,
    Unit,
    iter_documents,
    write_counterparties,
    write_orders,
)
from syncd.commerceml import Rejected as CmlRejected
from syncd.commerceml.validate import validate
from syncd.commerceml.encoding import MOSCOW, parse_datetime
from syncd.connector import (
    BaseConnector,
    Batch,
    Health,
    LiveSchema,
    RawRecord,
    Rejected,
    StreamSpec,
    WriteOp,
    WriteResult,
)
from syncd.errors import BadInput, PermanentError, ProtocolError, TransientError

log = structlog.get_logger("syncd.shop")

DELIVERY_ID = "ORDER_DELIVERY"
ORDER_OP = "Заказ товара"

STREAMS = {"orders": StreamSpec("orders", ("user", "company", "product", "order"),
                                "orders changed since the last committed export, with buyers and products",
                                default_interval=60.0)}
WRITES = frozenset({"order", "user", "company"})

ORDER_FIELDS = ("Номер", "Дата", "Сумма", "Валюта", "Курс", "Комментарий", "Статус заказа", "Статус заказа ИД",
                "Заказ оплачен", "Дата оплаты", "Сумма оплаты", "Процент оплаты", "Отменен", "Причина отмены",
                "Контрагент", "Покупатель", "Организация", "Товары", "Стоимость доставки", "Номер отгрузки",
                "Проведен", "Номер по 1С", "Дата по 1С", "Адрес доставки", "Способ доставки", "Доставка разрешена",
                "Метод оплаты", "Финальный статус", "Дата изменения", "ПометкаУдаления", "НомерВерсии", "Сайт",
                "С сайта")
USER_FIELDS = ("Наименование", "ПолноеНаименование", "Фамилия", "Имя", "Отчество", "ИНН", "Почта", "Телефон",
               "Телефоны", "Адрес")
COMPANY_FIELDS = ("Наименование", "ОфициальноеНаименование", "ИНН", "КПП", "ОГРН", "ОКПО", "ЮридическийАдрес",
                  "Почта", "Телефон", "Телефоны", "Контактное лицо", "РасчетныеСчета")
ITEM_FIELDS = ("Ид", "Наименование", "Количество", "ЦенаЗаЕдиницу", "Сумма", "Скидка", "СтавкаНДС", "НДСВключен",
               "Единица", "ВидНоменклатуры")
PRODUCT_FIELDS = ("Наименование", "ЦенаЗаЕдиницу", "Единица", "СтавкаНДС", "ВидНоменклатуры")

_RUB = {"руб", "руб.", "rub", "643", "rur"}
_PHONE_TYPES = ("ТелефонРабочий", "Телефон рабочий", "Телефон", "ТелефонМобильный", "Телефон мобильный")


def _dec(v: str | None) -> Decimal | None:
    if v is None or not v.strip():
        return None
    try:
        return Decimal(v.strip().replace(",", ".").replace("\u00a0", "").replace(" ", ""))
    except InvalidOperation:
        return None


def _flag(v: str | None) -> bool | None:
    return None if v is None else v.strip().lower() in ("true", "1", "да", "yes", "y")


def _when(v: str | None) -> dt.datetime | None:
    if not v:
        return None
    try:
        return parse_datetime(v, tz=MOSCOW)
    except BadInput:
        return None


def _vat(rate: str | None) -> Decimal | None:
    return _dec(rate.rstrip("%")) if rate else None


# -- wire -> records ------------------------------------------------------------------------------

def is_company(cp: Counterparty) -> bool:
    """A legal entity, decided by the structure (the rule lives in the CommerceML model)."""
    return cp.is_company


def counterparty_name(cp: Counterparty) -> str | None:
    return cp.name or cp.full_name or cp.official_name or \
        " ".join(x for x in (cp.last_name, cp.first_name, cp.middle_name) if x) or None


def buyer_of(doc: Document) -> Counterparty | None:
    """The buyer among the document's counterparties: role Покупатель first, then any with an Ид.

    Entries without Ид and name (an `<Адрес>` some sites put directly under `<Контрагенты>`) are not
    counterparties and are skipped.
    """
    real = [c for c in doc.counterparties if c.id or counterparty_name(c)]
    return next((c for c in real if (c.role or "").strip().lower() == "покупатель"), None) or \
        next((c for c in real if c.id), None) or next(iter(real), None)


def counterparty_record(cp: Counterparty) -> RawRecord:
    phones = [c.value for c in cp.contacts if c.type in _PHONE_TYPES and c.value]
    if is_company(cp):
        legal = next((a for a in cp.addresses if a.kind == "ЮридическийАдрес"), None) or \
            next((a for a in cp.addresses if a.presentation), None)
        f: dict[str, Any] = {
            "Наименование": counterparty_name(cp), "ОфициальноеНаименование": cp.official_name or cp.full_name,
            "ИНН": cp.inn or None, "КПП": cp.kpp or None, "ОГРН": cp.ogrn or None, "ОКПО": cp.okpo or None,
            "ЮридическийАдрес": legal.presentation if legal else None,
            "Почта": cp.email, "Телефон": cp.phone, "Телефоны": phones,
            "Контактное лицо": next((r.name for r in cp.representatives if r.name), None),
            "РасчетныеСчета": [{"НомерСчета": a.number, "БИК": a.bank.bic if a.bank else None,
                                "СчетКорреспондентский": a.bank.correspondent_account if a.bank else None,
                                "Банк": a.bank.name if a.bank else None,
                                "АдресБанка": a.bank.address if a.bank else None}
                               for a in cp.bank_accounts],
        }
        kind = "company"
    else:
        addr = next((a for a in cp.addresses if a.presentation), None)
        f = {"Наименование": counterparty_name(cp), "ПолноеНаименование": cp.full_name,
             "Фамилия": cp.last_name or None, "Имя": cp.first_name or None, "Отчество": cp.middle_name or None,
             "ИНН": cp.inn or None, "Почта": cp.email, "Телефон": cp.phone, "Телефоны": phones,
             "Адрес": addr.presentation if addr else None}
        kind = "user"
    assert cp.id is not None
    # the Ид is the key syncd stamped on records it made here (syncd decides what it names)
    return RawRecord(kind, cp.id, {k: v for k, v in f.items() if v is not None}, stamp=cp.id)


def item_fields(it: Item) -> dict[str, Any]:
    disc = sum((d.sum or Decimal(0) for d in it.discounts), Decimal(0)) if it.discounts else None
    vat = next((t for t in it.taxes if (t.name or "").upper() == "НДС"), None)
    kind = it.requisite("ВидНоменклатуры") or it.requisite("ТипНоменклатуры")
    f = {"Ид": it.product_id, "Наименование": it.name, "Количество": it.quantity, "ЦенаЗаЕдиницу": it.price,
         "Сумма": it.sum, "Скидка": disc, "СтавкаНДС": _vat(vat.rate) if vat else None,
         "НДСВключен": vat.included if vat else None, "Единица": it.unit.name if it.unit else None,
         "ВидНоменклатуры": kind}
    return {k: v for k, v in f.items() if v is not None}


def order_record(doc: Document) -> RawRecord:
    cp = buyer_of(doc)
    company = cp is not None and is_company(cp)
    items = [i for i in doc.items if i.id != DELIVERY_ID]
    delivery = next((i for i in doc.items if i.id == DELIVERY_ID), None)
    paid_sum = _dec(doc.requisite("Сумма оплаты"))
    paid = _flag(doc.requisite("Заказ оплачен"))
    percent = None
    if doc.total and doc.total > 0:
        if paid_sum is not None:
            percent = min(Decimal(100), (paid_sum * 100 / doc.total).quantize(Decimal("0.01")))
        elif paid is not None:
            percent = Decimal(100) if paid else Decimal(0)
    changed = _when(doc.requisite("Дата изменения"))
    cur = doc.currency
    f: dict[str, Any] = {
        "Номер": doc.number, "Дата": doc.date, "Сумма": doc.total,
        "Валюта": "RUB" if cur and cur.strip().lower() in _RUB else cur, "Курс": doc.rate,
        "Комментарий": doc.comment,
        "Статус заказа": doc.status, "Статус заказа ИД": doc.requisite("Статуса заказа ИД"),
        "Заказ оплачен": paid, "Дата оплаты": _when(doc.payment_date), "Сумма оплаты": paid_sum,
        "Процент оплаты": percent, "Отменен": _flag(doc.requisite("Отменен")),
        "Причина отмены": doc.requisite("Причина отмены"),
        "Контрагент": cp.id if cp else None,
        "Покупатель": cp.id if cp and not company else None,
        "Организация": cp.id if cp and company else None,
        "Товары": [item_fields(i) for i in items],
        "Стоимость доставки": (delivery.sum if delivery.sum is not None else delivery.price) if delivery else None,
        "Номер отгрузки": doc.shipment_number, "Проведен": _flag(doc.requisite("Проведен")),
        "Номер по 1С": doc.number_1c, "Дата по 1С": doc.requisite("Дата по 1С"),
        "Адрес доставки": doc.requisite("Адрес доставки"), "Способ доставки": doc.requisite("Способ доставки"),
        "Доставка разрешена": _flag(doc.requisite("Доставка разрешена")),
        "Метод оплаты": doc.requisite("Метод оплаты"),
        "Финальный статус": _flag(doc.requisite("Финальный статус")),
        "Дата изменения": changed, "ПометкаУдаления": doc.deleted or bool(_flag(doc.requisite("ПометкаУдаления"))),
        "НомерВерсии": doc.version, "Сайт": doc.requisite("Сайт"),
        "С сайта": True,      # every order read here belongs to the shop (canonical order.from_shop)
    }
    assert doc.id is not None
    version = doc.version or (changed.isoformat() if changed else None)
    return RawRecord("order", doc.id, {k: v for k, v in f.items() if v is not None}, version=version,
                     source_time=changed or doc.date, stamp=doc.id)


@dataclass
class ExportRead:
    """What one `mode=query` answer held."""

    records: list[RawRecord | Rejected] = field(default_factory=list)
    latest: dt.datetime | None = None        # newest change time seen (the informational cursor)
    orders: int = 0
    before_since: int = 0                    # orders dropped because they are older than `since`
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)   # order Ид -> header, for writes
    names: dict[str, str] = field(default_factory=dict)              # counterparty Ид -> name


def _document_raw(doc: Document) -> str:
    """The document as XML again (for quarantine when the connector, not the reader, rejects it)."""
    from lxml import etree

    from syncd.commerceml import document_element
    return etree.tostring(document_element(doc), encoding="unicode")


def records_from_export(data: bytes, since: dt.datetime | None = None) -> ExportRead:
    """Parse a `mode=query` answer: buyers, products, orders in dependency order; bad documents rejected.

    Each document the reader cannot read becomes one `Rejected` with its whole raw text and line, and
    the next ones are read. A file that cannot be read at all raises `ProtocolError` (the caller must
    not acknowledge it). With `since`, orders whose change time (else date) is older are dropped: the
    exchange cannot select by date.
    """
    out = ExportRead()
    seen: set[tuple[str, str]] = set()
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=MOSCOW)
    for doc in iter_documents(data):
        if isinstance(doc, CmlRejected):
            out.records.append(Rejected(f"line {doc.line}: {doc.reason}", kind="order", external_id=doc.record_id,
                                        line=doc.line, raw=doc.raw))
            continue
        if doc.operation and doc.operation != ORDER_OP:
            continue          # payment / shipment documents of the Контейнер form: not read (yet)
        try:
            recs: list[RawRecord] = []
            cp = buyer_of(doc)
            if cp is not None:
                if not cp.id:
                    raise BadInput("<Контрагент> without <Ид>")
                recs.append(counterparty_record(cp))
            for it in doc.items:
                if it.id and it.id != DELIVERY_ID:
                    recs.append(RawRecord("product", it.product_id or it.id,
                                          {k: v for k, v in item_fields(it).items() if k in PRODUCT_FIELDS}))
            order = order_record(doc)
        except (BadInput, AssertionError) as exc:
            out.records.append(Rejected(f"order {doc.id}: {exc}", kind="order", external_id=doc.id,
                                        raw=_document_raw(doc)))
            continue
        when = order.source_time or doc.date
        if since is not None and when is not None and when < since:
            out.before_since += 1
            continue
        out.orders += 1
        for r in recs:
            if (r.kind, r.external_id) not in seen:
                seen.add((r.kind, r.external_id))
                out.records.append(r)
        out.records.append(order)
        if cp is not None and cp.id and counterparty_name(cp):
            out.names[cp.id] = counterparty_name(cp) or ""
        out.heads[str(doc.id)] = {"Номер": doc.number, "Дата": doc.date, "Валюта": doc.currency,
                                  "Сумма": doc.total, "Контрагент": cp.id if cp else None}
        if order.source_time and (out.latest is None or order.source_time > out.latest):
            out.latest = order.source_time
    return out


# -- records -> wire ------------------------------------------------------------------------------

def _s(v: Any) -> str | None:
    return None if v is None or v == "" else str(v)


def _d(v: Any) -> Decimal | None:
    if v is None or v == "":
        return None
    try:
        return Decimal(str(v).replace(",", "."))
    except InvalidOperation:
        raise BadInput(f"not a number: {v!r}") from None


def _b(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return "true" if v.strip().lower() in ("true", "1", "y", "да", "yes") else "false"
    return "true" if v else "false"


def counterparty_from_fields(kind: str, ext: str, f: Mapping[str, Any], *, known_name: str | None = None
                             ) -> Counterparty:
    """A root-level `Контрагент` for a user/company write; `Наименование` (required) always filled."""
    contacts = []
    if f.get("Почта"):
        contacts.append(Contact("Почта", str(f["Почта"])))
    phone = f.get("Телефон") or next(iter(f.get("Телефоны") or []), None)
    if phone:
        contacts.append(Contact("ТелефонРабочий", str(phone)))
    if kind == "company":
        accounts = tuple(BankAccount(str(a.get("НомерСчета") or ""),
                                     Bank(_s(a.get("Банк")), _s(a.get("БИК")), _s(a.get("СчетКорреспондентский")),
                                          _s(a.get("АдресБанка"))))
                         for a in f.get("РасчетныеСчета") or ())
        addr = (Address("ЮридическийАдрес", str(f["ЮридическийАдрес"])),) if f.get("ЮридическийАдрес") else ()
        reps = (Representative("Контактное лицо", None, str(f["Контактное лицо"])),) \
            if f.get("Контактное лицо") else ()
        name = _s(f.get("Наименование")) or _s(f.get("ОфициальноеНаименование")) or known_name or ext
        return Counterparty(ext, name=name, official_name=_s(f.get("ОфициальноеНаименование")),
                            role="Покупатель", inn=_s(f.get("ИНН")), kpp=_s(f.get("КПП")), okpo=_s(f.get("ОКПО")),
                            ogrn=_s(f.get("ОГРН")), addresses=addr, contacts=tuple(contacts),
                            bank_accounts=accounts, representatives=reps)
    name = _s(f.get("Наименование")) or " ".join(
        str(f[k]) for k in ("Фамилия", "Имя", "Отчество") if f.get(k)) or known_name or ext
    addr = (Address("АдресРегистрации", str(f["Адрес"])),) if f.get("Адрес") else ()
    return Counterparty(ext, name=name, full_name=_s(f.get("ПолноеНаименование")) or name, role="Покупатель",
                        last_name=_s(f.get("Фамилия")), first_name=_s(f.get("Имя")),
                        middle_name=_s(f.get("Отчество")), inn=_s(f.get("ИНН")), addresses=addr,
                        contacts=tuple(contacts))


def _item_from_fields(row: Mapping[str, Any]) -> Item:
    name = _s(row.get("Наименование"))
    pid = _s(row.get("Ид")) or ("syncd-" + hashlib.md5((name or "").encode()).hexdigest()[:16])
    qty, price = _d(row.get("Количество")), _d(row.get("ЦенаЗаЕдиницу"))
    disc = _d(row.get("Скидка"))
    total = _d(row.get("Сумма"))
    if qty is not None and price is not None:
        total = (qty * price - (disc or 0)).quantize(Decimal("0.01"))
    rate = _d(row.get("СтавкаНДС"))
    kind = _s(row.get("ВидНоменклатуры")) or "Товар"
    return Item(pid, name=name or pid, unit=Unit("796", _s(row.get("Единица")) or "шт", "Штука", "PCE"), price=price,
                quantity=qty, sum=total,
                discounts=(Discount("Скидка", disc, None, True),) if disc else (),
                taxes=(Tax("НДС", format(rate.normalize(), "f"), True, None),) if rate is not None else (),
                requisites=(("ВидНоменклатуры", kind), ("ТипНоменклатуры", kind)))


_DOC_REQS = ("Статус заказа", "Заказ оплачен", "Дата оплаты", "Сумма оплаты", "Отменен", "Причина отмены",
             "Номер отгрузки", "Проведен", "Номер по 1С", "Дата по 1С", "Адрес доставки", "Способ доставки",
             "Доставка разрешена", "Метод оплаты")
_BOOL_REQS = {"Заказ оплачен", "Отменен", "Проведен", "Доставка разрешена"}


def order_document(doc_id: str, f: Mapping[str, Any], *, create: bool,
                   head: Mapping[str, Any] | None = None, names: Mapping[str, str] | None = None,
                   links: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None) -> Document:
    """A complete order document from whatever fields the write has.

    `f` is the whole record when the write path gives one, else only the changed fields; the header
    elements CommerceML requires (Номер, Дата, ХозОперация, Роль, Валюта, Курс, Сумма, Контрагенты)
    come from `f`, else from what the last read of this order said (`head`), else defaults.
    """
    head = head or {}
    names = names or {}
    items = [_item_from_fields(r) for r in f.get("Товары") or ()] if f.get("Товары") is not None else []
    delivery = _d(f.get("Стоимость доставки"))
    if delivery and items:
        items.append(Item(DELIVERY_ID, name="Доставка заказа", unit=Unit("796", "шт", "Штука", "PCE"),
                          price=delivery, quantity=Decimal(1), sum=delivery,
                          requisites=(("ВидНоменклатуры", "Услуга"), ("ТипНоменклатуры", "Услуга"))))
    if items:
        total = sum((i.sum or Decimal(0) for i in items), Decimal(0))
    else:
        total = _d(f.get("Сумма"))
        if total is None:
            total = head.get("Сумма") if head.get("Сумма") is not None else Decimal(0)
    reqs = []
    for name in _DOC_REQS:
        if name in f and f[name] is not None:
            v = f[name]
            if name in _BOOL_REQS:
                v = _b(v)
            elif isinstance(v, dt.datetime):
                v = v.astimezone(MOSCOW).strftime("%Y-%m-%d %H:%M:%S")
            reqs.append((name, str(v)))
    buyer = _s(f.get("Покупатель")) or _s(f.get("Организация")) or _s(f.get("Контрагент")) or \
        _s(head.get("Контрагент"))
    linked = (links or {}).get(buyer) if buyer else None
    if linked is not None:
        # the buyer travels with its order (a new one is registered by the shop from it)
        cps: tuple[Counterparty, ...] = (counterparty_from_fields(linked[0], buyer, linked[1],
                                                                  known_name=names.get(buyer)),)
    else:
        cps = (Counterparty(buyer, name=names.get(buyer) or buyer, role="Покупатель"),) if buyer else ()
    when = f.get("Дата")
    if isinstance(when, str):
        when = _when(when)
    if when is None:
        when = head.get("Дата") or dt.datetime.now(MOSCOW)
    cur = _s(f.get("Валюта")) or _s(head.get("Валюта"))
    currency = "руб" if cur is None or cur.strip().lower() in _RUB else cur
    return Document(doc_id, number=_s(f.get("Номер")) or _s(head.get("Номер")) or doc_id, date=when,
                    operation=ORDER_OP, role="Продавец", currency=currency, rate=Decimal(1), total=total,
                    comment=_s(f.get("Комментарий")), counterparties=cps, items=tuple(items),
                    requisites=tuple(reqs))


def zip_one(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return buf.getvalue()


# -- what the site can do -------------------------------------------------------------------------

@dataclass(frozen=True)
class Capabilities:
    """What the shop answered when asked (at `syncd check` and before the first read or write)."""

    session: str                        # how checkauth handed out the session
    zip: bool
    file_limit: int | None
    version: str | None
    imports: bool = True                # sale&mode=import exists: uploaded documents are applied
    import_answer: str = ""
    info: bool = True                   # sale&mode=info exists
    info_answer: str = ""
    upload_only: bool = False           # ShopSettings.upload_only: its admin imports what syncd uploads

    @property
    def writes(self) -> frozenset[str]:
        return WRITES if self.imports or self.upload_only else frozenset()

    def limits(self) -> list[str]:
        """One line per thing the site cannot do (with the fix, where there is one)."""
        out = []
        if not self.imports and self.upload_only:
            out.append(f"this shop stores uploaded order files but does not import them "
                       f"(sale&mode=import: {self.import_answer}); upload_only = true: syncd uploads every write "
                       f"for the site's admin to import and counts it delivered once stored")
        elif not self.imports:
            out.append(f"this shop stores uploaded order files but does not import them "
                       f"(sale&mode=import: {self.import_answer}): syncd reads its orders and writes nothing there "
                       f"— fix: set direction = \"pull\" on the shop's [[maps]] (shop.toml) so nothing is planned "
                       f"for it, or upload_only = true in its [systems.*] for its admin to import the files")
        if not self.info:
            out.append(f"no sale&mode=info ({self.info_answer}): copy its order statuses into the mapping by hand")
        return out

    def describe(self) -> str:
        limit = "none" if self.file_limit is None else str(self.file_limit)
        parts = [f"checkauth ok ({self.session}); init: zip={'yes' if self.zip else 'no'}, file_limit={limit}"
                 + (f", version={self.version}" if self.version else "")]
        return "; ".join(parts + self.limits())


# -- the connector --------------------------------------------------------------------------------

_HEADS_MAX = 50_000        # order headers / counterparty names remembered from reads, for complete uploads


class ShopConnector(BaseConnector):
    natural_ids = True                  # its order Ид is the order's own id, kept as it is by 1C
    keys_are_ids = True                 # a document syncd uploads is known to the shop by the Ид it was given
    embeds_links = True                 # an order carries its buyer
    # the shop shows its users to syncd only inside their orders: a buyer reaches it inside its order
    embedded_kinds = frozenset({"user", "company"})
    unreadable_why = ("the CommerceML exchange exports only orders changed since the last export: a "
                      "record cannot be read back by its id (compared when the shop sends it again)")

    def __init__(self, name: str, settings: ShopSettings, ctx: Any = None) -> None:
        self.name = name
        self.settings = settings
        self.ctx = ctx
        self.client = ExchangeClient(settings, name)
        self.streams = dict(STREAMS)
        self.writes = WRITES
        self.caps: Capabilities | None = None
        self.stats: dict[str, int] = {"queries": 0, "acks": 0, "ack_errors": 0, "uploads": 0, "unreadable": 0}
        self._heads: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._names: OrderedDict[str, str] = OrderedDict()

    # -- health / capabilities -----------------------------------------------------------------
    def probe(self) -> Capabilities:
        """checkauth + init, then ask for sale&mode=import (with a file never sent) and sale&mode=info.

        A site that has the mode answers something (`failure` "file not found" included); one that does
        not answers HTTP 404/405/501 or `failure` "unknown command". Sets `writes` from the result.
        """
        with self.client.lock:
            sess = self.client.login("sale")
            self.client.init("sale", session=sess)
            sess = self.client.session or sess
            imports, import_answer = self._has_mode(sess, "import", filename="syncd-probe.xml")
            info, info_answer = self._has_mode(sess, "info")
        caps = Capabilities(sess.describe(), self.client.zip, self.client.file_limit, self.client.server_version,
                            imports, import_answer, info, info_answer, upload_only=self.settings.upload_only)
        self.caps = caps
        self.writes = caps.writes
        for line in caps.limits():
            log.warning("shop_limit", system=self.name, limit=line)
        return caps

    def _has_mode(self, sess: Session, mode: str, **params: Any) -> tuple[bool, str]:
        try:
            a = self.client.call("sale", mode, session=sess, relogin=False, **params)
        except Unsupported as exc:
            return False, exc.answer
        except SessionLost as exc:
            return True, f"failure \"{str(exc)[:80]}\""
        return True, a.word or "data"

    def capabilities(self) -> Capabilities:
        with self.client.lock:
            return self.caps or self.probe()

    def health(self) -> Health:
        try:
            caps = self.probe()
        except PermanentError as exc:
            return Health(False, str(exc))
        except (TransientError, SessionLost, Unsupported) as exc:
            return Health(False, str(exc))
        return Health(True, caps.describe())

    def describe(self) -> LiveSchema:
        return LiveSchema(kinds={"order": set(ORDER_FIELDS), "user": set(USER_FIELDS) | {"Ид"},
                                 "company": set(COMPANY_FIELDS), "product": set(PRODUCT_FIELDS)})

    # -- read ----------------------------------------------------------------------------------
    def read(self, stream: str, cursor: str | None, *, since: dt.datetime | None = None) -> Iterator[Batch]:
        if stream != "orders":
            raise PermanentError(f"shop has no stream {stream!r}", connector=self.name)
        self.capabilities()
        try:
            with self.client.lock:
                self.client.init("sale")
                sess = self.client.ensure("sale")
                a = self.client.call("sale", "query", session=sess)
        except SessionLost as exc:
            self.client.session = None
            raise TransientError(f"shop: query: the site refused the session ({exc}); logging in again next time",
                                 connector=self.name) from None
        except Unsupported as exc:
            raise PermanentError(f"shop: query: the site has no sale&mode=query ({exc.answer})",
                                 connector=self.name) from None
        if a.word:     # a status line instead of XML
            raise TransientError(f"shop: query: answered {a.word} — {a.message or 'no reason given'}",
                                 connector=self.name)
        self.stats["queries"] += 1
        try:
            got = records_from_export(a.body, since=since)
        except ProtocolError as exc:
            # not one record can be trusted: no `success`, so the shop keeps the export open
            self.stats["unreadable"] += 1
            log.error("shop_export_unreadable", system=self.name, reason=str(exc), bytes=len(a.body))
            raise TransientError(f"shop: query: the export cannot be read ({exc}); not acknowledged, the shop "
                                 f"will send the same orders again", connector=self.name) from None
        self._remember(got)
        if since is not None:
            log.info("shop_backfill_filter", system=self.name, since=since.isoformat(), kept=got.orders,
                     dropped=got.before_since,
                     note="the exchange cannot select by date: orders older than `since` are dropped after reading")
        new_cursor = got.latest.isoformat() if got.latest else cursor
        if not got.records:
            # nothing (or nothing in the period): still commit the point so the shop closes the selection
            self._ack(sess)
            return
        yield Batch("orders", got.records, cursor=new_cursor, ack=lambda: self._ack(sess), total=len(got.records))

    def _remember(self, got: ExportRead) -> None:
        for k, v in got.heads.items():
            self._heads[k] = v
            self._heads.move_to_end(k)
        for k, n in got.names.items():
            self._names[k] = n
            self._names.move_to_end(k)
        while len(self._heads) > _HEADS_MAX:
            self._heads.popitem(last=False)
        while len(self._names) > _HEADS_MAX:
            self._names.popitem(last=False)

    def _ack(self, sess: Session) -> None:
        """`mode=success` in the session that ran the query (after the engine's commit)."""
        try:
            a = self.client.call("sale", "success", session=sess, relogin=False)
        except Unsupported as exc:
            self.stats["ack_errors"] += 1
            log.warning("shop_ack_unsupported", system=self.name, answer=exc.answer,
                        note="the shop has no mode=success: it decides alone what it exports again")
            return
        except (SessionLost, TransientError) as exc:
            self.stats["ack_errors"] += 1
            log.warning("shop_ack_failed", system=self.name, reason=str(exc),
                        note="the shop will export the same orders again")
            return
        if a.word != "success":
            self.stats["ack_errors"] += 1
            log.warning("shop_ack_refused", system=self.name, answer=a.word,
                        note="cookie not accepted; the shop will export the same orders again")
            return
        self.stats["acks"] += 1

    # -- write ---------------------------------------------------------------------------------
    def write(self, op: WriteOp) -> WriteResult:
        if op.kind not in WRITES:
            raise PermanentError(f"shop cannot write {op.kind!r}", connector=self.name, op_id=op.op_id)
        if op.op == "delete":
            raise PermanentError("shop: deleting through the exchange is not supported", connector=self.name,
                                 op_id=op.op_id)
        caps = self.capabilities()
        if not caps.imports and not caps.upload_only:
            raise PermanentError(f"shop: {caps.limits()[0]}; this {op.kind} update was not sent",
                                 connector=self.name, op_id=op.op_id)
        ext = op.external_id if op.op == "update" and op.external_id else op.external_key
        # the whole record when the write path gives one (WriteOp.full), the changed fields on top
        fields = {**(getattr(op, "full", None) or op.fields), **op.fields}
        buf = io.BytesIO()
        opts = {"encoding": self.settings.encoding, "schema_version": self.settings.version}
        try:
            if op.kind == "order":
                write_orders(buf, [order_document(ext, fields, create=op.op == "create", head=self._heads.get(ext),
                                                  names=self._names, links=op.links)], **opts)
            else:
                write_counterparties(buf, [counterparty_from_fields(op.kind, ext, fields,
                                                                    known_name=self._names.get(ext))], **opts)
        except BadInput as exc:
            raise PermanentError(f"shop: the {op.kind} cannot be written as CommerceML: {exc}",
                                 connector=self.name, op_id=op.op_id) from None
        data = buf.getvalue()
        issues = validate(data)
        if issues:
            more = f" (+{len(issues) - 1} more)" if len(issues) > 1 else ""
            raise PermanentError(f"shop: the {op.kind} document is not valid CommerceML, not sent: {issues[0]}{more}",
                                 connector=self.name, op_id=op.op_id)
        self.upload(f"orders-{op.op_id}.xml" if op.kind == "order" else f"contragents-{op.op_id}.xml", data,
                    op_id=op.op_id, kind=op.kind, apply=caps.imports)      # upload_only: the admin imports it
        if op.kind != "order":
            name = counterparty_from_fields(op.kind, ext, fields, known_name=self._names.get(ext)).name
            if name:
                self._names[ext] = name
        return WriteResult(ext, dict(op.fields))

    def _pieces(self, filename: str, data: bytes, op_id: str | None) -> tuple[list[tuple[int, bytes]], str, str]:
        """(offset, body) POSTs, the name they go under, the name to import. Never splits unless allowed."""
        limit = self.client.file_limit
        if limit is None or len(data) <= limit:
            return [(0, data)], filename, filename
        payload, sent_as, zipped = data, filename, None
        if self.client.zip:
            zipped = zip_one(filename, data)
            payload, sent_as = zipped, filename.rsplit(".", 1)[0] + ".zip"
            if len(zipped) <= limit:
                return [(0, zipped)], sent_as, filename
        if self.settings.split_uploads:
            return [(off, payload[off:off + limit]) for off in range(0, len(payload), limit)], sent_as, filename
        size = f"{len(data)} bytes" + (f" ({len(zipped)} zipped)" if zipped is not None else "")
        raise PermanentError(
            f"shop: file: the document is {size}, over the shop's file_limit={limit}; not sent in pieces because "
            f"a site that overwrites each piece keeps only the last one (set split_uploads = true for a site that "
            f"appends them, as 1C-Bitrix does)", connector=self.name, op_id=op_id)

    def upload(self, filename: str, data: bytes, *, op_id: str | None = None, kind: str = "document",
               apply: bool = True) -> None:
        """init, the file (whole, zipped or in allowed chunks), then (`apply`) import until success; one
        restart with a fresh checkauth if the session is lost. Every refusal is a PermanentError naming
        the step and the answer."""
        a: Answer | None = None
        step = "init"
        for attempt in (1, 2):
            try:
                with self.client.lock:
                    if attempt == 2:
                        self.client.login("sale")
                    sess = self.client.ensure("sale")
                    self.client.init("sale", session=sess)
                    sess = self.client.session or sess
                    pieces, sent_as, import_as = self._pieces(filename, data, op_id)
                    step = "file"
                    for off, chunk in pieces:
                        params = {"filename": sent_as}
                        if len(pieces) > 1 and self.settings.chunk_offsets:
                            params["offset"] = str(off)
                        a = self.client.call("sale", "file", method="POST", data=chunk, session=sess, **params)
                        if a.word != "success":
                            raise PermanentError(f"shop: file: {a.word or 'empty answer'} — {a.message or '-'}",
                                                 connector=self.name, op_id=op_id)
                    if not apply:
                        self.stats["uploads"] += 1
                        return
                    step = "import"
                    for _ in range(self.settings.import_polls):
                        a = self.client.call("sale", "import", session=sess, filename=import_as)
                        if a.word != "progress":
                            break
                    else:
                        raise TransientError("shop: import: still `progress` after "
                                             f"{self.settings.import_polls} polls", connector=self.name,
                                             op_id=op_id)
            except SessionLost as exc:
                if attempt == 2:
                    raise PermanentError(f"shop: {step}: failure — {exc} (again after a fresh checkauth)",
                                         connector=self.name, op_id=op_id) from None
                log.info("shop_upload_restart", system=self.name, reason=str(exc))
                continue
            except Unsupported as exc:
                if exc.mode == "import" and self.caps is not None:
                    self.caps = replace(self.caps, imports=False, import_answer=exc.answer)
                    self.writes = self.caps.writes
                raise PermanentError(f"shop: {exc.mode}: the site has no such mode ({exc.answer}); "
                                     f"the {kind} was not applied", connector=self.name, op_id=op_id) from None
            self.stats["uploads"] += 1
            assert a is not None
            if a.word != "success":
                raise PermanentError(f"shop: import: {a.word or 'empty answer'} — {a.message or '-'}",
                                     connector=self.name, op_id=op_id)
            low = a.message.lower()
            if "ошиб" in low or "error" in low:
                raise PermanentError(f"shop: import: success with errors — {a.message}", connector=self.name,
                                     op_id=op_id)
            return

    def close(self) -> None:
        self.client.close()


def answer_text(a: Answer) -> str:
    return "\n".join(a.lines)
