"""Where each kind of record sits in a CommerceML 2 file.

One definition for both readers of a file: the lxml stream (reader.py) asks `is_record` of every
element with a record tag, the byte-level splitter (recovery.py) asks it of every start tag it meets
and `may_lead_to` of every other element. Both must agree record by record, so both use this table.

A path is the local names from the root to the record's parent. The places are the ones 1C and the
CMSs write (2.03–2.10): sections are children of the root, `Контейнер` only there.
"""

from __future__ import annotations

ROOT = "КоммерческаяИнформация"

_R = frozenset({ROOT})
_OFFER_SECTIONS = frozenset({"ПакетПредложений", "ИзмененияПакетаПредложений"})
_CLASSIFIER = frozenset({"Классификатор"})

Level = frozenset | None          # None: any name at this level
Pattern = tuple[Level, ...]

PLACES: dict[str, tuple[Pattern, ...]] = {
    "Документ": ((_R,), (_R, frozenset({"Контейнер"}))),
    "Контрагент": ((_R, frozenset({"Контрагенты"})),),
    "Группа": ((_R, _CLASSIFIER, None),),           # Классификатор/Группы/Группа (top level only)
    "Свойство": ((_R, _CLASSIFIER, None),),
    "Товар": ((_R, frozenset({"Каталог"}), None),),   # Каталог/Товары/Товар
    "ТипыЦен": ((_R, _OFFER_SECTIONS | _CLASSIFIER),),
    "Склады": ((_R, _OFFER_SECTIONS | _CLASSIFIER),),
    "Предложение": ((_R, _OFFER_SECTIONS, frozenset({"Предложения"})),),
}

# Record kinds that may hold an element of their own name, and that element's parent
# (Контрагент/Представители/Представитель/Контрагент; Группа/Группы/Группа).
NESTS_IN = {"Контрагент": "Представитель", "Группа": "Группы"}


def _match(pattern: Pattern, path: tuple[str, ...]) -> bool:
    for level, name in zip(pattern, path):
        if level is not None and name not in level:
            return False
    return True


def is_record(tag: str, path: tuple[str, ...]) -> bool:
    """Is an element `tag` whose ancestors are `path` (root first) a record?"""
    n = len(path)
    for pattern in PLACES[tag]:
        if len(pattern) == n and _match(pattern, path):
            return True
    return False


def may_lead_to(path: tuple[str, ...], kinds: tuple[str, ...]) -> bool:
    """Can a record of one of `kinds` sit strictly below the element at `path` (its own name last)?"""
    n = len(path)
    for kind in kinds:
        for pattern in PLACES[kind]:
            if len(pattern) >= n and _match(pattern, path):
                return True
    return False


def record_kinds_at(path: tuple[str, ...], kinds: tuple[str, ...]) -> tuple[str, ...]:
    """The requested kinds a child of the element at `path` would be a record of."""
    return tuple(k for k in kinds if is_record(k, path))


__all__ = ["ROOT", "PLACES", "NESTS_IN", "is_record", "may_lead_to", "record_kinds_at"]
