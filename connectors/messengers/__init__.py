"""Messengers (issue 25): a Telegram bot and a VK community as sources of CRM activity.

Two connector types, registered as `telegram` (`connectors.messengers:telegram`) and `vk`
(`connectors.messengers:vk`). Both are push-based webhooks that only receive: each message is
committed to the store as a `chat` record (mappings/messengers.toml maps it to the canonical
`message`) before the platform gets its 200; what it becomes in the CRM — a new lead or deal, or
a timeline comment on the client's deal, contact or the chat's lead — is decided by the routing
stage (syncd/pipeline/route_chat.py) from the system's settings (connectors/messengers/settings.py).
"""

from __future__ import annotations

from typing import Any

from connectors.messengers.settings import ChatRouting, TelegramSettings, VkSettings
from connectors.messengers.telegram import TelegramConnector
from connectors.messengers.vk import VkConnector
from syncd.connector import ConnectorType


def telegram_factory(name: str, settings: TelegramSettings, ctx: Any) -> TelegramConnector:
    return TelegramConnector(name, settings, ctx)


def vk_factory(name: str, settings: VkSettings, ctx: Any) -> VkConnector:
    return VkConnector(name, settings, ctx)


telegram = ConnectorType(
    "telegram", TelegramSettings, telegram_factory,
    "a Telegram bot: Bot API webhook updates at POST /hooks/telegram/<system> (secret token header); "
    "messages, shared contacts (the phone), photos and documents (as links) become leads, deals or "
    "timeline comments through the routing stage; setWebhook at start when webhook_url is set")

vk = ConnectorType(
    "vk", VkSettings, vk_factory,
    "a VK community: Callback API at POST /hooks/vk/<system> (confirmation, secret key, message_new); "
    "messages become leads, deals or timeline comments through the routing stage")

__all__ = ["ChatRouting", "TelegramConnector", "TelegramSettings", "VkConnector", "VkSettings", "telegram",
           "telegram_factory", "vk", "vk_factory"]
