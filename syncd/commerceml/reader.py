"""Streaming CommerceML 2 readers built on lxml's pull parser, fed by syncd (pull.py).

Each reader asks the parser only for its record tags (`tag=` filter), converts a finished record with a
local tag→field dispatch, then clears it and drops its preceding siblings, so memory stays flat in the
file size. A record that cannot be converted — bad content, or not well-formed XML (recovery.py finds
its bytes and parsing resumes after it) — is yielded as `Rejected` with its whole text (or passed to
`on_error`) and the stream goes on; what makes the rest of the file unreadable raises `ProtocolError`
with a line.

Speed: per element, lxml's proxy, `.tag` and `.text` cost about as much as libxml2's parsing, so the
converters touch each element once, dispatch with one dict lookup, and build the frozen dataclasses
without their __init__ (`_new`). bench/commerceml.py measures it against a bare iterparse loop.

Behaviour keys on element presence, never on `ВерсияСхемы` (2.03–2.10 all read the same way). The 1C
namespace `urn:1C.ru:commerceml_2` is accepted as well as no namespace.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Generator, Iterator

from lxml import etree

from syncd.errors import BadInput, ProtocolError

from .encoding import MOSCOW, parse_bool, parse_datetime, parse_decimal
from .model import (Address, AddressField, Bank, BankAccount, Contact, Counterparty, Discount,
                    Document, Group, Header, Item, Offer, Price, PriceType, Product, Property,
                    Rejected, Representative, Stock, Tax, Unit, Warehouse)
from .paths import ROOT, is_record
from .pull import Pull
from .recovery import Span, Splitter, Unsplittable, View, ViewReader
from .safety import (DEFAULT_LIMITS, Limits, Source, is_encoding_error, is_limit_error, open_xml,
                     safe_parser, syntax_message, translate_syntax_error)

OnError = Callable[[Rejected], None]

_LOCAL: dict[str, str] = {}


def _local(tag: str) -> str:
    if tag[0] != "{":
        return tag
    r = _LOCAL.get(tag)
    if r is None:
        r = _LOCAL[tag] = tag.rpartition("}")[2]
    return r


_NS_1C = "{urn:1C.ru:commerceml_2}"


def _both(table: dict[str, Any]) -> dict[str, Any]:
    """`table` keyed by the local name and by the name in the 1C namespace: one lookup for both
    (another namespace takes a second lookup by the local name)."""
    return {**table, **{_NS_1C + k: v for k, v in table.items()}}


def _lookup(table: dict[str, Any], tag: str) -> Any:
    """The entry of a tag the first lookup missed: an element in some other namespace."""
    return table.get(_local(tag)) if "}" in tag else None


_DOC_TEXT = _both({"Ид": "id", "Номер": "number", "ХозОперация": "operation", "Роль": "role",
                   "Валюта": "currency", "Комментарий": "comment", "НомерВерсии": "version",
                   "Основание": "base"})
_DOC_OTHER = _both({"Товары": 1, "ЗначенияРеквизитов": 2, "Контрагенты": 3, "Дата": 4, "Время": 5,
                    "Сумма": 6, "Курс": 7, "ПометкаУдаления": 8})
_CP_TEXT = _both({"Ид": "id", "Наименование": "name", "ПолноеНаименование": "full_name",
                  "ОфициальноеНаименование": "official_name", "Роль": "role", "Фамилия": "last_name",
                  "Имя": "first_name", "Отчество": "middle_name", "ИНН": "inn", "КПП": "kpp",
                  "ОКПО": "okpo", "ОГРН": "ogrn"})
_CP_OTHER = _both({"Контакты": 1, "РасчетныеСчета": 2, "Представители": 3,
                   **{t: 4 for t in ("АдресРегистрации", "ЮридическийАдрес", "Адрес", "ФактическийАдрес",
                                     "ПочтовыйАдрес")},
                   **{t: 5 for t in ("РеквизитыЮрЛица", "РеквизитыФизЛица")}})
_TYPE_VALUE = _both({"Тип": 1, "Значение": 2})
_ADDRESS = _both({"АдресноеПоле": 1, "Представление": 2})
_ITEM_TEXT = _both({"Ид": "id", "ИдКаталога": "catalog_id", "Наименование": "name"})
_ITEM_OTHER = _both({"ЦенаЗаЕдиницу": "price", "Количество": "quantity", "Сумма": "sum",
                     "ЗначенияРеквизитов": 1, "БазоваяЕдиница": 2, "Налоги": 3, "СтавкиНалогов": 3,
                     "Скидки": 4})
_PRODUCT_TEXT = _both({"Ид": "id", "Артикул": "sku", "Наименование": "name", "Описание": "description",
                       "Штрихкод": "barcode"})
_PRODUCT_OTHER = _both({"ЗначенияРеквизитов": 1, "ЗначенияСвойств": 2, "БазоваяЕдиница": 3, "Группы": 4,
                        "Картинка": 5, "ХарактеристикиТовара": 6, "СтавкиНалогов": 7,
                        "ПометкаУдаления": 8, "Статус": 9})
_ID_VALUE = _both({"Ид": 1, "Значение": 2})

# Every field of every model class with its default: records are built by filling these in, which
# is several times cheaper than a frozen dataclass's __init__ (one object.__setattr__ per field).
_DEFAULTS: dict[type, dict[str, Any]] = {}


def _new(cls: type, values: dict[str, Any], _make: Any = object.__new__) -> Any:
    """An instance of frozen dataclass `cls` from `values` (every field without a default given)."""
    base = _DEFAULTS.get(cls)
    if base is None:                   # a field without a default stays unset unless given: loud
        base = _DEFAULTS[cls] = {f.name: f.default for f in dataclasses.fields(cls)
                                 if f.default is not dataclasses.MISSING}
    obj = _make(cls)
    d = obj.__dict__                   # filled directly: frozen only guards attribute assignment
    d.update(base)
    d.update(values)
    return obj


class _Conv:
    """Element → dataclass converters bound to one call's limits and time zone.

    The hot loops read `c.text` inline instead of calling `text()`: a Python call per element is
    a fair share of the reader's time. They do not check `max_text` either: the caller checks a
    record's texts once (`_check_texts`) when the record could hold one that long at all.
    """

    def __init__(self, limits: Limits, tz: tzinfo) -> None:
        self.max_text = limits.max_text
        self.tz = tz

    # -- scalars -------------------------------------------------------------------------------
    def _long(self, el: Any, t: str) -> ProtocolError:
        return ProtocolError(f"text of <{_local(el.tag)}> is {len(t)} characters, over the limit "
                             f"of {self.max_text}", line=el.sourceline)

    def text(self, el: Any) -> str:
        t = el.text
        if t is None:
            return ""
        if len(t) > self.max_text:
            raise self._long(el, t)
        return t.strip()

    def dec(self, el: Any) -> Decimal | None:
        t = el.text
        if not t:
            return None
        if len(t) > self.max_text:
            raise self._long(el, t)
        try:                           # the usual "5880.00": Decimal alone takes it
            v = Decimal(t)
            if v.is_finite():
                return v
        except InvalidOperation:
            pass
        try:
            return parse_decimal(t)
        except BadInput as e:
            raise BadInput(f"<{_local(el.tag)}>: {e.reason}", line=el.sourceline) from None

    def flag(self, el: Any) -> bool | None:
        try:
            return parse_bool(self.text(el))
        except BadInput as e:
            raise BadInput(f"<{_local(el.tag)}>: {e.reason}", line=el.sourceline) from None

    def pairs(self, el: Any, key: str = "Наименование", value: str = "Значение") -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        for row in el:
            try:
                a, b = row                 # the usual row: <Наименование/><Значение/>
            except ValueError:
                self._pair_row(row, key, value, out)
                continue
            if a.tag == key and b.tag == value:
                t = a.text
                k = t.strip() if t else ""
                t = b.text
                out.append((k, t.strip() if t else ""))
            else:
                self._pair_row(row, key, value, out)
        return tuple(out)

    def _pair_row(self, row: Any, key: str, value: str, out: list[tuple[str, str]]) -> None:
        """Any other row: another order or namespace, several values (joined), or no name."""
        k = v = None
        for c in row:
            tag = c.tag
            if tag != key and tag != value and "}" in tag:
                tag = _local(tag)
            if tag == key:
                t = c.text
                k = t.strip() if t else ""
            elif tag == value:
                t = c.text
                t = t.strip() if t else ""
                v = t if v is None else v + "\n" + t
        if k is not None:
            out.append((k, "" if v is None else v))

    def unit(self, el: Any) -> Unit:
        code = full = intl = name = None
        for k, v in el.items():
            if k == "Код":
                code = v
            elif k == "НаименованиеПолное":
                full = v
            elif k == "МеждународноеСокращение":
                intl = v
        if len(el):  # 2.03/2.04: child elements instead of attributes
            for c in el:
                tag = _local(c.tag)
                if tag == "Код":
                    code = self.text(c)
                elif tag == "НаименованиеПолное":
                    full = self.text(c)
                elif tag == "МеждународноеСокращение":
                    intl = self.text(c)
                elif tag in ("НаименованиеКраткое", "Наименование"):
                    name = self.text(c)
        else:
            name = self.text(el) or None
        return _new(Unit, {"code": code.strip() if code is not None else None, "name": name,
                           "full_name": full.strip() if full is not None else None,
                           "intl_abbr": intl.strip() if intl is not None else None})

    def taxes(self, el: Any, into: list[Tax]) -> None:
        for t in el:
            f: dict[str, Any] = {}
            for c in t:
                tag = c.tag
                if tag[0] == "{":
                    tag = _local(tag)
                if tag == "Наименование":
                    f["name"] = self.text(c)
                elif tag == "Ставка":
                    f["rate"] = self.text(c)
                elif tag == "УчтеноВСумме":
                    f["included"] = self.flag(c)
                elif tag == "Сумма":
                    f["sum"] = self.dec(c)
            name = f.setdefault("name", "")
            for i, old in enumerate(into):   # СтавкиНалогов and Налоги describe the same tax
                if old.name == name:
                    into[i] = _new(Tax, {"name": name, "rate": f.get("rate", old.rate),
                                         "included": f.get("included", old.included),
                                         "sum": f.get("sum", old.sum)})
                    break
            else:
                into.append(_new(Tax, f))

    # -- order documents -----------------------------------------------------------------------
    def document(self, el: Any) -> Document:
        f: dict[str, Any] = {"id": None}
        date_t = time_t = None
        for c in el:
            tag = c.tag
            name = _DOC_TEXT.get(tag)
            if name is None:
                code = _DOC_OTHER.get(tag)
                if code is None:
                    name = _lookup(_DOC_TEXT, tag)
                    code = _lookup(_DOC_OTHER, tag) if name is None else None
                    if name is None and code is None:
                        continue
            if name is not None:
                t = c.text
                t = t.strip() if t else ""
                f[name] = t
            elif code == 1:
                f["items"] = tuple([self.item(x) for x in c])
            elif code == 2:
                f["requisites"] = self.pairs(c)
            elif code == 3:
                f["counterparties"] = self.counterparties(c)
            elif code == 4:
                date_t = self.text(c)
            elif code == 5:
                time_t = self.text(c)
            elif code == 6:
                f["total"] = self.dec(c)
            elif code == 7:
                f["rate"] = self.dec(c)
            else:
                f["deleted"] = bool(self.flag(c))
        if date_t:
            try:
                f["date"] = parse_datetime(date_t, time_t, tz=self.tz)
            except BadInput as e:
                raise BadInput(f"<Дата>/<Время>: {e.reason}", line=el.sourceline) from None
        if f["id"] is None:
            raise BadInput("<Документ> without <Ид>", line=el.sourceline)
        return _new(Document, f)

    def counterparties(self, el: Any) -> tuple[Counterparty, ...]:
        """A document's `<Контрагенты>`: each `<Контрагент>`. Some sites put the buyer's address
        beside it instead of inside (`<АдресРегистрации>` directly under `<Контрагенты>`): that is
        the buyer's address, never a counterparty of its own; other stray elements are left out
        (the schema check names them)."""
        out: list[Counterparty] = []
        stray: list[Address] = []
        for x in el:
            if not isinstance(x.tag, str):
                continue
            if _local(x.tag) == "Контрагент":
                out.append(self.counterparty(x))
            elif (_CP_OTHER.get(x.tag) or _lookup(_CP_OTHER, x.tag)) == 4:
                stray.append(self.address(x, _local(x.tag)))
        if stray and out:
            have = {(a.kind, a.presentation) for a in out[-1].addresses}
            new = tuple(a for a in stray if (a.kind, a.presentation) not in have)
            out[-1] = dataclasses.replace(out[-1], addresses=out[-1].addresses + new)
        return tuple(out)

    def counterparty(self, el: Any) -> Counterparty:
        f: dict[str, Any] = {}
        addresses: list[Address] = []
        contacts: list[Contact] = []
        accounts: list[BankAccount] = []
        reps: list[Representative] = []
        self._cp_fields(el, f, addresses, contacts, accounts, reps)
        f.setdefault("id", None)
        f["addresses"], f["contacts"] = tuple(addresses), tuple(contacts)
        f["bank_accounts"], f["representatives"] = tuple(accounts), tuple(reps)
        return _new(Counterparty, f)

    def _cp_fields(self, el: Any, f: dict, addresses: list, contacts: list, accounts: list,
                   reps: list) -> None:
        for c in el:
            tag = c.tag
            name = _CP_TEXT.get(tag)
            if name is None:
                code = _CP_OTHER.get(tag)
                if code is None:
                    name = _lookup(_CP_TEXT, tag)
                    code = _lookup(_CP_OTHER, tag) if name is None else None
                    if name is None and code is None:
                        continue
            if name is not None:
                if name not in f and not len(c):       # the first one counts
                    t = c.text
                    t = t.strip() if t else ""
                    f[name] = t
            elif code == 1:
                for k in c:
                    typ, val = self._type_value(k)
                    contacts.append(_new(Contact, {"type": typ, "value": val}))
            elif code == 4:
                addresses.append(self.address(c, _local(tag)))
            elif code == 5:
                self._cp_fields(c, f, addresses, contacts, accounts, reps)
            elif code == 2:
                for acc in c:
                    accounts.append(self.bank_account(acc))
            else:
                for r in c:
                    reps.append(self.representative(r))

    def _type_value(self, el: Any) -> tuple[str, str]:
        """(Тип, Значение) of a <Контакт> or <АдресноеПоле>."""
        try:
            a, b = el                      # the usual shape
            if a.tag == "Тип" and b.tag == "Значение":
                t, u = a.text, b.text
                return (t.strip() if t else ""), (u.strip() if u else "")
        except ValueError:
            pass
        typ = val = ""
        for x in el:
            tag = x.tag
            code = _TYPE_VALUE.get(tag) or _lookup(_TYPE_VALUE, tag)
            if code:
                t = x.text
                t = t.strip() if t else ""
                if code == 1:
                    typ = t
                else:
                    val = t
        return typ, val

    def address(self, el: Any, kind: str) -> Address:
        presentation = None
        fields = []
        for c in el:
            tag = c.tag
            code = _ADDRESS.get(tag) or _lookup(_ADDRESS, tag)
            if code == 1:
                typ, val = self._type_value(c)
                fields.append(_new(AddressField, {"type": typ, "value": val}))
            elif code == 2:
                presentation = self.text(c)
        return _new(Address, {"kind": kind, "presentation": presentation, "fields": tuple(fields)})

    def bank_account(self, el: Any) -> BankAccount:
        number = ""
        bank = None
        for c in el:
            tag = _local(c.tag)
            if tag == "НомерСчета":
                number = self.text(c)
            elif tag == "Банк":
                b: dict[str, Any] = {}
                for x in c:
                    xt = _local(x.tag)
                    if xt == "Наименование":
                        b["name"] = self.text(x)
                    elif xt == "БИК":
                        b["bic"] = self.text(x)
                    elif xt == "СчетКорреспондентский":
                        b["correspondent_account"] = self.text(x)
                    elif xt == "Адрес":
                        b["address"] = (self._presentation(x) if len(x) else self.text(x))
                bank = _new(Bank, b)
        return _new(BankAccount, {"number": number, "bank": bank})

    def _presentation(self, el: Any) -> str:
        for x in el:
            if _local(x.tag) == "Представление":
                return self.text(x)
        return ""

    def representative(self, el: Any) -> Representative:
        f: dict[str, str] = {}
        for c in el:
            tag = _local(c.tag)
            if tag == "Контрагент":     # 2.05+ nests the person in <Контрагент>
                for x in c:
                    xt = _local(x.tag)
                    if xt in ("Отношение", "Ид", "Наименование"):
                        f.setdefault(xt, self.text(x))
            elif tag in ("Отношение", "Ид", "Наименование"):
                f[tag] = self.text(c)
        return _new(Representative, {"relation": f.get("Отношение"), "id": f.get("Ид"),
                                     "name": f.get("Наименование")})

    def item(self, el: Any) -> Item:
        f: dict[str, Any] = {"id": None}
        taxes: list[Tax] | None = None
        for c in el:
            tag = c.tag
            name = _ITEM_TEXT.get(tag)
            if name is None:
                code = _ITEM_OTHER.get(tag)
                if code is None:
                    name = _lookup(_ITEM_TEXT, tag)
                    code = _lookup(_ITEM_OTHER, tag) if name is None else None
                    if name is None and code is None:
                        continue
            if name is not None:
                t = c.text
                t = t.strip() if t else ""
                f[name] = t
            elif code.__class__ is str:             # ЦенаЗаЕдиницу, Количество, Сумма
                f[code] = self.dec(c)
            elif code == 1:
                f["requisites"] = self.pairs(c)
            elif code == 2:
                f["unit"] = self.unit(c)
            elif code == 3:
                if taxes is None:
                    taxes = []
                self.taxes(c, taxes)
            else:
                f["discounts"] = tuple([self.discount(x) for x in c])
        if taxes:
            f["taxes"] = tuple(taxes)
        return _new(Item, f)

    def discount(self, el: Any) -> Discount:
        f: dict[str, Any] = {}
        for c in el:
            tag = _local(c.tag)
            if tag == "Наименование":
                f["name"] = self.text(c)
            elif tag == "Сумма":
                f["sum"] = self.dec(c)
            elif tag == "Процент":
                f["percent"] = self.dec(c)
            elif tag == "УчтеноВСумме":
                f["included"] = self.flag(c)
        return _new(Discount, f)

    # -- catalog -------------------------------------------------------------------------------
    def group(self, el: Any) -> Group:
        gid = name = None
        children: tuple = ()
        for c in el:
            tag = _local(c.tag)
            if tag == "Ид":
                gid = self.text(c)
            elif tag == "Наименование":
                name = self.text(c)
            elif tag == "Группы":
                children = tuple([self.group(x) for x in c])
        if not gid:
            raise BadInput("<Группа> without <Ид>", line=el.sourceline)
        return _new(Group, {"id": gid, "name": name, "children": children})

    def property(self, el: Any) -> Property:
        f: dict[str, Any] = {}
        options: list[tuple[str, str]] = []
        for c in el:
            tag = _local(c.tag)
            if tag == "Ид":
                f["id"] = self.text(c)
            elif tag == "Наименование":
                f["name"] = self.text(c)
            elif tag == "ТипЗначений":
                f["value_type"] = self.text(c)
            elif tag == "ВариантыЗначений":
                for v in c:
                    k = val = ""
                    for x in v:
                        xt = _local(x.tag)
                        if xt == "ИдЗначения":
                            k = self.text(x)
                        elif xt == "Значение":
                            val = self.text(x)
                    options.append((k, val))
        if not f.get("id"):
            raise BadInput("<Свойство> without <Ид>", line=el.sourceline)
        f["options"] = tuple(options)
        return _new(Property, f)

    def product(self, el: Any) -> Product:
        f: dict[str, Any] = {}
        groups: list[str] = []
        images: list[str] = []
        props: list[tuple[str, str]] = []
        taxes: list[Tax] | None = None
        deleted = False
        for k, v in el.items():           # cheaper than get() when there are no attributes
            if k == "Статус":
                deleted = v == "Удален"
        for c in el:
            tag = c.tag
            name = _PRODUCT_TEXT.get(tag)
            if name is None:
                code = _PRODUCT_OTHER.get(tag)
                if code is None:
                    name = _lookup(_PRODUCT_TEXT, tag)
                    code = _lookup(_PRODUCT_OTHER, tag) if name is None else None
                    if name is None and code is None:
                        continue
            if name is not None:
                t = c.text
                t = t.strip() if t else ""
                f[name] = t
            elif code == 1:
                f["requisites"] = self.pairs(c)
            elif code == 2:
                for v in c:
                    pid = None
                    vals = []
                    for x in v:
                        xt = x.tag
                        xc = _ID_VALUE.get(xt) or _lookup(_ID_VALUE, xt)
                        if xc == 1:
                            pid = self.text(x)
                        elif xc == 2:
                            vals.append(self.text(x))
                    if pid is not None:
                        props.extend([(pid, val) for val in (vals or [""])])
            elif code == 3:
                f["unit"] = self.unit(c)
            elif code == 4:
                groups.extend([self.text(x) for x in c])
            elif code == 5:
                images.append(self.text(c))
            elif code == 6:
                f["characteristics"] = self.pairs(c)
            elif code == 7:
                if taxes is None:
                    taxes = []
                self.taxes(c, taxes)
            elif code == 8:
                deleted = deleted or bool(self.flag(c))
            else:
                deleted = deleted or self.text(c) == "Удален"
        if not f.get("id"):
            raise BadInput("<Товар> without <Ид>", line=el.sourceline)
        f["groups"], f["images"], f["property_values"] = tuple(groups), tuple(images), tuple(props)
        if taxes:
            f["taxes"] = tuple(taxes)
        f["deleted"] = deleted
        return _new(Product, f)

    # -- offers --------------------------------------------------------------------------------
    def price_type(self, el: Any) -> PriceType:
        f: dict[str, str] = {}
        for c in el:
            tag = _local(c.tag)
            if tag == "Ид":
                f["id"] = self.text(c)
            elif tag == "Наименование":
                f["name"] = self.text(c)
            elif tag == "Валюта":
                f["currency"] = self.text(c)
        if not f.get("id"):
            raise BadInput("<ТипЦены> without <Ид>", line=el.sourceline)
        return _new(PriceType, f)

    def warehouse(self, el: Any) -> Warehouse:
        wid = name = None
        for c in el:
            tag = _local(c.tag)
            if tag == "Ид":
                wid = self.text(c)
            elif tag == "Наименование":
                name = self.text(c)
        if not wid:
            raise BadInput("<Склад> without <Ид>", line=el.sourceline)
        return _new(Warehouse, {"id": wid, "name": name})

    def offer(self, el: Any) -> Offer:
        f: dict[str, Any] = {}
        prices: list[Price] = []
        stocks: list[Stock] = []
        deleted = el.get("Статус") == "Удален"
        for c in el:
            tag = c.tag
            if tag[0] == "{":
                tag = _local(tag)
            if tag == "Ид":
                f["id"] = self.text(c)
            elif tag == "Артикул":
                f["sku"] = self.text(c)
            elif tag == "Наименование":
                f["name"] = self.text(c)
            elif tag == "БазоваяЕдиница":
                f["unit"] = self.unit(c)
            elif tag == "Количество":
                f["quantity"] = self.dec(c)
            elif tag == "Цены":
                prices.extend([self.price(x) for x in c])
            elif tag == "Склад":       # attribute form
                wid = c.get("ИдСклада")
                if wid is not None:
                    try:
                        q = parse_decimal(c.get("КоличествоНаСкладе"))
                    except BadInput as e:
                        raise BadInput(f"<Склад КоличествоНаСкладе>: {e.reason}", line=c.sourceline) from None
                    stocks.append(_new(Stock, {"warehouse_id": wid.strip(), "quantity": q}))
            elif tag == "Остатки":     # 2.08+ form: Остатки/Остаток/Склад(Ид, Количество)
                for rest in c:
                    for x in rest:
                        xt = _local(x.tag)
                        if xt == "Склад":
                            wid = q = None
                            for y in x:
                                yt = _local(y.tag)
                                if yt == "Ид":
                                    wid = self.text(y)
                                elif yt == "Количество":
                                    q = self.dec(y)
                            if wid:
                                stocks.append(_new(Stock, {"warehouse_id": wid, "quantity": q}))
                        elif xt == "Количество":
                            f["quantity"] = self.dec(x)
            elif tag == "ХарактеристикиТовара":
                f["characteristics"] = self.pairs(c)
            elif tag == "ПометкаУдаления":
                deleted = deleted or bool(self.flag(c))
        if not f.get("id"):
            raise BadInput("<Предложение> without <Ид>", line=el.sourceline)
        f["prices"], f["stocks"], f["deleted"] = tuple(prices), tuple(stocks), deleted
        return _new(Offer, f)

    def price(self, el: Any) -> Price:
        f: dict[str, Any] = {"type_id": None, "price": None}
        for c in el:
            tag = c.tag
            if tag[0] == "{":
                tag = _local(tag)
            if tag == "ИдТипаЦены":
                f["type_id"] = self.text(c)
            elif tag == "ЦенаЗаЕдиницу":
                f["price"] = self.dec(c)
            elif tag == "Представление":
                f["presentation"] = self.text(c)
            elif tag == "Валюта":
                f["currency"] = self.text(c)
            elif tag == "Единица":
                f["unit"] = self.text(c)
            elif tag == "Коэффициент":
                f["coefficient"] = self.dec(c)
        return _new(Price, f)


# ---- record selection ---------------------------------------------------------------------------
# Converters: (conv, element) -> object or tuple of objects. Where a record may sit: paths.py.

_HANDLERS: dict[str, Callable[[_Conv, Any], Any]] = {
    "Документ": _Conv.document, "Контрагент": _Conv.counterparty, "Группа": _Conv.group,
    "Свойство": _Conv.property, "Товар": _Conv.product,
    "ТипыЦен": lambda cv, el: tuple(cv.price_type(x) for x in el),
    "Склады": lambda cv, el: tuple(cv.warehouse(x) for x in el),
    "Предложение": _Conv.offer}
_KIND = {"Документ": "order", "Контрагент": "counterparty", "Группа": "group", "Свойство": "property",
         "Товар": "product", "ТипыЦен": "price_type", "Склады": "warehouse", "Предложение": "offer"}

_DEPTH_XPATH: dict[int, Any] = {}


def _path(el: Any) -> tuple[str, ...]:
    """Local names of `el`'s ancestors, root first."""
    names = []
    p = el.getparent()
    while p is not None:
        t = p.tag
        names.append(_local(t) if t[0] == "{" else t)
        p = p.getparent()
    names.reverse()
    return tuple(names)


