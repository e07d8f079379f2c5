"""CommerceML reader throughput against a bare lxml iterparse loop, per file shape and encoding.

    python bench/commerceml.py [--scale 0.05] [--repeat 1] [--tmp DIR]

Generates (with syncd's streaming writer, in a temp dir removed at the end) four files:
dense orders shaped like a 1C-Bitrix sale export (Cyrillic text, a buyer with address and
contacts, three items with requisites, Bitrix's order requisites; 100 MB × scale) and a big
catalog import.xml (512 MB × scale), each in windows-1251 and in UTF-8. Then, in fresh
subprocesses, it times on each file:
  reader  syncd's `iter_documents` / `iter_catalog`, consuming every object;
  dict    a plain loop building one dict per record from lxml elements (what hand-written
          glue does, with none of the reader's checks) — for reference;
  bare    the anchor: a bare `lxml.etree.iterparse` loop that only clears elements.
Ratios are CPU-time ratios against the anchor measured on the same file in the same run
(CPU time, not wall time, so other load on the machine does not tilt them); MB/s are wall.
Peak RSS is that of the parser subprocesses (polled with psutil and the child's ru_maxrss).
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ORDERS_MB = 100
CATALOG_MB = 512
ENCODINGS = {"cp1251": "windows-1251", "utf8": "UTF-8"}

_STREETS = ["Лесная", "Садовая", "Пушкинская", "Малая Бронная", "Профсоюзная", "Зелёная"]
_CITIES = ["Москва", "Санкт-Петербург", "Казань", "Новосибирск", "Екатеринбург", "Нижний Новгород"]
_NAMES = [("Иванов", "Иван"), ("Петрова", "Мария"), ("Сидоров", "Пётр"), ("Кузнецова", "Анна"),
          ("Смирнов", "Алексей"), ("Волкова", "Елена")]
_GOODS = ["Кружка керамическая 350 мл «Утро»", "Чайник заварочный стеклянный 800 мл",
          "Набор ложек чайных, нержавеющая сталь, 6 шт.", "Полотенце кухонное льняное «Прованс»",
          "Сковорода чугунная 26 см с деревянной ручкой", "Скатерть хлопковая 140×180"]
_STATUSES = ["[N] Принят, ожидается оплата", "[P] Оплачен, формируется к отправке",
             "[F] Выполнен"]


# ---- generation ----------------------------------------------------------------------------------

def _order(i: int):
    from syncd.commerceml import MOSCOW, Address, AddressField, Contact, Counterparty, Document, Item, Unit
    t0 = datetime(2026, 1, 1, 9, 0, tzinfo=MOSCOW)
    last, first = _NAMES[i % len(_NAMES)]
    city, street = _CITIES[i % len(_CITIES)], _STREETS[i % len(_STREETS)]
    items = tuple(
        Item(id=f"9f1c2a10-0000-4c1e-8a00-{(i * 7 + k) % 10**12:012d}", catalog_id="catalog",
             name=_GOODS[(i + k) % len(_GOODS)], unit=Unit("796", "шт", "Штука", "PCE"),
             price=Decimal(f"{390 + 10 * k}.00"), quantity=Decimal(k + 1),
             sum=Decimal(f"{390 + 10 * k}.00") * (k + 1),
             requisites=(("ВидНоменклатуры", "Товар"), ("ТипНоменклатуры", "Товар"),
                         ("СвойствоКорзины#Цвет", "белый")))
        for k in range(3))
    buyer = Counterparty(
        id=f"{1000 + i}#buyer{i}@example.ru#{last} {first}", name=f"{last} {first}",
        full_name=f"{last} {first} Сергеевич", role="Покупатель", last_name=last, first_name=first,
        addresses=(Address("АдресРегистрации", f"{city}, ул. {street}, д. {i % 300}, кв. {i % 90}",
                           (AddressField("Почтовый индекс", f"1{i % 10**5:05d}"),
                            AddressField("Город", city), AddressField("Улица", street))),),
        contacts=(Contact("Почта", f"buyer{i}@example.ru"),
                  Contact("ТелефонРабочий", f"+7 (495) {i % 1000:03d}-{i % 100:02d}-{i % 97:02d}")))
    total = sum((it.sum for it in items), Decimal(0))
    return Document(
        id=str(100000 + i), number=str(100000 + i), date=t0 + timedelta(minutes=i),
        operation="Заказ товара", role="Продавец", currency="RUB", rate=Decimal(1), total=total,
        comment="Позвонить за час до доставки, домофон не работает — «код 1234»",
        counterparties=(buyer,), items=items,
        requisites=(("Метод оплаты", "Банковская карта"), ("Метод оплаты ИД", "3"),
                    ("Заказ оплачен", "true" if i % 3 else "false"), ("Доставка разрешена", "false"),
                    ("Способ доставки", "Курьерская доставка по городу"), ("Метод доставки ИД", "2"),
                    ("Отменен", "false"), ("Финальный статус", "false"),
                    ("Статус заказа", _STATUSES[i % len(_STATUSES)]), ("Статуса заказа ИД", "N"),
                    ("Дата изменения статуса", (t0 + timedelta(minutes=i + 5)).strftime("%Y-%m-%d %H:%M:%S")),
                    ("Сайт", "[s1] Интернет-магазин «Дом и уют»")))


def _product(i: int):
    from syncd.commerceml import Product, Tax, Unit
    return Product(
        id=f"5d1e7c44-{i % 10**4:04d}-4a3b-9c2d-{i:012d}", sku=f"ART-{i:08d}",
        name=f"{_GOODS[i % len(_GOODS)]}, цвет {i % 17}", unit=Unit("796", "шт", "Штука", "PCE"),
        groups=(f"g{i % 50}",),
        description="Изделие из белой керамики; можно мыть в посудомоечной машине. " * 2,
        barcode=f"46{i:011d}", property_values=(("p1", f"v{i % 5}"), ("p2", str(i % 300))),
        taxes=(Tax("НДС", "20"),),
        requisites=(("ВидНоменклатуры", "Товар"), ("ТипНоменклатуры", "Товар"),
                    ("Полное наименование", f"{_GOODS[i % len(_GOODS)]}, арт. {i}"), ("Вес", "0.35")))


def _record_bytes(make, encoding: str) -> int:
    """Size of one generated record in the file, to know how many make `target` bytes."""
    from lxml import etree

    from syncd.commerceml.writer import document_element, product_element
    el = document_element(make(7)) if make is _order else product_element(make(7))
    return len(etree.tostring(el, encoding=encoding, pretty_print=True, xml_declaration=False))


def generate(tmp: Path, scale: float) -> dict[str, Path]:
    from syncd.commerceml import Group, Property, write_catalog, write_orders
    files = {}
    groups = [Group(f"g{i}", f"Группа {i}", (Group(f"g{i}.1", f"Подгруппа {i}"),)) for i in range(50)]
    props = [Property("p1", "Цвет", "Справочник", tuple((f"v{k}", f"Цвет {k}") for k in range(5))),
             Property("p2", "Объём", "Число")]
    for short, enc in ENCODINGS.items():
        n = max(1, int(ORDERS_MB * 1024**2 * scale) // _record_bytes(_order, enc))
        path = files[f"orders_{short}"] = tmp / f"orders-{short}.xml"
        write_orders(path, (_order(i) for i in range(n)), encoding=enc)
        n = max(1, int(CATALOG_MB * 1024**2 * scale) // _record_bytes(_product, enc))
        path = files[f"catalog_{short}"] = tmp / f"import-{short}.xml"
        write_catalog(path, (_product(i) for i in range(n)), groups=groups, properties=props,
                      only_changes=True, encoding=enc)
    return files


# ---- measurement (child side) --------------------------------------------------------------------

def _dict_loop(path: str, tag: str) -> int:
    """Hand-written glue: one dict per record, children by local name, no checks at all."""
    from lxml import etree
    n = 0
    for _, el in etree.iterparse(path, events=("end",), tag="{*}" + tag):
        p = el.getparent()
        if tag == "Товар" and (p is None or p.getparent() is None or p.getparent().tag.rpartition("}")[2] != "Каталог"):
            continue
        rec: dict = {}
        for c in el:
            if len(c):
                rec[c.tag] = [{g.tag: g.text for g in x} if len(x) else x.text for x in c]
            else:
                rec[c.tag] = c.text
        n += bool(rec)
        el.clear(keep_tail=False)
        while el.getprevious() is not None:
            del p[0]
    return n


def measure(kind: str, path: str) -> dict:
    from lxml import etree

    from syncd.commerceml import Rejected, iter_catalog, iter_documents
    shape = "orders" if Path(path).name.startswith("orders") else "catalog"
    w, c = time.perf_counter(), time.process_time()
    n = 0
    if kind == "bare":
        for _, el in etree.iterparse(path, events=("end",)):
            el.clear(keep_tail=True)
            n += 1
    elif kind == "dict":
        n = _dict_loop(path, "Документ" if shape == "orders" else "Товар")
    elif kind == "reader":
        for obj in (iter_documents if shape == "orders" else iter_catalog)(path):
            assert not isinstance(obj, Rejected), obj
            n += 1
    else:
        raise SystemExit(f"unknown kind {kind}")
    return {"seconds": time.perf_counter() - w, "cpu": time.process_time() - c, "count": n,
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


def best(kinds: tuple[str, ...], path: Path, repeat: int) -> dict[str, dict]:
    """The fastest of `repeat` runs of each kind, the kinds interleaved so that load from
    elsewhere on the machine falls on all of them alike."""
    runs: dict[str, list] = {k: [] for k in kinds}
    for _ in range(repeat):
        for kind in kinds:
            runs[kind].append(run_child(kind, path))
    out = {}
    for kind, rs in runs.items():
        top = min(rs, key=lambda r: r["cpu"])
        top["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rs)
        out[kind] = top
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="file sizes × this (1.0: 100 MB orders, 512 MB catalog)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest counts")
    ap.add_argument("--measure", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help="folder for the generated files (default: system temp)")
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="syncd-bench-cml-", dir=args.tmp))
    try:
        t = time.perf_counter()
        files = generate(tmp, args.scale)
        print(f"generated {', '.join(f'{p.name} {p.stat().st_size / 1024**2:.1f} MB' for p in files.values())} "
              f"in {time.perf_counter() - t:.1f} s")
        summary: dict = {}
        peak = 0.0
        for name, path in files.items():
            mb = path.stat().st_size / 1024**2
            res = best(("bare", "reader", "dict"), path, args.repeat)
            anchor = res["bare"]["cpu"]
            for kind, r in res.items():
                print(f"{name:15s} {kind:6s} {mb:8.1f} MB {r['seconds']:7.2f} s wall {r['cpu']:7.2f} s cpu "
                      f"{mb / r['seconds']:6.1f} MB/s  {anchor / r['cpu']:5.2f}× bare  "
                      f"{r['count']:>9d} objects  peak RSS {r['peak_rss_mb']:.0f} MB")
            summary[f"{name}_ratio"] = round(anchor / res["reader"]["cpu"], 3)
            summary[f"{name}_dict_ratio"] = round(anchor / res["dict"]["cpu"], 3)
            summary[f"{name}_mb_per_s"] = round(mb / res["reader"]["seconds"], 1)
            peak = max(peak, res["reader"]["peak_rss_mb"])
        summary["min_ratio"] = min(v for k, v in summary.items() if k.endswith("_ratio") and "dict" not in k)
        summary["peak_rss_mb"] = round(peak, 1)
        summary["scale"] = args.scale
        print(json.dumps(summary))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
