"""`syncd check`: everything a user can get wrong in the config, before the daemon meets it.

What the loaders refuse (bad TOML, unknown keys, an empty or unreadable mapping file, a glob that
matches nothing, an unknown transform or value map) stops earlier with exit code 2. What needs the
configured systems is checked here, one finding per fault, each naming the file and the key:

- the database: reachable, or (SQLite) not created yet but creatable where it is configured;
- every system's health check;
- `[[jobs]]` naming a stream the system does not have;
- a map for a system that is not configured, or for a kind its connector cannot write (push) or
  read (pull);
- mapped fields, value-map values and defaults the live system does not have (stages, pipelines,
  user fields: `syncd.mapping.live.check_live`);
- rules naming managers, pipelines or stages the live systems do not have (`syncd.rules.check`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.config import Settings


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


class MappingOrigins:
    """Which mapping file holds each map, value map and the rules (for messages naming the file)."""

    def __init__(self, settings: Settings) -> None:
        from syncd.mapping.load import load_mapping_sources

        self.maps: list[str] = []
        self.values: dict[str, str] = {}
        self.rules: dict[str, str] = {}
        for file, ms in load_mapping_sources(settings.daemon.mappings, base=settings.base_dir):
            self.maps += [file] * len(ms.maps)
            self.values.update({name: file for name in ms.values})
            self.rules.update({name: file for name in ms.rules})

    def file_of(self, key: str) -> str | None:
        """The file of a mapping key as check_live names it: "maps[3](crm.deal)…", "values.x.y"."""
        if key.startswith("maps["):
            i = int(key[5 : key.index("]")])
            return self.maps[i] if i < len(self.maps) else None
        if key.startswith("values."):
            return self.values.get(key.split(".")[1])
        return None


def _where(file: str | None, key: str) -> str:
    return f"{file}: {key}" if file else key


def check_jobs(settings: Settings, connectors: dict[str, Any]) -> list[Finding]:
    out = []
    for i, job in enumerate(settings.jobs):
        conn = connectors.get(job.system)
        if conn is not None and job.stream not in conn.streams:
            have = ", ".join(conn.streams) or "none: its peer calls syncd"
            out.append(
                Finding(
                    "jobs",
                    False,
                    f"{settings.path}: jobs[{i}].stream: system {job.system!r} has no "
                    f"stream {job.stream!r} (streams: {have})",
                )
            )
    return out


def check_map_targets(
    settings: Settings, mapper: Any, connectors: dict[str, Any], origins: MappingOrigins
) -> list[Finding]:
    """Maps for unconfigured systems, or for kinds the system's connector cannot write or read."""
    out = []
    for i, em in enumerate(mapper.ms.maps):
        file = origins.maps[i] if i < len(origins.maps) else None
        key = f"maps[{i}]({em.system}.{em.kind})"
        if em.system not in settings.systems:
            out.append(
                Finding(
                    "mappings",
                    False,
                    f"{_where(file, key + '.system')}: no system named {em.system!r} "
                    f"in {settings.path} [systems] "
                    f"(configured: {', '.join(settings.systems) or 'none'})",
                )
            )
            continue
        conn = connectors.get(em.system)
        if conn is None:
            continue
        ctype = settings.systems[em.system].type
        if em.direction in ("push", "both") and em.kind not in conn.writes:
            out.append(
                Finding(
                    "mappings",
                    False,
                    f"{_where(file, key + '.kind')}: {ctype} system {em.system!r} "
                    f"cannot write {em.kind!r} (it writes: "
                    f"{', '.join(sorted(conn.writes)) or 'nothing'})",
                )
            )
            continue
        if em.direction in ("pull", "both") and conn.streams:
            readable = {k for spec in conn.streams.values() for k in spec.kinds}
            if em.kind not in readable:
                out.append(
                    Finding(
                        "mappings",
                        False,
                        f"{_where(file, key + '.kind')}: {ctype} system {em.system!r} "
                        f"reads no {em.kind!r} (its streams yield: "
                        f'{", ".join(sorted(readable))}); set direction = "push" '
                        f"or fix the kind",
                    )
                )
    return out


# entity types that only rules make (no system sends them): checked as the rules' effects
_EFFECTS = {"notice": "notify", "task": "task", "comment": "comment"}


def _map_where(origins: MappingOrigins, mapper: Any, em: Any) -> str:
    i = mapper.ms.maps.index(em)
    file = origins.maps[i] if i < len(origins.maps) else None
    return f"{file or 'mappings'} [[maps]] system = {em.system!r} kind = {em.kind!r}"


