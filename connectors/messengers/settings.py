"""Settings of the messenger connectors: one system per bot (`type = "telegram"`) or community
(`type = "vk"`). Each also says where its chats go in the CRM (read by the routing stage,
syncd/pipeline/route_chat.py), with the same keys as a mailbox's (connectors/imap/settings.py).

    [systems.telegram]
    type = "telegram"
    bot_token = "${TG_BOT_TOKEN}"
    secret_token = "${TG_SECRET}"
    webhook_url = "https://sync.example.ru/hooks/telegram/telegram"
    manager = "Анна Лебедева"

    [systems.vk]
    type = "vk"
    group_id = 218000000
    confirmation = "a1b2c3d4"
    secret = "${VK_SECRET}"
    access_token = "${VK_TOKEN}"
    manager = "12"

Secrets are `SecretStr`: never printed, never logged. An unknown key stops the daemon at start.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

# Telegram accepts 1-256 characters A-Z a-z 0-9 _ - as a webhook's secret_token (Bot API setWebhook)
_TG_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class ChatRouting(BaseModel):
    """Where a channel's chats go in the CRM: the keys a mailbox has, for a chat."""

    model_config = ConfigDict(extra="forbid")

    # somebody new writing: a new lead, or a deal in `pipeline` at `stage` (CRMs run without leads)
    target: Literal["lead", "deal"] = "lead"
    pipeline: str | None = None                 # the deal's pipeline when target = "deal": name or CATEGORY_ID
    stage: str | None = None                    # the deal's first stage when target = "deal": name or STAGE_ID
    # the channel's operator: responsible for its new leads/deals (e-mail, «Имя Фамилия» or user id;
    # names are resolved through the portal at start, syncd/names.py); absent: the CRM's default
    manager: str | None = None
    # the new lead's / deal's source, by name or SOURCE_ID. Bitrix24 has no built-in messenger source:
    # add one («Telegram») in the portal's settings and name it here; OTHER («Другое») until then
    source: str = "OTHER"
    # deal stages that mean closed (a known client's message goes to an open deal only); the part after
    # "C<n>:" is compared, so "WON" covers every pipeline's won stage
    closed_stages: list[str] = Field(default_factory=lambda: ["WON", "LOSE", "APOLOGY"])
    # the title of a new lead / deal: this, then ": <the sender's name>"
    title: str | None = None

    @model_validator(mode="after")
    def _deal_target(self) -> "ChatRouting":
        if self.target == "deal" and not (self.pipeline is not None and self.stage):
            raise ValueError("target = \"deal\" needs pipeline and stage")
        return self


class TelegramSettings(ChatRouting):
    """A Telegram bot whose updates come to `POST /hooks/telegram/<system>` (a webhook)."""

    # the bot's token from @BotFather ("123456:AA..."): used for setWebhook and getFile; it is part of
    # Telegram's file URLs, so those are never stored or logged (see `files_url`)
    bot_token: SecretStr
    # the webhook's secret: Telegram sends it in X-Telegram-Bot-Api-Secret-Token with every update; an
    # update without it (or with another) is answered 403 and nothing is stored
    secret_token: SecretStr
    api_url: str = "https://api.telegram.org"   # the Bot API's base (a local Bot API server, the sandbox)
    # where Telegram must post updates (this daemon's public HTTPS address + /hooks/telegram/<system>):
    # when set, the connector calls setWebhook with it and the secret (stream `webhook`, at start and
    # then hourly, only when Telegram's URL differs or the settings changed); absent: set it yourself
    webhook_url: str | None = None
    # the public base address of this daemon for links to photos and documents put in the CRM
    # (…/hooks/telegram/<system>/file/<file_id>?sig=…, served by fetching the file from Telegram on
    # demand, so the token never leaves syncd); default: the scheme and host of `webhook_url`.
    # With neither, an attachment is stored as "tg-file:<file_id>" (no link)
    files_url: str | None = None
    timeout: float = Field(10.0, gt=0)           # seconds per Bot API request
    max_body: int = Field(1024 * 1024, ge=1024)   # bytes; a larger update is answered 413 (Telegram's are small)

    @field_validator("api_url", "webhook_url", "files_url")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _secret(self) -> "TelegramSettings":
        if not _TG_SECRET.match(self.secret_token.get_secret_value()):
            raise ValueError("secret_token: 1-256 characters A-Z, a-z, 0-9, _ and - (Telegram's rule), "
                             "e.g. `openssl rand -hex 24`")
        if len(self.secret_token.get_secret_value()) < 16:
            raise ValueError("secret_token: at least 16 characters (it is all that stands between the "
                             "internet and your CRM's leads)")
        return self

    @property
    def link_base(self) -> str | None:
        if self.files_url:
            return self.files_url
        if self.webhook_url:
            m = re.match(r"^(https?://[^/]+)", self.webhook_url)
            return m.group(1) if m else None
        return None


class VkSettings(ChatRouting):
    """A VK community whose Callback API server is `POST /hooks/vk/<system>`."""

    # the community's id (positive): an event of another community is answered 403
    group_id: int = Field(gt=0)
    # the string VK expects back to the confirmation request (community settings → Callback API)
    confirmation: str = Field(min_length=1)
    # the Callback API's secret key (set the same in the community's settings): an event without it
    # (or with another) is answered 403 and nothing is stored
    secret: SecretStr
    # a community access token with the "messages" right: users.get for the sender's name
    access_token: SecretStr
    api_url: str = "https://api.vk.ru/method/"   # VK API's base (the sandbox's in tests)
    api_version: str = "5.199"                   # the `v` parameter of API calls
    timeout: float = Field(10.0, gt=0)           # seconds per API request
    max_body: int = Field(1024 * 1024, ge=1024)   # bytes; a larger event is answered 413

    @field_validator("api_url")
    @classmethod
    def _slash(cls, v: str) -> str:
        return v if v.endswith("/") else v + "/"

    @model_validator(mode="after")
    def _secret(self) -> "VkSettings":
        if len(self.secret.get_secret_value()) < 8:
            raise ValueError("secret: at least 8 characters (VK allows up to 50 letters and digits)")
        return self
