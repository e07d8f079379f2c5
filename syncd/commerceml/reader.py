"""Streaming CommerceML 2 readers built on `lxml.etree.iterparse`.

Each reader asks iterparse only for its record tags (`tag=` filter), converts a finished record with a
local tag→field dispatch, then clears it and drops its preceding siblings, so memory stays flat in the
file size. A record that cannot be converted is yielded as `Rejected` (or passed to `on_error`) and the
stream goes on; anything that makes the rest of the file unreadable raises `ProtocolError` with a line.

Behaviour keys on element presence, never on `ВерсияСхемы` (2.03–2.10 all read the same way). The 1C
namespace `urn:1C.ru:commerceml_2` is accepted as well as no namespace.
"""

from __future__ import annotations

from datetime import tzinfo
from decimal import Decimal
import re
from typing import Any, Callable, Iterator

from lxml import etree

from syncd.errors import BadInput, ProtocolError

from .encoding import MOSCOW, parse_bool, parse_datetime, parse_decimal
from .model import (Address, AddressField, Bank, BankAccount, Contact, Counterparty, Discount,
                    Document, Group, Header, Item, Offer, Price, PriceType, Product, Property,
                    Rejected, Representative, Stock, Tax, Unit, Warehouse)
from .paths import ROOT, is_record
from .recovery import Span, Splitter, Unsplittable, View, ViewReader
from .safety import (DEFAULT_LIMITS, Limits, Source, is_encoding_error, is_limit_error, open_xml,
                     parser_options, safe_parser, syntax_message, translate_syntax_error)

OnError = Callable[[Rejected], None]

_LOCAL: dict[str, str] = {}


def _local(tag: str) -> str:
    if tag[0] != "{":
        return tag
    r = _LOCAL.get(tag)
    if r is None:
        r = _LOCAL[tag] = tag.rpartition("}")[2]
    return r


_DOC_TEXT = {"Ид": "id", "Номер": "number", "ХозОперация": "operation", "Роль": "role",
             "Валюта": "currency", "Комментарий": "comment", "НомерВерсии": "version",
             "Основание": "base"}
_CP_TEXT = {"Ид": "id", "Наименование": "name", "ПолноеНаименование": "full_name",
            "ОфициальноеНаименование": "official_name", "Роль": "role", "Фамилия": "last_name",
            "Имя": "first_name", "Отчество": "middle_name", "ИНН": "inn", "КПП": "kpp", "ОКПО": "okpo",
            "ОГРН": "ogrn"}
_CP_NESTED = {"РеквизитыЮрЛица", "РеквизитыФизЛица"}
_ADDRESS_TAGS = {"АдресРегистрации", "ЮридическийАдрес", "Адрес", "ФактическийАдрес", "ПочтовыйАдрес"}
_ITEM_TEXT = {"Ид": "id", "ИдКаталога": "catalog_id", "Наименование": "name"}
_ITEM_DEC = {"ЦенаЗаЕдиницу": "price", "Количество": "quantity", "Сумма": "sum"}
_PRODUCT_TEXT = {"Ид": "id", "Артикул": "sku", "Наименование": "name", "Описание": "description",
                 "Штрихкод": "barcode"}


