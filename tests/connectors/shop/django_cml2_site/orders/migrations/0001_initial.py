from django.db import migrations, models
import django.db.models.deletion


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(name="Customer", fields=[
            ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ("uid", models.CharField(max_length=64, unique=True)),
            ("kind", models.CharField(default="person", max_length=10)),
            ("last_name", models.CharField(blank=True, max_length=100)),
            ("first_name", models.CharField(blank=True, max_length=100)),
            ("company_name", models.CharField(blank=True, max_length=200)),
            ("address", models.CharField(blank=True, max_length=300)),
        ]),
        migrations.CreateModel(name="Order", fields=[
            ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ("uid", models.CharField(max_length=64, unique=True)),
            ("number", models.CharField(max_length=32)),
            ("created", models.DateTimeField()),
            ("updated", models.DateTimeField(auto_now=True)),
            ("currency", models.CharField(default="руб", max_length=8)),
            ("comment", models.CharField(blank=True, max_length=500)),
            ("customer", models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, to="orders.customer")),
        ]),
        migrations.CreateModel(name="Line", fields=[
            ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ("product_uid", models.CharField(max_length=64)),
            ("name", models.CharField(max_length=200)),
            ("price", models.DecimalField(decimal_places=2, max_digits=12)),
            ("quantity", models.DecimalField(decimal_places=3, max_digits=12)),
            ("order", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="lines",
                                        to="orders.order")),
        ]),
    ]
