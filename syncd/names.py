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
    where: str                                 # "config.toml: systems.forms.form.deal.stage" (file: key)
    assign: Callable[[str], None]              # puts the id in its place
    pipeline: "Slot | None" = None             # a stage's pipeline (its names are per pipeline)
    resolved: str | None = None

    def is_id(self) -> bool:
        return bool(_ID[self.kind].match(self.value.strip()))


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().strip("«»\"'")).casefold()


# a CRM's own fields that hold these, in a mapping's `defaults` (Bitrix24's names)
DEFAULT_FIELDS = {"CATEGORY_ID": "pipeline", "STAGE_ID": "stage", "SOURCE_ID": "source",
                  "ASSIGNED_BY_ID": "user", "RESPONSIBLE_ID": "user"}
# canonical fields that hold them, in [rules.defaults.*]
CANONICAL = {"pipeline": "pipeline", "stage": "stage", "source": "source", "responsible": "user"}


def slots(settings: Any, mapper: Any = None, rules: Any = None) -> list[Slot]:
    """The CRM names in a config's forms and mailboxes, and (given the mapper) in the CRM maps'
    `defaults` and the rules' managers and defaults — ids included: they resolve to themselves."""
    out: list[Slot] = []
    where = str(getattr(settings, "path", None) or "config.toml")
    for name, sys_settings in settings.systems.items():
        s = settings.connector_settings.get(name)
        if s is None:
            continue
        if sys_settings.type == "forms":
            for form, fs in s.form.items():
                out += _of(fs, f"{where}: systems.{name}.form.{form}", responsible="responsible")
        elif sys_settings.type in ("imap", "telegram", "vk"):     # mailboxes and chats: the same routing keys
            out += _of(s, f"{where}: systems.{name}", responsible="manager")
    if mapper is not None:
        out += _mapping_slots(settings, mapper, rules)
    return out


def _mapping_slots(settings: Any, mapper: Any, rules: Any) -> list[Slot]:
    """`rules`: the parsed rules the daemon runs (RulesConfig): their values are set in place."""
    from syncd.mapping.load import load_mapping_sources

    files: list[str] = []
    rules_file = "rules"
    try:
        for file, ms in load_mapping_sources(settings.daemon.mappings, base=settings.base_dir):
            files += [file] * len(ms.maps)
            if ms.rules:
                rules_file = file
    except Exception:  # noqa: BLE001 - the loader has said why already; keys without their file
        files = []
    out: list[Slot] = []
    crm_types = {n for n, sy in settings.systems.items() if sy.type in ("bitrix24",)}
    for i, em in enumerate(mapper.ms.maps):
        if em.system not in crm_types or not em.defaults:
            continue
        at = f"{files[i] if i < len(files) else 'mappings'}: [[maps]] system = {em.system!r} kind = {em.kind!r} defaults"
        pipe = None
        for key in sorted(em.defaults, key=lambda k: DEFAULT_FIELDS.get(k) != "pipeline"):
            kind = DEFAULT_FIELDS.get(key)
            if kind is None or em.defaults[key] in (None, ""):
                continue
            slot = Slot(kind, str(em.defaults[key]), f"{at}.{key}", (lambda d, k: lambda v: d.__setitem__(k, v))(
                em.defaults, key), pipeline=pipe if kind == "stage" else None)
            pipe = slot if kind == "pipeline" else pipe
            out.append(slot)
    if rules is None:
        return out
    for ent, a in (getattr(rules, "assign", None) or {}).items():
        for j, step in enumerate(a.chain):
            at = f"{rules_file}: rules.assign.{ent}.chain[{j}]"
            if step.manager:
                out.append(Slot("user", str(step.manager), f"{at}.manager",
                                (lambda st: lambda v: setattr(st, "manager", v))(step)))
            for k, m in enumerate(step.group or []):
                out.append(Slot("user", str(m), f"{at}.group[{k}]",
                                (lambda g, n: lambda v: g.__setitem__(n, v))(step.group, k)))
    for ent, d in (getattr(rules, "defaults", None) or {}).items():
        pipe = None
        for key in sorted(d.fields, key=lambda k: not k.endswith(".pipeline")):
            kind = CANONICAL.get(key.split(".", 1)[-1])
            value = d.fields[key]
            if kind is None or not isinstance(value, (str, int)) or "{" in str(value) or value == "":
                continue
            slot = Slot(kind, str(value), f"{rules_file}: rules.defaults.{ent}.\"{key}\"",
                        (lambda f, k: lambda v: f.__setitem__(k, v))(d.fields, key),
                        pipeline=pipe if kind == "stage" else None)
            pipe = slot if kind == "pipeline" else pipe
            out.append(slot)
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