_SHALLOW = 8      # records are at most this deep inside (Документ/…/Банк/Адрес/Представление is 6)


def _too_deep(el: Any, depth: int, max_depth: int) -> int | None:
    """Line of an element nested deeper than `max_depth` inside record `el` (at `depth`), else None."""
    k = max_depth - depth + 1          # relative depth that is one too many
    if k <= 0:
        return el.sourceline
    if k > _SHALLOW and not _xpath_depth(_SHALLOW)(el):
        return None                    # nothing even _SHALLOW deep: one short XPath settles it
    found = _xpath_depth(k)(el)
    return found[0].sourceline if found else None


def _xpath_depth(k: int) -> Any:
    xp = _DEPTH_XPATH.get(k)
    if xp is None:
        xp = _DEPTH_XPATH[k] = etree.XPath("/".join(["*"] * k))
    return xp


def _drop_before(el: Any) -> None:
    """Free everything before `el` (its ancestors are still open)."""
    parent = el.getparent()
    while parent is not None:
        while el.getprevious() is not None:
            del parent[0]
        el = parent
        parent = el.getparent()


def _check_texts(el: Any, max_text: int, shift: int) -> None:
    """ProtocolError for a text in record `el` longer than `max_text` characters."""
    for x in el.iter():
        t = x.text
        if t is not None and len(t) > max_text:
            raise ProtocolError(f"text of <{_local(x.tag)}> is {len(t)} characters, over the limit "
                                f"of {max_text}", line=x.sourceline + shift, record=_record_id(el))


