"""Match keys: e-mail, phone (E.164), ИНН+КПП, product codes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.keys import generate as gen
from syncd.keys.match import (
    DEFAULT_KEYS,
    inn_kpp_key,
    match_keys,
    normalize_email,
    normalize_phone,
)


@pytest.mark.parametrize("raw", [
    "8 (495) 123-45-67", "+7 495 1234567", "74951234567", "84951234567", "+7 (495) 123-45-67",
    "8-495-123-45-67", "  +7 495 123 45 67  ", "+7 495 123-45-67 доб. 123", "+7 495 123-45-67 ext. 12",
    "495 123-45-67", 74951234567,
])
def test_phone_spellings_are_one_number(raw):
    assert normalize_phone(raw) == "+74951234567"


@pytest.mark.parametrize("raw,expected", [
    ("9123456789", "+79123456789"), ("8 (912) 345-67-89", "+79123456789"), ("89123456789", "+79123456789"),
    ("8-800-555-35-35", "+78005553535"), ("+1 650 253 0000", "+16502530000"),
    ("+44 20 7946 0958", "+442079460958"),
])
def test_phone_normalized(raw, expected):
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize("raw", [
    "", "   ", "123", "abc", "+7 495", "8 (000) 000-00-00", "+7 123 456 78 90 12 34", "x" * 1000,
    None, 3.14, b"84951234567", [], {}, "++++", "\x00\ud800", "+" + "9" * 300,
])
def test_phone_invalid_is_none(raw):
    assert normalize_phone(raw) is None


def test_phone_region():
    assert normalize_phone("030 123456", region="DE") == "+4930123456"
    assert normalize_phone("9123456789", region="ru") == "+79123456789"
    assert normalize_phone("9123456789", region=None) is None


@pytest.mark.parametrize("raw,expected", [
    ("ivan@example.ru", "ivan@example.ru"), ("  Ivan.Petrov@Example.RU ", "ivan.petrov@example.ru"),
    ("ivan@пример.рф", "ivan@xn--e1afmkfd.xn--p1ai"), ("IVAN@ПРИМЕР.РФ", "ivan@xn--e1afmkfd.xn--p1ai"),
    ("Иван Петров <ivan@example.ru>", "ivan@example.ru"), ("mailto:ivan@example.ru", "ivan@example.ru"),
    ("ivan+shop@mail.example.ru.", "ivan+shop@mail.example.ru"),
])
def test_email_normalized(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", [
    "", "ivan", "ivan@", "@example.ru", "ivan@example", "ivan@@example.ru", "iv an@example.ru",
    "ivan@exa mple.ru", "ivan@-example.ru", "ivan@example..ru", ".ivan@example.ru", "ivan@1.2.3.4",
    None, 42, "a" * 400 + "@example.ru",
])
def test_email_invalid_is_none(raw):
    assert normalize_email(raw) is None


def test_inn_kpp_key():
    assert inn_kpp_key("7707083893", "773601001") == "inn_kpp:7707083893/773601001"
    assert inn_kpp_key(" 7707-083-893 ", " 773601001") == "inn_kpp:7707083893/773601001"
    assert inn_kpp_key("7707083893", None) == "inn:7707083893"
    ip = gen.make_inn("5001", individual=True, rng=random.Random(1))
    assert inn_kpp_key(ip, None) == f"inn:{ip}"
    assert inn_kpp_key(ip, "773601001") == f"inn:{ip}"  # an ИП has no КПП: ignored
    assert inn_kpp_key("7707083894", "773601001") is None  # bad checksum: no key
    assert inn_kpp_key("7707083893", "77360") is None
    assert inn_kpp_key(None, None) is None and inn_kpp_key("", "") is None


def test_match_keys_person():
    keys = match_keys("person", {
        "person.email": " Ivan@Example.RU ",
        "person.emails": ["ivan@example.ru", "work@пример.рф", "not an email", None],
        "person.phones": ["8 (495) 123-45-67", "+7 495 1234567", "74951234567", "9123456789", "junk",
                          {"VALUE": "84951234567", "VALUE_TYPE": "WORK"}],
        "person.name": "Иван",
    })
    assert keys == {"email:ivan@example.ru", "email:work@xn--e1afmkfd.xn--p1ai",
                    "phone:+74951234567", "phone:+79123456789"}


def test_match_keys_company_and_selection():
    fields = {"company.inn": "7707083893", "company.kpp": "773601001", "company.emails": ["info@sber.ru"],
              "company.phones": ["8-800-555-55-50"]}
    assert match_keys("company", fields) == {"inn_kpp:7707083893/773601001", "email:info@sber.ru",
                                             "phone:+78005555550"}
    assert match_keys("company", fields, keys=("inn_kpp",)) == {"inn_kpp:7707083893/773601001"}
    assert match_keys("company", {"company.inn": "7707083894", "company.kpp": "773601001"}) == set()
    ip = gen.make_inn("5001", individual=True, rng=random.Random(2))
    assert match_keys("company", {"company.inn": ip}) == {f"inn:{ip}"}
    # fields of another type are not read
    assert match_keys("person", fields) == set()


def test_match_keys_product():
    f = {"product.sku": " A-100 ", "product.barcode": "4601234 567893"}
    assert match_keys("product", f) == {"sku:A-100", "barcode:4601234567893"}
    assert match_keys("product", f, keys=("sku",)) == {"sku:A-100"}
    assert match_keys("product", {}) == set()


def test_match_keys_unknown_kind():
    with pytest.raises(ValueError, match="unknown match key kind"):
        match_keys("person", {"person.email": "a@b.ru"}, keys=("fingerprint",))
    assert DEFAULT_KEYS == ("email", "phone", "inn_kpp")


def test_phone_cache_fast_path():
    from syncd.keys import match
    match._normalize_phone.cache_clear()
    for _ in range(1000):
        normalize_phone("8 (495) 123-45-67")
    info = match._normalize_phone.cache_info()
    assert info.misses == 1 and info.hits == 999


# --- properties ----------------------------------------------------------------------------------

phone_like = st.builds(
    lambda prefix, digits, sep: prefix + sep.join(digits[i:i + 3] for i in range(0, len(digits), 3)),
    st.sampled_from(["", "+7", "8", "7", "+", "+44", "+1", "8 (", "00"]),
    st.text(alphabet="0123456789", min_size=3, max_size=14),
    st.sampled_from(["", " ", "-", ") "]),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(phone_like, st.text(max_size=40)))
def test_phone_idempotent_and_never_raises(raw):
    out = normalize_phone(raw)
    if out is not None:
        assert out.startswith("+") and out[1:].isdigit()
        assert normalize_phone(out) == out
        assert normalize_phone(out, region="US") == out  # E.164 does not depend on the region


emails = st.emails()


@settings(max_examples=300, deadline=None)
@given(st.one_of(emails, st.text(max_size=60)))
def test_email_idempotent_and_never_raises(raw):
    out = normalize_email(raw)
    if out is not None:
        assert out == out.lower() and out.count("@") == 1
        assert normalize_email(out) == out
        assert normalize_email(out.upper()) == out


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["person.email", "person.emails", "person.phones", "company.inn",
                                        "company.kpp", "product.sku", "product.barcode", "x"]),
                       st.one_of(st.none(), st.text(max_size=20), st.integers(), st.lists(st.text(max_size=12)),
                                 st.dictionaries(st.text(max_size=5), st.text(max_size=5)), st.floats())),
       st.sampled_from(["person", "company", "product", "???"]))
def test_match_keys_garbage_never_raises(fields, entity_type):
    keys = match_keys(entity_type, fields, keys=("email", "phone", "inn_kpp", "sku", "barcode"))
    assert all(isinstance(k, str) and ":" in k for k in keys)
    k = inn_kpp_key(fields.get("company.inn"), fields.get("company.kpp"))
    assert k is None or k.startswith(("inn:", "inn_kpp:"))
