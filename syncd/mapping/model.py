"""Typed mapping configuration: field maps, value maps, identity, conflict policies, rules."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from syncd.schema import ENTITY_TYPES, FIELDS

Direction = Literal["pull", "push", "both"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldMap(_Strict):
    """How one canonical field maps to one system field."""

    field: str                                  # system field name ("STAGE_ID")
    values: str | None = None                   # name of a value map
    transform: str = "identity"
    direction: Direction = "both"
    items: dict[str, "FieldMap"] | None = None  # for `items` fields: member -> system member
    read_only: bool = False                     # owned by another system: pulled edits are conflicts
    # a link (ref field) the record may be created without: it is written once the linked record
    # exists there. By default a new record waits for the records it links to.
    optional: bool = False
    # a list field (phones, e-mails, bank accounts, order items) read from this system: "merge"
    # adds its members to what syncd knows and never removes one; "replace" means this system owns
    # the list, so a member it no longer has is removed everywhere (only when the record it read
    # is complete: not half-written by syncd at that moment)
    list: Literal["merge", "replace"] = "merge"


class EntityMap(_Strict):
    """Canonical entity <-> one kind of object in one system."""

    system: str
    kind: str
    entity: str
    direction: Direction = "both"
    create: bool = True                         # may syncd create this kind in the system
    only_when: dict[str, Any] = Field(default_factory=dict)   # canonical field == value to push
    fields: dict[str, FieldMap] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)    # system fields set on create

    @field_validator("entity")
    @classmethod
    def _known_entity(cls, v: str) -> str:
        if v not in ENTITY_TYPES:
            raise ValueError(f"unknown entity type {v!r} (known: {', '.join(ENTITY_TYPES)})")
        return v


class ValueMap(_Strict):
    """Canonical value -> system value; the reverse is derived (first canonical wins)."""

    map: dict[str, Any]
    default_pull: str | None = None             # canonical value for unknown system values
    default_push: Any = None


class IdentityRule(_Strict):
    keys: list[Literal["email", "phone", "inn_kpp", "sku", "barcode", "number"]] = Field(default_factory=list)
    origin: list[str] | None = None             # systems allowed to introduce new entities; None = all


class ConflictRule(_Strict):
    policy: Literal["owner", "priority", "newest", "review"]
    owner: str | None = None
    order: list[str] | None = None


class MappingSet(_Strict):
    maps: list[EntityMap] = Field(default_factory=list)
    values: dict[str, ValueMap] = Field(default_factory=dict)
    identity: dict[str, IdentityRule] = Field(default_factory=dict)
    conflicts: dict[str, ConflictRule] = Field(default_factory=dict)   # "order.status", "order.*", "*"
    rules: dict[str, Any] = Field(default_factory=dict)                # evaluated by syncd.rules
    region: str = "RU"


def known_fields(entity: str) -> set[str]:
    return set(FIELDS[entity])
