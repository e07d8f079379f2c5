"""VK: a Callback API sender that posts community events as VK does, and a fake ``api.vk.ru/method/``.

Checked with vkbottle 4.11.0 / vkbottle-types 5.199.99.22 run unchanged
(tests/sandbox/test_messenger_sandboxes.py): every event body validates as vkbottle-types'
``MessageNew`` / ``MessageReply`` model, and vkbottle's ``API`` (its ``API_URL`` attribute set to
``h.api_url``) calls messages.send and users.get and gets ``VKAPIError[5]`` for a wrong token.

Sources (searched copies of the official pages and of public code):
  * dev.vk.com/ru/api/callback/getting-started (and vk.com/dev/callback_api): the server is added and
    confirmed first — VK posts a ``confirmation`` notification and the server "must return the given
    string"; after that, events as JSON; "in answer to every notification your server must send the
    string ok" with HTTP 200, and "if a server returns several errors in a row, Callback API will
    temporarily stop sending notifications to it"; a secret key, when set, comes in ``secret``; up to 10
    servers, each with its own event set and API version;
  * dev.vk.com/ru/api/community-events/json-schema (not re-read here; its content as mirrored by
    vkbottle-types and by VKCOM/vk-java-sdk#215): ``message_new`` object is ``{message, client_info}``
    (since API 5.103), ``message_reply`` object is the message itself; client_info
    has button_actions, keyboard, inline_keyboard, carousel, lang_id; body fields ``group_id``, ``type``,
    ``event_id`` (unique; "if it passed twice or more you should ignore it" — vk-io's CallbackBase
    typedoc), ``v`` (the API version of the server's settings), ``object``, ``secret``;
  * vkbottle-types (generated from VK's JSON schema, API 5.199): the message fields (id, date, peer_id,
    from_id, text, out, version, conversation_message_id, attachments, fwd_messages, important,
    is_hidden, random_id), photo (album_id, date, id, owner_id, has_tags, sizes[type,width,height,url])
    and doc (id, owner_id, title, size, ext, date, type, url) attachments;
  * dev.vk.com/method/messages.send: ``random_id`` "unique identifier to avoid resending the message"
    (unique per app and sender over the whole history), ``peer_id`` (user id; 2000000000 + chat id),
    ``message`` required unless ``attachment``; returns the message id;
  * public handlers that skip redelivered events by the header ``X-Retry-Counter`` (found in several
    public bots through code search) — VK marks its retries with it.

Start it::

    from syncd.sandbox.messengers import start_vk
    h = start_vk(group_id=218000000, confirmation_code="a1b2c3d4", secret="s3cr3t")
    h.api_url                         # "<url>/method/" — set as the API base (api.vk.ru/method/ at VK)
    h.access_token                    # the community token the API accepts
    ivan = h.user("Иван", "Петров")   # a scripted VK user (users.get knows him)
    h.confirm("http://127.0.0.1:8080/vk")   # -> True iff the answer was exactly the code
    h.send_text(ivan, "Хочу заказать")      # message_new
    h.send_photo(ivan, b"...", text="вот")   # message_new with a photo attachment (URL served here)
    h.send_document(ivan, b"%PDF", title="order.pdf")
    h.message_reply(ivan, "Спасибо!")        # message_reply (the community answered)
    h.send_text(ivan, "x", duplicate=True) / secret="wrong" / secret=None (no "secret" key)
    h.sent_messages(peer_id=ivan.id); h.log(); h.stop()

Each event method returns a ``Delivery`` (the body, each attempt's status/answer, ``delivered``).

Fake API (``/method/<name>``, GET or POST, parameters from the query string and a urlencoded or
multipart body; ``access_token`` parameter or ``Authorization: Bearer``; always HTTP 200):
``{"response": ...}`` or ``{"error": {"error_code", "error_msg", "request_params": [{"key", "value"}]}}``.
  * messages.send (peer_id | user_id, random_id, message | attachment) -> message id. A random_id seen
    before (non-zero) answers the first message's id and sends nothing. Errors: 100 for a missing
    peer or message, 901 "Can't send messages for users without permission" to a user who never wrote.
  * users.get (user_ids: ids or screen names, comma-separated; fields: screen_name, sex, photo_100) ->
    ``[{id, first_name, last_name, can_access_closed, is_closed, ...}]``; 113 "Invalid user id".
  * wrong token -> 5 "User authorization failed: invalid access_token (4)."; no ``v`` -> 8
    "Invalid request: v is required"; unknown method -> 3 "Unknown method passed".

Assumed, not confirmed:
  * Retries: the count and spacing are undocumented. Here a failed event (not HTTP 200 with the body
    exactly ``ok``, or no connection) is posted again after each of ``retry_delays`` (default 0.05, 0.1,
    0.2 s — compressed for tests), each retry with ``X-Retry-Counter: <n>``; after ``disable_after``
    failed events in a row (default 5) the server is suspended: further events are not posted (logged as
    "suspended") until ``h.resume()``.
  * Confirmation: the answer must be HTTP 200 and exactly the code (no surrounding whitespace); events
    are posted only to a confirmed URL (``NotConfirmed`` otherwise). The confirmation body carries
    ``type`` and ``group_id`` only.
  * ``event_id`` is 40 hex characters (the form seen in VK's events), ``v`` defaults to "5.199".
  * random_id idempotence is per community (not per peer), random_id 0 is not checked, and a repeat
    answers the original id. Error codes and texts 3, 5, 113, 901 are VK's as widely quoted (not
    re-read from dev.vk.com/ru/reference/errors here); the texts of 8 and 100 are paraphrased.
  * ``message_reply`` from the API has ``from_id = -group_id``; a manager's reply adds
    ``admin_author_id``. messages.send does not itself post a message_reply event here.
"""

