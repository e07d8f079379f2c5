"""Engine level: a Syncer with the amoCRM connector (sandbox) and an in-memory system."""

from __future__ import annotations

from pathlib import Path

from amohelpers import acc_of, all_of, connector
from syncd.mapping import Mapper, load_mappings
from syncd.pipeline.push import PushPolicy
from syncd.sandbox.amocrm import ui_write
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
"person.position" = "position"

[identity.person]
keys = ["email", "phone"]
origin = ["mem", "crm"]

[conflicts."*"]
policy = "newest"
'''


def test_person_becomes_contact_once_and_edits_come_back_without_echo(amo, store: Store, tmp_path) -> None:
    side = tmp_path / "mem.toml"
    side.write_text(MEMORY_SIDE, encoding="utf-8")
    mapper = Mapper(load_mappings([ROOT / "mappings" / "amocrm.toml", side]))
    mem = MemorySystem("mem", ("person",))
    crm = connector(amo)
    syncer = Syncer(store, mapper, {"crm": crm, "mem": MemoryConnector("mem", mem)},
                    policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0))

    mem.edit("person", "m1", first_name="Иван", last_name="Петров", email="ivan@example.ru",
             phone="+7 495 123-45-67")
    syncer.until_quiet()
    contacts = all_of(amo, "contacts")
    assert len(contacts) == 1
    c = contacts[0]
    cf = {e["field_code"]: [v["value"] for v in e["values"]] for e in c["custom_fields_values"]}
    # stamped with its source record: system "mem", record m1
    assert (c["first_name"], c["last_name"], cf["SYNCD_KEY"]) == ("Иван", "Петров", ["mem:m1"])
    assert cf["PHONE"] == ["+7 495 123-45-67"] and cf["EMAIL"] == ["ivan@example.ru"]
    quiet = syncer.pass_once()
    assert (quiet.planned, quiet.pushed, quiet.created, quiet.updated) == (0, 0, 0, 0)

    # a manager edits the contact in amoCRM; the edit reaches the memory system once
    position = next(f for f in acc_of(amo).fields.values() if f.code == "POSITION")
    ui_write(acc_of(amo), "contacts", {"custom_fields_values": [
        {"field_id": position.id, "values": [{"value": "закупщик"}]}]}, record_id=c["id"])
    mem_writes = mem.writes
    syncer.until_quiet()
    assert mem.objects["person"]["m1"]["position"] == "закупщик"
    assert mem.writes == mem_writes + 1
    acc_of(amo).log.clear()
    again = syncer.pass_once()
    assert (again.planned, again.pushed, again.created, again.updated) == (0, 0, 0, 0)
    assert not [e for e in acc_of(amo).log_view(kind="api") if e["method"] in ("POST", "PATCH")]
    assert len(all_of(amo, "contacts")) == 1
