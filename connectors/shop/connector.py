"""The shop connector: orders (and their buyers and products) from a CommerceML exchange endpoint.

Stream ``orders`` (one Batch per `mode=query`): for each exported `Документ`, first its buyer —
``user`` (a person) or ``company`` — then the products of its lines (``product``), then the ``order``.
Records are yielded in that order so the engine has bound the buyer before the order refers to it.
The batch's ``ack`` sends `mode=success` in the query's session; the engine calls it only after the
batch is committed, so a crash before the commit makes the shop export the same orders again (and the
bindings make that re-pull harmless). The cursor is informational only (the shop keeps the export
point): the latest `Дата изменения` seen.

Writes ``order``, ``user``, ``company``: a CommerceML document written with `syncd.commerceml`
(windows-1251 by default) is uploaded with `init` + `type=sale&mode=file` in `file_limit` chunks, then
`mode=import` is repeated while the shop answers `progress`. A create stamps the document's `Ид` with
the op's external key (``syncd-<entity id>``); the exchange cannot search orders by `Ид`, but the
shop's import matches documents on `Ид` (Bitrix: XML_ID), so a retried create updates the order it
created the first time instead of making a second one. Users and companies (S7 requisites edits) go up
as a root-level `Контрагенты` document, matched the same way.

No ``products`` stream: Bitrix sites do not export the catalog through this protocol (catalog exchange
is 1C -> site only); products reach syncd as the lines of orders.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog

from connectors.shop.client import Answer, ExchangeClient, Session, SessionLost
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

def counterparty_record(cp: Counterparty) -> RawRecord:
    phones = [c.value for c in cp.contacts if c.type in _PHONE_TYPES and c.value]
    if cp.is_company:
        legal = next((a for a in cp.addresses if a.kind == "ЮридическийАдрес"), None) or \
            next(iter(cp.addresses), None)
        f: dict[str, Any] = {
            "Наименование": cp.name, "ОфициальноеНаименование": cp.official_name or cp.full_name,
            "ИНН": cp.inn, "КПП": cp.kpp, "ОГРН": cp.ogrn, "ОКПО": cp.okpo,
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
        f = {"Наименование": cp.name, "ПолноеНаименование": cp.full_name, "Фамилия": cp.last_name,
             "Имя": cp.first_name, "Отчество": cp.middle_name, "ИНН": cp.inn, "Почта": cp.email,
             "Телефон": cp.phone, "Телефоны": phones, "Адрес": addr.presentation if addr else None}
        kind = "user"
    assert cp.id is not None
    stamp = cp.id if cp.id.startswith("syncd-") else None
    return RawRecord(kind, cp.id, {k: v for k, v in f.items() if v is not None}, stamp=stamp)


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
    cp = doc.counterparties[0] if doc.counterparties else None
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
        "Покупатель": cp.id if cp and not cp.is_company else None,
        "Организация": cp.id if cp and cp.is_company else None,
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
                     source_time=changed or doc.date, stamp=doc.id if doc.id.startswith("syncd-") else None)


def records_from_export(data: bytes) -> tuple[list[RawRecord | Rejected], dt.datetime | None]:
    """Parse a `mode=query` answer: buyers, products, orders in dependency order; bad documents rejected."""
    out: list[RawRecord | Rejected] = []
    seen: set[tuple[str, str]] = set()
    latest: dt.datetime | None = None
    try:
        for doc in iter_documents(data):
            if isinstance(doc, CmlRejected):
                out.append(Rejected(f"line {doc.line}: {doc.reason}", kind="order", external_id=doc.record_id,
                                    line=doc.line, raw=doc.raw))
                continue
            if doc.operation and doc.operation != ORDER_OP:
                continue          # payment / shipment documents of the Контейнер form: not read (yet)
            try:
                recs: list[RawRecord] = []
                for cp in doc.counterparties[:1]:
                    if not cp.id:
                        raise BadInput("<Контрагент> without <Ид>")
                    recs.append(counterparty_record(cp))
                for it in doc.items:
                    if it.id and it.id != DELIVERY_ID:
                        recs.append(RawRecord("product", it.product_id or it.id,
                                              {k: v for k, v in item_fields(it).items() if k in PRODUCT_FIELDS}))
                order = order_record(doc)
            except (BadInput, AssertionError) as exc:
                out.append(Rejected(f"order {doc.id}: {exc}", kind="order", external_id=doc.id))
                continue
            for r in recs:
                if (r.kind, r.external_id) not in seen:
                    seen.add((r.kind, r.external_id))
                    out.append(r)
            out.append(order)
            if order.source_time and (latest is None or order.source_time > latest):
                latest = order.source_time
    except ProtocolError as exc:
        # the rest of the file is unreadable: what was read stays, the tail is one quarantined record
        out.append(Rejected(f"export unreadable: {exc}", kind="order", line=exc.line,
                            raw=data[:4096].decode("cp1251", "replace")))
    return out, latest


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


def counterparty_from_fields(kind: str, ext: str, f: Mapping[str, Any]) -> Counterparty:
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
        return Counterparty(ext, name=_s(f.get("Наименование")), official_name=_s(f.get("ОфициальноеНаименование")),
                            role="Покупатель", inn=_s(f.get("ИНН")), kpp=_s(f.get("КПП")), okpo=_s(f.get("ОКПО")),
                            ogrn=_s(f.get("ОГРН")), addresses=addr, contacts=tuple(contacts),
                            bank_accounts=accounts, representatives=reps)
    name = _s(f.get("Наименование")) or " ".join(
        str(f[k]) for k in ("Фамилия", "Имя", "Отчество") if f.get(k)) or None
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
    return Item(pid, name=name, unit=Unit("796", _s(row.get("Единица")) or "шт", "Штука", "PCE"), price=price,
                quantity=qty, sum=total,
                discounts=(Discount("Скидка", disc, None, True),) if disc else (),
                taxes=(Tax("НДС", format(rate.normalize(), "f"), True, None),) if rate is not None else (),
                requisites=(("ВидНоменклатуры", kind), ("ТипНоменклатуры", kind)))


_DOC_REQS = ("Статус заказа", "Заказ оплачен", "Дата оплаты", "Сумма оплаты", "Отменен", "Причина отмены",
             "Номер отгрузки", "Проведен", "Номер по 1С", "Дата по 1С", "Адрес доставки", "Способ доставки",
             "Доставка разрешена", "Метод оплаты")
_BOOL_REQS = {"Заказ оплачен", "Отменен", "Проведен", "Доставка разрешена"}


def order_document(doc_id: str, f: Mapping[str, Any], *, create: bool) -> Document:
    items = [_item_from_fields(r) for r in f.get("Товары") or ()] if f.get("Товары") is not None else []
    delivery = _d(f.get("Стоимость доставки"))
    if delivery and items:
        items.append(Item(DELIVERY_ID, name="Доставка заказа", unit=Unit("796", "шт", "Штука", "PCE"),
                          price=delivery, quantity=Decimal(1), sum=delivery,
                          requisites=(("ВидНоменклатуры", "Услуга"), ("ТипНоменклатуры", "Услуга"))))
    total = _d(f.get("Сумма"))
    if items:
        total = sum((i.sum or Decimal(0) for i in items), Decimal(0))
    reqs = []
    for name in _DOC_REQS:
        if name in f and f[name] is not None:
            v = f[name]
            if name in _BOOL_REQS:
                v = _b(v)
            elif isinstance(v, dt.datetime):
                v = v.astimezone(MOSCOW).strftime("%Y-%m-%d %H:%M:%S")
            reqs.append((name, str(v)))
    buyer = f.get("Покупатель") or f.get("Организация") or f.get("Контрагент")
    cps = (Counterparty(str(buyer), role="Покупатель"),) if buyer else ()
    when = f.get("Дата")
    if isinstance(when, str):
        when = _when(when)
    if create and when is None:
        when = dt.datetime.now(MOSCOW)
    cur = _s(f.get("Валюта"))
    return Document(doc_id, number=_s(f.get("Номер")), date=when, operation=ORDER_OP, role="Продавец",
                    currency=("руб" if cur in (None, "RUB") and (create or cur) else cur),
                    rate=Decimal(1) if create else None, total=total, comment=_s(f.get("Комментарий")),
                    counterparties=cps, items=tuple(items), requisites=tuple(reqs))


# -- the connector --------------------------------------------------------------------------------

class ShopConnector(BaseConnector):
    def __init__(self, name: str, settings: ShopSettings, ctx: Any = None) -> None:
        self.name = name
        self.settings = settings
        self.ctx = ctx
        self.client = ExchangeClient(settings, name)
        self.streams = dict(STREAMS)
        self.writes = WRITES
        self.stats: dict[str, int] = {"queries": 0, "acks": 0, "ack_errors": 0, "uploads": 0}

    # -- health / describe ---------------------------------------------------------------------
    def health(self) -> Health:
        try:
            self.client.login("sale")
            self.client.init("sale")
        except PermanentError as exc:
            return Health(False, str(exc))
        except (TransientError, SessionLost) as exc:
            return Health(False, f"unreachable: {exc}")
        return Health(True, f"checkauth ok; file_limit={self.client.file_limit}, "
                            f"version={self.client.server_version or '-'}")

    def describe(self) -> LiveSchema:
        return LiveSchema(kinds={"order": set(ORDER_FIELDS), "user": set(USER_FIELDS) | {"Ид"},
                                 "company": set(COMPANY_FIELDS), "product": set(PRODUCT_FIELDS)})

    # -- read ----------------------------------------------------------------------------------
    def read(self, stream: str, cursor: str | None, *, since: dt.datetime | None = None) -> Iterator[Batch]:
        if stream != "orders":
            raise PermanentError(f"shop has no stream {stream!r}", connector=self.name)
        with self.client.lock:
            self.client.init("sale")
            sess = self.client.ensure("sale")
            a = self.client.call("sale", "query", session=sess)
        if a.word:     # a status line instead of XML
            raise TransientError(f"shop: query answered {a.word}: {a.message}", connector=self.name)
        self.stats["queries"] += 1
        records, latest = records_from_export(a.body)
        if since is not None:
            log.info("shop_backfill_note", system=self.name,
                     note="the shop exports what changed since its last committed success; `since` is not sent")
        new_cursor = latest.isoformat() if latest else cursor
        if not records:
            # nothing changed: still commit the point so the shop does not keep the selection open
            self._ack(sess)
            return
        yield Batch("orders", records, cursor=new_cursor, ack=lambda: self._ack(sess))

    def _ack(self, sess: Session) -> None:
        """`mode=success` in the session that ran the query (after the engine's commit)."""
        try:
            a = self.client.call("sale", "success", session=sess, relogin=False)
        except SessionLost as exc:
            self.stats["ack_errors"] += 1
            log.warning("shop_ack_failed", system=self.name, reason=str(exc),
                        note="the shop will export the same orders again")
            return
        except TransientError as exc:
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
        ext = op.external_id if op.op == "update" and op.external_id else op.external_key
        import io
        buf = io.BytesIO()
        opts = {"encoding": self.settings.encoding, "schema_version": self.settings.version}
        if op.kind == "order":
            write_orders(buf, [order_document(ext, op.fields, create=op.op == "create")], **opts)
        else:
            write_counterparties(buf, [counterparty_from_fields(op.kind, ext, op.fields)], **opts)
        self._upload(f"orders-{op.op_id}.xml" if op.kind == "order" else f"contragents-{op.op_id}.xml",
                     buf.getvalue(), op)
        return WriteResult(ext, dict(op.fields))

    def _upload(self, filename: str, data: bytes, op: WriteOp) -> None:
        """init, file chunks, import until success; one restart with a fresh checkauth if the session is lost."""
        for attempt in (1, 2):
            try:
                with self.client.lock:
                    if attempt == 2:
                        self.client.login("sale")
                    sess = self.client.ensure("sale")
                    self.client.init("sale", session=sess)
                    sess = self.client.session or sess
                    limit = self.client.file_limit
                    for off in range(0, len(data), limit):
                        chunk = data[off:off + limit]
                        params = {"filename": filename}
                        if self.settings.chunk_offsets:
                            params["offset"] = str(off)
                        a = self.client.call("sale", "file", method="POST", data=chunk, session=sess, **params)
                        if a.word != "success":
                            raise PermanentError(f"shop: file: {a.word}: {a.message}", connector=self.name,
                                                 op_id=op.op_id)
                    for _ in range(self.settings.import_polls):
                        a = self.client.call("sale", "import", session=sess, filename=filename)
                        if a.word != "progress":
                            break
                    else:
                        raise TransientError("shop: import still in progress", connector=self.name, op_id=op.op_id)
            except SessionLost as exc:
                if attempt == 2:
                    raise PermanentError(f"shop: upload refused: {exc}", connector=self.name,
                                         op_id=op.op_id) from None
                log.info("shop_upload_restart", system=self.name, reason=str(exc))
                continue
            self.stats["uploads"] += 1
            if a.word != "success":
                raise PermanentError(f"shop: import: {a.word}: {a.message}", connector=self.name, op_id=op.op_id)
            if "ошиб" in a.message.lower():
                raise PermanentError(f"shop: import: {a.message}", connector=self.name, op_id=op.op_id)
            return

    def close(self) -> None:
        self.client.close()


def answer_text(a: Answer) -> str:
    return "\n".join(a.lines)
