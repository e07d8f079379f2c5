"""The write path where steps of several pushers and pullers interleave (issue 20).

A blocked write can never outlive what it waits for: the tests put the decision "blocked: waiting
for X" and the creation of X in every order the write path allows — decided before X exists and
settled after, X confirmed by another pusher in between, X created inside the same claim, X read
back by a pull, and (on PostgreSQL) the waker committing while the blocker's transaction is open.
Each ends with the write delivered, linked, and nothing blocked.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from factories import make_world, mapping_doc, person
from syncd.connector import Batch, traits
from syncd.mapping import Mapper, parse_mapping_doc
from syncd.mapping.load import validate_set
from syncd.pipeline import confirm, outbox, payload
from syncd.pipeline.push import Pusher, PushPolicy
from syncd.sandbox.memory import STAMP
from syncd.store import Store, utcnow
from syncd.store import tables as t

POLICY = PushPolicy(base_delay=0.0, inline_wait_max=0.0, claim_ttl=300)


def _rows(store: Store, **where: Any) -> list[dict[str, Any]]:
    q = select(t.outbox)
    for k, v in where.items():
        q = q.where(t.outbox.c[k] == v)
    with store.read() as c:
        return [dict(r) for r in c.execute(q.order_by(t.outbox.c.id)).mappings()]


def _order_and_buyer(store: Store, **kw: Any) -> tuple[Any, dict[str, Any]]:
    kw.setdefault("policy", POLICY)
    syncer, remote = make_world(store, systems=("crm", "shop"), **kw)
    remote["shop"].edit("person", "u1", **person(name="Анна", email="anna@example.ru"))
    remote["shop"].edit("order", "o1", number="B-1", status="N", total="300", customer_id="u1")
    syncer.pull("shop", "person")
    syncer.pull("shop", "order")
    return syncer, remote


def _deal_links_its_contact(remote: dict[str, Any]) -> bool:
    (deal,) = remote["crm"].objects["order"].values()
    (cid,) = remote["crm"].objects["person"]
    return deal.get("customer_id") == cid


def _decide(syncer: Any, cl: outbox.Claim) -> list[payload.Outcome]:
    with syncer.store.read() as c:
        return payload.build(c, syncer.mapper, cl.rows, traits(syncer.connectors["crm"]), now=utcnow(),
                             link_wait=600)


def test_a_block_decided_before_its_record_was_created_is_woken(store: Store) -> None:
    """Pusher A decides "the deal waits for its contact"; before A settles that, pusher B creates
    the contact and confirms it (B's wake-up finds nothing blocked yet). A's block must see it."""
    syncer, remote = _order_and_buyer(store)
    b = outbox.claim(store, "crm", instance="b", ttl=300, limit=1)          # the contact (planned first)
    a = outbox.claim(store, "crm", instance="a", ttl=300, limit=1)          # the deal
    assert [r["entity_type"] for r in b.rows + a.rows] == ["person", "order"]
    (blocked,) = _decide(syncer, a)
    assert isinstance(blocked, payload.Blocked) and blocked.why == "create"
    (ready,) = _decide(syncer, b)
    res = syncer.connectors["crm"].write(ready.op)
    with store.begin() as c:
        assert confirm.confirmed(c, syncer.mapper, b.rows[0], b.token, ready, res, link_wait=600) == "done"
    with store.begin() as c:
        status = confirm.blocked(c, a.rows[0], a.token, blocked, link_wait=600)
    assert status == "pending", "blocked on a contact that exists"
    (row,) = _rows(store, entity_type="order")
    assert row["status"] == "pending" and row["blocked_on"] is None
    syncer.push("crm")
    assert _deal_links_its_contact(remote) and store.count("outbox", status="blocked") == 0


def test_a_wake_up_committed_while_the_block_is_settled_is_not_lost(pg_url: str) -> None:
    """The same race with real transactions: A's block is written but not committed when B
    commits the contact and its wake-up (which cannot see A's row). A's check after its commit
    finds the contact (PostgreSQL: on SQLite one writer at a time makes this order impossible)."""
    store = Store(pg_url)
    try:
        syncer, remote = _order_and_buyer(store)
        b = outbox.claim(store, "crm", instance="b", ttl=300, limit=1)
        a = outbox.claim(store, "crm", instance="a", ttl=300, limit=1)
        (blocked,) = _decide(syncer, a)
        (ready,) = _decide(syncer, b)
        res = syncer.connectors["crm"].write(ready.op)
        other = Store(pg_url, create=False)
        with store.begin() as ca:
            fenced = outbox.fence(ca, a.rows[0]["id"], a.token)
            assert outbox.block(ca, fenced, on=blocked.on, why=blocked.why, detail=blocked.detail,
                                now=utcnow(), link_wait=600) == "blocked"      # the contact is not there yet
            with other.begin() as cb:                                           # B commits meanwhile
                confirm.confirmed(cb, syncer.mapper, b.rows[0], b.token, ready, res, link_wait=600)
        other.close()
        (row,) = _rows(store, entity_type="order")
        assert row["status"] == "pending", "the deal stays blocked on a contact that exists"
        syncer.push("crm")
        assert _deal_links_its_contact(remote)
    finally:
        store.close()


def _optional_link_mapper() -> Mapper:
    doc = mapping_doc(systems=("crm", "shop"))
    for m in doc["maps"]:
        if m["system"] == "crm" and m["kind"] == "order":
            m["fields"]["order.customer"] = {"field": "customer_id", "optional": True}
    ms = parse_mapping_doc(doc, "test")
    validate_set(ms)
    return Mapper(ms)


def test_a_link_left_out_goes_once_its_record_is_created_in_the_same_claim(store: Store) -> None:
    """One claim holds the contact and the deal; the deal is decided before the contact exists, so
    it goes without the link and waits for it. The contact is created in the same claim, before the
    deal is settled: the deal must not wait for a wake-up that already happened."""
    syncer, remote = _order_and_buyer(store, mapper=_optional_link_mapper())
    c = syncer.push("crm")
    assert store.count("outbox", status="blocked") == 0, "the deal waits for a contact created meanwhile"
    # the contact, the deal without its link (the case under test), then the link: one drain
    assert (c.pushed, remote["crm"].creates, remote["crm"].writes) == (3, 2, 3)
    assert _deal_links_its_contact(remote)


SLOW_RETRY = PushPolicy(base_delay=60.0, inline_wait_max=0.0, claim_ttl=300)


def test_every_block_is_decided_again_in_finite_time(store: Store) -> None:
    syncer, remote = _order_and_buyer(store, policy=SLOW_RETRY)
    remote["crm"].faults.extend(["transient"] * POLICY.inline_tries)   # the contact's create fails for now
    syncer.push("crm")
    (row,) = _rows(store, entity_type="order")
    assert (row["status"], row["blocked_why"]) == ("blocked", "create")
    assert row["next_attempt_at"] - row["updated_at"] <= dt.timedelta(seconds=outbox.RECHECK["create"])
    # when the re-check is due the row is claimed and decided again (it blocks again: still no contact)
    later = row["next_attempt_at"] + dt.timedelta(seconds=1)
    cl = outbox.claim(store, "crm", instance="a", ttl=300, now=later)
    assert row["id"] in [r["id"] for r in cl.rows]


def _missed_wake_up(store: Store) -> int:
    """A row blocked on a contact that is bound in the CRM: what a missed wake-up leaves."""
    syncer, remote = _order_and_buyer(store)
    syncer.push("crm")                                   # contact and deal written, linked
    contact, deal = (_rows(store, entity_type=k)[0] for k in ("person", "order"))
    with store.begin() as c:
        c.execute(t.outbox.update().where(t.outbox.c.id == deal["id"]).values(
            status="blocked", blocked_on=contact["entity_id"], blocked_why="create",
            next_attempt_at=utcnow() + dt.timedelta(days=365)))
    return deal["id"]


def test_the_sweep_finds_and_wakes_a_write_blocked_on_a_record_that_exists(store: Store) -> None:
    rid = _missed_wake_up(store)
    with store.read() as c:
        assert outbox.stale_blocked(c) == 1
    with store.begin() as c:
        assert outbox.sweep(c) == 1
    with store.read() as c:
        assert outbox.stale_blocked(c) == 0
    (row,) = _rows(store, id=rid)
    assert row["status"] == "pending"


def test_a_write_blocked_on_a_record_read_back_by_a_pull_is_woken_after_the_pull_commits(store: Store) -> None:
    """The pull that reads the contact back wakes what waits for it (in its transaction, and once
    more after its commit)."""
    syncer, remote = _order_and_buyer(store, policy=SLOW_RETRY)
    remote["crm"].faults.extend(["lost"] * POLICY.inline_tries)   # created, every answer lost
    syncer.push("crm")
    assert _rows(store, entity_type="order")[0]["status"] == "blocked"
    syncer.pull("crm", "person")                         # read back: bound by its stamp
    assert _rows(store, entity_type="order")[0]["status"] == "pending"
    syncer.push("crm")
    assert _deal_links_its_contact(remote) and remote["crm"].creates == 2


def test_pushers_and_pullers_in_threads_leave_nothing_blocked(db_url: str) -> None:
    """Four pushers and a puller on their own connections, 60 orders whose buyers arrive with
    them: every deal arrives linked to its contact, once; nothing waits."""
    store = Store(db_url)
    syncer, remote = make_world(store, systems=("crm", "shop"), policy=POLICY)
    n = 60
    for i in range(n):
        remote["shop"].edit("person", f"u{i}", **person(name=f"Клиент {i}", email=f"c{i}@example.ru"))
        remote["shop"].edit("order", f"o{i}", number=f"N-{i}", status="N", total="100", customer_id=f"u{i}")
    stop = threading.Event()
    errors: list[BaseException] = []

    def pusher(name: str) -> None:
        own = Store(db_url, create=False)
        p = Pusher(own, syncer.mapper, syncer.connectors, worker=name, policy=POLICY)
        try:
            while not stop.is_set():
                p.push("crm", limit=3)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=pusher, args=(f"p{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for kind in ("order", "person", "order", "person"):   # orders first: their buyers come later
        syncer.pull("shop", kind)
    deadline = utcnow() + dt.timedelta(seconds=60)
    while utcnow() < deadline and (store.count("outbox", status="pending") or store.count("outbox", status="sending")
                                   or store.count("outbox", status="blocked")):
        threading.Event().wait(0.2)
    stop.set()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert store.count("outbox", status="blocked") == 0, _rows(store, status="blocked")[:3]
    crm = remote["crm"]
    assert len(crm.objects["person"]) == n and len(crm.objects["order"]) == n
    owner = {o["number"]: o.get("customer_id") for o in crm.objects["order"].values()}
    names = {ext: o["email"] for ext, o in crm.objects["person"].items()}
    assert all(names.get(owner[f"N-{i}"]) == f"c{i}@example.ru" for i in range(n)), "a deal lost its contact"
    store.close()


def test_a_pull_binding_a_record_a_confirm_bound_meanwhile_is_taken_in_again(pg_url: str) -> None:
    """A pull reads the contact syncd just created before that write's confirm committed: its batch
    meets the confirm's binding. It is taken in again (one entity, no crash), not failed."""
    store = Store(pg_url)
    try:
        syncer, remote = make_world(store, systems=("crm", "shop"), policy=POLICY)
        remote["shop"].edit("person", "u1", **person(name="Анна", email="anna@example.ru"))
        syncer.pull("shop", "person")
        cl = outbox.claim(store, "crm", instance="a", ttl=300)
        (ready,) = _decide(syncer, cl)
        res = syncer.connectors["crm"].write(ready.op)
        from syncd.pipeline import identify as identify_mod

        real = identify_mod.identify
        done = []

        def identify_then_confirm(batch: Any, parsed: Any) -> Any:
            out = real(batch, parsed)
            if not done:                       # the confirm commits now, after the pull has decided
                done.append(1)
                other = Store(pg_url, create=False)
                with other.begin() as c:
                    confirm.confirmed(c, syncer.mapper, cl.rows[0], cl.token, ready, res, link_wait=600)
                other.close()
            return out

        identify_mod.identify = identify_then_confirm   # type: ignore[assignment]
        try:
            counts = syncer.pull("crm", "person")
        finally:
            identify_mod.identify = real                    # type: ignore[assignment]
        assert counts.failed == 0 and done
        with store.read() as c:
            n = c.execute(select(t.bindings).where(t.bindings.c.system == "crm")).all()
        assert len(n) == 1 and store.count("entities", type="person") == 1
    finally:
        store.close()


def test_instances_started_together_on_a_fresh_database_all_start(pg_url: str) -> None:
    stores: list[Store] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            stores.append(Store(pg_url))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    assert len(stores) == 4 and all(s.ping() for s in stores)
    with stores[0].read() as c:
        assert c.execute(select(t.outbox.c.id).limit(1)).all() == []
    for s in stores:
        s.close()


def test_a_bare_insert_of_a_row_waiting_on_nothing_present_is_not_stale(store: Store) -> None:
    """stale_blocked counts only rows whose awaited record is there (a control for the sweep test)."""
    syncer, _remote = _order_and_buyer(store)
    (row,) = _rows(store, entity_type="order")
    (person_row,) = _rows(store, entity_type="person")
    with store.begin() as c:
        c.execute(t.outbox.update().where(t.outbox.c.id == row["id"]).values(
            status="blocked", blocked_on=person_row["entity_id"], blocked_why="create"))
        assert outbox.stale_blocked(c) == 0
        c.execute(insert(t.bindings).values(system="crm", type="person", external_id="x1",
                                            entity_id=person_row["entity_id"], created_at=utcnow()))
        assert outbox.stale_blocked(c) == 1


def _notice_world(store: Store) -> tuple[Any, dict[str, Any]]:
    from syncd.sandbox.memory import MemoryConnector, MemorySystem
    from syncd.sync import Syncer

    doc = mapping_doc(systems=("crm", "shop"))
    doc["maps"].append({"system": "crm", "kind": "notify", "entity": "notice", "create": True, "direction": "push",
                        "only_when": {"notice.system": "crm"},
                        "fields": {"notice.user": "user", "notice.text": "text"}})
    ms = parse_mapping_doc(doc, "test")
    validate_set(ms)
    remote = {"crm": MemorySystem("crm", ("person", "order", "notify")), "shop": MemorySystem("shop")}
    syncer = Syncer(store, Mapper(ms), {s: MemoryConnector(s, remote[s]) for s in remote}, policy=POLICY)
    return syncer, remote


def test_a_new_deal_notice_waits_for_the_deals_confirm_when_a_pull_read_the_deal_first(store: Store) -> None:
    """Issue 20's benchmark found it: the CRM's event-triggered pull read syncd's own new deal back
    (bound by its stamp) before the push confirmed it, and the 'new deal' notice was dropped as
    'the deal existed before syncd'. It must wait for the confirm, then go — once."""
    from syncd.pipeline.engine import RuleEffects
    from syncd.rules.timers import notice

    syncer, remote = _notice_world(store)
    remote["shop"].edit("order", "o1", number="B-1", status="N", total="300")
    syncer.pull("shop", "order")
    cl = outbox.claim(store, "crm", instance="a", ttl=300)
    (ready,) = _decide(syncer, cl)
    res = syncer.connectors["crm"].write(ready.op)                 # the deal is made ...
    syncer.pull("crm", "order")                                     # ... and read back before its confirm
    order = store.find_entity("shop", "order", "o1")
    syncer.engine.apply_effects({"": RuleEffects(creates=[notice("crm", "7", "Новая сделка", "defaults order",
                                                                 order, on="created")])})
    syncer.push("crm")
    assert remote["crm"].objects["notify"] == {}, "the notice went before syncd knew the deal was its own"
    (waiting,) = _rows(store, entity_type="notice")
    assert (waiting["status"], waiting["blocked_why"]) == ("blocked", "confirm"), waiting
    with store.begin() as c:
        confirm.confirmed(c, syncer.mapper, cl.rows[0], cl.token, ready, res, link_wait=600)
    syncer.push("crm")
    assert [n["text"] for n in remote["crm"].objects["notify"].values()] == ["Новая сделка"]


def test_a_new_deal_notice_is_not_sent_for_a_deal_that_existed(store: Store) -> None:
    """A re-install: the deal is found by its key (a create that found it, or a pull that read it):
    not news."""
    from syncd.pipeline.engine import RuleEffects
    from syncd.rules.timers import notice

    syncer, remote = _notice_world(store)
    remote["shop"].edit("order", "o1", number="B-1", status="N", total="300")
    syncer.pull("shop", "order")
    order = store.find_entity("shop", "order", "o1")
    # a previous install made the deal: it carries the key syncd stamps
    cl = outbox.claim(store, "crm", instance="a", ttl=300)
    (ready,) = _decide(syncer, cl)
    remote["crm"].edit("order", "old-1", number="B-1", **{STAMP: ready.op.external_key})
    outbox.release(store, [cl.rows[0]["id"]], cl.token)
    syncer.engine.apply_effects({"": RuleEffects(creates=[notice("crm", "7", "Новая сделка", "defaults order",
                                                                 order, on="created")])})
    syncer.until_quiet()
    assert remote["crm"].creates == 0 and len(remote["crm"].objects["order"]) == 1
    assert remote["crm"].objects["notify"] == {}, "a notice for a deal that existed"


@pytest.mark.parametrize("how", ["inline retry", "next claim", "read back first"])
def test_a_new_deal_whose_create_answer_was_lost_still_gets_its_notice_once(store: Store, how: str) -> None:
    """The scale test found it: the portal made the deal but its answer was lost; the retry (inline,
    or by the next claim) found the deal by syncd's key — or a pull read it back first, bound by its
    stamp, while the create waited for its retry. It is syncd's own deal all the same: the
    manager's notice goes, exactly once, and only after the create is confirmed."""
    from syncd.pipeline.engine import RuleEffects
    from syncd.rules.timers import notice

    syncer, remote = _notice_world(store)
    if how != "inline retry":
        # the retry waits (backoff) until the test makes it due
        syncer.pusher.policy = PushPolicy(base_delay=60.0, inline_wait_max=0.0, claim_ttl=300, inline_tries=1)
        syncer.pusher.backoff = confirm.Backoff(syncer.pusher.policy.max_attempts, 60.0, 60.0)
    remote["shop"].edit("order", "o1", number="B-1", status="N", total="300")
    syncer.pull("shop", "order")
    order = store.find_entity("shop", "order", "o1")
    syncer.engine.apply_effects({"": RuleEffects(creates=[notice("crm", "7", "Новая сделка", "defaults order",
                                                                 order, on="created")])})
    remote["crm"].faults.append("lost")                 # the deal is made; its answer never comes
    syncer.push("crm")
    assert len(remote["crm"].objects["order"]) == 1
    if how != "inline retry":
        assert remote["crm"].objects["notify"] == {}, "the notice went before the create was confirmed"
    if how == "read back first":
        syncer.pull("crm", "order")                     # read back by its stamp before the retry
        syncer.push("crm")
        assert remote["crm"].objects["notify"] == {}, "the notice went before the create was confirmed"
    with store.begin() as c:                            # the retry is due now
        c.execute(update(t.outbox).where(t.outbox.c.status == "pending").values(next_attempt_at=utcnow()))
    syncer.push("crm")                                  # the retry finds the deal by its key
    syncer.until_quiet()
    assert len(remote["crm"].objects["order"]) == 1
    assert [n["text"] for n in remote["crm"].objects["notify"].values()] == ["Новая сделка"]


def test_two_instances_identifying_the_same_person_at_once_make_one_entity(store: Store) -> None:
    """The scale test on PostgreSQL: one instance took in the shop's buyer while the other took in
    the manager's CRM contact with the same e-mail; neither saw the other's uncommitted entity, so
    two entities — and later a second contact — were made. Identification of a type is serialised:
    the second waits for the first to commit and then matches it."""
    from syncd.connector import RawRecord
    from syncd.store import Store as _Store

    syncer, _ = make_world(store, systems=("crm", "shop"))
    other = _Store(store.url, create=False)
    try:
        from syncd.pipeline.engine import Engine

        engine_b = Engine(other, syncer.mapper)
        first_in = threading.Event()

        def instance_a() -> None:
            with store.begin() as c:
                syncer.engine.ingest_in(c, "shop", [RawRecord("person", "s1", person(email="Olga@Example.ru"), "1")])
                first_in.set()
                time.sleep(1.0)                   # still not committed while the other identifies

        a = threading.Thread(target=instance_a)
        a.start()
        assert first_in.wait(10)
        engine_b.ingest("crm", Batch("person", [RawRecord("person", "c1", person(email="olga@example.ru"), "1")]))
        a.join(10)
        assert store.find_entity("shop", "person", "s1") == store.find_entity("crm", "person", "c1"), \
            "two entities for one person"
    finally:
        other.close()


def test_a_new_deal_made_just_before_a_kill_9_still_gets_its_notice_once(store: Store) -> None:
    """The scale test on SQLite: the process died after the portal made the deal and before the
    confirm; the next start took its claims back and the retry found the deal by its key — syncd's
    own, so the manager's notice goes, once."""
    from syncd.pipeline.engine import RuleEffects
    from syncd.rules.timers import notice

    syncer, remote = _notice_world(store)
    remote["shop"].edit("order", "o1", number="B-1", status="N", total="300")
    syncer.pull("shop", "order")
    cl = outbox.claim(store, "crm", instance="dead-one", ttl=300)
    (ready,) = _decide(syncer, cl)
    syncer.connectors["crm"].write(ready.op)                       # made; then kill -9, no confirm
    order = store.find_entity("shop", "order", "o1")
    syncer.engine.apply_effects({"": RuleEffects(creates=[notice("crm", "7", "Новая сделка", "defaults order",
                                                                 order, on="created")])})
    assert outbox.reclaim(store, "dead-one") == 1                  # the next start takes its claims back
    syncer.push("crm")
    syncer.until_quiet()
    assert len(remote["crm"].objects["order"]) == 1
    assert [n["text"] for n in remote["crm"].objects["notify"].values()] == ["Новая сделка"]
