"""The engine against in-memory systems: create, echo, dedup, conflicts, stale changes, crashes."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from factories import make_mapper, make_world, person
from syncd.pipeline import outbox, settle
from syncd.pipeline.push import PushPolicy
from syncd.sandbox.memory import SimulatedCrash
from syncd.store import Store
from syncd.store import tables as t


def _objects(system, kind="person"):
    return {k: {f: v for f, v in o.items() if f != "_stamp"} for k, o in system.objects[kind].items()}


def test_new_person_in_crm_reaches_shop_and_onec_once(store: Store) -> None:
    syncer, remote = make_world(store)
    remote["crm"].edit("person", "c1", **person(phone="8 (495) 123-45-67"))
    syncer.until_quiet()
    for s in ("shop", "onec"):
        objs = _objects(remote[s])
        assert list(objs.values()) == [{"name": "Иван Петров", "email": "ivan@example.ru",
                                        "phone": "8 (495) 123-45-67"}]
    assert store.count("entities", type="person", hold=None) == 1
    # no echo: another full pass plans and pushes nothing
    c = syncer.pass_once()
    assert (c.planned, c.pushed, c.updated, c.created) == (0, 0, 0, 0)


def test_edit_propagates_and_is_not_echoed(store: Store) -> None:
    syncer, remote = make_world(store)
    remote["shop"].edit("person", "s1", **person())
    syncer.until_quiet()
    crm_id = next(iter(remote["crm"].objects["person"]))
    remote["crm"].edit("person", crm_id, comment="VIP, звонить после 18:00")
    syncer.until_quiet()
    assert remote["shop"].objects["person"]["s1"]["comment"] == "VIP, звонить после 18:00"
    writes = {s: remote[s].writes for s in remote}
    assert syncer.pass_once().pushed == 0
    assert {s: remote[s].writes for s in remote} == writes


@pytest.mark.parametrize("spellings", [
    ("8 (495) 123-45-67", "+7 495 1234567", "74951234567"),
])
def test_phone_spellings_bind_to_one_person(store: Store, spellings: tuple[str, ...]) -> None:
    syncer, remote = make_world(store)
    remote["crm"].edit("person", "c1", **person(name="Анна", email=None, phone=spellings[0]))
    syncer.until_quiet()
    remote["shop"].edit("person", "s-extra", **person(name="Анна", email=None, phone=spellings[1]))
    syncer.until_quiet()
    # the shop already had a record bound (created by syncd), so the second shop record is ambiguous
    # with it: it must go to review, never a silent merge or a duplicate
    assert store.count("entities", type="person", hold=None) == 1
    assert len(store.list_review()) == 1


def test_email_case_and_phone_spelling_match_across_systems(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["crm"].edit("person", "c1", **person(email="Ivan@Example.RU", phone="8 (495) 123-45-67"))
    remote["shop"].edit("person", "s1", **person(email="ivan@example.ru ", phone="74951234567"))
    syncer.pull("crm", "person")
    syncer.pull("shop", "person")
    assert store.count("entities", type="person", hold=None) == 1
    eid = store.find_entity("crm", "person", "c1")
    assert eid == store.find_entity("shop", "person", "s1")


def test_ambiguous_match_goes_to_review(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["crm"].edit("person", "c1", **person(name="A", email="a@example.ru", phone=None))
    remote["crm"].edit("person", "c2", **person(name="B", email="b@example.ru", phone="+74951112233"))
    syncer.pull("crm", "person")
    remote["shop"].edit("person", "s1", **person(name="AB", email="a@example.ru", phone="84951112233"))
    syncer.pull("shop", "person")
    items = store.list_review()
    assert len(items) == 1 and items[0]["external_id"] == "s1"
    assert "ambiguous" in items[0]["reason"]
    assert store.count("entities", type="person", hold=None) == 2


def test_new_customer_from_1c_goes_to_review(store: Store) -> None:
    syncer, remote = make_world(store)
    remote["onec"].edit("person", "1c-guid-1", **person(name="ООО Неизвестный", email="x@y.ru"))
    syncer.pull("onec", "person")
    assert store.count("entities", type="person", hold=None) == 0
    item = store.list_review()[0]
    assert "may not introduce" in item["reason"] and item["system"] == "onec"
    # a human decides: create it after all
    eid = settle.resolve_review(syncer.engine, item["id"], create=True)
    assert store.entity(eid)["fields"]["person.email"] == "x@y.ru"
    assert store.list_review() == []


def test_owner_policy_keeps_shop_status(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["shop"].edit("order", "o1", number="1042", status="N", total="5880.00")
    syncer.until_quiet()
    crm_id = next(iter(remote["crm"].objects["order"]))
    assert remote["crm"].objects["order"][crm_id]["status"] == "NEW"
    remote["crm"].edit("order", crm_id, status="WON")            # a manager's edit of a shop-owned field
    syncer.until_quiet()
    assert remote["crm"].objects["order"][crm_id]["status"] == "NEW"   # owner wins, pushed back
    conflicts = [c for c in _conflicts(store) if c["field"] == "order.status"]
    assert conflicts and conflicts[-1]["winner"] == "shop"
    remote["shop"].edit("order", "o1", status="P")
    syncer.until_quiet()
    assert remote["crm"].objects["order"][crm_id]["status"] == "PREPAYMENT_INVOICE"


def _conflicts(store: Store) -> list[dict]:
    with store.engine.connect() as c:
        return [dict(r) for r in c.execute(select(t.conflicts).order_by(t.conflicts.c.id)).mappings()]


def test_priority_policy(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["shop"].edit("person", "s1", **person(phone="+74950000001"))
    syncer.until_quiet()
    crm_id = next(iter(remote["crm"].objects["person"]))
    remote["shop"].edit("person", "s1", phone="+74950000002")
    remote["crm"].edit("person", crm_id, phone="+74950000003")
    syncer.until_quiet()
    # crm is first in the priority list, whichever was edited last
    assert remote["shop"].objects["person"]["s1"]["phone"] == "+74950000003"
    assert remote["crm"].objects["person"][crm_id]["phone"] == "+74950000003"


def test_newest_policy_uses_source_time(store: Store) -> None:
    import datetime as dt

    from syncd.connector import Batch, RawRecord

    syncer, remote = make_world(store, systems=("crm", "shop"))
    t0 = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone.utc)
    eng = syncer.engine
    eng.ingest("shop", Batch("person", [RawRecord("person", "s1", person(), "1", t0)]))
    syncer.push("crm")
    crm_id = store.external_id(store.find_entity("shop", "person", "s1"), "crm")
    # both change the comment; the crm change is older at the source but observed later
    eng.ingest("shop", Batch("person", [RawRecord("person", "s1", {"comment": "shop"}, "2",
                                                  t0 + dt.timedelta(minutes=5))]))
    eng.ingest("crm", Batch("person", [RawRecord("person", crm_id, {"comment": "crm"}, "9",
                                                 t0 + dt.timedelta(minutes=1))]))
    eid = store.find_entity("shop", "person", "s1")
    assert store.entity(eid)["fields"]["person.comment"] == "shop"


def test_review_policy_holds_only_that_field(store: Store) -> None:
    mapper = make_mapper(conflicts={"person.comment": {"policy": "review"}, "*": {"policy": "newest"}},
                         systems=("crm", "shop"))
    syncer, remote = make_world(store, systems=("crm", "shop"), mapper=mapper)
    remote["shop"].edit("person", "s1", **person(comment="first"))
    syncer.until_quiet()
    crm_id = next(iter(remote["crm"].objects["person"]))
    remote["shop"].edit("person", "s1", comment="from shop", name="Иван П.")
    remote["crm"].edit("person", crm_id, comment="from crm")
    syncer.until_quiet()
    # the other field still flowed
    assert remote["crm"].objects["person"][crm_id]["name"] == "Иван П."
    open_ = store.list_conflicts()
    assert len(open_) == 1 and open_[0]["field"] == "person.comment"
    assert remote["crm"].objects["person"][crm_id]["comment"] == "from crm"
    assert remote["shop"].objects["person"]["s1"]["comment"] == "from shop"
    settle.resolve_conflict(syncer.engine, open_[0]["id"], take="crm")
    syncer.until_quiet()
    assert remote["shop"].objects["person"]["s1"]["comment"] == "from crm"
    assert store.list_conflicts() == []


def test_stale_change_is_dropped(store: Store) -> None:
    from syncd.connector import Batch, RawRecord

    syncer, _ = make_world(store, systems=("crm", "shop"))
    eng = syncer.engine
    eng.ingest("shop", Batch("person", [RawRecord("person", "s1", person(comment="v5"), "5")]))
    c = eng.ingest("shop", Batch("person", [RawRecord("person", "s1", {"comment": "v3"}, "3")]))
    assert c.skipped == 1
    eid = store.find_entity("shop", "person", "s1")
    assert store.entity(eid)["fields"]["person.comment"] == "v5"


def test_bad_value_is_quarantined_and_batch_goes_on(store: Store) -> None:
    from syncd.connector import Batch, RawRecord

    syncer, _ = make_world(store, systems=("crm", "shop"))
    c = syncer.engine.ingest("shop", Batch("order", [
        RawRecord("order", "o1", {"number": "1", "status": "UNKNOWN", "total": "10"}),
        RawRecord("order", "o2", {"number": "2", "status": "N", "total": "abc"}),
        RawRecord("order", "o3", {"number": "3", "status": "N", "total": "10.50"}),
    ]))
    assert c.quarantined == 2 and c.created == 1
    reasons = sorted(q["reason"] for q in store.list_quarantine())
    assert "o1" in reasons[0] + reasons[1] and "unknown value 'UNKNOWN'" in " ".join(reasons)
    assert any("order.total" in r for r in reasons)


def test_refs_follow_bindings(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["shop"].edit("person", "s1", **person())
    remote["shop"].edit("order", "o1", number="1042", status="N", total="100", customer_id="s1")
    syncer.until_quiet()
    crm_person = next(iter(remote["crm"].objects["person"]))
    crm_order = next(iter(remote["crm"].objects["order"].values()))
    assert crm_order["customer_id"] == crm_person


def test_transient_errors_retry_then_dead_letter_and_replay(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"),
                                policy=PushPolicy(max_attempts=2, inline_tries=2, base_delay=0.0,
                                                  inline_wait_max=0.0))
    remote["shop"].edit("person", "s1", **person())
    remote["crm"].faults[:] = ["transient"] * 4
    syncer.pull("shop", "person")
    for _ in range(3):
        syncer.push("crm")
    dead = store.list_outbox("dead")
    assert len(dead) == 1 and "gave up after 2 attempts" in dead[0]["last_error"]
    assert json.loads(dead[0]["payload"])["person.email"] == "ivan@example.ru"
    assert outbox.replay(store) == 1
    syncer.push("crm")
    assert remote["crm"].creates == 1 and store.list_outbox("dead") == []


def test_permanent_error_dead_letters_at_once(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["shop"].edit("person", "s1", **person())
    remote["crm"].faults[:] = ["permanent"]
    syncer.pull("shop", "person")
    c = syncer.push("crm")
    assert c.dead == 1 and remote["crm"].creates == 0
    assert "injected validation error" in store.list_outbox("dead")[0]["last_error"]


def test_crash_between_remote_create_and_commit_creates_once(db_url: str) -> None:
    store = Store(db_url)
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["shop"].edit("person", "s1", **person())
    syncer.pull("shop", "person")
    remote["crm"].faults[:] = ["crash_after"]
    with pytest.raises(SimulatedCrash):
        syncer.push("crm")
    store.close()
    # restart: a new store object and a worker whose claim timeout has passed
    store2 = Store(db_url)
    syncer2, _ = make_world(store2, systems=("crm", "shop"), remote=remote,
                            policy=PushPolicy(claim_ttl=0.0, base_delay=0.0, inline_wait_max=0.0))
    syncer2.until_quiet()
    assert remote["crm"].creates == 1
    assert len(remote["crm"].objects["person"]) == 1
    assert store2.count("entities", type="person", hold=None) == 1
    store2.close()


def test_crash_then_pull_sees_stamped_record_first(db_url: str) -> None:
    """The remote record we created comes back in a pull before the push was confirmed."""
    store = Store(db_url)
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["shop"].edit("person", "s1", **person())
    syncer.pull("shop", "person")
    remote["crm"].faults[:] = ["crash_after"]
    with pytest.raises(SimulatedCrash):
        syncer.push("crm")
    syncer2, _ = make_world(store, systems=("crm", "shop"), remote=remote,
                            policy=PushPolicy(claim_ttl=0.0, base_delay=0.0, inline_wait_max=0.0))
    syncer2.pull("crm", "person")          # sees the stamped record: binds it, no new entity
    syncer2.until_quiet()
    assert store.count("entities", type="person", hold=None) == 1
    assert remote["crm"].creates == 1 and len(remote["shop"].objects["person"]) == 1
    store.close()


def test_rejected_record_keeps_its_line_in_quarantine(store: Store) -> None:
    from syncd.connector import Batch, RawRecord, Rejected

    syncer, _ = make_world(store, systems=("crm", "shop"))
    c = syncer.engine.ingest("shop", Batch("order", [
        Rejected("Сумма: not a number 'abc'", kind="order", external_id="o9", line=42, raw="<Документ>…"),
        RawRecord("order", "o1", {"number": "1", "status": "N", "total": "10"}),
    ]))
    assert c.quarantined == 1 and c.created == 1
    q = store.list_quarantine()[0]
    assert q["reason"].startswith("line 42: ") and q["raw"] == "<Документ>…" and q["external_id"] == "o9"


def test_a_rejected_record_without_an_id_is_quarantined_too(store: Store) -> None:
    """Issue 20: a batch holding only records that could not be read, none with an id, was
    acknowledged without a trace. Each goes to quarantine whole, the batch is counted as such."""
    from syncd.connector import Batch, Rejected

    syncer, _remote = make_world(store)
    counts = syncer.engine.ingest("onec", Batch("order", [
        Rejected("<Документ> без <Ид>", kind="order", external_id=None, line=7, raw="<Документ><Номер>102</Номер>"),
        Rejected("not XML", kind=None, external_id=None, raw=b"\x00\x01")]))
    assert counts.quarantined == 2
    items = store.list_quarantine()
    assert sorted(q["raw"] for q in items) == sorted(["<Документ><Номер>102</Номер>", "\\x00\x01"])
    assert [q["raw_bytes"] for q in items if q["raw_bytes"]] == [b"\x00\x01"]   # exactly, NUL and all
    assert any("line 7" in q["reason"] for q in items)


def test_second_record_of_one_system_goes_to_review_then_binds_as_alias(store: Store) -> None:
    """Two shop accounts of one customer: never merged silently; a person may say they are one."""
    syncer, remote = make_world(store, systems=("crm", "shop"))
    remote["crm"].edit("person", "c1", **person(phone="+74951234567"))
    syncer.until_quiet()                               # the CRM person reaches the shop (a shop user)
    remote["shop"].edit("person", "s-new", **person(name="Иван", email="IVAN@example.ru", phone=None))
    remote["shop"].edit("order", "o1", number="77", status="N", total="100", customer_id="s-new")
    syncer.until_quiet()
    item = store.list_review()[0]
    assert item["external_id"] == "s-new" and "already bound" in item["reason"]
    # the order waits for a person without a stand-in entity being invented for its buyer
    assert store.count("entities", type="person", hold=None) == 1
    eid = store.find_entity("crm", "person", "c1")
    settle.resolve_review(syncer.engine, item["id"], entity_id=eid)
    assert store.find_entity("shop", "person", "s-new") == eid
    primary = store.external_id(eid, "shop")
    assert primary != "s-new"                         # writes still go to the first shop record
    remote["shop"].edit("person", "s-new", comment="второй аккаунт")
    remote["shop"].edit("order", "o1", comment="перечитать")
    syncer.until_quiet()
    assert remote["crm"].objects["person"]["c1"]["comment"] == "второй аккаунт"
    crm_order = next(iter(remote["crm"].objects["order"].values()))
    assert crm_order["customer_id"] == "c1"
    assert store.count("entities", type="person", hold=None) == 1


def test_a_record_no_map_may_create_elsewhere_is_counted_and_shown_not_skipped_silently(store: Store) -> None:
    """Issue 22 #1: the planner skipped records whose target map has no `create = true` and said
    nothing; they are counted (`uncreated`) on the run, /stats and the page."""
    from factories import mapping_doc
    from syncd.mapping import Mapper, parse_mapping_doc
    from syncd.mapping.load import validate_set
    from syncd.store.stats import collect

    doc = mapping_doc(systems=("crm", "shop"))
    for m in doc["maps"]:
        if m["system"] == "crm":
            m["create"] = False
    ms = parse_mapping_doc(doc, "test")
    validate_set(ms)
    syncer, remote = make_world(store, systems=("crm", "shop"), mapper=Mapper(ms))
    remote["shop"].edit("person", "s1", **person())
    counts = syncer.pull("shop", "person")
    syncer.push("crm")
    assert counts.uncreated == 1 and remote["crm"].objects["person"] == {}
    stats = collect(store, ["shop", "crm"])
    assert stats["integrations"]["shop"]["last_24h"]["uncreated"] == 1
