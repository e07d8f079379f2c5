"""The forms suite's setting: a fresh portal set up like an integrator's (own managers, an existing
client) and `syncd run` serving the suite's forms (each form shows one feature)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from formshelpers import Daemon, Portal, form, write_config

from syncd.sandbox.server import free_port

TOKEN = "tok-contact-5f1e9a"
SIGNED_TOKEN = "tok-signed-77aa21"
SIGN_SECRET = "hmac-secret-0c9d"
REVIEW_TOKEN = "tok-review-3b3b3b"
KNOWN_TOKEN = "tok-known-c0ffee"
EITHER_TOKEN = "tok-either-0ddba11"
LIMITED_TOKEN = "tok-limited-4242"
DEAL_TOKEN = "tok-deal-99ab01"
NAMED_TOKEN = "tok-named-5c1d"
ANNA_EMAIL = "anna.lebedeva@teaclub.example"
TWINS_PHONE = "+79035550011"            # one client's phone…
TWINS_EMAIL = "ivan.d@teaclub.example"  # …and another's e-mail

# the known client: an existing contact of the portal, with its own manager
CLIENT_EMAIL = "olga.smirnova@teaclub.example"
CLIENT_PHONE = "+7 (912) 345-67-89"

RULES = """
[rules.assign.lead]
system = "crm"
chain = [
  { name = "known client", strategy = "keep" },
  { strategy = "none" },
]
"""


def suite_forms(managers: dict[str, str], pipeline: int) -> dict[str, dict[str, Any]]:
    return {
        # the site's contact form: a fixed manager, consent required, a honeypot
        "contact": form(TOKEN, responsible=managers["anna"], consent_field="agree", consent_version="2024-05",
                        require_consent=True, honeypot="website"),
        # a form whose posts are signed (HMAC-SHA256 of the body)
        "signed": form(SIGNED_TOKEN, signature_secret=SIGN_SECRET, responsible=managers["anna"]),
        # junk is weeded out by an operator before it is sent
        "review": form(REVIEW_TOKEN, mode="review", responsible=managers["anna"]),
        # no fixed manager: [rules.assign.lead] decides (keep: the client's own manager)
        "known": form(KNOWN_TOKEN, required=[]),
        # "a phone or an e-mail": either is enough, none is a 400 naming both
        "either": form(EITHER_TOKEN, required=[], required_any=[["tel", "mail"]], responsible=managers["anna"]),
        # a tight per-IP limit
        "limited": form(LIMITED_TOKEN, rate_limit=2, rate_window=60.0, duplicate_window=0),
        # a CRM run without leads: a deal in the site's pipeline, at its first stage
        "deal": form(DEAL_TOKEN, target="deal", pipeline=str(pipeline), stage=f"C{pipeline}:REQUEST",
                     responsible=managers["anna"], consent_field="agree", consent_version="2024-05"),
        # the same, by the names a manager sees (issue 22 #4): resolved through the portal at start
        "named": form(NAMED_TOKEN, target="deal", pipeline="Заявки с сайта", stage="заявка",
                      responsible=ANNA_EMAIL, source="Веб-сайт"),
    }


@dataclass
class World:
    portal: Portal
    daemon: Daemon
    managers: dict[str, str]
    client_id: str
    db: str                       # the daemon's store: a SQLite file or a PostgreSQL URL
    pipeline: int


def make_portal(sandbox_url: str) -> tuple[Portal, dict[str, str], str, int]:
    portal = Portal(sandbox_url)
    # the user fields the example deal map names (an integrator adds them in the portal's settings)
    portal.add_userfield("deal", "UF_CRM_SHOP_ORDER", "string", "Номер заказа на сайте")
    portal.add_userfield("deal", "UF_CRM_FROM_SHOP", "boolean", "Заказ с сайта")
    # the company's staff: managers among other employees, so their ids are not the examples'
    portal.add_user("Пётр", "Кладовщиков", position="Кладовщик")
    managers = {"anna": portal.add_user("Анна", "Лебедева", position="Менеджер", email=ANNA_EMAIL),
                "boris": portal.add_user("Борис", "Орлов", position="Менеджер")}
    client = portal.rest("crm.contact.add", {"fields": {
        "NAME": "Ольга", "LAST_NAME": "Смирнова", "ASSIGNED_BY_ID": managers["boris"],
        "EMAIL": [{"VALUE": CLIENT_EMAIL, "VALUE_TYPE": "WORK"}],
        "PHONE": [{"VALUE": CLIENT_PHONE, "VALUE_TYPE": "WORK"}]}})
    # two clients: a visitor who types one's e-mail and the other's phone is ambiguous
    for name, email, phone in (("Иван", TWINS_EMAIL, "+79035550033"), ("Мария", "maria.d@teaclub.example", TWINS_PHONE)):
        portal.rest("crm.contact.add", {"fields": {"NAME": name, "LAST_NAME": "Двойные",
                                                   "EMAIL": [{"VALUE": email, "VALUE_TYPE": "WORK"}],
                                                   "PHONE": [{"VALUE": phone, "VALUE_TYPE": "WORK"}]}})
    # the site's requests pipeline, for the form run without leads
    pipeline = portal.add_pipeline("Заявки с сайта", [{"id": "REQUEST", "name": "Заявка"},
                                                      {"id": "WON", "name": "Успех", "semantics": "S"},
                                                      {"id": "LOSE", "name": "Отказ", "semantics": "F"}])
    return portal, managers, str(client), pipeline


def start_world(tmp: Path, sandbox_url: str, **cfg: Any) -> World:
    portal, managers, client, pipeline = make_portal(sandbox_url)
    port = free_port()
    path = write_config(tmp, port, portal.webhook_url, suite_forms(managers, pipeline), rules=RULES, **cfg)
    daemon = Daemon(path, port)
    db = cfg.get("db_url") or str(tmp / "syncd.db")
    daemon.wait(lambda: daemon.person_known(db, CLIENT_EMAIL), "the existing contact is pulled", 30)
    return World(portal, daemon, managers, client, db, pipeline)
