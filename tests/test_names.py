"""Display names as a CRM keeps them (syncd/keys/names.py)."""

from __future__ import annotations

import pytest

from syncd.keys.names import is_organisation, person_parts


@pytest.mark.parametrize("display,parts", [
    ("Иванова Мария", {"last_name": "Иванова", "first_name": "Мария"}),
    ("Мария Иванова", {"first_name": "Мария", "last_name": "Иванова"}),
    ("Сергей Новиков", {"first_name": "Сергей", "last_name": "Новиков"}),
    ("Петров Иван Сергеевич", {"last_name": "Петров", "first_name": "Иван", "middle_name": "Сергеевич"}),
    ("Иван Сергеевич Петров", {"first_name": "Иван", "middle_name": "Сергеевич", "last_name": "Петров"}),
    ("Maria Ivanova", {"first_name": "Maria", "last_name": "Ivanova"}),
    ("Мария", {"first_name": "Мария"}),
    ("", {}),
])
def test_person_parts(display: str, parts: dict[str, str]) -> None:
    assert person_parts(display) == parts


@pytest.mark.parametrize("display,org", [
    ("ООО Ромашка", True), ("ООО «Ромашка»", True), ("ИП Сидоров", True), ("Romashka LLC", True),
    ("\"Ромашка\"", True), ("Иванова Мария", False), ("Олег", False), ("", False),
])
def test_is_organisation(display: str, org: bool) -> None:
    assert is_organisation(display) is org