def _record_id(el: Any) -> str | None:
    for c in el:
        if _local(c.tag) == "Ид":
            return (c.text or "").strip() or None
    return None


_LINE_IN_MESSAGE = re.compile(r"\bline (\d+)")
_POSITION = re.compile(r",? line \d+, column \d+\s*$")


def _shifted(e: BadInput, shift: int) -> BadInput:
    """`e` with its line (and the lines libxml2 writes into messages) moved by `shift`."""
    if not shift or e.line is None:
        return e
    reason = _LINE_IN_MESSAGE.sub(lambda m: f"line {int(m.group(1)) + shift}", e.reason)
    return type(e)(reason, record=e.record, line=e.line + shift, raw=e.raw)


def _convert(cv: _Conv, tag: str, el: Any, depth: int, max_depth: int, shift: int,
             raw: str | None = None) -> Any:
    """One record element → object(s), or `Rejected` for bad content; limits raise ProtocolError."""
    if max_depth < 256:
        deep = _too_deep(el, depth, max_depth)
        if deep is not None:
            raise ProtocolError(f"element nesting deeper than {max_depth}", line=deep + shift,
                                record=_record_id(el))
    try:
        return _HANDLERS[tag](cv, el)
    except ProtocolError as e:
        raise _shifted(e, shift) from None
    except BadInput as e:
        line = e.line or el.sourceline
        return Rejected(e.reason, line + shift if line is not None else None, _record_id(el),
                        raw if raw is not None else etree.tostring(el, encoding="unicode"), _KIND[tag])


