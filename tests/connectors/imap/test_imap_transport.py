"""The IMAP session (connectors/imap/transport.py) against a real Dovecot: protocol corners."""

from __future__ import annotations

from pathlib import Path

import pytest
from dovecot import Dovecot, available

from connectors.imap import ImapSettings
from connectors.imap.transport import Session


def _raw(i: int) -> bytes:
    return f"From: a@client.example\r\nSubject: {i}\r\nMessage-ID: <t{i}@client.example>\r\n\r\nbody\r\n".encode()


def test_uid_range_past_the_last_mail_returns_nothing(server: Dovecot) -> None:
    # RFC 3501: "UID n:*" always matches the last mail even when its UID is below n
    server.append_many("INBOX", [_raw(1), _raw(2)])
    with Session(ImapSettings(**server.settings()), "mail") as s:
        s.select("INBOX")
        assert s.new_uids("INBOX", 0) == [1, 2]
        assert s.new_uids("INBOX", 1) == [2]
        assert s.new_uids("INBOX", 2) == []
        raw = s.client.search(["UID", "3:*"])
        assert list(raw) == [2]                      # what the server answers, filtered above


def test_fetch_gives_bytes_and_an_aware_internal_date(server: Dovecot) -> None:
    server.append("INBOX", _raw(1))
    with Session(ImapSettings(**server.settings()), "mail") as s:
        s.select("INBOX")
        (f,) = list(s.fetch("INBOX", [1]))
    assert f.raw.startswith(b"From: a@client.example") and f.internaldate is not None
    assert f.internaldate.tzinfo is not None


def test_move_without_the_move_capability_copies_then_expunges_only_those(tmp_path: Path) -> None:
    if not available():
        pytest.skip("needs Debian's dovecot-imapd")
    with Dovecot(tmp_path / "dv", capability="IMAP4rev1 LITERAL+ UIDPLUS") as d:
        d.append_many("INBOX", [_raw(1), _raw(2), _raw(3)])
        with Session(ImapSettings(**d.settings()), "mail") as s:
            assert not s.capable("MOVE")
            s.move("INBOX", [1, 3], "Taken")
        c = d.client()
        c.select_folder("INBOX", readonly=True)
        assert sorted(c.search()) == [2]
        c.select_folder("Taken", readonly=True)
        assert len(c.search()) == 2
        c.logout()


def test_a_missing_folder_is_a_clear_permanent_error(server: Dovecot) -> None:
    from syncd.errors import PermanentError

    with Session(ImapSettings(**server.settings()), "box") as s:
        with pytest.raises(PermanentError, match="mailbox 'box' .* folder 'Нет такой'"):
            s.select("Нет такой")
