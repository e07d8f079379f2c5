"""S5 mailbox -> CRM, end to end: a real Dovecot, syncd's runtime, a fresh Bitrix24 sandbox portal.

Every check reads the portal through its public REST, as the sales team sees it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mail_env import CLIENT_EMAIL, CRM_ADDRESS, OWN_DOMAIN, SALES, MailWorld, dovecot, mail, make_world

pytestmark = pytest.mark.skipif(not dovecot.available(), reason="needs Debian's dovecot-imapd (.ci/run installs it)")


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    from syncd.sandbox.bitrix24 import start

    h = start(rate_limit=False)
    yield h.url
    h.stop()


@pytest.fixture
def w(tmp_path: Path, sandbox_url: str) -> Iterator[MailWorld]:
    world = make_world(tmp_path, sandbox_url)
    try:
        world.sync()          # the portal's contacts and deals are known before mail arrives
        yield world
    finally:
        world.close()


def test_new_sender_makes_one_lead_and_the_reply_is_a_comment_on_it(w: MailWorld) -> None:
    # a cp1251 body with a koi8-r encoded subject, from somebody the CRM does not know
    first, mid = mail("ivan.petrov@samovar-fan.example", "Заявка на самовар 5 л",
                      "Здравствуйте! Нужен самовар на 5 литров, доставка в Тверь.", charset="windows-1251",
                      subject_charset="koi8-r", name="Иван Петров")
    w.deliver(first)
    w.sync()
    leads = w.portal.leads()
    assert len(leads) == 1
    lead = leads[0]
    assert lead["TITLE"] == "Заявка на самовар 5 л"
    assert lead["ASSIGNED_BY_ID"] == w.manager and lead["SOURCE_ID"] == "EMAIL"
    assert "доставка в Тверь" in lead["COMMENTS"]
    assert lead["NAME"] == "Иван Петров"
    assert [e["VALUE"] for e in lead["EMAIL"]] == ["ivan.petrov@samovar-fan.example"]

    # the client answers our reply (In-Reply-To + References): the same lead, a comment, no new lead
    reply, _ = mail("ivan.petrov@samovar-fan.example", "Re: Заявка на самовар 5 л",
                    "Да, электрический. Оплата по счёту.", charset="koi8-r", in_reply_to=mid, references=[mid])
    w.deliver(reply)
    w.sync()
    assert len(w.portal.leads()) == 1
    comments = w.portal.comments("lead", lead["ID"])
    assert len(comments) == 1
    assert "Оплата по счёту" in comments[0]["COMMENT"] and "Тема: Re: Заявка на самовар 5 л" in comments[0]["COMMENT"]
    assert w.portal.comments("deal", w.open_deal) == []

    # a new mail (not a reply) from the same sender while the lead is open: on that lead too
    again, _ = mail("ivan.petrov@samovar-fan.example", "Ещё вопрос", "А есть ли угольные самовары?")
    w.deliver(again)
    w.sync()
    assert len(w.portal.leads()) == 1
    assert [("угольные" in c["COMMENT"]) for c in w.portal.comments("lead", lead["ID"])].count(True) == 1


def test_known_client_mail_is_a_comment_on_the_open_deal_even_when_the_first_write_is_lost(w: MailWorld) -> None:
    deals_before = w.portal.deals()
    # the portal does the next comment.add but its answer is lost: the retry must find it
    w.portal.faults(methods=["crm.timeline.comment.add"], lost_next=1)
    raw, _ = mail(CLIENT_EMAIL, "Вопрос по сделке", "Можно ли добавить два заварочных чайника?", name="Ольга Смирнова")
    w.deliver(raw)
    w.sync()
    comments = w.portal.comments("deal", w.open_deal)
    assert len(comments) == 1, comments
    assert "два заварочных чайника" in comments[0]["COMMENT"]
    assert w.portal.comments("deal", w.closed_deal) == []          # a won deal is not "open"
    assert w.portal.leads() == []                                     # no lead for a known client
    assert len(w.portal.deals()) == len(deals_before)                # and no new deal


def test_outgoing_mail_to_a_known_client_is_attached_too(w: MailWorld) -> None:
    raw, _ = mail(f"anna@{OWN_DOMAIN}", "Счёт на оплату", "Ольга, высылаю счёт.", to=CLIENT_EMAIL, cc=SALES)
    w.deliver(raw)
    w.sync()
    comments = w.portal.comments("deal", w.open_deal)
    assert len(comments) == 1 and "высылаю счёт" in comments[0]["COMMENT"]
    assert w.portal.leads() == []


def test_excluded_senders_are_ignored_and_counted_not_quarantined(w: MailWorld) -> None:
    bounce, _ = mail("MAILER-DAEMON@mx.samovar-fan.example", "Undelivered Mail Returned to Sender", "550 no such user")
    robot, _ = mail("no-reply@marketplace.example", "Ваш отчёт готов", "Отчёт во вложении")
    auto, _ = mail("someone@elsewhere.example", "Автоответ: отпуск", "Я в отпуске до понедельника",
                   extra_headers={"Auto-Submitted": "auto-replied"})
    for raw in (bounce, robot, auto):
        w.deliver(raw)
    counts = w.pull_mail()
    assert counts.skipped == 3 and counts.created == 0 and counts.quarantined == 0
    w.sync()
    assert w.portal.leads() == [] and w.portal.comments("deal", w.open_deal) == []
    assert _quarantined(w) == []


def test_broken_mime_is_quarantined_with_its_reason_and_the_rest_goes_on(w: MailWorld) -> None:
    good1, _ = mail("first@buyer.example", "Первый", "Хочу купить термос")
    broken = (b"From: broken@buyer.example\r\nSubject: =?utf-8?B?0JHQuNGC0L7QtQ==?=\r\n"
              b"Message-ID: <broken-1@buyer.example>\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: multipart/mixed\r\n\r\nthe boundary parameter is missing\r\n")
    good2, _ = mail("second@buyer.example", "Второй", "Хочу купить кружку")
    for raw in (good1, broken, good2):
        w.deliver(raw)
    counts = w.pull_mail()
    assert counts.quarantined == 1
    w.sync()
    assert sorted(lead["TITLE"] for lead in w.portal.leads()) == ["Второй", "Первый"]
    rows = _quarantined(w)
    assert len(rows) == 1
    reason, raw, system = rows[0]
    assert system == "mail" and "broken MIME" in reason and "UID 2" in reason and "'INBOX'" in reason
    assert (raw.encode() if isinstance(raw, str) else raw).startswith(b"From: broken@buyer.example")


def _quarantined(w: MailWorld) -> list[tuple[str, object, str]]:
    from sqlalchemy import select

    from syncd.store import tables as t

    with w.runtime().store.begin() as c:
        return [tuple(r) for r in c.execute(select(t.quarantine.c.reason, t.quarantine.c.raw, t.quarantine.c.system))]


@pytest.mark.parametrize("where", ["before_commit", "after_commit"])
def test_kill_9_between_fetch_and_commit_reads_the_mail_again_and_makes_one_lead(w: MailWorld, where: str) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    raw, _ = mail("new.buyer@chai-shop.example", "Оптовый заказ", "Нужна партия чайников, 40 штук.")
    w.deliver(raw)
    w.runtime().close()             # this test's own runtime lets the crashing process have the database
    w.rt = None
    marker = w.tmp / "marker"
    script = Path(__file__).with_name("mail_crash.py")
    proc = subprocess.Popen([sys.executable, str(script), str(w.config), json.dumps(w.env), str(marker), where],
                            cwd=str(Path(__file__).resolve().parents[2]), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the sync process never reached the crash point"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert w.portal.leads() == []          # killed before anything reached the CRM
    w.sync()
    w.sync()
    leads = w.portal.leads()
    assert [lead["TITLE"] for lead in leads] == ["Оптовый заказ"]
    from sqlalchemy import func, select

    from syncd.store import tables as t

    with w.runtime().store.begin() as c:
        n = c.execute(select(func.count()).select_from(t.entities).where(t.entities.c.type == "message")).scalar()
    assert n == 1                            # the mail read twice is one message


def test_uidvalidity_change_rereads_without_duplicates(tmp_path: Path, sandbox_url: str) -> None:
    world = make_world(tmp_path, sandbox_url, folders=["Sales"])
    try:
        a, _ = mail("one@buyer.example", "Первая заявка", "Нужен термос")
        b, _ = mail("two@buyer.example", "Вторая заявка", "Нужна кружка")
        world.server.append_many("Sales", [a, b])
        world.sync()
        assert len(world.portal.leads()) == 2
        # the server rebuilt the folder: a new UIDVALIDITY, the same mails under new UIDs, plus a new one
        c, _ = mail("three@buyer.example", "Третья заявка", "Нужен самовар")
        world.server.recreate("Sales", [a, b, c])
        world.sync()
        assert sorted(lead["TITLE"] for lead in world.portal.leads()) == ["Вторая заявка", "Первая заявка",
                                                                        "Третья заявка"]
    finally:
        world.close()


def test_vcard_sent_to_the_crm_address_creates_the_contact(w: MailWorld) -> None:
    vcf = ("BEGIN:VCARD\r\nVERSION:3.0\r\nN:Кузнецова;Мария;;;\r\nFN:Мария Кузнецова\r\n"
           "EMAIL:maria@tea-house.example\r\nTEL;TYPE=CELL:+7 916 123-45-67\r\nTITLE:Закупщик\r\nEND:VCARD\r\n")
    raw = (f"From: anna@{OWN_DOMAIN}\r\nTo: {CRM_ADDRESS}\r\nSubject: =?utf-8?B?0JrQvtC90YLQsNC60YI=?=\r\n"
           f"Message-ID: <vcard-1@{OWN_DOMAIN}>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=VV\r\n\r\n"
           "--VV\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nНовый контакт\r\n--VV\r\n"
           "Content-Type: text/x-vcard; charset=utf-8; name=maria.vcf\r\n\r\n" + vcf + "--VV--\r\n").encode()
    w.deliver(raw)
    w.sync()
    maria = [c for c in w.portal.contacts() if c.get("LAST_NAME") == "Кузнецова"]
    assert len(maria) == 1
    assert [e["VALUE"] for e in maria[0]["EMAIL"]] == ["maria@tea-house.example"]
    assert "9161234567" in "".join(ch for ch in str(maria[0].get("PHONE")) if ch.isdigit())
    assert w.portal.leads() == []            # an internal mail (own domain to the CRM) makes no lead


def test_mail_forwarded_to_the_crm_address_counts_as_from_the_original_sender(w: MailWorld) -> None:
    body = ("Коллеги, письмо клиента.\n\n-------- Пересылаемое сообщение --------\n"
            f"От: Ольга Смирнова <{CLIENT_EMAIL}>\nТема: Скидка\n\nБудет ли скидка на самовары?")
    raw, _ = mail(f"anna@{OWN_DOMAIN}", "Fwd: Скидка", body, to=CRM_ADDRESS)
    w.deliver(raw)
    w.sync()
    comments = w.portal.comments("deal", w.open_deal)
    assert len(comments) == 1
    assert "Будет ли скидка" in comments[0]["COMMENT"] and f"Переслал: anna@{OWN_DOMAIN}" in comments[0]["COMMENT"]
    assert w.portal.leads() == []


def test_box_mailbox_makes_a_contact_and_a_deal_in_its_own_pipeline(tmp_path: Path, sandbox_url: str) -> None:
    """Seed 004: a portal run without leads; the «BOX» mailbox's first mails open deals in its pipeline."""
    world = make_world(tmp_path, sandbox_url, box=True)
    try:
        world.sync()
        deals_before = {d["ID"] for d in world.portal.deals()}
        raw, mid = mail("buyer@new-shop.example", "Хотим стать дилером", "Расскажите об условиях опта.",
                        name="Сергей Новиков")
        world.deliver(raw)
        world.sync()
        new = [d for d in world.portal.deals() if d["ID"] not in deals_before]
        assert len(new) == 1
        deal = new[0]
        pipeline = world.runtime().settings.connector_settings["mail"].pipeline
        assert deal["TITLE"] == "Хотим стать дилером" and str(deal["CATEGORY_ID"]) == pipeline
        assert deal["STAGE_ID"] == f"C{pipeline}:NEW" and deal["ASSIGNED_BY_ID"] == world.manager
        contact = world.portal.rest("crm.contact.get", {"id": deal["CONTACT_ID"]})
        assert [e["VALUE"] for e in contact["EMAIL"]] == ["buyer@new-shop.example"]
        # the sender's display name is the contact's name, not an empty one (issue 22 #10)
        assert (contact["NAME"], contact["LAST_NAME"]) == ("Сергей", "Новиков"), contact
        assert world.portal.leads() == []
        # the buyer answers: a comment on that deal, no second deal
        reply, _ = mail("buyer@new-shop.example", "Re: Хотим стать дилером", "Интересует Москва и область.",
                        in_reply_to=mid)
        world.deliver(reply)
        world.sync()
        assert len([d for d in world.portal.deals() if d["ID"] not in deals_before]) == 1
        comments = world.portal.comments("deal", deal["ID"])
        assert len(comments) == 1 and "Москва и область" in comments[0]["COMMENT"]
        # surname first, as people often sign; and an organisation's name makes a company
        for addr, display, subject in (("m.ivanova@buyer.example", "Иванова Мария", "Запрос цены"),
                                       ("office@romashka.example", "ООО «Ромашка»", "Оптовый заказ")):
            world.deliver(mail(addr, subject, "Пришлите прайс.", name=display)[0])
        world.sync()
        by_title = {d["TITLE"]: d for d in world.portal.deals() if d["ID"] not in deals_before}
        maria = world.portal.rest("crm.contact.get", {"id": by_title["Запрос цены"]["CONTACT_ID"]})
        assert (maria["NAME"], maria["LAST_NAME"]) == ("Мария", "Иванова"), maria
        firm = by_title["Оптовый заказ"]
        assert firm["COMPANY_ID"] and firm["COMPANY_ID"] != "0", firm
        company = world.portal.rest("crm.company.get", {"id": firm["COMPANY_ID"]})
        assert company["TITLE"] == "ООО «Ромашка»", company
        assert not [c for c in world.portal.contacts() if "Ромашка" in (c.get("NAME") or "") + (c.get("LAST_NAME") or "")]
    finally:
        world.close()


