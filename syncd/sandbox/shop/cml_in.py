"""What the sandbox shop reads from an uploaded file: its own small CommerceML parser, on lxml directly.

The sandbox is the peer that checks syncd's shop connector, and the connector writes its documents
with `syncd.commerceml`. Reading them back with syncd's own reader would let a bug the writer and the
reader share (a tag misnamed both ways, a number format both get wrong) pass unseen, so the shop
parses uploads here, independently, the way Bitrix's loader walks the tree: root-level (or
`Контейнер`) `Документ`, root-level `Контрагенты/Контрагент`, the catalog's `Каталог/Товары/Товар`
and the offers' `Предложения/Предложение`. Names are compared without the 1C namespace.

Whole-file problems (not XML, a DOCTYPE, another root) raise `Unreadable`: the import answers
`failure`. A record with a bad value (a date that does not exist, a sum written in words, no `Ид`)
is one `Bad` with its line, and the rest of the file is applied, as Bitrix's loader does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from lxml import etree

ROOT = "КоммерческаяИнформация"
EMAIL_TYPES = {"почта", "электронная почта", "e-mail", "email"}
ADDRESS_TAGS = ("ЮридическийАдрес", "АдресРегистрации", "Адрес", "ФактическийАдрес", "ПочтовыйАдрес")


class Unreadable(Exception):
    """The file as a whole cannot be read (the import answers `failure` with this text)."""


class _BadValue(Exception):
    def __init__(self, reason: str, line: int | None) -> None:
        super().__init__(reason)
        self.reason, self.line = reason, line


@dataclass
class Bad:
    """A record that could not be read; the others are applied."""

    line: int | None
    reason: str
    record_id: str | None = None


@dataclass
class Account:
    account: str
    bik: str = ""
    corr_account: str = ""
    bank_name: str = ""
    bank_address: str = ""


@dataclass
class Cp:
    """A counterparty (Контрагент), only what the element carries (None = absent)."""

    line: int | None
    id: str | None = None
    name: str | None = None
    full_name: str | None = None
    official_name: str | None = None
    last_name: str | None = None
    first_name: str | None = None
    middle_name: str | None = None
    inn: str | None = None
    kpp: str | None = None
    ogrn: str | None = None
    okpo: str | None = None
    email: str | None = None
    phone: str | None = None
    addresses: dict[str, str] = field(default_factory=dict)     # element name -> Представление
    accounts: list[Account] = field(default_factory=list)
    contact_person: str | None = None

    @property
    def is_company(self) -> bool:
        """A legal entity by its structure, as Bitrix's loader tells them apart: an official name,
        a legal address, a КПП or ОГРН, a 10-digit ИНН."""
        return bool(self.official_name or self.kpp or self.ogrn or "ЮридическийАдрес" in self.addresses
                    or (self.inn and len(self.inn) == 10))


@dataclass
class Line:
    id: str | None
    name: str | None
    price: Decimal | None
    quantity: Decimal | None
    sum: Decimal | None
    discount: Decimal = Decimal(0)
    vat_rate: str | None = None
    unit: str | None = None


@dataclass
class Doc:
    line: int | None
    id: str
    number: str | None = None
    date: dt.datetime | None = None
    operation: str | None = None
    currency: str | None = None
    comment: str | None = None
    counterparties: list[Cp] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    requisites: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Goods:
    """A catalog product (import.xml)."""

    id: str
    name: str | None = None
    sku: str | None = None
    deleted: bool = False


@dataclass
class OfferIn:
    """An offer (offers.xml): the price of the first price type and the stock."""

    id: str
    name: str | None = None
    price: Decimal | None = None
    quantity: Decimal | None = None


# ---- the tree ----------------------------------------------------------------------------------

def _tag(el: Any) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _kids(el: Any, name: str) -> list[Any]:
    return [c for c in el if _tag(c) == name]


def _kid(el: Any, name: str) -> Any:
    for c in el:
        if _tag(c) == name:
            return c
    return None


def _text(el: Any, name: str) -> str | None:
    k = _kid(el, name)
    return None if k is None else (k.text or "").strip()


def _dec(el: Any, name: str) -> Decimal | None:
    k = _kid(el, name)
    if k is None or not (k.text or "").strip():
        return None
    raw = (k.text or "").strip()
    try:
        return Decimal(raw.replace("\xa0", "").replace(" ", "").replace(",", "."))
    except InvalidOperation:
        raise _BadValue(f"<{name}>: {raw!r} — не число", k.sourceline) from None


def _when(el: Any, tz: dt.tzinfo) -> dt.datetime | None:
    d = _kid(el, "Дата")
    if d is None or not (d.text or "").strip():
        return None
    date_t, time_t = (d.text or "").strip(), (_text(el, "Время") or "00:00:00")
    try:
        if "T" in date_t:
            when = dt.datetime.fromisoformat(date_t)
        else:
            when = dt.datetime.combine(dt.date.fromisoformat(date_t), dt.time.fromisoformat(time_t))
    except ValueError:
        raise _BadValue(f"<Дата>/<Время>: {date_t!r} {time_t!r} — не дата", d.sourceline) from None
    return when if when.tzinfo else when.replace(tzinfo=tz)


def parse(data: bytes) -> Any:
    """The root element of an uploaded file; no DTD, no entities, no network."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                             remove_comments=True, remove_pis=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        raise Unreadable(f"строка {e.lineno}: {e.msg}") from None
    if root.getroottree().docinfo.doctype:
        raise Unreadable("DOCTYPE не допускается")
    if _tag(root) != ROOT:
        raise Unreadable(f"корневой элемент <{_tag(root)}>, ожидался <{ROOT}>")
    return root