class _Conv:
    """Element → dataclass converters bound to one call's limits and time zone."""

    def __init__(self, limits: Limits, tz: tzinfo) -> None:
        self.max_text = limits.max_text
        self.tz = tz

    # -- scalars -------------------------------------------------------------------------------
    def text(self, el: Any) -> str:
        t = el.text
        if t is None:
            return ""
        if len(t) > self.max_text:
            raise ProtocolError(f"text of <{_local(el.tag)}> is {len(t)} characters, over the limit "
                                f"of {self.max_text}", line=el.sourceline)
        return t.strip()

    def dec(self, el: Any) -> Decimal | None:
        try:
            return parse_decimal(self.text(el))
        except BadInput as e:
            raise BadInput(f"<{_local(el.tag)}>: {e.reason}", line=el.sourceline) from None

    def flag(self, el: Any) -> bool | None:
        try:
            return parse_bool(self.text(el))
        except BadInput as e:
            raise BadInput(f"<{_local(el.tag)}>: {e.reason}", line=el.sourceline) from None

    def pairs(self, el: Any, key: str = "Наименование", value: str = "Значение") -> tuple[tuple[str, str], ...]:
        out = []
        for row in el:
            k = v = None
            for c in row:
                tag = c.tag
                if tag[0] == "{":
                    tag = _local(tag)
                if tag == key:
                    k = self.text(c)
                elif tag == value:
                    v = self.text(c) if v is None else v + "\n" + self.text(c)
            if k is not None:
                out.append((k, v if v is not None else ""))
        return tuple(out)

    def unit(self, el: Any) -> Unit:
        a = el.attrib
        code = a.get("Код")
        full = a.get("НаименованиеПолное")
        intl = a.get("МеждународноеСокращение")
        name = None
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
        return Unit(code=code.strip() if code is not None else None, name=name,
                    full_name=full.strip() if full is not None else None,
                    intl_abbr=intl.strip() if intl is not None else None)

    def taxes(self, el: Any, into: list[Tax]) -> None:
        for t in el:
            f: dict[str, Any] = {}
            for c in t:
                tag = _local(c.tag)
                if tag == "Наименование":
                    f["name"] = self.text(c)
                elif tag == "Ставка":
                    f["rate"] = self.text(c)
                elif tag == "УчтеноВСумме":
                    f["included"] = self.flag(c)
                elif tag == "Сумма":
                    f["sum"] = self.dec(c)
            name = f.get("name", "")
            for i, old in enumerate(into):   # СтавкиНалогов and Налоги describe the same tax
                if old.name == name:
                    into[i] = Tax(name, f.get("rate", old.rate),
                                  f.get("included", old.included), f.get("sum", old.sum))
                    break
            else:
                into.append(Tax(name, f.get("rate"), f.get("included"), f.get("sum")))

    # -- order documents -----------------------------------------------------------------------
    def document(self, el: Any) -> Document:
        f: dict[str, Any] = {}
        date_t = time_t = None
        cps: tuple = ()
        items: tuple = ()
        reqs: tuple = ()
        for c in el:
            tag = c.tag
            if tag[0] == "{":
                tag = _local(tag)
            name = _DOC_TEXT.get(tag)
            if name is not None:
                f[name] = self.text(c)
            elif tag == "Дата":
                date_t = self.text(c)
            elif tag == "Время":
                time_t = self.text(c)
            elif tag == "Сумма":
                f["total"] = self.dec(c)
            elif tag == "Курс":
                f["rate"] = self.dec(c)
            elif tag == "ПометкаУдаления":
                f["deleted"] = bool(self.flag(c))
            elif tag == "Контрагенты":
                cps = tuple(self.counterparty(x) for x in c)
            elif tag == "Товары":
                items = tuple(self.item(x) for x in c)
            elif tag == "ЗначенияРеквизитов":
                reqs = self.pairs(c)
        if date_t:
            try:
                f["date"] = parse_datetime(date_t, time_t, tz=self.tz)
            except BadInput as e:
                raise BadInput(f"<Дата>/<Время>: {e.reason}", line=el.sourceline) from None
        if "id" not in f:
            raise BadInput("<Документ> without <Ид>", line=el.sourceline)
        return Document(counterparties=cps, items=items, requisites=reqs, **f)

    def counterparty(self, el: Any) -> Counterparty:
        f: dict[str, Any] = {}
        addresses: list[Address] = []
        contacts: list[Contact] = []
        accounts: list[BankAccount] = []
        reps: list[Representative] = []
        self._cp_fields(el, f, addresses, contacts, accounts, reps)
        return Counterparty(addresses=tuple(addresses), contacts=tuple(contacts),
                            bank_accounts=tuple(accounts), representatives=tuple(reps),
                            **{"id": None, **f})

    def _cp_fields(self, el: Any, f: dict, addresses: list, contacts: list, accounts: list,
                   reps: list) -> None:
        for c in el:
            tag = _local(c.tag)
            name = _CP_TEXT.get(tag)
            if name is not None:
                if len(c) == 0:
                    f.setdefault(name, self.text(c))
            elif tag in _CP_NESTED:
                self._cp_fields(c, f, addresses, contacts, accounts, reps)
            elif tag in _ADDRESS_TAGS:
                addresses.append(self.address(c, tag))
            elif tag == "Контакты":
                for k in c:
                    typ = val = ""
                    for x in k:
                        xt = _local(x.tag)
                        if xt == "Тип":
                            typ = self.text(x)
                        elif xt == "Значение":
                            val = self.text(x)
                    contacts.append(Contact(typ, val))
            elif tag == "РасчетныеСчета":
                for acc in c:
                    accounts.append(self.bank_account(acc))
            elif tag == "Представители":
                for r in c:
                    reps.append(self.representative(r))

    def address(self, el: Any, kind: str) -> Address:
        presentation = None
        fields = []
        for c in el:
            tag = _local(c.tag)
            if tag == "Представление":
                presentation = self.text(c)
            elif tag == "АдресноеПоле":
                typ = val = ""
                for x in c:
                    xt = _local(x.tag)
                    if xt == "Тип":
                        typ = self.text(x)
                    elif xt == "Значение":
                        val = self.text(x)
                fields.append(AddressField(typ, val))
        return Address(kind, presentation, tuple(fields))

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
                bank = Bank(**b)
        return BankAccount(number, bank)

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
        return Representative(f.get("Отношение"), f.get("Ид"), f.get("Наименование"))

    def item(self, el: Any) -> Item:
        f: dict[str, Any] = {}
        taxes: list[Tax] = []
        discounts: tuple = ()
        reqs: tuple = ()
        for c in el:
            tag = c.tag
            if tag[0] == "{":
                tag = _local(tag)
            name = _ITEM_TEXT.get(tag)
            if name is not None:
                f[name] = self.text(c)
                continue
            name = _ITEM_DEC.get(tag)
            if name is not None:
                f[name] = self.dec(c)
            elif tag == "БазоваяЕдиница":
                f["unit"] = self.unit(c)
            elif tag in ("Налоги", "СтавкиНалогов"):
                self.taxes(c, taxes)
            elif tag == "Скидки":
                discounts = tuple(self.discount(x) for x in c)
            elif tag == "ЗначенияРеквизитов":
                reqs = self.pairs(c)
        return Item(taxes=tuple(taxes), discounts=discounts, requisites=reqs, **{"id": None, **f})

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
        return Discount(**f)

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
                children = tuple(self.group(x) for x in c)
        if not gid:
            raise BadInput("<Группа> without <Ид>", line=el.sourceline)
        return Group(gid, name, children)

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
        return Property(options=tuple(options), **f)

    def product(self, el: Any) -> Product:
        f: dict[str, Any] = {}
        groups: list[str] = []
        images: list[str] = []
        props: list[tuple[str, str]] = []
        taxes: list[Tax] = []
        chars: tuple = ()
        reqs: tuple = ()
        deleted = el.get("Статус") == "Удален"
        for c in el:
            tag = c.tag
            if tag[0] == "{":
                tag = _local(tag)
            name = _PRODUCT_TEXT.get(tag)
            if name is not None:
                f[name] = self.text(c)
            elif tag == "БазоваяЕдиница":
                f["unit"] = self.unit(c)
            elif tag == "Группы":
                groups.extend(self.text(x) for x in c)
            elif tag == "Картинка":
                images.append(self.text(c))
            elif tag == "ЗначенияСвойств":
                for v in c:
                    pid = None
                    vals = []
                    for x in v:
                        xt = _local(x.tag)
                        if xt == "Ид":
                            pid = self.text(x)
                        elif xt == "Значение":
                            vals.append(self.text(x))
                    if pid is not None:
                        props.extend((pid, val) for val in (vals or [""]))
            elif tag == "ЗначенияРеквизитов":
                reqs = self.pairs(c)
            elif tag == "ХарактеристикиТовара":
                chars = self.pairs(c)
            elif tag == "СтавкиНалогов":
                self.taxes(c, taxes)
            elif tag == "ПометкаУдаления":
                deleted = deleted or bool(self.flag(c))
            elif tag == "Статус":
                deleted = deleted or self.text(c) == "Удален"
        if not f.get("id"):
            raise BadInput("<Товар> without <Ид>", line=el.sourceline)
        return Product(groups=tuple(groups), images=tuple(images), property_values=tuple(props),
                       characteristics=chars, taxes=tuple(taxes), requisites=reqs, deleted=deleted, **f)

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
        return PriceType(**f)

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
        return Warehouse(wid, name)

    def offer(self, el: Any) -> Offer:
        f: dict[str, Any] = {}
        prices: list[Price] = []
        stocks: list[Stock] = []
        chars: tuple = ()
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
                prices.extend(self.price(x) for x in c)
            elif tag == "Склад":       # attribute form
                wid = c.get("ИдСклада")
                if wid is not None:
                    try:
                        q = parse_decimal(c.get("КоличествоНаСкладе"))
                    except BadInput as e:
                        raise BadInput(f"<Склад КоличествоНаСкладе>: {e.reason}", line=c.sourceline) from None
                    stocks.append(Stock(wid.strip(), q))
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
                                stocks.append(Stock(wid, q))
                        elif xt == "Количество":
                            f["quantity"] = self.dec(x)
            elif tag == "ХарактеристикиТовара":
                chars = self.pairs(c)
            elif tag == "ПометкаУдаления":
                deleted = deleted or bool(self.flag(c))
        if not f.get("id"):
            raise BadInput("<Предложение> without <Ид>", line=el.sourceline)
        return Offer(prices=tuple(prices), stocks=tuple(stocks), characteristics=chars,
                     deleted=deleted, **f)

    def price(self, el: Any) -> Price:
        f: dict[str, Any] = {"type_id": None, "price": None}
        for c in el:
            tag = _local(c.tag)
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
        return Price(**f)


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