class _Pass:
    """One lxml pass over a stream: how its lines map to the file's, what it produced so far."""

    __slots__ = ("shift", "done", "last_el", "last_tag")

    def __init__(self, shift: int) -> None:
        self.shift = shift        # file line = stream line + shift
        self.done = 0             # records produced (objects or Rejected)
        self.last_el: Any = None  # the last one (cleared; its line is asked for only after an error)
        self.last_tag = ""

    @property
    def last(self) -> tuple[int, str] | None:
        """(file line, tag) of the last record produced."""
        return None if self.last_el is None else (self.last_el.sourceline + self.shift, self.last_tag)


def _parse(stream: Any, encoding: str | None, tags: tuple[str, ...], cv: _Conv, limits: Limits,
           on_error: OnError | None, ps: _Pass) -> Any:
    """Stream records; returns None at a clean end, or the XMLSyntaxError that stopped lxml.

    Nothing the parser reports together with its error is delivered: a parser may close the
    elements still open when it stops (lxml 6.2 does, 6.1 did not), so a record reported then may
    be a damaged one cut short, and another version may report fewer. iter_records reads the
    records between the last one delivered here and the damage from the bytes (`_intact`).
    """
    # remove_blank_text: the indentation between elements is never read; not building those text
    # nodes saves libxml2 a node per element (text inside an element without children is kept)
    pull = Pull(stream, events=("end",), tag=["{*}" + t for t in tags], encoding=encoding,
                remove_blank_text=True)
    it = iter(pull)
    max_depth = limits.max_depth
    shift = ps.shift
    first = True
    parent: Any = None                # records share their parent: its answers are kept per tag
    places: dict[str, int] = {}       # tag -> depth of a record there, 0 when not a record
    cleared = 0
    max_text = limits.max_text
    fed = 0                           # bytes read up to the previous record
    while True:
        try:
            _, el = next(it)
        except StopIteration:
            break
        if pull.error is not None:
            break
        if first:
            first = False
            tree = el.getroottree()
            if tree.docinfo.doctype:
                raise ProtocolError("DTD/DOCTYPE is not allowed", line=1)
            if _local(tree.getroot().tag) != ROOT:
                raise ProtocolError(f"root element is <{_local(tree.getroot().tag)}>, expected <{ROOT}>",
                                    line=tree.getroot().sourceline + shift)
        tag = el.tag
        if tag[0] == "{":
            tag = _local(tag)
        p = el.getparent()
        if p is not parent:
            parent, places = p, {}
        depth = places.get(tag)
        if depth is None:
            path = _path(el)
            depth = places[tag] = len(path) + 1 if is_record(tag, path) else 0
        if not depth:
            continue                      # e.g. a <Контрагент> inside a <Документ>: its record uses it
        # The record lies within the bytes read since the previous one (plus one read before):
        # only a record that large can hold a text over max_text, so only then are they measured.
        now = stream.consumed
        if now - fed + stream.largest > max_text:
            _check_texts(el, max_text, shift)
        fed = now
        obj = _convert(cv, tag, el, depth, max_depth, shift)
        ps.done += 1
        ps.last_el, ps.last_tag = el, tag
        el.clear(keep_tail=False)
        cleared += 1
        if cleared == 64:                 # the cleared records before it go in batches
            _drop_before(el)
            cleared = 0
        if type(obj) is tuple:
            yield from obj
        elif on_error is not None and type(obj) is Rejected:
            on_error(obj)
        else:
            yield obj
    if pull.error is not None:
        return pull.error
    root = pull.root
    if root is not None and _local(root.tag) != ROOT:
        raise ProtocolError(f"root element is <{_local(root.tag)}>, expected <{ROOT}>",
                            line=root.sourceline + shift)
    return None


