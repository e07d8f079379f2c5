"""Writing orders, customers and corporate customers keyed by externalId, and tasks.

A create carries ``externalId``: the source record's id when it comes from `origin_system` (an order
from the shop gets the shop order's id, as RetailCRM's own shop modules do), else syncd's key
(`WriteOp.external_key`). Before creating, the key (and earlier keys) is looked up (``filter[externalIds][]``,
100 a call), unless the op was never sent (`WriteOp.unsent`); a record found is adopted (`found=True`) and
updated. A POST whose answer was lost is a TransientError: the next attempt starts with the look-up, so
a retried create never makes a second record. Tasks have no externalId: an open task with the same
text, performer, order and customer is the one made before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from connectors.retailcrm.client import PAGE, RetailCRMClient
from connectors.retailcrm.records import KINDS, WRITES, encode, encode_task
from connectors.retailcrm.settings import RetailCRMSettings
from syncd.connector import WriteOp, WriteResult
from syncd.errors import BadInput, PermanentError, TransientError


class Writes:
    client: RetailCRMClient
    settings: RetailCRMSettings
    name: str
    write_retries: int

    def write(self, op: WriteOp) -> WriteResult:
        return self._write(op, None)

    def _write(self, op: WriteOp, preset: str | None) -> WriteResult:
        if op.kind not in WRITES:
            raise PermanentError(f"retailcrm cannot write {op.kind!r} (can: {', '.join(sorted(WRITES))})",
                                 connector=self.name, op_id=op.op_id)
        if op.op == "delete":
            raise PermanentError("deletes are not sent to RetailCRM", connector=self.name, op_id=op.op_id)
        fn = {"task": self._write_task, "call": getattr(self, "_write_call", None)}.get(op.kind) or self._write_entity
        # an attempt after the first looks the key up again (the first too unless the op was never
        # sent), so a create whose answer was lost is found, not made twice
        for attempt in Retrying(retry=retry_if_exception_type(TransientError),
                                stop=stop_after_attempt(max(1, self.write_retries)),
                                wait=wait_exponential_jitter(multiplier=0.2, max=3.0, jitter=0.3), reraise=True):
            with attempt:
                first = attempt.retry_state.attempt_number == 1
                return fn(op if first or not op.unsent else dataclasses.replace(op, unsent=False),
                          preset if first else None)
        raise AssertionError("unreachable")  # pragma: no cover

    def write_many(self, ops: Sequence[WriteOp]) -> list[WriteResult | Exception]:
        """The keys of new records looked up together (100 a call per kind), then each written."""
        found: dict[int, str] = {}
        by_kind: dict[str, list[int]] = {}
        for i, op in enumerate(ops):
            if op.kind in KINDS and op.op == "create" and op.external_id is None and not op.unsent:
                by_kind.setdefault(op.kind, []).append(i)
        failed: dict[int, Exception] = {}
        for kind, idx in by_kind.items():
            try:
                keys = self.lookup(kind, [k for i in idx for k in self.keys_of(ops[i])])
            except (TransientError, PermanentError) as exc:
                failed.update({i: exc for i in idx})
                continue
            for i in idx:
                hit = next((keys[k] for k in self.keys_of(ops[i]) if k in keys), None)
                found[i] = hit if hit is not None else ""          # "" : looked up, not there
        out: list[WriteResult | Exception] = []
        for i, op in enumerate(ops):
            if i in failed:
                out.append(failed[i])
                continue
            try:
                out.append(self._write(op, found.get(i)))
            except (TransientError, PermanentError, BadInput) as exc:
                out.append(exc)
        return out

    # -- keys -------------------------------------------------------------------------------------
    def key_of(self, op: WriteOp) -> str:
        """The externalId a create carries (see the module's doc)."""
        if op.origin is not None and op.origin[0] == self.settings.origin_system:
            return op.origin[1]
        return op.external_key

    def keys_of(self, op: WriteOp) -> list[str]:
        return list(dict.fromkeys([self.key_of(op), op.external_key, *op.also_known_as]))

    def lookup(self, kind: str, keys: Sequence[str]) -> dict[str, str]:
        """externalId -> id of the records carrying these keys (on our site), 100 keys a call."""
        path, name, _ = KINDS[kind]
        keys = list(dict.fromkeys(k for k in keys if k))
        out: dict[str, str] = {}
        site = {"sites": [self.settings.site]} if self.settings.site else {}
        for i in range(0, len(keys), PAGE):
            got = self.client.get(path, {"filter": {"externalIds": keys[i:i + PAGE], **site}, "limit": PAGE}) or {}
            for r in got.get(name) or []:
                if r.get("externalId"):
                    out.setdefault(str(r["externalId"]), str(r["id"]))
        return out

    # -- orders and customers ---------------------------------------------------------------------
    def _get(self, kind: str, rid: str) -> dict[str, Any] | None:
        path, _, single = KINDS[kind]
        got = self.client.get(f"{path}/{rid}", {"by": "id", **({"site": self.settings.site} if self.settings.site
                                                                else {})}, missing_ok=True)
        return None if got is None else got.get(single)

    def _write_entity(self, op: WriteOp, preset: str | None) -> WriteResult:
        kind = op.kind
        path, _, param = KINDS[kind]
        rid, found = op.external_id, False
        if rid is None and preset is not None:
            rid, found = preset or None, bool(preset)
        elif rid is None and not op.unsent:
            keys = self.lookup(kind, self.keys_of(op))
            rid = next((keys[k] for k in self.keys_of(op) if k in keys), None)
            found = rid is not None
        what = f"{kind} {rid or self.key_of(op)} (op {op.op_id})"
        if rid is None:
            entity = encode(kind, op.fields)
            entity["externalId"] = self.key_of(op)
            if kind == "order" and self.settings.order_method and not entity.get("orderMethod"):
                entity["orderMethod"] = self.settings.order_method
            if kind == "customer_corporate":
                self._companies(entity, op.fields)
            got = self.client.post(f"{path}/create", {param: entity}, what=what)
            return WriteResult(str(got["id"]), dict(op.fields))
        # what the record holds now, where a write depends on it (an order's lines keep their ids,
        # phones are merged)
        needs = (kind == "order" and "items" in op.fields) or "phones" in op.fields
        current = self._get(kind, rid) if needs else None
        entity = encode(kind, op.fields, current=current)
        entity.pop("externalId", None)         # the key stays what it is (a found record keeps its own)
        if entity:
            self.client.post(f"{path}/{rid}/edit", {param: entity, "by": "id"}, what=what)
        return WriteResult(str(rid), dict(op.fields), found=found)

    @staticmethod
    def _companies(entity: dict[str, Any], fields: Mapping[str, Any]) -> None:
        """A new corporate customer's main company carries its requisites (INN, KPP, OGRN); the API
        takes companies on create (later edits of requisites are not sent)."""
        agent = {k: str(fields[k]) for k in ("INN", "KPP", "OGRN") if fields.get(k) not in (None, "")}
        if agent:
            entity["companies"] = [{"name": entity.get("nickName") or fields.get("nickName") or "",
                                    "isMain": True, "contragent": {"contragentType": "legal-entity", **agent}}]

    # -- tasks ------------------------------------------------------------------------------------
    def find_task(self, fields: Mapping[str, Any]) -> str | None:
        """An open task with the same text, performer, order and customer: the one made before."""
        want = encode_task(fields)
        if not want.get("text") or not want.get("performerId"):
            return None
        flt = {"performers": [want["performerId"]], "status": "performing", "text": want["text"]}
        for rows, _ in self.client.pages("tasks", "tasks", {"filter": flt}):
            for t in rows:
                if (t.get("text") == want["text"] and str(t.get("performer")) == str(want["performerId"])
                        and str((t.get("order") or {}).get("id")) == str((want.get("order") or {}).get("id"))
                        and str((t.get("customer") or {}).get("id"))
                        == str((want.get("customer") or {}).get("id"))):
                    return str(t["id"])
        return None

    def _write_task(self, op: WriteOp, preset: str | None) -> WriteResult:
        rid, found = op.external_id, False
        if rid is None:
            rid = self.find_task(op.full or op.fields)
            found = rid is not None
        what = f"task {rid or op.external_key} (op {op.op_id})"
        if rid is None:
            task = encode_task(op.fields)
            if "performerId" not in task:
                raise PermanentError(f"{what}: a task needs performerId", connector=self.name, op_id=op.op_id)
            got = self.client.post("tasks/create", {"task": task}, what=what)
            return WriteResult(str(got["id"]), dict(op.fields))
        task = encode_task(op.fields)
        if task and not found:
            self.client.post(f"tasks/{rid}/edit", {"task": task}, what=what)
        return WriteResult(str(rid), dict(op.fields), found=found)
