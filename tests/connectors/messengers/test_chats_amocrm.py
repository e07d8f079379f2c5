"""Telegram -> amoCRM, end to end: the Telegram sandbox posts real Updates to syncd's webhook (the
daemon's HTTP app, a Runtime from a config file: mappings/sync.toml, amocrm.toml,
messengers-amocrm.toml), syncd routes them, and the amoCRM sandbox is checked through its own API
(/api/v4 with the long-lived token). The account is set up as an integrator's
(syncd/sandbox/amocrm/demo.py seed_shop: the shop's main pipeline, syncd's key field, its managers),
with a client a manager typed by hand — her phone in a spelling of his own — and her open lead.

amoCRM has no lead apart from its deals, so the channel is `target = "deal"` with the canonical
pipeline "0" and stage "NEW" that amocrm.toml's value maps translate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from syncd.sandbox.server import free_port

REPO = Path(__file__).resolve().parents[3]
MAPPINGS = [str(REPO / "mappings" / n) for n in ("sync.toml", "amocrm.toml", "messengers-amocrm.toml")]
TG_SECRET = "tg-secret-amo-7c1d"
CLIENT_PHONE_TYPED = "8 (916) 555-12-34"        # as the manager typed it into the contact
CLIENT_PHONE_SHARED = "79165551234"            # as Telegram sends the user's own number (no "+")


class AmoChatWorld:
    def __init__(self, tmp: Path) -> None:
        from syncd.sandbox.amocrm import start, ui_write
        from syncd.sandbox.amocrm.demo import seed_shop
        from syncd.sandbox.messengers import start_telegram

        self.tmp = tmp
        self.amo = start(rate_limit=False)
        self.tg = start_telegram()
        self.acc = self.amo.extra["state"]
        setup = seed_shop(self.acc)
        self.pipeline = int(setup["pipeline"])
        self.first_status = int(setup["statuses"]["Новый заказ"])
        self.manager = int(setup["managers"]["2"])        # the channel's operator
        other = int(setup["managers"]["4"])
        # a client a manager typed, with his own spelling of her phone, and her open lead
        self.client_id = int(ui_write(self.acc, "contacts", {
            "first_name": "Ольга", "last_name": "Смирнова", "responsible_user_id": other,
            "custom_fields_values": [{"field_code": "PHONE", "values": [{"value": CLIENT_PHONE_TYPED,
                                                                         "enum_code": "MOB"}]}]},
            user_id=other)["id"])
        self.open_lead = int(ui_write(self.acc, "leads", {
            "name": "Самовары для чайной", "responsible_user_id": other, "pipeline_id": self.pipeline,
            "status_id": int(setup["statuses"]["Счёт оплачен"]),
            "_embedded": {"contacts": [{"id": self.client_id}]}}, user_id=other)["id"])
        self.port = free_port()
        self.rt: Any = None
        self.http: Any = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tg_hook(self) -> str:
        return f"{self.base}/hooks/telegram/telegram"

    def config(self) -> Path:
        lines = ["[daemon]", f'database_url = "sqlite:///{self.tmp}/syncd.db"',
                 f'listen = "127.0.0.1:{self.port}"', f"mappings = {json.dumps(MAPPINGS)}",
                 f'state_dir = "{self.tmp}"', "", "[push]", "base_delay = 0.0", "",
                 "[systems.crm]", 'type = "amocrm"', f"base_url = {json.dumps(self.amo.url)}",
                 'token = "${AMO_TOKEN}"', "rate = 500.0", "burst = 500.0", "",
                 "[systems.telegram]", 'type = "telegram"', 'bot_token = "${TG_BOT_TOKEN}"',
                 'secret_token = "${TG_SECRET}"', f"api_url = {json.dumps(self.tg.url)}",
                 f"webhook_url = {json.dumps(self.tg_hook)}",
                 'target = "deal"', 'pipeline = "0"', 'stage = "NEW"', f'manager = "{self.manager}"']
        for stream in ("contacts", "leads"):
            lines += ["", "[[jobs]]", 'system = "crm"', f'stream = "{stream}"', 'every = "3s"']
        path = self.tmp / "config.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def start(self) -> None:
        from syncd.config import load_settings
        from syncd.daemon.http import create_app
        from syncd.daemon.runtime import Runtime
        from syncd.sandbox.server import serve_in_thread

        env = {"AMO_TOKEN": self.amo.extra["long_lived_token"], "TG_BOT_TOKEN": self.tg.token,
               "TG_SECRET": TG_SECRET}
        self.rt = Runtime(load_settings(self.config(), env=env))
        self.http = serve_in_thread(create_app(self.rt), "127.0.0.1", self.port)

    def close(self) -> None:
        if self.http is not None:
            self.http.stop()
        if self.rt is not None:
            self.rt.close()
        self.tg.stop()
        self.amo.stop()

    def sync(self, rounds: int = 8) -> None:
        """Passes (pull every stream — amoCRM's, Telegram's setWebhook — push the outbox) until quiet."""
        for _ in range(rounds):
            c = self.rt.sync_once()
            if not (c.created or c.updated or c.pushed or c.planned):
                return
        raise AssertionError(f"no quiescence after {rounds} passes: {c.as_dict()}")

    # -- amoCRM through its public API ---------------------------------------------------------------
    def api(self, path: str, **params: Any) -> Any:
        r = requests.get(f"{self.amo.url}/api/v4/{path}", params=params, timeout=10,
                         headers={"Authorization": f"Bearer {self.amo.extra['long_lived_token']}"})
        assert r.status_code < 300, (r.status_code, r.text)
        return r.json() if r.content else {}

    def all(self, path: str, key: str, **params: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            data = self.api(path, page=page, limit=250, **params)
            got = (data.get("_embedded") or {}).get(key) or []
            out += got
            if len(got) < 250:
                return out
            page += 1

    def leads(self) -> list[dict[str, Any]]:
        return self.all("leads", "leads", **{"with": "contacts"})

    def new_leads(self) -> list[dict[str, Any]]:
        return [x for x in self.leads() if x["id"] != self.open_lead]

    def contacts(self) -> list[dict[str, Any]]:
        return self.all("contacts", "contacts")

    def notes(self, etype: str, eid: int) -> list[dict[str, Any]]:
        return [n for n in self.all(f"{etype}/{eid}/notes", "notes") if n["note_type"] == "common"]

    def failed_ops(self) -> list[Any]:
        from sqlalchemy import select

        from syncd.store import tables as t

        with self.rt.store.engine.connect() as conn:
            return list(conn.execute(select(t.outbox.c.entity_type, t.outbox.c.status, t.outbox.c.last_error)
                                     .where(t.outbox.c.status != "done")))

    def messages(self) -> list[dict[str, Any]]:
        from sqlalchemy import select

        from syncd import schema
        from syncd.store import tables as t

        with self.rt.store.engine.connect() as conn:
            return [schema.decode(f) for (f,) in conn.execute(select(t.entities.c.fields)
                                                              .where(t.entities.c.type == "message"))]


def _statuses(d: Any) -> list[Any]:
    return [a.get("status") for a in d.attempts]


def _contact_ids(lead: dict[str, Any]) -> list[int]:
    return [int(c["id"]) for c in ((lead.get("_embedded") or {}).get("contacts") or [])]


@pytest.fixture
def w(tmp_path: Path) -> Iterator[AmoChatWorld]:
    world = AmoChatWorld(tmp_path)
    try:
        world.start()
        world.sync()          # amoCRM's contacts and leads are known; Telegram's webhook is set
        yield world
    finally:
        world.close()


def test_webhook_is_set_and_nothing_is_written_before_a_message(w: AmoChatWorld) -> None:
    assert w.tg.webhook_info()["url"] == w.tg_hook
    assert [x["id"] for x in w.leads()] == [w.open_lead]
    assert [int(c["id"]) for c in w.contacts()] == [w.client_id]


def test_new_person_makes_a_contact_and_a_lead_a_reply_is_a_note_a_redelivery_is_one(w: AmoChatWorld) -> None:
    ann = w.tg.user("Анна", "Иванова", username="anna_iv")
    first = w.tg.send_text(ann, "Здравствуйте! Нужен самовар на 5 литров.", duplicate=True)
    assert _statuses(first) == [200, 200]            # posted twice: both taken
    w.sync()
    assert len(w.messages()) == 1                     # the update delivered twice is one message
    leads = w.new_leads()
    assert len(leads) == 1, (leads, w.failed_ops())
    lead = leads[0]
    assert lead["name"] == "Telegram: Анна Иванова"
    # the main pipeline's first status (canonical "0" / "NEW" through amocrm.toml's value maps)
    assert (lead["pipeline_id"], lead["status_id"]) == (w.pipeline, w.first_status)
    assert lead["responsible_user_id"] == w.manager
    contacts = [c for c in w.contacts() if int(c["id"]) != w.client_id]
    assert len(contacts) == 1
    contact = contacts[0]
    assert (contact["first_name"], contact["last_name"]) == ("Анна", "Иванова")
    assert _contact_ids(lead) == [int(contact["id"])]
    assert w.notes("leads", lead["id"]) == []        # the first message made the lead: no note

    # a reply, its update posted twice (Telegram retrying): one message, one note on that lead
    reply = w.tg.send_text(ann, "Доставка в Тверь возможна?", duplicate=True)
    assert _statuses(reply) == [200, 200]
    w.sync()
    assert len(w.messages()) == 2
    assert len(w.new_leads()) == 1 and len(w.contacts()) == 2
    notes = w.notes("leads", lead["id"])
    assert len(notes) == 1, (notes, w.failed_ops())
    text = notes[0]["params"]["text"]
    assert "Доставка в Тверь возможна?" in text and "Telegram: Анна Иванова (tg:" in text
    assert w.notes("contacts", int(contact["id"])) == []

    # the next words: one more note on the same lead, still no second lead
    w.tg.send_text(ann, "И самовар на 3 литра тоже")
    w.sync()
    assert len(w.new_leads()) == 1 and len(w.contacts()) == 2
    texts = [n["params"]["text"] for n in w.notes("leads", lead["id"])]
    assert len(texts) == 2 and "самовар на 3 литра" in texts[1]
    assert w.failed_ops() == []


def test_a_known_client_who_shares_her_phone_gets_notes_on_her_open_lead(w: AmoChatWorld) -> None:
    olga = w.tg.user("Оля", None, username="olga_s")
    # her own number, without "+", as Telegram sends it; the manager typed "8 (916) 555-12-34"
    w.tg.share_contact(olga, CLIENT_PHONE_SHARED)
    w.sync()
    w.tg.send_text(olga, "Когда привезёте самовары?")
    w.sync()
    notes = w.notes("leads", w.open_lead)
    assert any("Когда привезёте самовары?" in n["params"]["text"] for n in notes), (notes, w.failed_ops())
    assert w.new_leads() == []                        # no new lead ...
    assert [int(c["id"]) for c in w.contacts()] == [w.client_id]      # ... and no new contact
    assert w.notes("contacts", w.client_id) == []
    # and her next message too (the chat is bound to her now)
    w.tg.send_text(olga, "И ещё чайник, пожалуйста")
    w.sync()
    texts = [n["params"]["text"] for n in w.notes("leads", w.open_lead)]
    assert sum("ещё чайник" in t for t in texts) == 1
    assert w.new_leads() == []
    assert w.failed_ops() == []


def test_two_messages_with_the_same_words_in_one_minute_are_two_notes(w: AmoChatWorld) -> None:
    """A CRM finds a note it wrote by its text: each message's note names its own number."""
    ann = w.tg.user("Анна", "Повтор")
    w.tg.send_text(ann, "Здравствуйте")
    w.sync()
    lead = w.new_leads()[0]
    w.tg.send_text(ann, "Алло?")
    w.tg.send_text(ann, "Алло?")
    w.sync()
    assert len(w.notes("leads", lead["id"])) == 2, w.failed_ops()


def test_a_chat_that_made_a_lead_then_shares_a_known_phone_moves_to_her_open_lead(w: AmoChatWorld) -> None:
    olga = w.tg.user("Оля", None, username="olga_2")
    w.tg.send_text(olga, "Добрый день, вопрос по заказу")      # unknown yet: a contact and a lead
    w.sync()
    assert len(w.new_leads()) == 1
    chat_lead = w.new_leads()[0]["id"]
    w.tg.share_contact(olga, CLIENT_PHONE_SHARED)
    w.tg.send_text(olga, "Когда привезёте самовары?")
    w.sync()
    assert any("Когда привезёте самовары?" in n["params"]["text"] for n in w.notes("leads", w.open_lead))
    assert not any("самовары" in n["params"]["text"] for n in w.notes("leads", chat_lead))
    assert len(w.new_leads()) == 1                              # no second lead
    w.tg.send_text(olga, "И ещё чайник, пожалуйста")
    w.sync()
    assert any("ещё чайник" in n["params"]["text"] for n in w.notes("leads", w.open_lead))
    assert w.failed_ops() == []
