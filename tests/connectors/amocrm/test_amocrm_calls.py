"""Calls end to end with amoCRM as the CRM: syncd's JSON call events posted to the daemon's HTTP app
(a Runtime from a config file: mappings/sync.toml, amocrm.toml, calls-amocrm.toml) -> call notes
(call_in / call_out) on the client's contact in the amoCRM sandbox, read back through its API. The
account is set up as an integrator's (syncd/sandbox/amocrm/demo.py: the shop's pipeline, syncd's
key field), with a client Борис typed by hand, his phone in a spelling of his own."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from amohelpers import acc_of, all_of, api

from syncd.config import load_settings
from syncd.daemon.http import create_app
from syncd.daemon.runtime import Runtime
from syncd.sandbox.amocrm import start, ui_write
from syncd.sandbox.amocrm.demo import seed_shop
from syncd.sandbox.server import serve_in_thread

REPO = Path(__file__).resolve().parents[3]
MAPPINGS = [str(REPO / "mappings" / n) for n in ("sync.toml", "amocrm.toml", "calls-amocrm.toml")]
SECRET = "pbx-secret"
CLIENT_PHONE = "8 (912) 345-67-01"       # as the manager typed it into the contact
UNKNOWN = "+79035550101"


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.amo = start(rate_limit=False)
        self.acc = acc_of(self.amo)
        setup = seed_shop(self.acc)
        self.boris = setup["managers"]["3"]
        self.client_id = int(ui_write(self.acc, "contacts", {
            "first_name": "Дмитрий", "last_name": "Волков", "responsible_user_id": self.boris,
            "custom_fields_values": [{"field_code": "PHONE", "values": [{"value": CLIENT_PHONE,
                                                                         "enum_code": "MOB"}]}]},
            user_id=self.boris)["id"])
        self.config = self._write_config()
        self.rt: Runtime | None = None
        self.http: Any = None

    def _write_config(self) -> Path:
        crm = {"base_url": self.amo.url, "token": self.amo.extra["long_lived_token"], "rate": 500.0,
               "burst": 500.0}
        calls = {"vendor": "syncd", "secret": SECRET, "crm": "crm", "presence_ttl": 0.2}
        lines = ["[daemon]", f'database_url = "sqlite:///{self.tmp}/syncd.db"', 'listen = "127.0.0.1:0"',
                 f"mappings = {json.dumps(MAPPINGS)}", f'state_dir = "{self.tmp}"', "",
                 "[push]", "base_delay = 0.0", "", "[systems.calls]", 'type = "calls"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in calls.items()]
        lines += ["", "[systems.crm]", 'type = "amocrm"'] + [f"{k} = {json.dumps(v)}" for k, v in crm.items()]
        for stream in ("contacts", "leads"):
            lines += ["", "[[jobs]]", 'system = "crm"', f'stream = "{stream}"', 'every = "3s"']
        path = self.tmp / "config.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def start(self) -> None:
        self.rt = Runtime(load_settings(self.config))
        self.http = serve_in_thread(create_app(self.rt))

    def close(self) -> None:
        if self.http is not None:
            self.http.stop()
        if self.rt is not None:
            self.rt.close()
        self.amo.stop()

    def post(self, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        sig = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        r = requests.post(self.http.url + "/hooks/calls/calls", data=raw, timeout=10,
                          headers={"Content-Type": "application/json", "X-Syncd-Signature": sig})
        assert r.status_code == 200, r.text

    def call(self, call_id: str, caller: str, *, status: str = "answered", duration: int = 0,
             direction: str = "in", called: str = "74951234567", extension: str = "102") -> None:
        """A call's start and end, as a PBX posts them."""
        base = {"call_id": call_id, "direction": direction, "caller": caller, "called": called,
                "extension": extension}
        self.post({**base, "event": "start", "at": "2024-05-01T10:00:00+03:00"})
        self.post({**base, "event": "end", "duration": duration, "status": status,
                   "at": "2024-05-01T10:01:05+03:00"})

    def sync(self, rounds: int = 8) -> None:
        """Passes (pull, push the outbox) until one changes nothing."""
        assert self.rt is not None
        for _ in range(rounds):
            c = self.rt.sync_once()
            if not (c.created or c.updated or c.pushed or c.planned):
                return
        raise AssertionError(f"no quiescence after {rounds} passes: {c.as_dict()}")

    def call_notes(self, contact_id: int) -> list[dict[str, Any]]:
        data = api(self.amo, "GET", f"contacts/{contact_id}/notes")
        return [n for n in (data or {}).get("_embedded", {}).get("notes", [])
                if n["note_type"] in ("call_in", "call_out")]

    def failed_ops(self) -> list[Any]:
        from sqlalchemy import select

        from syncd.store import tables as t
        assert self.rt is not None
        with self.rt.store.engine.connect() as conn:
            return list(conn.execute(select(t.outbox.c.entity_type, t.outbox.c.status, t.outbox.c.last_error)
                                     .where(t.outbox.c.status != "done")))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        w.start()
        w.sync()                      # amoCRM's contacts are read: the client is known
        yield w
    finally:
        w.close()