def _too_deep(el: Any, depth: int, max_depth: int) -> int | None:
    """Line of an element nested deeper than `max_depth` inside record `el` (at `depth`), else None."""
    k = max_depth - depth + 1          # relative depth that is one too many
    if k <= 0:
        return el.sourceline
    xp = _DEPTH_XPATH.get(k)
    if xp is None:
        xp = _DEPTH_XPATH[k] = etree.XPath("/".join(["*"] * k))
    found = xp(el)
    return found[0].sourceline if found else None


def _release(el: Any) -> None:
    """Free a finished record and everything before it (its ancestors are still open)."""
    el.clear(keep_tail=False)
    parent = el.getparent()
    while parent is not None:
        while el.getprevious() is not None:
            del parent[0]
        el = parent
        parent = el.getparent()


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

    __slots__ = ("shift", "done", "last")

    def __init__(self, shift: int) -> None:
        self.shift = shift        # file line = stream line + shift
        self.done = 0             # records produced (objects or Rejected)
        self.last: tuple[int, str] | None = None   # (file line, tag) of the last one


def _parse(stream: Any, encoding: str | None, tags: tuple[str, ...], cv: _Conv, limits: Limits,
           on_error: OnError | None, ps: _Pass) -> Any:
    """Stream records; returns None at a clean end, or the XMLSyntaxError that stopped lxml."""
    ctx = etree.iterparse(stream, events=("end",), tag=["{*}" + t for t in tags], encoding=encoding,
                          **parser_options())
    it = iter(ctx)
    max_depth = limits.max_depth
    shift = ps.shift
    first = True
    while True:
        try:
            _, el = next(it)
        except StopIteration:
            break
        except etree.XMLSyntaxError as e:
            return e
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
        path = _path(el)
        if not is_record(tag, path):
            continue                      # e.g. a <Контрагент> inside a <Документ>: its record uses it
        obj = _convert(cv, tag, el, len(path) + 1, max_depth, shift)
        ps.done += 1
        ps.last = (el.sourceline + shift, tag)
        _release(el)
        if type(obj) is tuple:
            yield from obj
        elif on_error is not None and type(obj) is Rejected:
            on_error(obj)
        else:
            yield obj
    root = ctx.root
    if root is not None and _local(root.tag) != ROOT:
        raise ProtocolError(f"root element is <{_local(root.tag)}>, expected <{ROOT}>",
                            line=root.sourceline + shift)
    return None


