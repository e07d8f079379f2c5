"""Writing leads, contacts and companies: look the key up, then create (stamped) or update.

Every record syncd creates carries its key in the `key_field` custom field: the source record
("shop:1001") when the op names one, else syncd's own key. Before a create the key is looked up
(``query=<key>``, a substring search, confirmed by the field's exact value) — unless the op was never
sent (WriteOp.unsent) and this is its first attempt. A POST whose answer is lost raises
TransientError; the retry looks the key up first, so a lost answer never makes a second record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from connectors.amocrm.client import AmoClient, Invalid
from connectors.amocrm.meta import ETYPES, Catalog
from connectors.amocrm.settings import AmoCRMSettings
from connectors.amocrm.values import (
    BUILTINS,
    MULTI,
    RECORD_KINDS,
    cf_values,
    current_multi,
    merge_multi,
    stamp_of,
    to_price,
    utc_version,
)
from syncd.connector import WriteOp, WriteResult
from syncd.errors import BadInput, PermanentError, TransientError

PLAIN = {"lead": ("name",), "contact": ("name", "first_name", "last_name"), "company": ("name",)}
LINKS = {"lead": ("contact_id", "company_id"), "contact": ("company_id",), "company": ()}
READ_ONLY = ("created_at", "updated_at", "closed_at")
WRITES = frozenset({"lead", "contact", "company", "task", "note", "call"})


class Writes:
    client: AmoClient
    catalog: Catalog
    settings: AmoCRMSettings
    name: str
    write_retries: int

    def write(self, op: WriteOp) -> WriteResult:
        if op.kind not in WRITES:
            raise PermanentError(f"amocrm cannot write {op.kind!r} (can: {', '.join(sorted(WRITES))})",
                                 connector=self.name, op_id=op.op_id)
        if op.op == "delete":
            raise PermanentError("deletes are not sent to amoCRM (API v4 has none for these records)",
                                 connector=self.name, op_id=op.op_id)
        fn = {"task": self._write_task, "note": self._write_note,  # type: ignore[attr-defined]
              "call": self._write_call}.get(op.kind, self._write_record)  # type: ignore[attr-defined]
        # each attempt after the first starts with the look-up (the first too, unless the op was
        # never sent), so a lost answer never creates twice
        for attempt in Retrying(retry=retry_if_exception(lambda e: isinstance(e, TransientError)
                                                         and e.code not in ("LOCKED",)),
                                stop=stop_after_attempt(self.write_retries),
                                wait=wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.2), reraise=True):
            with attempt:
                first = attempt.retry_state.attempt_number == 1
                return fn(op if first or not op.unsent else dataclasses.replace(op, unsent=False))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- keys -----------------------------------------------------------------------------------------
    def _keys(self, op: WriteOp) -> list[str]:
        return list(dict.fromkeys([stamp_of(op.origin, op.external_key), *op.also_known_as]))

    def lookup(self, kind: str, keys: Sequence[str]) -> str | None:
        """The id of the record carrying one of these keys in the key field (the lowest id)."""
        kf = self.catalog.key_field(kind, self.settings.key_field)
        for key in keys:
            rows = self.client.all(ETYPES[kind], ETYPES[kind], {"query": key})
            hits = sorted(int(r["id"]) for r in rows for e in r.get("custom_fields_values") or []
                          if e.get("field_id") == kf.id and any(str(v.get("value")) == key for v in e.get("values") or []))
            if hits:
                return str(hits[0])
        return None

    # -- bodies ---------------------------------------------------------------------------------------
    def _body(self, op: WriteOp, ext: str | None, current: Mapping[str, Any] | None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The request body and the links to set (contact_id/company_id -> id) for `op`."""
        kind, fields = op.kind, dict(op.fields)
        body: dict[str, Any] = {}
        cfs: list[dict[str, Any]] = []
        links: dict[str, Any] = {}
        for k, v in fields.items():
            if k in PLAIN[kind]:
                body[k] = "" if v is None else str(v)
            elif k == "price" and kind == "lead":
                body["price"] = self._value(op, k, to_price, v)
            elif k == "responsible_user_id":
                if v not in (None, ""):
                    body[k] = self._value(op, k, int, v)
            elif k in ("pipeline", "status", "pipeline_id", "status_id") and kind == "lead":
                continue                       # below, together
            elif k in LINKS[kind]:
                links[k] = v
            elif k in READ_ONLY or k.upper() == self.settings.key_field.upper():
                continue                       # amoCRM's own times; the key is syncd's to stamp
            else:
                f = self.catalog.field(kind, k)
                if f is None:
                    known = sorted(set(BUILTINS[kind]) | {c.key for c in self.catalog.fields(kind)})
                    raise PermanentError(f"amoCRM {kind} has no field {k!r} (fields: {', '.join(known)})",
                                         connector=self.name, op_id=op.op_id, code="UNKNOWN_FIELD")
                if f.type == "multitext" and k.upper() in MULTI:
                    have = current_multi(current, f)
                    add = merge_multi(k.upper(), [h["value"] for h in have], v)
                    if add or (ext is None and have):
                        cfs.append({"field_id": f.id, "values": have + [{"value": a, "enum_code": "WORK"}
                                                                       for a in add]})
                    continue
                cfs.append({"field_id": f.id, "values": self._value(op, k, lambda x: cf_values(f, x), v)})
        if kind == "lead":
            body.update(self._stage(op, ext, current))
        if ext is None:
            kf = self.catalog.key_field(kind, self.settings.key_field)
            cfs.append({"field_id": kf.id, "values": [{"value": stamp_of(op.origin, op.external_key)}]})
            emb: dict[str, Any] = {}
            if links.get("contact_id") not in (None, ""):
                emb["contacts"] = [{"id": self._value(op, "contact_id", int, links["contact_id"]), "is_main": True}]
            if links.get("company_id") not in (None, ""):
                emb["companies"] = [{"id": self._value(op, "company_id", int, links["company_id"])}]
            if emb:
                body["_embedded"] = emb
            links = {}
        if cfs:
            body["custom_fields_values"] = cfs
        return body, links

    def _value(self, op: WriteOp, field: str, fn: Any, v: Any) -> Any:
        try:
            return fn(v)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"amoCRM {op.kind}.{field}: {exc}", record=op.entity_id) from None

    def _stage(self, op: WriteOp, ext: str | None, current: Mapping[str, Any] | None) -> dict[str, Any]:
        """pipeline/status by name -> pipeline_id/status_id (a status within the lead's pipeline)."""
        f = op.fields
        out: dict[str, Any] = {}
        pid = f.get("pipeline_id")
        if f.get("pipeline") not in (None, ""):
            pid = self.catalog.pipeline_id(str(f["pipeline"]))
        if pid not in (None, ""):
            out["pipeline_id"] = int(pid)
        if f.get("status") not in (None, ""):
            if pid in (None, ""):
                if ext is not None:
                    cur = current or self.client.get(f"leads/{ext}") or {}
                    pid = cur.get("pipeline_id")
                elif op.full.get("pipeline") not in (None, ""):
                    pid = self.catalog.pipeline_id(str(op.full["pipeline"]))
                pid = pid or self.catalog.main_pipeline().id
                out["pipeline_id"] = int(pid)
            out["status_id"] = self.catalog.status_id(int(pid), str(f["status"]))
        elif f.get("status_id") not in (None, ""):
            out["status_id"] = int(f["status_id"])
        return out

    # -- one record -------------------------------------------------------------------------------------
    def _write_record(self, op: WriteOp) -> WriteResult:
        kind, ext, found = op.kind, op.external_id, False
        if ext is None and not op.unsent:
            ext = self.lookup(kind, self._keys(op))
            found = ext is not None
        if ext is None:
            body, _ = self._body(op, None, None)
            new = self._post(kind, [{**body, "request_id": "0"}], op)
            return WriteResult(new["0"], dict(op.fields), found=False)
        return self._update(op, ext, found)

    def _update(self, op: WriteOp, ext: str, found: bool = False) -> WriteResult:
        kind = op.kind
        current = None
        if any(k.upper() in MULTI for k in op.fields):
            current = self.client.get(f"{ETYPES[kind]}/{ext}")     # a merge needs what is there
            if current is None:
                raise PermanentError(f"amoCRM {kind} {ext} does not exist (deleted?)", connector=self.name,
                                     op_id=op.op_id, code="NOT_FOUND")
        body, links = self._body(dataclasses.replace(op, external_id=ext), ext, current)
        version = None
        if body:
            ans = self.client.request("PATCH", f"{ETYPES[kind]}/{ext}", json=body, what=f"update {kind} {ext}")
            version = utc_version((ans.data or {}).get("updated_at"))
        self._link(kind, ext, links, op)
        return WriteResult(ext, dict(op.fields), version=version, found=found)

    def _link(self, kind: str, ext: str, links: Mapping[str, Any], op: WriteOp) -> None:
        """A lead's main contact / company, a contact's company, set on an existing record. (A link
        removed in syncd is not unlinked here: amoCRM keeps the history a manager relies on.)"""
        items = []
        if links.get("contact_id") not in (None, ""):
            items.append({"to_entity_id": self._value(op, "contact_id", int, links["contact_id"]),
                          "to_entity_type": "contacts", "metadata": {"is_main": True}})
        if links.get("company_id") not in (None, ""):
            items.append({"to_entity_id": self._value(op, "company_id", int, links["company_id"]),
                          "to_entity_type": "companies"})
        if items:
            self.client.request("POST", f"{ETYPES[kind]}/{ext}/link", json=items, what=f"link {kind} {ext}")

    def _post(self, kind: str, items: list[dict[str, Any]], op: WriteOp | None = None) -> dict[str, str]:
        """POST new records; request_id -> new id."""
        ans = self.client.request("POST", ETYPES[kind], json=items, what=f"create {kind}"
                                  + (f" for {op.entity_id}" if op is not None else ""))
        got = ((ans.data or {}).get("_embedded") or {}).get(ETYPES[kind]) or []
        return {str(r.get("request_id")): str(r["id"]) for r in got}

    # -- many at once -----------------------------------------------------------------------------------
    def write_many(self, ops: Sequence[WriteOp]) -> list[WriteResult | Exception]:
        """Creates of leads, contacts and companies in POSTs of up to `write_part` (request_id = the
        op's index, mapped back from the answer); everything else one by one through `write`."""
        out: list[WriteResult | Exception | None] = [None] * len(ops)
        by_kind: dict[str, list[int]] = {}
        for i, op in enumerate(ops):
            if op.kind in RECORD_KINDS and op.op == "create" and op.external_id is None:
                by_kind.setdefault(op.kind, []).append(i)
                continue
            try:
                out[i] = self.write(op)
            except (TransientError, PermanentError, BadInput) as exc:
                out[i] = exc
        for kind, idx in by_kind.items():
            bodies: dict[int, dict[str, Any]] = {}
            for i in idx:
                op = ops[i]
                try:
                    found = None if op.unsent else self.lookup(kind, self._keys(op))
                    if found is not None:
                        out[i] = self._update(op, found, True)
                    else:
                        bodies[i] = {**self._body(op, None, None)[0], "request_id": str(i)}
                except (TransientError, PermanentError, BadInput) as exc:
                    out[i] = exc
            todo = list(bodies)
            part = max(1, int(getattr(self, "write_part", 50)))
            for j in range(0, len(todo), part):
                self._create_part(kind, [(i, bodies[i]) for i in todo[j:j + part]], ops, out)
        return [x if x is not None else PermanentError("not written", connector=self.name) for x in out]

    def _create_part(self, kind: str, items: list[tuple[int, dict[str, Any]]], ops: Sequence[WriteOp],
                     out: list[WriteResult | Exception | None]) -> None:
        """One POST; amoCRM refuses a whole request for one bad item: those named get their error,
        the rest are sent again without them (nothing of the refused request was saved)."""
        for _ in range(2):
            try:
                got = self._post(kind, [b for _, b in items])
            except Invalid as exc:
                bad = {i for i, _ in items if str(i) in exc.invalid}
                for i, _ in items:
                    if i in bad:
                        out[i] = PermanentError(f"create {kind}: " + "; ".join(exc.invalid[str(i)]),
                                                connector=self.name, code="VALIDATION")
                items = [(i, b) for i, b in items if i not in bad]
                if not bad or not items:
                    for i, _ in items:
                        out[i] = exc
                    return
                continue
            except (TransientError, PermanentError) as exc:
                for i, _ in items:
                    out[i] = exc
                return
            for i, b in items:
                new = got.get(str(i))
                out[i] = WriteResult(new, dict(ops[i].fields), found=False) if new else PermanentError(
                    f"create {kind}: no id for request_id {i} in the answer", connector=self.name)
            return
