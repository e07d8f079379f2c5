"""The exchange user (Basic auth / checkauth) and sample orders: two persons and a company."""
import datetime as dt
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from orders.models import Customer, Line, Order

MSK = dt.timezone(dt.timedelta(hours=3))
MUG = ("9f1c2a10-0000-4c1e-8a00-000000000001", "Кружка керамическая 350 мл", "490")
TEAPOT = ("9f1c2a10-0000-4c1e-8a00-000000000002", "Чайник заварочный стеклянный 1 л", "1290")


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--login", default="1c")
        parser.add_argument("--password", default="secret")

    def handle(self, *args, login, password, **kw):
        get_user_model().objects.create_superuser(login, f"{login}@example.ru", password)
        petrov = Customer.objects.create(uid="c-101", last_name="Петров", first_name="Иван",
                                         address="119991, Москва, ул. Лесная, д. 5")
        anna = Customer.objects.create(uid="c-102", last_name="Смирнова", first_name="Анна",
                                       address="191025, Санкт-Петербург, Невский пр., д. 1")
        romashka = Customer.objects.create(uid="c-201", kind="company", company_name="ООО «Ромашка»",
                                           address="119991, г. Москва, ул. Лесная, д. 5, офис 12")
        for uid, cust, when, lines, comment in (
                ("o-0900", petrov, dt.datetime(2024, 6, 1, 12, 0, tzinfo=MSK), [(MUG, 1)], "Старый заказ"),
                ("o-1001", petrov, dt.datetime(2026, 1, 15, 10, 12, 31, tzinfo=MSK), [(MUG, 12)],
                 "Позвонить за час"),
                ("o-1002", anna, dt.datetime(2026, 1, 15, 11, 0, tzinfo=MSK), [(MUG, 2), (TEAPOT, 1)], ""),
                ("o-1003", romashka, dt.datetime(2026, 1, 16, 9, 30, tzinfo=MSK), [(TEAPOT, 10)],
                 "Счёт на организацию")):
            o = Order.objects.create(uid=uid, number=uid[2:], created=when, customer=cust, comment=comment)
            for (pid, name, price), qty in lines:
                Line.objects.create(order=o, product_uid=pid, name=name, price=Decimal(price),
                                    quantity=Decimal(qty))
        self.stdout.write("seeded")