def _intact(view: View, splitter: Splitter, at: tuple[int | None, int, tuple], ps: _Pass,
            encoding: str, tags: tuple[str, ...], cv: _Conv, limits: Limits, error: ProtocolError,
            on_error: OnError | None) -> Generator[Any, None, tuple[tuple[int | None, int, tuple], int,
                                                                   tuple[int, str] | None]]:
    """After the parser's error: the intact records between the last one delivered and the damage.

    Each is a clean start tag through its matching end tag whose bytes parse on their own; the
    first thing that is not stops the walk. Returns where the damage search resumes: (position,
    line, enclosing elements), the records to skip from there, and the last record's (line, tag).
    """
    skip, last = ps.done, ps.last
    while True:
        span = splitter.whole_span(at[0], at[1], at[2], skip, last)
        if span is None:
            return at, skip, last
        got, ok = _drain(_read_span(view, span, encoding, splitter.codec, tags, cv, limits, error,
                                    whole=True))
        if not ok:
            return at, skip, last
        for obj in got:
            if on_error is not None and type(obj) is Rejected:
                on_error(obj)
            else:
                yield obj
        at, skip, last = (span.end, splitter.line_at(span.end), span.stack), 0, None


def _drain(gen: Generator[Any, None, bool]) -> tuple[list[Any], bool]:
    """What `gen` yields, and what it returns."""
    items: list[Any] = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            return items, bool(stop.value)


