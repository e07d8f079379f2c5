"""`syncd cml check FILE…`: validate CommerceML files and print what they contain as JSON lines."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from syncd.errors import BadInput

from .model import (Counterparty, Document, Group, Offer, PriceType, Product, Property, Rejected,
                    Warehouse)
from .reader import iter_records
from .safety import DEFAULT_LIMITS, Limits, is_zip, safe_unzip
from .validate import validate

_KINDS = {Document: "order", Counterparty: "counterparty", Group: "group", Property: "property",
          Product: "product", PriceType: "price_type", Warehouse: "warehouse", Offer: "offer",
          Rejected: "rejected"}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def record_json(file: str, obj: Any) -> str:
    """One JSON line: {"file": …, "kind": …, …fields…}; Decimal as string, datetimes ISO."""
    data = {"file": file, "kind": _KINDS.get(type(obj), type(obj).__name__.lower())}
    fields = _plain(obj)
    if isinstance(obj, Rejected):
        fields["record_kind"] = fields.pop("kind")
    data.update(fields)
    return json.dumps(data, ensure_ascii=False)


MAX_VALIDATE_SIZE = 256 * 1024**2


def _check_xml(path: Path, label: str, out: TextIO, err: TextIO, limits: Limits,
               max_validate_size: int) -> bool:
    ok = True
    said = None
    try:
        if path.stat().st_size > max_validate_size:
            # schema validation holds the whole tree in memory; the streaming pass below still
            # checks safety, well-formedness and every record
            print(f"{label}: schema validation skipped (file over {max_validate_size} bytes)", file=err)
            issues = []
        else:
            issues = validate(path, limits)
    except BadInput as e:
        # not well-formed: the streaming pass still reads it record by record (recovery.py)
        said = f"{label}: line {e.line}: {e.reason}" if e.line else f"{label}: {e.reason}"
        print(said, file=err)
        ok, issues = False, []
    for issue in issues:
        ok = False
        print(f"{label}: line {issue.line}: {issue.path}: {issue.message}", file=err)
    try:
        for obj in iter_records(path, limits=limits):
            if isinstance(obj, Rejected):
                ok = False
                print(f"{label}: line {obj.line}: record {obj.record_id}: {obj.reason}", file=err)
            print(record_json(label, obj), file=out)
    except BadInput as e:
        msg = f"{label}: line {e.line}: {e.reason}" if e.line else f"{label}: {e.reason}"
        if msg != said:
            print(msg, file=err)
        ok = False
    return ok


def check_files(paths: list[str] | tuple[str, ...], out: TextIO = sys.stdout, *,
                err: TextIO | None = None, limits: Limits = DEFAULT_LIMITS,
                max_validate_size: int = MAX_VALIDATE_SIZE) -> int:
    """Validate and dump each file (XML, or a zip of XML files).

    Returns 0 when every file is valid, 1 when any file has errors, 2 when a file cannot be read.
    """
    err = err if err is not None else sys.stderr
    worst = 0
    for name in paths:
        path = Path(name)
        if not path.is_file() or not os.access(path, os.R_OK):
            print(f"{name}: cannot read file", file=err)
            worst = 2
            continue
        try:
            zipped = is_zip(path)
        except OSError as e:
            print(f"{name}: cannot read file: {e.strerror}", file=err)
            worst = 2
            continue
        if not zipped:
            if not _check_xml(path, name, out, err, limits, max_validate_size):
                worst = max(worst, 1)
            continue
        with tempfile.TemporaryDirectory(prefix="syncd-cml-") as tmp:
            try:
                members = safe_unzip(path, tmp, limits)
            except BadInput as e:
                print(f"{name}: {e.reason}", file=err)
                worst = max(worst, 1)
                continue
            xmls = [m for m in members if m.suffix.lower() == ".xml"]
            if not xmls:
                print(f"{name}: zip contains no .xml file", file=err)
                worst = max(worst, 1)
            for m in xmls:
                label = f"{name}!{m.relative_to(tmp).as_posix()}"
                if not _check_xml(m, label, out, err, limits, max_validate_size):
                    worst = max(worst, 1)
    return worst


__all__ = ["check_files", "record_json"]
