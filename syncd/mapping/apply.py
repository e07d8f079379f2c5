"""Apply a MappingSet: system fields <-> canonical fields, and who receives which entity."""

from __future__ import annotations

from typing import Any, Mapping

from syncd.errors import BadInput
from syncd.mapping.model import EntityMap, FieldMap, MappingSet, ValueMap
from syncd.mapping.transforms import TRANSFORMS
from syncd.schema import FIELDS, FrozenDict, Ref, field_spec, normalize


class _Values:
    def __init__(self, name: str, vm: ValueMap) -> None:
        self.name, self.vm = name, vm
        self.reverse: dict[str, str] = {}
        for canon, sysval in vm.map.items():
            self.reverse.setdefault(str(sysval), canon)

    def pull(self, value: Any, where: str) -> Any:
        if value is None or value == "":
            return None
        canon = self.reverse.get(str(value))
        if canon is None:
            if self.vm.default_pull is not None:
                return self.vm.default_pull
            raise BadInput(f"{where}: unknown value {value!r} (value map {self.name!r} knows "
                           f"{', '.join(map(str, self.vm.map.values()))})")
        return canon

    def push(self, value: Any, where: str) -> Any:
        if value is None:
            return None
        if str(value) in self.vm.map:
            return self.vm.map[str(value)]
        if self.vm.default_push is not None:
            return self.vm.default_push
        raise BadInput(f"{where}: canonical value {value!r} has no entry in value map {self.name!r}")


class Mapper:
    """Pure translation; knows no protocol and does no I/O."""

    def __init__(self, ms: MappingSet) -> None:
        self.ms = ms
        self._by_kind = {(m.system, m.kind): m for m in ms.maps}
        self._values = {n: _Values(n, vm) for n, vm in ms.values.items()}

    # -- lookup ---------------------------------------------------------------------------------
    def entity_map(self, system: str, kind: str) -> EntityMap | None:
        return self._by_kind.get((system, kind))

    def push_map(self, system: str, entity: str) -> EntityMap | None:
        for m in self.ms.maps:
            if m.system == system and m.entity == entity and m.direction in ("push", "both"):
                return m
        return None

    def targets(self, entity: str, exclude: str | None = None) -> list[EntityMap]:
        return [m for m in self.ms.maps if m.entity == entity and m.direction in ("push", "both")
                and m.system != exclude]

    def systems(self) -> set[str]:
        return {m.system for m in self.ms.maps}

    # -- pull -----------------------------------------------------------------------------------
    def to_canonical(self, system: str, kind: str, fields: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        em = self._by_kind.get((system, kind))
        if em is None or em.direction == "push":
            raise KeyError(f"no pull mapping for {system}.{kind}")
        out: dict[str, Any] = {}
        for name, fm in em.fields.items():
            if fm.direction == "push" or fm.field not in fields:
                continue
            where = f"{name} <- {fm.field}"
            try:
                out[name] = normalize(name, self._pull_value(name, fm, fields[fm.field], where))
            except (ValueError, TypeError, AttributeError) as exc:
                raise BadInput(f"{where}: {exc}") from None
        return em.entity, out

    def _pull_value(self, name: str, fm: FieldMap, value: Any, where: str) -> Any:
        value = TRANSFORMS[fm.transform].pull(value)
        if fm.values:
            value = self._values[fm.values].pull(value, where)
        spec = field_spec(name)
        if spec.type == "ref" and value not in (None, "", "0", 0):
            assert spec.ref
            return value if isinstance(value, Ref) else Ref(spec.ref, str(value))
        if spec.type == "ref":
            return None
        if fm.items is not None and value is not None:
            assert spec.item
            elements = []
            for el in value:
                member_vals = {}
                for member, sub in fm.items.items():
                    if sub.direction == "push" or sub.field not in el:
                        continue
                    v = TRANSFORMS[sub.transform].pull(el[sub.field])
                    if sub.values:
                        v = self._values[sub.values].pull(v, f"{where}.{member}")
                    mspec = spec.item[member]
                    if mspec.type == "ref":
                        v = Ref(mspec.ref or "", str(v)) if v not in (None, "", "0", 0) else None
                    member_vals[member] = v
                elements.append(member_vals)
            return elements
        return value

    # -- push -----------------------------------------------------------------------------------
    def from_canonical(self, em: EntityMap, fields: Mapping[str, Any], *, create: bool) -> dict[str, Any]:
        """System fields for `fields` (refs already replaced by the target's external ids)."""
        out: dict[str, Any] = dict(em.defaults) if create else {}
        for name, value in fields.items():
            fm = em.fields.get(name)
            if fm is None or fm.direction == "pull" or (fm.create_only and not create):
                continue
            if fm.create_only and value is None:
                continue                  # nothing said: the map's default stands
            out[fm.field] = self._push_value(name, fm, value, f"{name} -> {fm.field}")
        return out

    def _push_value(self, name: str, fm: FieldMap, value: Any, where: str) -> Any:
        if fm.items is not None and value is not None:
            rows = []
            for el in value:
                row = {}
                for member, sub in fm.items.items():
                    if sub.direction == "pull" or member not in el:
                        continue
                    v = el[member]
                    if sub.values:
                        v = self._values[sub.values].push(v, f"{where}.{member}")
                    row[sub.field] = _plain(TRANSFORMS[sub.transform].push(v))
                rows.append(row)
            return rows
        if fm.values:
            value = self._values[fm.values].push(value, where)
        return TRANSFORMS[fm.transform].push(value)

    def pushable_fields(self, em: EntityMap) -> set[str]:
        return {n for n, fm in em.fields.items() if fm.direction != "pull"}

    def pullable_fields(self, em: EntityMap) -> set[str]:
        return {n for n, fm in em.fields.items() if fm.direction != "push"}

    def roundtrip(self, em: EntityMap, name: str, value: Any) -> Any:
        """The canonical value the target will report back after we write `value`.

        Shadows store this, so a lossy value map or transform does not read back as a change.
        Refs are kept as entity ids (they are resolved, not mapped).
        """
        fm = em.fields.get(name)
        if fm is None or value is None or fm.direction != "both":
            return value
        spec = field_spec(name)
        if spec.type == "ref":
            return value
        try:
            pushed = self._push_value(name, fm, value, name)
            if spec.type == "items":
                back = self._pull_value(name, fm, pushed, name)
                # keep refs as they were (entity ids) where the target carries them; members are
                # positionally aligned
                back = [dict(b, **{k: v for k, v in orig.items() if k in (spec.item or {}) and k in (fm.items or {})
                                   and (spec.item or {})[k].type == "ref"}) for b, orig in zip(back, value)]
                return normalize(name, back)
            return normalize(name, self._pull_value(name, fm, pushed, name))
        except BadInput:
            return value


def _plain(v: Any) -> Any:
    if isinstance(v, FrozenDict):
        return dict(v)
    return v


__all__ = ["Mapper", "FIELDS"]
