"""Writing CRM records: look the external key up (ORIGINATOR_ID/ORIGIN_ID), then create or update,
one by one or packed into `batch` calls; products by XML_ID."""

from __future__ import annotations

import dataclasses

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from connectors.bitrix24.client import PAGE, Bitrix24Client, ref
from connectors.bitrix24.settings import Bitrix24Settings
from connectors.bitrix24.values import (
    CRM_KINDS,
    LOOKUP_KEYS,
    MULTI,
    MULTI_KINDS,
    ORIGINATOR,
    PSEUDO,
    WRITES,
    merge_multi,
    result_rows,
    utc_version,
)
from syncd.connector import WriteOp, WriteResult
from syncd.errors import BadInput, PermanentError, TransientError

SIDE_EFFECTS = frozenset({"task", "comment", "notify"})


class Writes:
    client: Bitrix24Client
    settings: Bitrix24Settings
    name: str
    write_retries: int

    _note_written: Callable[[str, Sequence[str], Sequence[str]], None]   # Events: what syncd's writes fire

    def write(self, op: WriteOp) -> WriteResult:
        if op.kind not in WRITES:
            raise PermanentError(f"bitrix24 cannot write {op.kind!r} (can: {', '.join(sorted(WRITES))})",
                                 connector=self.name, op_id=op.op_id)
        if op.op == "delete":
            raise PermanentError("deletes are not sent to Bitrix24", connector=self.name, op_id=op.op_id)
        fn = {"product": self._write_product, "task": self._write_task, "comment": self._write_comment,
              "notify": self._write_notify, "call": self._write_call}.get(op.kind, self._write_crm)  # type: ignore[attr-defined]

        def again(exc: BaseException) -> bool:
            return isinstance(exc, TransientError) and exc.code not in ("OPERATION_TIME_LIMIT", "OVERLOAD_LIMIT")

        # each attempt after the first starts with the look-up (the first too, unless the op was
        # never sent: WriteOp.unsent), so a lost answer never creates twice
        for attempt in Retrying(retry=retry_if_exception(again), stop=stop_after_attempt(self.write_retries),
                                wait=wait_exponential_jitter(multiplier=0.3, max=3.0, jitter=0.3), reraise=True):
            with attempt:
                first = attempt.retry_state.attempt_number == 1
                return fn(op if first or not op.unsent else dataclasses.replace(op, unsent=False))
        raise AssertionError("unreachable")  # pragma: no cover

    def stamp(self, op: WriteOp) -> tuple[str, str]:
        """(ORIGINATOR_ID, ORIGIN_ID) a create carries: the source system and its record's id, as
        the vendor's own integrations stamp them; syncd's own key for records from no system."""
        if op.origin is not None:
            system, ext = op.origin
            return self.settings.originators.get(system, system), ext
        return ORIGINATOR, op.external_key

    def origin_of(self, originator: Any, origin_id: Any) -> tuple[str, str] | None:
        """The source a record names (decoded to a syncd system name), or None."""
        if not originator or not origin_id or originator == ORIGINATOR:
            return None
        by_value = {v: k for k, v in self.settings.originators.items()}
        return by_value.get(str(originator), str(originator)), str(origin_id)

    def _stamps(self, op: WriteOp) -> list[tuple[str, str]]:
        """Every stamp a record made for `op` may carry: its own, and syncd's earlier keys."""
        return [self.stamp(op)] + [(ORIGINATOR, k) for k in op.also_known_as]

    def lookup(self, kind: str, keys: Sequence[str | tuple[str, str]]) -> dict[Any, str]:
        """stamp -> ID of records stamped so (ORIGINATOR_ID/ORIGIN_ID). A plain string is syncd's own
        key (ORIGINATOR_ID "syncd"); a pair is (ORIGINATOR_ID, ORIGIN_ID).

        Up to LOOKUP_KEYS keys per command, all commands in one call; a command that returns a
        full page (50) is paged on with `>ID` (start=-1, no counting).
        """
        out: dict[Any, str] = {}
        pairs = list(dict.fromkeys(k if isinstance(k, tuple) else (ORIGINATOR, k) for k in keys))
        if not pairs:
            return out
        by_orig: dict[str, list[str]] = {}
        for o, k in pairs:
            by_orig.setdefault(o, []).append(k)
        chunks_: dict[str, tuple[str, list[str]]] = {}
        for o, ks in by_orig.items():
            for i in range(0, len(ks), LOOKUP_KEYS):
                chunks_[f"k{len(chunks_)}"] = (o, ks[i:i + LOOKUP_KEYS])

        def params(orig: str, ks: list[str], after: int = 0) -> dict[str, Any]:
            flt: dict[str, Any] = {"ORIGINATOR_ID": orig, "@ORIGIN_ID": ks}
            if after:
                flt[">ID"] = after
            return {"filter": flt, "select": ["ID", "ORIGIN_ID"], "order": {"ID": "ASC"}, "start": -1}

        method = f"crm.{kind}.list"
        if len(chunks_) == 1:
            (k0, (o0, ks0)), = chunks_.items()
            pages = {k0: result_rows(self.client.call(method, params(o0, ks0)).result)}
        else:
            res = self.client.batch({k: (method, params(o, ks)) for k, (o, ks) in chunks_.items()})
            pages = {k: result_rows(res.get(k, connector=self.name)) for k in chunks_}
        for k, rows in pages.items():
            orig, ks = chunks_[k]
            while True:
                for r in rows:
                    out.setdefault((orig, str(r["ORIGIN_ID"])), str(r["ID"]))
                if len(rows) < PAGE:
                    break
                rows = result_rows(self.client.call(method, params(orig, ks, int(rows[-1]["ID"]))).result)
        # a plain key asked for is answered under that key too
        for k in keys:
            if not isinstance(k, tuple) and (ORIGINATOR, k) in out:
                out[k] = out[(ORIGINATOR, k)]
        return out

    def _find(self, op: WriteOp, found: Mapping[Any, str]) -> str | None:
        return next((found[s] for s in self._stamps(op) if s in found), None)

    def _prepare_crm(self, op: WriteOp, ext: str | None, current: Mapping[str, Any] | None
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
        fields = {k: v for k, v in op.fields.items()}
        pseudo = {k: fields.pop(k) for k in PSEUDO.get(op.kind, ()) if k in fields}
        if op.kind in MULTI_KINDS:
            for m in MULTI:
                if m not in fields:
                    continue
                add = merge_multi(m, (current or {}).get(m), fields[m])
                if add:
                    fields[m] = add
                else:
                    del fields[m]
        if ext is None:
            fields["ORIGINATOR_ID"], fields["ORIGIN_ID"] = self.stamp(op)
        else:
            fields.pop("ORIGINATOR_ID", None)
            fields.pop("ORIGIN_ID", None)
            if op.names is not None:
                # a record made here (a deal by phone) names what syncd made from it (its shop order),
                # as if that record's integration had made it: found by that key from now on
                system, key = op.names
                fields["ORIGINATOR_ID"], fields["ORIGIN_ID"] = self.settings.originators.get(system, system), key
        return fields, pseudo

    def _crm_cmds(self, op: WriteOp, key: str, ext: str | None, fields: dict[str, Any],
                  pseudo: Mapping[str, Any]) -> tuple[dict[str, tuple[str, Mapping[str, Any]]], str]:
        kind = op.kind
        cmds: dict[str, tuple[str, Mapping[str, Any]]] = {}
        if ext is None:
            cmds[f"{key}w"] = (f"crm.{kind}.add", {"fields": fields, "params": {"REGISTER_SONET_EVENT": "N"}})
            id_ref = ref(f"{key}w")
        else:
            if fields:
                cmds[f"{key}w"] = (f"crm.{kind}.update", {"id": ext, "fields": fields,
                                                           "params": {"REGISTER_SONET_EVENT": "N"}})
            id_ref = ext
        if kind == "deal" and ("PRODUCT_ROWS" in pseudo or "DELIVERY_PRICE" in pseudo):
            # the rows are always set whole: the goods (changed, or as the record has them) and,
            # when the mapping writes DELIVERY_PRICE, the delivery as one more row
            goods = pseudo["PRODUCT_ROWS"] if "PRODUCT_ROWS" in pseudo else op.full.get("PRODUCT_ROWS")
            delivery = pseudo["DELIVERY_PRICE"] if "DELIVERY_PRICE" in pseudo else op.full.get("DELIVERY_PRICE")
            listed = list(goods or [])
            if delivery not in (None, "", 0, "0", "0.00"):
                listed.append({"PRODUCT_NAME": self.settings.delivery_row, "PRICE": delivery, "QUANTITY": 1})
            rows = []
            for r in listed:
                row = {k: v for k, v in dict(r).items() if v is not None and k != "ID"}
                if row.get("PRODUCT_ID") in (None, "", "0", 0):
                    row.pop("PRODUCT_ID", None)
                rows.append(row)
            cmds[f"{key}r"] = ("crm.deal.productrows.set", {"id": id_ref, "rows": rows})
        return cmds, id_ref

    def _write_crm(self, op: WriteOp) -> WriteResult:
        kind = op.kind
        ext = op.external_id
        found = False
        if ext is None and not op.unsent:
            ext = self._find(op, self.lookup(kind, self._stamps(op)))
            found = ext is not None
        current = None
        if ext is not None and kind in MULTI_KINDS and any(m in op.fields for m in MULTI):
            current = self.client.call(f"crm.{kind}.get", {"id": ext}).result
        fields, pseudo = self._prepare_crm(op, ext, current)
        cmds, id_ref = self._crm_cmds(op, "", ext, fields, pseudo)
        cmds["g"] = (f"crm.{kind}.get", {"id": id_ref})
        echoes = _echoes(cmds)
        if ext is not None:
            self._note_written(kind, [ext], echoes)   # before the call: its event may come before the answer
        res = self.client.batch(cmds, halt=1, retry=False)
        new_id = res.get("w", connector=self.name) if ext is None else ext
        if "w" in cmds:
            res.get("w", connector=self.name)
        if "r" in cmds:
            res.get("r", connector=self.name)
        rec = res.get("g", connector=self.name) or {}
        new_id = str(new_id)
        if ext is None:
            self._note_written(kind, [new_id], echoes)
        if kind == "company" and pseudo:
            self._write_requisites(new_id, pseudo, op.external_key)
        return WriteResult(new_id, rec, version=utc_version(rec.get("DATE_MODIFY")), found=found)

    @staticmethod
    def _xml_id(op: WriteOp) -> str:
        # a catalog's goods share their 1C Ид as XML_ID (as the vendor's catalog exchange does)
        return op.origin[1] if op.origin is not None else op.external_key

    def _write_products(self, items: Sequence[tuple[int, WriteOp]]) -> dict[int, WriteResult | Exception]:
        """Products in two calls whatever their number: the look-ups of new ones by XML_ID (and
        earlier keys), then the adds and updates, each settled by its own command's result."""
        out: dict[int, WriteResult | Exception] = {}
        look: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for i, op in items:
            if op.external_id is None:
                for j, key in enumerate((self._xml_id(op), *op.also_known_as)):
                    look[f"x{i}_{j}"] = ("crm.product.list", {"filter": {"XML_ID": key}, "select": ["ID"],
                                                              "start": -1})
        found: dict[int, str] = {}
        if look:
            try:
                res = self.client.batch(look)
                for i, op in items:
                    for j in range(1 + len(op.also_known_as)):
                        rows = result_rows(res.get(f"x{i}_{j}", connector=self.name)) if f"x{i}_{j}" in look else []
                        if rows:
                            found[i] = str(rows[0]["ID"])
                            break
            except (TransientError, PermanentError) as exc:
                return {i: exc for i, _ in items}
        cmds: dict[str, tuple[str, Mapping[str, Any]]] = {}
        for i, op in items:
            ext = op.external_id or found.get(i)
            if ext is None:
                cmds[f"p{i}"] = ("crm.product.add", {"fields": {**op.fields, "XML_ID": self._xml_id(op)}})
            elif op.fields:
                cmds[f"p{i}"] = ("crm.product.update", {"id": ext, "fields": dict(op.fields)})
        try:
            res = self.client.batch(cmds, halt=0, retry=False) if cmds else None
        except (TransientError, PermanentError) as exc:
            return {i: exc for i, _ in items}
        for i, op in items:
            ext = op.external_id or found.get(i)
            try:
                got = res.get(f"p{i}", connector=self.name) if res is not None and f"p{i}" in cmds else None
            except (TransientError, PermanentError) as exc:
                out[i] = exc
                continue
            out[i] = WriteResult(str(ext if ext is not None else got), dict(op.fields), found=i in found)
        return out

    def _write_product(self, op: WriteOp) -> WriteResult:
        c = self.client
        ext = op.external_id
        fields = dict(op.fields)
        xml_id = self._xml_id(op)
        found = False
        if ext is None:
            for key in (xml_id, *op.also_known_as):
                rows = result_rows(c.call("crm.product.list", {"filter": {"XML_ID": key},
                                                               "select": ["ID"], "start": -1}).result)
                if rows:
                    ext, found = str(rows[0]["ID"]), True
                    break
        if ext is None:
            ext = str(c.call("crm.product.add", {"fields": {**fields, "XML_ID": xml_id}}).result)
        elif fields:
            c.call("crm.product.update", {"id": ext, "fields": fields})
        rec = c.call("crm.product.get", {"id": ext}).result or {}
        return WriteResult(str(ext), rec, version=utc_version(rec.get("TIMESTAMP_X")), found=found)

    def write_many(self, ops: Sequence[WriteOp]) -> list[WriteResult | Exception]:
        """Many writes in few requests: look-ups batched (50 keys a command), then creates and
        updates packed into `batch` calls of ≤ 50 commands (a deal's add + productrows.set stay in
        one call, linked by `$result`). Results line up with `ops`; a failed op yields its exception.

        New tasks, comments and notices go in batches too (their look-ups, then their adds:
        `side_effects_many`), and products (their look-ups by XML_ID, then their adds and updates:
        `_write_products`). Companies with requisites and multi-field updates go through `write`
        one by one (they need reads between writes).
        """
        out: list[WriteResult | Exception | None] = [None] * len(ops)
        fast: list[int] = []
        side: list[tuple[int, WriteOp]] = []
        products: list[tuple[int, WriteOp]] = []
        for i, op in enumerate(ops):
            if op.kind == "product" and op.op in ("create", "update"):
                products.append((i, op))
                continue
            simple = op.kind in CRM_KINDS and op.op in ("create", "update") and not (
                op.kind == "company" and any(k in op.fields for k in PSEUDO["company"])) and not (
                op.op == "update" and op.external_id is not None and op.kind in MULTI_KINDS
                and any(m in op.fields for m in MULTI))
            if simple:
                fast.append(i)
            elif op.kind in SIDE_EFFECTS and op.op == "create" and op.external_id is None:
                side.append((i, op))
            else:
                try:
                    out[i] = self.write(op)
                except (TransientError, PermanentError, BadInput) as exc:
                    out[i] = exc
        if side:
            for i, res in self.side_effects_many(side).items():   # type: ignore[attr-defined]
                out[i] = res
        if products:
            for i, res in self._write_products(products).items():
                out[i] = res
        # look up the keys of creates, per kind
        ext: dict[int, str | None] = {i: ops[i].external_id for i in fast}
        existed: set[int] = set()                # creates whose record was found by its key
        by_kind: dict[str, list[int]] = {}
        for i in fast:
            # a create never sent, of a kind syncd has read through here: nothing carries its key
            # that syncd has not bound already (WriteOp.unsent) — no look-up, one request less
            if ext[i] is None and not ops[i].unsent:
                by_kind.setdefault(ops[i].kind, []).append(i)
        if by_kind:
            try:
                found: dict[str, dict[Any, str]] = {}
                for kind, idx in by_kind.items():
                    found[kind] = self.lookup(kind, [s for i in idx for s in self._stamps(ops[i])])
            except (TransientError, PermanentError) as exc:
                for idx in by_kind.values():
                    for i in idx:
                        out[i] = exc
                return [x if x is not None else exc for x in out]
            for kind, idx in by_kind.items():
                for i in idx:
                    ext[i] = self._find(ops[i], found[kind])
                    if ext[i] is not None:
                        existed.add(i)
            # an existing record with multi-fields needs its current values to merge: one by one
            for i in [i for i in fast if ops[i].external_id is None and ext[i] is not None
                      and ops[i].kind in MULTI_KINDS and any(m in ops[i].fields for m in MULTI)]:
                fast.remove(i)
                try:
                    out[i] = self.write(ops[i])
                except (TransientError, PermanentError, BadInput) as exc:
                    out[i] = exc
        # writes: groups of dependent commands, packed ≤ 50 per call; a call with room to spare
        # also reads back DATE_MODIFY of what it wrote (versions are optional: a full call skips it)
        groups: list[tuple[int, dict[str, tuple[str, Mapping[str, Any]]]]] = []
        for i in fast:
            op = ops[i]
            fields, pseudo = self._prepare_crm(op, ext[i], None)
            cmds_i, _ = self._crm_cmds(op, f"o{i}", ext[i], fields, pseudo)
            groups.append((i, cmds_i))
        packed: list[tuple[list[int], dict[str, tuple[str, Mapping[str, Any]]]]] = []
        for i, g in groups:
            if not packed or len(packed[-1][1]) + len(g) > PAGE:
                packed.append(([], {}))
            packed[-1][0].append(i)
            packed[-1][1].update(g)
        results: dict[str, Any] = {}
        errors: dict[str, Exception] = {}
        versions: dict[int, Any] = {}
        echoes = dict((i, _echoes(g)) for i, g in groups)
        for i in fast:                # before the calls: an update's event may come before its answer
            if ext[i] is not None:
                self._note_written(ops[i].kind, [str(ext[i])], echoes[i])
        for members, chunk in packed:
            spare = PAGE - len(chunk)
            vkeys: dict[str, list[int]] = {}
            for i in members:
                if spare <= 0:
                    break
                kind = ops[i].kind
                if f"v_{kind}" not in vkeys:
                    if spare < 1:
                        continue
                    vkeys[f"v_{kind}"] = []
                    spare -= 1
                vkeys[f"v_{kind}"].append(i)
            cmds = dict(chunk)
            for vk, idx in vkeys.items():
                cmds[vk] = (f"crm.{vk[2:]}.list", {
                    "filter": {"@ID": [ref(f"o{i}w") if ext[i] is None else ext[i] for i in idx]},
                    "select": ["ID", "DATE_MODIFY"], "start": -1})
            try:
                res = self.client.batch(cmds, halt=0, retry=False)
            except (TransientError, PermanentError) as exc:
                for k in chunk:
                    errors[k] = exc
                continue
            for k in chunk:
                try:
                    results[k] = res.get(k, connector=self.name)
                except (TransientError, PermanentError) as exc:
                    errors[k] = exc
            for vk, idx in vkeys.items():
                got = {str(r["ID"]): r.get("DATE_MODIFY") for r in result_rows(res.results.get(vk))}
                for i in idx:
                    key = str(results.get(f"o{i}w")) if ext[i] is None else str(ext[i])
                    versions[i] = got.get(key)
        for i in fast:
            err = errors.get(f"o{i}w") or errors.get(f"o{i}r")
            if err is not None:
                out[i] = err
                continue
            x = str(results.get(f"o{i}w")) if ext[i] is None else str(ext[i])
            if ext[i] is None:
                self._note_written(ops[i].kind, [x], echoes[i])
            out[i] = WriteResult(x, dict(ops[i].fields), version=utc_version(versions.get(i)), found=i in existed)
        return [x if x is not None else PermanentError("not written", connector=self.name) for x in out]


def _echoes(cmds: Mapping[str, tuple[str, Mapping[str, Any]]]) -> list[str]:
    """The portal's events these commands fire on their record: ADD for an add, UPDATE for an update
    or a deal's product rows (they move its sum and DATE_MODIFY)."""
    out = []
    for method, _ in cmds.values():
        if method.endswith(".add"):
            out.append("ADD")
        elif method.endswith(".update") or method.endswith("productrows.set"):
            out.append("UPDATE")
    return out
