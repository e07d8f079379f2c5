"""Factories for the engine's tests: three in-memory systems and a mapping between them."""

from __future__ import annotations

from typing import Any

from syncd.mapping import Mapper, parse_mapping_doc
from syncd.mapping.load import validate_set
from syncd.pipeline.push import PushPolicy
from syncd.sandbox.memory import MemoryConnector, MemorySystem
from syncd.store import Store
from syncd.sync import Syncer

SYSTEMS = ("crm", "shop", "onec")

STATUS_CODES = {
    "crm": {"new": "NEW", "paid": "PREPAYMENT_INVOICE", "shipped": "EXECUTING", "completed": "WON"},
    "shop": {"new": "N", "paid": "P", "shipped": "S", "completed": "F"},
    "onec": {"new": "Новый", "paid": "Оплачен", "shipped": "Отгружен", "completed": "Закрыт"},
}


def mapping_doc(conflicts: dict[str, Any] | None = None, origin: dict[str, list[str]] | None = None,
                systems: tuple[str, ...] = SYSTEMS) -> dict[str, Any]:
    maps = []
    for s in systems:
        maps.append({"system": s, "kind": "person", "entity": "person", "create": True, "fields": {
            "person.name": "name", "person.email": "email", "person.phone": "phone",
            "person.comment": "comment", "person.inn": "inn"}})
        maps.append({"system": s, "kind": "order", "entity": "order", "create": True, "fields": {
            "order.number": "number", "order.status": {"field": "status", "values": f"status_{s}"},
            "order.total": {"field": "total", "transform": "money"},
            "order.customer": "customer_id", "order.comment": "comment"}})
    origin = origin or {"person": ["crm", "shop"], "order": ["shop", "crm"]}
    return {
        "maps": maps,
        "values": {f"status_{s}": STATUS_CODES[s] for s in systems},
        "identity": {"person": {"keys": ["email", "phone"], "origin": origin["person"]},
                     "order": {"keys": ["number"], "origin": origin["order"]}},
        "conflicts": conflicts if conflicts is not None else {
            "order.status": {"policy": "owner", "owner": "shop"},
            "person.phone": {"policy": "priority", "order": ["crm", "shop", "onec"]},
            "*": {"policy": "newest"},
        },
    }


def make_mapper(**kw: Any) -> Mapper:
    ms = parse_mapping_doc(mapping_doc(**kw), "test")
    validate_set(ms)
    return Mapper(ms)


def make_world(store: Store, *, systems: tuple[str, ...] = SYSTEMS, mapper: Mapper | None = None,
               remote: dict[str, MemorySystem] | None = None, policy: PushPolicy | None = None,
               worker: str = "w") -> tuple[Syncer, dict[str, MemorySystem]]:
    remote = remote or {s: MemorySystem(s, ("person", "order")) for s in systems}
    conns = {s: MemoryConnector(s, remote[s]) for s in systems}
    syncer = Syncer(store, mapper or make_mapper(systems=systems), conns, worker=worker,
                    policy=policy or PushPolicy(base_delay=0.0, inline_wait_max=0.0, claim_ttl=300))
    return syncer, remote


def person(name: str = "Иван Петров", email: str | None = "ivan@example.ru", phone: str | None = None,
           **extra: Any) -> dict[str, Any]:
    out = {"name": name, **extra}
    if email is not None:
        out["email"] = email
    if phone is not None:
        out["phone"] = phone
    return out


def toml_value(v: Any) -> str:
    import json as _json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return _json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_json.dumps(k, ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def mapping_toml(doc: dict[str, Any]) -> str:
    """A mapping dict (as from mapping_doc) as TOML text, the way a user would write it."""
    out = []
    for m in doc.get("maps", []):
        out.append("[[maps]]")
        out += [f"{k} = {toml_value(v)}" for k, v in m.items()]
        out.append("")
    for section in ("values", "identity", "conflicts"):
        for name, body in doc.get(section, {}).items():
            out.append(f"[{section}.{toml_value(name) if '.' in name or '*' in name else name}]")
            out += [f"{toml_value(k) if not k.isidentifier() else k} = {toml_value(v)}" for k, v in body.items()]
            out.append("")
    return "\n".join(out)


def write_config(tmp_path: Any, *, systems: dict[str, dict[str, Any]] | None = None,
                 daemon: dict[str, Any] | None = None, mapping: dict[str, Any] | None = None,
                 jobs: list[dict[str, Any]] | None = None) -> Any:
    """config.toml + mappings/main.toml in tmp_path, for the daemon and CLI tests."""
    import uuid as _uuid

    systems = systems or {f"crm{_uuid.uuid4().hex[:6]}": {"type": "memory"},
                          f"shop{_uuid.uuid4().hex[:6]}": {"type": "memory"}}
    names = tuple(systems)
    (tmp_path / "mappings").mkdir(exist_ok=True)
    doc = mapping or _renamed_mapping(names)
    (tmp_path / "mappings" / "main.toml").write_text(mapping_toml(doc), encoding="utf-8")
    d = {"database_url": f"sqlite:///{tmp_path}/syncd.db", "listen": "127.0.0.1:0", "mappings": ["mappings/*.toml"],
         "push_interval": 0.5, **(daemon or {})}
    lines = ["[daemon]"] + [f"{k} = {toml_value(v)}" for k, v in d.items()] + [""]
    for name, body in systems.items():
        lines.append(f"[systems.{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in body.items()]
        lines.append("")
    for job in jobs or []:
        lines.append("[[jobs]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in job.items()]
        lines.append("")
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _renamed_mapping(names: tuple[str, ...]) -> dict[str, Any]:
    """mapping_doc for two systems whose names are given (first plays crm, second shop)."""
    import json as _json

    doc = mapping_doc(systems=("crm", "shop"))
    text = _json.dumps(doc, ensure_ascii=False)
    text = text.replace('"crm"', _json.dumps(names[0])).replace('"shop"', _json.dumps(names[1]))
    text = text.replace('status_crm', f"status_{names[0]}").replace('status_shop', f"status_{names[1]}")
    return _json.loads(text)
