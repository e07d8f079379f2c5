"""First contact (issue 21) at the engine: binding a record another system already had is a merge.

An empty value or an empty list never wins over syncd's non-empty one — whatever the field's
policy: here the CRM has priority on an order's lines (an integrator who makes the CRM master of
what was sold), and still a deal that the CRM already had with no rows takes the order's rows
when syncd first binds it; rows the CRM has are its own (priority) and, at first contact, are
taken whole, never merged member by member with the order's.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from syncd.mapping import Mapper, parse_mapping_doc
from syncd.mapping.load import validate_set
from syncd.pipeline.push import PushPolicy
from syncd.sandbox.memory import MemoryConnector, MemorySystem
from syncd.store import Store
from syncd.sync import Syncer

ITEM = {"name": "name", "price": {"field": "price", "transform": "money"}, "quantity": "qty"}
ROWS = [{"name": "Кружка", "price": "490.00", "qty": 2}, {"name": "Чайник", "price": "1880.00", "qty": 1}]


def _world(store: Store) -> tuple[Syncer, dict[str, MemorySystem]]:
    maps = [{"system": s, "kind": "order", "entity": "order", "create": True,
             "fields": {"order.number": "number", "order.comment": "comment",
                        "order.items": {"field": "rows", "items": ITEM}}} for s in ("shop", "crm")]
    ms = parse_mapping_doc({"maps": maps, "identity": {"order": {"keys": ["number"], "origin": ["shop", "crm"]}},
                            "conflicts": {"order.items": {"policy": "priority", "order": ["crm", "shop"]},
                                          "*": {"policy": "newest"}}}, "first-contact")
    validate_set(ms)
    remote = {s: MemorySystem(s, ("order",)) for s in ("shop", "crm")}
    syncer = Syncer(store, Mapper(ms), {s: MemoryConnector(s, remote[s]) for s in remote},
                    policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0))
    return syncer, remote


def _rows(o: dict[str, Any]) -> list[tuple[str, Decimal, int]]:
    return sorted((r["name"], Decimal(str(r["price"])).quantize(Decimal("0.01")), int(r["qty"]))
                  for r in o.get("rows") or [])


def test_a_record_the_other_side_had_without_lines_takes_the_lines_even_where_that_side_has_priority(
        store: Store) -> None:
    syncer, remote = _world(store)
    # both were there before syncd: the shop's order, and the deal the shop's own CRM module made
    remote["crm"].edit("order", "d1", number="1001", comment="из модуля магазина", rows=[])
    remote["shop"].edit("order", "o1", number="1001", comment="", rows=ROWS)
    for _ in range(3):
        syncer.until_quiet()
    assert store.find_entity("shop", "order", "o1") == store.find_entity("crm", "order", "d1")
    assert _rows(remote["crm"].objects["order"]["d1"]) == _rows({"rows": ROWS}), "the deal lost the order's rows"
    assert _rows(remote["shop"].objects["order"]["o1"]) == _rows({"rows": ROWS}), "the order's rows were wiped"
    # the blank comment did not wipe the CRM's either
    assert remote["crm"].objects["order"]["d1"]["comment"] == "из модуля магазина"
    assert len(remote["crm"].objects["order"]) == 1 and len(remote["shop"].objects["order"]) == 1


def test_lines_both_sides_had_follow_the_policy_whole(store: Store) -> None:
    syncer, remote = _world(store)
    crm_rows = [{"name": "Самовар", "price": "12500.00", "qty": 1}]
    remote["crm"].edit("order", "d1", number="1001", rows=crm_rows)
    remote["shop"].edit("order", "o1", number="1001", rows=ROWS)
    for _ in range(3):
        syncer.until_quiet()
    want = _rows({"rows": crm_rows})                          # the CRM's, by priority — not a mix of both
    assert _rows(remote["crm"].objects["order"]["d1"]) == want
    assert _rows(remote["shop"].objects["order"]["o1"]) == want
