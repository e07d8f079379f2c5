"""The S5 world: a real Dovecot with a sales mailbox, a fresh Bitrix24 sandbox portal set up like an
integrator's, and syncd (its `Runtime`, as `syncd run` builds it) with systems `crm` and `mail`.

The portal is made through the sandbox's control API (its own managers) and public REST (an
existing client with an open deal, made with crm.contact.add / crm.deal.add), never the demo's
seed. Mails are APPENDed over IMAP as a mail server delivers them; syncd reads them over IMAP.
What a test checks, it reads through the portal's public REST.
"""

from __future__ import annotations

import email.utils
import json
import uuid
from dataclasses import dataclass, field
from email.header import Header
from pathlib import Path
from typing import Any

import requests

from syncd.sandbox import dovecot  # noqa: F401 - the tests ask it whether Dovecot is installed
from syncd.sandbox.dovecot import Dovecot

REPO = Path(__file__).resolve().parents[2]

OWN_DOMAIN = "teaclub-shop.example"
CRM_ADDRESS = f"crm@{OWN_DOMAIN}"
SALES = f"sales@{OWN_DOMAIN}"
CLIENT_EMAIL = "olga.smirnova@tea-lovers.example"

SYNC_TOML = """
region = "RU"

[identity.person]
keys = ["email", "phone"]
origin = ["crm", "mail"]

[identity.order]
keys = []
origin = ["crm"]

[conflicts."*"]
policy = "newest"
"""


def mail(sender: str, subject: str, body: str, *, to: str = SALES, charset: str = "utf-8",
         subject_charset: str | None = None, name: str = "", message_id: str | None = None,
         in_reply_to: str | None = None, references: list[str] | None = None, cc: str | None = None,
         extra_headers: dict[str, str] | None = None, declared_charset: str | None = None) -> tuple[bytes, str]:
    """A mail as a mailer sends it: (raw bytes, its Message-ID). Body in `charset`, 8bit."""
    mid = message_id or f"<{uuid.uuid4().hex}@{sender.split('@')[1]}>"
    frm = f"{Header(name, 'utf-8').encode()} <{sender}>" if name else sender
    subj = Header(subject, subject_charset or "utf-8").encode() if subject else ""
    lines = [f"From: {frm}", f"To: {to}", f"Subject: {subj}", f"Message-ID: {mid}",
             f"Date: {email.utils.format_datetime(email.utils.localtime())}", "MIME-Version: 1.0",
             f"Content-Type: text/plain; charset={declared_charset or charset}",
             "Content-Transfer-Encoding: 8bit"]
    if cc:
        lines.append(f"Cc: {cc}")
    if in_reply_to:
        lines.append(f"In-Reply-To: {in_reply_to}")
    if references:
        lines.append(f"References: {' '.join(references)}")
    for k, v in (extra_headers or {}).items():
        lines.append(f"{k}: {v}")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body.replace("\n", "\r\n").encode(charset) + b"\r\n"
    return raw, mid


