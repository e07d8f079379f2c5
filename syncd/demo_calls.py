"""The demo's phone system and Telegram bot (Bitrix24 demo): a PBX sandbox posting Zadarma's call
webhooks and a Telegram sandbox, set up as an integrator would (the managers' extensions 101–103 in
the portal, the PBX's webhook and the bot's webhook pointed at the daemon), then a few calls and a
chat message once the daemon runs. Kept apart from syncd/demo.py like demo_forms.

The portal logs calls only for an application (telephony.externalcall.* refuse an inbound webhook,
as the cloud does), so the demo's CRM connects as the portal's OAuth application.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

PBX_SECRET = "demo-pbx-" + secrets.token_hex(6)
TG_SECRET = "demo-tg-" + secrets.token_hex(10)
EXTENSIONS = {"Анна Смирнова": "101", "Игорь Петров": "102", "Ольга Кузнецова": "103"}
UNKNOWN = "+7 916 555-01-02"          # a caller nobody knows: the portal makes a lead
MISSED = "+7 925 444-03-04"           # nobody answers: a lead, then a task «Перезвонить»


@dataclass
class DemoCalls:
    pbx: Any
    tg: Any
    portal: Any                                   # the portal's sandbox state
    known: str = ""                               # the phone of the story's client known to the CRM
    placed: list[str] = field(default_factory=list)

    def stop(self) -> None:
        for h in (self.pbx, self.tg):
            h.stop()


def start(b24_handle: Any, known_phone: str) -> DemoCalls:
    from syncd.sandbox import pbx
    from syncd.sandbox.messengers import start_telegram

    p = b24_handle.extra["state"].portal()
    by_name = {f"{u['NAME']} {u.get('LAST_NAME', '')}".strip(): int(u["ID"]) for u in p.users.values()}
    h = pbx.start()
    for name, ext in EXTENSIONS.items():
        if name in by_name:
            p.set_presence(by_name[name], phone_inner=ext)
        h.extra["state"].add_extension(ext, name)
    return DemoCalls(h, start_telegram(), b24_handle, known_phone)


def crm_lines(b24_handle: Any) -> list[str]:
    """[systems.crm] as the portal's OAuth application (its tokens from the sandbox's control API)."""
    r = requests.post(b24_handle.url + "/_sandbox/default/oauth/tokens", json={"user_id": 1}, timeout=10)
    r.raise_for_status()
    tok = r.json()
    info = b24_handle.extra["state"].portal().info()
    crm = {"portal_url": tok["rest_url"].removesuffix("/").removesuffix("/rest"), "client_id": tok["client_id"],
           "client_secret": tok["client_secret"], "access_token": tok["access_token"],
           "refresh_token": tok["refresh_token"], "oauth_url": tok["token_url"],
           "application_token": info.get("application_token", "")}
    return ["[systems.crm]", 'type = "bitrix24"'] + [f"{k} = {json.dumps(v)}" for k, v in crm.items()] + [""]


def config_lines(d: DemoCalls) -> list[str]:
    return ["[systems.calls]", 'type = "calls"', 'vendor = "zadarma"', f'secret = "{PBX_SECRET}"',
            'crm = "crm"', "presence_ttl = 5.0", "",
            "[systems.telegram]", 'type = "telegram"', f'bot_token = "{d.tg.token}"', f'secret_token = "{TG_SECRET}"',
            f'api_url = "{d.tg.url}"', 'manager = "2"', ""]


def mapping_files(maps: Path) -> list[str]:
    return [str(maps / n) for n in ("calls.toml", "messengers.toml") if (maps / n).exists()]


def after_start(d: DemoCalls, daemon_url: str) -> None:
    """The PBX's and the bot's webhooks point at the daemon; three calls and a chat message."""
    requests.patch(d.pbx.url + "/_sandbox/webhook", json={"url": daemon_url + "/hooks/calls/calls",
                                                          "secret": PBX_SECRET}, timeout=10).raise_for_status()
    d.tg.set_webhook(daemon_url + "/hooks/telegram/telegram", TG_SECRET)
    pbx = d.pbx.extra["state"]
    if d.known:
        pbx.call(d.known, "101", answered=True, talk_seconds=95)          # a client the CRM knows
    pbx.call(UNKNOWN, "102", answered=True, talk_seconds=40)
    pbx.call(MISSED, "103", answered=False)
    d.placed = [x for x in (d.known, UNKNOWN, MISSED) if x]
    d.tg.send_text(d.tg.user("Марина", "Кузьмина"), "Здравствуйте! Есть ли термосы на 1 литр?")


def _rest(d: DemoCalls, method: str, params: dict[str, Any]) -> Any:
    """A read through the portal's REST API (its inbound webhook), as anyone checks it."""
    r = requests.post(str(d.portal.extra["webhook_url"]) + method + ".json", json=params, timeout=10)
    r.raise_for_status()
    return r.json().get("result")


def _calls(d: DemoCalls) -> list[dict[str, Any]]:
    return [c for c in _rest(d, "voximplant.statistic.get", {}) or [] if c.get("PHONE_NUMBER")]


def _chat_leads(d: DemoCalls) -> list[dict[str, Any]]:
    return [x for x in _rest(d, "crm.lead.list", {"select": ["ID", "TITLE"]}) or []
            if str(x.get("TITLE", "")).startswith("Telegram")]


def settled(d: DemoCalls) -> bool:
    """Every placed call is a finished call in the portal, and the chat's lead is there."""
    return len(_calls(d)) >= len(d.placed) and bool(_chat_leads(d))


def summary(d: DemoCalls) -> list[str]:
    out = []
    for c in _calls(d):
        where = f"{c.get('CRM_ENTITY_TYPE') or '?'} {c.get('CRM_ENTITY_ID') or '-'}".lower()
        status = "answered" if str(c.get("CALL_FAILED_CODE")) == "200" else f"code {c.get('CALL_FAILED_CODE')}"
        out.append(f"  call {c['PHONE_NUMBER']} -> Bitrix24 call on {where}, {c.get('CALL_DURATION') or 0} s, {status}")
    for lead in _chat_leads(d):
        out.append(f"  telegram -> lead {lead['ID']} «{lead['TITLE']}»")
    return out
