"""A new lead or mail links to the one known person with its e-mail or phone (syncd/pipeline/link.py):
never to one of several, never to a new person, never through review."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from syncd.connector import Batch, RawRecord
from syncd.mapping import Mapper, parse_mapping_doc
from syncd.mapping.load import validate_set
from syncd.pipeline.engine import Engine
from syncd.pipeline.link import link_senders
from syncd.store import Store
from syncd.store import tables as t


def mapper() -> Mapper:
    doc = {
        "maps": [
            {"system": "crm", "kind": "contact", "entity": "person", "create": True,
             "fields": {"person.name": "name", "person.email": "email", "person.phone": "phone"}},
            {"system": "forms", "kind": "lead", "entity": "lead", "direction": "pull",
             "fields": {"lead.name": "name", "lead.email": "email", "lead.phone": "phone"}},
            {"system": "mail", "kind": "message", "entity": "message", "direction": "pull",
             "fields": {"message.subject": "subject", "message.sender": "from"}},
        ],
        "identity": {"person": {"keys": ["email", "phone"], "origin": ["crm"]}},
    }
    ms = parse_mapping_doc(doc, "test")
    validate_set(ms)
    return Mapper(ms)


def setup(store: Store) -> tuple[Engine, dict[str, str]]:
    eng = Engine(store, mapper())
    eng.ingest("crm", Batch("contacts", [
        RawRecord("contact", "1", {"name": "Ольга", "email": "olga@tea.example", "phone": "+79123456789"}),
        RawRecord("contact", "2", {"name": "Пётр", "email": "petr@tea.example"}),
        RawRecord("contact", "3", {"name": "Офис А", "phone": "+74950000001"}),
        RawRecord("contact", "4", {"name": "Офис Б"}),
    ]))
    # a manager types the office phone into a second contact: two persons share it, it names nobody
    eng.ingest("crm", Batch("contacts", [RawRecord("contact", "4", {"name": "Офис Б", "phone": "+74950000001"},
                                                   version="2")]))
    ids = {ext: store.find_entity("crm", "person", ext) for ext in "1234"}
    return eng, ids  # type: ignore[return-value]


def golden(store: Store, system: str, type_: str, ext: str) -> dict[str, Any]:
    eid = store.find_entity(system, type_, ext)
    assert eid is not None
    ent = store.entity(eid)
    assert ent is not None
    return ent["fields"]


def test_leads_and_mails_link_to_the_one_known_person(store: Store) -> None:
    eng, ids = setup(store)
    persons_before = _count(store, "person")
    eng.ingest("forms", Batch("posts", [
        RawRecord("lead", "a", {"name": "по почте", "email": "OLGA@tea.example"}),
        RawRecord("lead", "b", {"name": "по телефону", "phone": "8 912 345-67-89"}),
        RawRecord("lead", "c", {"name": "почта одного, телефон другого", "email": "petr@tea.example",
                                "phone": "+79123456789"}),
        RawRecord("lead", "d", {"name": "общий телефон", "phone": "+74950000001"}),
        RawRecord("lead", "e", {"name": "незнакомец", "email": "who@else.example"}),
    ]))
    eng.ingest("mail", Batch("inbox", [
        RawRecord("message", "m1", {"subject": "Счёт", "from": "Пётр Иванов <Petr@Tea.example>"}),
        RawRecord("message", "m2", {"subject": "Реклама", "from": "spam@else.example"}),
    ]))
    assert golden(store, "forms", "lead", "a")["lead.customer"] == ids["1"]
    assert golden(store, "forms", "lead", "b")["lead.customer"] == ids["1"]
    for ext in "cde":      # ambiguous or unknown: no link, no review, no new person
        assert golden(store, "forms", "lead", ext).get("lead.customer") is None, ext
    assert golden(store, "mail", "message", "m1")["message.person"] == ids["2"]
    assert golden(store, "mail", "message", "m2").get("message.person") is None
    assert _count(store, "person") == persons_before
    assert store.list_review() == []


def test_link_senders_answers_per_row_with_one_query(store: Store) -> None:
    eng, ids = setup(store)
    rule = eng.mapper.ms.identity.get("person")
    with store.begin() as conn:
        got = link_senders(conn, [("lead", {"lead.email": "olga@tea.example"}), ("order", {"order.number": "1"}),
                                  ("message", {"message.sender": "petr@tea.example"}), ("lead", {})],
                           rule, "RU")
    assert got == [ids["1"], None, ids["2"], None]


def _count(store: Store, type_: str) -> int:
    with store.read() as c:
        return int(c.execute(select(func.count()).select_from(t.entities).where(t.entities.c.type == type_)).scalar())
