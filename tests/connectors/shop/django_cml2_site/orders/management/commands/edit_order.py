"""What the site's admin does: change an order's comment (the order's `updated` moves)."""
from django.core.management.base import BaseCommand

from orders.models import Order


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("uid")
        parser.add_argument("--comment", required=True)

    def handle(self, *args, uid, comment, **kw):
        o = Order.objects.get(uid=uid)
        o.comment = comment
        o.save()
