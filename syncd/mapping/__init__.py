"""The mapping layer: TOML field/value maps between canonical fields and each system's fields."""

from syncd.mapping.apply import Mapper
from syncd.mapping.load import load_mappings, parse_mapping_doc
from syncd.mapping.model import ConflictRule, EntityMap, FieldMap, IdentityRule, MappingSet, ValueMap

__all__ = ["Mapper", "load_mappings", "parse_mapping_doc", "MappingSet", "EntityMap", "FieldMap",
           "ValueMap", "IdentityRule", "ConflictRule"]
