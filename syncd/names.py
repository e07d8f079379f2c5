"""Pipelines, stages, sources and users by the names a manager sees, in the config.

A form's or a mailbox's settings name where its records go in the CRM: a pipeline, its first stage,
a source, a responsible manager. The CRM keeps ids (Bitrix24: CATEGORY_ID "3", STAGE_ID "C3:NEW",
SOURCE_ID "WEB", user "7"); a person knows «Заявки с сайта», «Новая заявка», «Сайт 4fresh опт»,
anna@company.ru. Either is accepted: a value that is not an id is looked up, case and spacing aside,
among what the live CRM has (its `describe()`: `LiveSchema.names`), at the daemon's live check
and in `syncd check`; an unknown name is one line naming the file and key, with what exists.

Protocol-free: the CRM's connector fills `LiveSchema.names` (kind -> display name -> id); this
module only matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from syncd.connector import LiveSchema

KINDS = ("pipeline", "stage", "source", "user")
SHOWN = 15                     # existing names listed with an unknown one

# what an id of each kind looks like (Bitrix24's; a CRM whose ids differ names them so too)
_ID = {"pipeline": re.compile(r"^\d+$"), "stage": re.compile(r"^(C\d+:)?[A-Z0-9_]+$"),
       "source": re.compile(r"^[A-Z0-9_|]+$"), "user": re.compile(r"^\d+$")}


@dataclass
class Slot:
    """One config value that names a CRM thing."""

    kind: str                                  # pipeline | stage | source | user
    value: str
    where: str                                 # "systems.forms.form.deal.stage" (with the file, in messages)
    assign: Callable[[str], None]              # puts the id in its place
    pipeline: "Slot | None" = None             # a stage's pipeline (its names are per pipeline)
    resolved: str | None = None

    def is_id(self) -> bool:
        return bool(_ID[self.kind].match(self.value.strip()))


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip("«»\"'")).casefold()


def slots(settings: Any) -> list[Slot]:
    """The CRM names in a config's forms and mailboxes (ids included: they resolve to themselves)."""
    out: list[Slot] = []
    for name, sys_settings in settings.systems.items():
        s = settings.connector_settings.get(name)
        if s is None:
            continue
        if sys_settings.type == "forms":
            for form, fs in s.form.items():
                out += _of(fs, f"systems.{name}.form.{form}", responsible="responsible")
        elif sys_settings.type == "imap":
            out += _of(s, f"systems.{name}", responsible="manager")
    return out


def _of(obj: Any, where: str, *, responsible: str) -> list[Slot]:
    def setter(attr: str) -> Callable[[str], None]:
        return lambda v: setattr(obj, attr, v)

    out: list[Slot] = []
    pipe = None
    if getattr(obj, "pipeline", None):
        pipe = Slot("pipeline", str(obj.pipeline), f"{where}.pipeline", setter("pipeline"))
        out.append(pipe)
    if getattr(obj, "stage", None):
        out.append(Slot("stage", str(obj.stage), f"{where}.stage", setter("stage"), pipeline=pipe))
    if getattr(obj, responsible, None):
        out.append(Slot("user", str(getattr(obj, responsible)), f"{where}.{responsible}", setter(responsible)))
    if getattr(obj, "source", None):
        out.append(Slot("source", str(obj.source), f"{where}.source", setter("source")))
    return out


def wanted(found: list[Slot]) -> bool:
    """Does any value need the live CRM (a name, not an id)?"""
    return any(not s.is_id() for s in found)


def resolve(found: list[Slot], live: LiveSchema) -> list[str]:
    """Put the id of every name in its place; one problem line per name the CRM does not have."""
    problems: list[str] = []
    for s in found:                            # pipelines first: a stage's names are its pipeline's
        if s.is_id():
            s.resolved = s.value
            continue
        table = _table(s, live)
        hit = table.get(_norm(s.value))
        if hit is None:
            problems.append(f"{s.where}: no {_what(s)} named {s.value!r}" + _listing(table))
            continue
        s.resolved = hit
        s.assign(hit)
    return problems


def _table(s: Slot, live: LiveSchema) -> Mapping[str, str]:
    names = live.names
    if s.kind != "stage":
        return {_norm(k): v for k, v in names.get(s.kind, {}).items()}
    pipe = s.pipeline.resolved if s.pipeline is not None else "0"
    table = {_norm(k): v for k, v in names.get(f"stage:{pipe or '0'}", {}).items()}
    # "Pipeline / Stage" in one value, for a stage whose pipeline is not given beside it
    for p_name, p_id in names.get("pipeline", {}).items():
        for st_name, st_id in names.get(f"stage:{p_id}", {}).items():
            table.setdefault(_norm(f"{p_name} / {st_name}"), st_id)
    return table


def _what(s: Slot) -> str:
    if s.kind == "stage":
        pipe = s.pipeline.value if s.pipeline is not None else "the default pipeline"
        return f"stage in {pipe!r}"
    return {"pipeline": "pipeline", "source": "source", "user": "user (by e-mail or name)"}[s.kind]


def _listing(table: Mapping[str, str]) -> str:
    if not table:
        return "; the CRM lists none"
    shown = sorted({k for k in table if " / " not in k})[:SHOWN] or sorted(table)[:SHOWN]
    more = f" and {len(table) - len(shown)} more" if len(table) > len(shown) else ""
    return "; there are: " + ", ".join(shown) + more


__all__ = ["KINDS", "Slot", "slots", "wanted", "resolve"]