from __future__ import annotations

import json
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

from ._common import SAMPLE_JPEG, CallLog, request_params

API_VERSION = "5.199"
RETRY_HEADER = "X-Retry-Counter"
CLIENT_INFO = {"button_actions": ["text", "vkpay", "open_app", "location", "open_link", "callback",
                                  "intent_subscribe", "intent_unsubscribe"],
               "keyboard": True, "inline_keyboard": True, "carousel": True, "lang_id": 0}
_DEFAULT = object()


class NotConfirmed(RuntimeError):
    """VK posts events only to a server address that passed the confirmation request."""


@dataclass
class VkUser:
    id: int
    first_name: str
    last_name: str
    screen_name: str | None = None
    sex: int = 0

    def to_api(self, fields: set[str]) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "first_name": self.first_name, "last_name": self.last_name,
                             "can_access_closed": True, "is_closed": False}
        if "screen_name" in fields:
            d["screen_name"] = self.screen_name or f"id{self.id}"
        if "sex" in fields:
            d["sex"] = self.sex
        if "photo_100" in fields:
            d["photo_100"] = "https://vk.com/images/camera_100.png"
        return d


@dataclass
class Delivery:
    body: dict[str, Any]
    attempts: list[dict[str, Any]] = field(default_factory=list)
    delivered: bool = False

    @property
    def message(self) -> dict[str, Any]:
        obj = self.body.get("object") or {}
        return obj.get("message", obj)


class VkState:
    """The community, its users, messages and the Callback server settings."""

    def __init__(self, group_id: int = 218000000, *, access_token: str | None = None,
                 confirmation_code: str | None = None, secret: str | None = None,
                 api_version: str = API_VERSION) -> None:
        self.group_id = group_id
        self.access_token = access_token or ("vk1.a." + secrets.token_urlsafe(60))
        self.confirmation_code = confirmation_code or secrets.token_hex(4)
        self.secret = secret
        self.api_version = api_version
        self.public_url = ""                       # set by start(): where attachment URLs point
        self.lock = threading.RLock()
        self.log = CallLog()
        self.users: dict[int, VkUser] = {}
        self.allowed_peers: set[int] = set()       # users who wrote to the community
        self.message_id = 0
        self.cmids: dict[int, int] = {}
        self.random_ids: dict[int, int] = {}
        self.sent: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.confirmed_urls: set[str] = set()
        self.failures_in_row = 0
        self.suspended = False

    def new_ids(self, peer_id: int) -> tuple[int, int]:
        with self.lock:
            self.message_id += 1
            self.cmids[peer_id] = self.cmids.get(peer_id, 0) + 1
            return self.message_id, self.cmids[peer_id]

    def store_file(self, data: bytes, ext: str) -> str:
        with self.lock:
            name = f"{secrets.token_hex(8)}.{ext}"
            self.files[name] = bytes(data)
            return f"{self.public_url}/_sandbox/files/{name}"