class Portal:
    """A fresh sandbox portal: its admin's control API and its public REST (inbound webhook)."""

    def __init__(self, sandbox_url: str) -> None:
        self.control = sandbox_url + "/_sandbox"
        self.name = "mail-" + uuid.uuid4().hex[:8]
        self.http = requests.Session()
        info = self._call("POST", "/portals", {"name": self.name, "rate_limit": False})
        self.webhook_url = str(info["webhook_url"])

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(method, self.control + path, json=body, timeout=30)
        assert r.status_code < 300, f"{method} {path} -> {r.status_code} {r.text}"
        return r.json()

    def add_user(self, name: str, last_name: str, **more: Any) -> str:
        u = self._call("POST", f"/{self.name}/users", {"name": name, "last_name": last_name, "online": True,
                                                        "workday": "OPENED", **more})
        return str(u.get("ID") or u.get("id"))

    def add_pipeline(self, name: str, stages: list[tuple[str, str, str]]) -> str:
        body = {"name": name, "stages": [{"id": i, "name": n, "semantics": sem} for i, n, sem in stages]}
        return str(self._call("POST", f"/{self.name}/pipelines", body)["id"])

    def add_userfield(self, entity: str, name: str, type_: str, label: str) -> None:
        self._call("POST", f"/{self.name}/userfields", {"entity": entity, "field_name": name, "type": type_,
                                                         "label": label})

    def faults(self, **kw: Any) -> None:
        self._call("PATCH", f"/{self.name}/faults", kw)

    def rest(self, method: str, params: dict[str, Any] | None = None) -> Any:
        body = self.http.post(self.webhook_url + method + ".json", json=params or {}, timeout=30).json()
        assert "error" not in body, f"{method}: {body}"
        return body["result"]

    def all(self, method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start = 0
        while True:
            body = self.http.post(self.webhook_url + method + ".json", json={**params, "start": start},
                                  timeout=30).json()
            assert "error" not in body, body
            out += body["result"]
            if "next" not in body:
                return out
            start = body["next"]

    def leads(self) -> list[dict[str, Any]]:
        return self.all("crm.lead.list", {"select": ["*", "EMAIL"], "order": {"ID": "ASC"}})

    def deals(self) -> list[dict[str, Any]]:
        return self.all("crm.deal.list", {"select": ["*"], "order": {"ID": "ASC"}})

    def contacts(self) -> list[dict[str, Any]]:
        return self.all("crm.contact.list", {"select": ["*", "EMAIL", "PHONE"], "order": {"ID": "ASC"}})

    def comments(self, entity_type: str, entity_id: Any) -> list[dict[str, Any]]:
        return self.all("crm.timeline.comment.list", {"filter": {"ENTITY_TYPE": entity_type, "ENTITY_ID": entity_id},
                                                      "select": ["ID", "COMMENT", "AUTHOR_ID"]})


@dataclass
class MailWorld:
    tmp: Path
    portal: Portal
    server: Any                           # Dovecot
    manager: str
    client_id: str
    open_deal: str
    closed_deal: str
    config: Path
    env: dict[str, str]
    rt: Any = None
    folders: list[str] = field(default_factory=lambda: ["INBOX"])

    def runtime(self) -> Any:
        """syncd's runtime over the config directory (as `syncd run` builds it)."""
        if self.rt is None:
            from syncd.config import load_settings
            from syncd.daemon.runtime import Runtime

            self.rt = Runtime(load_settings(self.config, env=self.env))
        return self.rt

    def sync(self, passes: int = 4) -> Any:
        """Pull the portal and the mailbox, push; repeated until quiet (the daemon's loop)."""
        from syncd.pipeline.counts import Counts

        rt = self.runtime()
        total = Counts()
        for _ in range(passes):
            c = rt.sync_once()
            total.add(c)
            if not (c.planned or c.pushed or c.created or c.updated):
                break
        return total

    def pull_mail(self) -> Any:
        return self.runtime().run_stream("mail", "mail", wait=True)

    def deliver(self, raw: bytes, folder: str = "INBOX") -> None:
        self.server.append(folder, raw)

    def close(self) -> None:
        if self.rt is not None:
            self.rt.close()
        self.server.stop()


def write_config(tmp: Path, webhook_url: str, server: Any, manager: str, *, folders: list[str],
                 extra: str = "", db_url: str | None = None) -> tuple[Path, dict[str, str]]:
    (tmp / "sync.toml").write_text(SYNC_TOML, encoding="utf-8")
    maps = [str(tmp / "sync.toml"), str(REPO / "mappings" / "bitrix24.toml"), str(REPO / "mappings" / "mail.toml")]
    text = f"""
[daemon]
database_url = "{db_url or f"sqlite:///{tmp}/syncd.db"}"
listen = "127.0.0.1:0"
mappings = {json.dumps(maps)}
state_dir = "{tmp}"
retention_days = 0

[push]
base_delay = 0.0

[systems.crm]
type = "bitrix24"
webhook_url = "${{B24_WEBHOOK_URL}}"
rate = 500.0
burst = 1000.0

[systems.mail]
type = "imap"
host = "{server.host}"
port = {server.port}
tls = "none"
username = "{server.user}"
password = "${{MAIL_PASSWORD}}"
folders = {json.dumps(folders)}
idle = false
manager = "{manager}"
source = "EMAIL"
own_domains = ["{OWN_DOMAIN}"]
crm_address = "{CRM_ADDRESS}"
{extra}
"""
    path = tmp / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path, {"B24_WEBHOOK_URL": webhook_url, "MAIL_PASSWORD": server.password}


def make_world(tmp: Path, sandbox_url: str, *, folders: list[str] | None = None, extra: str = "",
               box: bool = False, db_url: str | None = None) -> MailWorld:
    """`box`: the mailbox makes deals in its own pipeline (seed 004's «BOX», a portal without leads)."""
    portal = Portal(sandbox_url)
    portal.add_userfield("deal", "UF_CRM_SHOP_ORDER", "string", "Номер заказа на сайте")
    portal.add_userfield("deal", "UF_CRM_FROM_SHOP", "boolean", "Заказ с сайта")
    # staff: managers among other employees, so ids are not the examples'
    portal.add_user("Пётр", "Кладовщиков", position="Кладовщик")
    manager = portal.add_user("Анна", "Лебедева", position="Менеджер по продажам")
    other = portal.add_user("Борис", "Орлов", position="Менеджер по продажам")
    client = str(portal.rest("crm.contact.add", {"fields": {
        "NAME": "Ольга", "LAST_NAME": "Смирнова", "ASSIGNED_BY_ID": other,
        "EMAIL": [{"VALUE": CLIENT_EMAIL, "VALUE_TYPE": "WORK"}]}}))
    open_deal = str(portal.rest("crm.deal.add", {"fields": {
        "TITLE": "Самовары для чайной", "CONTACT_ID": client, "STAGE_ID": "NEW", "ASSIGNED_BY_ID": other}}))
    # a newer deal of the same client that is already won: mail must not land there
    closed_deal = str(portal.rest("crm.deal.add", {"fields": {
        "TITLE": "Прошлый заказ", "CONTACT_ID": client, "STAGE_ID": "WON", "ASSIGNED_BY_ID": other}}))
    if box:
        pid = portal.add_pipeline("Обращения BOX", [("NEW", "Не обработан", "P"), ("TALK", "Переговоры", "P"),
                                                      ("WON", "Успех", "S"), ("LOSE", "Отказ", "F")])
        extra += f'\ntarget = "deal"\npipeline = "{pid}"\nstage = "C{pid}:NEW"\n'
    server = Dovecot(tmp / "dovecot").start()
    fs = folders or ["INBOX"]
    cfg, env = write_config(tmp, portal.webhook_url, server, manager, folders=fs, extra=extra, db_url=db_url)
    return MailWorld(tmp, portal, server, manager, client, open_deal, closed_deal, cfg, env, folders=fs)
