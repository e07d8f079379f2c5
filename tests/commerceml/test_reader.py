"""Streaming readers: the reference example, 1C requisites, Контейнер, catalog, offers, encodings."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from syncd.commerceml import (Document, Group, Offer, PriceType, Product, Property, Rejected, Stock,
                              Warehouse, iter_catalog, iter_counterparties, iter_documents, iter_offers,
                              iter_records, read_header, write_orders)
from syncd.commerceml.encoding import MOSCOW

from .factories import BOM, cml, doc_xml, order, requisites_xml, write_file

EXAMPLE = Path(__file__).with_name("data") / "protocols_2_3.xml"


def test_reference_example_parses_to_expected_values() -> None:
    (doc,) = list(iter_documents(EXAMPLE))
    assert isinstance(doc, Document)
    assert (doc.id, doc.number, doc.operation, doc.role, doc.currency) == (
        "1042", "1042", "Заказ товара", "Продавец", "руб")
    assert doc.date == datetime(2026, 11, 24, 10, 12, 31, tzinfo=MOSCOW)
    assert doc.date.utcoffset() == timedelta(hours=3)
    assert doc.rate == Decimal("1") and doc.total == Decimal("5880.00")
    (cp,) = doc.counterparties
    assert (cp.id, cp.name, cp.role, cp.inn, cp.kpp) == ("77", 'ООО "Ромашка"', "Покупатель",
                                                        "7701234560", "770101001")
    assert cp.is_company and cp.email == "zakaz@romashka.example" and cp.phone == "+74951234567"
    assert cp.addresses[0].kind == "ЮридическийАдрес"
    assert cp.addresses[0].presentation == "119991, Москва, ул. Лесная, д. 5"
    assert cp.representatives[0].name == "Петров Иван Сергеевич"
    (it,) = doc.items
    assert it.unit is not None and (it.unit.code, it.unit.name, it.unit.full_name, it.unit.intl_abbr) == (
        "796", "шт", "Штука", "PCE")
    assert (it.price, it.quantity, it.sum) == (Decimal("490.00"), Decimal("12"), Decimal("5880.00"))
    assert it.taxes[0].name == "НДС" and it.taxes[0].included is True and it.taxes[0].sum == Decimal("980.00")
    assert it.requisite("ВидНоменклатуры") == "Товар"
    assert doc.requisite("Метод оплаты") == "Счет"
    assert doc.is_paid is False and doc.is_canceled is False and doc.status == "[N] Принят"


def test_onec_requisites_and_payment_document(tmp_path: Path) -> None:
    reqs = requisites_xml([("Номер по 1С", "УТ-000123"), ("Дата по 1С", "2026-11-25T09:00:00"),
                           ("Проведен", "true"), ("Заказ оплачен", "true"),
                           ("Дата оплаты", "25.11.2026 9:05:00"), ("Отменен", "false"),
                           ("ПометкаУдаления", "false"), ("Номер отгрузки", "ОТ-7")])
    payment = ("<Документ><Ид>p-1</Ид><Номер>p-1</Номер><Дата>2026-11-25</Дата>"
               "<ХозОперация>Выплата безналичных денег</ХозОперация><Сумма>5880.00</Сумма>"
               "<Основание>1042</Основание></Документ>\n")
    text = cml(doc_xml("1042", extra=reqs + "<НомерВерсии>5</НомерВерсии>") + payment, decl="windows-1251")
    path = write_file(tmp_path, "from1c.xml", text, "cp1251")
    order_, pay = list(iter_documents(path))
    assert order_.number_1c == "УТ-000123" and order_.is_posted is True and order_.is_paid is True
    assert order_.payment_date == "25.11.2026 9:05:00" and order_.is_canceled is False
    assert order_.shipment_number == "ОТ-7" and order_.version == "5"
    assert [k for k, _ in order_.requisites][:3] == ["Номер по 1С", "Дата по 1С", "Проведен"]
    assert pay.operation == "Выплата безналичных денег" and pay.base == "1042"
    assert pay.date == datetime(2026, 11, 25, tzinfo=MOSCOW)


def test_container_form_and_root_documents_both_read(tmp_path: Path) -> None:
    body = ("<Контейнер>" + doc_xml("1") + doc_xml("1-p") + "</Контейнер>\n"
            "<Контейнер>" + doc_xml("2") + "</Контейнер>\n" + doc_xml("3"))
    path = write_file(tmp_path, "c.xml", cml(body), "utf-8")
    assert [d.id for d in iter_documents(path)] == ["1", "1-p", "2", "3"]


def test_an_address_beside_the_buyer_is_the_buyers_not_a_counterparty(tmp_path: Path) -> None:
    """Issue 22 #12: a site that puts <АдресРегистрации>/<Представление> directly under
    <Контрагенты> got counterparties with no id and a buyer without an address."""
    body = ("<Документ><Ид>5</Ид><Номер>5</Номер><Дата>2026-11-24</Дата><ХозОперация>Заказ товара</ХозОперация>"
            "<Роль>Продавец</Роль><Валюта>RUB</Валюта><Курс>1</Курс><Сумма>100</Сумма><Контрагенты>"
            "<Контрагент><Ид>u1</Ид><Наименование>Иван Петров</Наименование><Роль>Покупатель</Роль></Контрагент>"
            "<АдресРегистрации><Представление>Москва, ул. Лесная, 5</Представление></АдресРегистрации>"
            "<Представление>Иван Петров</Представление></Контрагенты>"
            "<Товары><Товар><Ид>g1</Ид><Наименование>Кружка</Наименование><ЦенаЗаЕдиницу>100</ЦенаЗаЕдиницу>"
            "<Количество>1</Количество><Сумма>100</Сумма></Товар></Товары></Документ>")
    path = write_file(tmp_path, "stray.xml", cml(body), "utf-8")
    (doc,) = list(iter_documents(path))
    (buyer,) = doc.counterparties
    assert buyer.id == "u1" and [(a.kind, a.presentation) for a in buyer.addresses] == [
        ("АдресРегистрации", "Москва, ул. Лесная, 5")]


def test_1c_namespace_is_accepted(tmp_path: Path) -> None:
    path = write_file(tmp_path, "ns.xml", cml(doc_xml("9"), namespace="urn:1C.ru:commerceml_2"), "utf-8")
    (doc,) = list(iter_documents(path))
    assert doc.id == "9" and doc.total == Decimal("5880.00")


@pytest.mark.parametrize("encoding,bom,decl", [
    ("cp1251", False, "windows-1251"), ("cp1251", True, "windows-1251"),
    ("utf-8", False, "UTF-8"), ("utf-8", True, "UTF-8"),
    ("utf-8", False, None), ("utf-8", True, None), ("cp1251", False, None),
])
def test_every_encoding_form_reads_the_same(tmp_path: Path, encoding: str, bom: bool,
                                            decl: str | None) -> None:
    extra = "<Комментарий>Позвонить перед доставкой — «срочно»</Комментарий>"
    path = write_file(tmp_path, "f.xml", cml(doc_xml("Заказ-1", extra=extra), decl=decl), encoding, bom=bom)
    (doc,) = list(iter_documents(path))
    assert doc.id == "Заказ-1"
    assert doc.comment == "Позвонить перед доставкой — «срочно»"


def test_values_are_stripped_and_tolerant_numbers(tmp_path: Path) -> None:
    item = ('<Товары><Товар><Ид> abc </Ид><Наименование>Чай</Наименование>'
            '<БазоваяЕдиница Код="796 " НаименованиеПолное="Штука">шт </БазоваяЕдиница>'
            '<ЦенаЗаЕдиницу>1\u00a0234,50</ЦенаЗаЕдиницу><Количество> 2 </Количество>'
            '<Сумма>2 469,00</Сумма></Товар></Товары>')
    path = write_file(tmp_path, "f.xml", cml(doc_xml("1", total="2 469,00", extra=item)), "utf-8")
    (doc,) = list(iter_documents(path))
    (it,) = doc.items
    assert it.id == "abc" and it.unit.code == "796" and it.unit.name == "шт"
    assert it.price == Decimal("1234.50") and it.quantity == 2 and it.sum == Decimal("2469.00")
    assert doc.total == Decimal("2469.00")


def test_bad_document_is_rejected_and_the_rest_goes_on(tmp_path: Path) -> None:
    body = doc_xml("1") + doc_xml("2", total="пять тысяч") + doc_xml("3", date="31.02.2026") + doc_xml("4")
    path = write_file(tmp_path, "f.xml", cml(body), "utf-8")
    out = list(iter_documents(path))
    assert [type(o).__name__ for o in out] == ["Document", "Rejected", "Rejected", "Document"]
    bad = out[1]
    assert isinstance(bad, Rejected)
    assert bad.record_id == "2" and bad.line == 4 and "Сумма" in bad.reason
    assert "пять тысяч" in bad.raw
    err = bad.as_error()
    assert err.line == 4 and err.record == "2"
    assert out[2].record_id == "3" and out[2].line == 5 and "date" in out[2].reason


def test_on_error_callback_takes_rejections(tmp_path: Path) -> None:
    body = doc_xml("1") + doc_xml("2", total="x") + doc_xml("3")
    path = write_file(tmp_path, "f.xml", cml(body), "utf-8")
    seen: list[Rejected] = []
    ids = [d.id for d in iter_documents(path, on_error=seen.append)]
    assert ids == ["1", "3"] and [r.record_id for r in seen] == ["2"]


def test_empty_dates_are_none(tmp_path: Path) -> None:
    path = write_file(tmp_path, "f.xml", cml(doc_xml("1", date="0001-01-01", time="0:00:00")), "utf-8")
    (doc,) = list(iter_documents(path))
    assert doc.date is None


def test_explicit_offset_and_configurable_zone(tmp_path: Path) -> None:
    body = doc_xml("1", date="2026-11-24T10:12", time="") + doc_xml("2", date="2026-11-24T10:12:00+05:00")
    path = write_file(tmp_path, "f.xml", cml(body), "utf-8")
    utc = timezone.utc
    d1, d2 = list(iter_documents(path, tz=utc))
    assert d1.date == datetime(2026, 11, 24, 10, 12, tzinfo=utc)
    assert d2.date.utcoffset() == timedelta(hours=5)


def test_root_level_counterparties(tmp_path: Path) -> None:
    body = ("<Контрагенты><Контрагент><Ид>c1</Ид><Наименование>Сидоров</Наименование>"
            "<Фамилия>Сидоров</Фамилия><Имя>Пётр</Имя><ИНН>500100732259</ИНН></Контрагент>"
            "<Контрагент><Ид>c2</Ид><Наименование>ООО Лютик</Наименование>"
            "<РеквизитыЮрЛица><ОфициальноеНаименование>ООО «Лютик»</ОфициальноеНаименование>"
            "<ИНН>7707083893</ИНН><КПП>773601001</КПП><ОГРН>1027700132195</ОГРН></РеквизитыЮрЛица>"
            "</Контрагент></Контрагенты>\n") + doc_xml("1")
    path = write_file(tmp_path, "f.xml", cml(body), "utf-8")
    a, b = list(iter_counterparties(path))
    assert a.last_name == "Сидоров" and a.first_name == "Пётр" and not a.is_company
    assert b.official_name == "ООО «Лютик»" and b.ogrn == "1027700132195" and b.is_company


CATALOG = """<Классификатор><Ид>cls</Ид><Наименование>Классификатор</Наименование>
<Группы><Группа><Ид>g1</Ид><Наименование>Посуда</Наименование>
  <Группы><Группа><Ид>g1.1</Ид><Наименование>Кружки</Наименование></Группа></Группы></Группа>
  <Группа><Ид>g2</Ид><Наименование>Чай</Наименование></Группа></Группы>
