"""Telegram: a fake Bot API server and a webhook sender that posts ``Update`` objects as Telegram does.

Checked with python-telegram-bot 22.8 run unchanged (tests/sandbox/test_messenger_sandboxes.py): every
Update the sender makes parses with ``telegram.Update.de_json`` leaving no unknown field in
``api_kwargs``, and a ``telegram.Bot(token, base_url=h.url + "/bot", base_file_url=h.url + "/file/bot")``
calls getMe, setWebhook, getWebhookInfo, deleteWebhook, sendMessage and getFile and downloads files.

Sources (searched copies of the official pages and of public threads):
  * core.telegram.org/bots/api — "Making requests" (GET/POST, query string, urlencoded, JSON or multipart;
    answer ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code", "description"}``; "Making
    requests when getting updates": a webhook answer may carry a method call), ``setWebhook`` ("In case of
    an unsuccessful request [a status other than 2XY] we will give up after a reasonable amount of
    attempts"; ``secret_token`` 1-256 chars ``A-Za-z0-9_-``, sent back in the header
    ``X-Telegram-Bot-Api-Secret-Token``), ``getWebhookInfo`` (url, has_custom_certificate,
    pending_update_count, last_error_date, last_error_message, max_connections, allowed_updates),
    ``getFile`` / ``File`` (download at ``/file/bot<token>/<file_path>``, link valid >= 1 hour, 20 MB),
    ``Update``, ``Message``, ``User``, ``Chat``, ``Contact``, ``PhotoSize``, ``Document``, ``MessageEntity``
    (bots/api#file as quoted by bump.sh/joscha-goetzer/doc/botapi and tg-bot-sdk.website/api/types/file);
  * core.telegram.org/bots/features#deep-linking (from memory, not re-read here):
    ``t.me/<bot>?start=<payload>`` arrives as the text ``/start <payload>`` with a ``bot_command`` entity
    over ``/start``;
  * the 401 body ``{"ok":false,"error_code":401,"description":"Unauthorized"}`` for a wrong token
    (eternnoir/pyTelegramBotAPI#168, nickoala/telepot#365; tdlib/telegram-bot-api#80: "the only way to
    receive 401 is a wrong bot token"); a malformed token gets 404 "Not Found" (python-telegram-bot's own
    comment in ``request/_baserequest.py``: 401 is for *correctly formatted* tokens that are not valid).

Start it::

    from syncd.sandbox.messengers import start_telegram
    h = start_telegram()                        # -> TelegramHandle (a ServerHandle)
    h.token, h.api_url ("<url>/bot<token>"), h.file_url ("<url>/file/bot<token>")
    # the connector calls setWebhook(url, secret_token=...) itself, or:
    h = start_telegram(webhook_url="http://127.0.0.1:8080/tg", secret_token="s3cr3t")
    ann = h.user(first_name="Анна", username="anna")            # a scripted Telegram user
    h.start(ann, "lead-42")            # /start lead-42 (deep link)
    h.send_text(ann, "Хочу заказать")
    h.share_contact(ann, "+79161234567")
    h.send_photo(ann, b"...jpeg...", caption="вот")
    h.send_document(ann, b"%PDF...", file_name="order.pdf", mime_type="application/pdf")
    h.edit_text(ann, message_id, "исправлено")
    h.send_text(ann, "again", duplicate=True)         # the same update posted twice
    h.send_text(ann, "x", secret="wrong") / secret=None (no header)
    h.sent_messages(chat_id=ann.id)     # what the bot sent through sendMessage (or a webhook answer)
    h.log()                             # every API call and every webhook attempt
    h.stop()

Each ``send_*`` returns a ``Delivery`` (the update dict, ``attempts`` with their status or error,
``delivered``). Updates get increasing ``update_id``s (the first one random, as Telegram's is arbitrary);
message ids increase per chat.

Fake Bot API (``/bot<token>/<method>``, GET or POST, parameters from the query string, a urlencoded,
multipart or JSON body; method names case-insensitive as in Telegram):
  getMe, setWebhook (url, secret_token, max_connections, allowed_updates, drop_pending_updates; answers
  ``result: true`` with description "Webhook was set" / "Webhook is already set" / "Webhook was deleted"),
  getWebhookInfo, deleteWebhook ("Webhook was deleted" / "Webhook is already deleted"), sendMessage
  (chat_id, text; 400 "Bad Request: message text is empty", "Bad Request: message is too long" over
  4096 chars, "Bad Request: chat not found" for a chat no scripted user has written from), getFile
  (400 "Bad Request: invalid file_id"). ``/file/bot<token>/<file_path>`` serves the bytes. Unknown
  method -> 404 "Not Found". Wrong token -> 401 "Unauthorized"; malformed token -> 404 "Not Found".

Assumed, not confirmed (each is an option where it matters):
  * Retry schedule: undocumented ("a reasonable amount of attempts"). Here: on a non-2xx answer (3xx
    included: redirects are not followed), a timeout or a refused connection the update is posted again
    after each delay of ``retry_delays`` (default 0.05, 0.1, 0.2 s — compressed for tests; Telegram's real
    spacing is much longer and grows), then given up. While it is undelivered it counts in
    ``pending_update_count``; failures set ``last_error_date`` and ``last_error_message`` ("Wrong response
    from the webhook: 500 Internal Server Error", "Connection refused", "Read timeout expired" — the
    wording seen in public reports). Updates are posted one at a time, in order.
  * ``duplicate=True`` posts an update a second time after it was accepted (what a client sees when
    Telegram did not get the answer in time); Telegram itself does not promise exactly-once delivery.
  * setWebhook accepts ``http://`` URLs (Telegram demands HTTPS on ports 443, 80, 88 or 8443);
    ``start_telegram(require_https=True)`` gives Telegram's 400 "Bad Request: bad webhook: An HTTPS URL
    must be provided for webhook".
  * file_id / file_unique_id are opaque random strings shaped like Telegram's (base64url); every size of a
    photo is a file of its own holding the bytes given (Telegram stores a rescaled image per size).
  * Phone numbers in ``contact`` are sent exactly as given (Telegram clients send the user's own number
    with or without a leading "+": a connector must handle both).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._common import SAMPLE_JPEG, CallLog, opaque_id, request_params

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
_TOKEN_RE = re.compile(r"^\d+:[A-Za-z0-9_-]{30,}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_DEFAULT = object()


def make_token(bot_id: int | None = None) -> str:
    """A token in Telegram's format: ``<bot id>:<35 characters>``."""
    bot_id = bot_id or 7000000000 + secrets.randbelow(999999999)
    return f"{bot_id}:AA{secrets.token_urlsafe(33)[:33]}"


