"""CommerceML 2 writers that 1C and 1C-Bitrix accept, streaming through `lxml.etree.xmlfile`.

Records are built one at a time and written out at once, so a file of any size is produced in flat
memory. Output: `<?xml version="1.0" encoding="…"?>`, root `КоммерческаяИнформация` with `ВерсияСхемы`
and `ДатаФормирования`, windows-1251 by default (what 1C expects), UTF-8 on request, optional BOM.
Characters the chosen encoding cannot hold are written as character references.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import IO, Any, Iterable

from lxml import etree

from .encoding import BOM, MOSCOW, format_decimal
from .model import (Address, BankAccount, Counterparty, Discount, Document, Group, Item, Offer,
                    PriceType, Product, Property, Tax, Unit, Warehouse)

ROOT = "КоммерческаяИнформация"
_ENCODINGS = {"utf-8": "UTF-8", "utf8": "UTF-8", "windows-1251": "windows-1251", "cp1251": "windows-1251"}

_SE = etree.SubElement


def _t(parent: Any, tag: str, value: Any) -> None:
    """Append <tag>value</tag> unless value is None."""
    if value is None:
        return
    el = _SE(parent, tag)
    if isinstance(value, Decimal):
        el.text = format_decimal(value)
    elif isinstance(value, bool):
        el.text = "true" if value else "false"
    else:
        el.text = str(value)


def _pairs(parent: Any, container: str, row: str, pairs: Iterable[tuple[str, str]],
           key: str = "Наименование", value: str = "Значение") -> None:
    pairs = tuple(pairs)
    if not pairs:
        return
    c = _SE(parent, container)
    for k, v in pairs:
        r = _SE(c, row)
        _SE(r, key).text = k
        _SE(r, value).text = v


def _unit(parent: Any, unit: Unit | None) -> None:
    if unit is None:
        return
    attrib = {}
    if unit.code is not None:
        attrib["Код"] = unit.code
    if unit.full_name is not None:
        attrib["НаименованиеПолное"] = unit.full_name
    if unit.intl_abbr is not None:
        attrib["МеждународноеСокращение"] = unit.intl_abbr
    el = _SE(parent, "БазоваяЕдиница", attrib)
    if unit.name is not None:
        el.text = unit.name


def _taxes(parent: Any, taxes: tuple[Tax, ...]) -> None:
    if not taxes:
        return
    c = _SE(parent, "Налоги")
    for t in taxes:
        el = _SE(c, "Налог")
        _t(el, "Наименование", t.name)
        _t(el, "УчтеноВСумме", t.included)
        _t(el, "Сумма", t.sum)
        _t(el, "Ставка", t.rate)


def _discounts(parent: Any, discounts: tuple[Discount, ...]) -> None:
    if not discounts:
        return
    c = _SE(parent, "Скидки")
    for d in discounts:
        el = _SE(c, "Скидка")
        _t(el, "Наименование", d.name)
        _t(el, "Сумма", d.sum)
        _t(el, "Процент", d.percent)
        _t(el, "УчтеноВСумме", d.included)


def _address(parent: Any, a: Address) -> None:
    el = _SE(parent, a.kind)
    _t(el, "Представление", a.presentation)
    for f in a.fields:
        af = _SE(el, "АдресноеПоле")
        _SE(af, "Тип").text = f.type
        _SE(af, "Значение").text = f.value


def _account(parent: Any, acc: BankAccount) -> None:
    el = _SE(parent, "РасчетныйСчет")
    _t(el, "НомерСчета", acc.number)
    if acc.bank is not None:
        b = _SE(el, "Банк")
        _t(b, "Наименование", acc.bank.name)
        _t(b, "БИК", acc.bank.bic)
        _t(b, "СчетКорреспондентский", acc.bank.correspondent_account)
        if acc.bank.address is not None:
            _t(_SE(b, "Адрес"), "Представление", acc.bank.address)


def counterparty_element(cp: Counterparty) -> etree._Element:
    el = etree.Element("Контрагент")
    _t(el, "Ид", cp.id)
    _t(el, "Наименование", cp.name)
    _t(el, "ПолноеНаименование", cp.full_name)
    _t(el, "ОфициальноеНаименование", cp.official_name)
    _t(el, "Роль", cp.role)
    _t(el, "Фамилия", cp.last_name)
    _t(el, "Имя", cp.first_name)
    _t(el, "Отчество", cp.middle_name)
    _t(el, "ИНН", cp.inn)
    _t(el, "КПП", cp.kpp)
    _t(el, "ОКПО", cp.okpo)
    _t(el, "ОГРН", cp.ogrn)
    for a in cp.addresses:
        _address(el, a)
    if cp.contacts:
        c = _SE(el, "Контакты")
        for k in cp.contacts:
            ke = _SE(c, "Контакт")
            _SE(ke, "Тип").text = k.type
            _SE(ke, "Значение").text = k.value
    if cp.bank_accounts:
        c = _SE(el, "РасчетныеСчета")
        for acc in cp.bank_accounts:
            _account(c, acc)
    if cp.representatives:
        c = _SE(el, "Представители")
        for r in cp.representatives:
            re_ = _SE(c, "Представитель")
            _t(re_, "Отношение", r.relation)
            _t(re_, "Ид", r.id)
            _t(re_, "Наименование", r.name)
    return el


def item_element(item: Item) -> etree._Element:
    el = etree.Element("Товар")
    _t(el, "Ид", item.id)
    _t(el, "ИдКаталога", item.catalog_id)
    _t(el, "Наименование", item.name)
    _unit(el, item.unit)
    _t(el, "ЦенаЗаЕдиницу", item.price)
    _t(el, "Количество", item.quantity)
    _t(el, "Сумма", item.sum)
    _discounts(el, item.discounts)
    _taxes(el, item.taxes)
    _pairs(el, "ЗначенияРеквизитов", "ЗначениеРеквизита", item.requisites)
    return el


def document_element(doc: Document, tz: tzinfo = MOSCOW) -> etree._Element:
    el = etree.Element("Документ")
    _t(el, "Ид", doc.id)
    _t(el, "Номер", doc.number)
    if doc.date is not None:
        d = doc.date.astimezone(tz) if doc.date.tzinfo else doc.date
        _t(el, "Дата", d.strftime("%Y-%m-%d"))
        _t(el, "Время", d.strftime("%H:%M:%S"))
    _t(el, "ХозОперация", doc.operation)
    _t(el, "Роль", doc.role)
    _t(el, "Валюта", doc.currency)
    _t(el, "Курс", doc.rate)
    _t(el, "Сумма", doc.total)
    _t(el, "Основание", doc.base)
    _t(el, "НомерВерсии", doc.version)
    if doc.deleted:
        _t(el, "ПометкаУдаления", True)
    if doc.counterparties:
        c = _SE(el, "Контрагенты")
        for cp in doc.counterparties:
            c.append(counterparty_element(cp))
    _t(el, "Комментарий", doc.comment)
    if doc.items:
        c = _SE(el, "Товары")
        for it in doc.items:
            c.append(item_element(it))
    _pairs(el, "ЗначенияРеквизитов", "ЗначениеРеквизита", doc.requisites)
    return el


def group_element(g: Group) -> etree._Element:
    el = etree.Element("Группа")
    _t(el, "Ид", g.id)
    _t(el, "Наименование", g.name)
    if g.children:
        c = _SE(el, "Группы")
        for ch in g.children:
            c.append(group_element(ch))
    return el


def property_element(p: Property) -> etree._Element:
    el = etree.Element("Свойство")
    _t(el, "Ид", p.id)
    _t(el, "Наименование", p.name)
    _t(el, "ТипЗначений", p.value_type)
    if p.options:
        v = _SE(el, "ВариантыЗначений")
        for k, val in p.options:
            s = _SE(v, "Справочник")
            _SE(s, "ИдЗначения").text = k
            _SE(s, "Значение").text = val
    return el


def product_element(p: Product) -> etree._Element:
    el = etree.Element("Товар", {"Статус": "Удален"} if p.deleted else {})
    _t(el, "Ид", p.id)
    _t(el, "Артикул", p.sku)
    _t(el, "Наименование", p.name)
    _unit(el, p.unit)
    if p.groups:
        g = _SE(el, "Группы")
        for gid in p.groups:
            _SE(g, "Ид").text = gid
    _t(el, "Описание", p.description)
    for img in p.images:
        _t(el, "Картинка", img)
    _t(el, "Штрихкод", p.barcode)
    _pairs(el, "ЗначенияСвойств", "ЗначенияСвойства", p.property_values, key="Ид")
    _pairs(el, "ХарактеристикиТовара", "ХарактеристикаТовара", p.characteristics)
    if p.taxes:
        c = _SE(el, "СтавкиНалогов")
        for t in p.taxes:
            s = _SE(c, "СтавкаНалога")
            _t(s, "Наименование", t.name)
            _t(s, "Ставка", t.rate)
    _pairs(el, "ЗначенияРеквизитов", "ЗначениеРеквизита", p.requisites)
    if p.deleted:
        _t(el, "ПометкаУдаления", True)
    return el


def price_type_element(pt: PriceType) -> etree._Element:
    el = etree.Element("ТипЦены")
    _t(el, "Ид", pt.id)
    _t(el, "Наименование", pt.name)
    _t(el, "Валюта", pt.currency)
    return el


def warehouse_element(w: Warehouse) -> etree._Element:
    el = etree.Element("Склад")
    _t(el, "Ид", w.id)
    _t(el, "Наименование", w.name)
    return el


def offer_element(o: Offer, *, rests_form: bool = False) -> etree._Element:
    el = etree.Element("Предложение")
    _t(el, "Ид", o.id)
    _t(el, "Артикул", o.sku)
    _t(el, "Наименование", o.name)
    _unit(el, o.unit)
    _pairs(el, "ХарактеристикиТовара", "ХарактеристикаТовара", o.characteristics)
    if o.prices:
        c = _SE(el, "Цены")
        for p in o.prices:
            pe = _SE(c, "Цена")
            _t(pe, "Представление", p.presentation)
            _t(pe, "ИдТипаЦены", p.type_id)
            _t(pe, "ЦенаЗаЕдиницу", p.price)
            _t(pe, "Валюта", p.currency)
            _t(pe, "Единица", p.unit)
            _t(pe, "Коэффициент", p.coefficient)
    _t(el, "Количество", o.quantity)
    if o.stocks and rests_form:
        c = _SE(el, "Остатки")
        for s in o.stocks:
            w = _SE(_SE(c, "Остаток"), "Склад")
            _t(w, "Ид", s.warehouse_id)
            _t(w, "Количество", s.quantity)
    else:
        for s in o.stocks:
            attrib = {"ИдСклада": s.warehouse_id}
            if s.quantity is not None:
                attrib["КоличествоНаСкладе"] = format_decimal(s.quantity)
            _SE(el, "Склад", attrib)
    if o.deleted:
        _t(el, "ПометкаУдаления", True)
    return el


class CmlWriter:
    """Incremental writer: `with CmlWriter(path) as w: with w.section("Каталог"): w.write(el)…`.

    Args:
        target: a path or a binary file object.
        encoding: "windows-1251" (default, what 1C expects) or "UTF-8".
        bom: prefix a UTF-8 BOM (some 1C configurations refuse UTF-8 without one).
        schema_version: `ВерсияСхемы`, "2.08" by default.
        generated_at: `ДатаФормирования`; now (in `tz`) by default.
    """

    def __init__(self, target: str | os.PathLike | IO[bytes], *, encoding: str = "windows-1251",
                 bom: bool = False, schema_version: str = "2.08",
                 generated_at: datetime | None = None, tz: tzinfo = MOSCOW) -> None:
        enc = _ENCODINGS.get(encoding.lower())
        if enc is None:
            raise ValueError(f"unsupported output encoding {encoding!r}; use UTF-8 or windows-1251")
        self.target, self.encoding, self.bom, self.tz = target, enc, bom, tz
        self.schema_version = schema_version
        self.generated_at = generated_at or datetime.now(tz)
        self._stack = contextlib.ExitStack()
        self._xf: Any = None

    def __enter__(self) -> "CmlWriter":
        st = self._stack
        if isinstance(self.target, (str, os.PathLike)):
            f = st.enter_context(open(self.target, "wb"))
        else:
            f = self.target
        if self.bom:
            f.write(BOM)
        f.write(f'<?xml version="1.0" encoding="{self.encoding}"?>\n'.encode("ascii"))
        self._xf = st.enter_context(etree.xmlfile(f, encoding=self.encoding, buffered=True))
        gen = self.generated_at
        if gen.tzinfo is not None:
            gen = gen.astimezone(self.tz)
        st.enter_context(self._xf.element(ROOT, {"ВерсияСхемы": self.schema_version,
                                                 "ДатаФормирования": gen.strftime("%Y-%m-%dT%H:%M:%S")}))
        self._xf.write("\n")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def section(self, tag: str, attrib: dict[str, str] | None = None) -> Any:
        """Open an enclosing element (`Каталог`, `Товары`, `Контейнер`…) as a context manager."""
        return self._xf.element(tag, attrib or {})

    def text(self, tag: str, value: Any) -> None:
        el = etree.Element(tag)
        _t_root(el, value)
        self._xf.write(el, pretty_print=True)

    def write(self, el: etree._Element) -> None:
        self._xf.write(el, pretty_print=True)


def _t_root(el: Any, value: Any) -> None:
    el.text = format_decimal(value) if isinstance(value, Decimal) else str(value)


def _bool(v: bool) -> str:
    return "true" if v else "false"


def write_orders(target: str | os.PathLike | IO[bytes], documents: Iterable[Document], *,
                 container: bool = False, **opts: Any) -> int:
    """Write order documents; `container=True` wraps each order and the payment/shipment documents
    that follow it (those with `base`) in one `Контейнер` (Bitrix exchange module ≥ 6.5).
    Returns the number of documents written."""
    n = 0
    with CmlWriter(target, **opts) as w:
        if not container:
            for doc in documents:
                w.write(document_element(doc, w.tz))
                n += 1
            return n
        box: Any = None
        try:
            for doc in documents:
                if box is None or doc.base is None:
                    if box is not None:
                        box.__exit__(None, None, None)
                    box = w.section("Контейнер")
                    box.__enter__()
                w.write(document_element(doc, w.tz))
                n += 1
        finally:
            if box is not None:
                box.__exit__(None, None, None)
    return n


def write_counterparties(target: str | os.PathLike | IO[bytes], counterparties: Iterable[Counterparty],
                         **opts: Any) -> int:
    n = 0
    with CmlWriter(target, **opts) as w, w.section("Контрагенты"):
        for cp in counterparties:
            w.write(counterparty_element(cp))
            n += 1
    return n


def write_catalog(target: str | os.PathLike | IO[bytes], products: Iterable[Product], *,
                  groups: Iterable[Group] = (), properties: Iterable[Property] = (),
                  classifier_id: str = "classifier", catalog_id: str = "catalog",
                  name: str = "Каталог товаров", only_changes: bool = True, **opts: Any) -> int:
    """import.xml: `Классификатор` (groups, properties) then `Каталог/Товары`. `only_changes=True`
    by default: a full upload makes Bitrix delete everything missing from the file."""
    n = 0
    with CmlWriter(target, **opts) as w:
        with w.section("Классификатор"):
            w.text("Ид", classifier_id)
            w.text("Наименование", name)
            groups, properties = tuple(groups), tuple(properties)
            if groups:
                with w.section("Группы"):
                    for g in groups:
                        w.write(group_element(g))
            if properties:
                with w.section("Свойства"):
                    for p in properties:
                        w.write(property_element(p))
        with w.section("Каталог", {"СодержитТолькоИзменения": _bool(only_changes)}):
            w.text("Ид", catalog_id)
            w.text("ИдКлассификатора", classifier_id)
            w.text("Наименование", name)
            with w.section("Товары"):
                for p in products:
                    w.write(product_element(p))
                    n += 1
    return n


def write_offers(target: str | os.PathLike | IO[bytes], offers: Iterable[Offer], *,
                 price_types: Iterable[PriceType] = (), warehouses: Iterable[Warehouse] = (),
                 package_id: str = "offers", catalog_id: str = "catalog",
                 classifier_id: str = "classifier", name: str = "Пакет предложений",
                 only_changes: bool = True, changes_package: bool = False, rests_form: bool = False,
                 **opts: Any) -> int:
    """offers.xml (`ПакетПредложений`, or `ИзмененияПакетаПредложений` with `changes_package`)."""
    n = 0
    root = "ИзмененияПакетаПредложений" if changes_package else "ПакетПредложений"
    with CmlWriter(target, **opts) as w:
        with w.section(root, {"СодержитТолькоИзменения": _bool(only_changes)}):
            w.text("Ид", package_id)
            w.text("Наименование", name)
            w.text("ИдКаталога", catalog_id)
            w.text("ИдКлассификатора", classifier_id)
            price_types, warehouses = tuple(price_types), tuple(warehouses)
            if price_types:
                with w.section("ТипыЦен"):
                    for pt in price_types:
                        w.write(price_type_element(pt))
            if warehouses:
                with w.section("Склады"):
                    for wh in warehouses:
                        w.write(warehouse_element(wh))
            with w.section("Предложения"):
                for o in offers:
                    w.write(offer_element(o, rests_form=rests_form))
                    n += 1
    return n


__all__ = ["CmlWriter", "write_orders", "write_counterparties", "write_catalog", "write_offers",
           "document_element", "counterparty_element", "item_element", "product_element",
           "group_element", "property_element", "offer_element", "price_type_element",
           "warehouse_element"]
