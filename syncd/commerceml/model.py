"""Protocol-level CommerceML 2 documents (not syncd's canonical model).

Every record is a frozen dataclass; money and quantities are `Decimal`, dates are timezone-aware
`datetime`s. Optional text fields are `None` when the element is absent and `""` when it is empty.
Name/value lists (`ЗначенияРеквизитов`, `ЗначенияСвойств`) keep the file's order as tuples of pairs.
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from syncd.errors import BadInput

Pairs = tuple[tuple[str, str], ...]

_TRUE = {"true", "1", "да", "yes", "y"}


def _lookup(pairs: Pairs, name: str) -> str | None:
    for key, value in pairs:
        if key == name:
            return value
    return None


def _flag(value: str | None) -> bool | None:
    return None if value is None else value.strip().lower() in _TRUE


# a name that starts with a legal form is a company's (when nothing else tells)
LEGAL_FORM = re.compile(
    r"^\W*(ООО|ОАО|ЗАО|ПАО|НАО|АО|ИП|НКО|ФГУП|ГУП|МУП|ТСЖ|АНО|"
    r"общество с ограниченной ответственностью|акционерное общество|индивидуальный предприниматель|"
    r"LLC|LTD|JSC|GmbH|Inc)\b", re.I)

@dataclass(frozen=True)
class Header:
    """Root attributes plus the first section's `СодержитТолькоИзменения`."""

    schema_version: str | None
    generated_at: datetime | None
    section: str | None = None            # first child of the root: "Документ", "Каталог", …
    only_changes: bool | None = None


@dataclass(frozen=True)
class Unit:
    """`БазоваяЕдиница`: attributes Код / НаименованиеПолное / МеждународноеСокращение, text = short name."""

    code: str | None = None
    name: str | None = None
    full_name: str | None = None
    intl_abbr: str | None = None


@dataclass(frozen=True)
class AddressField:
    type: str
    value: str


@dataclass(frozen=True)
class Address:
    kind: str                              # element name: АдресРегистрации, ЮридическийАдрес, Адрес
    presentation: str | None = None
    fields: tuple[AddressField, ...] = ()

    def field(self, type_: str) -> str | None:
        for f in self.fields:
            if f.type == type_:
                return f.value
        return None


@dataclass(frozen=True)
class Contact:
    type: str
    value: str


@dataclass(frozen=True)
class Bank:
    name: str | None = None
    bic: str | None = None
    correspondent_account: str | None = None
    address: str | None = None


@dataclass(frozen=True)
class BankAccount:
    number: str
    bank: Bank | None = None


@dataclass(frozen=True)
class Representative:
    relation: str | None
    id: str | None
    name: str | None


@dataclass(frozen=True)
class Counterparty:
    id: str | None
    name: str | None = None
    full_name: str | None = None
    official_name: str | None = None
    role: str | None = None
    last_name: str | None = None
    first_name: str | None = None
    middle_name: str | None = None
    inn: str | None = None
    kpp: str | None = None
    okpo: str | None = None
    ogrn: str | None = None
    addresses: tuple[Address, ...] = ()
    contacts: tuple[Contact, ...] = ()
    bank_accounts: tuple[BankAccount, ...] = ()
    representatives: tuple[Representative, ...] = ()

    @property
    def is_company(self) -> bool:
        """A legal entity, decided by the structure, not by the presence of an ИНН.

        Company marks: `ОфициальноеНаименование`, `ЮридическийАдрес`, `Представители`, a КПП, an ОГРН,
        a 10-digit ИНН. Person marks: `Фамилия`/`Имя`/`Отчество` with text, `АдресРегистрации`, a
        12-digit ИНН alone. With neither (a site or a 1C that writes only a name), a name that starts
        with a legal form (ООО, АО, ИП…) is a company. Otherwise a person.
        """
        if self.official_name or self.kpp or self.ogrn or self.representatives or \
                any(a.kind == "ЮридическийАдрес" for a in self.addresses) or (self.inn and len(self.inn) == 10):
            return True
        if self.last_name or self.first_name or self.middle_name or (self.inn and len(self.inn) == 12) or \
                any(a.kind == "АдресРегистрации" for a in self.addresses):
            return False
        return bool(LEGAL_FORM.match(self.name or self.full_name or ""))

    def contact(self, *types: str) -> str | None:
        for c in self.contacts:
            if c.type in types:
                return c.value
        return None

    @property
    def email(self) -> str | None:
        return self.contact("Почта", "Электронная почта", "E-mail")

    @property
    def phone(self) -> str | None:
        return self.contact("ТелефонРабочий", "Телефон рабочий", "Телефон", "ТелефонМобильный",
                            "Телефон мобильный")


@dataclass(frozen=True)
class Discount:
    name: str | None = None
    sum: Decimal | None = None
    percent: Decimal | None = None
    included: bool | None = None          # УчтеноВСумме


