"""The imap connector against a real Dovecot: cursor, PEEK, first-start period, UIDVALIDITY, the
after-commit flag/move, IDLE, and the settings' safety rules."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from dovecot import Dovecot
from pydantic import ValidationError

from connectors.imap import ImapConnector, ImapSettings
from connectors.imap.connector import load_cursor
from syncd.connector import RawRecord, Rejected


def raw(i: int, *, sender: str = "buyer@client.example", mid: str | None = None, extra: str = "") -> bytes:
    m = mid if mid is not None else f"<m{i}@client.example>"
    head = f"From: {sender}\r\nTo: sales@shop.example\r\nSubject: mail {i}\r\n"
    if m:
        head += f"Message-ID: {m}\r\n"
    return (head + extra + f"\r\nbody {i}\r\n").encode()


def read_all(c: ImapConnector, cursor: str | None, **kw: Any) -> tuple[list[Any], str | None, list[Any]]:
    """Every record of one read, the last cursor, and the batches (acks run as the engine would)."""
    recs: list[Any] = []
    batches = []
    for b in c.read("mail", cursor, **kw):
        recs += b.records
        if b.cursor is not None:
            cursor = b.cursor
        if b.ack:
            b.ack()
        batches.append(b)
    return recs, cursor, batches


def test_reads_new_mail_incrementally_in_batches_and_never_marks_it_seen(server: Dovecot) -> None:
    server.append_many("INBOX", [raw(i) for i in range(5)])
    c = ImapConnector("mail", ImapSettings(**server.settings(batch=2)))
    recs, cur, batches = read_all(c, None)
    assert [r.external_id for r in recs] == [f"<m{i}@client.example>" for i in range(5)]
    assert [len(b.records) for b in batches] == [2, 2, 1]
    # each batch's cursor covers that batch only: a crash after batch 1 re-reads from mail 3
    assert load_cursor(batches[0].cursor)["INBOX"]["last"] == 2
    # nothing new: nothing read
    assert read_all(c, cur)[0] == []
    server.append("INBOX", raw(5))
    recs2, _cur2, _ = read_all(c, cur)
    assert [r.external_id for r in recs2] == ["<m5@client.example>"]
    # BODY.PEEK[]: the mails are still unread for the people who use the mailbox
    cl = server.client()
    cl.select_folder("INBOX", readonly=True)
    flags = cl.get_flags(cl.search())
    assert flags and all(b"\\Seen" not in f for f in flags.values())
    cl.logout()


def test_first_start_reads_only_the_configured_period(server: Dovecot) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    server.append("INBOX", raw(1), when=old)
    server.append("INBOX", raw(2))
    c = ImapConnector("mail", ImapSettings(**server.settings(first_days=3)))
    recs, cur, _ = read_all(c, None)
    assert [r.external_id for r in recs] == ["<m2@client.example>"]
    assert load_cursor(cur)["INBOX"]["last"] == 2


def test_uidvalidity_change_rereads_the_period_under_the_same_keys(server: Dovecot) -> None:
    server.append_many("Sales", [raw(1), raw(2)])
    c = ImapConnector("mail", ImapSettings(**server.settings(folders=["Sales"])))
    _recs, cur, _ = read_all(c, None)
    before = load_cursor(cur)["Sales"]
    server.recreate("Sales", [raw(1), raw(2), raw(3)])
    recs2, cur2, _ = read_all(c, cur)
    after = load_cursor(cur2)["Sales"]
    assert after["uidvalidity"] != before["uidvalidity"]
    # the whole folder again (within the period), the same records' keys: the engine binds them
    assert [r.external_id for r in recs2] == ["<m1@client.example>", "<m2@client.example>", "<m3@client.example>"]


def test_mail_without_message_id_gets_a_stable_key(server: Dovecot) -> None:
    server.append("INBOX", raw(7, mid=""))
    c = ImapConnector("mail", ImapSettings(**server.settings()))
    a = read_all(c, None)[0]
    b = read_all(c, None)[0]
    assert a[0].external_id == b[0].external_id and a[0].external_id.endswith("@no-message-id.syncd>")


def test_a_broken_mail_is_rejected_with_where_it_is_and_the_others_are_read(server: Dovecot) -> None:
    broken = b"From: x@client.example\r\nContent-Type: multipart/mixed\r\n\r\nno boundary\r\n"
    server.append_many("INBOX", [raw(1), broken, raw(3)])
    c = ImapConnector("box", ImapSettings(**server.settings()))
    recs = read_all(c, None)[0]
    assert [type(r).__name__ for r in recs] == ["RawRecord", "Rejected", "RawRecord"]
    rej = recs[1]
    assert isinstance(rej, Rejected) and rej.raw == broken
    assert "mailbox 'box' folder 'INBOX' UID 2" in rej.reason and "broken MIME" in rej.reason


@pytest.mark.parametrize("mode", ["flag", "move"])
def test_after_commit_flags_or_moves_never_deletes(server: Dovecot, mode: str) -> None:
    server.append_many("INBOX", [raw(1), raw(2)])
    c = ImapConnector("mail", ImapSettings(**server.settings(after_commit=mode, move_to="Taken")))
    batches = list(c.read("mail", None))
    cl = server.client()
    cl.select_folder("INBOX", readonly=True)
    assert all(b"$SyncdTaken" not in f for f in cl.get_flags(cl.search()).values())   # not before the commit
    for b in c.read("mail", None):
        b.ack() if b.ack else None
    del batches
    cl.select_folder("INBOX", readonly=True)
    here = cl.get_flags(cl.search())
    if mode == "flag":
        assert len(here) == 2 and all(b"$SyncdTaken" in f for f in here.values())
    else:
        assert here == {}
        cl.select_folder("Taken", readonly=True)
        assert len(cl.search()) == 2          # moved, not lost
    cl.logout()


class _Ctx:
    system = "mail"

    def __init__(self) -> None:
        self.triggered = threading.Event()
        self.streams: list[str] = []

    def trigger(self, stream: str) -> None:
        self.streams.append(stream)
        self.triggered.set()


def test_idle_wakes_the_stream_when_a_mail_arrives(server: Dovecot) -> None:
    ctx = _Ctx()
    c = ImapConnector("mail", ImapSettings(**server.settings(idle=True, poll_interval=3600)), ctx)  # type: ignore[arg-type]
    try:
        assert c.start_watch()
        time.sleep(0.7)                 # the watcher is idling
        assert not ctx.triggered.is_set()
        t0 = time.monotonic()
        server.append("INBOX", raw(1))
        assert ctx.triggered.wait(10), "IDLE did not report the new mail"
        assert ctx.streams[0] == "mail" and time.monotonic() - t0 < 10
    finally:
        t1 = time.monotonic()
        c.close()
    # the watcher idles for idle_renew (600 s) at a time: a stop ends the wait at once, not then
    assert all(not t.is_alive() for t in c._watchers) and time.monotonic() - t1 < 3


def test_settings_refuse_plain_imap_off_loopback_and_hide_the_password() -> None:
    with pytest.raises(ValidationError, match="loopback"):
        ImapSettings(host="imap.example.ru", tls="none", username="u", password="p")
    s = ImapSettings(host="imap.example.ru", username="sales", password="hunter2-secret")
    assert s.effective_port == 993 and "hunter2-secret" not in repr(s) and "hunter2-secret" not in str(s.model_dump())
    assert ImapSettings(host="imap.example.ru", tls="starttls", username="u", password="p").effective_port == 143
    with pytest.raises(ValidationError, match="move_to"):
        ImapSettings(host="127.0.0.1", tls="none", username="u", password="p", after_commit="move")


def test_wrong_password_is_a_clear_permanent_error_without_the_password(server: Dovecot) -> None:
    from syncd.errors import PermanentError

    c = ImapConnector("mail", ImapSettings(**server.settings(password="wrong-pass-xyz")))
    with pytest.raises(PermanentError) as e:
        list(c.read("mail", None))
    assert "login refused" in str(e.value) and "mailbox 'mail'" in str(e.value)
    assert "wrong-pass-xyz" not in str(e.value)
    h = c.health()
    assert not h.ok and "wrong-pass-xyz" not in h.detail


def test_health_names_folders_and_idle(server: Dovecot) -> None:
    server.append("INBOX", raw(1))
    h = ImapConnector("mail", ImapSettings(**server.settings())).health()
    assert h.ok and "INBOX (1 mails)" in h.detail and "IDLE" in h.detail


def test_vcard_attachment_yields_a_contact_record(server: Dovecot) -> None:
    vcf = ("BEGIN:VCARD\r\nVERSION:3.0\r\nN:Кузнецова;Мария;Ивановна;;\r\nFN:Мария Кузнецова\r\n"
           "EMAIL;TYPE=WORK:maria@tea-house.example\r\nTEL;TYPE=CELL:+7 916 123-45-67\r\nTITLE:Закупщик\r\nEND:VCARD\r\n")
    body = ("From: anna@shop.example\r\nTo: crm@shop.example\r\nSubject: contact\r\nMessage-ID: <v1@shop.example>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BB\r\n\r\n--BB\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nНовый контакт\r\n--BB\r\n"
            "Content-Type: text/vcard; charset=utf-8\r\nContent-Disposition: attachment; filename=maria.vcf\r\n\r\n"
            + vcf + "--BB--\r\n").encode()
    server.append("INBOX", body)
    recs = read_all(ImapConnector("mail", ImapSettings(**server.settings())), None)[0]
    kinds = [r.kind for r in recs if isinstance(r, RawRecord)]
    assert kinds == ["mail", "vcard"]
    card = recs[1].fields
    assert card["Email"] == "maria@tea-house.example" and card["LastName"] == "Кузнецова"
    assert card["Phone"] == "+7 916 123-45-67" and card["Position"] == "Закупщик"
    assert recs[0].fields["Attachments"] == [{"name": "maria.vcf", "type": "text/vcard", "size": len(vcf.encode()) - 2}]  # the CRLF before the boundary is the boundary's


def test_cursor_is_plain_json() -> None:
    assert load_cursor(None) == {} and load_cursor("garbage") == {}
    assert load_cursor(json.dumps({"folders": {"INBOX": {"uidvalidity": 5, "last": 9}}})) == {
        "INBOX": {"uidvalidity": 5, "last": 9}}


@pytest.fixture
def tls_server(tmp_path: Any) -> Any:
    from dovecot import available

    if not available():
        pytest.skip("needs Debian's dovecot-imapd (.ci/run installs it)")
    with Dovecot(tmp_path / "dovecot-tls", tls=True) as d:
        yield d


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_tls_modes_read_mail_over_tls(tls_server: Dovecot, mode: str) -> None:
    tls_server.append("INBOX", raw(1))
    port = tls_server.tls_port if mode == "implicit" else tls_server.port
    s = ImapSettings(host="127.0.0.1", port=port, tls=mode, ca_bundle=tls_server.ca_file,
                     username=tls_server.user, password=tls_server.password)
    recs = read_all(ImapConnector("mail", s), None)[0]
    assert [r.external_id for r in recs] == ["<m1@client.example>"]
    # a server certificate nobody vouches for is refused (no CA given: the system's CAs)
    bad = ImapSettings(host="127.0.0.1", port=port, tls=mode, username=tls_server.user, password=tls_server.password)
    from syncd.errors import TransientError

    with pytest.raises(TransientError, match="cannot connect"):
        list(ImapConnector("mail", bad).read("mail", None))


def test_without_idle_the_watcher_leaves_it_to_polling(tmp_path: Any) -> None:
    from dovecot import available

    if not available():
        pytest.skip("needs Debian's dovecot-imapd")
    with Dovecot(tmp_path / "dovecot-noidle", capability="IMAP4rev1 LITERAL+ UIDPLUS") as d:
        ctx = _Ctx()
        c = ImapConnector("mail", ImapSettings(**d.settings(idle=True)), ctx)  # type: ignore[arg-type]
        try:
            assert c.start_watch()
            deadline = time.monotonic() + 10
            while any(t.is_alive() for t in c._watchers) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not any(t.is_alive() for t in c._watchers)   # no IDLE: the watcher stepped aside
            d.append("INBOX", raw(1))
            assert not ctx.triggered.wait(1.0)
            assert [r.external_id for r in read_all(c, None)[0]] == ["<m1@client.example>"]   # the poll reads it
            assert c.streams["mail"].default_interval == 60.0
        finally:
            c.close()


def test_records_carry_exactly_the_fields_described_and_the_example_mapping_uses_only_those(server: Dovecot) -> None:
    from syncd.mapping import load_mappings
    from syncd.mapping.live import check_live

    server.append("INBOX", raw(1))
    c = ImapConnector("mail", ImapSettings(**server.settings()))
    recs = read_all(c, None)[0]
    assert set(recs[0].fields) == c.describe().kinds["mail"]
    root = Path(__file__).resolve().parents[3]
    ms = load_mappings([str(root / "mappings" / "mail.toml")])
    assert check_live(ms, {"mail": c}) == []


def test_syncd_init_writes_a_mailbox(tmp_path: Any) -> None:
    from syncd.config import load_settings
    from syncd.init import init_directory

    init_directory(tmp_path / "etc", ["bitrix24", "imap"], state_dir=str(tmp_path / "state"))
    cfg = (tmp_path / "etc" / "config.toml").read_text(encoding="utf-8")
    assert "[systems.mail]" in cfg and '"mappings/mail.toml"' in cfg and "[systems.shop]" not in cfg
    assert "MAIL_PASSWORD=" in (tmp_path / "etc" / "env").read_text(encoding="utf-8")
    assert (tmp_path / "etc" / "mappings" / "mail.toml").exists()
    s = load_settings(tmp_path / "etc" / "config.toml", env={"MAIL_PASSWORD": "p", "B24_WEBHOOK_URL":
                                                             "https://portal.example.ru/rest/1/abc/",
                                                             "B24_APP_TOKEN": "t", "SYNCD_ADMIN_TOKEN": "a"})
    assert s.connector_settings["mail"].host == "imap.example.ru"