def _declaration(encoding: str) -> bytes:
    return f'<?xml version="1.0" encoding="{encoding}"?>'.encode("ascii")


def _read_span(view: View, span: Span, encoding: str, codec: str, tags: tuple[str, ...], cv: _Conv,
               limits: Limits, error: ProtocolError, *, whole: bool = False) -> Generator[Any, None, bool]:
    """Parse one record's bytes on their own (inside copies of their enclosing start tags).

    Returns whether they were well-formed. `whole`: only asking, so a record that is not
    well-formed yields nothing (the caller then treats it as damaged).
    """
    raw = view.get(span.start, span.end)
    text = raw.decode(codec, "replace")
    head = _declaration(encoding) + b"".join(f.tag for f in span.stack)
    tail = b"".join(b"</" + f.qname + b">" for f in reversed(span.stack))
    shift = span.line - 1 - head.count(b"\n")
    try:
        root = etree.fromstring(head + raw + tail, safe_parser(encoding))
    except etree.XMLSyntaxError as e:
        if whole:
            return False
        # the exception is libxml2's first error here (its error_log also holds earlier parses')
        msg, line = _POSITION.sub("", str(getattr(e, "msg", None) or e)).strip(), e.lineno
        if is_encoding_error(msg) or is_limit_error(msg):
            raise _shifted(translate_syntax_error(e), shift) from None
        try:
            etree.fromstring(head + tail, safe_parser(encoding))
        except etree.XMLSyntaxError:
            raise error from None        # the tags around the records are damaged: cannot split
        reason = _LINE_IN_MESSAGE.sub(lambda m: f"line {int(m.group(1)) + shift}", msg)
        yield Rejected(f"not well-formed XML in <{span.kind}>: {reason}",
                       line + shift if line is not None else span.line, span.record_id, text,
                       _KIND[span.kind])
        return False
    path = tuple(f.name for f in span.stack)
    parent = root
    for _ in span.stack[1:]:
        parent = parent[0]
    for el in parent:
        tag = _local(el.tag)
        if tag in tags and is_record(tag, path):
            if span.end - span.start > limits.max_text:
                _check_texts(el, limits.max_text, shift)
            obj = _convert(cv, tag, el, len(path) + 1, limits.max_depth, shift, raw=text)
            if type(obj) is tuple:
                yield from obj
            else:
                yield obj
    return True