# ---- records -----------------------------------------------------------------------------------

def counterparty(el: Any) -> Cp:
    cp = Cp(el.sourceline)
    simple = {"Ид": "id", "Наименование": "name", "ПолноеНаименование": "full_name",
              "ОфициальноеНаименование": "official_name", "Фамилия": "last_name", "Имя": "first_name",
              "Отчество": "middle_name", "ИНН": "inn", "КПП": "kpp", "ОГРН": "ogrn", "ОКПО": "okpo"}

    def walk(node: Any) -> None:
        for c in node:
            tag = _tag(c)
            if tag in simple and len(c) == 0 and getattr(cp, simple[tag]) is None:
                setattr(cp, simple[tag], (c.text or "").strip())
            elif tag in ("РеквизитыЮрЛица", "РеквизитыФизЛица"):
                walk(c)
            elif tag in ADDRESS_TAGS:
                shown = _text(c, "Представление")
                if shown:
                    cp.addresses.setdefault(tag, shown)
            elif tag == "Контакты":
                for k in _kids(c, "Контакт"):
                    typ, value = (_text(k, "Тип") or "").lower(), _text(k, "Значение") or ""
                    if typ in EMAIL_TYPES and cp.email is None:
                        cp.email = value
                    elif typ.startswith("телефон") and cp.phone is None:
                        cp.phone = value
            elif tag == "РасчетныеСчета":
                for a in _kids(c, "РасчетныйСчет"):
                    bank = _kid(a, "Банк")
                    acc = Account(_text(a, "НомерСчета") or "")
                    if bank is not None:
                        addr = _kid(bank, "Адрес")
                        acc.bik = _text(bank, "БИК") or ""
                        acc.corr_account = _text(bank, "СчетКорреспондентский") or ""
                        acc.bank_name = _text(bank, "Наименование") or ""
                        if addr is not None:
                            acc.bank_address = _text(addr, "Представление") or (addr.text or "").strip()
                    cp.accounts.append(acc)
            elif tag == "Представители":
                for r in _kids(c, "Представитель"):
                    inner = _kid(r, "Контрагент")
                    name = _text(inner if inner is not None else r, "Наименование")
                    if name and cp.contact_person is None:
                        cp.contact_person = name
    walk(el)
    return cp


