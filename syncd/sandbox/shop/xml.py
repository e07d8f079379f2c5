"""CommerceML as the sandbox shop writes and reads it (export for `mode=query`, import for `mode=import`).

The export follows what Bitrix's ``sale.export.1c`` writes (tag and requisite names from its lang file,
protocols.md §2.2). Imports are read with the sandbox's own parser (`cml_in`, lxml directly — never
syncd's reader, so a bug of syncd's CommerceML code cannot hide itself) and applied to the order book:
documents are matched on their `Ид` (the order's XML_ID, as Bitrix does), so sending the same `Ид`
twice updates the order instead of creating a second one. A document or counterparty a rejection
(`ShopState.rejections`) matches is not applied; its error is appended to the import's answer.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from lxml import etree

from syncd.sandbox.shop.cml_in import Bad, Cp, Doc, Goods, OfferIn, catalog_records, sale_records
from syncd.sandbox.shop.state import (
    DELIVERIES,
    DELIVERY_ID,
    PAY_SYSTEMS,
    STATUSES,
    BankAccount,
    Item,
    Order,
    Peer,
    ShopState,
    User,
    TZ,
    fmt,
    money,
)

ROOT = "КоммерческаяИнформация"
CML_NS = "urn:1C.ru:commerceml_2"
BAD_BYTE_MARK = "@@sandbox-bad-byte@@"           # replaced by a raw 0x0B after serialisation


def _sub(parent: Any, tag: str, text: Any = None, **attrs: str) -> Any:
    el = etree.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = str(text)
    return el


def _req(parent: Any, name: str, value: Any) -> None:
    r = _sub(parent, "ЗначениеРеквизита")
    _sub(r, "Наименование", name)
    _sub(r, "Значение", value)


def _bool(v: bool) -> str:
    return "true" if v else "false"


def _address(parent: Any, cp: Any, kind: str, text: str, peer: Peer) -> None:
    """The buyer's address where this peer writes it (see `Peer.address`)."""
    if not text:
        return
    if peer.address == "bitrix":
        a = _sub(cp, kind)
    elif peer.address == "plain":
        a = _sub(cp, "Адрес")
    else:                                   # beside: directly under <Контрагенты>, after the Контрагент
        a = _sub(parent, "Адрес")
    _sub(a, "Представление", text)


def _counterparty(parent: Any, u: User, peer: Peer | None = None) -> None:
    peer = peer or Peer()
    cp = _sub(parent, "Контрагент")
    _sub(cp, "Ид", u.cml_id)
    if u.kind == "company":
        _sub(cp, "Наименование", u.company_name)
        _sub(cp, "ОфициальноеНаименование", u.full_name or u.company_name)
        _sub(cp, "Роль", "Покупатель")
        _address(parent, cp, "ЮридическийАдрес", u.legal_address, peer)
        if peer.company_inn == "comment":
            cp.append(etree.Comment(f" ИНН {u.inn}" + (f", КПП {u.kpp} " if u.kpp else " ")))
        else:
            _sub(cp, "ИНН", u.inn)
            if u.kpp:
                _sub(cp, "КПП", u.kpp)
        if u.ogrn:
            _sub(cp, "ОГРН", u.ogrn)
        if u.okpo:
            _sub(cp, "ОКПО", u.okpo)
        if u.bank_accounts:
            accs = _sub(cp, "РасчетныеСчета")
            for a in u.bank_accounts:
                acc = _sub(accs, "РасчетныйСчет")
                _sub(acc, "НомерСчета", a.account)
                b = _sub(acc, "Банк")
                if a.bank_name:
                    _sub(b, "Наименование", a.bank_name)
                if a.corr_account:
                    _sub(b, "СчетКорреспондентский", a.corr_account)
                if a.bank_address:
                    ad = _sub(b, "Адрес")
                    _sub(ad, "Представление", a.bank_address)
                _sub(b, "БИК", a.bik)
    else:
        _sub(cp, "Наименование", u.person_name or u.login)
        _sub(cp, "ПолноеНаименование", u.person_name or u.login)
        _sub(cp, "Роль", "Покупатель")
        if u.last_name:
            _sub(cp, "Фамилия", u.last_name)
        if u.first_name:
            _sub(cp, "Имя", u.first_name)
        if u.middle_name:
            _sub(cp, "Отчество", u.middle_name)
        if u.inn:
            _sub(cp, "ИНН", u.inn)
        _address(parent, cp, "АдресРегистрации", u.address, peer)
    contacts = [("Почта", u.email), ("ТелефонРабочий", u.phone)]
    if any(v for _, v in contacts):
        cs = _sub(cp, "Контакты")
        for typ, val in contacts:
            if val:
                c = _sub(cs, "Контакт")
                _sub(c, "Тип", typ)
                _sub(c, "Значение", val)
    if u.kind == "company" and u.contact_person:
        reps = _sub(cp, "Представители")
        r = _sub(reps, "Представитель")
        _sub(r, "Отношение", "Контактное лицо")
        _sub(r, "Ид", f"{u.cml_id}#contact")
        _sub(r, "Наименование", u.contact_person)