def check_flows(settings: Settings, mapper: Any, connectors: dict[str, Any], origins: MappingOrigins
                ) -> list[Finding]:
    """Every flow the mappings promise can happen: a kind of record that arrives from a system and
    has maps elsewhere can be created in at least one of them, and each effect the rules produce
    (a notice, a task) has a map that takes it. A ✗ names the map to fix and how."""
    from syncd.rules.config import parse_rules

    out: list[Finding] = []
    maps = [m for m in mapper.ms.maps if m.system in settings.systems]
    for etype in sorted({m.entity for m in maps} - set(_EFFECTS)):
        sources = [m for m in maps if m.entity == etype and m.direction in ("pull", "both")]
        for src in sources:
            targets = [m for m in maps if m.entity == etype and m.system != src.system
                       and m.direction in ("push", "both")]
            # a kind a connector makes inside the first record that links to it (a shop's buyer
            # inside its order) needs no `create` of its own
            if targets and not any(m.create or m.kind in getattr(connectors.get(m.system), "embedded_kinds", ())
                                   for m in targets):
                kinds = ", ".join(f"{m.system} {_plural(m.kind)}" for m in targets)
                fix = "; ".join(f"{_map_where(origins, mapper, m)} has no `create = true`" for m in targets)
                out.append(Finding("flows", False, f"{src.system} {_plural(src.kind)} cannot become {kinds}: {fix} "
                                                   "(add it where new records should be made)"))
    try:
        rules = parse_rules(mapper.ms.rules or None)
    except Exception:  # noqa: BLE001 - check_rules reports an invalid [rules]
        return _dedup(out)
    needs: list[tuple[str, str | None, str]] = []       # (effect entity, system or None, which rule)
    for ent, d in rules.defaults.items():
        if d.notify:
            a = rules.assign.get(ent)  # type: ignore[call-overload]
            needs.append(("notice", d.notify_system or (a.system if a else None), f"rules.defaults.{ent}.notify"))
    for i, tr in enumerate(rules.timers):
        if tr.notify:
            needs.append(("notice", tr.notify_system, f"rules.timers[{i}] ({tr.name}).notify"))
        if tr.task is not None:
            needs.append(("task", None, f"rules.timers[{i}] ({tr.name}).task"))
    if rules.repeat_sales is not None:
        needs.append(("task", None, "rules.repeat_sales.task"))
    for effect, system, where in needs:
        takers = [m for m in maps if m.entity == effect and m.create and m.direction in ("push", "both")
                  and (system is None or m.system == system)]
        if not takers:
            in_sys = f" in {system!r}" if system else ""
            system = system or next((n for n, c in connectors.items() if _EFFECTS[effect] in getattr(c, "writes", ())),
                                    None)
            out.append(Finding("flows", False, f"{_rules_file(origins)}: {where} makes a {effect} that no map takes"
                                               f"{in_sys}: add [[maps]] system = {system or '…'!r} kind = "
                                               f"{_EFFECTS[effect]!r} entity = {effect!r} create = true"))
    return _dedup(out)


def _plural(kind: str) -> str:
    return kind[:-1] + "ies" if kind.endswith("y") else kind + "s"


def _rules_file(origins: MappingOrigins) -> str:
    files = sorted(set(origins.rules.values()))
    return ", ".join(files) or "mappings"


def _dedup(findings: list[Finding]) -> list[Finding]:
    seen: set[str] = set()
    return [f for f in findings if not (f.detail in seen or seen.add(f.detail))]  # type: ignore[func-returns-value]


def check_live_mappings(mapper: Any, connectors: dict[str, Any], origins: MappingOrigins) -> list[Finding]:
    from syncd.mapping.live import check_live

    out = []
    for key, problem in check_live(mapper, connectors):
        if key.startswith("systems."):
            out.append(Finding(f"{key.split('.', 1)[1]} mapping", False, problem))
        else:
            out.append(Finding("mappings", False, f"{_where(origins.file_of(key), key)}: {problem}"))
    return out


