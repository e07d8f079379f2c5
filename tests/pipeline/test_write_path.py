"""The write path end to end (core issue, defects 1-5, 8, 10): writes decided at send time,
fenced claims, every failure classified, holds that propagate, idempotent side effects.

Each test goes through the public paths — systems edited, streams pulled, the outbox pushed —
on SQLite and on PostgreSQL (the `store` fixture), and checks what the systems hold.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from factories import make_world, mapping_doc, person
from syncd.connector import WriteOp, WriteResult, traits
from syncd.keys.generate import make_inn
from syncd.mapping import Mapper, parse_mapping_doc
from syncd.pipeline import confirm, outbox, payload, settle
from syncd.pipeline.push import Pusher, PushPolicy
from syncd.sandbox.memory import MemoryConnector, MemorySystem, SimulatedCrash
from syncd.store import Store
from syncd.store import tables as t


def _obj(system: MemorySystem, kind: str, **match: Any) -> dict[str, Any]:
    found = [o for o in system.objects[kind].values() if all(o.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"{system.name} holds {len(found)} {kind} matching {match}"
    return found[0]


def _rows(store: Store, **where: Any) -> list[dict[str, Any]]:
    q = select(t.outbox)
    for k, v in where.items():
        q = q.where(t.outbox.c[k] == v)
    with store.read() as c:
        return [dict(r) for r in c.execute(q.order_by(t.outbox.c.id)).mappings()]


# -- 1. a queued write never carries a value older than one syncd has recorded ---------------------

def test_queued_write_does_not_revert_a_newer_edit_of_its_target(store: Store) -> None:
    syncer, remote = make_world(store)
    remote["shop"].edit("person", "s1", **person(comment="первый"))
    syncer.until_quiet()
    # the shop changes the comment: a write to the CRM is queued, not sent yet
    remote["shop"].edit("person", "s1", comment="из магазина")
    syncer.pull("shop", "person")
    assert _rows(store, system="crm", status="pending")
    # meanwhile a manager edits the same field in the CRM, later: the CRM's value is the newest
    crm_ext = next(iter(remote["crm"].objects["person"]))
    remote["crm"].edit("person", crm_ext, comment="менеджер")
    syncer.pull("crm", "person")
    syncer.push("crm")
    assert remote["crm"].objects["person"][crm_ext]["comment"] == "менеджер", "the queued write reverted the edit"
    syncer.until_quiet()
    assert _obj(remote["shop"], "person", email="ivan@example.ru")["comment"] == "менеджер"


def test_changes_queued_one_after_another_go_out_as_one_write(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["shop"].edit("person", "s1", **person())
    syncer.until_quiet()
    writes = remote["crm"].writes
    for i in range(5):
        remote["shop"].edit("person", "s1", comment=f"правка {i}")
        syncer.pull("shop", "person")
    assert len(_rows(store, system="crm", status="pending")) == 1, "one open write per record and system"
    syncer.push("crm")
    assert remote["crm"].writes == writes + 1
    assert _obj(remote["crm"], "person", email="ivan@example.ru")["comment"] == "правка 4"


# -- 2. a change planned while its write is in flight is not lost ----------------------------------

class GatedConnector(MemoryConnector):
    """Holds each write until the test opens the gate (a write in flight)."""

    def __init__(self, name: str, system: MemorySystem) -> None:
        super().__init__(name, system)
        self.entered, self.gate = threading.Event(), threading.Event()

    def write(self, op: WriteOp) -> WriteResult:
        self.entered.set()
        assert self.gate.wait(30)
        return super().write(op)


def test_change_planned_while_the_write_is_in_flight_is_sent_after_it(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    gated = GatedConnector("crm", remote["crm"])
    syncer.pusher.connectors = {**syncer.connectors, "crm": gated}
    remote["shop"].edit("person", "s1", **person(comment="до"))
    syncer.pull("shop", "person")
    t1 = threading.Thread(target=syncer.push, args=("crm",))
    t1.start()
    assert gated.entered.wait(30)
    # the write is in flight; the shop changes the record and the change is planned
    remote["shop"].edit("person", "s1", comment="после")
    syncer.pull("shop", "person")
    gated.gate.set()
    t1.join(30)
    # the row went back to pending at confirm and the same drain sent the change
    (row,) = _rows(store, system="crm")
    assert row["status"] == "done"
    assert _obj(remote["crm"], "person", email="ivan@example.ru")["comment"] == "после", \
        "the change made while the write was in flight was dropped"
    assert remote["crm"].writes == 2


def test_concurrent_planning_and_pushing_lose_no_change(db_url: str) -> None:
    """Pull batches and two pushers race on the same records; at the end every target holds the
    golden record (a change planned into a row a pusher was settling is never lost)."""
    store = Store(db_url)
    syncer, remote = make_world(store, systems=("crm", "shop"))
    n = 20
    for i in range(n):
        remote["shop"].edit("person", f"s{i}", **person(name=f"К{i}", email=f"k{i}@example.ru"))
    syncer.until_quiet()
    stop = threading.Event()
    errors: list[BaseException] = []

    def pusher(name: str) -> None:
        own = Store(db_url, create=False)
        p = Pusher(own, syncer.mapper, {"crm": MemoryConnector("crm", remote["crm"], write_delay=0.002)},
                   worker=name, policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0))
        try:
            while not stop.is_set():
                p.push("crm", limit=3)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=pusher, args=(f"p{i}",)) for i in range(2)]
    for th in threads:
        th.start()
    for round_ in range(15):
        for i in range(0, n, 2 + round_ % 3):
            remote["shop"].edit("person", f"s{i}", comment=f"r{round_}")
        syncer.pull("shop", "person")
    stop.set()
    for th in threads:
        th.join(60)
    assert not errors
    syncer.until_quiet()
    for i in range(n):
        shop = remote["shop"].objects["person"][f"s{i}"]
        assert _obj(remote["crm"], "person", email=f"k{i}@example.ru").get("comment") == shop.get("comment")
    store.close()


# -- 3. fenced claims ---------------------------------------------------------------------------

def test_a_slow_write_keeps_its_claim_and_nothing_is_written_twice(db_url: str) -> None:
    """Each write takes longer than the claim's TTL: only the renewal keeps the claim. Another
    instance looking for expired claims the whole time never gets one of them."""
    store = Store(db_url)
    syncer, remote = make_world(store, systems=("crm", "shop"))
    n = 4
    for i in range(n):
        remote["shop"].edit("person", f"s{i}", **person(name=f"К{i}", email=f"c{i}@example.ru"))
    syncer.pull("shop", "person")
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    done, writing = threading.Event(), threading.Event()

    class Counting(MemoryConnector):
        def write(self, op: WriteOp) -> WriteResult:
            with lock:
                seen[op.entity_id] += 1
            writing.set()
            return super().write(op)

    def slow() -> None:
        own = Store(db_url, create=False)
        p = Pusher(own, syncer.mapper, {"crm": Counting("crm", remote["crm"], write_delay=0.5)}, worker="slow",
                   policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0, claim_ttl=0.6))
        p.push("crm", limit=n)
        own.close()
        done.set()

    th = threading.Thread(target=slow)
    th.start()
    assert writing.wait(30)                         # every row is claimed by the slow writer now
    taken: list[int] = []
    other = Store(db_url, create=False)
    while not done.is_set():                        # another instance, looking for expired claims
        taken += [r["id"] for r in outbox.claim(other, "crm", instance="other", ttl=30, limit=100).rows]
        time.sleep(0.05)
    th.join(120)
    other.close()
    assert taken == [], f"claims taken from a live writer: {taken}"
    assert len(seen) == n and max(seen.values()) == 1
    store.close()


def test_a_restarted_instance_takes_back_its_claims_at_once(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"),
                                policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0, claim_ttl=300))
    for i in range(3):
        remote["shop"].edit("person", f"s{i}", **person(name=f"К{i}", email=f"r{i}@example.ru"))
    syncer.pull("shop", "person")
    remote["crm"].faults.append("crash_after")          # kill -9 right after the first remote write
    with pytest.raises(SimulatedCrash):
        syncer.push("crm")
    assert store.count("outbox", status="sending") == 3
    # a fresh process of the same instance: no waiting for the 300 s claim TTL
    restarted = Pusher(store, syncer.mapper, syncer.connectors, worker=syncer.worker,
                       policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0, claim_ttl=300))
    c = restarted.push("crm")
    assert c.pushed == 3 and store.count("outbox", status="done") == 3
    assert remote["crm"].creates == 3, "the write done before the crash is found by its key, not repeated"
    # another instance would not have taken them before the TTL
    assert Pusher(store, syncer.mapper, syncer.connectors, worker="other").push("crm").pushed == 0


def test_a_create_read_back_before_its_confirm_wakes_the_writes_that_wait_for_it(store: Store) -> None:
    """The process dies right after creating a contact; before it is back, another instance blocks
    the deal on that contact, and a pull reads the contact back. The deal must go on: the
    contact's own write then settles as "in step", with no confirm that would wake the deal."""
    policy = PushPolicy(base_delay=0.0, inline_wait_max=0.0, claim_ttl=300)
    syncer, remote = make_world(store, systems=("crm", "shop"), policy=policy)
    remote["shop"].edit("person", "u1", **person(name="Анна", email="anna@example.ru"))
    syncer.pull("shop", "person")
    remote["crm"].faults.append("crash_after")          # kill -9 right after the contact is written
    with pytest.raises(SimulatedCrash):
        syncer.push("crm")
    remote["shop"].edit("order", "o1", number="B-1", status="N", total="300", customer_id="u1")
    syncer.pull("shop", "order")
    Pusher(store, syncer.mapper, syncer.connectors, worker="other", policy=policy).push("crm")
    (row,) = _rows(store, system="crm", entity_type="order")
    assert (row["status"], row["blocked_why"]) == ("blocked", "create"), "the deal waits for its contact"
    syncer.pull("crm", "person")                        # the contact written before the crash, read back
    restarted = Pusher(store, syncer.mapper, syncer.connectors, worker=syncer.worker, policy=policy)
    restarted.push("crm")
    restarted.push("crm")
    assert store.count("outbox", status="blocked") == 0, "the deal still waits for a contact that exists"
    contact = _obj(remote["crm"], "person", email="anna@example.ru")
    deal = _obj(remote["crm"], "order", number="B-1")
    assert deal["customer_id"] == next(k for k, v in remote["crm"].objects["person"].items() if v is contact)
    assert remote["crm"].creates == 2, "one contact, one deal"