def _item(parent: Any, it: Item) -> None:
    t = _sub(parent, "Товар")
    _sub(t, "Ид", it.product_id)
    _sub(t, "Наименование", it.name)
    _sub(t, "БазоваяЕдиница", it.unit, Код="796", НаименованиеПолное="Штука", МеждународноеСокращение="PCE")
    _sub(t, "ЦенаЗаЕдиницу", fmt(it.price))
    _sub(t, "Количество", fmt(it.quantity))
    _sub(t, "Сумма", fmt(it.sum))
    if it.discount:
        ds = _sub(_sub(t, "Скидки"), "Скидка")
        _sub(ds, "Наименование", "Скидка на товар")
        _sub(ds, "Сумма", fmt(it.discount))
        _sub(ds, "УчтеноВСумме", "true")
    if it.vat_rate and it.vat_rate not in ("", "Без НДС"):
        rate = Decimal(it.vat_rate)
        vat = money(it.sum * rate / (100 + rate))
        n = _sub(_sub(t, "Налоги"), "Налог")
        _sub(n, "Наименование", "НДС")
        _sub(n, "УчтеноВСумме", "true")
        _sub(n, "Сумма", fmt(vat))
        sr = _sub(_sub(t, "СтавкиНалогов"), "СтавкаНалога")
        _sub(sr, "Наименование", "НДС")
        _sub(sr, "Ставка", it.vat_rate)
    reqs = _sub(t, "ЗначенияРеквизитов")
    _req(reqs, "ВидНоменклатуры", it.kind)
    _req(reqs, "ТипНоменклатуры", it.kind)


def _document(root: Any, st: ShopState, o: Order) -> None:
    d = _sub(root, "Документ")
    _sub(d, "Ид", o.xml_id)
    _sub(d, "Номер", o.number)
    _sub(d, "Дата", "2026-02-30" if o.broken == "date" else o.created.date().isoformat())
    _sub(d, "Время", o.created.strftime("%H:%M:%S"))
    _sub(d, "ХозОперация", "Заказ товара")
    _sub(d, "Роль", "Продавец")
    _sub(d, "Валюта", "руб" if o.currency == "RUB" else o.currency)
    _sub(d, "Курс", "1")
    _sub(d, "Сумма", "12 тыс." if o.broken == "sum" else fmt(o.total))
    _sub(d, "НомерВерсии", str(o.version))
    if o.comment or o.broken == "byte":
        _sub(d, "Комментарий", (o.comment or "") + (BAD_BYTE_MARK if o.broken == "byte" else ""))
    u = st.users.get(o.user_id)
    if u is not None:
        _counterparty(_sub(d, "Контрагенты"), u, st.peer)
    goods = _sub(d, "Товары")
    for it in o.items:
        _item(goods, it)
    if o.delivery_price:
        _item(goods, Item(DELIVERY_ID, "Доставка заказа", o.delivery_price, Decimal(1), vat_rate="20",
                          kind="Услуга"))
    reqs = _sub(d, "ЗначенияРеквизитов")
    _req(reqs, "Метод оплаты ИД", o.pay_system)
    _req(reqs, "Метод оплаты", PAY_SYSTEMS.get(o.pay_system, o.pay_system))
    _req(reqs, "Заказ оплачен", _bool(o.paid))
    if o.paid_at:
        _req(reqs, "Дата оплаты", o.paid_at.strftime("%Y-%m-%d %H:%M:%S"))
    if o.payment_doc:
        _req(reqs, "Номер платежного документа", o.payment_doc)
    _req(reqs, "Сумма оплаты", fmt(o.paid_sum))     # sandbox extension: partial payments (see docstring)
    _req(reqs, "Доставка разрешена", _bool(o.delivery_allowed))
    _req(reqs, "Метод доставки ИД", o.delivery)
    _req(reqs, "Способ доставки", DELIVERIES.get(o.delivery, o.delivery))
    if o.delivery_address:
        _req(reqs, "Адрес доставки", o.delivery_address)
    _req(reqs, "Отменен", _bool(o.canceled))
    if o.cancel_reason:
        _req(reqs, "Причина отмены", o.cancel_reason)
    _req(reqs, "Финальный статус", _bool(o.status == "F"))
    _req(reqs, "Статус заказа", f"[{o.status}] {STATUSES.get(o.status, o.status)}")
    _req(reqs, "Статуса заказа ИД", o.status)
    if o.status_changed:
        _req(reqs, "Дата изменения статуса", o.status_changed.strftime("%Y-%m-%d %H:%M:%S"))
    if o.updated_at:
        _req(reqs, "Дата изменения", o.updated_at.strftime("%Y-%m-%d %H:%M:%S"))
    if o.onec_number:
        _req(reqs, "Номер по 1С", o.onec_number)
    if o.shipment_number:
        _req(reqs, "Номер отгрузки", o.shipment_number)
    _req(reqs, "Проведен", _bool(o.posted))
    _req(reqs, "ПометкаУдаления", "false")
    _req(reqs, "Сайт", f"[{st.site}] Интернет-магазин")


