"""CommerceML reader throughput against a bare lxml iterparse loop, and peak RSS.

    python bench/commerceml.py [--scale 0.01]

Generates (with syncd's streaming writer, in a temp dir removed at the end) an orders file of
200 MB × scale and a catalog import.xml of 1 GB × scale, then times in fresh subprocesses:
(a) syncd's `iter_documents` / `iter_catalog` consuming every object, (b) the anchor — a bare
`lxml.etree.iterparse` loop that only clears elements. Peak RSS is that of the parser subprocesses
(polled with psutil, and the child's own ru_maxrss), so generation does not pollute it.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ORDERS_MB = 200
CATALOG_MB = 1024


# ---- generation ----------------------------------------------------------------------------------

def _orders(target_bytes: int) -> Iterator:
    from syncd.commerceml import (Address, Contact, Counterparty, Document, Item, MOSCOW, Tax, Unit)
    t0 = datetime(2026, 1, 1, 9, 0, tzinfo=MOSCOW)
    approx = 4400  # bytes per generated document (pretty-printed, windows-1251)
    n = max(1, target_bytes // approx)
    for i in range(n):
        items = tuple(
            Item(id=f"9f1c2a10-0000-4c1e-8a00-{(i * 7 + k) % 10**12:012d}", name=f"Товар номер {k} «серия {i % 97}»",
                 unit=Unit("796", "шт", "Штука", "PCE"), price=Decimal(f"{100 + k}.50"),
                 quantity=Decimal(k + 1), sum=Decimal(f"{100 + k}.50") * (k + 1),
                 taxes=(Tax("НДС", "20", True, Decimal("10.00")),),
                 requisites=(("ВидНоменклатуры", "Товар"), ("ТипНоменклатуры", "Товар")))
            for k in range(3))
        buyer = Counterparty(id=str(100000 + i), name=f"Покупатель {i}", full_name=f"Иванов Иван {i}",
                             role="Покупатель", last_name="Иванов", first_name="Иван",
                             addresses=(Address("АдресРегистрации", f"Москва, ул. Лесная, д. {i % 300}"),),
                             contacts=(Contact("Почта", f"buyer{i}@example.ru"),
                                       Contact("Телефон рабочий", f"+7495{i % 10**7:07d}")))
        yield Document(id=str(i + 1), number=str(i + 1), date=t0 + timedelta(minutes=i),
                       operation="Заказ товара", role="Продавец", currency="руб", rate=Decimal(1),
                       total=sum((it.sum for it in items), Decimal(0)), comment="Позвонить заранее",
                       counterparties=(buyer,), items=items,
                       requisites=(("Метод оплаты", "Наличный расчет"), ("Заказ оплачен", "false"),
                                   ("Отменен", "false"), ("Статус заказа", "[N] Принят"),
                                   ("Сайт", "[s1] Интернет-магазин")))


def _products(target_bytes: int) -> Iterator:
    from syncd.commerceml import Product, Tax, Unit
    approx = 1450
    n = max(1, target_bytes // approx)
    unit = Unit("796", "шт", "Штука", "PCE")
    taxes = (Tax("НДС", "20"),)
    for i in range(n):
        yield Product(id=f"5d1e7c44-{i % 10**4:04d}-4a3b-9c2d-{i:012d}", sku=f"ART-{i:08d}",
                      name=f"Кружка керамическая {i % 1000} мл, цвет {i % 17}", unit=unit,
                      groups=(f"g{i % 50}",),
                      description="Кружка из белой керамики; можно мыть в посудомоечной машине. " * 2,
                      barcode=f"46{i:011d}", property_values=(("p1", f"v{i % 5}"), ("p2", str(i % 300))),
                      taxes=taxes,
                      requisites=(("ВидНоменклатуры", "Товар"), ("ТипНоменклатуры", "Товар"),
                                  ("Полное наименование", f"Кружка керамическая, арт. {i}"),
                                  ("Вес", "0.35")))


def generate(tmp: Path, scale: float) -> tuple[Path, Path]:
    from syncd.commerceml import Group, Property, write_catalog, write_orders
    orders, catalog = tmp / "orders.xml", tmp / "import.xml"
    write_orders(orders, _orders(int(ORDERS_MB * 1024**2 * scale)))
    groups = [Group(f"g{i}", f"Группа {i}", (Group(f"g{i}.1", f"Подгруппа {i}"),)) for i in range(50)]
    props = [Property("p1", "Цвет", "Справочник", tuple((f"v{k}", f"Цвет {k}") for k in range(5))),
             Property("p2", "Объём", "Число")]
    write_catalog(catalog, _products(int(CATALOG_MB * 1024**2 * scale)), groups=groups, properties=props,
                  only_changes=True)
    return orders, catalog


# ---- measurement (child side) --------------------------------------------------------------------

def measure(kind: str, path: str) -> dict:
    from lxml import etree

    from syncd.commerceml import Rejected, iter_catalog, iter_documents
    t = time.perf_counter()
    n = 0
    if kind == "bare":
        for _, el in etree.iterparse(path, events=("end",)):
            el.clear(keep_tail=True)
            n += 1
    elif kind == "orders":
        for obj in iter_documents(path):
            assert not isinstance(obj, Rejected), obj
            n += 1
    elif kind == "catalog":
        for obj in iter_catalog(path):
            assert not isinstance(obj, Rejected), obj
            n += 1
    else:
        raise SystemExit(f"unknown kind {kind}")
    elapsed = time.perf_counter() - t
    return {"seconds": elapsed, "count": n,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(kind: str, path: Path) -> dict:
    import psutil
    proc = psutil.Popen([sys.executable, __file__, "--measure", kind, str(path)],
                        stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.02)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"measurement {kind} on {path} failed with {proc.returncode}")
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss_mb"] = max(peak / 1024**2, res["maxrss_mb"])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--measure", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help="folder for the generated files (default: system temp)")
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="syncd-bench-cml-", dir=args.tmp))
    try:
        t = time.perf_counter()
        orders, catalog = generate(tmp, args.scale)
        sizes = {p.name: p.stat().st_size / 1024**2 for p in (orders, catalog)}
        print(f"generated {sizes['orders.xml']:.1f} MB orders, {sizes['import.xml']:.1f} MB catalog "
              f"in {time.perf_counter() - t:.1f} s")
        res = {}
        for name, path, kind in (("orders", orders, "orders"), ("orders_bare", orders, "bare"),
                                 ("catalog", catalog, "catalog"), ("catalog_bare", catalog, "bare")):
            r = run_child(kind, path)
            mb = path.stat().st_size / 1024**2
            r["mb_per_s"] = mb / r["seconds"]
            res[name] = r
            print(f"{name:13s} {mb:9.1f} MB {r['seconds']:8.2f} s {r['mb_per_s']:8.1f} MB/s "
                  f"{r['count']:>10d} objects/elements  peak RSS {r['peak_rss_mb']:.1f} MB")
        summary = {
            "orders_mb_per_s": round(res["orders"]["mb_per_s"], 1),
            "orders_ratio": round(res["orders"]["mb_per_s"] / res["orders_bare"]["mb_per_s"], 3),
            "catalog_mb_per_s": round(res["catalog"]["mb_per_s"], 1),
            "catalog_ratio": round(res["catalog"]["mb_per_s"] / res["catalog_bare"]["mb_per_s"], 3),
            "peak_rss_mb": round(max(res["orders"]["peak_rss_mb"], res["catalog"]["peak_rss_mb"]), 1),
        }
        print(json.dumps(summary))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
