"""The `vk` connector: a VK community's Callback API server at `POST /hooks/vk/<system>`.

VK's protocol: the server address is confirmed first — a `confirmation` event whose answer must be
the community's confirmation string, as plain text; after that every event must be answered with
HTTP 200 and the body `ok`, or VK posts it again (and, after several failures in a row, stops
sending for a while). So:

  * an event of another community (`group_id`) is answered 403, whatever its type;
  * `confirmation` is answered with the configured string (no secret comes with it);
  * any other event without the configured `secret` (or with another) is answered 403 and nothing is
    stored;
  * `message_new` is committed to the store as a `chat` record, then answered `ok` (a failure to
    store is a 500: VK retries);
  * other events (message_reply — the community's own answers, typing, edits) are answered `ok` and
    ignored.

A message's record key is "<peer_id>:<conversation_message_id>" (unique per conversation, and the
same in every re-delivery of the event, whose event_id is the same too), so a redelivered event is
one record. The sender's name comes from users.get (cached in memory; a failure leaves it out and
the message is stored anyway — a name never costs a message). Attachments become links: a photo's
largest size, a document's URL, a voice message's mp3, a video's or wall post's vk.com page.
"""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import httpx
import structlog

from connectors.messengers.common import FIELDS, KIND, Store, TooLarge, chat_record, read_body, utc
from connectors.messengers.settings import VkSettings
from syncd.connector import BaseConnector, ConnectorContext, Health, LiveSchema, Route
from syncd.logs import register_secret

log = structlog.get_logger("syncd.vk")

PATH = "/hooks/vk/"
NAMES_CACHED = 10000


def _text(body: str, status: int = 200) -> Any:
    from starlette.responses import PlainTextResponse

    return PlainTextResponse(body, status_code=status)


