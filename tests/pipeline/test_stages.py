"""Each stage of the engine alone: its input built directly, its output checked (issue 23).

The chain as a whole is tested everywhere else (test_engine, test_write_path, the acceptance
suites); these pin what each stage promises the next one, so a stage can be read and changed alone.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from factories import make_mapper, person
from syncd.connector import RawRecord, Rejected
from syncd.pipeline import canonical, hold, identify, plan, record, resolve, rules
from syncd.pipeline.batch import Batch, Ent, Identified, RuleEffects, RuleInput, Setup
from syncd.store import Store
from syncd.store import tables as t


@pytest.fixture
def setup(store: Store) -> Setup:
    return Setup(store, make_mapper(), "RU")


def _batch(setup: Setup, conn: Any, system: str = "shop") -> Batch:
    return Batch(setup, conn, system, "run1", "people")


def _known(setup: Setup, system: str, ext: str, fields: dict[str, Any], *, shadow: dict[str, Any] | None = None,
           version: str | None = None) -> str:
    """An entity syncd holds already, bound to `system`'s record `ext` (its shadow as given)."""
    with setup.store.begin() as c:
        b = _batch(setup, c, system)
        eid = b.new_entity("person")
        ents = {eid: b.new_ents[eid]}
        ents[eid].golden.update(fields)
        ents[eid].versions.update({k: [system, None, None] for k in fields})
        b.bind("person", ext, eid)
        b.flush_entities(ents)
        if shadow is not None:
            from syncd import schema
            c.execute(t.shadows.insert().values(entity_id=eid, system=system, fields=schema.encode(shadow),
                                                fingerprint="", source_version=version, updated_at=b.now))
    return eid


# -- canonical ---------------------------------------------------------------------------------------

def test_canonical_keeps_what_it_cannot_read_whole_and_names_it(setup: Setup) -> None:
    with setup.store.begin() as c:
        b = _batch(setup, c)
        out = canonical.parse(b, [
            RawRecord("person", "u1", {"name": "Анна", "email": "Anna@Example.ru"}),
            RawRecord("person", "u2", {"name": "Борис", "inn": "7707083894"}),       # a bad checksum
            Rejected("not XML", kind="person", external_id="u3", line=12, raw=b"<bad"),
            RawRecord("person", "u4", {"name": "Удалённый"}, deleted=True),
            RawRecord("invoice", "i1", {"n": 1}),                                    # no map reads it
        ])
    assert [(r.external_id, et, f["person.email"]) for r, et, f in out.records] == [("u1", "person", "Anna@Example.ru")]
    assert [(x.external_id, x.reason.split(":")[0]) for x in out.bad] == [("u2", "shop person u2"), ("u3", "line 12")]
    assert out.bad[0].raw == {"name": "Борис", "inn": "7707083894"} and out.bad[0].record is not None
    assert out.bad[1].raw == b"<bad" and out.bad[1].record is None
    assert b.counts.skipped == 2                     # the deletion and the unmapped kind: said, not lost


# -- identify ----------------------------------------------------------------------------------------

def test_identify_binds_by_match_key_makes_new_ones_and_sends_the_ambiguous_to_review(setup: Setup) -> None:
    anna = _known(setup, "crm", "c1", {"person.name": "Анна", "person.email": "anna@example.ru"})
    for ext in ("c2", "c3"):
        _known(setup, "crm", ext, {"person.name": "Двойник", "person.email": "twin@example.ru"})
    with setup.store.begin() as c:
        b = _batch(setup, c)
        parsed = canonical.parse(b, [RawRecord("person", "u1", person(name="Анна", email="ANNA@example.ru")),
                                     RawRecord("person", "u2", person(name="Новый", email="new@example.ru")),
                                     RawRecord("person", "u3", person(name="Двойник", email="twin@example.ru"))])
        b.load_bindings({("person", r.external_id) for r, _e, _f in parsed.records})
        out = identify.identify(b, parsed.records)
        b.flush_entities(b.new_ents)
    assert [type(x) for x in out] == [Identified] * 3
    assert out[0].eid == anna and not out[0].created
    assert out[1].eid != anna and out[1].created and b.new_ents[out[1].eid].hold is None
    assert out[2].created and b.new_ents[out[2].eid].hold == "review"
    assert (b.counts.bound, b.counts.review) == (1, 1)
    with setup.store.read() as c:
        how = {r.external_id: r.how for r in c.execute(select(t.bindings.c.external_id, t.bindings.c.how)
                                                        .where(t.bindings.c.system == "shop"))}
    assert how == {"u1": "key:email", "u2": "read", "u3": "review"}


# -- record --------------------------------------------------------------------------------------------

