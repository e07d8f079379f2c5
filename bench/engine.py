"""Engine throughput: N shop orders with their customers through identify -> record -> resolve ->
plan (outbox rows for a null target), on SQLite and on PostgreSQL.

Two anchors, measured in the same run on the same kind of database:
- `*_ratio` (the primary one): plain SQLAlchemy Core bulk inserts of the same rows the engine
  wrote (entities, bindings, match keys, shadows, change log, outbox), copied from the engine's
  database into a fresh one in transactions of the same size; only the inserts are timed. The
  ratio is what the engine's logic costs on top of writing its results.
- `*_raw_ratio`: bulk inserts of one row per raw record (fields as JSON) — the cost of merely
  storing the input, a far stricter anchor (the engine writes about seven rows per record).
Figures are records/s (a record is one raw object: an order or a customer; N orders make 2N
records). Peak RSS is the process's high-water mark (resource.getrusage).

Usage: python bench/engine.py [--n 100000] [--batch 500] [--pg URL]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, create_engine, insert, text  # noqa: E402

from syncd.connector import Batch, RawRecord  # noqa: E402
from syncd.mapping import Mapper, parse_mapping_doc  # noqa: E402
from syncd.mapping.load import validate_set  # noqa: E402
from syncd.pipeline.engine import Counts, Engine  # noqa: E402
from syncd.store import Store  # noqa: E402
from syncd.store.db import normalize_url  # noqa: E402

FIRST = ["Иван", "Анна", "Пётр", "Ольга", "Сергей", "Мария", "Алексей", "Елена"]
LAST = ["Петров", "Смирнова", "Кузнецов", "Иванова", "Соколов", "Попова", "Лебедев", "Козлова"]

MAPPING = {
    "maps": [
        {"system": "shop", "kind": "user", "entity": "person", "create": True, "direction": "pull", "fields": {
            "person.name": "name", "person.email": "email", "person.phone": "phone"}},
        {"system": "shop", "kind": "order", "entity": "order", "create": True, "direction": "pull", "fields": {
            "order.number": "number", "order.status": {"field": "status", "values": "st"},
            "order.total": "total", "order.date": "date", "order.customer": "user_id",
            "order.items": {"field": "items", "items": {"name": "name", "quantity": "qty", "price": "price"}}}},
        {"system": "null", "kind": "contact", "entity": "person", "create": True, "direction": "push", "fields": {
            "person.name": "NAME", "person.email": "EMAIL", "person.phone": "PHONE"}},
        {"system": "null", "kind": "deal", "entity": "order", "create": True, "direction": "push", "fields": {
            "order.number": "NUM", "order.status": {"field": "STAGE", "values": "st"}, "order.total": "SUM",
            "order.customer": "CONTACT_ID"}},
    ],
    "values": {"st": {"new": "N", "paid": "P", "completed": "F"}},
    "identity": {"person": {"keys": ["email", "phone"], "origin": ["shop"]},
                 "order": {"keys": [], "origin": ["shop"]}},
}


def records(n: int, batch: int, seed: int = 7) -> Iterator[list[RawRecord]]:
    rnd = random.Random(seed)
    out: list[RawRecord] = []
    for i in range(n):
        uid = f"u{i}"
        phone = f"+7495{1000000 + i:07d}"
        out.append(RawRecord("user", uid, {"name": f"{rnd.choice(FIRST)} {rnd.choice(LAST)}",
                                           "email": f"user{i}@example.ru", "phone": phone}, version="1"))
        items = [{"name": f"Товар {j}", "qty": str(rnd.randint(1, 5)), "price": f"{rnd.randint(100, 9999)}.00"}
                 for j in range(rnd.randint(1, 3))]
        out.append(RawRecord("order", f"o{i}", {"number": str(100000 + i), "status": rnd.choice("NPF"),
                                                "total": f"{rnd.randint(500, 50000)}.00",
                                                "date": "2026-11-24T10:12:31+03:00", "user_id": uid,
                                                "items": items}, version="1"))
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out


def run_engine(url: str, n: int, batch: int) -> tuple[float, Counts]:
    ms = parse_mapping_doc(MAPPING, "bench")
    validate_set(ms)
    store = Store(url)
    engine = Engine(store, Mapper(ms))
    total = Counts()
    t0 = time.perf_counter()
    done = 0
    for recs in records(n, batch):
        total.add(engine.ingest("shop", Batch("bench", recs, cursor=str(done))))
        done += len(recs)
    elapsed = time.perf_counter() - t0
    store.close()
    return 2 * n / elapsed, total


def run_anchor(url: str, n: int, batch: int) -> float:
    eng = create_engine(normalize_url(url))
    md = MetaData()
    tbl = Table(f"anchor_{uuid.uuid4().hex[:8]}", md, Column("id", Integer, primary_key=True),
                Column("kind", String(16)), Column("external_id", String(64)), Column("fields", Text))
    md.create_all(eng)
    t0 = time.perf_counter()
    for recs in records(n, batch):
        with eng.begin() as c:
            c.execute(insert(tbl), [{"kind": r.kind, "external_id": r.external_id,
                                     "fields": json.dumps(r.fields, ensure_ascii=False)} for r in recs])
    elapsed = time.perf_counter() - t0
    md.drop_all(eng)
    eng.dispose()
    return 2 * n / elapsed


ENGINE_TABLES = ("entities", "bindings", "match_keys", "shadows", "changelog", "outbox")


def run_same_rows_anchor(src_url: str, dst_url: str, n: int, batch: int) -> float:
    """Time plain bulk inserts of the rows the engine wrote, into a fresh schema.

    The engine commits once per batch, writing that batch's rows of every table; the anchor does
    the same: transaction k inserts the k-th slice of each table. Only the inserts are timed.
    """
    import math

    from sqlalchemy import func, select

    from syncd.store import tables as t
    from syncd.store.db import make_engine

    src = create_engine(normalize_url(src_url))      # plain reader: no write lock taken
    dst = make_engine(dst_url)
    t.metadata.create_all(dst)
    n_batches = math.ceil(2 * n / batch)
    readers = []
    total_rows = 0
    for name in ENGINE_TABLES:
        table = t.metadata.tables[name]
        conn = src.connect()
        count = conn.execute(select(func.count()).select_from(table)).scalar() or 0
        total_rows += count
        # insertion order, so slice k of every table holds the rows the engine's k-th batch wrote
        order = text("ctid") if src.dialect.name == "postgresql" else text("rowid")
        res = conn.execution_options(stream_results=True).execute(table.select().order_by(order))
        readers.append((table, conn, res, math.ceil(count / n_batches)))
    elapsed = 0.0
    for _ in range(n_batches):
        slices = [(table, [dict(r) for r in res.mappings().fetchmany(size)]) for table, _c, res, size in readers]
        t0 = time.perf_counter()
        with dst.begin() as wc:
            if dst.dialect.name == "postgresql":
                # plain inserts: the anchor's slices need not match the engine's batches row for row
                wc.exec_driver_sql("SET LOCAL session_replication_role = replica")
            for table, data in slices:
                if data:
                    wc.execute(table.insert(), data)
        elapsed += time.perf_counter() - t0
    for _t, conn, _r, _s in readers:
        conn.close()
    src.dispose()
    dst.dispose()
    print(f"  same-rows anchor: {total_rows:,} rows ({total_rows / (2 * n):.1f} per record), "
          f"{n_batches} transactions, {elapsed:.2f}s")
    return 2 * n / elapsed


def fresh_pg(url: str) -> tuple[str, Any]:
    from syncd.store.scratch import scratch_database

    return scratch_database(url, "syncd_bench_")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="orders (each with its customer)")
    ap.add_argument("--batch", type=int, default=1000, help="records per batch/transaction")
    ap.add_argument("--pg", default=os.environ.get("SYNCD_TEST_POSTGRES_URL"), help="PostgreSQL URL")
    a = ap.parse_args()
    fig: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rate, counts = run_engine(f"sqlite:///{tmp}/engine.db", a.n, a.batch)
        fig["peak_rss_mb_engine_sqlite"] = round(peak_rss_mb(), 1)   # before any anchor ran
        same = run_same_rows_anchor(f"sqlite:///{tmp}/engine.db", f"sqlite:///{tmp}/same.db", a.n, a.batch)
        anchor = run_anchor(f"sqlite:///{tmp}/anchor.db", a.n, a.batch)
    print(f"sqlite: engine {rate:,.0f} records/s ({counts.created} created, {counts.planned} planned); "
          f"plain inserts of the same rows {same:,.0f} records/s -> ratio {rate / same:.3f}; "
          f"raw rows {anchor:,.0f}/s -> ratio {rate / anchor:.3f}")
    fig["sqlite_records_per_s"] = round(rate, 1)
    fig["sqlite_ratio"] = round(rate / same, 4)
    fig["sqlite_same_rows_anchor_records_per_s"] = round(same, 1)
    fig["sqlite_raw_ratio"] = round(rate / anchor, 4)
    fig["sqlite_raw_anchor_rows_per_s"] = round(anchor, 1)
    rss_after_sqlite = peak_rss_mb()
    if a.pg:
        url, drop = fresh_pg(a.pg)
        url2, drop2 = fresh_pg(a.pg)
        try:
            rate, counts = run_engine(url, a.n, a.batch)
            same = run_same_rows_anchor(url, url2, a.n, a.batch)
            anchor = run_anchor(url, a.n, a.batch)
        finally:
            drop()
            drop2()
        print(f"postgres: engine {rate:,.0f} records/s ({counts.created} created); plain inserts of the "
              f"same rows {same:,.0f} records/s -> ratio {rate / same:.3f}; raw rows {anchor:,.0f}/s -> "
              f"ratio {rate / anchor:.3f}")
        fig["postgres_records_per_s"] = round(rate, 1)
        fig["postgres_ratio"] = round(rate / same, 4)
        fig["postgres_same_rows_anchor_records_per_s"] = round(same, 1)
        fig["postgres_raw_ratio"] = round(rate / anchor, 4)
        fig["postgres_raw_anchor_rows_per_s"] = round(anchor, 1)
    else:
        print("postgres: skipped (no --pg / SYNCD_TEST_POSTGRES_URL)")
        fig["postgres_records_per_s"] = fig["postgres_ratio"] = None
    fig["peak_rss_mb"] = round(peak_rss_mb(), 1)
    fig["peak_rss_mb_after_sqlite"] = round(rss_after_sqlite, 1)
    fig["n_orders"] = a.n
    print(f"peak RSS {fig['peak_rss_mb']} MB")
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