def export_orders(st: ShopState, sess: Any, *, encoding: str = "windows-1251") -> bytes:
    """`mode=query`: the orders changed since the last confirmed export (the point moves on
    `mode=success`, ShopState.commit_export)."""
    with st.lock:
        chosen = sorted((o for o in st.orders.values() if o.seq > st.export_point and not o.updated_1c),
                        key=lambda o: o.seq)
        sess.pending_point = max((o.seq for o in st.orders.values()), default=st.export_point)
        version = st.peer.schema_version or sess.version.get("sale") or "2.08"
        return orders_document(st, chosen, encoding=encoding, version=version)


def orders_document(st: ShopState, orders: list[Order], *, encoding: str = "windows-1251",
                    version: str = "2.08") -> bytes:
    """The export. Peer knobs: root namespace, a text before the XML; an order broken with "byte" gets a
    vertical tab (a character XML forbids, pasted from a spreadsheet) in its comment."""
    attrs = {"ВерсияСхемы": version, "ДатаФормирования": st.now().strftime("%Y-%m-%dT%H:%M:%S")}
    root = etree.Element(ROOT, attrs, nsmap={None: CML_NS}) if st.peer.xmlns else etree.Element(ROOT, attrs)
    for o in orders:
        _document(root, st, o)
    if st.peer.xmlns:
        for el in root.iter():
            if isinstance(el.tag, str) and not el.tag.startswith("{"):
                el.tag = f"{{{CML_NS}}}{el.tag}"
    data = etree.tostring(root, encoding=encoding, xml_declaration=True, pretty_print=True)
    data = data.replace(BAD_BYTE_MARK.encode(encoding), b"\x0b")
    return st.peer.export_prefix.encode(encoding, "replace") + data


def info_document(encoding: str = "windows-1251") -> bytes:
    root = etree.Element("Справочник")
    sts = _sub(root, "Статусы")
    for k, v in STATUSES.items():
        e = _sub(sts, "Элемент")
        _sub(e, "Ид", k)
        _sub(e, "Название", v)
    ps = _sub(root, "ПлатежныеСистемы")
    for k, v in PAY_SYSTEMS.items():
        e = _sub(ps, "Элемент")
        _sub(e, "Ид", k)
        _sub(e, "Название", v)
    ds = _sub(root, "СлужбыДоставки")
    for k, v in DELIVERIES.items():
        e = _sub(ds, "Элемент")
        _sub(e, "Ид", k)
        _sub(e, "Название", v)
    return etree.tostring(root, encoding=encoding, xml_declaration=True, pretty_print=True)


# ---- import ----------------------------------------------------------------------------------------

_STATUS_RE = re.compile(r"^\s*\[([A-Za-z0-9_]+)\]")


def _status_id(value: str) -> str | None:
    m = _STATUS_RE.match(value)
    if m:
        return m.group(1)
    v = value.strip()
    if v in STATUSES:
        return v
    for k, name in STATUSES.items():
        if name.lower() == v.lower():
            return k
    return None