def test_idle_runs_the_mail_stream_when_a_mail_arrives(tmp_path: Path, sandbox_url: str) -> None:
    """With IDLE on, a delivered mail is taken in without any poll: the connector's watcher triggers
    the stream (here the runtime's own trigger, as without the scheduler)."""
    import time

    world = make_world(tmp_path, sandbox_url, extra="poll_interval = 3600.0")
    try:
        text = world.config.read_text(encoding="utf-8").replace("idle = false", "idle = true")
        world.config.write_text(text, encoding="utf-8")
        rt = world.runtime()
        rt.run_stream("mail", "mail", wait=True)          # the first read starts the IDLE watcher
        raw, mid = mail("quick@buyer.example", "Срочно", "Нужен ответ сегодня")
        world.deliver(raw)
        deadline = time.monotonic() + 20
        while rt.store.find_entity("mail", "message", mid) is None:
            assert time.monotonic() < deadline, "the mail was not taken in: IDLE did not wake the stream"
            time.sleep(0.1)
    finally:
        world.close()


def test_logs_never_carry_the_password_or_the_mail(w: MailWorld, capsys: pytest.CaptureFixture[str]) -> None:
    import structlog

    raw, _ = mail("leaky@buyer.example", "Секретная тема письма", "Тело письма: номер карты 4111 1111 1111 1111")
    bad = b"From: x@buyer.example\r\nContent-Type: multipart/mixed\r\n\r\nSECRET-BODY-OF-BROKEN\r\n"
    w.deliver(raw)
    w.deliver(bad)
    with structlog.testing.capture_logs() as logs:
        w.sync()
    out = repr(logs) + capsys.readouterr().out
    assert logs, "nothing was logged: the check would prove nothing"
    for secret in (w.env["MAIL_PASSWORD"], "Секретная тема", "4111 1111", "SECRET-BODY-OF-BROKEN"):
        assert secret not in out