class VkApiError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _messages_send(st: VkState, p: dict[str, Any]) -> Any:
    peer = p.get("peer_id") or p.get("user_id")
    try:
        peer_id = int(peer) if peer not in (None, "") else None
    except (TypeError, ValueError):
        peer_id = None
    if peer_id is None:
        raise VkApiError(100, "One of the parameters specified was missing or invalid: peer_id is undefined")
    text, attachment = str(p.get("message") or ""), str(p.get("attachment") or "")
    if not text and not attachment:
        raise VkApiError(100, "One of the parameters specified was missing or invalid: message is empty")
    try:
        random_id = int(p.get("random_id") or 0)
    except (TypeError, ValueError):
        raise VkApiError(100, "One of the parameters specified was missing or invalid: "
                              "random_id not integer") from None
    with st.lock:
        if random_id and random_id in st.random_ids:
            return st.random_ids[random_id]
        if peer_id < 2000000000 and peer_id not in st.allowed_peers:
            raise VkApiError(901, "Can't send messages for users without permission")
        mid, cmid = st.new_ids(peer_id)
        if random_id:
            st.random_ids[random_id] = mid
        st.sent.append({"id": mid, "conversation_message_id": cmid, "peer_id": peer_id, "text": text,
                        "attachment": attachment, "random_id": random_id, "params": dict(p)})
        return mid


def _users_get(st: VkState, p: dict[str, Any]) -> Any:
    raw = str(p.get("user_ids") or p.get("user_id") or "")
    fields = {f.strip() for f in str(p.get("fields") or "").split(",") if f.strip()}
    out = []
    for item in [x.strip() for x in raw.split(",") if x.strip()]:
        user = None
        if item.lstrip("id").isdigit():
            user = st.users.get(int(item.lstrip("id")))
        else:
            user = next((u for u in st.users.values() if u.screen_name == item), None)
        if user is None:
            raise VkApiError(113, "Invalid user id")
        out.append(user.to_api(fields))
    return out


_METHODS = {"messages.send": _messages_send, "users.get": _users_get}


def create_app(state: VkState) -> Starlette:
    """The fake VK API (``/method/<name>``) plus the attachment files (``/_sandbox/files/<name>``)."""

    async def method(request: Request) -> Response:
        name = request.path_params["name"]
        params = await request_params(request)
        token = params.pop("access_token", None)
        auth = request.headers.get("authorization", "")
        if token is None and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        shown = [{"key": "method", "value": name}, {"key": "oauth", "value": "1"}]
        shown += [{"key": k, "value": str(v)} for k, v in params.items()]
        try:
            if token != state.access_token:
                raise VkApiError(5, "User authorization failed: invalid access_token (4).")
            if not params.get("v"):
                raise VkApiError(8, "Invalid request: v is required")
            handler = _METHODS.get(name)
            if handler is None:
                raise VkApiError(3, "Unknown method passed")
            result = handler(state, params)
        except VkApiError as e:
            state.log.add("api", method=name, params=params, error_code=e.code)
            return JSONResponse({"error": {"error_code": e.code, "error_msg": e.msg,
                                           "request_params": shown}})
        state.log.add("api", method=name, params=params, response=result)
        return JSONResponse({"response": result})

    async def file(request: Request) -> Response:
        data = state.files.get(request.path_params["name"])
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="application/octet-stream")

    return Starlette(routes=[Route("/method/{name}", method, methods=["GET", "POST"]),
                             Route("/_sandbox/files/{name}", file, methods=["GET"])])