def iter_records(source: Source, kinds: tuple[str, ...] | None = None, *,
                 limits: Limits | None = None, tz: tzinfo = MOSCOW,
                 on_error: OnError | None = None) -> Iterator[Any]:
    """Stream every record of the given kinds (tags in `_HANDLERS`; None = all) from one file.

    Yields model objects and `Rejected` items (unless `on_error` takes them). A record that is not
    well-formed XML is one `Rejected` (its whole original text in `raw`) and reading goes on after
    it (recovery.py). Raises ProtocolError for what ends the file: not XML, a DTD, a damaged root or
    section, truncation, wrong encoding, limits.
    """
    limits = limits or DEFAULT_LIMITS
    tags = tuple(kinds) if kinds else tuple(_HANDLERS)
    unknown = [t for t in tags if t not in _HANDLERS]
    if unknown:
        raise ValueError(f"not record kinds: {unknown}")
    cv = _Conv(limits, tz)
    reader, sniffed = open_xml(source, limits)
    stream: Any = reader
    encoding = sniffed.encoding if sniffed.override else None
    ps = _Pass(0)
    at: tuple[int | None, int, tuple] = (None, 1, ())    # where `stream` starts in the file
    view: View | None = None
    splitter: Splitter | None = None
    try:
        while True:
            broken = yield from _parse(stream, encoding, tags, cv, limits, on_error, ps)
            if broken is None:
                return
            error = _shifted(translate_syntax_error(broken, sniffed, stream.eof), ps.shift)
            msg, _ = syntax_message(broken)
            if view is None:
                view = View.open(reader.origin)
                if view is None:
                    raise error
                splitter = Splitter(view, sniffed.encoding, tags, max_depth=limits.max_depth,
                                    max_record=limits.max_record)
            assert splitter is not None
            at, skip, last = yield from _intact(view, splitter, at, ps, sniffed.encoding, tags, cv,
                                                limits, error, on_error)
            if is_encoding_error(msg) or is_limit_error(msg):
                raise error
            try:
                span = splitter.next_span(at[0], at[1], at[2], skip, last)
            except Unsplittable as u:
                raise (u.error or error) from None
            if span is None:
                return                    # only text outside records was damaged
            if at[0] is not None and span.end <= at[0]:
                raise error               # no progress: never loop on the same bytes
            for obj in _read_span(view, span, sniffed.encoding, splitter.codec, tags, cv, limits, error):
                if on_error is not None and type(obj) is Rejected:
                    on_error(obj)
                else:
                    yield obj
            line = splitter.line_at(span.end)
            head = _declaration(sniffed.encoding) + b"".join(f.tag for f in span.stack)
            stream = ViewReader(head, view, span.end)
            encoding = sniffed.encoding
            ps = _Pass(line - 1 - head.count(b"\n"))
            at = (span.end, line, span.stack)
    finally:
        reader.close()
        if view is not None:
            view.close()


