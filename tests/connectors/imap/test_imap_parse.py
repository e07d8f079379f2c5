"""The mail parser (connectors/imap/parse.py): Russian encodings, lying charsets, HTML, attachments,
vCards, forwarded mail, broken MIME; and two properties: it never raises anything but MailError on
arbitrary bytes, and an encoded subject reads back as it was written."""

from __future__ import annotations

import base64
from email.header import Header

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.imap.parse import MailError, decode_text, html_to_text, parse, parse_vcards

RU = "Здравствуйте! Прошу выставить счёт на два самовара и четыре чайника, доставка в Тверь."


def simple(body: bytes, ctype: str = "text/plain; charset=utf-8", cte: str = "8bit", headers: str = "") -> bytes:
    return (f"From: Ivan <ivan@client.example>\r\nTo: sales@shop.example\r\nSubject: s\r\n{headers}"
            f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n").encode() + body


@pytest.mark.parametrize("charset", ["windows-1251", "koi8-r", "utf-8"])
def test_bodies_in_russian_code_pages(charset: str) -> None:
    m = parse(simple(RU.encode(charset), f"text/plain; charset={charset}"))
    assert m.text == RU


@pytest.mark.parametrize("actual,declared", [("windows-1251", "koi8-r"), ("koi8-r", "windows-1251"),
                                             ("windows-1251", "utf-8"), ("koi8-r", "utf-8"),
                                             ("windows-1251", None), ("koi8-r", "x-unknown-charset"),
                                             ("windows-1251", "iso-8859-1")])
def test_a_charset_that_lies_or_is_missing_falls_back_to_what_reads_as_russian(actual: str, declared: str | None) -> None:
    ctype = f"text/plain; charset={declared}" if declared else "text/plain"
    assert parse(simple(RU.encode(actual), ctype)).text == RU


def test_base64_and_quoted_printable_bodies() -> None:
    b64 = base64.encodebytes(RU.encode("koi8-r"))
    assert parse(simple(b64, "text/plain; charset=koi8-r", "base64")).text == RU
    import quopri

    qp = quopri.encodestring(RU.encode("windows-1251"))
    assert parse(simple(qp, "text/plain; charset=windows-1251", "quoted-printable")).text == RU


@pytest.mark.parametrize("charset,enc", [("koi8-r", "b"), ("windows-1251", "q"), ("utf-8", "b")])
def test_encoded_subject_and_sender_name(charset: str, enc: str) -> None:
    subj = Header("Заявка: самовар 5 л", charset).encode(maxlinelen=76)
    name = Header("Иван Петров", charset).encode()
    raw = f"From: {name} <Ivan.Petrov@Client.Example>\r\nSubject: {subj}\r\n\r\nx\r\n".encode()
    m = parse(raw)
    assert m.subject == "Заявка: самовар 5 л" and m.sender_name == "Иван Петров"
    assert m.sender == "ivan.petrov@client.example"


def test_html_only_mail_gives_its_text_without_scripts_or_styles() -> None:
    html = ("<html><head><title>t</title><style>p{color:red}</style></head><body><p>Добрый день,</p>"
            "<div>нужен <b>термос</b> 0,75&nbsp;л</div><script>alert(1)</script><br>Спасибо</body></html>")
    m = parse(simple(html.encode("windows-1251"), "text/html; charset=windows-1251"))
    assert m.html and [x for x in m.text.splitlines() if x] == ["Добрый день,", "нужен термос 0,75 л", "Спасибо"]
    assert "alert" not in m.text and "color" not in m.text


def test_plain_part_wins_over_html_in_alternative() -> None:
    raw = (b"From: a@client.example\r\nContent-Type: multipart/alternative; boundary=X\r\n\r\n--X\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nplain text\r\n--X\r\n"
           b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>html text</p>\r\n--X--\r\n")
    m = parse(raw)
    assert m.text == "plain text" and not m.html


def _with_attachment(name_header: str, data: bytes) -> bytes:
    return (b"From: a@client.example\r\nSubject: att\r\nContent-Type: multipart/mixed; boundary=Z\r\n\r\n--Z\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\nsee attached\r\n--Z\r\n"
            b"Content-Type: application/pdf\r\n" + name_header.encode() +
            b"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(data) + b"--Z--\r\n")


def test_attachments_are_metadata_unless_kept_and_kept_only_under_the_limit() -> None:
    data = b"%PDF-1.4 " + bytes(range(256)) * 40
    raw = _with_attachment("Content-Disposition: attachment; filename*=UTF-8''%D0%A1%D1%87%D1%91%D1%82.pdf", data)
    m = parse(raw)
    assert m.text == "see attached"
    (a,) = m.attachments
    assert (a.name, a.content_type, a.size, a.content) == ("Счёт.pdf", "application/pdf", len(data), None)
    assert parse(raw, keep_content=True).attachments[0].content == data
    assert parse(raw, keep_content=True, max_attachment=100).attachments[0].content is None


def test_rfc2047_file_name_in_quotes_as_russian_mailers_send_it() -> None:
    name = Header("Прайс-лист.pdf", "koi8-r").encode()
    m = parse(_with_attachment(f'Content-Disposition: attachment; filename="{name}"', b"x" * 10))
    assert m.attachments[0].name == "Прайс-лист.pdf"


def test_vcards_21_quoted_printable_and_30() -> None:
    v21 = ("BEGIN:VCARD\r\nVERSION:2.1\r\nN;CHARSET=windows-1251;ENCODING=QUOTED-PRINTABLE:"
           + "".join(f"={b:02X}" for b in "Иванов;Пётр".encode("cp1251")) + "\r\n"
           "TEL;WORK:+7 495 111-22-33\r\nEMAIL;INTERNET:P.Ivanov@Firm.example\r\nEND:VCARD\r\n"
           "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Anna Lee\r\nEMAIL:anna@firm.example\r\nORG:Firm;Sales\r\nEND:VCARD\r\n")
    a, b = parse_vcards(v21.encode("ascii"))
    assert (a.last_name, a.first_name, a.name) == ("Иванов", "Пётр", "Пётр Иванов")
    assert a.emails == ("p.ivanov@firm.example",) and a.phones == ("+7 495 111-22-33",)
    assert b.name == "Anna Lee" and b.company == "Firm"


def test_forwarded_mail_names_its_original_sender() -> None:
    body = ("Переслано клиентом, разберитесь\r\n\r\n-------- Пересылаемое сообщение --------\r\n"
            "От: Мария Кузнецова <maria@tea-house.example>\r\nТема: Заказ\r\n\r\nНужен самовар\r\n")
    m = parse(simple(body.encode("utf-8")))
    assert m.forwarded_from == ("maria@tea-house.example", "Мария Кузнецова")
    inner = b"From: Orig <orig@client.example>\r\nSubject: q\r\n\r\nhello\r\n"
    raw = (b"From: boss@shop.example\r\nContent-Type: multipart/mixed; boundary=F\r\n\r\n--F\r\n"
           b"Content-Type: text/plain\r\n\r\nfyi\r\n--F\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--F--\r\n")
    assert parse(raw).forwarded_from == ("orig@client.example", "Orig")


def test_thread_headers_and_missing_message_id() -> None:
    raw = (b"From: a@client.example\r\nIn-Reply-To: <p2@shop.example>\r\n"
           b"References: <p1@shop.example>\r\n <p2@shop.example>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0300\r\n\r\nx\r\n")
    m = parse(raw)
    assert m.message_id is None and m.key.endswith("@no-message-id.syncd>") and m.key == parse(raw).key
    assert m.in_reply_to == "<p2@shop.example>" and m.references == ("<p1@shop.example>", "<p2@shop.example>")
    assert m.date is not None and m.date.utcoffset().total_seconds() == 3 * 3600   # type: ignore[union-attr]


def test_auto_replies_and_bounces_are_marked() -> None:
    assert parse(simple(b"x", headers="Auto-Submitted: auto-replied\r\n")).auto
    assert parse(simple(b"x", headers="Precedence: bulk\r\n")).auto
    assert not parse(simple(b"x")).auto


@pytest.mark.parametrize("raw,why", [
    (b"", "empty"),
    (b"just some text without any header\r\n", "header"),
    (b"Subject: no sender\r\n\r\nbody\r\n", "sender"),
    (b"From: a@b.example\r\nContent-Type: multipart/mixed\r\n\r\nno boundary\r\n", "broken MIME"),
    (b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=Q\r\n\r\nnever starts\r\n", "broken MIME"),
    (b"From: a@b.example\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n", "base64"),
    # issue 22: a body that only looks like base64 (letters, digits) decodes to noise, not text
    (b"From: a@b.example\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
     b"Hello this is not base64 at all it is plain text\r\n", "base64"),
    (b"From: a@b.example\r\nContent-Type: text/plain; charset=windows-1251\r\nContent-Transfer-Encoding: base64"
     b"\r\n\r\nQWxsIHlvdXIgYmFzZSBhcmUg\x01\x02\r\n", "base64"),
    (b"From: a@b.example\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
     b"\r\n\r\n=D0=9F=D1=80=ZZ\r\n", "quoted-printable"),
])
def test_unreadable_mail_raises_mail_error_with_the_reason(raw: bytes, why: str) -> None:
    with pytest.raises(MailError) as e:
        parse(raw)
    assert why in e.value.reason


def test_decode_text_prefers_a_declared_charset_that_reads_well() -> None:
    assert decode_text("Ёлка".encode("koi8-r"), "koi8-r") == "Ёлка"
    western = "Grüße aus München, schöne Äpfel für Sie!"
    assert decode_text(western.encode("latin-1"), "iso-8859-1") == western
    assert decode_text(b"plain", None) == "plain"


def test_html_to_text_survives_garbage() -> None:
    assert html_to_text("") == "" and html_to_text("<<<>>>") is not None


# -- properties ------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_never_raises_anything_but_mail_error_on_arbitrary_bytes(data: bytes) -> None:
    try:
        parse(data)
    except MailError:
        pass


_header_lines = st.lists(st.sampled_from([
    b"From: a@b.example", b"From: =?koi8-r?B?8NLJ18XU?= <x@y.example>", b"Subject: =?utf-8?Q?=D0=9F?=",
    b"Content-Type: multipart/mixed; boundary=B", b"Content-Type: text/html; charset=koi8-r",
    b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable", b"--B",
    b"--B--", b"Content-Disposition: attachment; filename*=UTF-8''%FF%FE", b"Message-ID: <<>>",
    b"Date: not a date", b"References: <a@b> junk <c@d", b"Content-Type: message/rfc822", b"",
]), max_size=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_header_lines, st.binary(max_size=300))
def test_never_raises_on_mime_shaped_garbage(lines: list[bytes], tail: bytes) -> None:
    try:
        parse(b"\r\n".join(lines) + b"\r\n" + tail)
    except MailError:
        pass


_text = st.text(alphabet=st.sampled_from(list("абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВЁЖЯ abcXYZ0123456789.,:!?-")),
                min_size=1, max_size=120).map(lambda s: " ".join(s.split())).filter(bool)


@settings(max_examples=200, deadline=None)
@given(_text, st.sampled_from(["utf-8", "koi8-r", "windows-1251"]))
def test_encoded_subjects_round_trip(subject: str, charset: str) -> None:
    enc = Header(subject, charset).encode(maxlinelen=76)
    raw = f"From: a@b.example\r\nSubject: {enc}\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n".encode("ascii")
    assert parse(raw).subject == subject
