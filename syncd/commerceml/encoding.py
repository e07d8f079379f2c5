"""Encodings, dates and numbers as 1C and the shops write them.

Only UTF-8 and windows-1251 are accepted (with or without a UTF-8 BOM, declared or not). A declaration
that contradicts the bytes is a `ProtocolError` naming the line, never silent mojibake.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation

from syncd.errors import BadInput, ProtocolError

try:
    from zoneinfo import ZoneInfo
    MOSCOW: tzinfo = ZoneInfo("Europe/Moscow")
except Exception:  # pragma: no cover - system without tzdata
    MOSCOW = timezone(timedelta(hours=3), "MSK")

BOM = b"\xef\xbb\xbf"
_DECL = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_ALIASES = {"utf-8": "UTF-8", "utf8": "UTF-8", "windows-1251": "windows-1251", "cp1251": "windows-1251",
            "win-1251": "windows-1251", "1251": "windows-1251", "us-ascii": "UTF-8", "ascii": "UTF-8"}


@dataclass(frozen=True)
class Sniffed:
    """What the head of a file says: the encoding to parse with and how many BOM bytes to skip."""

    encoding: str                 # "UTF-8" or "windows-1251"
    declared: str | None          # as written in <?xml encoding=...?>, None if absent
    skip: int                     # bytes to skip (a BOM that does not match the encoding)
    override: bool                # the parser must be told the encoding (declaration absent or wrong)


def _line_at(data: bytes, pos: int) -> int:
    return data.count(b"\n", 0, pos) + 1


def _utf8_error(data: bytes) -> int | None:
    """Offset of the first invalid UTF-8 byte, ignoring a sequence cut at the end of `data`."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
        return None
    except UnicodeDecodeError as e:
        return e.start


