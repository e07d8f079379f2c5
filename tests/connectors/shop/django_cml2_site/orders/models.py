"""The site's own order book (what a small Django shop has before it installs django-cml2)."""
from decimal import Decimal

from django.db import models


class Customer(models.Model):
    uid = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=10, default="person")      # person | company
    last_name = models.CharField(max_length=100, blank=True)
    first_name = models.CharField(max_length=100, blank=True)
    company_name = models.CharField(max_length=200, blank=True)
    address = models.CharField(max_length=300, blank=True)


class Order(models.Model):
    uid = models.CharField(max_length=64, unique=True)
    number = models.CharField(max_length=32)
    created = models.DateTimeField()
    updated = models.DateTimeField(auto_now=True)
    currency = models.CharField(max_length=8, default="руб")
    comment = models.CharField(max_length=500, blank=True)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT)

    def total(self) -> Decimal:
        return sum((line.price * line.quantity for line in self.lines.all()), Decimal(0))


class Line(models.Model):
    order = models.ForeignKey(Order, related_name="lines", on_delete=models.CASCADE)
    product_uid = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=12, decimal_places=2)
    quantity = models.DecimalField(max_digits=12, decimal_places=3)
