"""A display name («Иванова Мария», «ООО Ромашка», "Maria Ivanova") as the parts a CRM keeps.

Mail senders and form visitors give one line. A CRM contact has NAME / LAST_NAME / SECOND_NAME and
a company a TITLE, so a new record made from that line must say which is which, or it is made
with an empty name. Russian names are written both ways round («Иванова Мария», «Мария
Иванова»); a surname is told by its ending (-ов/-ова, -ин/-ина, -ский/-ская…) and a patronymic
by -вич/-вна/-чна, which is how people read them too. Anything else keeps its order: given
name first.
"""

from __future__ import annotations

import re

# legal forms that start (or end) an organisation's name, in the spellings mail clients show
_LEGAL = re.compile(r"^(?:ООО|ОАО|ЗАО|ПАО|НАО|АО|ИП|НКО|АНО|ФГУП|МУП|ГУП|ТОО|LLC|LTD|INC|GMBH|JSC)\b"
                    r"|\b(?:LLC|LTD|INC|GMBH|JSC|ООО|АО)\.?$", re.IGNORECASE)
_QUOTED = re.compile(r"[«\"“„].+[»\"”]")
_SURNAME = re.compile(r"(?:ов|ова|ев|ева|ёв|ёва|ин|ина|ын|ына|ский|ская|цкий|цкая|ой|ая|их|ых|ко|ук|юк|ич|ян|дзе|швили)$",
                      re.IGNORECASE)
_PATRONYMIC = re.compile(r"(?:вич|вна|чна|ична|инична|оглы|кызы)$", re.IGNORECASE)


def is_organisation(display: str) -> bool:
    """«ООО Ромашка», "ООО «Ромашка»", "Romashka LLC": a company, not a person."""
    text = display.strip()
    return bool(text) and (bool(_LEGAL.search(text)) or bool(_QUOTED.search(text)))


def person_parts(display: str) -> dict[str, str]:
    """{"first_name", "last_name", "middle_name"} of the parts the line has (none for an empty one)."""
    words = [w for w in re.split(r"\s+", display.strip().strip("\"'«»")) if w]
    if not words:
        return {}
    if len(words) == 1:
        return {"first_name": words[0]}
    if len(words) == 3 and _PATRONYMIC.search(words[2]):
        return {"last_name": words[0], "first_name": words[1], "middle_name": words[2]}    # Иванова Мария Петровна
    if len(words) == 3 and _PATRONYMIC.search(words[1]):
        return {"first_name": words[0], "middle_name": words[1], "last_name": words[2]}    # Мария Петровна Иванова
    if len(words) == 2 and _SURNAME.search(words[0]) and not _SURNAME.search(words[1]):
        return {"last_name": words[0], "first_name": words[1]}                              # Иванова Мария
    return {"first_name": words[0], "last_name": " ".join(words[1:])}                       # Мария Иванова


__all__ = ["is_organisation", "person_parts"]
