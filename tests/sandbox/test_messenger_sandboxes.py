"""The messenger sandboxes (syncd/sandbox/messengers) checked by third-party clients run unchanged:
python-telegram-bot 22 (its Update model and its Bot against the fake Bot API) and vkbottle 4.11 /
vkbottle-types (its event models and its API against the fake api.vk.ru/method/)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syncd.sandbox.messengers import NotConfirmed, start_telegram, start_vk
from syncd.sandbox.server import serve_in_thread

import telegram  # noqa: E402 - in the test extras: never skipped
import vkbottle  # noqa: E402
from telegram.error import BadRequest, InvalidToken  # noqa: E402
from vkbottle_types.events.bot_events import MessageNew, MessageReply  # noqa: E402

FAST = (0.01, 0.01, 0.01)


class Receiver:
    """A local HTTP endpoint that records every POST and answers from a script (then a default)."""

    def __init__(self, default: tuple[int, str, str] = (200, "ok", "text/plain")) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[tuple[int, str, str]] = []
        self.default = default
        self._lock = threading.Lock()

        async def hook(request: Request) -> Response:
            raw = await request.body()
            with self._lock:
                self.requests.append({"headers": {k.lower(): v for k, v in request.headers.items()},
                                      "raw": raw, "json": json.loads(raw)})
                status, body, ctype = self.answers.pop(0) if self.answers else self.default
            return Response(body, status_code=status, media_type=ctype)

        self.handle = serve_in_thread(Starlette(routes=[Route("/hook", hook, methods=["POST"])]))
        self.url = self.handle.url + "/hook"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r["json"] for r in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.handle.stop()


@pytest.fixture
def tg(receiver: Receiver) -> Iterator[Any]:
    h = start_telegram(webhook_url=receiver.url, secret_token="s3cr3t-Token_1", retry_delays=FAST)
    yield h
    h.stop()


def _bot(h: Any, token: str | None = None) -> Any:
    return telegram.Bot(token or h.token, base_url=h.url + "/bot", base_file_url=h.url + "/file/bot")


def _assert_clean(update: Any) -> int:
    """python-telegram-bot keeps every field it does not know in ``api_kwargs``: walk the parsed Update
    and require none anywhere (so every field the sender makes is one PTB's model knows)."""
    seen: set[int] = set()
    stack = [update]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        assert o.api_kwargs == {}, (type(o).__name__, o.api_kwargs)
        for cls in type(o).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if name.startswith("_"):
                    continue
                value = getattr(o, name, None)
                for item in value if isinstance(value, tuple) else (value,):
                    if isinstance(item, telegram.TelegramObject):
                        stack.append(item)
    assert len(seen) >= 4        # update, message, user, chat at least
    return len(seen)


# -- Telegram ---------------------------------------------------------------------------------------
def test_every_update_parses_with_python_telegram_bot(tg: Any, receiver: Receiver) -> None:
    ann = tg.user("Анна", "Смирнова", username="anna_s")
    deliveries = [
        tg.start(ann, "lead-42"),
        tg.send_text(ann, "Хочу заказать диван"),
        tg.share_contact(ann, "+79161234567"),
        tg.send_photo(ann, b"\xff\xd8jpeg-bytes", caption="вот такой"),
        tg.send_document(ann, b"%PDF-1.4 order", file_name="order.pdf", mime_type="application/pdf"),
    ]
    deliveries.append(tg.edit_text(ann, deliveries[1].message["message_id"], "Хочу заказать два дивана"))
    assert all(d.delivered and [a["status"] for a in d.attempts] == [200] for d in deliveries)

    ids = [d.update_id for d in deliveries]
    assert ids == list(range(ids[0], ids[0] + 6))
    # what reached the endpoint is exactly what the sender made, with Telegram's headers
    assert receiver.bodies == [d.update for d in deliveries]
    for r in receiver.requests:
        assert r["headers"]["x-telegram-bot-api-secret-token"] == "s3cr3t-Token_1"
        assert r["headers"]["content-type"] == "application/json"

    async def parse() -> list[Any]:
        async with _bot(tg) as bot:
            return [telegram.Update.de_json(json.loads(r["raw"]), bot) for r in receiver.requests]

    start, text, contact, photo, doc, edited = asyncio.run(parse())
    for u in (start, text, contact, photo, doc, edited):
        _assert_clean(u)
        msg = u.effective_message
        assert msg.chat.id == ann.id and msg.chat.type == "private"
        assert msg.from_user.id == ann.id and msg.from_user.first_name == "Анна"
        assert msg.from_user.username == "anna_s" and msg.from_user.is_bot is False
    assert start.message.text == "/start lead-42"
    assert start.message.parse_entities(["bot_command"]) == {start.message.entities[0]: "/start"}
    assert text.message.text == "Хочу заказать диван"
    assert contact.message.contact.phone_number == "+79161234567"
    assert contact.message.contact.user_id == ann.id
    assert contact.message.contact.first_name == "Анна"
    sizes = photo.message.photo
    assert [s.width for s in sizes] == [90, 320, 800, 1280]
    assert sizes[-1].file_id == deliveries[3].message["photo"][-1]["file_id"]
    assert photo.message.caption == "вот такой"
    assert doc.message.document.file_name == "order.pdf"
    assert doc.message.document.mime_type == "application/pdf" and doc.message.document.file_size == 14
    assert edited.edited_message.text == "Хочу заказать два дивана"
    assert edited.edited_message.message_id == text.message.message_id
    assert edited.edited_message.edit_date is not None and edited.message is None
    # message ids increase within the chat
    assert [u.effective_message.message_id for u in (start, text, contact, photo, doc)] == [1, 2, 3, 4, 5]


def test_python_telegram_bot_calls_the_fake_bot_api(tg: Any, receiver: Receiver) -> None:
    ann = tg.user("Анна")
    photo_update = tg.send_photo(ann, b"JPEG-DATA-123").update

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with _bot(tg) as bot:
            me = await bot.get_me()
            out["me"] = (me.id, me.username, me.is_bot)
            assert await bot.set_webhook(receiver.url, secret_token="other_secret")
            info = await bot.get_webhook_info()
            out["info"] = (info.url, info.pending_update_count, info.has_custom_certificate)
            sent = await bot.send_message(ann.id, "Здравствуйте! Чем помочь?")
            out["sent"] = (sent.message_id, sent.text, sent.chat.id, sent.from_user.id)
            with pytest.raises(BadRequest, match="[Cc]hat not found"):
                await bot.send_message(123456, "nobody")
            f = await bot.get_file(photo_update["message"]["photo"][-1]["file_id"])
            out["file"] = (f.file_path, f.file_size, bytes(await f.download_as_bytearray()))
            with pytest.raises(BadRequest, match="[Ii]nvalid file_id"):
                await bot.get_file("AgACAgIAAxkBAAInvalid")
        return out

    out = asyncio.run(run())
    bot_id = int(tg.token.split(":")[0])
    assert out["me"] == (bot_id, "syncd_sandbox_bot", True)
    assert out["info"] == (receiver.url, 0, False)
    assert out["sent"] == (2, "Здравствуйте! Чем помочь?", ann.id, bot_id)   # ids shared in the chat
    assert out["file"][0].startswith(tg.url + "/file/bot" + tg.token + "/photos/")
    assert out["file"][1:] == (13, b"JPEG-DATA-123")
    assert tg.sent_messages(ann.id)[-1]["text"] == "Здравствуйте! Чем помочь?"
    # the webhook set through PTB is the one the sender uses, with its secret
    tg.send_text(ann, "после setWebhook")
    assert receiver.requests[-1]["headers"]["x-telegram-bot-api-secret-token"] == "other_secret"
    methods = [e["method"] for e in tg.log("api")]
    assert {"getMe", "setWebhook", "getWebhookInfo", "sendMessage", "getFile"} <= set(methods)
    assert [e["status"] for e in tg.log("file")] == [200]

    async def delete() -> str:
        async with _bot(tg) as bot:
            assert await bot.delete_webhook()
            return (await bot.get_webhook_info()).url

    assert asyncio.run(delete()) == ""


def test_wrong_token_answers_as_telegram(tg: Any) -> None:
    wrong = tg.token.split(":")[0] + ":AAwrongwrongwrongwrongwrongwrongwrong"
    r = httpx.get(f"{tg.url}/bot{wrong}/getMe")
    assert r.status_code == 401
    assert r.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    assert httpx.get(f"{tg.url}/botgarbage/getMe").json() == {"ok": False, "error_code": 404,
                                                             "description": "Not Found"}
    assert httpx.post(f"{tg.api_url}/noSuchMethod").status_code == 404

    async def call(token: str) -> None:
        await _bot(tg, token).get_me()

    with pytest.raises(InvalidToken):
        asyncio.run(call(wrong))
    # form, JSON and query parameters are all read
    ok = httpx.post(f"{tg.api_url}/getWebhookInfo", json={}).json()
    assert ok["ok"] is True and ok["result"]["url"].endswith("/hook")
    r = httpx.post(f"{tg.api_url}/setWebhook", data={"url": "", "drop_pending_updates": "true"}).json()
    assert r == {"ok": True, "result": True, "description": "Webhook was deleted"}
    r = httpx.get(f"{tg.api_url}/deleteWebhook").json()
    assert r == {"ok": True, "result": True, "description": "Webhook is already deleted"}
    r = httpx.post(f"{tg.api_url}/setWebhook", json={"url": "http://x/y", "secret_token": "bad secret!"})
    assert r.status_code == 400 and r.json()["error_code"] == 400


def test_webhook_retries_duplicates_and_secrets(tg: Any, receiver: Receiver) -> None:
    ann = tg.user("Анна")
    receiver.answers = [(500, "boom", "text/plain"), (502, "", "text/plain")]
    d = tg.send_text(ann, "повтор")
    assert d.delivered and [a["status"] for a in d.attempts] == [500, 502, 200]
    assert [b["update_id"] for b in receiver.bodies] == [d.update_id] * 3
    assert all(r["raw"] == receiver.requests[0]["raw"] for r in receiver.requests)
    info = tg.webhook_info()
    assert info["pending_update_count"] == 0
    assert info["last_error_message"] == "Wrong response from the webhook: 502 Bad Gateway"
    assert isinstance(info["last_error_date"], int)

    receiver.requests.clear()
    receiver.answers = [(500, "", "text/plain")] * 4
    lost = tg.send_text(ann, "потеряно")
    assert not lost.delivered and len(lost.attempts) == 4 and len(receiver.requests) == 4

    receiver.requests.clear()
    dup = tg.send_text(ann, "дважды", duplicate=True)
    assert [b["update_id"] for b in receiver.bodies] == [dup.update_id, dup.update_id]
    assert dup.update_id == lost.update_id + 1

    receiver.requests.clear()
    tg.send_text(ann, "чужой", secret="wrong")
    tg.send_text(ann, "без секрета", secret=None)
    assert receiver.requests[0]["headers"]["x-telegram-bot-api-secret-token"] == "wrong"
    assert "x-telegram-bot-api-secret-token" not in receiver.requests[1]["headers"]

    # a webhook answer may carry a method call, which Telegram runs
    receiver.answers = [(200, json.dumps({"method": "sendMessage", "chat_id": ann.id, "text": "Принято"}),
                         "application/json")]
    tg.send_text(ann, "ответь в вебхуке")
    assert tg.sent_messages(ann.id)[-1]["text"] == "Принято"


def test_no_webhook_and_a_dead_endpoint() -> None:
    h = start_telegram(retry_delays=FAST)
    try:
        with pytest.raises(RuntimeError, match="setWebhook"):
            h.send_text(h.user("Анна"), "никуда")
        h.set_webhook("http://127.0.0.1:9/nowhere", "s")
        d = h.send_text(h.user("Анна"), "в пустоту")
        assert not d.delivered and [a["error"] for a in d.attempts] == ["Connection refused"] * 4
        assert h.webhook_info()["last_error_message"] == "Connection refused"
    finally:
        h.stop()


# -- VK ---------------------------------------------------------------------------------------------
MESSAGE_KEYS = {"date", "from_id", "id", "out", "version", "attachments", "conversation_message_id",
                "fwd_messages", "important", "is_hidden", "peer_id", "random_id", "text"}
CLIENT_INFO_KEYS = {"button_actions", "keyboard", "inline_keyboard", "carousel", "lang_id"}


@pytest.fixture
def vkh() -> Iterator[Any]:
    h = start_vk(group_id=218123456, confirmation_code="a1b2c3d4", secret="vk_s3cr3t", retry_delays=FAST)
    yield h
    h.stop()


def test_vk_confirmation_handshake(vkh: Any, receiver: Receiver) -> None:
    ivan = vkh.user("Иван", "Петров")
    receiver.answers = [(200, "wrongcode", "text/plain"), (200, "a1b2c3d4\n", "text/plain")]
    assert vkh.confirm(receiver.url) is False
    with pytest.raises(NotConfirmed):
        vkh.send_text(ivan, "рано")
    assert vkh.confirm(receiver.url) is False          # trailing newline: not the code
    receiver.answers = [(200, "a1b2c3d4", "text/plain")]
    assert vkh.confirm(receiver.url) is True
    assert receiver.bodies[:3] == [{"type": "confirmation", "group_id": 218123456}] * 3
    assert [e["confirmed"] for e in vkh.log("confirmation")] == [False, False, True]
    assert vkh.send_text(ivan, "теперь можно").delivered


def test_vk_message_new_bodies_have_the_documented_shape(vkh: Any, receiver: Receiver) -> None:
    ivan = vkh.user("Иван", "Петров")
    receiver.answers = [(200, "a1b2c3d4", "text/plain")]
    assert vkh.confirm(receiver.url)
    d1 = vkh.send_text(ivan, "Хочу заказать")
    d2 = vkh.send_photo(ivan, b"JPEGDATA", text="вот фото")
    d3 = vkh.send_document(ivan, b"%PDF-1.4", title="order.pdf")
    d4 = vkh.message_reply(ivan, "Спасибо, перезвоним")
    bodies = receiver.bodies[1:]
    assert bodies == [d.body for d in (d1, d2, d3, d4)]
    for b in bodies:
        assert set(b) == {"group_id", "type", "event_id", "v", "object", "secret"}
        assert b["group_id"] == 218123456 and b["v"] == "5.199" and b["secret"] == "vk_s3cr3t"
        assert re.fullmatch(r"[0-9a-f]{40}", b["event_id"])
    assert len({b["event_id"] for b in bodies}) == 4
    assert [b["type"] for b in bodies] == ["message_new"] * 3 + ["message_reply"]
    for b in bodies[:3]:
        assert set(b["object"]) == {"message", "client_info"}
        assert set(b["object"]["client_info"]) == CLIENT_INFO_KEYS
        msg = b["object"]["message"]
        assert set(msg) == MESSAGE_KEYS
        assert msg["from_id"] == msg["peer_id"] == ivan.id and msg["out"] == 0
        ev = MessageNew.model_validate(b)             # vkbottle-types' model, unchanged
        assert ev.object.message.from_id == ivan.id and ev.object.message.peer_id == ivan.id
        assert ev.group_id == 218123456 and ev.object.client_info.keyboard is True
    assert [b["object"]["message"]["conversation_message_id"] for b in bodies[:3]] == [1, 2, 3]
    assert bodies[0]["object"]["message"]["text"] == "Хочу заказать"
    assert bodies[0]["object"]["message"]["attachments"] == []
    photo = MessageNew.model_validate(bodies[1]).object.message.attachments[0]
    assert photo.type.value == "photo" and photo.photo.owner_id == ivan.id
    assert [s.type.value for s in photo.photo.sizes] == ["s", "m", "x", "y"]
    assert httpx.get(photo.photo.sizes[-1].url).content == b"JPEGDATA"
    doc = MessageNew.model_validate(bodies[2]).object.message.attachments[0].doc
    assert (doc.title, doc.ext, doc.size, doc.type) == ("order.pdf", "pdf", 8, 1)
    assert httpx.get(doc.url).content == b"%PDF-1.4"
    reply = bodies[3]["object"]
    assert set(reply) == MESSAGE_KEYS and reply["out"] == 1 and reply["from_id"] == -218123456
    rep = MessageReply.model_validate(bodies[3])
    assert rep.object.text == "Спасибо, перезвоним" and rep.object.peer_id == ivan.id


def test_vk_retries_until_ok_duplicates_and_secret(vkh: Any, receiver: Receiver) -> None:
    ivan = vkh.user("Иван", "Петров")
    receiver.answers = [(200, "a1b2c3d4", "text/plain")]
    assert vkh.confirm(receiver.url)
    receiver.requests.clear()
    receiver.answers = [(200, "OK!", "text/plain"), (500, "ok", "text/plain")]
    d = vkh.send_text(ivan, "повтор")
    assert d.delivered and [(a["status"], a["answer"]) for a in d.attempts] == [(200, "OK!"), (500, "ok"),
                                                                                (200, "ok")]
    assert [r["headers"].get("x-retry-counter") for r in receiver.requests] == [None, "1", "2"]
    assert {b["event_id"] for b in receiver.bodies} == {d.body["event_id"]}

    receiver.requests.clear()
    dup = vkh.send_text(ivan, "дважды", duplicate=True)
    assert [b["event_id"] for b in receiver.bodies] == [dup.body["event_id"]] * 2

    receiver.requests.clear()
    vkh.send_text(ivan, "чужой", secret="wrong")
    vkh.send_text(ivan, "без секрета", secret=None)
    assert receiver.bodies[0]["secret"] == "wrong" and "secret" not in receiver.bodies[1]


def test_vk_server_suspended_after_failures_in_a_row(receiver: Receiver) -> None:
    h = start_vk(confirmation_code="c0de", retry_delays=(0.01,), disable_after=2)
    try:
        ivan = h.user("Иван", "Петров")
        receiver.answers = [(200, "c0de", "text/plain")] + [(500, "", "text/plain")] * 4
        assert h.confirm(receiver.url)
        assert not h.send_text(ivan, "1").delivered and not h.send_text(ivan, "2").delivered
        posted = len(receiver.requests)
        third = h.send_text(ivan, "3")
        assert third.attempts == [{"attempt": 0, "suspended": True}] and len(receiver.requests) == posted == 5
        h.resume()
        assert h.send_text(ivan, "4").delivered
    finally:
        h.stop()


def test_vk_api_with_vkbottle(vkh: Any, receiver: Receiver) -> None:
    ivan = vkh.user("Иван", "Петров", screen_name="ivan_p")
    stranger = vkh.user("Пётр", "Сидоров")
    receiver.answers = [(200, "a1b2c3d4", "text/plain")]
    assert vkh.confirm(receiver.url)
    vkh.send_text(ivan, "Здравствуйте")                # ivan wrote: the community may answer him

    async def run() -> dict[str, Any]:
        api = vkbottle.API(vkh.access_token)
        api.API_URL = vkh.api_url
        bad = vkbottle.API("vk1.a.wrong")
        bad.API_URL = vkh.api_url
        out: dict[str, Any] = {}
        try:
            out["a"] = await api.messages.send(peer_id=ivan.id, message="Добрый день!", random_id=777)
            out["again"] = await api.messages.send(peer_id=ivan.id, message="Добрый день!", random_id=777)
            out["b"] = await api.messages.send(peer_id=ivan.id, message="Второе", random_id=778)
            users = await api.users.get(user_ids=[ivan.id, "ivan_p"], fields=["screen_name"])
            out["users"] = [(u.id, u.first_name, u.last_name, u.screen_name) for u in users]
            with pytest.raises(vkbottle.VKAPIError[901]):
                await api.messages.send(peer_id=stranger.id, message="холодный", random_id=779)
            with pytest.raises(vkbottle.VKAPIError[5]):
                await bad.users.get(user_ids=[ivan.id])
            with pytest.raises(vkbottle.VKAPIError[113]):
                await api.users.get(user_ids=[1])
        finally:
            await api.http_client.close()
            await bad.http_client.close()
        return out

    out = asyncio.run(run())
    assert out["a"] == out["again"] and out["b"] == out["a"] + 1
    assert [(m["text"], m["random_id"]) for m in vkh.sent_messages(ivan.id)] == [("Добрый день!", 777),
                                                                                ("Второе", 778)]
    assert out["users"] == [(ivan.id, "Иван", "Петров", "ivan_p")] * 2

    # the raw answers, as VK gives them (HTTP 200 both ways)
    r = httpx.post(vkh.api_url + "messages.send",
                   data={"access_token": "nope", "v": "5.199", "peer_id": ivan.id, "message": "x",
                         "random_id": 1})
    assert r.status_code == 200
    err = r.json()["error"]
    assert err["error_code"] == 5
    assert err["error_msg"] == "User authorization failed: invalid access_token (4)."
    assert {"key": "method", "value": "messages.send"} in err["request_params"]
    assert all(p["key"] != "access_token" for p in err["request_params"])
    r = httpx.get(vkh.api_url + "users.get", params={"access_token": vkh.access_token, "user_ids": ivan.id})
    assert r.json()["error"]["error_code"] == 8
    r = httpx.get(vkh.api_url + "wall.post", params={"access_token": vkh.access_token, "v": "5.199"})
    assert r.json()["error"]["error_code"] == 3
    r = httpx.post(vkh.api_url + "users.get", headers={"Authorization": f"Bearer {vkh.access_token}"},
                   data={"v": "5.199", "user_ids": str(ivan.id)})
    assert r.json() == {"response": [{"id": ivan.id, "first_name": "Иван", "last_name": "Петров",
                                      "can_access_closed": True, "is_closed": False}]}
