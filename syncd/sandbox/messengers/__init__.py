"""Messenger sandboxes: Telegram (Bot API + webhook sender) and VK (Callback API sender + API methods).

Faithful to what the platforms send and answer, as far as their documentation and public threads tell;
what is assumed is listed in each module's docstring (telegram.py, vk.py), with the sources. Shares no
code with any connector. Both start a loopback server like the other sandboxes::

    from syncd.sandbox.messengers import start_telegram, start_vk

    tg = start_telegram(webhook_url="http://127.0.0.1:8080/tg", secret_token="s3cr3t")
    ann = tg.user("Анна", username="anna")
    tg.start(ann, "lead-42"); tg.send_text(ann, "Хочу заказать"); tg.share_contact(ann, "+79161234567")
    tg.send_photo(ann, jpeg_bytes); tg.send_document(ann, pdf_bytes, file_name="order.pdf")
    tg.sent_messages(); tg.log(); tg.webhook_info(); tg.stop()
    # the fake Bot API: tg.url + "/bot<token>/<method>", files at tg.url + "/file/bot<token>/<path>"

    vk = start_vk(confirmation_code="a1b2c3d4", secret="s3cr3t")
    ivan = vk.user("Иван", "Петров")
    vk.confirm("http://127.0.0.1:8080/vk"); vk.send_text(ivan, "Хочу заказать"); vk.send_photo(ivan, jpeg)
    vk.message_reply(ivan, "Спасибо"); vk.sent_messages(); vk.log(); vk.stop()
    # the fake API: vk.api_url == vk.url + "/method/"

Every event method takes ``duplicate=True`` (post it twice), ``secret="wrong"`` or ``secret=None``
(a wrong or missing secret) and ``url=`` (another target), and returns a ``Delivery`` with the body and
each attempt. The senders post synchronously from the calling thread, one event at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syncd.sandbox.server import ServerHandle, serve_in_thread

from . import telegram, vk
from ._common import SAMPLE_JPEG
from .telegram import BotState, TgChat, TgUser, WebhookSender
from .vk import CallbackSender, NotConfirmed, VkState, VkUser

__all__ = ["TelegramHandle", "VkHandle", "start_telegram", "start_vk", "TgUser", "TgChat", "VkUser",
           "NotConfirmed", "telegram", "vk"]


@dataclass
class TelegramHandle(ServerHandle):
    """The fake Bot API server plus the webhook sender; ``extra`` has "state" and "sender"."""

    @property
    def state(self) -> BotState:
        return self.extra["state"]

    @property
    def sender(self) -> WebhookSender:
        return self.extra["sender"]

    @property
    def token(self) -> str:
        return self.state.token

    @property
    def api_url(self) -> str:
        return f"{self.url}/bot{self.token}"

    @property
    def file_url(self) -> str:
        return f"{self.url}/file/bot{self.token}"

    def user(self, *args: Any, **kwargs: Any) -> TgUser:
        return self.sender.user(*args, **kwargs)

    def send_text(self, user: TgUser, text: str, **opts: Any) -> telegram.Delivery:
        return self.sender.send_text(user, text, **opts)

    def start(self, user: TgUser, payload: str | None = None, **opts: Any) -> telegram.Delivery:
        return self.sender.start(user, payload, **opts)

    def share_contact(self, user: TgUser, phone: str, **opts: Any) -> telegram.Delivery:
        return self.sender.share_contact(user, phone, **opts)

    def send_photo(self, user: TgUser, data: bytes = SAMPLE_JPEG, **opts: Any) -> telegram.Delivery:
        return self.sender.send_photo(user, data, **opts)

    def send_document(self, user: TgUser, data: bytes, **opts: Any) -> telegram.Delivery:
        return self.sender.send_document(user, data, **opts)

    def edit_text(self, user: TgUser, message_id: int, text: str, **opts: Any) -> telegram.Delivery:
        return self.sender.edit_text(user, message_id, text, **opts)

    def set_webhook(self, url: str, secret_token: str | None = None) -> None:
        """As if the bot had called setWebhook (a connector normally does it itself)."""
        params: dict[str, Any] = {"url": url}
        if secret_token:
            params["secret_token"] = secret_token
        self.state.call("setWebhook", params)

    def webhook_info(self) -> dict[str, Any]:
        return self.state.call("getWebhookInfo", {})

    def sent_messages(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """Messages the bot sent (sendMessage results, oldest first)."""
        with self.state.lock:
            return [s["message"] for s in self.state.sent
                    if chat_id is None or s["message"]["chat"]["id"] == chat_id]

    def log(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Calls and deliveries: kind "api" (Bot API calls), "file" (downloads), "webhook" (posts)."""
        return self.state.log.entries(kind)


