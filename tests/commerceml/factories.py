"""Builders for CommerceML test data: model objects, XML text, files in every encoding."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

from lxml import etree

from syncd.commerceml import (Address, AddressField, Bank, BankAccount, Contact, Counterparty,
                              Document, Group, Item, Offer, Price, Product, Representative, Stock, Tax,
                              Unit, MOSCOW)
from syncd.commerceml.writer import (counterparty_element, document_element, group_element,
                                     offer_element, product_element)

BOM = b"\xef\xbb\xbf"


def company(id: str = "77", **kw) -> Counterparty:
    base = dict(id=id, name='ООО "Ромашка"', official_name='Общество с ограниченной ответственностью "Ромашка"',
                role="Покупатель", inn="7701234560", kpp="770101001",
                addresses=(Address("ЮридическийАдрес", "119991, Москва, ул. Лесная, д. 5",
                                   (AddressField("Почтовый индекс", "119991"),
                                    AddressField("Город", "Москва"))),),
                contacts=(Contact("Электронная почта", "zakaz@romashka.example"),
                          Contact("Телефон рабочий", "+74951234567")),
                bank_accounts=(BankAccount("40702810900000000001",
                                           Bank("ПАО Банк", "044525225", "30101810400000000225", "Москва")),),
                representatives=(Representative("Контактное лицо", "78", "Петров Иван Сергеевич"),))
    base.update(kw)
    return Counterparty(**base)


def person(id: str = "501", **kw) -> Counterparty:
    base = dict(id=id, name="Иванова Мария Петровна", full_name="Иванова Мария Петровна", role="Покупатель",
                last_name="Иванова", first_name="Мария", middle_name="Петровна",
                addresses=(Address("АдресРегистрации", "Казань, ул. Баумана, 1"),),
                contacts=(Contact("Почта", "maria@example.ru"),))
    base.update(kw)
    return Counterparty(**base)


def item(id: str = "9f1c2a10-0000-4c1e-8a00-000000000001", price: str = "490.00", qty: str = "12",
         **kw) -> Item:
    p, q = Decimal(price), Decimal(qty)
    base = dict(id=id, name="Кружка керамическая 350 мл",
                unit=Unit("796", "шт", "Штука", "PCE"), price=p, quantity=q, sum=p * q,
                taxes=(Tax("НДС", "20", True, (p * q / 6).quantize(Decimal("0.01"))),),
                requisites=(("ВидНоменклатуры", "Товар"), ("ТипНоменклатуры", "Товар")))
    base.update(kw)
    return Item(**base)


def order(id: str = "1042", *, items: tuple[Item, ...] | None = None, buyer: Counterparty | None = None,
          **kw) -> Document:
    items = items if items is not None else (item(),)
    base = dict(id=id, number=id, date=datetime(2026, 11, 24, 10, 12, 31, tzinfo=MOSCOW),
                operation="Заказ товара", role="Продавец", currency="руб", rate=Decimal("1"),
                total=sum((i.sum for i in items), Decimal("0.00")),
                counterparties=(buyer or company(),), items=items,
                requisites=(("Метод оплаты", "Счет"), ("Заказ оплачен", "false"), ("Отменен", "false"),
                            ("Статус заказа", "[N] Принят")))
    base.update(kw)
    return Document(**base)


def doc_xml(id: str = "1042", total: str = "5880.00", extra: str = "", date: str = "2026-11-24",
            time: str = "10:12:31") -> str:
    """One <Документ> as text (for hand-made and hostile files)."""
    return (f"<Документ><Ид>{id}</Ид><Номер>{id}</Номер><Дата>{date}</Дата><Время>{time}</Время>"
            f"<ХозОперация>Заказ товара</ХозОперация><Роль>Продавец</Роль><Валюта>руб</Валюта>"
            f"<Курс>1</Курс><Сумма>{total}</Сумма>{extra}</Документ>\n")


def requisites_xml(pairs: list[tuple[str, str]]) -> str:
    rows = "".join(f"<ЗначениеРеквизита><Наименование>{k}</Наименование><Значение>{v}</Значение>"
                   f"</ЗначениеРеквизита>" for k, v in pairs)
    return f"<ЗначенияРеквизитов>{rows}</ЗначенияРеквизитов>"


def cml(body: str, *, version: str = "2.08", decl: str | None = "UTF-8", prolog: str = "",
        namespace: str | None = None) -> str:
    head = f'<?xml version="1.0" encoding="{decl}"?>\n' if decl else ""
    ns = f' xmlns="{namespace}"' if namespace else ""
    return (f'{head}{prolog}<КоммерческаяИнформация{ns} ВерсияСхемы="{version}" '
            f'ДатаФормирования="2026-11-24T10:15:00">\n{body}</КоммерческаяИнформация>\n')


def write_file(tmp: Path, name: str, text: str, encoding: str, *, bom: bool = False) -> Path:
    path = tmp / name
    path.write_bytes((BOM if bom else b"") + text.encode(encoding))
    return path


# ---- whole files of records, as text, for damage tests -------------------------------------------

NS_1C = "urn:1C.ru:commerceml_2"


def record_text(el, *, pretty: bool = True) -> str:
    """One writer element as text (indented like 1C's and Bitrix's exports, or on one line)."""
    return etree.tostring(el, encoding="unicode", pretty_print=pretty).strip()


def records_file(kind: str, texts: list[str], *, container: bool = False, namespace: str | None = None,
                 decl: str | None = "UTF-8") -> str:
    """A whole file with `texts` (records of `kind`) where that kind sits; one record per line block."""
    body = "".join(t + "\n" for t in texts)
    if kind == "Документ":
        if container:
            body = "".join(f"<Контейнер>\n{t}\n</Контейнер>\n" for t in texts)
    elif kind == "Контрагент":
        body = f"<Контрагенты>\n{body}</Контрагенты>\n"
    elif kind == "Товар":
        body = (f'<Каталог СодержитТолькоИзменения="false">\n<Ид>cat</Ид>\n<Наименование>Каталог</Наименование>\n'
                f"<Товары>\n{body}</Товары>\n</Каталог>\n")
    elif kind == "Предложение":
        body = (f"<ПакетПредложений>\n<Ид>pk</Ид>\n<ИдКаталога>cat</ИдКаталога>\n"
                f"<Предложения>\n{body}</Предложения>\n</ПакетПредложений>\n")
    elif kind == "Группа":
        body = f"<Классификатор>\n<Ид>cls</Ид>\n<Группы>\n{body}</Группы>\n</Классификатор>\n"
    else:
        raise ValueError(kind)
    return cml(body, decl=decl, namespace=namespace)


def sample_records(kind: str, n: int, *, pretty: bool = True) -> tuple[list, list[str]]:
    """`n` distinct records of `kind`: (model objects, their texts)."""
    D = Decimal
    objs: list = []
    texts: list[str] = []
    for i in range(n):
        if kind == "Документ":
            obj = order(f"Заказ-{i}", buyer=person(str(500 + i)) if i % 2 else company(str(70 + i)))
            text = record_text(document_element(obj), pretty=pretty)
        elif kind == "Контрагент":
            obj = company(f"к-{i}")
            # the 2.05+ form nests the representative in its own <Контрагент>
            text = record_text(counterparty_element(obj), pretty=pretty)
            head, _, rest = text.partition("<Представитель>")
            inner, _, tail = rest.partition("</Представитель>")
            text = f"{head}<Представитель><Контрагент>{inner}</Контрагент></Представитель>{tail}"
        elif kind == "Товар":
            obj = Product(id=f"т-{i}", sku=f"A-{i}", name=f"Кружка «{i}»", unit=Unit("796", "шт", "Штука", "PCE"),
                          groups=("g1",), description="Белая & лёгкая", property_values=(("p1", "v1"),),
                          requisites=(("Вес", "0.3"),))
            text = record_text(product_element(obj), pretty=pretty)
        elif kind == "Предложение":
            obj = Offer(id=f"т-{i}#x", name=f"Кружка {i}", quantity=D(5), stocks=(Stock("w1", D(5)),),
                        prices=(Price("pt1", D("490.00"), "490 руб. за шт", "RUB", "шт", D(1)),))
            text = record_text(offer_element(obj), pretty=pretty)
        elif kind == "Группа":
            obj = Group(f"g{i}", f"Группа {i}", (Group(f"g{i}.1", "Кружки", (Group(f"g{i}.1.1", "Белые"),)),))
            text = record_text(group_element(obj), pretty=pretty)
        else:
            raise ValueError(kind)
        objs.append(obj)
        texts.append(text)
    return objs, texts