<Свойства><Свойство><Ид>p1</Ид><Наименование>Цвет</Наименование><ТипЗначений>Справочник</ТипЗначений>
  <ВариантыЗначений><Справочник><ИдЗначения>v1</ИдЗначения><Значение>Белый</Значение></Справочник>
  </ВариантыЗначений></Свойство></Свойства></Классификатор>
<Каталог СодержитТолькоИзменения="false"><Ид>cat</Ид><ИдКлассификатора>cls</ИдКлассификатора>
<Наименование>Каталог</Наименование><Товары>
<Товар><Ид>t1</Ид><Артикул>MUG-350</Артикул><Наименование>Кружка</Наименование>
  <БазоваяЕдиница Код="796 " НаименованиеПолное="Штука" МеждународноеСокращение="PCE">шт</БазоваяЕдиница>
  <Группы><Ид>g1.1</Ид></Группы><Описание>Белая кружка</Описание><Штрихкод>4600000000017</Штрихкод>
  <ЗначенияСвойств><ЗначенияСвойства><Ид>p1</Ид><Значение>v1</Значение></ЗначенияСвойства></ЗначенияСвойств>
  <СтавкиНалогов><СтавкаНалога><Наименование>НДС</Наименование><Ставка>20</Ставка></СтавкаНалога></СтавкиНалогов>
  <ЗначенияРеквизитов><ЗначениеРеквизита><Наименование>Вес</Наименование><Значение>0.3</Значение></ЗначениеРеквизита></ЗначенияРеквизитов>