def test_known_client_without_an_open_deal_gets_the_comment_on_the_contact(w: MailWorld) -> None:
    cid = str(w.portal.rest("crm.contact.add", {"fields": {
        "NAME": "Павел", "LAST_NAME": "Гусев", "EMAIL": [{"VALUE": "pavel@gusev.example", "VALUE_TYPE": "WORK"}]}}))
    w.portal.rest("crm.deal.add", {"fields": {"TITLE": "Старый заказ", "CONTACT_ID": cid, "STAGE_ID": "LOSE"}})
    w.sync()                                   # the portal's new contact is known to syncd
    raw, _ = mail("Pavel@Gusev.example", "Снова к вам", "Хочу повторить заказ")
    w.deliver(raw)
    w.sync()
    comments = w.portal.comments("contact", cid)
    assert len(comments) == 1 and "повторить заказ" in comments[0]["COMMENT"]
    assert w.portal.leads() == []


def test_our_mail_to_a_stranger_and_mail_between_colleagues_make_nothing(w: MailWorld) -> None:
    out, _ = mail(f"anna@{OWN_DOMAIN}", "Коммерческое предложение", "Предлагаем сотрудничество", to="cold@lead.example")
    internal, _ = mail(f"boss@{OWN_DOMAIN}", "Планёрка", "В 10:00", to=f"anna@{OWN_DOMAIN}")
    w.deliver(out)
    w.deliver(internal)
    counts = w.pull_mail()
    assert counts.skipped == 2 and counts.created == 0
    w.sync()
    assert w.portal.leads() == [] and w.portal.comments("deal", w.open_deal) == []


