"""Stage 4: diff a system's record against that system's shadow (pure)."""

from __future__ import annotations

from typing import Any

MISSING = object()


def diff(shadow: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """Fields whose value differs from what the system was last known to hold.

    A field the system sends as empty, that it was never known to hold, is not a change.
    """
    out = {}
    for name, value in fields.items():
        old = shadow.get(name, MISSING)
        if old is MISSING:
            if value is not None:
                out[name] = value
        elif old != value:
            out[name] = value
    return out
