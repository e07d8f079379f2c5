"""VK -> CRM, end to end: the VK sandbox's Callback API sender posts to syncd's server address,
syncd's runtime routes the messages, a fresh Bitrix24 sandbox portal is checked through its REST."""

from __future__ import annotations

import json

import requests
from msgworld import VK_CONFIRMATION, VK_SECRET, ChatWorld


def test_confirmation_handshake_then_a_message_makes_a_lead_with_the_senders_name(w: ChatWorld) -> None:
    assert w.vk.confirm(w.vk_hook) is True                  # answered with exactly the string, as plain text
    confirm = w.vk.log("confirmation")[-1]
    assert confirm["answer"] == VK_CONFIRMATION
    ivan = w.vk.user("Иван", "Петров")
    d = w.vk.send_text(ivan, "Здравствуйте, сколько стоит термос?", duplicate=True)
    assert [a["answer"] for a in d.attempts] == ["ok", "ok"]
    w.sync()
    leads = w.portal.leads()
    assert len(leads) == 1
    assert leads[0]["TITLE"] == "ВКонтакте: Иван Петров"          # users.get gave the name
    assert leads[0]["ASSIGNED_BY_ID"] == w.vk_manager and "термос" in leads[0]["COMMENTS"]
    assert len(w.messages()) == 1                                  # the event posted twice is one message

    # his photo threads into the lead as a comment with the link
    photo = w.vk.send_photo(ivan, text="вот такой")
    url = photo.message["attachments"][0]["photo"]["sizes"][-1]["url"]
    w.vk.send_text(ivan, "Ещё вопрос")
    w.sync()
    assert len(w.portal.leads()) == 1
    comments = [c["COMMENT"] for c in w.portal.comments("lead", leads[0]["ID"])]
    assert len(comments) == 2
    assert any(url in c and "вот такой" in c for c in comments), comments
    # the name was asked once (cached)
    assert len([e for e in w.vk.log("api") if e.get("method") == "users.get"]) == 1


def test_wrong_secret_or_another_community_is_403_and_nothing_is_stored(w: ChatWorld) -> None:
    assert w.vk.confirm(w.vk_hook)
    ivan = w.vk.user("Иван", "Чужой")
    wrong = w.vk.send_text(ivan, "спам", secret="wrong-secret")
    missing = w.vk.send_text(ivan, "спам", secret=None)
    assert {a["status"] for a in wrong.attempts} == {403} and {a["status"] for a in missing.attempts} == {403}
    # another community's events (its group_id), even with our secret and a confirmation request
    for body in ({"type": "message_new", "group_id": w.vk.group_id + 1, "secret": VK_SECRET, "event_id": "x" * 40,
                  "v": "5.199", "object": {"message": {"peer_id": 1, "from_id": 1, "text": "x", "date": 1}}},
                 {"type": "confirmation", "group_id": w.vk.group_id + 1}):
        r = requests.post(w.vk_hook, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 403 and VK_CONFIRMATION not in r.text
    w.sync()
    assert w.messages() == [] and w.portal.leads() == []
