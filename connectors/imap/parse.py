"""A raw mail (RFC 5322 bytes) -> `ParsedMail`: what the CRM needs of it, nothing of IMAP.

Built on the stdlib `email` package with `policy.default` (headers decoded from RFC 2047 encoded
words, addresses parsed), plus what Russian mail needs on top of it:

- bodies in windows-1251 / koi8-r, and charsets that lie (a cp1251 body declared as koi8-r or as
  utf-8, or declared as nothing): the bytes are decoded by the declared charset when it decodes
  cleanly and reads like text, else by whichever Cyrillic code page reads most like Russian;
- HTML-only mails: the text is extracted with lxml (no network, no scripts or styles);
- attachments kept as metadata (name, type, size), their content only when asked and under a size
  limit; RFC 2231 and RFC 2047-in-quotes file names;
- vCard attachments (seed 001: "send a vCard to the CRM address and the contact is created");
- a forwarded mail's original sender (the quoted header block, or an attached message/rfc822).

A mail that is not a mail (no header block, no sender) or whose MIME structure is broken (a
multipart without its boundary, a part that cannot be decoded) raises `MailError` with the reason:
the connector turns it into a `Rejected` record (quarantine, with the whole raw mail) and the rest
of the batch goes on. `parse` raises nothing else on any input (a property test holds it to that).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email
import email.errors
import email.header
import email.policy
import email.utils
import functools
import hashlib
import quopri
import re
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from typing import Any

import lxml.html
from lxml import etree

MAX_BODY_CHARS = 100_000              # a timeline comment is not an archive: longer bodies are cut

# defects that mean the MIME structure cannot be trusted: parts would be lost or run together
_FATAL_DEFECTS = (
    email.errors.NoBoundaryInMultipartDefect,
    email.errors.StartBoundaryNotFoundDefect,
    email.errors.MultipartInvariantViolationDefect,
)
_CYRILLIC_SINGLE_BYTE = {"windows-1251", "cp1251", "koi8-r", "koi8-u", "iso-8859-5", "cp866", "x-mac-cyrillic",
                         "maccyrillic"}


class MailError(ValueError):
    """The mail cannot be read as a mail; `reason` says why (for the quarantine)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    size: int
    content: bytes | None = None      # only when the mailbox keeps contents, and under the limit


@dataclass(frozen=True)
class Person:
    """A contact from a vCard."""

    name: str = ""
    first_name: str = ""
    last_name: str = ""
    middle_name: str = ""
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    company: str = ""
    position: str = ""


@dataclass(frozen=True)
class ParsedMail:
    key: str                                   # Message-ID, or a hash of its headers when it has none
    message_id: str | None
    subject: str
    sender: str                                # lower-case address ("" when the From is unreadable)
    sender_name: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    date: dt.datetime | None
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str
    html: bool                                 # the text was extracted from HTML
    attachments: tuple[Attachment, ...] = ()
    vcards: tuple[Person, ...] = ()
    forwarded_from: tuple[str, str] | None = None   # (address, name) of the original sender
    auto: bool = False                         # auto-submitted / bulk / a bounce (RFC 3834)
    truncated: bool = False
    defects: tuple[str, ...] = field(default_factory=tuple)   # minor defects tolerated


# -- the policy ------------------------------------------------------------------------------------

_STRUCTURAL = frozenset({"content-type", "content-transfer-encoding", "content-disposition", "mime-version"})


@functools.lru_cache(maxsize=1024)
def _structural_header(policy: email.policy.EmailPolicy, name: str, value: str) -> Any:
    return email.policy.EmailPolicy.header_fetch_parse(policy, name, value)