def _declaration(encoding: str) -> bytes:
    return f'<?xml version="1.0" encoding="{encoding}"?>'.encode("ascii")


def _read_span(view: View, span: Span, encoding: str, codec: str, tags: tuple[str, ...], cv: _Conv,
               limits: Limits, error: ProtocolError) -> Iterator[Any]:
    """Parse one record's bytes on their own (inside copies of their enclosing start tags)."""
    raw = view.get(span.start, span.end)
    text = raw.decode(codec, "replace")
    head = _declaration(encoding) + b"".join(f.tag for f in span.stack)
    tail = b"".join(b"</" + f.qname + b">" for f in reversed(span.stack))
    shift = span.line - 1 - head.count(b"\n")
    try:
        root = etree.fromstring(head + raw + tail, safe_parser(encoding))
    except etree.XMLSyntaxError as e:
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
        return
    path = tuple(f.name for f in span.stack)
    parent = root
    for _ in span.stack[1:]:
        parent = parent[0]
    for el in parent:
        tag = _local(el.tag)
        if tag in tags and is_record(tag, path):
            obj = _convert(cv, tag, el, len(path) + 1, limits.max_depth, shift, raw=text)
            if type(obj) is tuple:
                yield from obj
            else:
                yield obj


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
            if is_encoding_error(msg) or is_limit_error(msg):
                raise error
            if view is None:
                view = View.open(reader.origin)
                if view is None:
                    raise error
                splitter = Splitter(view, sniffed.encoding, tags, max_depth=limits.max_depth,
                                    max_record=limits.max_record)
            assert splitter is not None
            try:
                span = splitter.next_span(at[0], at[1], at[2], ps.done, ps.last)
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
        ctx = etree.iterparse(reader, events=("start",),
                              encoding=sniffed.encoding if sniffed.override else None,
                              **parser_options())
        try:
            for _, el in ctx:
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
        except etree.XMLSyntaxError as e:
            if root is None:
                raise translate_syntax_error(e, sniffed) from None
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
