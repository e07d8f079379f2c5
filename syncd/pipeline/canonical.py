"""Stage canonical: a system's records -> canonical records, validated (requisites checksums,
types); what cannot be read goes on to quarantine whole (`Bad`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import structlog

from syncd.connector import RawRecord, Rejected
from syncd.errors import BadInput
from syncd.mapping import Mapper
from syncd.pipeline.batch import Batch

log = structlog.get_logger("syncd.engine")


def validate_requisites(entity: str, fields: dict[str, Any]) -> None:
    """Checksums of ИНН/ОГРН/КПП and bank keys; an invalid one quarantines the record."""
    from syncd.keys.requisites import requisite_issues

    issues: list[str] = []
    if entity == "company":
        issues += requisite_issues(inn=fields.get("company.inn"), kpp=fields.get("company.kpp"),
                                   ogrn=fields.get("company.ogrn"))
        for acc in fields.get("company.bank_accounts") or ():
            issues += requisite_issues(bik=acc.get("bik"), account=acc.get("account"),
                                       corr_account=acc.get("corr_account"))
    elif entity == "person" and fields.get("person.inn"):
        issues += requisite_issues(inn=fields.get("person.inn"))
    if issues:
        raise BadInput("; ".join(issues))


def to_canonical(mapper: Mapper, system: str, rec: RawRecord) -> tuple[str, dict[str, Any]]:
    entity, fields = mapper.to_canonical(system, rec.kind, rec.fields)
    validate_requisites(entity, fields)
    return entity, fields


@dataclass(frozen=True)
class Bad:
    """A record that goes to quarantine: why, what it is, and all of it."""

    reason: str
    kind: str | None
    external_id: str | None
    raw: Any
    record: RawRecord | None


@dataclass(frozen=True)
class Parsed:
    """Stage canonical's output: the batch's records in canonical form, and the ones that are not."""

    records: tuple[tuple[RawRecord, str, dict[str, Any]], ...]     # (record, entity type, fields)
    bad: tuple[Bad, ...]


def parse(batch: Batch, records: Sequence[RawRecord | Rejected]) -> Parsed:
    """Every record of the batch in canonical form; what cannot be is kept whole for quarantine.
    Records no map reads and deletions are counted as skipped (a deletion is never propagated)."""
    parsed: list[tuple[RawRecord, str, dict[str, Any]]] = []
    bad: list[Bad] = []
    for rec in records:
        if isinstance(rec, Rejected):
            reason = rec.reason
            if rec.line is not None and f"line {rec.line}" not in reason:
                reason = f"line {rec.line}: {reason}"
            bad.append(Bad(reason, rec.kind, rec.external_id, rec.raw, None))
            continue
        em = batch.mapper.entity_map(batch.system, rec.kind)
        if em is None or em.direction == "push":
            batch.counts.skipped += 1
            continue
        if rec.deleted:
            # deletions are not propagated (a deal removed in the CRM must not delete a shop
            # order); they are logged and counted so nobody mistakes them for lost data
            batch.counts.skipped += 1
            log.info("deleted_at_source_not_propagated", system=batch.system, kind=rec.kind,
                     external_id=rec.external_id)
            continue
        try:
            etype, fields = to_canonical(batch.mapper, batch.system, rec)
        except BadInput as exc:
            bad.append(Bad(f"{batch.system} {rec.kind} {rec.external_id}: {exc}", rec.kind, rec.external_id,
                           rec.raw if rec.raw is not None else dict(rec.fields), rec))
            continue
        parsed.append((rec, etype, fields))
    return Parsed(tuple(parsed), tuple(bad))
