"""Read `mappings/*.toml` into one validated `MappingSet`; errors name file, key and reason."""

from __future__ import annotations

import glob
import tomllib
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from syncd.errors import ConfigError
from syncd.mapping.model import EntityMap, FieldMap, MappingSet
from syncd.mapping.transforms import TRANSFORMS
from syncd.schema import FIELDS

_SECTIONS = {"maps", "values", "identity", "conflicts", "rules", "region"}


def _key_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _field_map(raw: Any) -> Any:
    if isinstance(raw, str):
        return {"field": raw}
    if isinstance(raw, dict) and isinstance(raw.get("items"), dict):
        raw = dict(raw, items={k: _field_map(v) for k, v in raw["items"].items()})
    return raw


def _normalize_doc(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    maps = []
    for m in doc.get("maps", []):
        if isinstance(m, dict):
            m = dict(m, fields={k: _field_map(v) for k, v in (m.get("fields") or {}).items()})
        maps.append(m)
    if "maps" in doc:
        doc["maps"] = maps
    values = {}
    for name, vm in (doc.get("values") or {}).items():
        values[name] = vm if isinstance(vm, dict) and "map" in vm else {"map": vm}
    if "values" in doc:
        doc["values"] = values
    return doc


def parse_mapping_doc(doc: dict[str, Any], file: str) -> MappingSet:
    unknown = set(doc) - _SECTIONS
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(sorted(unknown))}; expected one of "
                          f"{', '.join(sorted(_SECTIONS))}", file=file, key=sorted(unknown)[0])
    try:
        return MappingSet.model_validate(_normalize_doc(doc))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(err["msg"], file=file, key=_key_path(err["loc"])) from None


def merge(parts: list[tuple[str, MappingSet]]) -> MappingSet:
    maps: list[EntityMap] = []
    merged: dict[str, dict[str, Any]] = {"values": {}, "identity": {}, "conflicts": {}, "rules": {}}
    region = "RU"
    for file, ms in parts:
        maps.extend(ms.maps)
        for section in merged:
            for key, value in getattr(ms, section).items():
                if section == "rules" and isinstance(value, list) and isinstance(merged[section].get(key), list):
                    # lists of rules (stages, timers, cross) add up across files: calls.toml brings
                    # its missed-call timer beside rules.toml's (names stay unique: parse_rules checks)
                    merged[section][key] = merged[section][key] + value
                    continue
                if key in merged[section]:
                    raise ConfigError("defined twice (also in another mapping file)", file=file,
                                      key=f"{section}.{key}")
                merged[section][key] = value
        if ms.region != "RU":
            region = ms.region
    return MappingSet(maps=maps, region=region, **merged)


