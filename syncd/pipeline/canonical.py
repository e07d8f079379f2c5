"""Stage 2: a system record -> a canonical record, validated (requisites checksums, types)."""

from __future__ import annotations

from typing import Any

from syncd.connector import RawRecord
from syncd.errors import BadInput
from syncd.mapping import Mapper


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