def check_rules(mapper: Any, connectors: dict[str, Any], origins: MappingOrigins, parsed: Any = None
                ) -> list[Finding]:
    """`parsed`: the rules as the daemon runs them (managers given by name already resolved)."""
    rules_cfg = parsed if parsed is not None else mapper.ms.rules
    if not rules_cfg:
        return []
    from syncd.mapping.live import canonical_schema
    from syncd.rules import check

    live = {}
    unread: list[str] = []
    for name, conn in connectors.items():
        try:
            live[name] = canonical_schema(mapper, name, conn.describe())
        except Exception:  # noqa: BLE001 - check_live has already reported the unreachable system
            unread.append(name)
    files = sorted(set(origins.rules.values()))
    where = files[0] if len(files) == 1 else ", ".join(files)
    # a rule naming a system that is configured but could not be read is not "not configured":
    # it is not checked now, said once
    problems = [p for p in check(rules_cfg, live)
                if not any(f"system {n!r} is not configured" in p for n in unread)]
    out = [Finding("rules", False, f"{where}: {problem}") for problem in problems]
    if unread:
        out.append(Finding("rules", False, f"{where}: not checked against {', '.join(unread)}: "
                                           "its schema could not be read (see its line above)"))
    return out


def check_routes(settings: Settings, mapper: Any) -> list[Finding]:
    """A mailbox's or chat channel's new senders become leads (target = "lead") or deals: some map
    must create that in a CRM, or every new sender's message would be kept and never written."""
    out: list[Finding] = []
    for name, sy in settings.systems.items():
        if sy.type not in ("imap", "telegram", "vk"):
            continue
        target = getattr(settings.connector_settings.get(name), "target", None)
        entity = {"lead": "lead", "deal": "order"}.get(str(target))
        if entity is None:
            continue
        if not any(m.entity == entity and m.create and m.direction in ("push", "both") and m.system != name
                   for m in mapper.ms.maps):
            hint = (' (amoCRM and RetailCRM keep no leads: target = "deal" with pipeline = "0", stage = "NEW")'
                    if target == "lead" else "")
            out.append(Finding("flows", False, f"{settings.path}: systems.{name}.target: {target!r}, but no map "
                                               f"creates a {entity} in any system: its new senders' messages would "
                                               f"never be written{hint}"))
    return out


def check_extensions(settings: Settings, connectors: dict[str, Any]) -> list[Finding]:
    """A PBX routes a returning client's call to his manager's extension, which the CRM keeps with
    its users (Bitrix24: UF_PHONE_INNER): each calls system's CRM must have some, one per user."""
    out: list[Finding] = []
    for name, sy in settings.systems.items():
        if sy.type != "calls":
            continue
        crm = getattr(settings.connector_settings.get(name), "crm", "crm")
        conn = connectors.get(crm)
        if conn is None:
            out.append(Finding("extensions", False,
                               f"systems.{name}.crm: no system named {crm!r} gives the managers' extensions"))
            continue
        try:
            users = conn.describe().users
        except Exception:  # noqa: BLE001 - the CRM's own line has said why it cannot be read
            continue
        if users and not any("extension" in u for u in users.values()):
            # amoCRM, RetailCRM: no extension kept with a user (calls are still logged on clients)
            out.append(Finding("extensions", True, f"{name}: {crm} keeps no extensions with its users: the routing "
                                                   "endpoint answers the queue for every caller"))
            continue
        active = {uid: u for uid, u in users.items() if u.get("active") is not False}
        by_ext: dict[str, list[str]] = {}
        for uid, u in active.items():
            if u.get("extension"):
                by_ext.setdefault(str(u["extension"]), []).append(f"{uid} {u.get('name') or ''}".strip())
        twice = {e: who for e, who in by_ext.items() if len(who) > 1}
        if twice:
            same = "; ".join(f"{e}: {', '.join(who)}" for e, who in sorted(twice.items()))
            out.append(Finding("extensions", False,
                               f"{name}: the same extension for several users of {crm}: {same} (UF_PHONE_INNER)"))
        elif not by_ext:
            out.append(Finding("extensions", False, f"{name}: no user of {crm} has an extension (UF_PHONE_INNER): "
                                                    "every call goes to the queue and none is logged on a manager"))
        else:
            without = [f"{uid} {u.get('name') or ''}".strip() for uid, u in active.items() if not u.get("extension")]
            have = ", ".join(f"{e} {who[0]}" for e, who in sorted(by_ext.items()))
            lacking = f"; without one (their clients' calls go to the queue): {', '.join(without)}" if without else ""
            out.append(Finding("extensions", True, f"{name}: extensions of {crm}: {have}{lacking}"))
    return out


