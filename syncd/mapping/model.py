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
    values: str | None = None                   # name of a value map ([values.NAME])
    transform: str = "identity"                 # a named transform (see Transforms)
    direction: Direction = "both"               # pull, push or both, for this field alone
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
    # a value this system derives from others (a deal's sum from its product rows, an order line's
    # price for the catalog): taken for a record that has no value yet, never as an edit of one
    derived: bool = False
    # written only when syncd creates the record: a value the system cannot change afterwards (a
    # Bitrix24 deal's pipeline, CATEGORY_ID); it overrides the map's `defaults` for that field
    create_only: bool = False


class EntityMap(_Strict):
    """Canonical entity <-> one kind of object in one system."""

    system: str                                 # a system name from config.toml [systems]
    kind: str                                   # the system's object kind ("deal", "order", "user")
    entity: str                                 # canonical entity type (person, company, order, …)
    direction: Direction = "both"               # pull (read only), push (write only) or both
    # may syncd create records of this kind in the system: off unless the mapping says so, so a
    # system never gets records nobody asked for (and never one it cannot show back to syncd, like
    # a shop's users, which travel inside their orders)
    create: bool = False
    only_when: dict[str, Any] = Field(default_factory=dict)   # canonical field == value to push
    fields: dict[str, FieldMap] = Field(default_factory=dict)  # canonical field -> system field (FieldMap)
    defaults: dict[str, Any] = Field(default_factory=dict)    # system fields set on create

    @field_validator("entity")
    @classmethod
    def _known_entity(cls, v: str) -> str:
        if v not in ENTITY_TYPES:
            raise ValueError(f"unknown entity type {v!r} (known: {', '.join(ENTITY_TYPES)})")
        return v


class ValueMap(_Strict):
    """Canonical value -> system value; the reverse is derived (first canonical wins)."""

    map: dict[str, Any]                         # canonical value -> system value
    default_pull: str | None = None             # canonical value for unknown system values
    default_push: Any = None                    # system value for canonical values not in `map`


class IdentityRule(_Strict):
    # match keys tried for an unbound record: one match binds, several go to review, none creates
    keys: list[Literal["email", "phone", "inn_kpp", "sku", "barcode", "number"]] = Field(default_factory=list)
    origin: list[str] | None = None             # systems allowed to introduce new entities; unset = all


class ConflictRule(_Strict):
    # owner: the owner's value stands; priority: first in `order` wins; newest: source timestamps;
    # review: held for a person (`syncd conflicts`, the status page)
    policy: Literal["owner", "priority", "newest", "review"]
    owner: str | None = None                    # the owning system (policy owner)
    order: list[str] | None = None              # systems, first wins (policy priority)


class MappingSet(_Strict):
    maps: list[EntityMap] = Field(default_factory=list)                # [[maps]], one per system kind
    values: dict[str, ValueMap] = Field(default_factory=dict)          # [values.NAME] value maps
    identity: dict[str, IdentityRule] = Field(default_factory=dict)    # [identity.TYPE] per entity type
    conflicts: dict[str, ConflictRule] = Field(default_factory=dict)   # "order.status", "order.*", "*"
    rules: dict[str, Any] = Field(default_factory=dict)                # [rules] (see Rules), by syncd.rules
    region: str = "RU"                                                 # country of phones without a code


def known_fields(entity: str) -> set[str]:
    return set(FIELDS[entity])