def iter_documents(source: Source, limits: Limits | None = None, *, tz: tzinfo = MOSCOW,
                   on_error: OnError | None = None) -> Iterator[Document | Rejected]:
    """Order (and payment/shipment) documents: root-level `Документ` and `Контейнер/Документ`."""
    return iter_records(source, ("Документ",), limits=limits, tz=tz, on_error=on_error)


def iter_counterparties(source: Source, limits: Limits | None = None, *, tz: tzinfo = MOSCOW,
                        on_error: OnError | None = None) -> Iterator[Counterparty | Rejected]:
    """Root-level `Контрагенты/Контрагент` (not the ones inside documents)."""
    return iter_records(source, ("Контрагент",), limits=limits, tz=tz, on_error=on_error)


def iter_catalog(source: Source, limits: Limits | None = None, *, tz: tzinfo = MOSCOW,
                 on_error: OnError | None = None
                 ) -> Iterator[Group | Property | PriceType | Product | Rejected]:
    """import.xml: top-level groups (with nested children), properties, price types, products."""
    return iter_records(source, ("Группа", "Свойство", "ТипыЦен", "Товар"), limits=limits, tz=tz,
                        on_error=on_error)


def iter_offers(source: Source, limits: Limits | None = None, *, tz: tzinfo = MOSCOW,
                on_error: OnError | None = None
                ) -> Iterator[PriceType | Warehouse | Offer | Rejected]:
    """offers.xml / prices.xml / rests.xml (`ПакетПредложений`, `ИзмененияПакетаПредложений`)."""
    return iter_records(source, ("ТипыЦен", "Склады", "Предложение"), limits=limits, tz=tz,
                        on_error=on_error)


_SECTIONS = {"Документ", "Контейнер", "Контрагенты", "Классификатор", "Каталог", "ПакетПредложений",
             "ИзмененияПакетаПредложений"}


def read_header(source: Source, limits: Limits | None = None, *, tz: tzinfo = MOSCOW) -> Header:
    """Root attributes and the first section (reads only the start of the file)."""
    limits = limits or DEFAULT_LIMITS
    reader, sniffed = open_xml(source, limits)
    root = None
    section = only = None
    try:
        pull = Pull(reader, events=("start",), encoding=sniffed.encoding if sniffed.override else None)
        for _, el in pull:
            if root is None:
                root = el
                if _local(el.tag) != ROOT:
                    raise ProtocolError(f"root element is <{_local(el.tag)}>, expected <{ROOT}>",
                                        line=el.sourceline)
                continue
            if el.getparent() is root:
                section = _local(el.tag)
                val = el.get("СодержитТолькоИзменения")
                if val is not None:
                    only = parse_bool(val)
                if section in _SECTIONS and section not in ("Классификатор",):
                    break
                if section == "Классификатор":
                    continue
                break
        if root is None and pull.error is not None:
            raise translate_syntax_error(pull.error, sniffed) from None
    finally:
        reader.close()
    if root is None:
        raise ProtocolError("no root element", line=1)
    try:
        generated = parse_datetime(root.get("ДатаФормирования"), tz=tz)
    except BadInput:
        generated = None
    return Header(root.get("ВерсияСхемы"), generated, section, only)


__all__ = ["iter_records", "iter_documents", "iter_counterparties", "iter_catalog", "iter_offers",
           "read_header", "OnError"]
