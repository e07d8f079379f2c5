"""The messengers' world: a fresh Bitrix24 sandbox portal set up like an integrator's (its own
managers, a client a manager typed with an open deal), the Telegram and VK sandboxes sending, and
syncd's Runtime (as `syncd run` builds it from a config file) serving its HTTP app on a fixed port,
so the webhook addresses are known before it starts. Checks read the portal through its public REST.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from syncd.sandbox.server import free_port

REPO = Path(__file__).resolve().parents[3]

TG_SECRET = "tg-secret-5f1e9a0c77aa21bb"
VK_SECRET = "vk-secret-0c9d41"
VK_CONFIRMATION = "c0nf1rm8"
CLIENT_PHONE_TYPED = "8 (916) 555-12-34"        # as the manager typed it into the contact
CLIENT_PHONE_SHARED = "79165551234"            # as Telegram sends the user's own number (no "+")

SYNC_TOML = """
region = "RU"

[identity.person]
keys = ["email", "phone"]
origin = ["crm"]

[identity.order]
keys = []
origin = ["crm"]

[conflicts."*"]
policy = "newest"
"""


class Portal:
    """A fresh portal on the sandbox: its admin's control API and its public REST."""

    def __init__(self, sandbox_url: str) -> None:
        self.control = sandbox_url + "/_sandbox"
        self.name = "chat-" + uuid.uuid4().hex[:8]
        self.http = requests.Session()
        self.webhook_url = str(self._call("POST", "/portals", {"name": self.name, "rate_limit": False})["webhook_url"])

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(method, self.control + path, json=body, timeout=30)
        assert r.status_code < 300, f"{method} {path} -> {r.status_code} {r.text}"
        return r.json()

    def add_user(self, name: str, last_name: str) -> str:
        u = self._call("POST", f"/{self.name}/users", {"name": name, "last_name": last_name, "online": True,
                                                        "workday": "OPENED"})
        return str(u.get("ID") or u.get("id"))

    def add_userfield(self, entity: str, name: str, type_: str, label: str) -> None:
        self._call("POST", f"/{self.name}/userfields", {"entity": entity, "field_name": name, "type": type_,
                                                         "label": label})

    def faults(self, **kw: Any) -> None:
        self._call("PATCH", f"/{self.name}/faults", kw)

    def rest(self, method: str, params: dict[str, Any] | None = None) -> Any:
        body = self.http.post(self.webhook_url + method + ".json", json=params or {}, timeout=30).json()
        assert "error" not in body, f"{method}: {body}"
        return body["result"]

    def leads(self) -> list[dict[str, Any]]:
        return self.rest("crm.lead.list", {"select": ["*", "PHONE"], "order": {"ID": "ASC"}})

    def deals(self) -> list[dict[str, Any]]:
        return self.rest("crm.deal.list", {"select": ["*"], "order": {"ID": "ASC"}})

    def comments(self, entity_type: str, entity_id: Any) -> list[dict[str, Any]]:
        return self.rest("crm.timeline.comment.list", {"filter": {"ENTITY_TYPE": entity_type, "ENTITY_ID": entity_id},
                                                       "select": ["ID", "COMMENT", "AUTHOR_ID"]})