def test_known_clients_call_is_one_call_in_note_on_his_contact(world: World) -> None:
    world.call("pbx-1", "+79123456701", duration=42)
    world.sync()
    notes = world.call_notes(world.client_id)
    assert len(notes) == 1, (notes, world.failed_ops())
    n = notes[0]
    assert n["note_type"] == "call_in"
    p = n["params"]
    assert (p["duration"], p["call_status"], p["call_result"]) == (42, 4, "Разговор состоялся")
    assert p["phone"] == "+79123456701" and p["source"] == "syncd" and p["uniq"] == "calls:pbx-1"
    assert len(all_of(world.amo, "contacts")) == 1          # a known client: no new contact ...
    assert all_of(world.amo, "leads") == []                  # ... and no lead

    # the recording arrives later: the same note gets its link
    world.post({"call_id": "pbx-1", "event": "record", "at": "2024-05-01T10:02:00+03:00",
                "recording_url": "https://records.example/pbx-1.mp3"})
    world.sync()
    notes = world.call_notes(world.client_id)
    assert len(notes) == 1
    assert notes[0]["params"]["link"] == "https://records.example/pbx-1.mp3"
    assert notes[0]["params"]["duration"] == 42 and notes[0]["params"]["uniq"] == p["uniq"]
    assert [e for e in world.acc.log_view(kind="api") if e["method"] == "PATCH" and "notes" in e["path"]]


def test_the_same_events_twice_make_one_note(world: World) -> None:
    world.call("pbx-2", "+7 912 345 67 01", duration=15)
    world.call("pbx-2", "+7 912 345 67 01", duration=15)
    world.sync()
    world.call("pbx-2", "+7 912 345 67 01", duration=15)
    world.sync()
    notes = world.call_notes(world.client_id)
    assert len(notes) == 1, notes
    assert notes[0]["params"]["duration"] == 15


def test_a_retried_write_finds_its_note(world: World) -> None:
    """The note's POST is done but its answer lost: the retry lists the contact's notes, finds the
    uniq and adds nothing."""
    requests.patch(world.amo.url + "/_sandbox/faults", json={
        "count": 1, "status": 502, "mode": "lost", "paths": [f"/api/v4/contacts/{world.client_id}/notes"],
        "methods": ["POST"]}, timeout=10).raise_for_status()
    world.call("pbx-3", "+79123456701", duration=7)
    world.sync()
    notes = world.call_notes(world.client_id)
    assert len(notes) == 1, (notes, world.failed_ops())
    posts = [e for e in world.acc.log_view(kind="api")
             if e["method"] == "POST" and e["path"].endswith(f"contacts/{world.client_id}/notes")]
    assert len(posts) == 1 and posts[0].get("fault") == "lost"   # done, its answer lost ...
    looks = [e for e in world.acc.log_view(kind="api") if e["method"] == "GET"
             and e["path"].endswith(f"contacts/{world.client_id}/notes")]
    assert looks                                               # ... and the retry looked, not posted


def test_unknown_caller_gets_a_contact_a_lead_and_one_note(world: World) -> None:
    world.call("pbx-4", UNKNOWN, duration=10, extension="101")
    world.call("pbx-4", UNKNOWN, duration=10, extension="101")      # delivered twice
    world.sync()
    new = [c for c in all_of(world.amo, "contacts") if int(c["id"]) != world.client_id]
    assert len(new) == 1, (new, world.failed_ops())
    contact = new[0]
    phones = [v["value"] for e in contact["custom_fields_values"] if e["field_code"] == "PHONE"
              for v in e["values"]]
    assert phones == [UNKNOWN]
    leads = all_of(world.amo, "leads", **{"with": "contacts"})
    assert len(leads) == 1, leads
    main = next(p for p in world.acc.pipelines.values() if p.is_main)
    assert leads[0]["pipeline_id"] == main.id
    first = min((s for s in main.statuses if s.type == 0 and s.id not in (142, 143)), key=lambda s: s.sort)
    assert leads[0]["status_id"] == first.id                 # the main pipeline's first status
    assert [c["id"] for c in leads[0]["_embedded"]["contacts"]] == [contact["id"]]
    notes = world.call_notes(int(contact["id"]))
    assert len(notes) == 1 and notes[0]["note_type"] == "call_in"
    assert notes[0]["params"]["phone"] == UNKNOWN and notes[0]["params"]["call_status"] == 4
    # read back by syncd (contacts and leads streams), nothing more is made on the next passes
    world.sync()
    assert len(all_of(world.amo, "contacts")) == 2 and len(all_of(world.amo, "leads")) == 1
    assert len(world.call_notes(int(contact["id"]))) == 1
    assert world.failed_ops() == []


def test_missed_call_has_the_missed_status(world: World) -> None:
    world.call("pbx-5", "+79123456701", status="missed", duration=0)
    world.sync()
    notes = world.call_notes(world.client_id)
    assert len(notes) == 1, (notes, world.failed_ops())
    p = notes[0]["params"]
    assert (p["call_status"], p["call_result"], p["duration"]) == (6, "Не дозвонился", 0)


def test_outgoing_call_is_a_call_out_note(world: World) -> None:
    world.call("pbx-6", "102", called="+79123456701", direction="out", duration=30)
    world.sync()
    notes = world.call_notes(world.client_id)
    assert len(notes) == 1, (notes, world.failed_ops())
    assert notes[0]["note_type"] == "call_out" and notes[0]["params"]["phone"] == "+79123456701"
