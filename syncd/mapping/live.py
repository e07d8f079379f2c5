"""Check mappings against live systems: every mapped field and value-map value must exist there.

`check_live(mapper, connectors)` works for any connector through `describe()`: kinds the
LiveSchema does not list are skipped (the connector does not know them), as are value maps
of fields the LiveSchema has no value set for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from syncd.connector import LiveSchema


def check_live(mapper: Any, connectors: Mapping[str, Any]) -> list[tuple[str, str]]:
    """[(mapping key, problem)] for every mapped field or value the live system does not have."""
    ms = getattr(mapper, "ms", mapper)
    schemas: dict[str, LiveSchema | Exception] = {}
    problems: list[tuple[str, str]] = []
    for i, em in enumerate(ms.maps):
        conn = connectors.get(em.system)
        if conn is None:
            continue
        if em.system not in schemas:
            try:
                schemas[em.system] = conn.describe()
            except Exception as exc:  # noqa: BLE001 - reported, the other systems are still checked
                schemas[em.system] = exc
                problems.append((f"systems.{em.system}", f"cannot read the live schema: {exc}"))
        live = schemas[em.system]
        if isinstance(live, Exception):
            continue
        names = live.kinds.get(em.kind)
        if names is None:
            continue
        where = f"maps[{i}]({em.system}.{em.kind})"
        for canon, fm in em.fields.items():
            key = f"{where}.fields.{canon}"
            if fm.field not in names:
                problems.append((key, f"field {fm.field!r} does not exist in {em.system} {em.kind}"))
                continue
            allowed = live.values.get(f"{em.kind}.{fm.field}")
            if fm.values and allowed is not None:
                vm = ms.values.get(fm.values)
                for cval, sval in (vm.map.items() if vm else ()):
                    if str(sval) not in allowed:
                        problems.append((f"values.{fm.values}.{cval}",
                                         f"{em.system} has no {fm.field} {sval!r} (used by {key})"))
                if vm and vm.default_push is not None and str(vm.default_push) not in allowed:
                    problems.append((f"values.{fm.values}.default_push",
                                     f"{em.system} has no {fm.field} {vm.default_push!r} (used by {key})"))
        for fname, value in em.defaults.items():
            key = f"{where}.defaults.{fname}"
            if fname not in names:
                problems.append((key, f"field {fname!r} does not exist in {em.system} {em.kind}"))
                continue
            allowed = live.values.get(f"{em.kind}.{fname}")
            if allowed is not None and value is not None and str(value) not in allowed:
                problems.append((key, f"{em.system} has no {fname} {value!r}"))
    return problems


def canonical_schema(mapper: Any, system: str, live: LiveSchema) -> LiveSchema:
    """`live` with its pipelines and stages in canonical values, for the rules.

    Rules name stages and pipelines canonically ("WON", pipeline "0"). Bitrix24's mapping keeps
    the portal's own ids, so they are the same; a CRM whose mapping translates them through value
    maps (amoCRM's status names, RetailCRM's status codes) has its pipelines read back through
    those maps: a stage no value map names is left out (the rules cannot name it either). A CRM
    with one stage list and no mapped pipeline field (RetailCRM) offers it under every pipeline
    the rules may name, since its records carry none.
    """
    ms = getattr(mapper, "ms", mapper)
    em = next((m for m in ms.maps if m.system == system and m.entity == "order"), None)
    if em is None or not live.pipelines:
        return live
    stage_fm, pipe_fm = em.fields.get("order.stage"), em.fields.get("order.pipeline")
    if stage_fm is None or not stage_fm.values:
        return live
    reverse = _reverse(ms.values.get(stage_fm.values))
    pipe_rev = _reverse(ms.values.get(pipe_fm.values)) if pipe_fm is not None and pipe_fm.values else None
    lists = {str(p): list(dict.fromkeys(reverse[str(s)] for s in stages if str(s) in reverse))
             for p, stages in live.pipelines.items()}
    if pipe_fm is None:
        # no pipeline field: the records carry none, so the rules' pipeline filter never excludes one
        return replace(live, pipelines=_AnyPipeline(next(iter(lists.values()))))
    if pipe_rev is None:
        return replace(live, pipelines=lists)
    return replace(live, pipelines={pipe_rev[p]: ls for p, ls in lists.items() if p in pipe_rev})


class _AnyPipeline(dict):  # type: ignore[type-arg]
    """The one stage list of a CRM without pipelines, under whatever pipeline is asked for."""

    def __init__(self, stages: list[str]) -> None:
        super().__init__({"0": stages})
        self._stages = stages

    def get(self, key: Any, default: Any = None) -> Any:
        return self._stages


def _reverse(vm: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for canon, sysval in (vm.map.items() if vm is not None else ()):
        out.setdefault(str(sysval), str(canon))
    return out


class CanonicalView:
    """A connector as the rules see it: the same object, but `describe()` in canonical values."""

    def __init__(self, conn: Any, mapper: Any, system: str) -> None:
        self._conn, self._mapper, self._system = conn, mapper, system

    def describe(self) -> LiveSchema:
        return canonical_schema(self._mapper, self._system, self._conn.describe())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def canonical_views(mapper: Any, connectors: Mapping[str, Any]) -> dict[str, Any]:
    return {name: CanonicalView(c, mapper, name) for name, c in connectors.items()}


__all__ = ["CanonicalView", "canonical_schema", "canonical_views", "check_live"]