class _Policy(email.policy.EmailPolicy):
    """`policy.default`, with the MIME structure headers' parsed objects shared between mails.

    The parser reads each part's Content-Type several times, and policy.default parses it anew each
    time; most mails carry the same few values ("text/plain; charset=utf-8"). The parsed header
    objects are immutable, so one per distinct value serves every mail: parsing is ~5x faster
    (bench/intake_mail.py) with the same results."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if not hasattr(value, "name") and name.lower() in _STRUCTURAL:
            return _structural_header(self, name, value)
        return super().header_fetch_parse(name, value)


POLICY = _Policy()


# -- entry point ------------------------------------------------------------------------------------

def parse(raw: bytes, *, keep_content: bool = False, max_attachment: int = 10 * 2**20,
          max_body_chars: int = MAX_BODY_CHARS) -> ParsedMail:
    """Parse one mail; raises `MailError` (only) when it cannot be read."""
    if not isinstance(raw, (bytes, bytearray)):
        raise MailError("not bytes")
    try:
        return _parse(bytes(raw), keep_content, max_attachment, max_body_chars)
    except MailError:
        raise
    except Exception as exc:  # noqa: BLE001 - the email package's corners: any surprise is a bad mail
        raise MailError(f"unreadable mail ({type(exc).__name__}: {exc})"[:300]) from None


def _parse(raw: bytes, keep_content: bool, max_attachment: int, max_body_chars: int) -> ParsedMail:
    if not raw.strip():
        raise MailError("empty mail")
    msg = email.message_from_bytes(raw, policy=POLICY)
    assert isinstance(msg, EmailMessage)
    if not msg.keys():
        raise MailError("no header block: not an RFC 5322 mail")
    _check_structure(msg)
    sender_name, sender = _first_address(msg, "From")
    if not sender:
        sender_name, sender = _first_address(msg, "Sender")
    if not sender:
        raise MailError("no readable sender (From)")
    message_id = _msg_id(_header(msg, "Message-ID")) or None
    refs = tuple(_msg_ids(_header(msg, "References")))
    in_reply_to = _msg_id(_header(msg, "In-Reply-To")) or None
    subject = _clean(_header(msg, "Subject"))
    date = _date(_header(msg, "Date"))
    text, is_html, attachments, vcards, forwarded = _walk(msg, keep_content, max_attachment)
    truncated = len(text) > max_body_chars
    if truncated:
        text = text[:max_body_chars]
    if forwarded is None:
        forwarded = _forwarded_in_text(text)
    to = tuple(a for _, a in _addresses(msg, "To"))
    cc = tuple(a for _, a in _addresses(msg, "Cc"))
    key = message_id or header_hash(msg)
    return ParsedMail(key=key, message_id=message_id, subject=subject, sender=sender, sender_name=sender_name,
                      to=to, cc=cc, date=date, in_reply_to=in_reply_to, references=refs, text=text,
                      html=is_html, attachments=tuple(attachments), vcards=tuple(vcards),
                      forwarded_from=forwarded, auto=_is_auto(msg, sender), truncated=truncated,
                      defects=tuple(sorted({type(d).__name__ for d in _all_defects(msg)})))


def _check_structure(msg: Message) -> None:
    for part in msg.walk():
        for d in part.defects:
            if isinstance(d, _FATAL_DEFECTS):
                ctype = part.get_content_type()
                raise MailError(f"broken MIME: {type(d).__name__} in a {ctype} part"
                                f"{' (' + str(d) + ')' if str(d) else ''}")


def _all_defects(msg: Message) -> list[Any]:
    return [d for part in msg.walk() for d in part.defects]


# -- headers ---------------------------------------------------------------------------------------

def _header(msg: Message, name: str) -> str:
    """A header as text: its raw value (as the parser stored it, unfolded) with RFC 2047 encoded
    words decoded, and raw 8-bit bytes (mailers that do not encode) read by the body's charset
    rules. Read this way rather than through policy.default's header objects: the same decoding,
    several times faster on the headers the CRM needs (bench/intake_mail.py), never an exception."""
    for k, raw in msg.raw_items():
        if k.lower() == name.lower():
            return decode_words(_unfold(raw))
    return ""


def _raw_all(msg: Message, name: str) -> list[str]:
    return [_unfold(v) for k, v in msg.raw_items() if k.lower() == name.lower()]


def _unfold(value: Any) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", str(value)).strip()


def _eight_bit(value: str) -> str:
    """Raw 8-bit bytes the parser kept as surrogates -> text (utf-8, else the Cyrillic code pages)."""
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    return decode_text(value.encode("ascii", "surrogateescape"), None)


def decode_words(value: str) -> str:
    """RFC 2047 encoded words in a raw header value -> text (unknown charsets by the fallbacks)."""
    value = _eight_bit(value)
    if "=?" not in value:
        return value
    out = []
    try:
        parts = email.header.decode_header(value)
    except Exception:  # noqa: BLE001
        return value
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(chunk)
        else:
            out.append(decode_text(chunk, charset, trust=True))
    return "".join(out)


def _clean(s: str) -> str:
    return " ".join(s.replace("\x00", "").split())


def _addresses(msg: Message, name: str) -> list[tuple[str, str]]:
    out = []
    try:
        pairs = email.utils.getaddresses([_eight_bit(v) for v in _raw_all(msg, name)])
    except Exception:  # noqa: BLE001
        return []
    for display, addr in pairs:
        addr = addr.strip().lower()
        if "@" in addr and " " not in addr:
            out.append((_clean(decode_words(display)), addr))
    return out


def _first_address(msg: Message, name: str) -> tuple[str, str]:
    a = _addresses(msg, name)
    return a[0] if a else ("", "")


_ID = re.compile(r"<([^<>\s]+)>")


def _msg_id(value: str) -> str:
    """`<id@host>` normalized: the part in angle brackets, or the bare token some mailers send."""
    m = _ID.search(value or "")
    if m:
        return f"<{m.group(1)}>"
    v = (value or "").strip()
    return f"<{v}>" if v and " " not in v and "@" in v else ""


def _msg_ids(value: str) -> list[str]:
    return [f"<{m}>" for m in _ID.findall(value or "")]


def _date(value: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        d = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if d is None:
        return None
    return d if d.tzinfo else d.replace(tzinfo=dt.UTC)


def header_hash(msg: Message) -> str:
    """The key of a mail without a Message-ID: a hash of the headers a re-delivery keeps."""
    h = hashlib.blake2b(digest_size=16)
    for name in ("From", "To", "Cc", "Date", "Subject"):
        h.update(name.encode() + b"\0" + _header(msg, name).encode("utf-8", "replace") + b"\0")
    return f"<{h.hexdigest()}@no-message-id.syncd>"


def _is_auto(msg: Message, sender: str) -> bool:
    auto = _header(msg, "Auto-Submitted").strip().lower()
    prec = _header(msg, "Precedence").strip().lower()
    return (auto not in ("", "no")) or prec in ("bulk", "junk", "list") or msg.get_content_type() == "multipart/report"


# -- bodies ----------------------------------------------------------------------------------------

def _walk(msg: EmailMessage, keep: bool, limit: int
          ) -> tuple[str, bool, list[Attachment], list[Person], tuple[str, str] | None]:
    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    vcards: list[Person] = []
    forwarded: tuple[str, str] | None = None
    stack: list[Message] = [msg]
    while stack:
        part = stack.pop(0)
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            # a mail attached whole (forwarded "as attachment"): its sender, and it as an attachment
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else inner
            if isinstance(inner, Message):
                fn, fa = _first_address(inner, "From")
                if fa and forwarded is None:
                    forwarded = (fa, fn)
                data = inner.as_bytes()
                attachments.append(Attachment(_filename(part) or "message.eml", ctype, len(data),
                                              data if keep and len(data) <= limit else None))
            continue
        if part.is_multipart():
            stack = list(part.iter_parts()) + stack if isinstance(part, EmailMessage) else \
                list(part.get_payload()) + stack   # type: ignore[operator]
            continue
        ct_raw = _header(part, "Content-Type")
        cd_raw = _header(part, "Content-Disposition")
        # the stdlib's parameter parsing (RFC 2231 names) only where a name can be: attachments
        named = bool(cd_raw) or "name" in ct_raw.lower()
        name = _filename(part) if named else ""
        disp = (part.get_content_disposition() or "").lower() if cd_raw else ""
        if ctype in ("text/vcard", "text/x-vcard", "text/directory") or name.lower().endswith((".vcf", ".vcard")):
            data = _payload(part)
            vcards.extend(parse_vcards(data, _charset(ct_raw)))
            attachments.append(Attachment(name or "contact.vcf", ctype, len(data),
                                          data if keep and len(data) <= limit else None))
            continue
        if disp == "attachment" or (name and not ctype.startswith("text/")) or not ctype.startswith("text/"):
            data = _payload(part)
            attachments.append(Attachment(name or "attachment", ctype, len(data),
                                          data if keep and len(data) <= limit else None))
            continue
        text = decode_text(_payload(part), _charset(ct_raw))
        if ctype == "text/html":
            html.append(text)
        else:
            plain.append(text)
    if plain:
        body = "\n\n".join(t.strip("\n") for t in plain)
        is_html = False
    elif html:
        body = "\n\n".join(html_to_text(h) for h in html)
        is_html = True
    else:
        body, is_html = "", False
    body = body.replace("\r\n", "\n").replace("\x00", "").strip()
    return body, is_html, attachments, vcards, forwarded


_CHARSET = re.compile(r"""charset\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)


