"""Engine level: a Syncer with the Bitrix24 connector (sandbox) and an in-memory system."""

from __future__ import annotations

from pathlib import Path

from b24helpers import new_portal

from syncd.mapping import Mapper, load_mappings
from syncd.pipeline import outbox
from syncd.pipeline.push import PushPolicy
from syncd.sandbox.memory import MemoryConnector, MemorySystem
from syncd.store import Store
from syncd.sync import Syncer

ROOT = Path(__file__).resolve().parents[3]

MEMORY_SIDE = '''
[[maps]]
system = "mem"
kind = "person"
entity = "person"
create = true

[maps.fields]
"person.first_name" = "first_name"
"person.last_name" = "last_name"
"person.email" = "email"
"person.phone" = "phone"
"person.emails" = { field = "email", direction = "pull" }
"person.phones" = { field = "phone", direction = "pull" }
"person.comment" = "comment"
"person.position" = "position"

[identity.person]
keys = ["email", "phone"]
origin = ["mem", "crm"]

[conflicts."*"]
policy = "newest"
'''


def test_person_becomes_contact_once_and_edits_come_back_without_echo(sandbox, store: Store, tmp_path) -> None:
    portal = new_portal(sandbox)
    side = tmp_path / "mem.toml"
    side.write_text(MEMORY_SIDE, encoding="utf-8")
    mapper = Mapper(load_mappings([ROOT / "mappings" / "bitrix24.toml", side]))
    mem = MemorySystem("mem", ("person",))
    crm = portal.connector("crm")
    syncer = Syncer(store, mapper, {"crm": crm, "mem": MemoryConnector("mem", mem)},
                    policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0))

    mem.edit("person", "m1", first_name="Иван", last_name="Петров", email="ivan@example.ru",
             phone="+7 495 123-45-67")
    syncer.until_quiet()
    contacts = portal.rest("crm.contact.list", {"select": ["ID", "NAME", "LAST_NAME", "PHONE", "EMAIL",
                                                            "ORIGINATOR_ID", "ORIGIN_ID"]})["result"]
    assert len(contacts) == 1
    c = contacts[0]
    # stamped with its source record, as the vendor's integrations do: system "mem", record m1
    assert (c["NAME"], c["LAST_NAME"], c["ORIGINATOR_ID"], c["ORIGIN_ID"]) == ("Иван", "Петров", "mem", "m1")
    assert [p["VALUE"] for p in c["PHONE"]] == ["+7 495 123-45-67"]
    assert [e["VALUE"] for e in c["EMAIL"]] == ["ivan@example.ru"]
    quiet = syncer.pass_once()
    assert (quiet.planned, quiet.pushed, quiet.created, quiet.updated) == (0, 0, 0, 0)

    # a manager edits the contact in the portal; the edit reaches the memory system once
    portal.ui_edit("contact", c["ID"], {"COMMENTS": "VIP, звонить после 18:00", "POST": "закупщик"})
    mem_writes = mem.writes
    syncer.until_quiet()
    person = mem.objects["person"]["m1"]
    assert person["comment"] == "VIP, звонить после 18:00" and person["position"] == "закупщик"
    assert mem.writes == mem_writes + 1
    portal.clear_log()
    again = syncer.pass_once()
    assert (again.planned, again.pushed, again.created, again.updated) == (0, 0, 0, 0)
    methods = {e.get("method") for e in portal.log()["entries"]}
    assert not {m for m in methods if m and m.endswith((".add", ".update", ".set"))}
    assert len(portal.rest("crm.contact.list", {"select": ["ID"]})["result"]) == 1


def test_a_refused_create_is_dead_lettered_then_replayed_after_the_fix(sandbox, store: Store, tmp_path) -> None:
    """The portal refuses one contact (a validation rule a manager set up); the write goes to the dead
    letters with the portal's reason, the other contact goes through; the rule is fixed in the portal,
    the dead letter is replayed and the contact is created once."""
    portal = new_portal(sandbox)
    side = tmp_path / "mem.toml"
    side.write_text(MEMORY_SIDE, encoding="utf-8")
    mapper = Mapper(load_mappings([ROOT / "mappings" / "bitrix24.toml", side]))
    mem = MemorySystem("mem", ("person",))
    syncer = Syncer(store, mapper, {"crm": portal.connector("crm"), "mem": MemoryConnector("mem", mem)},
                    policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0))
    rule = portal._j("POST", "/rejections", {"method": "crm.contact.add", "fields": {"LAST_NAME": "Сидоров"},
                                             "description": "Поле \"Фамилия\" не прошло проверку."})
    mem.edit("person", "m1", first_name="Пётр", last_name="Сидоров", email="petr@example.ru")
    mem.edit("person", "m2", first_name="Анна", last_name="Смирнова", email="anna@example.ru")
    syncer.until_quiet()
    def names() -> list[str]:
        return sorted(c["LAST_NAME"] for c in portal.rest("crm.contact.list", {"select": ["LAST_NAME"]})["result"])
    assert names() == ["Смирнова"]
    dead = store.list_outbox("dead")
    assert len(dead) == 1 and "ERROR_CORE" in dead[0]["last_error"] and "Фамилия" in dead[0]["last_error"]
    assert portal._j("GET", "/rejections")["rejections"][0]["hits"] == 1, "a permanent error is not retried"
    # the fix in the portal, then the replay: created once, nothing dead any more
    portal._j("DELETE", f"/rejections/{rule['id']}")
    assert outbox.replay(store) == 1
    syncer.until_quiet()
    assert names() == ["Сидоров", "Смирнова"] and store.list_outbox("dead") == []
    assert syncer.pass_once().pushed == 0