def test_record_diffs_against_the_shadow_and_drops_a_stale_version(setup: Setup) -> None:
    eid = _known(setup, "shop", "u1", {"person.name": "Анна", "person.email": "anna@example.ru"},
                 shadow={"person.name": "Анна", "person.email": "anna@example.ru"}, version="5")
    with setup.store.begin() as c:
        b = _batch(setup, c)
        ent = b.load_entities([eid])[eid]
        same = Identified(eid, RawRecord("person", "u1", {}, version="6"), "person",
                          {"person.name": "Анна", "person.email": "anna@example.ru"}, False)
        rec = record.Recorder(b, [same])
        assert rec.take(same, ent) is None                       # read again unchanged: no change
        edit = Identified(eid, RawRecord("person", "u1", {}, version="7"), "person",
                          {"person.name": "Анна К.", "person.email": "anna@example.ru"}, False)
        change = rec.take(edit, ent)
        assert change is not None and change.changes == {"person.name": "Анна К."} and not change.first
        old = Identified(eid, RawRecord("person", "u1", {}, version="3"), "person", {"person.name": "Старое"}, False)
        assert rec.take(old, ent) is None                         # older than what was applied: dropped
        assert b.counts.skipped == 2 and json.loads(b.changelog[0]["fields"]) == {"person.name": "Анна К."}
        rec.write()
    with setup.store.read() as c:
        sv = c.execute(select(t.shadows.c.source_version).where(t.shadows.c.entity_id == eid)).scalar()
    assert sv == "7"


# -- resolve -------------------------------------------------------------------------------------------

def _change(eid: str, changes: dict[str, Any], shadow: dict[str, Any], *, first: bool = False,
            statement: bool = False) -> resolve.Change:
    return resolve.Change(eid, RawRecord("person", "u1", {}, statement=statement), changes, shadow, first,
                          complete=True, created=False)


def test_resolve_at_first_contact_fills_blanks_and_never_wipes(setup: Setup) -> None:
    with setup.store.begin() as c:
        b = _batch(setup, c)
        ent = Ent("e1", "person", {"person.name": "Анна", "person.phone": ("+74951234567",)},
                  {"person.name": ["crm", None, None], "person.phone": ["crm", None, None]})
        applied = resolve.apply(b, ent, _change("e1", {"person.name": "", "person.phone": (),
                                                       "person.email": "anna@example.ru"}, {}, first=True), {})
    assert applied == {"person.email": "anna@example.ru"}
    assert ent.golden["person.name"] == "Анна" and ent.golden["person.phone"] == ("+74951234567",)


def test_resolve_at_first_contact_keeps_a_documents_lines_a_blank_list_would_wipe(setup: Setup) -> None:
    from decimal import Decimal

    from syncd.schema import FrozenDict

    lines = (FrozenDict({"name": "Кружка", "quantity": Decimal("2"), "price": Decimal("450")}),)
    with setup.store.begin() as c:
        b = _batch(setup, c, "crm")
        ent = Ent("o1", "order", {"order.items": lines}, {"order.items": ["shop", None, None]})
        change = resolve.Change("o1", RawRecord("order", "d1", {}), {"order.items": ()}, {}, True, complete=True,
                                created=False)
        assert resolve.apply(b, ent, change, {}) == {}
    assert ent.golden["order.items"] == lines           # the vendor's deal without rows takes the order's


def test_resolve_keeps_the_line_members_a_system_cannot_carry(store: Store) -> None:
    """A CRM whose lines carry no product link (RetailCRM's order lines) changes a quantity: the
    line keeps the shop's product; a line it adds has none to keep."""
    from decimal import Decimal

    from factories import mapping_doc
    from syncd.mapping import Mapper, parse_mapping_doc
    from syncd.mapping.load import validate_set
    from syncd.schema import FrozenDict

    doc = mapping_doc(systems=("crm", "shop"))
    for m in doc["maps"]:
        if m["kind"] == "order":
            m["fields"]["order.items"] = {"field": "items", "list": "replace", "items": (
                {"product": "product", "name": "name", "quantity": "qty"} if m["system"] == "shop"
                else {"name": "name", "quantity": "qty"})}
    doc["maps"] += [{"system": "shop", "kind": "product", "entity": "product", "fields": {"product.name": "name"}}]
    doc["identity"]["product"] = {"keys": [], "origin": ["shop"]}
    ms = parse_mapping_doc(doc, "test")
    validate_set(ms)
    setup = Setup(store, Mapper(ms), "RU")
    lines = (FrozenDict({"product": "p-mug", "name": "Кружка", "quantity": Decimal("2")}),
             FrozenDict({"product": "p-pot", "name": "Чайник", "quantity": Decimal("1")}))
    edited = (FrozenDict({"name": "Кружка", "quantity": Decimal("5")}), FrozenDict({"name": "Чайник", "quantity": Decimal("1")}),
              FrozenDict({"name": "Ложка", "quantity": Decimal("1")}))
    with setup.store.begin() as c:
        b = _batch(setup, c, "crm")
        ent = Ent("o1", "order", {"order.items": lines}, {"order.items": ["shop", None, None]})
        change = resolve.Change("o1", RawRecord("order", "d1", {}), {"order.items": edited},
                                {"order.items": tuple(FrozenDict({k: v for k, v in x.items() if k != "product"})
                                                      for x in lines)}, False, complete=True, created=False)
        resolve.apply(b, ent, change, {})
    assert [(x.get("product"), x["name"], x["quantity"]) for x in ent.golden["order.items"]] == [
        ("p-mug", "Кружка", Decimal("5")), ("p-pot", "Чайник", Decimal("1")), (None, "Ложка", Decimal("1"))]


