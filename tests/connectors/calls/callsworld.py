"""The calls suite's setting: a fresh sandbox portal set up as an integrator would (managers with
extensions, a client a manager typed by hand), the PBX sandbox (Zadarma webhooks and an Asterisk
AMI), and a Runtime built from a config file — the calls system, the portal as an OAuth
application (register/finish work only in an application's context), the example mappings —
served over HTTP as the daemon does. Passes are driven with `sync()`, never by sleeping."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import requests

from syncd.config import load_settings
from syncd.daemon.http import create_app
from syncd.daemon.runtime import Runtime
from syncd.sandbox import bitrix24, pbx
from syncd.sandbox.server import serve_in_thread
from syncd.store import utcnow

REPO = Path(__file__).resolve().parents[3]
MAPPINGS = [str(REPO / "mappings" / n) for n in ("sync.toml", "bitrix24.toml", "calls.toml")]
SECRET = "zadarma-secret"
CLIENT_PHONE = "8 (912) 345-67-01"       # as the manager typed it into the contact
CLIENT_E164 = "+79123456701"              # as the PBX gives the caller


class World:
    def __init__(self, tmp: Path, *, ami: bool = True) -> None:
        self.tmp = tmp
        self.b24 = bitrix24.start(rate_limit=False)
        self.ctl = self.b24.url + "/_sandbox/default"
        self.webhook_url = str(self.b24.extra["webhook_url"])
        self.pbx_h = pbx.start(webhook_url=None, webhook_secret=SECRET, auth_fail_delay=0.0)
        self.pbx: pbx.Pbx = self.pbx_h.extra["state"]
        self.use_ami = ami
        # the company's managers: extensions 101 and 102 on the PBX and in the portal (UF_PHONE_INNER)
        self.anna = self.add_user("Анна", "Смирнова", "101")
        self.boris = self.add_user("Борис", "Петров", "102")
        # a known client, typed by hand by Boris (his own manager), the phone in a spelling of his own
        self.client_id = int(self.rest("crm.contact.add", {"fields": {
            "NAME": "Дмитрий", "LAST_NAME": "Волков", "ASSIGNED_BY_ID": self.boris,
            "PHONE": [{"VALUE": CLIENT_PHONE, "VALUE_TYPE": "MOBILE"}]}}))
        self.rt: Runtime | None = None
        self.http: Any = None
        self.config = self._write_config()

    # -- the portal --------------------------------------------------------------------------------
    def _j(self, method: str, path: str, body: Any = None) -> Any:
        r = requests.request(method, self.ctl + path, json=body, timeout=30)
        assert r.status_code < 300, (method, path, r.status_code, r.text)
        return r.json()

    def add_user(self, name: str, last: str, inner: str) -> int:
        return int(self._j("POST", "/users", {"name": name, "last_name": last, "workday": "OPENED",
                                              "phone_inner": inner})["ID"])

    def set_user(self, uid: int, **kw: Any) -> None:
        self._j("PATCH", f"/users/{uid}", kw)

    def rest(self, method: str, params: dict[str, Any] | None = None) -> Any:
        body = requests.post(self.webhook_url + method + ".json", json=params or {}, timeout=30).json()
        assert "error" not in body, body
        return body["result"]

    def activities(self, **flt: Any) -> list[dict[str, Any]]:
        return self.rest("crm.activity.list", {"filter": {"TYPE_ID": 2, **flt}, "select": ["*", "COMMUNICATIONS"]})

    def leads(self) -> list[dict[str, Any]]:
        return self.rest("crm.lead.list", {"select": ["*", "PHONE"]})

    def tasks(self) -> list[dict[str, Any]]:
        return self.rest("tasks.task.list", {"select": ["ID", "TITLE", "RESPONSIBLE_ID", "UF_CRM_TASK"]})["tasks"]

    def contact(self, cid: int) -> dict[str, Any]:
        return self.rest("crm.contact.get", {"id": cid})

    # -- syncd ------------------------------------------------------------------------------------
    def _write_config(self) -> Path:
        tok = self._j("POST", "/oauth/tokens", {"user_id": 1})
        portal = tok["rest_url"].removesuffix("/").removesuffix("/rest")
        crm = {"portal_url": portal, "client_id": tok["client_id"], "client_secret": tok["client_secret"],
               "access_token": tok["access_token"], "refresh_token": tok["refresh_token"],
               "oauth_url": tok["token_url"], "rate": 500.0, "burst": 1000.0}
        calls: dict[str, Any] = {"vendor": "zadarma", "secret": SECRET, "crm": "crm", "presence_ttl": 0.2}
        if self.use_ami:
            calls.update(ami_host="127.0.0.1", ami_port=self.pbx_h.ami_port,
                         ami_user=self.pbx_h.extra["ami_username"], ami_secret=self.pbx_h.extra["ami_secret"],
                         ami_backoff=0.2)
        lines = ["[daemon]", f'database_url = "sqlite:///{self.tmp}/syncd.db"', 'listen = "127.0.0.1:0"',
                 f"mappings = {json.dumps(MAPPINGS)}", f'state_dir = "{self.tmp}"', "",
                 "[push]", "base_delay = 0.0", "", "[systems.calls]", 'type = "calls"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in calls.items()]
        lines += ["", "[systems.crm]", 'type = "bitrix24"'] + [f"{k} = {json.dumps(v)}" for k, v in crm.items()]
        for stream in ("contacts", "leads"):
            lines += ["", "[[jobs]]", 'system = "crm"', f'stream = "{stream}"', 'every = "3s"']
        path = self.tmp / "config.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def start(self) -> Runtime:
        """The daemon: a Runtime from the config, its HTTP app served, the PBX's webhooks pointed at it."""
        self.rt = Runtime(load_settings(self.config))
        self.http = serve_in_thread(create_app(self.rt))
        requests.patch(self.pbx_h.url + "/_sandbox/webhook", json={"url": self.hook_url, "secret": SECRET},
                       timeout=10)
        if self.use_ami:
            ami = self.rt.connectors["calls"].ami      # type: ignore[attr-defined]
            assert ami.connected.wait(10), ami.last_error
        return self.rt

    def stop(self) -> None:
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.rt is not None:
            self.rt.close()
            self.rt = None

    @property
    def hook_url(self) -> str:
        return self.http.url + "/hooks/calls/calls"

    def route(self, caller: str) -> str:
        r = requests.get(self.http.url + "/hooks/calls/route", params={"caller": caller}, timeout=10)
        assert r.status_code == 200, r.text
        return r.text

    def sync(self, rounds: int = 8, now: dt.datetime | None = None) -> None:
        """Passes (pull, push the outbox, tick the rules) until one changes nothing."""
        assert self.rt is not None
        for _ in range(rounds):
            c = self.rt.sync_once()
            t = self.rt.tick_rules(now=now or utcnow())
            if t:
                self.rt.push_all()
            if not (c.created or c.updated or c.pushed or c.planned or t):
                return
        raise AssertionError(f"no quiescence after {rounds} passes: {c.as_dict()}")

    def wait_for(self, cond: Any, what: str, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out: {what}")

    def close(self) -> None:
        self.stop()
        self.pbx_h.stop()
        self.b24.stop()
