"""CommerceML objects <-> the flat system records syncd maps (field names are CommerceML's own).

Pulled from 1C (what `mode=import` reads):

* ``order`` — an order `Документ` (ХозОперация «Заказ товара»): ``Ид``, ``Номер``, ``Дата`` (ISO),
  ``ХозОперация``, ``Валюта``, ``Курс``, ``Сумма``, ``Комментарий``, ``НомерВерсии``, ``ПометкаУдаления``,
  ``Контрагент`` (Ид of its legal-entity counterparty), ``Покупатель`` (Ид of its person counterparty),
  ``Товары`` (list of {Ид, Наименование, ЦенаЗаЕдиницу, Количество, Сумма, Единица, СтавкаНДС}) and every
  ``ЗначенияРеквизитов`` row as a key of its own (``Заказ оплачен``, ``Дата оплаты``, ``Статус заказа``,
  ``Номер по 1С``, ``Дата по 1С``, ``Проведен``, ``Отгружено``, ``Номер отгрузки``, ``Документы подписаны``…;
  date requisites are turned into ISO date-times in Moscow time). A payment `Документ` (ХозОперация
  «Выплата безналичных денег» / «Выплата наличных денег» / «Эквайринговая операция») linked by
  ``Основание`` becomes a partial ``order`` record of its base order: ``Заказ оплачен`` = true,
  ``Дата оплаты``, ``Сумма оплаты``, ``Номер платежного документа``; a shipment («Отпуск товара»,
  «Реализация товаров») becomes ``Отгружено`` = true, ``Номер отгрузки``, ``Дата отгрузки``.
* ``counterparty`` (legal entity: has КПП, a 10-digit ИНН or an official name) and ``person``
  (an individual) — ``Ид``, ``Наименование``, ``ПолноеНаименование``, ``ОфициальноеНаименование``,
  ``Фамилия``, ``Имя``, ``Отчество``, ``ИНН``, ``КПП``, ``ОКПО``, ``ОГРН``, ``ЮридическийАдрес``,
  ``АдресРегистрации``, ``ФактическийАдрес`` (their ``Представление``), ``Телефон``, ``Почта``,
  ``РасчетныеСчета`` (list of {НомерСчета, БИК, СчетКорреспондентский, Банк, АдресБанка}).
* ``product`` — catalog `Товар`: ``Ид``, ``Артикул``, ``Наименование``, ``Описание``, ``Штрихкод``,
  ``Единица``, ``СтавкаНДС``, ``Активен``; an `Предложение` (offers.xml): ``Ид``, ``Артикул``,
  ``Наименование``, ``Цена``, ``Валюта``, ``Количество`` (stock; a mapping decides whether it is used).

Written to 1C (what `mode=query` serves) uses the same names; keys that are not header or structure
names become ``ЗначенияРеквизитов`` rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from syncd.commerceml import (
    MOSCOW,
    Address,
    Bank,
    BankAccount,
    Contact,
    Counterparty,
    Document,
    Item,
    Offer,
    Product,
    Tax,
    Unit,
    parse_datetime,
)
from syncd.connector import RawRecord
from syncd.errors import BadInput

PAYMENT_OPS = {"Выплата безналичных денег", "Выплата наличных денег", "Эквайринговая операция",
               "Оплата", "Поступление безналичных денежных средств"}
SHIPMENT_OPS = {"Отпуск товара", "Реализация товаров", "Отгрузка"}
ORDER_OP = "Заказ товара"
DATE_REQUISITES = {"Дата оплаты", "Дата отгрузки", "Дата по 1С", "Дата изменения статуса",
                   "Дата разрешения доставки", "Дата отмены заказа"}

# order keys that are header/structure, not ЗначенияРеквизитов rows
ORDER_HEADER = {"Ид", "Номер", "Дата", "ХозОперация", "Роль", "Валюта", "Курс", "Сумма", "Комментарий",
                "НомерВерсии", "ПометкаУдаления", "Контрагент", "Покупатель", "Товары"}
_ADDRESS_KEYS = ("ЮридическийАдрес", "АдресРегистрации", "ФактическийАдрес")


def iso(d: dt.datetime | None) -> str | None:
    return d.isoformat() if d is not None else None


def _date_req(value: str) -> str:
    try:
        d = parse_datetime(value, tz=MOSCOW)
    except BadInput:
        return value                   # left as it came: the mapping quarantines it with the name
    return iso(d) or ""


# ---- 1C -> records ---------------------------------------------------------------------------

def counterparty_kind(cp: Counterparty) -> str:
    return "counterparty" if cp.is_company else "person"


def counterparty_fields(cp: Counterparty) -> dict[str, Any]:
    f: dict[str, Any] = {"Ид": cp.id}
    for key, value in (("Наименование", cp.name), ("ПолноеНаименование", cp.full_name),
                       ("ОфициальноеНаименование", cp.official_name), ("Фамилия", cp.last_name),
                       ("Имя", cp.first_name), ("Отчество", cp.middle_name), ("ИНН", cp.inn),
                       ("КПП", cp.kpp), ("ОКПО", cp.okpo), ("ОГРН", cp.ogrn)):
        if value not in (None, ""):
            f[key] = value
    for a in cp.addresses:
        if a.kind in _ADDRESS_KEYS and a.presentation:
            f.setdefault(a.kind, a.presentation)
    if cp.phone:
        f["Телефон"] = cp.phone
    if cp.email:
        f["Почта"] = cp.email
    if cp.bank_accounts:
        f["РасчетныеСчета"] = [
            {k: v for k, v in (("НомерСчета", acc.number),
                               ("БИК", acc.bank.bic if acc.bank else None),
                               ("СчетКорреспондентский", acc.bank.correspondent_account if acc.bank else None),
                               ("Банк", acc.bank.name if acc.bank else None),
                               ("АдресБанка", acc.bank.address if acc.bank else None)) if v not in (None, "")}
            for acc in cp.bank_accounts]
    return f


KnownKind = Callable[[str], Any]


def counterparty_record(cp: Counterparty, version: str | None, known: KnownKind | None = None) -> RawRecord:
    """`known(Ид)` names the kind syncd sent it as (an ИП sent as a company stays a company)."""
    if not cp.id:
        raise BadInput("<Контрагент> without <Ид>")
    kind = (known(cp.id) if known else None) or counterparty_kind(cp)
    return RawRecord(kind, cp.id, counterparty_fields(cp), version=version,
                     stamp=cp.id)


def _item_fields(it: Item) -> dict[str, Any]:
    f: dict[str, Any] = {}
    for key, value in (("Ид", it.id), ("Наименование", it.name), ("ЦенаЗаЕдиницу", it.price),
                       ("Количество", it.quantity), ("Сумма", it.sum),
                       ("Единица", it.unit.name if it.unit else None)):
        if value is not None:
            f[key] = value
    vat = next((t for t in it.taxes if (t.name or "").upper() == "НДС"), None)
    if vat is not None and vat.rate:
        rate = vat.rate.replace("%", "").strip()
        if rate.replace(".", "", 1).isdigit():
            f["СтавкаНДС"] = rate
    kind = it.requisite("ТипНоменклатуры") or it.requisite("ВидНоменклатуры")
    if kind:
        f["ТипНоменклатуры"] = kind
    return f


def order_record(doc: Document, version: str | None, known: KnownKind | None = None
                 ) -> tuple[list[RawRecord], RawRecord]:
    """An order document -> (its counterparties' records, the order record)."""
    assert doc.id
    f: dict[str, Any] = {"Ид": doc.id}
    for key, value in (("Номер", doc.number), ("Дата", iso(doc.date)), ("ХозОперация", doc.operation),
                       ("Валюта", doc.currency), ("Курс", doc.rate), ("Сумма", doc.total),
                       ("Комментарий", doc.comment), ("НомерВерсии", doc.version)):
        if value is not None:
            f[key] = value
    f["ПометкаУдаления"] = "true" if doc.deleted else "false"
    cps = []
    for cp in doc.counterparties:
        if not cp.id:
            continue
        rec = counterparty_record(cp, version, known)
        cps.append(rec)
        key = "Контрагент" if rec.kind == "counterparty" else "Покупатель"
        f.setdefault(key, cp.id)
    if doc.items:
        f["Товары"] = [_item_fields(it) for it in doc.items]
    for name, value in doc.requisites:
        f[name] = _date_req(value) if name in DATE_REQUISITES else value
    return cps, RawRecord("order", doc.id, f, version=version, source_time=None,
                          stamp=doc.id)


def linked_fields(doc: Document) -> dict[str, Any] | None:
    """A payment / shipment document -> the order fields it changes (None: not such a document)."""
    op = (doc.operation or "").strip()
    when = iso(doc.date)
    if op in PAYMENT_OPS:
        f: dict[str, Any] = {"Заказ оплачен": "true"}
        if when:
            f["Дата оплаты"] = when
        if doc.total is not None:
            f["Сумма оплаты"] = doc.total
        if doc.number:
            f["Номер платежного документа"] = doc.number
    elif op in SHIPMENT_OPS:
        f = {"Отгружено": "true"}
        if when:
            f["Дата отгрузки"] = when
        if doc.number:
            f["Номер отгрузки"] = doc.number
    else:
        return None
    for name, value in doc.requisites:       # e.g. «Проведен», «Номер по 1С» of the payment itself
        if name in ("Документы подписаны", "Статус заказа"):
            f[name] = value
    if doc.deleted:                          # a payment/shipment marked for deletion takes it back
        f = {k: ("false" if v == "true" else v) for k, v in f.items() if k in ("Заказ оплачен", "Отгружено")}
    return f


def product_record(p: Product, version: str | None) -> RawRecord:
    f: dict[str, Any] = {"Ид": p.id}
    for key, value in (("Артикул", p.sku), ("Наименование", p.name), ("Описание", p.description),
                       ("Штрихкод", p.barcode), ("Единица", p.unit.name if p.unit else None)):
        if value not in (None, ""):
            f[key] = value
    vat = next((t for t in p.taxes if (t.name or "").upper() == "НДС"), None)
    if vat is not None and vat.rate and vat.rate.replace("%", "").strip().isdigit():
        f["СтавкаНДС"] = vat.rate.replace("%", "").strip()
    f["Активен"] = "false" if p.deleted else "true"
    return RawRecord("product", p.id, f, version=version, deleted=False)


def offer_record(o: Offer, version: str | None, price_type: str | None,
                 price_type_names: Mapping[str, str]) -> RawRecord:
    f: dict[str, Any] = {"Ид": o.id}
    if o.sku:
        f["Артикул"] = o.sku
    if o.name:
        f["Наименование"] = o.name
    price = None
    for p in o.prices:
        if price_type is None or p.type_id == price_type or price_type_names.get(p.type_id or "") == price_type:
            price = p
            break
    if price is not None and price.price is not None:
        f["Цена"] = price.price
        if price.currency:
            f["Валюта"] = price.currency
    qty = o.quantity
    if qty is None and o.stocks:
        qty = sum((s.quantity or Decimal(0) for s in o.stocks), Decimal(0))
    if qty is not None:
        f["Количество"] = qty
    if o.deleted:
        f["Активен"] = "false"
    return RawRecord("product", o.id, f, version=version)


# ---- records -> 1C ---------------------------------------------------------------------------

def _s(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _dec(v: Any) -> Decimal | None:
    if v in (None, ""):
        return None
    try:
        return Decimal(str(v).replace(",", "."))
    except Exception:  # noqa: BLE001 - a value the mapping let through that is not a number
        return None


def counterparty_from_fields(ext: str, f: Mapping[str, Any], kind: str) -> Counterparty:
    accounts = []
    for acc in f.get("РасчетныеСчета") or ():
        if not isinstance(acc, Mapping) or not acc.get("НомерСчета"):
            continue
        bank = Bank(name=_s(acc.get("Банк")), bic=_s(acc.get("БИК")),
                    correspondent_account=_s(acc.get("СчетКорреспондентский")), address=_s(acc.get("АдресБанка")))
        accounts.append(BankAccount(str(acc["НомерСчета"]), bank))
    contacts = []
    if f.get("Почта"):
        contacts.append(Contact("Почта", str(f["Почта"])))
    if f.get("Телефон"):
        contacts.append(Contact("ТелефонРабочий", str(f["Телефон"])))
    addresses = [Address(k, str(f[k])) for k in _ADDRESS_KEYS if f.get(k)]
    name = _s(f.get("Наименование"))
    if name is None and kind == "person":
        name = " ".join(str(f[k]) for k in ("Фамилия", "Имя", "Отчество") if f.get(k)) or None
    full = _s(f.get("ПолноеНаименование")) or name
    return Counterparty(
        id=ext, name=name, full_name=full,
        official_name=_s(f.get("ОфициальноеНаименование")) or (full if kind == "counterparty" else None),
        role="Покупатель", last_name=_s(f.get("Фамилия")), first_name=_s(f.get("Имя")),
        middle_name=_s(f.get("Отчество")), inn=_s(f.get("ИНН")), kpp=_s(f.get("КПП")),
        okpo=_s(f.get("ОКПО")), ogrn=_s(f.get("ОГРН")), addresses=tuple(addresses),
        contacts=tuple(contacts), bank_accounts=tuple(accounts))


def _item_id(row: Mapping[str, Any]) -> str:
    """A stable Ид for a row whose product 1C does not know (1C matches rows on Ид)."""
    import hashlib

    return "syncd-item-" + hashlib.sha1(str(row.get("Наименование", "")).encode()).hexdigest()[:16]


def _items(rows: Iterable[Any]) -> tuple[Item, ...]:
    out = []
    for r in rows or ():
        if not isinstance(r, Mapping):
            continue
        rate = _s(r.get("СтавкаНДС"))
        kind = _s(r.get("ТипНоменклатуры")) or "Товар"
        out.append(Item(
            id=_s(r.get("Ид")) or _item_id(r), name=_s(r.get("Наименование")),
            unit=Unit(code="796", full_name="Штука", intl_abbr="PCE", name=_s(r.get("Единица")) or "шт"),
            price=_dec(r.get("ЦенаЗаЕдиницу")), quantity=_dec(r.get("Количество")),
            sum=_dec(r.get("Сумма")) if r.get("Сумма") is not None else (
                (_dec(r.get("ЦенаЗаЕдиницу")) or 0) * (_dec(r.get("Количество")) or 0) or None),
            taxes=(Tax("НДС", rate, True),) if rate else (),
            requisites=(("ВидНоменклатуры", kind), ("ТипНоменклатуры", kind))))
    return tuple(out)


def order_from_fields(ext: str, f: Mapping[str, Any], counterparties: Iterable[Counterparty]) -> Document:
    date = None
    if f.get("Дата"):
        try:
            date = parse_datetime(str(f["Дата"]), tz=MOSCOW)
        except BadInput:
            date = None
    reqs = tuple((k, _s(v) or "") for k, v in f.items() if k not in ORDER_HEADER and v is not None
                 and not isinstance(v, (list, dict, tuple)))
    return Document(
        id=ext, number=_s(f.get("Номер")) or ext, date=date or dt.datetime.now(MOSCOW),
        operation=ORDER_OP, role="Продавец", currency=_s(f.get("Валюта")) or "руб",
        rate=_dec(f.get("Курс")) or Decimal(1), total=_dec(f.get("Сумма")),
        comment=_s(f.get("Комментарий")), version=_s(f.get("НомерВерсии")),
        deleted=str(f.get("ПометкаУдаления", "")).lower() == "true",
        counterparties=tuple(counterparties), items=_items(f.get("Товары") or ()), requisites=reqs)