def _line(el: Any) -> Line:
    unit = _kid(el, "БазоваяЕдиница")
    rate = None
    for group, one in (("СтавкиНалогов", "СтавкаНалога"), ("Налоги", "Налог")):
        g = _kid(el, group)
        for t in _kids(g, one) if g is not None else []:
            rate = rate or _text(t, "Ставка")
    discount = Decimal(0)
    ds = _kid(el, "Скидки")
    for d in _kids(ds, "Скидка") if ds is not None else []:
        discount += _dec(d, "Сумма") or Decimal(0)
    unit_name = None
    if unit is not None:
        unit_name = (unit.text or "").strip() or _text(unit, "НаименованиеКраткое") or None
    return Line(_text(el, "Ид"), _text(el, "Наименование"), _dec(el, "ЦенаЗаЕдиницу"), _dec(el, "Количество"),
                _dec(el, "Сумма"), discount, rate, unit_name)


def document(el: Any, tz: dt.tzinfo) -> Doc:
    doc_id = _text(el, "Ид")
    if not doc_id:
        raise _BadValue("<Документ> без <Ид>", el.sourceline)
    doc = Doc(el.sourceline, doc_id, _text(el, "Номер"), _when(el, tz), _text(el, "ХозОперация"),
              _text(el, "Валюта"), _text(el, "Комментарий"))
    _dec(el, "Сумма")                  # a header sum that is no number makes the document unreadable
    cps = _kid(el, "Контрагенты")
    doc.counterparties = [counterparty(c) for c in _kids(cps, "Контрагент")] if cps is not None else []
    goods = _kid(el, "Товары")
    doc.lines = [_line(t) for t in _kids(goods, "Товар")] if goods is not None else []
    reqs = _kid(el, "ЗначенияРеквизитов")
    for r in _kids(reqs, "ЗначениеРеквизита") if reqs is not None else []:
        name = _text(r, "Наименование")
        if name is not None:
            doc.requisites.append((name, "\n".join((v.text or "").strip() for v in _kids(r, "Значение"))))
    return doc


def sale_records(data: bytes, tz: dt.tzinfo) -> Iterator[Doc | Cp | Bad]:
    """The order documents and root-level counterparties of an uploaded sale file, in file order."""
    root = parse(data)
    for el in root:
        tag = _tag(el)
        if tag == "Документ":
            found = [el]
        elif tag == "Контейнер":
            found = _kids(el, "Документ")
        elif tag == "Контрагенты":
            for c in _kids(el, "Контрагент"):
                yield counterparty(c)
            continue
        else:
            continue
        for d in found:
            try:
                yield document(d, tz)
            except _BadValue as e:
                yield Bad(e.line, e.reason, _text(d, "Ид"))


def catalog_records(data: bytes) -> Iterator[Goods | OfferIn | Bad]:
    """Products of import.xml (`Каталог/Товары/Товар`) and offers of offers.xml."""
    root = parse(data)
    for section in root:
        tag = _tag(section)
        if tag == "Каталог":
            goods = _kid(section, "Товары")
            for t in _kids(goods, "Товар") if goods is not None else []:
                pid = _text(t, "Ид")
                if not pid:
                    yield Bad(t.sourceline, "<Товар> без <Ид>")
                    continue
                mark = (_text(t, "ПометкаУдаления") or "").lower() == "true"
                deleted = t.get("Статус") == "Удален" or _text(t, "Статус") == "Удален" or mark
                yield Goods(pid, _text(t, "Наименование"), _text(t, "Артикул"), deleted)
        elif tag in ("ПакетПредложений", "ИзмененияПакетаПредложений"):
            offers = _kid(section, "Предложения")
            for o in _kids(offers, "Предложение") if offers is not None else []:
                oid = _text(o, "Ид")
                if not oid:
                    yield Bad(o.sourceline, "<Предложение> без <Ид>")
                    continue
                try:
                    prices = _kid(o, "Цены")
                    first = _kids(prices, "Цена")[0] if prices is not None and len(prices) else None
                    yield OfferIn(oid, _text(o, "Наименование"),
                                  _dec(first, "ЦенаЗаЕдиницу") if first is not None else None,
                                  _dec(o, "Количество"))
                except _BadValue as e:
                    yield Bad(e.line, e.reason, oid)


__all__ = ["Account", "Bad", "Cp", "Doc", "Goods", "Line", "OfferIn", "Unreadable", "catalog_records",
           "parse", "sale_records"]
