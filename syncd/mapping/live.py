"""Check mappings against live systems: every mapped field and value-map value must exist there.

`check_live(mapper, connectors)` works for any connector through `describe()`: kinds the
LiveSchema does not list are skipped (the connector does not know them), as are value maps
of fields the LiveSchema has no value set for.
"""

from __future__ import annotations

from collections.abc import Mapping
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


__all__ = ["check_live"]