</Товар>
<Товар Статус="Удален"><Ид>t2</Ид><Наименование>Старое</Наименование></Товар>
<Товар><Ид>t3</Ид><Наименование>Снято</Наименование><ПометкаУдаления>true</ПометкаУдаления></Товар>
<Товар><Наименование>без Ид</Наименование></Товар>
</Товары></Каталог>
"""


def test_catalog_groups_properties_products(tmp_path: Path) -> None:
    path = write_file(tmp_path, "import.xml", cml(CATALOG, decl="windows-1251"), "cp1251")
    out = list(iter_catalog(path))
    g1, g2, prop, t1, t2, t3, bad = out
    assert isinstance(g1, Group) and g1.children == (Group("g1.1", "Кружки"),) and g2.id == "g2"
    assert isinstance(prop, Property) and prop.options == (("v1", "Белый"),)
    assert isinstance(t1, Product) and t1.sku == "MUG-350" and t1.groups == ("g1.1",)
    assert t1.unit.code == "796" and t1.barcode == "4600000000017" and t1.description == "Белая кружка"
    assert t1.property_values == (("p1", "v1"),) and t1.taxes[0].rate == "20"
    assert t1.requisite("Вес") == "0.3" and not t1.deleted
    assert t2.deleted and t3.deleted
    assert isinstance(bad, Rejected) and bad.kind == "product"
    header = read_header(path)
    assert header.schema_version == "2.08" and header.section == "Каталог" and header.only_changes is False


OFFERS = """<ПакетПредложений СодержитТолькоИзменения="true"><Ид>pk</Ид><Наименование>Пакет</Наименование>
<ИдКаталога>cat</ИдКаталога><ТипыЦен><ТипЦены><Ид>pt1</Ид><Наименование>Розничная</Наименование>
<Валюта>RUB</Валюта></ТипЦены></ТипыЦен>
<Склады><Склад><Ид>w1</Ид><Наименование>Основной</Наименование></Склад><Склад><Ид>w2</Ид></Склад></Склады>
<Предложения>
<Предложение><Ид>t1#c1</Ид><Артикул>MUG</Артикул><Наименование>Кружка (белая)</Наименование>
 <Цены><Цена><Представление>490 руб. за шт</Представление><ИдТипаЦены>pt1</ИдТипаЦены>
 <ЦенаЗаЕдиницу>490,00</ЦенаЗаЕдиницу><Валюта>RUB</Валюта><Единица>шт</Единица><Коэффициент>1</Коэффициент></Цена></Цены>
 <Количество>15</Количество><Склад ИдСклада="w1" КоличествоНаСкладе="10"/><Склад ИдСклада="w2" КоличествоНаСкладе="5"/>
