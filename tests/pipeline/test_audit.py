"""`syncd audit` (issue 21): every bound record read back from its system and compared with syncd's.

In step: nothing. A value a system holds differently is drift, with its cause: edited outside and
not read yet, applied differently than written, a queued write (pending, not drift). What peers
always do to values (phone spelling, money scale, row order) is not drift. `--repair` brings the
system back through the outbox (or takes the outside edit in), after which the audit is clean.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from factories import person
from syncd import audit
from syncd.mapping import Mapper, parse_mapping_doc
from syncd.mapping.load import validate_set
from syncd.pipeline.push import PushPolicy
from syncd.sandbox.memory import MemoryConnector, MemorySystem
from syncd.store import Store
from syncd.sync import Syncer

ITEM = {"product": "product_id", "name": "name", "price": {"field": "price", "transform": "money"},
        "quantity": "qty"}


def _mapper() -> Mapper:
    maps = []
    for s in ("shop", "crm"):
        maps += [{"system": s, "kind": "person", "entity": "person", "create": True,
                  "fields": {"person.name": "name", "person.email": "email", "person.phone": "phone"}},
                 {"system": s, "kind": "product", "entity": "product", "create": True,
                  "fields": {"product.name": "name"}},
                 {"system": s, "kind": "order", "entity": "order", "create": True,
                  "fields": {"order.number": "number", "order.total": {"field": "total", "transform": "money"},
                             "order.customer": "customer_id",
                             "order.items": {"field": "rows", "items": ITEM}}}]
    ms = parse_mapping_doc({"maps": maps,
                            "identity": {"person": {"keys": ["email"], "origin": ["shop", "crm"]},
                                         "product": {"keys": [], "origin": ["shop", "crm"]},
                                         "order": {"keys": ["number"], "origin": ["shop", "crm"]}},
                            "conflicts": {"*": {"policy": "newest"}}}, "audit")
    validate_set(ms)
    return Mapper(ms)


def _world(store: Store) -> tuple[Syncer, dict[str, MemorySystem]]:
    remote = {s: MemorySystem(s, ("person", "product", "order")) for s in ("shop", "crm")}
    syncer = Syncer(store, _mapper(), {s: MemoryConnector(s, remote[s]) for s in remote},
                    policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0))
    remote["shop"].edit("product", "g1", name="Кружка")
    remote["shop"].edit("product", "g2", name="Чайник")
    remote["shop"].edit("person", "u1", **person(phone="+7 916 123-45-67"))
    remote["shop"].edit("order", "o1", number="1001", total="2860.00", customer_id="u1",
                        rows=[{"product_id": "g1", "name": "Кружка", "price": "490.00", "qty": 2},
                              {"product_id": "g2", "name": "Чайник", "price": "1880.00", "qty": 1}])
    for _ in range(3):
        syncer.until_quiet()
    return syncer, remote


def _run(syncer: Syncer, **kw: Any) -> audit.Report:
    return audit.audit(syncer.store, syncer.mapper, syncer.connectors, ingest=syncer.engine.ingest, **kw)


def _crm_order(remote: dict[str, MemorySystem]) -> dict[str, Any]:
    (o,) = remote["crm"].objects["order"].values()
    return o


def test_systems_in_step_have_no_drift_whatever_peers_do_to_values(store: Store) -> None:
    syncer, remote = _world(store)
    r = _run(syncer)
    assert r.drift == [] and r.checked == {"crm": 4, "shop": 4}, r.as_dict()
    # what peers always do: another phone spelling, money scale, rows in another order
    (p,) = remote["crm"].objects["person"].values()
    p["phone"] = "8 (916) 123-45-67"
    o = _crm_order(remote)
    o["total"], o["rows"] = "2860", list(reversed(o["rows"]))
    assert _run(syncer).drift == []


def test_a_value_the_system_holds_differently_is_drift_with_its_cause_and_repair_fixes_it(store: Store) -> None:
    syncer, remote = _world(store)
    o = _crm_order(remote)
    o["rows"] = o["rows"][:1]                 # the peer dropped a row it was sent (no new version)
    o["total"] = "980.00"
    r = _run(syncer)
    assert sorted((d.system, d.field, d.cause) for d in r.drift) == [
        ("crm", "order.items", "applied"), ("crm", "order.total", "applied")], r.as_dict()
    assert r.drifted_records == 1
    (total,) = [d for d in r.drift if d.field == "order.total"]
    assert total.held == Decimal("2860.00") and total.found == Decimal("980.00")
    r = _run(syncer, repair=True)
    assert r.repaired == 1
    syncer.push("crm")
    assert len(_crm_order(remote)["rows"]) == 2 and _crm_order(remote)["total"] == "2860.00"
    assert _run(syncer).drift == []


def test_an_edit_made_outside_and_not_read_yet_is_told_apart_and_taken_in_on_repair(store: Store) -> None:
    syncer, remote = _world(store)
    (ext,) = remote["crm"].objects["person"]
    remote["crm"].edit("person", ext, name="Иван Петрович Петров")     # a manager, after syncd's last read
    r = _run(syncer)
    assert [(d.field, d.cause) for d in r.drift] == [("person.name", "outside")]
    _run(syncer, repair=True)
    syncer.until_quiet()
    assert [o["name"] for o in remote["shop"].objects["person"].values()] == ["Иван Петрович Петров"]
    assert _run(syncer).drift == []


def test_a_difference_a_queued_write_explains_is_pending_not_drift(store: Store) -> None:
    syncer, remote = _world(store)
    remote["shop"].edit("order", "o1", total="3000.00")
    syncer.pull("shop", "order")                                     # planned, not pushed yet
    r = _run(syncer, systems=["crm"])
    assert r.drift == [] and r.pending == {"crm": 1}


def test_a_record_gone_from_its_system_and_unreadable_systems_are_reported(store: Store) -> None:
    syncer, remote = _world(store)
    remote["crm"].objects["order"].clear()
    r = _run(syncer, systems=["crm"])
    assert [(d.entity_type, d.cause) for d in r.drift] == [("order", "gone")]

    class Deaf(MemoryConnector):
        fetchable = frozenset()              # type: ignore[assignment]
        unreadable_why = "it sends, it cannot be asked"

    syncer.connectors = {**syncer.connectors, "shop": Deaf("shop", remote["shop"])}
    r = _run(syncer, systems=["shop"])
    assert r.unreadable == {"shop": "it sends, it cannot be asked"} and r.checked == {}


def test_a_sample_checks_that_many_records(store: Store) -> None:
    syncer, remote = _world(store)
    r = _run(syncer, systems=["crm"], sample=2)
    assert r.checked == {"crm": 2}
