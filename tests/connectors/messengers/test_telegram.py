"""Telegram -> CRM, end to end: the Telegram sandbox posts real Updates to syncd's webhook, syncd's
runtime routes them, a fresh Bitrix24 sandbox portal is checked through its public REST."""

from __future__ import annotations

from typing import Any

import requests
from msgworld import CLIENT_PHONE_SHARED, ChatWorld


def _statuses(d: object) -> list[object]:
    return [a.get("status") for a in d.attempts]  # type: ignore[attr-defined]


def test_webhook_is_set_by_the_connector_with_the_secret(w: ChatWorld) -> None:
    info = w.tg.webhook_info()
    assert info["url"] == w.tg_hook
    assert w.tg.state.webhook["secret_token"] == "tg-secret-5f1e9a0c77aa21bb"
    w.sync()                                         # set once: not called again while nothing changed
    calls = [e for e in w.tg.log("api") if e.get("method") == "setWebhook"]
    assert len(calls) == 1


def test_new_person_makes_one_lead_a_reply_threads_into_it_and_a_redelivery_is_one(w: ChatWorld) -> None:
    ann = w.tg.user("Анна", "Иванова", username="anna_iv")
    first = w.tg.send_text(ann, "Здравствуйте! Нужен самовар на 5 литров.", duplicate=True)
    assert _statuses(first) == [200, 200]           # posted twice: both taken
    w.sync()
    leads = w.portal.leads()
    assert len(leads) == 1
    lead = leads[0]
    assert lead["TITLE"] == "Telegram: Анна Иванова"
    assert "самовар на 5 литров" in lead["COMMENTS"]
    assert lead["ASSIGNED_BY_ID"] == w.manager and lead["NAME"] == "Анна Иванова"
    assert len(w.messages()) == 1                    # the update delivered twice is one message

    w.tg.send_text(ann, "Доставка в Тверь возможна?")
    w.sync()
    assert len(w.portal.leads()) == 1
    comments = w.portal.comments("lead", lead["ID"])
    assert len(comments) == 1 and "Доставка в Тверь" in comments[0]["COMMENT"]
    assert "Telegram: Анна Иванова (tg:" in comments[0]["COMMENT"]

    # she shares her phone (nobody has it): the chat's lead gets it, and it is one more comment
    w.tg.share_contact(ann, "+7 999 123-45-67")
    w.sync()
    lead = w.portal.leads()[0]
    assert [p["VALUE"] for p in lead.get("PHONE") or []] and "9991234567" in lead["PHONE"][0]["VALUE"].replace(" ", "")
    assert len(w.portal.comments("lead", lead["ID"])) == 2
    assert len(w.portal.leads()) == 1


def test_shared_phone_of_a_known_client_moves_the_chat_to_her_open_deal(w: ChatWorld) -> None:
    olga = w.tg.user("Оля", None, username="olga_s")
    w.tg.send_text(olga, "Добрый день, вопрос по заказу")      # unknown yet: a lead
    w.sync()
    assert len(w.portal.leads()) == 1
    lead_id = w.portal.leads()[0]["ID"]
    # her own number, without "+", as Telegram sends it; the manager typed "8 (916) 555-12-34"
    w.tg.share_contact(olga, CLIENT_PHONE_SHARED)
    w.tg.send_text(olga, "Когда привезёте самовары?")
    w.sync()
    on_deal = w.portal.comments("deal", w.open_deal)
    assert any("Когда привезёте самовары" in c["COMMENT"] for c in on_deal), on_deal
    assert len(w.portal.leads()) == 1                   # no second lead
    lead = w.portal.leads()[0]
    assert str(lead.get("CONTACT_ID")) == w.client_id   # the lead now knows whose it was
    assert "9165551234" in "".join(ch for ch in str(lead.get("PHONE")) if ch.isdigit())
    # and her next message goes to the deal as well (the chat is bound to her now)
    w.tg.send_text(olga, "И ещё чайник, пожалуйста")
    w.sync()
    assert any("ещё чайник" in c["COMMENT"] for c in w.portal.comments("deal", w.open_deal))
    assert not any("ещё чайник" in c["COMMENT"] for c in w.portal.comments("lead", lead_id))


def test_bad_or_missing_secret_is_403_and_nothing_is_stored(w: ChatWorld) -> None:
    u = w.tg.user("Злоумышленник")
    wrong = w.tg.send_text(u, "спам", secret="not-the-secret")
    missing = w.tg.send_text(u, "спам", secret=None)
    assert set(_statuses(wrong)) == {403} and set(_statuses(missing)) == {403}
    assert not wrong.delivered and not missing.delivered
    w.sync()
    assert w.messages() == [] and w.portal.leads() == []


def test_a_photo_is_a_link_served_by_syncd_never_telegrams_url(w: ChatWorld, capfd: Any,
                                                                caplog: Any) -> None:
    from syncd.sandbox.messengers._common import SAMPLE_JPEG

    ann = w.tg.user("Анна", "Фото")
    w.tg.send_text(ann, "Вот какой нужен")
    w.tg.send_photo(ann, SAMPLE_JPEG, caption="как на фото")
    w.sync()
    lead = w.portal.leads()[0]
    comments = w.portal.comments("lead", lead["ID"])
    assert len(comments) == 1
    text = comments[0]["COMMENT"]
    assert "как на фото" in text and w.tg.token not in text
    link = next(part for part in text.split() if part.startswith(w.base + "/hooks/telegram/telegram/file/"))
    got = requests.get(link, timeout=10)
    assert got.status_code == 200 and got.content == SAMPLE_JPEG
    assert requests.get(link[:-4] + "0000", timeout=10).status_code == 403      # a forged link
    out, err = capfd.readouterr()
    for secret in (w.tg.token, "tg-secret-5f1e9a0c77aa21bb"):       # never in a log line
        assert secret not in out and secret not in err and secret not in caplog.text


def test_crm_down_loses_nothing_and_the_lead_arrives_once(w: ChatWorld) -> None:
    # the portal refuses the next lead writes (500), then does one but loses its answer
    w.portal.faults(methods=["crm.lead.add"], fail_next=2)
    ann = w.tg.user("Анна", "Терпеливая")
    assert w.tg.send_text(ann, "Пока CRM лежит").delivered    # stored before the 200, whatever the CRM does
    assert len(w.messages()) == 1
    w.sync()
    w.portal.faults(methods=["crm.lead.add"], lost_next=1)
    ivan = w.tg.user("Иван", "Настойчивый")
    assert w.tg.send_text(ivan, "Ответ CRM потерялся").delivered
    w.sync()
    w.sync()
    titles = sorted(lead["TITLE"] for lead in w.portal.leads())
    assert titles == ["Telegram: Анна Терпеливая", "Telegram: Иван Настойчивый"]


def test_restart_after_the_200_still_delivers_the_message_once(w: ChatWorld) -> None:
    ann = w.tg.user("Анна", "Перезапуск")
    assert w.tg.send_text(ann, "Сообщение перед остановкой").delivered
    w.restart()                                         # nothing was pushed before the process ended
    w.sync()
    w.sync()
    leads = w.portal.leads()
    assert len(leads) == 1 and "перед остановкой" in leads[0]["COMMENTS"]
