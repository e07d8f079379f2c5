"""Validation of CommerceML files against the project's XSD subset (`schema/commerceml.xsd`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xmlschema
from lxml import etree


from .safety import DEFAULT_LIMITS, Limits, Source, open_xml, safe_parser, translate_syntax_error

SCHEMA_PATH = Path(__file__).with_name("schema") / "commerceml.xsd"


@dataclass(frozen=True)
class ValidationIssue:
    line: int | None
    path: str | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.path}: {self.message}"


@functools.lru_cache(maxsize=1)
def schema() -> xmlschema.XMLSchema11:
    return xmlschema.XMLSchema11(str(SCHEMA_PATH))


def _strip_namespaces(root: Any) -> None:
    for el in root.iter():
        tag = el.tag
        if isinstance(tag, str) and tag[0] == "{":
            el.tag = tag.rpartition("}")[2]
    etree.cleanup_namespaces(root)


def load_tree(source: Source, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Parse a whole file safely (same DTD, size and encoding rules as the streaming readers)."""
    reader, sniffed = open_xml(source, limits)
    try:
        parser = safe_parser(sniffed.encoding if sniffed.override else None)
        try:
            return etree.parse(reader, parser)
        except etree.XMLSyntaxError as e:
            raise translate_syntax_error(e, sniffed) from None
    finally:
        reader.close()


def validate(path_or_bytes: Source, limits: Limits = DEFAULT_LIMITS) -> list[ValidationIssue]:
    """Schema problems of one file, each with its line. Loads the file into memory.

    Raises ProtocolError when the file is not safe or not well-formed XML.
    """
    tree = load_tree(path_or_bytes, limits)
    root = tree.getroot()
    _strip_namespaces(root)
    issues = []
    for err in schema().iter_errors(tree):
        elem = getattr(err, "elem", None)
        line = getattr(elem, "sourceline", None) if elem is not None else None
        if line is None:
            line = getattr(err, "sourceline", None)
        issues.append(ValidationIssue(line, err.path, err.reason or str(err.message)))
    return issues


__all__ = ["ValidationIssue", "validate", "schema", "load_tree", "SCHEMA_PATH"]