def start_telegram(*, token: str | None = None, webhook_url: str | None = None,
                   secret_token: str | None = None, retry_delays: tuple[float, ...] = (0.05, 0.1, 0.2),
                   timeout: float = 10.0, require_https: bool = False, strict_chats: bool = True,
                   bot_username: str = "syncd_sandbox_bot", host: str = "127.0.0.1",
                   port: int = 0) -> TelegramHandle:
    """Start the fake Bot API; with ``webhook_url`` the webhook is set as if by setWebhook."""
    state = BotState(token, bot_username=bot_username, require_https=require_https, strict_chats=strict_chats)
    sender = WebhookSender(state, retry_delays=retry_delays, timeout=timeout)
    h = serve_in_thread(telegram.create_app(state), host, port)
    handle = TelegramHandle(h.server, h.thread, h.host, h.port, {"state": state, "sender": sender}, h.scheme)
    if webhook_url:
        handle.set_webhook(webhook_url, secret_token)
    return handle


@dataclass
class VkHandle(ServerHandle):
    """The fake VK API plus the Callback API sender; ``extra`` has "state" and "sender"."""

    @property
    def state(self) -> VkState:
        return self.extra["state"]

    @property
    def sender(self) -> CallbackSender:
        return self.extra["sender"]

    @property
    def api_url(self) -> str:
        return f"{self.url}/method/"

    @property
    def access_token(self) -> str:
        return self.state.access_token

    @property
    def group_id(self) -> int:
        return self.state.group_id

    @property
    def confirmation_code(self) -> str:
        return self.state.confirmation_code

    def user(self, *args: Any, **kwargs: Any) -> VkUser:
        return self.sender.user(*args, **kwargs)

    def confirm(self, url: str) -> bool:
        return self.sender.confirm(url)

    def resume(self) -> None:
        self.sender.resume()

    def send_text(self, user: VkUser, text: str, **opts: Any) -> vk.Delivery:
        return self.sender.send_text(user, text, **opts)

    def send_photo(self, user: VkUser, data: bytes = SAMPLE_JPEG, **opts: Any) -> vk.Delivery:
        return self.sender.send_photo(user, data, **opts)

    def send_document(self, user: VkUser, data: bytes, **opts: Any) -> vk.Delivery:
        return self.sender.send_document(user, data, **opts)

    def message_reply(self, user: VkUser, text: str, **opts: Any) -> vk.Delivery:
        return self.sender.message_reply(user, text, **opts)

    def sent_messages(self, peer_id: int | None = None) -> list[dict[str, Any]]:
        """What messages.send sent (oldest first): id, conversation_message_id, peer_id, text, ..."""
        with self.state.lock:
            return [dict(s) for s in self.state.sent if peer_id is None or s["peer_id"] == peer_id]

    def log(self, kind: str | None = None) -> list[dict[str, Any]]:
        """kind "api" (method calls), "confirmation", "callback" (each event post)."""
        return self.state.log.entries(kind)


def start_vk(*, group_id: int = 218000000, access_token: str | None = None,
             confirmation_code: str | None = None, secret: str | None = None,
             api_version: str = vk.API_VERSION,
             retry_delays: tuple[float, ...] = (0.05, 0.1, 0.2), disable_after: int | None = 5,
             timeout: float = 10.0, host: str = "127.0.0.1", port: int = 0) -> VkHandle:
    """Start the fake VK API; ``confirm(url)`` then adds the Callback API server address."""
    state = VkState(group_id, access_token=access_token, confirmation_code=confirmation_code, secret=secret,
                    api_version=api_version)
    sender = CallbackSender(state, retry_delays=retry_delays, disable_after=disable_after, timeout=timeout)
    h = serve_in_thread(vk.create_app(state), host, port)
    state.public_url = h.url
    return VkHandle(h.server, h.thread, h.host, h.port, {"state": state, "sender": sender}, h.scheme)