def _charset(content_type: str) -> str | None:
    """The charset parameter of a raw Content-Type value (a plain `charset=` is all mailers send)."""
    m = _CHARSET.search(content_type)
    return m.group(1) if m else None


_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# '=' that starts neither an escape (two hex digits) nor a soft line break
_QP_BAD = re.compile(r"=(?![0-9A-Fa-f]{2}|[ \t]*\r?$)", re.M)


def _payload(part: Message) -> bytes:
    """The decoded bytes of a leaf part, decoded strictly: a base64 body with anything but the
    alphabet and line breaks, or that decodes to binary noise where text was declared, and a
    quoted-printable body with a broken escape, are broken parts (the mail is quarantined), never
    garbage made into a contact."""
    cte = _header(part, "Content-Transfer-Encoding").lower()
    kind = part.get_content_type()
    if cte == "base64":
        raw = part.get_payload(decode=False)
        if not isinstance(raw, str):
            return b""
        compact = re.sub(r"\s+", "", raw)
        if not _B64.fullmatch(compact) or len(compact.rstrip("=")) % 4 == 1:
            raise MailError(f"broken MIME: the base64 body of a {kind} part is not base64")
        try:
            data = base64.b64decode(compact.rstrip("=") + "=" * (-len(compact.rstrip("=")) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise MailError(f"broken MIME: the base64 body of a {kind} part is not base64") from None
        if part.get_content_maintype() == "text" and _noise(data, _charset(_header(part, "Content-Type"))):
            raise MailError(f"broken MIME: the base64 body of a {kind} part decodes to binary noise, not text")
        return data
    if cte == "quoted-printable":
        raw = part.get_payload(decode=False)
        if isinstance(raw, str):
            bad = _QP_BAD.search(raw)
            if bad is not None:
                raise MailError(f"broken MIME: the quoted-printable body of a {kind} part has a broken escape "
                                f"{raw[bad.start():bad.start() + 3]!r}")
    data = part.get_payload(decode=True)     # quoted-printable, 7bit/8bit: the bytes as sent
    return data if isinstance(data, bytes) else b""


def _noise(data: bytes, charset: str | None) -> bool:
    """Bytes that no text is made of: invalid in a declared UTF-8, or full of control bytes."""
    if not data:
        return False
    if (charset or "").lower().replace("_", "-") in ("utf-8", "utf8"):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return True
    control = sum(1 for b in data if b < 32 and b not in (9, 10, 12, 13) or b == 127)
    return control > max(2, len(data) // 20)


def _filename(part: Message) -> str:
    try:
        name = part.get_filename() or ""
    except Exception:  # noqa: BLE001
        name = ""
    if "=?" in name:
        name = decode_words(name)       # RFC 2047 inside quotes: not standard, common in Russian mailers
    return _clean(name)


# -- charsets --------------------------------------------------------------------------------------

_LATIN = {"iso-8859-1", "latin1", "latin-1", "iso8859-1", "windows-1252", "cp1252"}
_RU_COMMON = set("оеаинтсрвлкмдпуяыьгзбчйхжшюцщэфъё")


def _cyr_score(text: str) -> float:
    """How much a text reads like Russian: lower-case common letters among Cyrillic letters.
    cp1251 bytes read as koi8-r (and back) swap the cases and scramble the frequent letters."""
    cyr = [c for c in text if "\u0400" <= c <= "\u04ff"]
    if not cyr:
        return 0.0
    good = sum(1 for c in cyr if c in _RU_COMMON)
    return good / len(cyr)


def decode_text(data: bytes, charset: str | None, *, trust: bool = False) -> str:
    """Bytes of a body -> text: the declared charset when it decodes and reads well, else the
    best of utf-8 / windows-1251 / koi8-r (mailers that omit or misstate the charset).

    `trust`: the declaration is taken whenever it decodes (RFC 2047 encoded words name their
    charset per word, and a few letters are too little evidence to overrule it)."""
    cs = (charset or "").strip().strip('"').lower().replace("_", "-")
    if cs in ("", "us-ascii", "ascii"):
        cs = ""
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        pass
    declared: str | None = None
    if cs:
        try:
            declared = data.decode(cs)
        except (LookupError, UnicodeDecodeError):
            declared = None
    if declared is not None and cs in _LATIN and not trust:
        # Russian text sent as "iso-8859-1" (an old mailer's default) reads as accented Latin:
        # mostly letters from the upper half, where real Western text has a few
        high = sum(1 for c in declared if "\xc0" <= c <= "\xff")
        letters = sum(1 for c in declared if c.isalpha())
        if high >= 8 and high > letters / 2:
            alt = data.decode("windows-1251", "replace"), data.decode("koi8-r", "replace")
            best = max(alt, key=_cyr_score)
            return best if _cyr_score(best) > 0.6 else declared
        return declared
    if declared is not None and (trust or cs not in _CYRILLIC_SINGLE_BYTE):
        return declared
    if declared is None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    cands = []
    for alt in ("windows-1251", "koi8-r"):
        try:
            t = data.decode(alt)
        except UnicodeDecodeError:
            continue
        cands.append((_cyr_score(t), t))
    if declared is not None:
        # a Cyrillic code page was declared: overruled only when another reads clearly better
        # and there is enough text to tell
        if sum(1 for c in declared if "\u0400" <= c <= "\u04ff") < 8:
            return declared
        best = max(cands, key=lambda c: c[0]) if cands else (0.0, declared)
        return best[1] if best[0] > _cyr_score(declared) + 0.25 else declared
    if cands:
        return max(cands, key=lambda c: c[0])[1]
    return data.decode("utf-8", "replace")


# -- HTML ------------------------------------------------------------------------------------------

_BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote", "pre",
           "ul", "ol", "hr", "section", "article", "header", "footer"}


def html_to_text(html: str) -> str:
    """The readable text of an HTML body: block elements as line breaks, no scripts or styles."""
    if not html.strip():
        return ""
    try:
        parser = lxml.html.HTMLParser(no_network=True, remove_comments=True, remove_pis=True, encoding="utf-8")
        doc = lxml.html.document_fromstring(html.encode("utf-8"), parser=parser)
    except (etree.ParserError, ValueError):
        return _clean(re.sub(r"<[^>]*>", " ", html))
    for bad in doc.xpath("//script|//style|//head"):
        bad.drop_tree()
    for el in doc.iter():
        if isinstance(el.tag, str) and el.tag.lower() in _BLOCKS:
            el.tail = "\n" + (el.tail or "")
    text = doc.text_content()
    lines = [" ".join(line.split()) for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


# -- forwarded mail ---------------------------------------------------------------------------------

_FWD_MARK = re.compile(r"^[ >]*(-{2,}\s*(Forwarded message|Original Message|Пересылаемое сообщение|"
                       r"Исходное сообщение|Forwarded Message)\s*-{2,}|Begin forwarded message:)",
                       re.IGNORECASE | re.MULTILINE)
_FROM_LINE = re.compile(r"^[ >]*(?:From|От|Від|Od)\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)


def _forwarded_in_text(text: str) -> tuple[str, str] | None:
    """The original sender named in a forwarded block ("---- Forwarded message ----\\nFrom: …")."""
    m = _FWD_MARK.search(text)
    if not m:
        return None
    f = _FROM_LINE.search(text, m.end())
    if not f:
        return None
    pairs = email.utils.getaddresses([f.group(1).strip()])
    for name, addr in pairs:
        if "@" in addr:
            return addr.strip().lower(), _clean(name)
    m2 = re.search(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", f.group(1))
    return (m2.group(0).lower(), "") if m2 else None


# -- vCard -----------------------------------------------------------------------------------------

def parse_vcards(data: bytes, charset: str | None = None) -> list[Person]:
    """vCard 2.1/3.0/4.0 -> contacts (FN, N, EMAIL, TEL, ORG, TITLE); anything unreadable is skipped."""
    text = decode_text(data, charset)
    # unfold: a line starting with a space continues the previous one (2.1 QP soft breaks too)
    text = re.sub(r"\r?\n[ \t]", "", text)
    text = re.sub(r"=\r?\n", "", text)
    out: list[Person] = []
    cur: dict[str, Any] | None = None
    for line in text.splitlines():
        if ":" not in line:
            continue
        head, _, value = line.partition(":")
        params = head.split(";")
        name = params[0].split(".")[-1].upper()
        pmap = {p.split("=", 1)[0].upper(): (p.split("=", 1)[1] if "=" in p else "") for p in params[1:]}
        if pmap.get("ENCODING", "").upper() in ("QUOTED-PRINTABLE", "QP"):
            value = decode_text(quopri.decodestring(value.encode("latin-1", "replace")), pmap.get("CHARSET"))
        value = value.replace("\\,", ",").replace("\\;", "\x00").replace("\\n", "\n").strip()
        if name == "BEGIN" and value.upper() == "VCARD":
            cur = {"emails": [], "phones": []}
        elif name == "END" and cur is not None:
            p = Person(name=cur.get("fn", ""), first_name=cur.get("first", ""), last_name=cur.get("last", ""),
                       middle_name=cur.get("middle", ""), emails=tuple(cur["emails"]), phones=tuple(cur["phones"]),
                       company=cur.get("org", ""), position=cur.get("title", ""))
            if p.name or p.emails or p.phones or p.last_name:
                out.append(p)
            cur = None
        elif cur is None:
            continue
        elif name == "FN":
            cur["fn"] = value.replace("\x00", ";")
        elif name == "N":
            parts = [x.replace("\x00", ";").strip() for x in value.split(";")] + ["", "", ""]
            cur["last"], cur["first"], cur["middle"] = parts[0], parts[1], parts[2]
        elif name == "EMAIL":
            v = value.lower().removeprefix("mailto:")
            if "@" in v:
                cur["emails"].append(v)
        elif name == "TEL":
            v = value.removeprefix("tel:")
            if any(ch.isdigit() for ch in v):
                cur["phones"].append(v)
        elif name == "ORG":
            cur["org"] = value.split(";")[0].replace("\x00", ";")
        elif name == "TITLE":
            cur["title"] = value.replace("\x00", ";")
    if not out:
        return out
    return [p if p.name else Person(**{**p.__dict__, "name": " ".join(x for x in (p.first_name, p.last_name) if x)})
            for p in out]