@dataclass
class TgUser:
    """A scripted Telegram user (a private chat with the bot has the user's id)."""

    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = "ru"

    def to_user(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            d["last_name"] = self.last_name
        if self.username:
            d["username"] = self.username
        if self.language_code:
            d["language_code"] = self.language_code
        return d

    def to_chat(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "first_name": self.first_name}
        if self.last_name:
            d["last_name"] = self.last_name
        if self.username:
            d["username"] = self.username
        d["type"] = "private"
        return d


@dataclass
class TgChat:
    """A group the bot is in (``type`` "group" or "supergroup"; ids are negative)."""

    id: int
    title: str
    type: str = "supergroup"

    def to_chat(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "type": self.type}


@dataclass
class StoredFile:
    file_id: str
    file_unique_id: str
    file_path: str
    data: bytes


@dataclass
class Delivery:
    """One update and what happened to each POST of it."""

    update: dict[str, Any]
    attempts: list[dict[str, Any]] = field(default_factory=list)
    delivered: bool = False

    @property
    def update_id(self) -> int:
        return int(self.update["update_id"])

    @property
    def message(self) -> dict[str, Any]:
        return self.update.get("message") or self.update.get("edited_message") or {}


class BotState:
    """Everything the fake Bot API and the webhook sender share."""

    def __init__(self, token: str | None = None, *, bot_first_name: str = "Syncd Sandbox Bot",
                 bot_username: str = "syncd_sandbox_bot", require_https: bool = False,
                 strict_chats: bool = True) -> None:
        self.token = token or make_token()
        self.bot_user = {"id": int(self.token.split(":", 1)[0]), "is_bot": True,
                         "first_name": bot_first_name, "username": bot_username}
        self.require_https = require_https
        self.strict_chats = strict_chats
        self.lock = threading.RLock()
        self.log = CallLog()
        self.webhook: dict[str, Any] = {"url": "", "secret_token": None, "max_connections": 40,
                                        "allowed_updates": None}
        self.pending_update_count = 0
        self.last_error_date: int | None = None
        self.last_error_message: str | None = None
        self.files: dict[str, StoredFile] = {}
        self.files_by_path: dict[str, StoredFile] = {}
        self.chats: dict[int, dict[str, Any]] = {}
        self.message_ids: dict[int, int] = {}
        self.sent: list[dict[str, Any]] = []

    # -- shared bookkeeping ----------------------------------------------------------------------
    def next_message_id(self, chat_id: int) -> int:
        with self.lock:
            self.message_ids[chat_id] = self.message_ids.get(chat_id, 0) + 1
            return self.message_ids[chat_id]

    def store_file(self, data: bytes, folder: str, ext: str, id_prefix: str) -> StoredFile:
        with self.lock:
            path = f"{folder}/file_{len(self.files)}.{ext}"
            f = StoredFile(opaque_id(id_prefix, 48), opaque_id("AQAD", 9), path, bytes(data))
            self.files[f.file_id] = f
            self.files_by_path[path] = f
            return f

    # -- Bot API methods (params already merged; raise ApiError for an error answer) ------------
    def call(self, method: str, params: dict[str, Any], source: str = "api") -> Any:
        handler = _METHODS.get(method.lower())
        if handler is None:
            raise ApiError(404, "Not Found")
        return handler(self, params)


class ApiError(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code, self.description = code, description


def _json_param(value: Any) -> Any:
    """Telegram reads array/object parameters JSON-serialized in forms and as they are in JSON."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _bool_param(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("true", "1")
    return bool(value)


def _get_me(st: BotState, p: dict[str, Any]) -> Any:
    return {**st.bot_user, "can_join_groups": True, "can_read_all_group_messages": False,
            "supports_inline_queries": False, "can_connect_to_business": False, "has_main_web_app": False}


def _set_webhook(st: BotState, p: dict[str, Any]) -> Any:
    url = str(p.get("url") or "")
    secret = p.get("secret_token")
    if secret not in (None, "") and not _SECRET_RE.match(str(secret)):
        raise ApiError(400, "Bad Request: secret token contains unallowed characters")
    if url and st.require_https and not url.lower().startswith("https://"):
        raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
    with st.lock:
        old = dict(st.webhook)
        if not url:
            st.webhook.update(url="", secret_token=None)
            return _Described(True, "Webhook was deleted" if old["url"] else "Webhook is already deleted")
        allowed = _json_param(p["allowed_updates"]) if p.get("allowed_updates") else None
        st.webhook.update(url=url, secret_token=str(secret) if secret else None,
                          max_connections=int(p.get("max_connections") or 40), allowed_updates=allowed)
        if _bool_param(p.get("drop_pending_updates", False)):
            st.pending_update_count = 0
        same = old["url"] == url and old["secret_token"] == st.webhook["secret_token"]
        return _Described(True, "Webhook is already set" if same else "Webhook was set")


def _delete_webhook(st: BotState, p: dict[str, Any]) -> Any:
    with st.lock:
        had = bool(st.webhook["url"])
        st.webhook.update(url="", secret_token=None)
        if _bool_param(p.get("drop_pending_updates", False)):
            st.pending_update_count = 0
    return _Described(True, "Webhook was deleted" if had else "Webhook is already deleted")


def _get_webhook_info(st: BotState, p: dict[str, Any]) -> Any:
    with st.lock:
        info: dict[str, Any] = {"url": st.webhook["url"], "has_custom_certificate": False,
                                "pending_update_count": st.pending_update_count}
        if st.webhook["url"]:
            info["max_connections"] = st.webhook["max_connections"]
            if st.webhook["allowed_updates"]:
                info["allowed_updates"] = st.webhook["allowed_updates"]
        if st.last_error_date:
            info["last_error_date"] = st.last_error_date
            info["last_error_message"] = st.last_error_message
        return info


def _send_message(st: BotState, p: dict[str, Any]) -> Any:
    if "chat_id" not in p or p["chat_id"] in ("", None):
        raise ApiError(400, "Bad Request: chat_id is empty")
    text = p.get("text")
    if text is None or str(text).strip() == "":
        raise ApiError(400, "Bad Request: message text is empty")
    text = str(text)
    if len(text) > 4096:
        raise ApiError(400, "Bad Request: message is too long")
    try:
        chat_id = int(p["chat_id"])
    except (TypeError, ValueError):
        raise ApiError(400, "Bad Request: chat not found") from None
    with st.lock:
        chat = st.chats.get(chat_id)
        if chat is None:
            if st.strict_chats:
                raise ApiError(400, "Bad Request: chat not found")
            chat = {"id": chat_id, "first_name": "User", "type": "private"}
        msg: dict[str, Any] = {"message_id": st.next_message_id(chat_id),
                               "from": dict(st.bot_user), "chat": dict(chat),
                               "date": int(time.time()), "text": text}
        markup = _json_param(p.get("reply_markup")) if p.get("reply_markup") else None
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            msg["reply_markup"] = markup
        st.sent.append({"message": msg, "params": dict(p)})
        return msg


def _get_file(st: BotState, p: dict[str, Any]) -> Any:
    f = st.files.get(str(p.get("file_id") or ""))
    if f is None:
        raise ApiError(400, "Bad Request: invalid file_id")
    return {"file_id": f.file_id, "file_unique_id": f.file_unique_id, "file_size": len(f.data),
            "file_path": f.file_path}


class _Described:
    """A result Telegram answers with a ``description`` next to it (setWebhook, deleteWebhook)."""

    def __init__(self, result: Any, description: str) -> None:
        self.result, self.description = result, description


_METHODS = {"getme": _get_me, "setwebhook": _set_webhook, "deletewebhook": _delete_webhook,
            "getwebhookinfo": _get_webhook_info, "sendmessage": _send_message, "getfile": _get_file}


def _error(code: int, description: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error_code": code, "description": description}, status_code=code)


def create_app(state: BotState) -> Starlette:
    """The fake Bot API as an ASGI app."""

    def token_error(token: str) -> JSONResponse | None:
        if token == state.token:
            return None
        if not _TOKEN_RE.match(token):
            return _error(404, "Not Found")
        return _error(401, "Unauthorized")

    async def method(request: Request) -> Response:
        token, name = request.path_params["token"], request.path_params["method"]
        params = await request_params(request)
        bad = token_error(token)
        if bad is not None:
            state.log.add("api", method=name, params=_loggable(params), status=bad.status_code)
            return bad
        try:
            result = state.call(name, params)
        except ApiError as e:
            state.log.add("api", method=name, params=_loggable(params), status=e.code, error=e.description)
            return _error(e.code, e.description)
        state.log.add("api", method=name, params=_loggable(params), status=200)
        if isinstance(result, _Described):
            return JSONResponse({"ok": True, "result": result.result, "description": result.description})
        return JSONResponse({"ok": True, "result": result})

    async def file(request: Request) -> Response:
        token, path = request.path_params["token"], request.path_params["path"]
        bad = token_error(token)
        f = state.files_by_path.get(path) if bad is None else None
        state.log.add("file", path=path, status=bad.status_code if bad is not None else (200 if f else 404))
        if bad is not None:
            return bad
        if f is None:
            return _error(404, "Not Found")
        return Response(f.data, media_type="application/octet-stream")

    return Starlette(routes=[
        Route("/bot{token}/{method}", method, methods=["GET", "POST"]),
        Route("/file/bot{token}/{path:path}", file, methods=["GET"]),
    ])


def _loggable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (f"<{len(v)} bytes>" if isinstance(v, bytes) else v) for k, v in params.items()}


class WebhookSender:
    """Posts Updates to the webhook set in ``state`` as Telegram does (see the module docstring)."""

    def __init__(self, state: BotState, *, retry_delays: tuple[float, ...] = (0.05, 0.1, 0.2),
                 timeout: float = 10.0, first_update_id: int | None = None) -> None:
        self.state = state
        self.retry_delays = tuple(retry_delays)
        self.timeout = timeout
        self._update_id = first_update_id or 100000000 + secrets.randbelow(800000000)
        self._user_ids = 500000000 + secrets.randbelow(400000000)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()       # one update at a time, in order
        self.deliveries: list[Delivery] = []

    # -- scripted users -----------------------------------------------------------------------------
    def user(self, first_name: str = "Иван", last_name: str | None = None, username: str | None = None,
             *, id: int | None = None, language_code: str | None = "ru") -> TgUser:
        with self._lock:
            if id is None:
                self._user_ids += 1 + secrets.randbelow(1000)
                id = self._user_ids
        return TgUser(id, first_name, last_name, username, language_code)

    # -- what users do --------------------------------------------------------------------------------
    def send_text(self, user: TgUser, text: str, *, chat: TgChat | None = None, **opts: Any) -> Delivery:
        return self._message(user, chat, {"text": text}, **opts)

    def start(self, user: TgUser, payload: str | None = None, **opts: Any) -> Delivery:
        """``/start <payload>``, what a ``t.me/<bot>?start=<payload>`` deep link sends."""
        text = "/start" + (f" {payload}" if payload else "")
        return self._message(user, None, {"text": text,
                                          "entities": [{"offset": 0, "length": 6, "type": "bot_command"}]},
                             **opts)

    def share_contact(self, user: TgUser, phone: str, *, first_name: str | None = None,
                      last_name: str | None = None, own: bool = True, **opts: Any) -> Delivery:
        """The user shares a contact: their own (``request_contact`` button; ``user_id`` is theirs) or,
        with ``own=False``, someone else's card (no ``user_id``, a vCard)."""
        contact: dict[str, Any] = {"phone_number": phone,
                                   "first_name": first_name or (user.first_name if own else "Контакт")}
        ln = last_name if last_name is not None else (user.last_name if own else None)
        if ln:
            contact["last_name"] = ln
        if own:
            contact["user_id"] = user.id
        else:
            contact["vcard"] = (f"BEGIN:VCARD\nVERSION:3.0\nFN:{contact['first_name']}\n"
                                f"TEL;TYPE=CELL:{phone}\nEND:VCARD")
        return self._message(user, None, {"contact": contact}, **opts)

    def send_photo(self, user: TgUser, data: bytes = SAMPLE_JPEG, *,
                   caption: str | None = None,
                   sizes: tuple[tuple[int, int], ...] = ((90, 67), (320, 240), (800, 600), (1280, 960)),
                   chat: TgChat | None = None, **opts: Any) -> Delivery:
        """A photo: ``photo`` is an array of PhotoSize, smallest first, each its own file."""
        photo = []
        for w, h in sizes:
            f = self.state.store_file(data, "photos", "jpg", "AgACAgIAAxkBAAI")
            photo.append({"file_id": f.file_id, "file_unique_id": f.file_unique_id,
                          "file_size": len(data), "width": w, "height": h})
        extra: dict[str, Any] = {"photo": photo}
        if caption:
            extra["caption"] = caption
        return self._message(user, chat, extra, **opts)

    def send_document(self, user: TgUser, data: bytes, *, file_name: str = "document.pdf",
                      mime_type: str = "application/pdf", caption: str | None = None,
                      chat: TgChat | None = None, **opts: Any) -> Delivery:
        ext = file_name.rsplit(".", 1)[-1] if "." in file_name else "bin"
        f = self.state.store_file(data, "documents", ext, "BQACAgIAAxkBAAI")
        extra: dict[str, Any] = {"document": {"file_name": file_name, "mime_type": mime_type,
                                              "file_id": f.file_id, "file_unique_id": f.file_unique_id,
                                              "file_size": len(data)}}
        if caption:
            extra["caption"] = caption
        return self._message(user, chat, extra, **opts)

    def edit_text(self, user: TgUser, message_id: int, text: str, *, chat: TgChat | None = None,
                  date: int | None = None, **opts: Any) -> Delivery:
        """``edited_message``: the message as edited, with its original id and date and an edit_date."""
        now = int(time.time())
        msg = {"message_id": message_id, "from": user.to_user(),
               "chat": (chat or user).to_chat(), "date": date or self._sent_date(message_id, now),
               "edit_date": now, "text": text}
        return self._post({"edited_message": msg}, **opts)

    # -- internals ------------------------------------------------------------------------------------
    def _sent_date(self, message_id: int, default: int) -> int:
        for d in reversed(self.deliveries):
            m = d.update.get("message")
            if m and m["message_id"] == message_id:
                return int(m["date"])
        return default

    def _message(self, user: TgUser, chat: TgChat | None, extra: dict[str, Any], **opts: Any) -> Delivery:
        chat_d = (chat or user).to_chat()
        with self.state.lock:
            self.state.chats[chat_d["id"]] = chat_d
        msg = {"message_id": self.state.next_message_id(chat_d["id"]), "from": user.to_user(),
               "chat": chat_d, "date": int(time.time()), **extra}
        return self._post({"message": msg}, **opts)

    def _post(self, body: dict[str, Any], *, secret: Any = _DEFAULT, duplicate: bool = False,
              url: str | None = None) -> Delivery:
        with self._lock:
            self._update_id += 1
            update = {"update_id": self._update_id, **body}
        delivery = Delivery(update)
        self.deliveries.append(delivery)
        with self._send_lock:
            self._deliver(delivery, secret, url)
            if duplicate and delivery.delivered:
                self._deliver(delivery, secret, url)
        return delivery

    def _deliver(self, delivery: Delivery, secret: Any, url: str | None) -> None:
        st = self.state
        with st.lock:
            target = url or st.webhook["url"]
            token = st.webhook["secret_token"] if secret is _DEFAULT else secret
            if not target:
                raise RuntimeError("no webhook is set: call setWebhook first (Telegram would keep the "
                                   "update for getUpdates)")
            st.pending_update_count += 1
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers[SECRET_HEADER] = str(token)
        body = json.dumps(delivery.update, ensure_ascii=False).encode("utf-8")
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
                for attempt, delay in enumerate((0.0, *self.retry_delays)):
                    if delay:
                        time.sleep(delay)
                    record: dict[str, Any] = {"attempt": attempt + 1, "url": target}
                    try:
                        r = client.post(target, content=body, headers=headers)
                    except httpx.TimeoutException:
                        record["error"] = "Read timeout expired"
                    except httpx.TransportError:
                        record["error"] = "Connection refused"
                    else:
                        record["status"] = r.status_code
                        if 200 <= r.status_code < 300:
                            delivery.attempts.append(record)
                            st.log.add("webhook", update_id=delivery.update_id, **record)
                            delivery.delivered = True
                            self._webhook_answer(r)
                            return
                        phrase = r.reason_phrase or ""
                        record["error"] = f"Wrong response from the webhook: {r.status_code} {phrase}".strip()
                    delivery.attempts.append(record)
                    st.log.add("webhook", update_id=delivery.update_id, **record)
                    with st.lock:
                        st.last_error_date = int(time.time())
                        st.last_error_message = record["error"]
        finally:
            with st.lock:
                st.pending_update_count = max(0, st.pending_update_count - 1)

    def _webhook_answer(self, r: httpx.Response) -> None:
        """A webhook answer may carry a Bot API call (``method`` + parameters); Telegram runs it and
        reports nothing back."""
        ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
        params: dict[str, Any] | None = None
        try:
            if ctype == "application/json":
                data = r.json()
                params = data if isinstance(data, dict) else None
            elif ctype == "application/x-www-form-urlencoded":
                params = dict(httpx.QueryParams(r.text))
        except ValueError:
            params = None
        if not params or "method" not in params:
            return
        name = str(params.pop("method"))
        try:
            self.state.call(name, params, source="webhook-answer")
            self.state.log.add("api", method=name, params=params, status=200, via="webhook-answer")
        except ApiError as e:
            self.state.log.add("api", method=name, params=params, status=e.code, error=e.description,
                               via="webhook-answer")
