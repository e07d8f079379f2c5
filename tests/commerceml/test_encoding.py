"""1C's dates, numbers, booleans and the encoding decision."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal

import pytest

from syncd.commerceml import (MOSCOW, parse_bool, parse_date, parse_datetime, parse_decimal, parse_time,
                              sniff_encoding)
from syncd.errors import BadInput, ProtocolError


@pytest.mark.parametrize("text,expected", [
    ("5880.00", Decimal("5880.00")), ("1 234,50", Decimal("1234.50")), ("1\u00a0234,50", Decimal("1234.50")),
    ("1\u202f234.5", Decimal("1234.5")), (" -12,5 ", Decimal("-12.5")), ("1,234.50", Decimal("1234.50")),
    ("", None), ("  ", None), (None, None), ("0", Decimal("0")),
])
def test_parse_decimal(text, expected) -> None:
    assert parse_decimal(text) == expected


@pytest.mark.parametrize("text", ["abc", "1.2.3", "NaN", "Infinity", "12..5"])
def test_parse_decimal_rejects(text) -> None:
    with pytest.raises(BadInput):
        parse_decimal(text)


@pytest.mark.parametrize("text,expected", [
    ("2026-11-24", date(2026, 11, 24)), ("24.11.2026", date(2026, 11, 24)), ("4.1.2026", date(2026, 1, 4)),
    ("2026-11-24T10:12:31", date(2026, 11, 24)), ("0001-01-01", None), ("01.01.0001", None),
    ("0001-01-01T00:00:00", None), ("", None), (None, None),
])
def test_parse_date(text, expected) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize("d,t,expected", [
    ("2026-11-24", "10:12:31", datetime(2026, 11, 24, 10, 12, 31)),
    ("2026-11-24", "10:12", datetime(2026, 11, 24, 10, 12)),
    ("2026-11-24", None, datetime(2026, 11, 24)),
    ("2026-11-24T10:12:31", None, datetime(2026, 11, 24, 10, 12, 31)),
    ("2026-11-24T10:12", None, datetime(2026, 11, 24, 10, 12)),
    ("24.11.2026 9:05:00", None, datetime(2026, 11, 24, 9, 5)),
    ("24.11.2026", "9:05", datetime(2026, 11, 24, 9, 5)),
])
def test_parse_datetime_forms(d, t, expected) -> None:
    got = parse_datetime(d, t)
    assert got == expected.replace(tzinfo=MOSCOW) and got.utcoffset() == timedelta(hours=3)


def test_parse_datetime_offset_and_errors() -> None:
    assert parse_datetime("2026-11-24T10:12:31+05:00").utcoffset() == timedelta(hours=5)
    for bad in ("31.02.2026", "2026-13-01", "завтра"):
        with pytest.raises(BadInput):
            parse_datetime(bad)
    with pytest.raises(BadInput):
        parse_time("25:00")
    assert parse_time("9:05") == time(9, 5)


def test_parse_bool() -> None:
    assert parse_bool("true") is True and parse_bool(" False ") is False and parse_bool("Да") is True
    assert parse_bool(None) is None
    with pytest.raises(BadInput):
        parse_bool("maybe")


def test_sniff_encoding() -> None:
    cyr = "<КоммерческаяИнформация/>"
    assert sniff_encoding(cyr.encode("utf-8")).encoding == "UTF-8"
    s = sniff_encoding(cyr.encode("cp1251"))
    assert (s.encoding, s.override) == ("windows-1251", True)
    s = sniff_encoding(b"\xef\xbb\xbf" + b'<?xml version="1.0" encoding="windows-1251"?>' + cyr.encode("cp1251"))
    assert (s.encoding, s.skip, s.override) == ("windows-1251", 3, True)
    with pytest.raises(ProtocolError, match="UTF-16"):
        sniff_encoding(b"\xff\xfe<\x00")
    with pytest.raises(ProtocolError, match="unsupported encoding"):
        sniff_encoding(b'<?xml version="1.0" encoding="koi8-r"?><a/>')