def _short_inn(cp: Cp) -> str | None:
    return cp.inn if cp.inn and len(cp.inn) == 10 else None


def _upsert_counterparty(st: ShopState, cp: Cp) -> User:
    """Apply a counterparty from 1C (or syncd): requisites edits of an existing user, or a new user.

    Partial counterparties are fine: only the elements present are applied.
    """
    u = st.find_user(cp.id, _short_inn(cp), cp.kpp, cp.email)
    kw: dict[str, Any] = {}
    company = u.kind == "company" if u is not None else cp.is_company
    if company:
        for attr, val in (("company_name", cp.name), ("full_name", cp.official_name or cp.full_name),
                          ("inn", cp.inn), ("kpp", cp.kpp), ("ogrn", cp.ogrn), ("okpo", cp.okpo)):
            if val is not None:
                kw[attr] = val
        if cp.addresses.get("ЮридическийАдрес"):
            kw["legal_address"] = cp.addresses["ЮридическийАдрес"]
        if cp.accounts:
            kw["bank_accounts"] = [BankAccount(a.account, a.bik, a.corr_account, a.bank_name, a.bank_address)
                                   for a in cp.accounts]
        if cp.contact_person:
            kw["contact_person"] = cp.contact_person
    else:
        for k in ("last_name", "first_name", "middle_name", "inn"):
            if getattr(cp, k) is not None:
                kw[k] = getattr(cp, k)
        if not (cp.last_name or cp.first_name) and cp.name and u is None:
            parts = cp.name.split()
            kw.update(last_name=parts[0], first_name=" ".join(parts[1:2]), middle_name=" ".join(parts[2:]))
        addr = next((v for v in cp.addresses.values() if v), None)
        if addr:
            kw["address"] = addr
    if cp.email:
        kw["email"] = cp.email
    if cp.phone:
        kw["phone"] = cp.phone
    if u is None:
        return st.add_user(xml_id=cp.id or "", kind="company" if company else "person", **kw)
    for k, v in kw.items():              # orders are not re-exported for it (the change came from 1C)
        setattr(u, k, v)
    return u


class Refused(ValueError):
    """A document a rejection (control API ``/rejections``) matched: not applied."""


def _refused_counterparty(st: ShopState, cp: Cp) -> str | None:
    known = st.find_user(cp.id, _short_inn(cp), cp.kpp, cp.email)
    kind = known.kind if known is not None else ("company" if cp.is_company else "person")
    return st.refusal("company" if kind == "company" else "user", xml_id=cp.id, inn=cp.inn, email=cp.email)


