"""Company requisites: the first requisite of a company, its bank details and legal address, read
as pseudo-fields of the company and written back (created or changed, never deleted)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.bitrix24.client import BatchResult, Bitrix24Client
from connectors.bitrix24.values import (
    ADDRESS_LEGAL,
    ADDRESS_OWNER_REQUISITE,
    BANK_FIELDS,
    ORIGINATOR,
    REQ_FIELDS,
    REQ_OWNER_COMPANY,
    address_text,
    result_rows,
    utc_version,
)
from syncd.errors import PermanentError


class Requisites:
    client: Bitrix24Client
    name: str
    _preset: str | None

    def _requisites(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        res = self.client.batch({f"r{i}": ("crm.requisite.list", {
            "filter": {"ENTITY_TYPE_ID": REQ_OWNER_COMPANY, "ENTITY_ID": int(i)}, "order": {"ID": "ASC"},
            "select": ["ID", "DATE_MODIFY", *REQ_FIELDS]}) for i in ids})
        first: dict[str, dict[str, Any]] = {}
        for i in ids:
            rq = result_rows(res.get(f"r{i}", connector=self.name))
            if rq:
                first[i] = rq[0]
        cmds: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for i, rq in first.items():
            cmds[f"b{i}"] = ("crm.requisite.bankdetail.list", {"filter": {"ENTITY_ID": int(rq["ID"])},
                                                               "order": {"ID": "ASC"}})
            cmds[f"a{i}"] = ("crm.address.list", {"filter": {"ENTITY_TYPE_ID": ADDRESS_OWNER_REQUISITE,
                                                             "ENTITY_ID": int(rq["ID"]), "TYPE_ID": ADDRESS_LEGAL}})
        res2 = self.client.batch(cmds) if cmds else BatchResult()
        out: dict[str, dict[str, Any]] = {}
        for i in ids:
            rq = first.get(i)
            if rq is None:
                out[i] = {}
                continue
            banks = result_rows(res2.get(f"b{i}", connector=self.name))
            addr = result_rows(res2.get(f"a{i}", connector=self.name))
            versions = [utc_version(x.get("DATE_MODIFY")) for x in [rq, *banks]]
            out[i] = {**{k: rq.get(k) for k in REQ_FIELDS},
                      "BANK_DETAILS": [{k: b.get(k) for k in BANK_FIELDS} for b in banks],
                      "ADDRESS_LEGAL": address_text(addr[0] if addr else None),
                      "_version": max((v for v in versions if v), default=None)}
        return out

    def _preset_id(self) -> str:
        if self._preset is None:
            rows = result_rows(self.client.call("crm.requisite.preset.list", {"order": {"ID": "ASC"}}).result)
            if not rows:
                raise PermanentError("the portal has no requisite preset", connector=self.name)
            self._preset = str(rows[0]["ID"])
        return self._preset

    def _write_requisites(self, company_id: str, pseudo: Mapping[str, Any], key: str) -> None:
        c = self.client
        rq_fields = {k: pseudo[k] for k in REQ_FIELDS if k in pseudo}
        rqs = result_rows(c.call("crm.requisite.list", {"filter": {"ENTITY_TYPE_ID": REQ_OWNER_COMPANY,
                                                             "ENTITY_ID": int(company_id)},
                                                  "order": {"ID": "ASC"}, "select": ["ID", *REQ_FIELDS]}).result)
        if rqs:
            rq_id = str(rqs[0]["ID"])
            changed = {k: v for k, v in rq_fields.items() if (rqs[0].get(k) or None) != (v or None)}
            if changed:
                c.call("crm.requisite.update", {"id": rq_id, "fields": changed})
        else:
            if not rq_fields and not pseudo.get("BANK_DETAILS") and not pseudo.get("ADDRESS_LEGAL"):
                return
            name = str(rq_fields.get("RQ_COMPANY_FULL_NAME") or "Реквизиты")
            rq_id = str(c.call("crm.requisite.add", {"fields": {
                "ENTITY_TYPE_ID": REQ_OWNER_COMPANY, "ENTITY_ID": int(company_id), "PRESET_ID": self._preset_id(),
                "NAME": name, "XML_ID": key, "ORIGINATOR_ID": ORIGINATOR, **rq_fields}}).result)
        cmds: dict[str, tuple[str, Mapping[str, Any]]] = {}
        if "BANK_DETAILS" in pseudo:
            banks = result_rows(c.call("crm.requisite.bankdetail.list", {"filter": {"ENTITY_ID": int(rq_id)},
                                                                   "order": {"ID": "ASC"}}).result)
            by_acc = {str(b.get("RQ_ACC_NUM") or ""): b for b in banks}
            for n, bd in enumerate(pseudo["BANK_DETAILS"] or []):
                bd = {k: v for k, v in dict(bd).items() if k in BANK_FIELDS and v is not None}
                cur = by_acc.get(str(bd.get("RQ_ACC_NUM") or ""))
                if cur is None and len(banks) == 1 and len(pseudo["BANK_DETAILS"]) == 1:
                    cur = banks[0]          # one account on each side: it was edited, not added
                if cur is None:
                    cmds[f"b{n}"] = ("crm.requisite.bankdetail.add", {"fields": {
                        "ENTITY_ID": int(rq_id), "NAME": str(bd.get("RQ_BANK_NAME") or "Банковские реквизиты"),
                        "ORIGINATOR_ID": ORIGINATOR, **bd}})
                else:
                    changed = {k: v for k, v in bd.items() if (cur.get(k) or None) != (v or None)}
                    if changed:
                        cmds[f"b{n}"] = ("crm.requisite.bankdetail.update", {"id": cur["ID"], "fields": changed})
        if pseudo.get("ADDRESS_LEGAL") is not None:
            akey = {"TYPE_ID": ADDRESS_LEGAL, "ENTITY_TYPE_ID": ADDRESS_OWNER_REQUISITE, "ENTITY_ID": int(rq_id)}
            have = result_rows(c.call("crm.address.list", {"filter": akey}).result)
            text = str(pseudo["ADDRESS_LEGAL"])
            if not have:
                cmds["a"] = ("crm.address.add", {"fields": {**akey, "ADDRESS_1": text}})
            elif address_text(have[0]) != text:
                cmds["a"] = ("crm.address.update", {"fields": {**akey, "ADDRESS_1": text, "ADDRESS_2": "",
                                                               "CITY": "", "REGION": "", "PROVINCE": "",
                                                               "POSTAL_CODE": "", "COUNTRY": ""}})
        if cmds:
            res = c.batch(cmds, retry=False)
            for k in cmds:
                res.get(k, connector=self.name)