def test_resolve_takes_an_edit_in_step_and_holds_a_field_under_review(setup: Setup) -> None:
    with setup.store.begin() as c:
        b = _batch(setup, c)
        ent = Ent("e1", "person", {"person.name": "Анна", "person.comment": "спор"},
                  {"person.name": ["shop", None, None], "person.comment": ["crm", None, None]})
        applied = resolve.apply(b, ent, _change("e1", {"person.name": "Анна К.", "person.comment": "другое"},
                                                {"person.name": "Анна", "person.comment": "спор"}),
                                {"person.comment": 999})        # an open conflict: a candidate, not a change
    assert applied == {"person.name": "Анна К."} and ent.golden["person.comment"] == "спор"
    assert ent.versions["person.name"][0] == "shop"


def test_a_statement_fills_blanks_and_never_rewrites(setup: Setup) -> None:
    with setup.store.begin() as c:
        b = _batch(setup, c)
        ent = Ent("e1", "person", {"person.name": "Анна Каренина"}, {"person.name": ["crm", None, None]})
        applied = resolve.apply(b, ent, _change("e1", {"person.name": "Аня", "person.comment": "перезвоните"}, {},
                                                first=True, statement=True), {})
    assert applied == {"person.comment": "перезвоните"} and ent.golden["person.name"] == "Анна Каренина"


# -- rules and plan ------------------------------------------------------------------------------------

def test_rules_see_what_changed_and_their_decisions_are_syncds_own_changes(setup: Setup) -> None:
    seen: list[RuleInput] = []

    def hook(inp: RuleInput) -> RuleEffects | None:
        seen.append(inp)
        return RuleEffects(updates={"person.comment": "VIP"})

    with setup.store.begin() as c:
        b = Batch(Setup(setup.store, setup.mapper, "RU", rules=hook), c, "shop", None, None)
        ents = {"e1": Ent("e1", "person", {"person.name": "Анна"}, {}), "e2": Ent("e2", "person", {}, {}, hold="review")}
        touched = rules.run(b, ents, {"e1", "e2"}, {"e1": {"person.name": "Анна"}}, set())
    assert [(i.entity_id, i.changed, i.created) for i in seen] == [("e1", {"person.name": "Анна"}, False)]
    assert touched == {"e1", "e2"} and ents["e1"].golden["person.comment"] == "VIP"
    assert ents["e1"].versions["person.comment"][0] == "rules" and b.changelog[0]["origin"] == "rules"


def test_plan_queues_one_write_per_target_and_says_what_it_may_not_create(setup: Setup) -> None:
    mapper = setup.mapper
    for em in mapper.targets("person"):
        if em.system == "onec":
            object.__setattr__(em, "create", False)
    eid = _known(setup, "shop", "u1", {"person.name": "Анна", "person.email": "anna@example.ru"},
                 shadow={"person.name": "Анна", "person.email": "anna@example.ru"})
    with setup.store.begin() as c:
        b = _batch(setup, c)
        ents = b.load_entities([eid])
        n = plan.plan_batch(b, ents, {eid}, origin="pull:shop")
        rows = c.execute(select(t.outbox.c.system, t.outbox.c.op)).all()
    assert n == 1 and rows == [("crm", "create")]
    assert b.counts.uncreated == 1                   # 1C's map has no `create = true`: counted, said


def test_hold_keeps_a_quarantined_record_whole_and_stands_for_it(setup: Setup) -> None:
    with setup.store.begin() as c:
        b = _batch(setup, c)
        parsed = canonical.parse(b, [RawRecord("person", "u9", {"name": "Борис", "inn": "7707083894"}, raw="<Контрагент/>")])
        hold.quarantine(b, parsed.bad[0])
        b.flush_entities(b.new_ents)
        (eid,) = b.new_ents
    with setup.store.read() as c:
        q = c.execute(select(t.quarantine)).mappings().one()
        held = c.execute(select(t.entities.c.hold).where(t.entities.c.id == eid)).scalar()
    assert q["raw"] == "<Контрагент/>" and q["external_id"] == "u9" and "ИНН" in q["reason"] and held == "quarantine"
    assert hold.record_from_json(q["record"]).fields == {"name": "Борис", "inn": "7707083894"}
