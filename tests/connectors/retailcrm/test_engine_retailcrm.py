"""Engine level: a Syncer with the RetailCRM connector (sandbox) and an in-memory system."""

from __future__ import annotations

from pathlib import Path

from rchelpers import Account

from syncd.mapping import Mapper, load_mappings
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
"person.middle_name" = "middle_name"
"person.email" = "email"
"person.phone" = "phone"
"person.phones" = { field = "phone", direction = "pull" }

[identity.person]
keys = ["email", "phone"]
origin = ["mem", "crm"]

[conflicts."*"]
policy = "newest"
'''


def test_person_becomes_customer_once_and_a_managers_edit_comes_back_without_echo(
        account: Account, store: Store, tmp_path: Path) -> None:
    side = tmp_path / "mem.toml"
    side.write_text(MEMORY_SIDE, encoding="utf-8")
    mapper = Mapper(load_mappings([ROOT / "mappings" / "retailcrm.toml", side]))
    mem = MemorySystem("mem", ("person",))
    syncer = Syncer(store, mapper, {"crm": account.connector("crm"), "mem": MemoryConnector("mem", mem)},
                    policy=PushPolicy(base_delay=0.0, inline_wait_max=0.0))

    mem.edit("person", "m1", first_name="Иван", last_name="Петров", email="ivan@example.ru", phone="+7 495 123-45-67")
    syncer.until_quiet()
    customers = list(account.sb.customers.values())
    assert len(customers) == 1
    c = customers[0]
    # keyed by its source record in syncd's form (not the shop's: system "mem" is no shop)
    assert (c["firstName"], c["lastName"], c["email"], c["externalId"]) == ("Иван", "Петров", "ivan@example.ru",
                                                                          "mem-m1")
    assert [p["number"] for p in c["phones"]] == ["+7 495 123-45-67"]
    quiet = syncer.pass_once()
    assert (quiet.planned, quiet.pushed, quiet.created, quiet.updated) == (0, 0, 0, 0)

    # a manager edits the customer in RetailCRM; the edit reaches the memory system once
    account.ui_edit("customers", c["id"], {"patronymic": "Сергеевич", "lastName": "Петров-Водкин"})
    writes = mem.writes
    syncer.until_quiet()
    person = mem.objects["person"]["m1"]
    assert person["middle_name"] == "Сергеевич" and person["last_name"] == "Петров-Водкин"
    assert mem.writes == writes + 1
    account.clear_log()
    again = syncer.pass_once()
    assert (again.planned, again.pushed, again.created, again.updated) == (0, 0, 0, 0)
    assert not [e for e in account.log() if e["method"] == "POST"]            # no echo back to RetailCRM
    assert len(account.sb.customers) == 1
