"""Realistic Russian demo data for the sandbox shop: products, buyers (persons and companies), orders."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

from syncd.keys.generate import make_account, make_bik, make_corr_account, make_inn, make_kpp, make_ogrn
from syncd.sandbox.shop.state import ShopState

PRODUCTS = [
    ("9f1c2a10-0000-4c1e-8a00-000000000001", "Кружка керамическая 350 мл", "490", "KR-350"),
    ("9f1c2a10-0000-4c1e-8a00-000000000002", "Чайник заварочный стеклянный 1 л", "1290", "CH-1000"),
    ("9f1c2a10-0000-4c1e-8a00-000000000003", "Набор ложек чайных (6 шт.)", "650", "LZ-6"),
    ("9f1c2a10-0000-4c1e-8a00-000000000004", "Термос стальной 0,75 л", "1890", "TR-075"),
    ("9f1c2a10-0000-4c1e-8a00-000000000005", "Скатерть льняная 140×180", "2450", "SK-140"),
    ("9f1c2a10-0000-4c1e-8a00-000000000006", "Поднос бамбуковый", "780", "PD-B"),
]

PERSONS = [
    ("Петров", "Иван", "Сергеевич", "ivan.petrov@mail.example", "8 (495) 123-45-67", "Москва, ул. Лесная, д. 5, кв. 12"),
    ("Смирнова", "Анна", "Викторовна", "anna.smirnova@yandex.example", "+7 916 123 45 67",
     "Москва, Ленинский пр-т, д. 30, кв. 7"),
    ("Кузнецов", "Дмитрий", "Олегович", "d.kuznetsov@example.ru", "8-903-555-12-34",
     "Санкт-Петербург, Невский пр-т, д. 100, кв. 3"),
    ("Орлова", "Екатерина", "", "kate.orlova@example.ru", "+79261112233", "Казань, ул. Баумана, д. 15"),
    ("Соколов", "Павел", "Андреевич", "p.sokolov@example.ru", "8(812)3334455", "Санкт-Петербург, ул. Садовая, д. 8"),
]

COMPANIES = [
    ("ООО «Ромашка»", "Общество с ограниченной ответственностью «Ромашка»", "zakaz@romashka.example",
     "+7 (495) 765-43-21", "119991, г. Москва, ул. Лесная, д. 5", "Петров Иван Сергеевич", "ПАО Сбербанк"),
    ("ООО «Вектор»", "Общество с ограниченной ответственностью «Вектор»", "buh@vektor.example",
     "8 800 555-35-35", "191186, г. Санкт-Петербург, Невский пр-т, д. 28", "Иванова Мария Петровна",
     "АО «Альфа-Банк»"),
    ("АО «Северные ремёсла»", "Акционерное общество «Северные ремёсла»", "office@sev-remesla.example",
     "+7 812 600-11-22", "163000, г. Архангельск, пр-т Троицкий, д. 52", "Лебедев Олег Игоревич",
     "Банк ВТБ (ПАО)"),
]


def company_requisites(rng: random.Random, region: str = "77") -> dict[str, Any]:
    """Valid ИНН/КПП/ОГРН and one bank account (БИК, р/с, к/с) for a company buyer."""
    bik = make_bik("0445", rng=rng)
    inn = make_inn(region + "01", rng=rng)
    return {"inn": inn, "kpp": make_kpp(inn[:4], rng=rng), "ogrn": make_ogrn("1", rng=rng),
            "bank_accounts": [{"account": make_account(bik, rng=rng), "bik": bik,
                               "corr_account": make_corr_account(bik, rng=rng)}]}


def seed_demo(state: ShopState, n: int = 10, seed: int | None = None) -> dict[str, Any]:
    """Products, a few registered buyers (persons and companies), `n` orders in mixed states."""
    rng = random.Random(seed if seed is not None else 20261124)
    with state.lock:
        for xml_id, name, price, sku in PRODUCTS:
            if xml_id not in state.products:
                state.add_product(xml_id, name, price, sku=sku)
        users = []
        for last, first, middle, email, phone, addr in PERSONS:
            users.append(state.add_user(kind="person", last_name=last, first_name=first, middle_name=middle,
                                        email=email, phone=phone, address=addr))
        for short, full, email, phone, addr, contact, bank in COMPANIES:
            req = company_requisites(rng)
            req["bank_accounts"][0]["bank_name"] = bank
            users.append(state.add_user(kind="company", company_name=short, full_name=full, email=email,
                                        phone=phone, legal_address=addr, contact_person=contact,
                                        login=email, **req))
        orders = []
        start = state.now() - dt.timedelta(days=n)
        for i in range(n):
            u = rng.choice(users)
            picks = rng.sample(PRODUCTS, k=rng.randint(1, 3))
            items = [{"product_id": p[0], "quantity": rng.choice([1, 1, 2, 3, 12])} for p in picks]
            o = state.place_order(user_id=u.id, items=items, delivery=rng.choice(["1", "2", "3"]),
                                  delivery_price=rng.choice([0, 300, 450]),
                                  comment=rng.choice(["", "Позвонить за час до доставки", "Нужен счёт на оплату"]),
                                  pay_system="3" if u.kind == "company" else rng.choice(["1", "2"]),
                                  created=start + dt.timedelta(days=i, minutes=rng.randint(0, 600)))
            r = rng.random()
            if r < 0.3:
                state.pay(o.id)
            elif r < 0.4:
                state.pay(o.id, (o.total / 2).quantize(Decimal("0.01")))
            if rng.random() < 0.15:
                state.set_status(o.id, rng.choice(["G", "S", "F"]))
            orders.append(o.id)
    return {"users": [u.id for u in users], "orders": orders, "products": [p[0] for p in PRODUCTS]}