</Предложение>
<Предложение><Ид>t2</Ид><Остатки><Остаток><Склад><Ид>w1</Ид><Количество>3</Количество></Склад></Остаток>
 <Остаток><Склад><Ид>w2</Ид><Количество>0</Количество></Склад></Остаток></Остатки></Предложение>
</Предложения></ПакетПредложений>
"""


@pytest.mark.parametrize("root", ["ПакетПредложений", "ИзмененияПакетаПредложений"])
def test_offers_prices_and_both_stock_forms(tmp_path: Path, root: str) -> None:
    path = write_file(tmp_path, "offers.xml", cml(OFFERS.replace("ПакетПредложений", root)), "utf-8")
    pt, w1, w2, o1, o2 = list(iter_offers(path))
    assert pt == PriceType("pt1", "Розничная", "RUB")
    assert (w1, w2) == (Warehouse("w1", "Основной"), Warehouse("w2", None))
    assert isinstance(o1, Offer) and o1.product_id == "t1" and o1.quantity == 15
    (price,) = o1.prices
    assert price.type_id == "pt1" and price.price == Decimal("490.00") and price.coefficient == 1
    assert o1.stocks == (Stock("w1", Decimal(10)), Stock("w2", Decimal(5)))
    assert o2.stocks == (Stock("w1", Decimal(3)), Stock("w2", Decimal(0)))
    assert read_header(path).only_changes is True


def test_iter_records_reads_everything_in_one_pass(tmp_path: Path) -> None:
    path = write_file(tmp_path, "all.xml", cml(CATALOG + OFFERS + doc_xml("5")), "utf-8")
    kinds = [type(o).__name__ for o in iter_records(path)]
    assert kinds.count("Product") == 3 and kinds.count("Offer") == 2 and kinds.count("Document") == 1


def test_written_orders_read_back_from_a_file(tmp_path: Path) -> None:
    docs = [order("1"), order("2")]
    path = tmp_path / "orders.xml"
    write_orders(path, docs)
    assert path.read_bytes().startswith(b'<?xml version="1.0" encoding="windows-1251"?>')
    assert list(iter_documents(path)) == docs
    path2 = tmp_path / "orders-utf8.xml"
    write_orders(path2, docs, encoding="UTF-8", bom=True, container=True)
    assert path2.read_bytes().startswith(BOM + b'<?xml version="1.0" encoding="UTF-8"?>')
    assert b"<\xd0\x9a\xd0\xbe\xd0\xbd\xd1\x82\xd0\xb5\xd0\xb9\xd0\xbd\xd0\xb5\xd1\x80>" in path2.read_bytes()
    assert list(iter_documents(path2)) == docs