def test_a_claim_taken_over_settles_nothing(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["shop"].edit("person", "s1", **person())
    syncer.pull("shop", "person")
    old = outbox.claim(store, "crm", instance="a", ttl=0.05)
    time.sleep(0.1)                                     # its deadline passes: the instance is presumed dead
    new = outbox.claim(store, "crm", instance="b", ttl=30)
    assert [r["id"] for r in new.rows] == [r["id"] for r in old.rows]
    with store.read() as c:
        (ready,) = payload.build(c, syncer.mapper, old.rows, traits(syncer.connectors["crm"]),
                                 now=new.rows[0]["claimed_at"], link_wait=600)
    assert isinstance(ready, payload.Ready)
    with store.begin() as c:
        status = confirm.confirmed(c, syncer.mapper, old.rows[0], old.token, ready,
                                   WriteResult("crm-x"), link_wait=600)
    assert status == "lost"
    assert store.find_entity("crm", "person", "crm-x") is None, "a lost claim bound nothing"
    with store.begin() as c:
        assert confirm.confirmed(c, syncer.mapper, new.rows[0], new.token, ready, WriteResult("crm-y"),
                                 link_wait=600) == "done"


# -- 4. every failure classified; nothing stranded ----------------------------------------------

def test_an_unexpected_connector_error_is_an_attempt_then_a_dead_letter(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"),
                                policy=PushPolicy(base_delay=60.0, inline_wait_max=0.0, max_attempts=3))
    remote["shop"].edit("person", "s1", **person())
    syncer.pull("shop", "person")
    remote["crm"].faults.extend(["bug"] * 3)
    c = syncer.push("crm")
    (row,) = _rows(store, system="crm")
    assert (row["status"], row["attempts"], c.failed) == ("pending", 1, 1), "an unexpected error is an attempt"
    assert "ValueError: injected" in row["last_error"] and "memory.py" in row["last_error"]
    assert row["next_attempt_at"] is not None and row["claim_token"] is None
    # due again twice more: then it is a dead letter, never left claimed
    for _ in range(2):
        with store.begin() as conn:
            conn.execute(t.outbox.update().values(next_attempt_at=row["created_at"]))
        syncer.push("crm")
    (row,) = _rows(store, system="crm")
    assert row["status"] == "dead" and "gave up after 3 attempts" in row["last_error"]
    assert store.count("outbox", status="sending") == 0


def test_an_update_whose_answer_never_came_is_sent_again_until_it_lands(store: Store) -> None:
    """An update fails past the pusher's inline retries (the target never answered, nothing was
    written): it is not settled as sent — it is tried again until the target holds the value."""
    syncer, remote = make_world(store, systems=("crm", "shop"),
                                policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0, max_attempts=10))
    remote["shop"].edit("person", "s1", **person(comment="первый"))
    syncer.until_quiet()
    remote["shop"].edit("person", "s1", comment="второй")
    syncer.pull("shop", "person")
    remote["crm"].faults.extend(["transient"] * (syncer.policy.inline_tries + 1))
    c = syncer.push("crm")
    assert c.failed >= 1
    syncer.push("crm")
    (crm_person,) = remote["crm"].objects["person"].values()
    assert crm_person["comment"] == "второй", "an update that never reached the target was settled as sent"
    assert store.count("outbox", status="pending") == 0