def validate_set(ms: MappingSet, files: dict[int, str] | None = None) -> None:
    """Cross-checks pydantic cannot do: field names, value map and transform names, duplicates."""
    seen: set[tuple[str, str]] = set()
    for i, m in enumerate(ms.maps):
        file = (files or {}).get(i)
        where = f"maps[{i}]({m.system}.{m.kind})"
        if (m.system, m.kind) in seen:
            raise ConfigError("the same system kind is mapped twice", file=file, key=where)
        seen.add((m.system, m.kind))
        for name, fm in m.fields.items():
            key = f"{where}.fields.{name}"
            if name not in FIELDS[m.entity]:
                raise ConfigError(f"unknown canonical field {name!r} for entity {m.entity!r}",
                                  file=file, key=key)
            _check_field_map(ms, fm, key, file)
            spec = FIELDS[m.entity][name]
            if fm.list != "merge" and spec.type not in ("items", "strs"):
                raise ConfigError(f"{name} is not a list field; `list` does not apply", file=file, key=key)
            if fm.optional and spec.type != "ref":
                raise ConfigError(f"{name} is not a link; `optional` does not apply", file=file, key=key)
            if fm.items is not None:
                if spec.type != "items" or spec.item is None:
                    raise ConfigError(f"{name} is not a list field; `items` does not apply", file=file, key=key)
                for member, sub in fm.items.items():
                    if member not in spec.item:
                        raise ConfigError(f"unknown member {member!r} of {name}", file=file,
                                          key=f"{key}.items.{member}")
                    _check_field_map(ms, sub, f"{key}.items.{member}", file)
        for name in m.only_when:
            if name not in FIELDS[m.entity]:
                raise ConfigError(f"unknown canonical field {name!r}", file=file, key=f"{where}.only_when")
    # a link can only be written to (and read back from) a system that keeps the linked kind
    kept = {(m.system, m.entity) for m in ms.maps}
    for i, m in enumerate(ms.maps):
        for name, fm in m.fields.items():
            spec = FIELDS[m.entity][name]
            targets = [(name, spec.ref)] if spec.type == "ref" else []
            if fm.items and spec.item:
                targets += [(f"{name}.items.{k}", spec.item[k].ref) for k in fm.items if spec.item[k].type == "ref"]
            for where, target in targets:
                if target and (m.system, target) not in kept:
                    raise ConfigError(f"{where} links to a {target}, but no map of system {m.system!r} keeps "
                                      f"{target} records (map one, or drop this field)",
                                      file=(files or {}).get(i), key=f"maps[{i}]({m.system}.{m.kind}).fields.{name}")
    for name in ms.conflicts:
        ent = name.split(".", 1)[0]
        if name != "*" and not name.endswith(".*") and (ent not in FIELDS or name not in FIELDS[ent]):
            raise ConfigError(f"unknown canonical field {name!r}", key=f"conflicts.{name}")
        rule = ms.conflicts[name]
        if rule.policy == "owner" and not rule.owner:
            raise ConfigError("policy `owner` needs `owner = \"<system>\"`", key=f"conflicts.{name}")
        if rule.policy == "priority" and not rule.order:
            raise ConfigError("policy `priority` needs `order = [systems…]`", key=f"conflicts.{name}")
    for ent in ms.identity:
        if ent not in FIELDS:
            raise ConfigError(f"unknown entity type {ent!r}", key=f"identity.{ent}")


def _check_field_map(ms: MappingSet, fm: FieldMap, key: str, file: str | None) -> None:
    if fm.values is not None and fm.values not in ms.values:
        raise ConfigError(f"unknown value map {fm.values!r}", file=file, key=f"{key}.values")
    if fm.transform not in TRANSFORMS:
        raise ConfigError(f"unknown transform {fm.transform!r} (known: {', '.join(sorted(TRANSFORMS))})",
                          file=file, key=f"{key}.transform")


def mapping_files(patterns: Iterable[str | Path], base: Path | None = None) -> list[Path]:
    """The files `patterns` (paths or globs, relative to `base`) name, in order; none may be missing."""
    files: list[Path] = []
    for pat in patterns:
        p = Path(pat)
        if not p.is_absolute() and base is not None:
            p = base / p
        matched = sorted(Path(x) for x in glob.glob(str(p)))
        if not matched:
            # a glob that matches nothing is as wrong as a missing file: the daemon would run unmapped
            glob_ = any(c in str(pat) for c in "*?[")
            reason = "no mapping file matches" if glob_ else "mapping file not found"
            raise ConfigError(reason, file=str(p))
        files.extend(matched)
    return files


def read_mapping_file(f: Path) -> MappingSet:
    """One mapping file, validated on its own; empty, unreadable or invalid files name themselves."""
    try:
        text = f.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ConfigError("is a directory, not a mapping file", file=str(f)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(f)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", file=str(f)) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=str(f)) from None
    if not doc:
        raise ConfigError("the mapping file is empty (no maps, values, identity, conflicts or rules)",
                          file=str(f))
    return parse_mapping_doc(doc, str(f))


def load_mapping_sources(patterns: Iterable[str | Path],
                         base: Path | None = None) -> list[tuple[str, MappingSet]]:
    """Each mapping file with what it holds, before merging (to say which file a key came from)."""
    return [(str(f), read_mapping_file(f)) for f in mapping_files(patterns, base)]


def load_mappings(patterns: Iterable[str | Path], base: Path | None = None) -> MappingSet:
    parts = load_mapping_sources(patterns, base)
    owners: dict[int, str] = {}
    start = 0
    for file, ms in parts:
        for i in range(len(ms.maps)):
            owners[start + i] = file
        start += len(ms.maps)
    merged = merge(parts)
    validate_set(merged, owners)
    return merged
