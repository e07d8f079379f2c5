"""The `telegram` connector: a bot's webhook at `POST /hooks/telegram/<system>`.

Every Update is checked (the `X-Telegram-Bot-Api-Secret-Token` header must be the configured
`secret_token`, else 403 and nothing is stored), turned into a `chat` record and committed to the
store before Telegram gets its 200. Record keys make a re-delivery one record: a message is
"<chat id>:<message id>" (an update posted twice, or re-posted after a lost answer, carries the same
update_id and the same message), an edit "<chat id>:<message id>:edit:<edit_date>" (its own
record, routed as a comment saying it was edited). Updates of other kinds (channel posts, button
presses, membership changes) are answered 200 and ignored.

What the record holds: the text or caption; a contact the user shared — their own (the contact's
user_id is the sender) gives `Phone` in E.164, someone else's card is only text; photos,
documents, voice, video as links. Telegram's file URLs contain the bot token, so they are never
stored, logged or put in the CRM: a link is this daemon's own
`<files_url>/hooks/telegram/<system>/file/<file_id>?sig=<HMAC>`, served by asking getFile and
fetching the bytes when somebody opens it (Telegram's links expire after an hour, file_ids do not).
Without a public address (`files_url` / `webhook_url`) an attachment is "tg-file:<file_id>".

With `webhook_url` set, stream `webhook` calls setWebhook(url, secret_token) at start and hourly,
only when Telegram's URL differs or the settings changed since syncd last set it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import mimetypes
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import structlog

from connectors.messengers.common import (FIELDS, KIND, Store, TooLarge, chat_record, e164, read_body, utc)
from connectors.messengers.settings import TelegramSettings
from syncd.connector import Batch, BaseConnector, ConnectorContext, Health, LiveSchema, Route, StreamSpec
from syncd.logs import register_secret

log = structlog.get_logger("syncd.telegram")

PATH = "/hooks/telegram/"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# the message kinds with a file: kind -> (a name when Telegram gives none, a MIME type when none)
MEDIA = {"document": ("document", "application/octet-stream"), "video": ("video.mp4", "video/mp4"),
         "voice": ("voice.ogg", "audio/ogg"), "audio": ("audio.mp3", "audio/mpeg"),
         "video_note": ("video_note.mp4", "video/mp4"), "animation": ("animation.mp4", "video/mp4")}


def _response(body: bytes | str = b"", status: int = 200, media_type: str = "text/plain") -> Any:
    from starlette.responses import Response

    return Response(body, status_code=status, media_type=media_type)


class TelegramConnector(BaseConnector):
    def __init__(self, name: str, settings: TelegramSettings, ctx: ConnectorContext) -> None:
        self.name, self.settings, self.ctx = name, settings, ctx
        for s in (settings.bot_token, settings.secret_token):
            register_secret(s.get_secret_value())          # masked wherever a log line might carry it
        self.writes = frozenset()
        self.streams = ({"webhook": StreamSpec("webhook", (), "setWebhook with the configured URL and secret",
                                               default_interval=3600.0)} if settings.webhook_url else {})
        self.store = Store(name, ctx, "updates")
        mapper = getattr(ctx, "mapper", None)
        self.region = getattr(getattr(mapper, "ms", None), "region", None) or "RU"
        self.path = PATH + name

    # -- connector protocol -----------------------------------------------------------------------
    def health(self) -> Health:
        return Health(True, f"webhook at {self.path}")

    def describe(self) -> LiveSchema:
        return LiveSchema(kinds={KIND: set(FIELDS)})

    def http_routes(self) -> Sequence[Route]:
        return (Route(self.path, self.hook, ("POST",)),
                Route(self.path + "/file/{file_id}", self.file, ("GET",)))

    def read(self, stream: str, cursor: str | None, *, since: Any = None) -> Iterator[Batch]:
        if stream == "webhook":
            self.ensure_webhook()
        return iter(())

    # -- Bot API ----------------------------------------------------------------------------------
    def _method_url(self, method: str) -> str:
        return f"{self.settings.api_url}/bot{self.settings.bot_token.get_secret_value()}/{method}"

    def _call(self, method: str, params: dict[str, Any]) -> Any:
        """A Bot API call; its URL holds the token, so errors name the method only."""
        try:
            r = httpx.post(self._method_url(method), json=params, timeout=self.settings.timeout)
            body = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise RuntimeError(f"Telegram {method}: {type(exc).__name__}") from None
        if not body.get("ok"):
            raise RuntimeError(f"Telegram {method}: {body.get('error_code')} {body.get('description')}")
        return body.get("result")

    def ensure_webhook(self) -> bool:
        """setWebhook once per URL+secret (Telegram's own URL is checked too); True when it was called."""
        url = self.settings.webhook_url
        if not url:
            return False
        secret = self.settings.secret_token.get_secret_value()
        # what was set, as a digest: the state table never holds the secret itself
        want = hashlib.sha256(f"{url}\n{secret}".encode()).hexdigest()
        info = self._call("getWebhookInfo", {})
        if info.get("url") == url and self.ctx.state_get("webhook") == want:
            return False
        self._call("setWebhook", {"url": url, "secret_token": secret,
                                  "allowed_updates": ["message", "edited_message"]})
        self.ctx.state_set("webhook", want)
        log.info("telegram_webhook_set", system=self.name, url=url)
        return True

    # -- links to files ---------------------------------------------------------------------------
    def _sig(self, file_id: str) -> str:
        key = self.settings.secret_token.get_secret_value().encode()
        return hmac.new(key, f"{self.name}:{file_id}".encode(), hashlib.sha256).hexdigest()[:32]

    def file_link(self, file_id: str) -> str:
        base = self.settings.link_base
        if not base:
            return f"tg-file:{file_id}"
        return f"{base}{self.path}/file/{file_id}?sig={self._sig(file_id)}"

    async def file(self, request: Any) -> Any:
        """A photo or document a client sent, fetched from Telegram now (the link in the CRM)."""
        file_id = request.path_params["file_id"]
        if not secrets.compare_digest(request.query_params.get("sig", ""), self._sig(file_id)):
            return _response("forbidden", 403)
        try:
            async with httpx.AsyncClient(timeout=self.settings.timeout) as client:
                r = await client.post(self._method_url("getFile"), json={"file_id": file_id})
                info = r.json()
                if not info.get("ok"):
                    return _response("not found", 404)
                path = info["result"]["file_path"]
                token = self.settings.bot_token.get_secret_value()
                got = await client.get(f"{self.settings.api_url}/file/bot{token}/{path}")
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            log.warning("telegram_file_failed", system=self.name, error=type(exc).__name__)
            return _response("unavailable", 502)
        if got.status_code != 200:
            return _response("not found", 404)
        # Telegram serves every file as octet-stream: a photo is told by its extension, so a browser shows it
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return _response(got.content, 200, kind)

    # -- an update --------------------------------------------------------------------------------
    async def hook(self, request: Any) -> Any:
        got = request.headers.get(SECRET_HEADER) or ""
        if not got or not secrets.compare_digest(got.encode(), self.settings.secret_token.get_secret_value().encode()):
            log.info("telegram_update_refused", system=self.name, why="missing or wrong secret token header")
            return _response("forbidden", 403)
        try:
            raw = await read_body(request, self.settings.max_body)
        except TooLarge:
            return _response("too large", 413)
        try:
            update = json.loads(raw)
            if not isinstance(update, dict) or "update_id" not in update:
                raise ValueError("not an Update")
        except ValueError:
            log.info("telegram_update_refused", system=self.name, why="not a JSON Update")
            return _response("bad request", 400)
        rec = self.record(update)
        if rec is None:
            log.info("telegram_update_ignored", system=self.name, update_id=update.get("update_id"),
                     kinds=sorted(k for k in update if k != "update_id"))
            return _response()
        try:
            await self.store.put([rec])
        except Exception as exc:  # noqa: BLE001 - not stored: Telegram must post it again
            log.error("telegram_update_not_stored", system=self.name, update_id=update["update_id"],
                      error=type(exc).__name__)
            return _response("not stored", 500)
        log.info("telegram_update", system=self.name, update_id=update["update_id"], record=rec.external_id)
        return _response()

    def record(self, update: dict[str, Any]) -> Any:
        """The `chat` record of an Update (None for the kinds syncd does not take)."""
        msg = update.get("message")
        edited = msg is None and update.get("edited_message") is not None
        msg = msg or update.get("edited_message")
        if not isinstance(msg, dict) or not isinstance(msg.get("chat"), dict):
            return None
        frm = msg.get("from") or {}
        if frm.get("is_bot"):
            return None                     # the bot's own (or another bot's) messages are not a client's
        chat_id, mid = msg["chat"]["id"], msg.get("message_id")
        name = " ".join(p for p in (frm.get("first_name"), frm.get("last_name")) if p) or None
        lines: list[str] = []
        text = msg.get("text") or msg.get("caption")
        if text:
            lines.append(str(text))
        phone = None
        contact = msg.get("contact")
        if isinstance(contact, dict):
            shared = e164(contact.get("phone_number"), self.region)
            if contact.get("user_id") is not None and contact.get("user_id") == frm.get("id"):
                # the user's own number (the request_contact button): who they are
                phone = shared or None
                lines.append(f"Поделился номером телефона: {shared or contact.get('phone_number')}")
            else:
                who = " ".join(p for p in (contact.get("first_name"), contact.get("last_name")) if p)
                lines.append(f"Контакт: {who} {shared or contact.get('phone_number') or ''}".strip())
        loc = msg.get("location")
        if isinstance(loc, dict):
            lines.append(f"Геопозиция: {loc.get('latitude')}, {loc.get('longitude')}")
        if msg.get("sticker"):
            lines.append(f"Стикер {msg['sticker'].get('emoji') or ''}".strip())
        if edited:
            lines.insert(0, "(сообщение исправлено)")
        atts = self._attachments(msg)
        ext = f"{chat_id}:{mid}" + (f":edit:{msg.get('edit_date') or 0}" if edited else "")
        return chat_record(external_id=ext, body="\n".join(lines), sender=f"tg:{frm.get('id', chat_id)}",
                           sender_name=name, username=frm.get("username"), message_id=f"tg:{chat_id}:{mid}",
                           when=utc(msg.get("edit_date") if edited else msg.get("date")),
                           chat=f"tg:{chat_id}", channel="telegram", attachments=atts, phone=phone)

    def _attachments(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        photo = msg.get("photo")
        if isinstance(photo, list) and photo:
            # PhotoSize array, smallest first: the largest is what a manager wants to open
            big = max(photo, key=lambda p: (p.get("width", 0) * p.get("height", 0), p.get("file_size", 0)))
            out.append({"name": "photo.jpg", "type": "image/jpeg", "size": big.get("file_size"),
                        "url": self.file_link(str(big["file_id"]))})
        for kind, (default_name, default_type) in MEDIA.items():
            m = msg.get(kind)
            if isinstance(m, dict) and m.get("file_id"):
                out.append({"name": m.get("file_name") or default_name, "type": m.get("mime_type") or default_type,
                            "size": m.get("file_size"), "url": self.file_link(str(m["file_id"]))})
        return out