def test_two_mails_of_a_new_sender_in_one_batch_make_one_lead(w: MailWorld) -> None:
    a, _ = mail("twice@buyer.example", "Первое письмо", "Хочу купить")
    b, _ = mail("twice@buyer.example", "Второе письмо", "И ещё кое-что")
    w.deliver(a)
    w.deliver(b)
    w.sync()
    leads = w.portal.leads()
    assert [lead["TITLE"] for lead in leads] == ["Первое письмо"]
    comments = w.portal.comments("lead", leads[0]["ID"])
    assert len(comments) == 1 and "И ещё кое-что" in comments[0]["COMMENT"]


def test_an_auto_reply_to_our_thread_is_not_attached(w: MailWorld) -> None:
    first, mid = mail("ivan@samovar-fan.example", "Заявка", "Нужен самовар")
    w.deliver(first)
    w.sync()
    (lead,) = w.portal.leads()
    ooo, _ = mail("ivan@samovar-fan.example", "Автоответ: Re: Заявка", "Я в отпуске", in_reply_to=mid,
                  extra_headers={"Auto-Submitted": "auto-replied"})
    w.deliver(ooo)
    assert w.pull_mail().skipped == 1
    w.sync()
    assert w.portal.comments("lead", lead["ID"]) == []


@pytest.mark.postgres
def test_on_postgresql_a_sender_keeps_one_lead_and_threads_on_it(tmp_path: Path, sandbox_url: str, pg_url: str) -> None:
    """The routing's look-ups (open leads by e-mail through PostgreSQL's JSON operators, parents by
    Message-ID) on the shared-database backend."""
    world = make_world(tmp_path, sandbox_url, db_url=pg_url)
    try:
        world.sync()
        first, mid = mail("Pg.Buyer@buyer.example", "Заявка PG", "Нужен термос")
        world.deliver(first)
        world.sync()
        second, _ = mail("pg.buyer@buyer.example", "Ещё одно", "И кружку")
        reply, _ = mail("pg.buyer@buyer.example", "Re: Заявка PG", "Жду счёт", in_reply_to=mid)
        world.deliver(second)
        world.deliver(reply)
        world.sync()
        (lead,) = world.portal.leads()
        assert lead["TITLE"] == "Заявка PG"
        texts = [c["COMMENT"] for c in world.portal.comments("lead", lead["ID"])]
        assert len(texts) == 2 and any("И кружку" in x for x in texts) and any("Жду счёт" in x for x in texts)
    finally:
        world.close()


