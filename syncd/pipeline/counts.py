"""What a run did, counted: pulls, plans and pushes add into one `Counts`."""

from __future__ import annotations

from dataclasses import dataclass, fields as dc_fields


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0
    conflicts: int = 0
    quarantined: int = 0
    review: int = 0
    planned: int = 0
    pushed: int = 0
    dead: int = 0
    blocked: int = 0
    bound: int = 0          # records bound to an entity syncd already had (matched, adopted)
    uncreated: int = 0      # records a target system lacks and whose map may not create (create = false)

    def add(self, other: "Counts") -> "Counts":
        for f in dc_fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dc_fields(self)}
