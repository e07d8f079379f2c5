"""The exchange client's reading of status answers: which `failure` means "no such mode", how text decodes."""

from __future__ import annotations

import pytest

from connectors.shop.client import decode_text, is_unknown_mode, parse_status


@pytest.mark.parametrize("message,unknown", [
    ("Unknown GET sequence: {'type': 'sale', 'mode': 'import'}", True),     # django-cml2
    ("Неизвестная команда: import", True),                                   # the sandbox / Bitrix wording
    ("режим import не поддерживается", True),
    ("Mode info is not supported", True),
    ("Неизвестная ошибка", False),                                           # an unknown error is an error
    ("Ошибка сервера: повторите обмен позже", False),
    ("Файл syncd-probe.xml не найден", False),
    ("Ошибка авторизации: сессия не найдена", False),
])
def test_unknown_mode_failures(message: str, unknown: bool) -> None:
    assert is_unknown_mode(message) is unknown


def test_status_text_decodes_by_charset_then_utf8_then_cp1251() -> None:
    word = "failure\nНеверный логин или пароль\n"
    assert parse_status(word.encode("cp1251"), "text/html; charset=windows-1251")[1][1] == "Неверный логин или пароль"
    assert parse_status(word.encode("utf-8"), "text/html")[1][1] == "Неверный логин или пароль"
    assert parse_status(word.encode("cp1251"), "")[1][1] == "Неверный логин или пароль"   # no charset: 1251
    assert parse_status(b"\xef\xbb\xbfsuccess\r\nsessionid\r\nabc\r\n") == ("success", ["success", "sessionid", "abc"])
    assert decode_text("ок".encode("utf-8"), "text/plain; charset=nonsense") == "ок"