def sniff_encoding(head: bytes) -> Sniffed:
    """Decide the encoding from the first bytes of a file (64 KiB is plenty)."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ProtocolError("UTF-16 is not supported; expected UTF-8 or windows-1251", line=1)
    bom = head.startswith(BOM)
    body = head[3:] if bom else head
    m = _DECL.match(body)
    declared = m.group(1).decode("ascii") if m else None
    if declared is not None and declared.lower() not in _ALIASES:
        raise ProtocolError(f"unsupported encoding {declared!r}; expected UTF-8 or windows-1251", line=1)
    want = _ALIASES[declared.lower()] if declared else None
    bad = _utf8_error(body)
    if bom:
        if bad is None:
            if want == "windows-1251" and not body.isascii():
                # BOM + valid UTF-8 text: the BOM wins, as in every XML parser
                return Sniffed("UTF-8", declared, 0, True)
            return Sniffed("UTF-8" if want != "windows-1251" else "windows-1251", declared,
                           0 if want != "windows-1251" else 3, want == "windows-1251")
        if want == "UTF-8":
            raise ProtocolError(
                f"encoding declared {declared} (and a UTF-8 BOM) but the bytes are not UTF-8 "
                f"(windows-1251?) at byte {bad + 3}", line=_line_at(body, bad))
        return Sniffed("windows-1251", declared, 3, True)  # a stray BOM in front of cp1251 text
    if want is None:
        return Sniffed("UTF-8", None, 0, False) if bad is None else Sniffed("windows-1251", None, 0, True)
    if want == "UTF-8":
        if bad is not None:
            raise ProtocolError(
                f"encoding declared {declared} but the bytes are not UTF-8 (windows-1251?) "
                f"at byte {bad}", line=_line_at(body, bad))
        return Sniffed("UTF-8", declared, 0, False)
    # declared windows-1251: Russian text in cp1251 is practically never valid UTF-8
    if bad is None and not body.isascii() and re.search(rb"[\xd0\xd1][\x80-\xbf]", body):
        pos = next(i for i, b in enumerate(body) if b >= 0x80)
        raise ProtocolError(f"encoding declared {declared} but the text is UTF-8",
                            line=_line_at(body, pos))
    return Sniffed("windows-1251", declared, 0, False)


# ---- numbers ---------------------------------------------------------------------------------

_SPACES = str.maketrans("", "", " \u00a0\u202f\u2009\t")


def parse_decimal(text: str | None) -> Decimal | None:
    """`"1 234,50"`, `"1\u00a0234.50"`, `"5880.00"` → Decimal; empty → None; garbage → BadInput."""
    if text is None:
        return None
    try:                                   # the usual "5880.00": Decimal alone takes it
        value = Decimal(text)
        if value.is_finite():
            return value
    except InvalidOperation:
        pass
    s = text.translate(_SPACES)
    if not s:
        return None
    if "," in s:
        if "." in s:                       # "1,234.50": comma as thousands separator
            s = s.replace(",", "")
        else:
            s = s.replace(",", ".")
    try:
        value = Decimal(s)
    except InvalidOperation:
        raise BadInput(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise BadInput(f"not a finite number: {text!r}")
    return value


def format_decimal(value: Decimal) -> str:
    """Plain notation, never exponent form (1C does not read `1E+3`)."""
    return format(value, "f")


_TRUE = {"true", "1", "да", "yes", "истина"}
_FALSE = {"false", "0", "нет", "no", "ложь", ""}


def parse_bool(text: str | None) -> bool | None:
    if text is None:
        return None
    s = text.strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise BadInput(f"not a boolean: {text!r}")


# ---- dates -----------------------------------------------------------------------------------

_EMPTY_DATES = {"0001-01-01", "01.01.0001", "0001-01-01T00:00:00", "01.01.0001 0:00:00",
                "01.01.0001 00:00:00", ""}
_YMD = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_HMS = re.compile(r"[0-9]{2}:[0-9]{2}:[0-9]{2}\Z")
_DMY = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")


def parse_date(text: str | None) -> date | None:
    """`2026-11-24`, `24.11.2026` (a time part is ignored); empty or `0001-01-01` → None."""
    dt = parse_datetime(text, tz=None)
    return dt.date() if dt else None


def parse_time(text: str | None) -> time | None:
    if text is None or not text.strip():
        return None
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise BadInput(f"not a time: {text!r}")
    try:
        return time(*map(int, parts))
    except ValueError:
        raise BadInput(f"not a time: {text!r}") from None


def parse_datetime(text: str | None, time_text: str | None = None, *,
                   tz: tzinfo | None = MOSCOW) -> datetime | None:
    """1C date and optional separate time → aware datetime in `tz` unless the text has an offset.

    Forms: `2026-11-24`, `24.11.2026`, `2026-11-24T10:12:31`, `2026-11-24T10:12`, `24.11.2026 10:12:31`,
    with or without offset. `tz=None` returns naive values (used for plain dates).
    """
    if text is None:
        return None
    s = text.strip()
    if len(s) == 10 and _YMD.match(s) and not s.startswith("0001"):
        # the usual "2026-11-24" with an optional "10:12:31": no regex groups, no fromisoformat
        t = time_text.strip() if time_text is not None else ""
        dt = None
        try:
            if not t:
                dt = datetime(int(s[:4]), int(s[5:7]), int(s[8:]))
            elif len(t) == 8 and _HMS.match(t):
                dt = datetime(int(s[:4]), int(s[5:7]), int(s[8:]), int(t[:2]), int(t[3:5]), int(t[6:]))
        except ValueError:
            dt = None                      # the general path below words the error
        if dt is not None:
            return dt.replace(tzinfo=tz) if tz is not None else dt
    if s in _EMPTY_DATES or s.startswith("0001-01-01") or s.startswith("01.01.0001"):
        return None
    m = _DMY.match(s)
    try:
        if m:
            d, mo, y, hh, mm, ss = m.groups()
            dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0))
        else:
            dt = datetime.fromisoformat(s.replace(" ", "T", 1) if len(s) > 10 else s)
    except ValueError:
        raise BadInput(f"not a date: {text!r}") from None
    if time_text is not None and time_text.strip() and len(s) <= 10:
        t = parse_time(time_text)
        assert t is not None
        dt = datetime.combine(dt.date(), t.replace(tzinfo=None))
    if dt.tzinfo is None and tz is not None:
        dt = dt.replace(tzinfo=tz)
    return dt


__all__ = ["MOSCOW", "Sniffed", "sniff_encoding", "parse_decimal", "format_decimal", "parse_bool",
           "parse_date", "parse_time", "parse_datetime"]