@dataclass(frozen=True)
class Tax:
    name: str
    rate: str | None = None               # "20", "10", "Без НДС" — kept as text
    included: bool | None = None          # УчтеноВСумме
    sum: Decimal | None = None


@dataclass(frozen=True)
class Item:
    """`Товары/Товар` of an order document."""

    id: str | None
    name: str | None = None
    catalog_id: str | None = None
    unit: Unit | None = None
    price: Decimal | None = None
    quantity: Decimal | None = None
    sum: Decimal | None = None
    discounts: tuple[Discount, ...] = ()
    taxes: tuple[Tax, ...] = ()
    requisites: Pairs = ()

    def requisite(self, name: str) -> str | None:
        return _lookup(self.requisites, name)

    @property
    def product_id(self) -> str | None:
        """The 1C product GUID without the `#характеристика` part."""
        return self.id.split("#", 1)[0] if self.id else None


@dataclass(frozen=True)
class Document:
    """`Документ`: an order, or a payment/shipment document linked by `base` (Основание)."""

    id: str | None
    number: str | None = None
    date: datetime | None = None
    operation: str | None = None          # ХозОперация
    role: str | None = None
    currency: str | None = None
    rate: Decimal | None = None
    total: Decimal | None = None
    comment: str | None = None
    version: str | None = None            # НомерВерсии
    deleted: bool = False                 # ПометкаУдаления
    base: str | None = None               # Основание
    counterparties: tuple[Counterparty, ...] = ()
    items: tuple[Item, ...] = ()
    requisites: Pairs = ()

    def requisite(self, name: str) -> str | None:
        return _lookup(self.requisites, name)

    @property
    def status(self) -> str | None:
        return self.requisite("Статус заказа")

    @property
    def is_paid(self) -> bool | None:
        return _flag(self.requisite("Заказ оплачен"))

    @property
    def is_canceled(self) -> bool | None:
        return _flag(self.requisite("Отменен"))

    @property
    def is_posted(self) -> bool | None:
        return _flag(self.requisite("Проведен"))

    @property
    def number_1c(self) -> str | None:
        return self.requisite("Номер по 1С")

    @property
    def payment_date(self) -> str | None:
        return self.requisite("Дата оплаты")

    @property
    def shipment_number(self) -> str | None:
        return self.requisite("Номер отгрузки")


@dataclass(frozen=True)
class Group:
    id: str
    name: str | None = None
    children: tuple[Group, ...] = ()


@dataclass(frozen=True)
class Property:
    id: str
    name: str | None = None
    value_type: str | None = None          # ТипЗначений: Справочник | Строка | Число
    options: Pairs = ()                    # ВариантыЗначений/Справочник: (ИдЗначения, Значение)


@dataclass(frozen=True)
class Product:
    id: str
    sku: str | None = None                 # Артикул
    name: str | None = None
    unit: Unit | None = None
    groups: tuple[str, ...] = ()
    description: str | None = None
    barcode: str | None = None
    images: tuple[str, ...] = ()
    property_values: Pairs = ()            # (Ид свойства, Значение)
    characteristics: Pairs = ()
    taxes: tuple[Tax, ...] = ()
    requisites: Pairs = ()
    deleted: bool = False                  # ПометкаУдаления=true or Статус=Удален

    def requisite(self, name: str) -> str | None:
        return _lookup(self.requisites, name)


@dataclass(frozen=True)
class PriceType:
    id: str
    name: str | None = None
    currency: str | None = None


@dataclass(frozen=True)
class Warehouse:
    id: str
    name: str | None = None


@dataclass(frozen=True)
class Price:
    type_id: str | None
    price: Decimal | None
    presentation: str | None = None
    currency: str | None = None
    unit: str | None = None
    coefficient: Decimal | None = None


@dataclass(frozen=True)
class Stock:
    warehouse_id: str
    quantity: Decimal | None


@dataclass(frozen=True)
class Offer:
    id: str
    sku: str | None = None
    name: str | None = None
    unit: Unit | None = None
    characteristics: Pairs = ()
    prices: tuple[Price, ...] = ()
    quantity: Decimal | None = None
    stocks: tuple[Stock, ...] = ()
    deleted: bool = False

    @property
    def product_id(self) -> str:
        return self.id.split("#", 1)[0]


@dataclass(frozen=True)
class Rejected:
    """A record that could not be parsed; the stream goes on. Quarantine it with `raw`."""

    reason: str
    line: int | None
    record_id: str | None
    raw: str
    kind: str = "record"

    def as_error(self) -> BadInput:
        from syncd.errors import BadInput
        return BadInput(self.reason, record=self.record_id, line=self.line, raw=self.raw)


__all__ = [
    "Header", "Unit", "AddressField", "Address", "Contact", "Bank", "BankAccount", "Representative",
    "Counterparty", "Discount", "Tax", "Item", "Document", "Group", "Property", "Product",
    "PriceType", "Warehouse", "Price", "Stock", "Offer", "Rejected",
]
