"""The mail routing stage's pure parts (the whole stage runs end to end in tests/scenarios/test_s5_mail.py)."""

from __future__ import annotations

import datetime as dt

from syncd.pipeline.route_mail import MailRoute, _thread_ids, comment_text, domain, excluded, routes_from


def test_exclusion_patterns_are_globs_over_the_lowercased_address() -> None:
    r = MailRoute(exclude=("mailer-daemon@*", "no-reply@*", "*@spam.example"))
    assert excluded("MAILER-DAEMON@mx.example", r) and excluded("no-reply@shop.example", r)
    assert excluded("anyone@spam.example", r) and excluded("", r)
    assert not excluded("reply@shop.example", r) and not excluded("ivan@client.example", r)
    assert domain("A@Teaclub.Example") == "teaclub.example"


def test_thread_ids_nearest_first_without_repeats() -> None:
    g = {"message.in_reply_to": "<c@x>", "message.references": ("<a@x>", "<b@x>", "<c@x>")}
    assert _thread_ids(g) == ["<c@x>", "<b@x>", "<a@x>"]
    assert _thread_ids({}) == []


def test_comment_text_says_who_when_what_and_attachments() -> None:
    g = {"message.sender": "ivan@client.example", "message.sender_name": "Иван Петров", "message.subject": "Счёт",
         "message.received_at": dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=3))),
         "message.attachments": [{"name": "счёт.pdf", "size": 20480}], "message.body": "Оплатим завтра."}
    text = comment_text(g, "in")
    assert text.splitlines() == ["Письмо от Иван Петров <ivan@client.example>", "Дата: 01.12.2026 10:00 +0300",
                                 "Тема: Счёт", "Вложения: счёт.pdf (20 КБ)", "", "Оплатим завтра."]
    out = comment_text({"message.sender": "anna@shop.example", "message.recipients": ("ivan@client.example",)}, "out")
    assert out == "Письмо клиенту от anna@shop.example для ivan@client.example"


def test_routes_come_from_the_imap_systems_of_the_config() -> None:
    from connectors.imap import ImapSettings
    from syncd.config import Settings, SystemSettings

    s = Settings(systems={"box": SystemSettings(type="imap"), "crm": SystemSettings(type="bitrix24")})
    s.connector_settings["box"] = ImapSettings(host="127.0.0.1", tls="none", username="u", password="p",
                                               target="deal", pipeline="3", stage="C3:NEW", manager="9",
                                               own_domains=["Shop.Example"])
    routes = routes_from(s)
    assert list(routes) == ["box"]
    r = routes["box"]
    assert (r.target, r.pipeline, r.stage, r.manager, r.own_domains) == ("deal", "3", "C3:NEW", "9", ("shop.example",))