def _apply_document(st: ShopState, doc: Doc) -> str:
    """One order document from 1C/syncd. Returns "created" | "updated" | "skipped"."""
    if doc.operation and doc.operation != "Заказ товара":
        return "skipped"               # payments / shipments: not applied by the sandbox
    o = st.find_order(doc.id)
    refused = st.refusal("order", xml_id=doc.id, number=doc.number, order=o, requisites=doc.requisites)
    if refused is not None:
        raise Refused(f"Документ {doc.id}: {refused}")
    buyer = None
    if doc.counterparties:
        # a buyer inside an order only binds it (or registers a new one); requisites edits of a known
        # buyer come as a root-level Контрагенты document
        cp = doc.counterparties[0]
        buyer = st.find_user(cp.id, _short_inn(cp), cp.kpp, cp.email) or _upsert_counterparty(st, cp)
    created = o is None
    if o is None:
        if buyer is None:
            raise ValueError(f"document {doc.id}: a new order needs a counterparty")
        oid = next(st._order_ids)
        o = Order(oid, doc.id, str(oid), doc.date.astimezone(TZ) if doc.date else st.now(), buyer.id, [],
                  version=0)
        st.orders[oid] = o
    elif buyer is not None:
        o.user_id = buyer.id
    if doc.lines:
        items = []
        delivery = None
        for it in doc.lines:
            if it.id == DELIVERY_ID:
                delivery = it.sum if it.sum is not None else it.price
                continue
            qty = it.quantity if it.quantity is not None else Decimal(1)
            price = it.price if it.price is not None else (it.sum / qty if it.sum is not None and qty else Decimal(0))
            items.append(Item(it.id or "", it.name or "", money(price), qty, money(it.discount), it.vat_rate or "20",
                              it.unit or "шт"))
        o.items = items
        if delivery is not None:
            o.delivery_price = money(delivery)
    if doc.comment is not None:
        o.comment = doc.comment
    if doc.currency:
        o.currency = "RUB" if doc.currency.lower() in ("руб", "руб.", "rub", "643") else doc.currency
    for name, value in doc.requisites:
        v = (value or "").strip()
        low = v.lower()
        if name in ("Статус заказа", "Статуса заказа ИД") and v:
            sid = _status_id(v)
            if sid is None:
                raise ValueError(f"document {doc.id}: unknown order status {v!r}")
            if sid != o.status:
                o.status, o.status_changed = sid, st.now()
            if sid == "C":
                o.canceled = True
        elif name == "Заказ оплачен":
            if low == "true" and not o.paid:
                o.paid_sum, o.paid_at = o.total, o.paid_at or st.now()
            elif low == "false" and o.paid:
                o.paid_sum, o.paid_at = Decimal(0), None
        elif name == "Сумма оплаты" and v:
            o.paid_sum = money(v.replace(",", "."))
        elif name == "Дата оплаты" and v:
            try:
                import datetime as _dt
                o.paid_at = _dt.datetime.fromisoformat(v.replace("T", " ")).replace(tzinfo=TZ)
            except ValueError:
                pass
        elif name == "Отменен":
            o.canceled = low == "true"
        elif name == "Причина отмены":
            o.cancel_reason = v
        elif name == "Номер по 1С":
            o.onec_number = v
        elif name == "Дата по 1С":
            o.onec_date = v
        elif name == "Проведен":
            o.posted = low == "true"
        elif name == "Номер отгрузки":
            o.shipment_number = v
        elif name == "Адрес доставки":
            o.delivery_address = v
        elif name == "Доставка разрешена":
            o.delivery_allowed = low == "true"
    if o.status == "C" and not o.canceled:
        o.status = "N"
    st.bump(o, from_1c=True)
    return "created" if created else "updated"


def import_orders(st: ShopState, data: bytes) -> dict[str, Any]:
    """Apply an uploaded orders file; per-document errors are collected, the rest goes on.
    Raises `cml_in.Unreadable` when the file as a whole cannot be read."""
    result: dict[str, Any] = {"created": [], "updated": [], "skipped": 0, "refused": [], "counterparties": [],
                              "errors": []}
    with st.lock:
        for rec in sale_records(data, TZ):
            if isinstance(rec, Bad):
                result["errors"].append(f"строка {rec.line}: {rec.reason}")
            elif isinstance(rec, Doc):
                try:
                    outcome = _apply_document(st, rec)
                except ValueError as e:
                    result["errors"].append(str(e))
                    if isinstance(e, Refused):
                        result["refused"].append(rec.id)
                    continue
                if outcome == "skipped":
                    result["skipped"] += 1
                else:
                    result[outcome].append(rec.id)
            else:                             # a root-level Контрагенты/Контрагент: requisites edits
                refused = _refused_counterparty(st, rec)
                if refused is not None:
                    result["errors"].append(f"Контрагент {rec.id}: {refused}")
                    result["refused"].append(rec.id)
                    continue
                result["counterparties"].append(_upsert_counterparty(st, rec).id)
    return result


def import_catalog(st: ShopState, data: bytes) -> dict[str, Any]:
    """import.xml (goods) and offers.xml (prices, stock) into the product list."""
    out: dict[str, Any] = {"products": 0, "offers": 0, "errors": []}
    with st.lock:
        for rec in catalog_records(data):
            if isinstance(rec, Bad):
                out["errors"].append(f"строка {rec.line}: {rec.reason}")
            elif isinstance(rec, Goods):
                p = st.products.get(rec.id)
                if p is None:
                    p = st.add_product(rec.id, rec.name or rec.id, 0)
                p.name, p.sku, p.active = rec.name or p.name, rec.sku or p.sku, not rec.deleted
                out["products"] += 1
            elif isinstance(rec, OfferIn):
                pid = rec.id.split("#", 1)[0]          # "<product>#<characteristic>": the product's offer
                p = st.products.get(pid)
                if p is None:
                    p = st.add_product(pid, rec.name or pid, 0)
                if rec.price is not None:
                    p.price = money(rec.price)
                if rec.quantity is not None:
                    p.quantity = rec.quantity
                out["offers"] += 1
    return out
