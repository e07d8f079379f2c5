"""A record's trace (issue 12, item 6): found by SYSTEM:KIND:ID, by the canonical type, by an order
number, a phone in any spelling, an e-mail; its ids in every system; each change with its source;
the decisions; the writes planned and confirmed."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from factories import make_world, person, write_config
from syncd.cli import main
from syncd.sandbox.memory import _SYSTEMS
from syncd.store import Store
from syncd.trace import trace


def test_trace_tells_the_story_of_an_order_and_its_buyer(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["shop"].edit("person", "u1", **person(name="Анна", email="Anna@Example.ru", phone="+7 495 111-22-33"))
    remote["shop"].edit("order", "o1", number="1001", status="N", total="500", customer_id="u1")
    syncer.until_quiet()
    deal = next(iter(remote["crm"].objects["order"]))
    remote["crm"].edit("order", deal, comment="перезвонить")
    syncer.until_quiet()
    for q in ("shop:order:o1", f"crm:order:{deal}", "1001"):
        (rec,) = trace(store, syncer.mapper, q)["records"]
        assert rec["type"] == "order" and rec["ids"] == {"shop": "o1", "crm": deal}
        summaries = [e["summary"] for e in rec["events"]]
        assert any(s.startswith("read from shop") for s in summaries)
        assert any("written to crm" in s for s in summaries)
        assert any(s.startswith("read from crm") and "order.comment" in s for s in summaries)
        assert any("write to crm confirmed" in s for s in summaries), summaries
        assert rec["fields"]["order.number"] == "1001"
    # the buyer by phone in another spelling, and by e-mail in another case
    for q in ("8 (495) 111-22-33", "anna@example.ru"):
        (rec,) = trace(store, syncer.mapper, q)["records"]
        assert rec["type"] == "person" and rec["ids"]["shop"] == "u1"
    assert trace(store, syncer.mapper, "nobody@example.ru")["records"] == []


def test_syncd_trace_prints_and_answers_json(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, systems={"crmtr": {"type": "memory"}, "shoptr": {"type": "memory", "seed": 1}})
    r = CliRunner().invoke(main, ["-c", str(cfg), "sync", "--create"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["-c", str(cfg), "trace", "shoptr:person:shoptr-seed-0"], catch_exceptions=False)
    assert r.exit_code == 0 and "person" in r.stdout and "read from shoptr" in r.stdout
    import re
    assert re.search(r"^  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d MSK  ", r.stdout, re.M), r.stdout   # the page's zone
    r = CliRunner().invoke(main, ["-c", str(cfg), "trace", "seed0@shoptr.example.ru", "--json"],
                           catch_exceptions=False)
    data = json.loads(r.stdout)
    assert data["records"][0]["ids"]["shoptr"] == "shoptr-seed-0"
    assert CliRunner().invoke(main, ["-c", str(cfg), "trace", "nothing-like-this"]).exit_code == 1
    _SYSTEMS.pop("crmtr", None)
    _SYSTEMS.pop("shoptr", None)


def test_trace_says_values_before_and_after_why_each_binding_and_the_local_time(tmp_path: Path) -> None:
    """Issue 22 #15: a trace named fields without values, bindings without their why, times in UTC."""
    syncer_store = Store(f"sqlite:///{tmp_path}/t.db")
    syncer, remote = make_world(syncer_store, systems=("crm", "shop"))
    remote["shop"].edit("person", "u1", **person(name="Анна", email="anna@example.ru", phone="+7 495 111-22-33"))
    remote["shop"].edit("order", "o1", number="1001", status="N", total="500", customer_id="u1")
    syncer.until_quiet()
    deal = next(iter(remote["crm"].objects["order"]))
    remote["crm"].edit("order", deal, comment="перезвонить")
    syncer.until_quiet()
    remote["crm"].edit("order", deal, comment="перезвонил, оплатит завтра")
    syncer.until_quiet()
    (rec,) = trace(syncer_store, syncer.mapper, "1001")["records"]
    summaries = [e["summary"] for e in rec["events"]]
    assert "read from shop: " in summaries[1] and "order.total — → 500" in summaries[1], summaries
    assert any(s == "read from crm: order.comment перезвонить → перезвонил, оплатит завтра" for s in summaries), summaries
    assert "bound to shop order o1: read there as a new record" in summaries
    assert f"bound to crm order {deal}: syncd created it there" in summaries
    change = next(e for e in rec["events"] if e["summary"].startswith("read from crm") and "завтра" in e["summary"])
    assert change["details"]["changes"]["order.comment"] == ["перезвонить", "перезвонил, оплатит завтра"]
    from syncd.trace import local_time

    assert local_time("2026-12-07T14:00:00+00:00", "Europe/Moscow") == "2026-12-07 17:00:00 MSK"
    assert local_time("2026-12-07T14:00:00+00:00", "Asia/Yekaterinburg").endswith("19:00:00 +05")
    syncer_store.close()
