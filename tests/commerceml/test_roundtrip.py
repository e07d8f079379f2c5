"""parse(write(doc)) == doc for generated documents, in windows-1251 and UTF-8, with and without
Контейнер and BOM."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.commerceml import (Address, AddressField, Bank, BankAccount, Contact, Counterparty,
                              Discount, Document, Item, Representative, Tax, Unit, iter_documents,
                              write_orders)
from syncd.commerceml.encoding import MOSCOW

# characters windows-1251 can encode; no leading/trailing space (values are stripped on read)
_ALPHABET = ("абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"
             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
             " -.,:;!?\"'()/№«»—&<>%+")
word = st.text(_ALPHABET, min_size=1, max_size=30).map(str.strip).filter(bool)
opt_word = st.none() | word
money = st.decimals(min_value=Decimal("-1000000"), max_value=Decimal("10000000"), places=2,
                    allow_nan=False, allow_infinity=False)
qty = st.decimals(min_value=Decimal("0"), max_value=Decimal("100000"), places=3,
                  allow_nan=False, allow_infinity=False)
pairs = st.lists(st.tuples(word, st.just("") | word), max_size=5).map(tuple)
digits = lambda n: st.text("0123456789", min_size=n, max_size=n)  # noqa: E731

address = st.builds(Address, kind=st.sampled_from(["АдресРегистрации", "ЮридическийАдрес", "Адрес"]),
                    presentation=opt_word,
                    fields=st.lists(st.builds(AddressField, word, word), max_size=4).map(tuple))
contact = st.builds(Contact, st.sampled_from(["Почта", "Телефон рабочий", "ТелефонРабочий"]), word)
bank = st.builds(Bank, name=opt_word, bic=st.none() | digits(9), correspondent_account=st.none() | digits(20),
                 address=opt_word)
account = st.builds(BankAccount, number=digits(20), bank=st.none() | bank)
representative = st.builds(Representative, relation=st.just("Контактное лицо"), id=opt_word, name=opt_word)

person = st.builds(Counterparty, id=word, name=word, full_name=opt_word, role=st.just("Покупатель"),
                   last_name=opt_word, first_name=opt_word, middle_name=opt_word,
                   inn=st.none() | digits(12),
                   addresses=st.lists(address, max_size=2).map(tuple),
                   contacts=st.lists(contact, max_size=3).map(tuple))
company = st.builds(Counterparty, id=word, name=word, official_name=word, role=st.just("Покупатель"),
                    inn=digits(10), kpp=digits(9), okpo=st.none() | digits(8), ogrn=st.none() | digits(13),
                    addresses=st.lists(address, max_size=2).map(tuple),
                    contacts=st.lists(contact, max_size=3).map(tuple),
                    bank_accounts=st.lists(account, max_size=2).map(tuple),
                    representatives=st.lists(representative, max_size=2).map(tuple))
unit = st.builds(Unit, code=st.none() | st.sampled_from(["796", "166", "006"]), name=opt_word,
                 full_name=opt_word, intl_abbr=st.none() | st.sampled_from(["PCE", "KGM"]))
tax = st.builds(Tax, name=st.just("НДС"), rate=st.none() | st.sampled_from(["20", "10", "0", "Без НДС"]),
                included=st.none() | st.booleans(), sum=st.none() | money)
discount = st.builds(Discount, name=opt_word, sum=st.none() | money, percent=st.none() | money,
                     included=st.none() | st.booleans())
item = st.builds(Item, id=word, name=word, catalog_id=opt_word, unit=st.none() | unit,
                 price=st.none() | money, quantity=st.none() | qty, sum=st.none() | money,
                 discounts=st.lists(discount, max_size=2).map(tuple),
                 taxes=st.lists(tax, max_size=1).map(tuple), requisites=pairs)
when = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 12, 31)).map(
    lambda d: d.replace(microsecond=0, tzinfo=MOSCOW))
document = st.builds(
    Document, id=word, number=word, date=st.none() | when,
    operation=st.sampled_from(["Заказ товара", "Выплата безналичных денег", "Отпуск товара"]),
    role=st.just("Продавец"), currency=st.sampled_from(["руб", "RUB"]), rate=st.none() | st.just(Decimal("1")),
    total=money, comment=opt_word, version=st.none() | digits(3), deleted=st.booleans(), base=opt_word,
    counterparties=st.lists(person | company, min_size=0, max_size=2).map(tuple),
    items=st.lists(item, min_size=1, max_size=4).map(tuple), requisites=pairs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(document, min_size=1, max_size=3),
       encoding=st.sampled_from(["windows-1251", "UTF-8"]), bom=st.booleans(), container=st.booleans())
def test_parse_of_write_is_identity(docs: list[Document], encoding: str, bom: bool, container: bool) -> None:
    buf = io.BytesIO()
    write_orders(buf, docs, encoding=encoding, bom=bom and encoding == "UTF-8", container=container)
    data = buf.getvalue()
    if encoding == "windows-1251":
        data.decode("cp1251")              # really cp1251, not char references for Cyrillic
        assert b"&#1" not in data
    assert list(iter_documents(data)) == docs


def test_dates_keep_the_instant_across_zones() -> None:
    utc_doc = Document(id="1", date=datetime(2026, 1, 1, 21, 30, tzinfo=MOSCOW) - timedelta(hours=3))
    buf = io.BytesIO()
    write_orders(buf, [utc_doc])
    assert "<Дата>2026-01-01</Дата>".encode("cp1251") in buf.getvalue()
    (back,) = iter_documents(buf.getvalue())
    assert back.date == utc_doc.date