def test_vcard_of_a_known_client_updates_the_contact_instead_of_making_another(w: MailWorld) -> None:
    vcf = ("BEGIN:VCARD\r\nVERSION:3.0\r\nN:Смирнова;Ольга;;;\r\nFN:Ольга Смирнова\r\n"
           f"EMAIL:{CLIENT_EMAIL}\r\nTEL;TYPE=WORK:+7 495 765-43-21\r\nTITLE:Директор чайной\r\nEND:VCARD\r\n")
    raw = (f"From: anna@{OWN_DOMAIN}\r\nTo: {CRM_ADDRESS}\r\nSubject: card\r\nMessage-ID: <vcard-2@{OWN_DOMAIN}>\r\n"
           "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=VV\r\n\r\n--VV\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\nОбновлённая визитка\r\n--VV\r\n"
           "Content-Type: text/vcard; charset=utf-8\r\nContent-Disposition: attachment; filename=olga.vcf\r\n\r\n"
           + vcf + "--VV--\r\n").encode()
    before = len(w.portal.contacts())
    w.deliver(raw)
    w.sync()
    assert len(w.portal.contacts()) == before                     # matched by e-mail: no second contact
    olga = w.portal.rest("crm.contact.get", {"id": w.client_id})
    assert olga["POST"] == "Директор чайной"
    assert "4957654321" in "".join(ch for ch in str(olga.get("PHONE")) if ch.isdigit())