def check_names(rt: Any) -> list[Finding]:
    """Pipelines, stages, sources and users the config names (syncd.names): each name resolved
    through the live CRM as the daemon's live check does (Runtime.resolve_names), or ✗ with what
    exists there."""
    if rt.names_resolved:
        return []                          # ids only: nothing to look up
    problems: list[str] = []
    tried: list[str] = []
    for system in rt.connectors:
        try:
            problems = rt.resolve_names(system)
        except Exception:  # noqa: BLE001 - its health line says why
            tried.append(system)
            continue
        if problems or rt.names_resolved:
            break
    if problems:
        return [Finding("names", False, p) for p in problems]
    if not rt.names_resolved:
        return [Finding("names", False, "pipelines, stages, sources or users are given by name, and no CRM could "
                                        "be read to find them" + (f" ({', '.join(tried)})" if tried else ""))]
    said = ", ".join(f"{s.where.rsplit('.', 1)[-1]} {s.value!r} = {s.resolved}" for s in rt.name_slots
                     if not s.is_id())
    return [Finding("names", True, said)]


def check_waiting(rt: Any) -> list[Finding]:
    """Documents waiting for a system that fetches them itself (1C): how many, since when, and when
    it last connected — so a 1C that stopped exchanging is told apart from writes that fail."""
    from syncd.store.stats import collect

    downloads = rt.downloads()
    if not downloads:
        return []
    out = []
    stats = collect(rt.store, downloads, downloads=downloads)
    for name in downloads:
        w = stats["integrations"][name]["waiting_peer"]
        when = w["last_exchange"] or "never"
        detail = (f"{w['documents']} documents wait for it since {w['since']}; last exchange {when}"
                  if w["documents"] else f"no documents wait for it; last exchange {when}")
        out.append(Finding(f"{name} waiting", True, detail))
    return out


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL and in-memory databases)."""
    from syncd.store.db import normalize_url

    url = normalize_url(url)
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[1] if "///" in url else ""
    path = path.split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


# <state_dir>/database: which database each config of this installation made (by the config file's
# path), written when syncd creates one. A missing SQLite file is then a typo or a lost file, never
# a reason to start again on an empty one.
DB_MARK = "database"


def _marks(state_dir: str | Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads((Path(state_dir) / DB_MARK).read_text(encoding="utf-8"))
        return dict(data) if isinstance(data, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}


def database_mark(state_dir: str | Path, config: Any) -> dict[str, Any] | None:
    mark = _marks(state_dir).get(str(Path(str(config)).resolve()) if config else "")
    return dict(mark) if isinstance(mark, dict) else None


def mark_database(state_dir: str | Path, config: Any, path: Path) -> None:
    """Record that this config's database is at `path` (best effort: a state folder that cannot
    be written is said by the daemon elsewhere). Entries of config files that are gone are dropped."""
    import datetime as dt
    import json

    if not config:
        return
    marks = {k: v for k, v in _marks(state_dir).items() if Path(k).exists()}
    marks[str(Path(str(config)).resolve())] = {"path": str(path),
                                               "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    try:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        tmp = Path(state_dir) / f".{DB_MARK}.{os.getpid()}"
        tmp.write_text(json.dumps(marks, ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(Path(state_dir) / DB_MARK)
    except OSError:
        pass


def missing_database(path: Path, state_dir: str | Path, config: Any) -> str | None:
    """Why a missing SQLite file must not be created now (None: a first start may create it)."""
    mark = database_mark(state_dir, config)
    if mark is None:
        return None
    mark_file = Path(state_dir) / DB_MARK
    if mark.get("path") != str(path):
        return (f"{path} does not exist, and this config's database is {mark.get('path')} "
                f"(made {mark.get('created_at')}, recorded in {mark_file}): check database_url in {config}")
    return (f"{path} does not exist, but syncd made it on {mark.get('created_at')} (recorded in {mark_file}): "
            f"restore it, or remove its line from {mark_file} to start again on an empty database")


def creatable(path: Path, state_dir: str | Path | None = None) -> str | None:
    """None when a SQLite file can be created at `path`; else why not. Its folder must exist — a
    missing folder is far more often a typo in database_url than a wish for a new tree — unless
    it is the state folder, which syncd (or systemd's StateDirectory=) makes at start."""
    parent = path.parent
    if not parent.exists():
        if state_dir is not None and Path(state_dir).resolve() == parent.resolve():
            parent = parent.parent
            while not parent.exists():
                parent = parent.parent
        else:
            return f"the folder {parent} does not exist (a typo in database_url? create the folder first)"
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not writable by this user"
    return None