class VkConnector(BaseConnector):
    def __init__(self, name: str, settings: VkSettings, ctx: ConnectorContext) -> None:
        self.name, self.settings, self.ctx = name, settings, ctx
        for s in (settings.secret, settings.access_token):
            register_secret(s.get_secret_value())
        self.streams = {}
        self.writes = frozenset()
        self.store = Store(name, ctx, "events")
        self.path = PATH + name
        self._names: OrderedDict[int, str] = OrderedDict()     # user id -> "Имя Фамилия"

    # -- connector protocol -----------------------------------------------------------------------
    def health(self) -> Health:
        return Health(True, f"Callback API at {self.path} (community {self.settings.group_id})")

    def describe(self) -> LiveSchema:
        return LiveSchema(kinds={KIND: set(FIELDS)})

    def http_routes(self) -> Sequence[Route]:
        return (Route(self.path, self.hook, ("POST",)),)

    # -- an event ---------------------------------------------------------------------------------
    async def hook(self, request: Any) -> Any:
        try:
            raw = await read_body(request, self.settings.max_body)
        except TooLarge:
            return _text("too large", 413)
        try:
            event = json.loads(raw)
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError:
            log.info("vk_event_refused", system=self.name, why="not JSON")
            return _text("bad request", 400)
        kind = str(event.get("type") or "")
        if str(event.get("group_id")) != str(self.settings.group_id):
            log.info("vk_event_refused", system=self.name, type=kind, why="another community's group_id")
            return _text("forbidden", 403)
        if kind == "confirmation":
            log.info("vk_confirmation", system=self.name)
            return _text(self.settings.confirmation)
        got = str(event.get("secret") or "")
        if not got or not secrets.compare_digest(got.encode(), self.settings.secret.get_secret_value().encode()):
            log.info("vk_event_refused", system=self.name, type=kind, why="missing or wrong secret")
            return _text("forbidden", 403)
        if kind != "message_new":
            log.debug("vk_event_ignored", system=self.name, type=kind)
            return _text("ok")
        obj = event.get("object") or {}
        msg = obj.get("message", obj) if isinstance(obj, dict) else None   # API < 5.103: the message itself
        if not isinstance(msg, dict) or msg.get("peer_id") is None:
            log.info("vk_event_ignored", system=self.name, type=kind, why="no message in the event")
            return _text("ok")
        if int(msg.get("out") or 0) == 1 or int(msg.get("from_id") or 0) < 0:
            return _text("ok")                      # the community's own message, not a client's
        name = await self._name(int(msg.get("from_id") or 0))
        rec = self.record(msg, name)
        try:
            await self.store.put([rec])
        except Exception as exc:  # noqa: BLE001 - not stored: VK must post it again
            log.error("vk_event_not_stored", system=self.name, event_id=event.get("event_id"),
                      error=type(exc).__name__)
            return _text("not stored", 500)
        log.info("vk_message", system=self.name, event_id=event.get("event_id"), record=rec.external_id,
                 retry=request.headers.get("x-retry-counter"))
        return _text("ok")

    def record(self, msg: dict[str, Any], name: str | None) -> Any:
        peer, cmid = msg["peer_id"], msg.get("conversation_message_id") or msg.get("id")
        lines = [str(msg["text"])] if msg.get("text") else []
        atts: list[dict[str, Any]] = []
        for a in msg.get("attachments") or ():
            link = _attachment(a)
            if link is not None:
                atts.append(link)
            elif isinstance(a, dict) and a.get("type") == "sticker":
                lines.append("Стикер")
        if msg.get("fwd_messages"):
            for f in msg["fwd_messages"]:
                if isinstance(f, dict) and f.get("text"):
                    lines.append(f"Переслано: {f['text']}")
        return chat_record(external_id=f"{peer}:{cmid}", body="\n".join(lines), sender=f"vk:{msg.get('from_id')}",
                           sender_name=name, username=None, message_id=f"vk:{peer}:{cmid}",
                           when=utc(msg.get("date")), chat=f"vk:{peer}", channel="vk", attachments=atts)

    async def _name(self, user_id: int) -> str | None:
        """The sender's «Имя Фамилия» (users.get), cached; None when VK does not answer."""
        if user_id <= 0:
            return None
        if user_id in self._names:
            self._names.move_to_end(user_id)
            return self._names[user_id]
        params = {"user_ids": str(user_id), "v": self.settings.api_version}
        headers = {"Authorization": f"Bearer {self.settings.access_token.get_secret_value()}"}
        body: Any = None
        try:
            async with httpx.AsyncClient(timeout=min(self.settings.timeout, 5.0)) as client:
                r = await client.post(self.settings.api_url + "users.get", data=params, headers=headers)
            body = r.json()
            user = body["response"][0]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            err = body.get("error") if isinstance(body, dict) else None
            log.warning("vk_users_get_failed", system=self.name, error=type(exc).__name__,
                        code=err.get("error_code") if isinstance(err, dict) else None)
            return None
        name = " ".join(p for p in (user.get("first_name"), user.get("last_name")) if p) or None
        if name:
            self._names[user_id] = name
            while len(self._names) > NAMES_CACHED:
                self._names.popitem(last=False)
        return name


def _attachment(a: Any) -> dict[str, Any] | None:
    """One attachment as a link (None for the kinds that have none)."""
    if not isinstance(a, dict):
        return None
    kind = a.get("type")
    obj = a.get(kind) if isinstance(kind, str) else None
    if not isinstance(obj, dict):
        return None
    if kind == "photo":
        sizes = [s for s in obj.get("sizes") or () if isinstance(s, dict) and s.get("url")]
        if not sizes:
            return None
        big = max(sizes, key=lambda s: int(s.get("width") or 0) * int(s.get("height") or 0))
        return {"name": "photo.jpg", "type": "image/jpeg", "url": big["url"]}
    if kind == "doc" and obj.get("url"):
        return {"name": obj.get("title") or f"document.{obj.get('ext') or 'bin'}", "type": obj.get("ext"),
                "size": obj.get("size"), "url": obj["url"]}
    if kind == "audio_message" and (obj.get("link_mp3") or obj.get("link_ogg")):
        return {"name": "voice.mp3", "type": "audio/mpeg", "url": obj.get("link_mp3") or obj.get("link_ogg")}
    if kind in ("video", "wall") and obj.get("owner_id") is not None and obj.get("id") is not None:
        return {"name": kind, "type": kind, "url": f"https://vk.com/{kind}{obj['owner_id']}_{obj['id']}"}
    if kind == "link" and obj.get("url"):
        return {"name": obj.get("title") or "link", "type": "link", "url": obj["url"]}
    return None