@dataclass
class ChatWorld:
    tmp: Path
    portal: Portal
    tg: Any                        # TelegramHandle
    vk: Any                        # VkHandle
    manager: str                   # the Telegram channel's operator
    vk_manager: str
    client_id: str
    open_deal: str
    port: int
    rt: Any = None
    server: Any = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tg_hook(self) -> str:
        return f"{self.base}/hooks/telegram/telegram"

    @property
    def vk_hook(self) -> str:
        return f"{self.base}/hooks/vk/vk"

    def config(self) -> Path:
        (self.tmp / "sync.toml").write_text(SYNC_TOML, encoding="utf-8")
        maps = [str(self.tmp / "sync.toml"), str(REPO / "mappings" / "bitrix24.toml"),
                str(REPO / "mappings" / "messengers.toml")]
        text = f"""
[daemon]
database_url = "sqlite:///{self.tmp}/syncd.db"
listen = "127.0.0.1:{self.port}"
mappings = {json.dumps(maps)}
state_dir = "{self.tmp}"

[push]
base_delay = 0.0

[systems.crm]
type = "bitrix24"
webhook_url = "{self.portal.webhook_url}"
rate = 500.0
burst = 1000.0

[systems.telegram]
type = "telegram"
bot_token = "${{TG_BOT_TOKEN}}"
secret_token = "${{TG_SECRET}}"
api_url = "{self.tg.url}"
webhook_url = "{self.tg_hook}"
manager = "{self.manager}"

[systems.vk]
type = "vk"
group_id = {self.vk.group_id}
confirmation = "{VK_CONFIRMATION}"
secret = "${{VK_SECRET}}"
access_token = "${{VK_TOKEN}}"
api_url = "{self.vk.api_url}"
manager = "{self.vk_manager}"
"""
        path = self.tmp / "config.toml"
        path.write_text(text, encoding="utf-8")
        return path

    @property
    def env(self) -> dict[str, str]:
        return {"TG_BOT_TOKEN": self.tg.token, "TG_SECRET": TG_SECRET, "VK_SECRET": VK_SECRET,
                "VK_TOKEN": self.vk.access_token}

    def runtime(self) -> Any:
        """syncd's runtime and its HTTP app (the webhooks), as `syncd run` serves them."""
        if self.rt is None:
            from syncd.config import load_settings
            from syncd.daemon.http import create_app
            from syncd.daemon.runtime import Runtime
            from syncd.sandbox.server import serve_in_thread

            self.rt = Runtime(load_settings(self.config(), env=self.env))
            self.server = serve_in_thread(create_app(self.rt), "127.0.0.1", self.port)
        return self.rt

    def sync(self, passes: int = 6) -> Any:
        """Pull every stream (the portal; Telegram's setWebhook), push; until quiet (the daemon's loop)."""
        from syncd.pipeline.counts import Counts

        rt = self.runtime()
        total = Counts()
        for _ in range(passes):
            c = rt.sync_once()
            total.add(c)
            if not (c.planned or c.pushed or c.created or c.updated):
                break
        return total

    def restart(self) -> Any:
        """The process ends (after its 200s) and starts again: a new Runtime over the same store."""
        self.stop_runtime()
        return self.runtime()

    def stop_runtime(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.rt is not None:
            self.rt.close()
            self.rt = None

    def messages(self) -> list[dict[str, Any]]:
        from sqlalchemy import select

        from syncd import schema
        from syncd.store import tables as t

        with self.runtime().store.begin() as c:
            return [schema.decode(f) for (f,) in c.execute(select(t.entities.c.fields)
                                                           .where(t.entities.c.type == "message"))]

    def close(self) -> None:
        self.stop_runtime()
        self.tg.stop()
        self.vk.stop()


def make_world(tmp: Path, sandbox_url: str) -> ChatWorld:
    from syncd.sandbox.messengers import start_telegram, start_vk

    portal = Portal(sandbox_url)
    # the user fields the example deal map names (an integrator adds them in the portal's settings)
    portal.add_userfield("deal", "UF_CRM_SHOP_ORDER", "string", "Номер заказа на сайте")
    portal.add_userfield("deal", "UF_CRM_FROM_SHOP", "boolean", "Заказ с сайта")
    portal.add_user("Пётр", "Кладовщиков")
    manager = portal.add_user("Анна", "Лебедева")
    vk_manager = portal.add_user("Вера", "Сидорова")
    other = portal.add_user("Борис", "Орлов")
    # a client a manager typed, with his own spelling of her phone, and her open deal
    client = str(portal.rest("crm.contact.add", {"fields": {
        "NAME": "Ольга", "LAST_NAME": "Смирнова", "ASSIGNED_BY_ID": other,
        "PHONE": [{"VALUE": CLIENT_PHONE_TYPED, "VALUE_TYPE": "MOBILE"}]}}))
    open_deal = str(portal.rest("crm.deal.add", {"fields": {
        "TITLE": "Самовары для чайной", "CONTACT_ID": client, "STAGE_ID": "NEW", "ASSIGNED_BY_ID": other}}))
    tg = start_telegram()
    vk = start_vk(confirmation_code=VK_CONFIRMATION, secret=VK_SECRET)
    return ChatWorld(tmp, portal, tg, vk, manager, vk_manager, client, open_deal, free_port())