class CallbackSender:
    """Posts Callback API notifications for ``state``'s community (see the module docstring)."""

    def __init__(self, state: VkState, *, retry_delays: tuple[float, ...] = (0.05, 0.1, 0.2),
                 disable_after: int | None = 5, timeout: float = 10.0) -> None:
        self.state = state
        self.retry_delays = tuple(retry_delays)
        self.disable_after = disable_after
        self.timeout = timeout
        self.url: str | None = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._user_ids = 100000000 + secrets.randbelow(600000000)
        self.deliveries: list[Delivery] = []

    def user(self, first_name: str = "Иван", last_name: str = "Петров", *, id: int | None = None,
             screen_name: str | None = None, sex: int = 0) -> VkUser:
        with self._lock:
            if id is None:
                self._user_ids += 1 + secrets.randbelow(1000)
                id = self._user_ids
        u = VkUser(id, first_name, last_name, screen_name, sex)
        with self.state.lock:
            self.state.users[u.id] = u
        return u

    # -- the server address ---------------------------------------------------------------------------
    def confirm(self, url: str) -> bool:
        """VK's confirmation request; the address is confirmed only if the answer is the code."""
        body = {"type": "confirmation", "group_id": self.state.group_id}
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=False) as c:
                r = c.post(url, content=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"})
            status, text = r.status_code, r.text
        except httpx.HTTPError as e:
            status, text = None, f"{type(e).__name__}"
        ok = status == 200 and text == self.state.confirmation_code
        self.state.log.add("confirmation", url=url, status=status, answer=text[:200], confirmed=ok)
        if ok:
            with self.state.lock:
                self.state.confirmed_urls.add(url)
            self.url = url
        return ok

    def resume(self) -> None:
        with self.state.lock:
            self.state.suspended = False
            self.state.failures_in_row = 0

    # -- events ---------------------------------------------------------------------------------------
    def _message(self, user: VkUser, text: str, attachments: list[dict[str, Any]] | None = None,
                 *, peer_id: int | None = None, payload: str | None = None) -> dict[str, Any]:
        peer = peer_id or user.id
        mid, cmid = self.state.new_ids(peer)
        msg: dict[str, Any] = {"date": int(time.time()), "from_id": user.id, "id": mid, "out": 0,
                               "version": 10000000 + mid, "attachments": attachments or [],
                               "conversation_message_id": cmid, "fwd_messages": [], "important": False,
                               "is_hidden": False, "peer_id": peer, "random_id": 0, "text": text}
        if payload is not None:
            msg["payload"] = payload
        return msg

    def send_text(self, user: VkUser, text: str, *, payload: str | None = None, peer_id: int | None = None,
                  client_info: dict[str, Any] | None = None, **opts: Any) -> Delivery:
        msg = self._message(user, text, payload=payload, peer_id=peer_id)
        return self._message_new(user, msg, client_info, **opts)

    def send_photo(self, user: VkUser, data: bytes = SAMPLE_JPEG, *, text: str = "",
                   sizes: tuple[tuple[str, int, int], ...] = (("s", 75, 56), ("m", 130, 97),
                                                                ("x", 604, 453), ("y", 807, 605)),
                   **opts: Any) -> Delivery:
        url = self.state.store_file(data, "jpg")
        photo = {"album_id": -3, "date": int(time.time()), "id": 457239000 + secrets.randbelow(99999),
                 "owner_id": user.id, "access_key": secrets.token_hex(9), "has_tags": False,
                 "sizes": [{"height": h, "type": t, "width": w, "url": url} for t, w, h in sizes],
                 "text": ""}
        msg = self._message(user, text, [{"type": "photo", "photo": photo}])
        return self._message_new(user, msg, None, **opts)

    def send_document(self, user: VkUser, data: bytes, *, title: str = "document.pdf", text: str = "",
                      **opts: Any) -> Delivery:
        ext = title.rsplit(".", 1)[-1].lower() if "." in title else "bin"
        url = self.state.store_file(data, ext)
        doc_type = {"txt": 1, "pdf": 1, "doc": 1, "docx": 1, "zip": 2, "rar": 2, "gif": 3, "jpg": 4,
                    "png": 4, "mp3": 5, "mp4": 6}.get(ext, 8)
        doc = {"id": 660000000 + secrets.randbelow(9999999), "owner_id": user.id, "title": title,
               "size": len(data), "ext": ext, "date": int(time.time()), "type": doc_type, "url": url,
               "access_key": secrets.token_hex(9)}
        msg = self._message(user, text, [{"type": "doc", "doc": doc}])
        return self._message_new(user, msg, None, **opts)

    def message_reply(self, user: VkUser, text: str, *, admin_id: int | None = None, **opts: Any) -> Delivery:
        """``message_reply``: the community wrote to ``user`` (the object is the message itself)."""
        mid, cmid = self.state.new_ids(user.id)
        msg: dict[str, Any] = {"date": int(time.time()), "from_id": -self.state.group_id, "id": mid,
                               "out": 1, "version": 10000000 + mid, "attachments": [],
                               "conversation_message_id": cmid, "fwd_messages": [], "important": False,
                               "is_hidden": False, "peer_id": user.id, "random_id": 0, "text": text}
        if admin_id:
            msg["admin_author_id"] = admin_id
        return self._event("message_reply", msg, **opts)

    def _message_new(self, user: VkUser, msg: dict[str, Any], client_info: dict[str, Any] | None,
                     **opts: Any) -> Delivery:
        with self.state.lock:
            self.state.allowed_peers.add(user.id)
        return self._event("message_new", {"message": msg, "client_info": client_info or dict(CLIENT_INFO)},
                           **opts)

    def _event(self, type_: str, obj: dict[str, Any], *, secret: Any = _DEFAULT, duplicate: bool = False,
               url: str | None = None) -> Delivery:
        target = url or self.url
        if not target or target not in self.state.confirmed_urls:
            raise NotConfirmed(f"no confirmed Callback API server address ({target!r}); call confirm(url)")
        body: dict[str, Any] = {"group_id": self.state.group_id, "type": type_,
                                "event_id": secrets.token_hex(20), "v": self.state.api_version, "object": obj}
        sec = self.state.secret if secret is _DEFAULT else secret
        if sec is not None:
            body["secret"] = sec
        delivery = Delivery(body)
        self.deliveries.append(delivery)
        with self._send_lock:
            self._deliver(delivery, target)
            if duplicate and delivery.delivered:
                self._deliver(delivery, target)
        return delivery

    def _deliver(self, delivery: Delivery, target: str) -> None:
        st = self.state
        if st.suspended:
            delivery.attempts.append({"attempt": 0, "suspended": True})
            st.log.add("callback", event_id=delivery.body["event_id"], type=delivery.body["type"],
                       suspended=True)
            return
        payload = json.dumps(delivery.body, ensure_ascii=False).encode("utf-8")
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            for n, delay in enumerate((0.0, *self.retry_delays)):
                if delay:
                    time.sleep(delay)
                headers = {"Content-Type": "application/json"}
                if n:
                    headers[RETRY_HEADER] = str(n)
                rec: dict[str, Any] = {"attempt": n + 1, "retry_counter": n or None}
                try:
                    r = client.post(target, content=payload, headers=headers)
                    rec.update(status=r.status_code, answer=r.text[:200])
                    ok = r.status_code == 200 and r.text == "ok"
                except httpx.HTTPError as e:
                    rec["error"] = type(e).__name__
                    ok = False
                delivery.attempts.append(rec)
                st.log.add("callback", event_id=delivery.body["event_id"], type=delivery.body["type"], **rec)
                if ok:
                    delivery.delivered = True
                    with st.lock:
                        st.failures_in_row = 0
                    return
        with st.lock:
            st.failures_in_row += 1
            if self.disable_after and st.failures_in_row >= self.disable_after:
                st.suspended = True