def test_a_write_waiting_for_a_dead_letter_is_blocked_until_it_is_replayed(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["shop"].edit("person", "c1", **person())
    remote["shop"].edit("order", "o1", number="77", status="N", total="100", customer_id="c1")
    syncer.pull("shop", "person")
    syncer.pull("shop", "order")
    remote["crm"].faults.append("permanent")           # the buyer's create is refused
    syncer.push("crm")
    by_type = {r["entity_type"]: r for r in _rows(store, system="crm")}
    assert by_type["person"]["status"] == "dead"
    assert by_type["order"]["status"] == "blocked" and by_type["order"]["blocked_why"] == "dead"
    writes = remote["crm"].writes
    for _ in range(3):                                  # it does not spin
        syncer.push("crm")
    assert remote["crm"].writes == writes and _rows(store, system="crm", entity_type="order")[0]["attempts"] == 0
    assert outbox.replay(store) == 1
    c = syncer.push("crm")
    assert c.pushed == 2
    deal = _obj(remote["crm"], "order", number="77")
    assert remote["crm"].objects["person"][deal["customer_id"]]["email"] == "ivan@example.ru"


# -- 5. holds propagate -------------------------------------------------------------------------

def test_order_of_a_buyer_in_review_waits_and_follows_the_resolution(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    # two CRM contacts come to share a phone: a shop buyer with that phone is ambiguous
    remote["crm"].edit("person", "c1", **person(name="Анна", email="anna@example.ru", phone="+74951112233"))
    remote["crm"].edit("person", "c2", **person(name="Анна Б.", email="anna.b@example.ru", phone="+74959998877"))
    syncer.until_quiet()
    remote["crm"].edit("person", "c2", phone="+74951112233")
    syncer.until_quiet()
    remote["shop"].edit("person", "u1", **person(name="Анна", email=None, phone="8 (495) 111-22-33"))
    remote["shop"].edit("order", "o1", number="A-1", status="N", total="500", customer_id="u1")
    syncer.until_quiet()
    (item,) = store.list_review()
    assert item["system"] == "shop"
    assert not [o for o in remote["crm"].objects["order"].values()], "an order of a held buyer made a deal"
    (row,) = _rows(store, system="crm", entity_type="order")
    assert row["status"] == "blocked" and row["blocked_why"] == "held"
    # a person says: this buyer is contact c1
    c1 = store.find_entity("crm", "person", "c1")
    assert c1
    settle.resolve_review(syncer.engine, item["id"], entity_id=c1)
    syncer.until_quiet()
    deal = _obj(remote["crm"], "order", number="A-1")
    assert deal["customer_id"] == "c1"
    assert len(remote["crm"].objects["person"]) == 2, "nobody duplicated"
    assert store.find_entity("shop", "person", "u1") == c1


def test_review_settled_as_new_creates_the_customer_then_the_order(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["crm"].edit("person", "c1", **person(name="Анна", email="a1@example.ru", phone="+74951112233"))
    remote["crm"].edit("person", "c2", **person(name="Анна Б.", email="a2@example.ru", phone="+74959998877"))
    syncer.until_quiet()
    remote["crm"].edit("person", "c2", phone="+74951112233")
    syncer.until_quiet()
    remote["shop"].edit("person", "u1", **person(name="Другая Анна", email="other@example.ru", phone="+74951112233"))
    remote["shop"].edit("order", "o1", number="A-2", status="N", total="700", customer_id="u1")
    syncer.until_quiet()
    (item,) = store.list_review()
    settle.resolve_review(syncer.engine, item["id"], create=True)
    syncer.until_quiet()
    deal = _obj(remote["crm"], "order", number="A-2")
    assert remote["crm"].objects["person"][deal["customer_id"]]["email"] == "other@example.ru"


def test_order_of_a_quarantined_buyer_waits_and_flows_when_the_source_is_fixed(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    # a buyer whose ИНН fails its checksum is quarantined
    remote["shop"].edit("person", "u1", name="Пётр", email="petr@example.ru", inn="123456789012")
    remote["shop"].edit("order", "o1", number="Q-1", status="N", total="300", customer_id="u1")
    syncer.until_quiet()
    (q,) = store.list_quarantine()
    assert q["external_id"] == "u1" and q["record"], "the whole record is kept to take it in again"
    assert not remote["crm"].objects["order"]
    (row,) = _rows(store, system="crm", entity_type="order")
    assert (row["status"], row["blocked_why"]) == ("blocked", "held")
    remote["shop"].edit("person", "u1", inn=make_inn(individual=True))   # fixed at the source
    syncer.until_quiet()
    deal = _obj(remote["crm"], "order", number="Q-1")
    assert remote["crm"].objects["person"][deal["customer_id"]]["email"] == "petr@example.ru"
    assert store.list_quarantine() == [], "the fixed record superseded its quarantine entry"


def test_quarantine_release_takes_the_record_in_again(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["shop"].edit("order", "o1", number="R-1", status="X", total="10")   # X: no such status
    syncer.until_quiet()
    (q,) = store.list_quarantine()
    assert "X" in q["reason"]
    with pytest.raises(Exception, match="still cannot be processed"):
        settle.release_quarantine(syncer.engine, q["id"])
    assert store.list_quarantine()[0]["id"] == q["id"], "a failed release changes nothing"
    # the integrator adds the status to the mapping (the daemon restarts with it), then releases
    doc = copy.deepcopy(mapping_doc(systems=("crm", "shop")))
    doc["values"]["status_shop"]["hold"] = "X"
    doc["values"]["status_crm"]["hold"] = "HOLD"
    fixed = Mapper(parse_mapping_doc(doc, "test"))
    syncer.engine.mapper = syncer.pusher.mapper = syncer.mapper = fixed
    assert "taken in again" in settle.release_quarantine(syncer.engine, q["id"])
    syncer.until_quiet()
    assert store.list_quarantine() == []
    deal = _obj(remote["crm"], "order", number="R-1")
    assert (deal["status"], deal["total"]) == ("HOLD", "10.00")


# -- 8. idempotent side effects -----------------------------------------------------------------

def test_a_write_whose_answer_was_lost_is_not_repeated(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["shop"].edit("person", "s1", **person())
    syncer.pull("shop", "person")
    remote["crm"].faults.extend(["lost", "lost", "lost"])   # written each time, the answer never comes
    syncer.push("crm")
    syncer.until_quiet()
    assert remote["crm"].creates == 1 and len(remote["crm"].objects["person"]) == 1


def _naming_world(store: Store) -> tuple[Any, dict[str, MemorySystem]]:
    """A CRM whose orders can name the record they belong to (like Bitrix24 deals), and a shop."""
    from factories import make_mapper
    from syncd.sync import Syncer

    remote = {s: MemorySystem(s, ("person", "order")) for s in ("crm", "shop")}
    conns = {s: MemoryConnector(s, remote[s]) for s in remote}
    conns["crm"].names_sources = frozenset({"order"})
    syncer = Syncer(store, make_mapper(systems=("crm", "shop")), conns, worker="w",
                    policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0, claim_ttl=300))
    return syncer, remote


def test_a_record_made_in_one_system_names_what_syncd_made_from_it_there_once(store: Store) -> None:
    """Issue 21 #3: a deal a manager made is stamped with the shop order syncd made from it (here:
    the memory CRM names sources like Bitrix24's ORIGINATOR_ID/ORIGIN_ID) — by one update planned
    when the shop's create is confirmed, though nothing else about the deal changed; read back, the
    name is what the record says, so it is never sent again."""
    from syncd.sandbox.memory import ORIGIN

    syncer, remote = _naming_world(store)
    remote["crm"].edit("order", "d1", number="N-1", comment="по телефону")
    syncer.until_quiet()
    (shop_id, shop_order), = remote["shop"].objects["order"].items()
    assert shop_order["_stamp"] == "crm-d1"                   # the shop's order carries the deal's key
    assert remote["crm"].objects["order"]["d1"][ORIGIN] == f"shop:{shop_id}"   # and the deal names it
    writes = remote["crm"].writes
    c = syncer.pass_once()
    assert (c.planned, c.pushed) == (0, 0) and remote["crm"].writes == writes      # told once
    # a manager's later edit goes out without the name again (what the deal says is in its shadow)
    remote["shop"].edit("order", shop_id, comment="оплачен на сайте")
    syncer.until_quiet()
    assert remote["crm"].objects["order"]["d1"]["comment"] == "оплачен на сайте"
    assert remote["crm"].writes == writes + 1


def test_a_second_record_naming_a_bound_source_is_its_own_and_the_pull_goes_on(store: Store) -> None:
    """A deal copied in the CRM with its shop order's key (ORIGINATOR_ID/ORIGIN_ID) names a shop
    order that is another deal's: it is identified as a record of its own — the pull does not fail
    on binding the shop order twice, and the first deal keeps its order."""
    from syncd.sandbox.memory import ORIGIN

    syncer, remote = _naming_world(store)
    remote["crm"].edit("order", "d1", number="N-1", comment="по телефону")
    syncer.until_quiet()
    named = remote["crm"].objects["order"]["d1"][ORIGIN]
    remote["crm"].edit("order", "d2", number="N-2", comment="копия", **{ORIGIN: named})
    syncer.until_quiet()
    c = syncer.pass_once()
    assert (c.failed, c.planned) == (0, 0)
    d1, d2 = store.find_entity("crm", "order", "d1"), store.find_entity("crm", "order", "d2")
    assert d1 and d2 and d1 != d2
    shop_id = named.split(":", 1)[1]
    assert store.find_entity("shop", "order", shop_id) == d1
    assert remote["crm"].objects["order"]["d2"][ORIGIN] == named            # what it says is never rewritten
