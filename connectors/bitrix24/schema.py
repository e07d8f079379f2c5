"""The live schema: fields (with user fields and pseudo-fields), pipelines and stages, statuses,
sources, users with presence (online or working day opened) — for the mapping check and the rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.bitrix24.calls import CALL_FIELDS
from connectors.bitrix24.client import BatchResult, Bitrix24Client
from connectors.bitrix24.values import CRM_KINDS, PSEUDO, result_rows
from syncd.connector import LiveSchema


class Schema:
    client: Bitrix24Client
    name: str

    def describe(self) -> LiveSchema:
        c = self.client
        cmds: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for k in CRM_KINDS:
            cmds[f"f_{k}"] = (f"crm.{k}.fields", {})
            cmds[f"u_{k}"] = (f"crm.{k}.userfield.list", {})
        cmds["cats"] = ("crm.category.list", {"entityTypeId": 2})
        cmds["stages"] = ("crm.status.list", {"order": {"SORT": "ASC"}})
        cmds["users"] = ("user.get", {})
        cmds["pf"] = ("crm.product.fields", {})
        res = c.batch(cmds)
        schema = LiveSchema()
        for k in CRM_KINDS:
            names = set((res.results.get(f"f_{k}") or {}).keys())
            names |= {u["FIELD_NAME"] for u in result_rows(res.results.get(f"u_{k}")) if u.get("FIELD_NAME")}
            names |= set(PSEUDO.get(k, ()))
            if names:
                schema.kinds[k] = names
        schema.kinds["call"] = set(CALL_FIELDS)      # pseudo-fields of the call write (calls.py)
        if res.results.get("pf"):
            schema.kinds["product"] = set(res.results["pf"].keys())
        cats = result_rows(res.results.get("cats"))
        stages = result_rows(res.results.get("stages"))
        by_cat: dict[str, list[tuple[int, str]]] = {}
        for s in stages:
            ent = str(s.get("ENTITY_ID") or "")
            if ent == "DEAL_STAGE" or ent.startswith("DEAL_STAGE_"):
                cid = "0" if ent == "DEAL_STAGE" else ent.rsplit("_", 1)[1]
                by_cat.setdefault(cid, []).append((int(s.get("SORT") or 0), str(s["STATUS_ID"])))
            elif ent == "STATUS":
                schema.values.setdefault("lead.STATUS_ID", set()).add(str(s["STATUS_ID"]))
            elif ent == "SOURCE":
                for k in ("deal", "lead", "contact"):
                    schema.values.setdefault(f"{k}.SOURCE_ID", set()).add(str(s["STATUS_ID"]))
        names = {str(ct.get("id")): str(ct.get("name")) for ct in cats}
        # names a manager sees, for config values given by name (syncd.names)
        schema.names["pipeline"] = {n: i for i, n in names.items() if n}
        for s in stages:
            ent, label = str(s.get("ENTITY_ID") or ""), str(s.get("NAME") or "").strip()
            if not label:
                continue
            if ent == "DEAL_STAGE" or ent.startswith("DEAL_STAGE_"):
                cid = "0" if ent == "DEAL_STAGE" else ent.rsplit("_", 1)[1]
                schema.names.setdefault(f"stage:{cid}", {})[label] = str(s["STATUS_ID"])
            elif ent == "SOURCE":
                schema.names.setdefault("source", {})[label] = str(s["STATUS_ID"])
        all_stages: set[str] = set()
        for cid, st in sorted(by_cat.items(), key=lambda kv: int(kv[0])):
            ordered = [x for _, x in sorted(st)]
            all_stages.update(ordered)
            schema.pipelines[cid] = ordered
            if cid in names:
                schema.pipelines[names[cid]] = ordered
        schema.values["deal.STAGE_ID"] = all_stages
        schema.values["deal.CATEGORY_ID"] = set(names) | set(by_cat)
        users = result_rows(res.results.get("users"))
        tcmds = {f"t{u['ID']}": ("timeman.status", {"USER_ID": u["ID"]}) for u in users}
        tres = c.batch(tcmds) if tcmds else BatchResult()
        for u in users:
            tm = tres.results.get(f"t{u['ID']}") or {}
            working = str(tm.get("STATUS") or "").upper() in ("OPENED",)
            schema.users[str(u["ID"])] = {
                "name": " ".join(str(u.get(k) or "") for k in ("NAME", "LAST_NAME")).strip(),
                "active": u.get("ACTIVE") in (True, "Y", "1", 1, "true"),
                "present": u.get("IS_ONLINE") == "Y" or working,
                "email": u.get("EMAIL"),
                # the user's internal phone number: the PBX extension the calls' routing answers
                "extension": str(u.get("UF_PHONE_INNER") or "") or None}
        schema.values["deal.ASSIGNED_BY_ID"] = set(schema.users)
        people: dict[str, str] = {}
        for u in users:
            uid = str(u["ID"])
            first, last = str(u.get("NAME") or "").strip(), str(u.get("LAST_NAME") or "").strip()
            for label in (u.get("EMAIL"), f"{first} {last}".strip(), f"{last} {first}".strip()):
                if label:
                    people.setdefault(str(label), uid)
        schema.names["user"] = people
        return schema

    def mapping_problems(self, mapper: Any) -> list[str]:
        from connectors.bitrix24.live import check_live
        return [f"{k}: {msg}" for k, msg in check_live(mapper, {self.name: self})]
