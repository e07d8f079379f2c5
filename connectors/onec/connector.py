"""The `onec` connector: push-based — 1C calls syncd's exchange endpoint; writes wait for `query`."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from syncd.commerceml import MOSCOW, CmlWriter, Counterparty
from syncd.commerceml.writer import counterparty_element, document_element
from syncd.connector import BaseConnector, ConnectorContext, Health, LiveSchema, Route, WriteOp, WriteResult
from syncd.errors import PermanentError

from . import convert
from .exchange import Exchange
from .queue import DocQueue
from .settings import OneCSettings

WRITES = frozenset({"order", "counterparty", "person"})


def jsonable(v: Any) -> Any:
    """Values as the store keeps them (JSON): Decimal -> str, datetime -> ISO, mappings -> dicts."""
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def default_spool(name: str, ctx: Any) -> str:
    rt = getattr(ctx, "rt", None)
    state_dir = getattr(getattr(getattr(rt, "settings", None), "daemon", None), "state_dir", None)
    return str(Path(state_dir or "/var/lib/syncd") / "onec" / name)


class OneCConnector(BaseConnector):
    """1C:Enterprise through its standard "exchange with a site" (CommerceML 2): syncd is the site."""

    def __init__(self, name: str, settings: OneCSettings, ctx: ConnectorContext) -> None:
        self.name = name
        self.settings = settings
        self.ctx = ctx
        self.spool_dir = settings.spool_dir or default_spool(name, ctx)
        Path(self.spool_dir).mkdir(parents=True, exist_ok=True)
        self.streams = {}
        self.writes = WRITES
        self.queue = DocQueue(ctx)
        self.exchange = Exchange(self)

    # -- connector protocol ---------------------------------------------------------------------
    def http_routes(self) -> Sequence[Route]:
        return (Route(self.settings.path, self.exchange.endpoint, ("GET", "POST")),)

    def health(self) -> Health:
        last = self.ctx.state_get("last_exchange")
        when = (dt.datetime.fromtimestamp(last, dt.UTC).isoformat(timespec="seconds")
                if last else "never")
        return Health(True, f"{self.queue.size()} documents waiting for 1C; last exchange {when}")

    def describe(self) -> LiveSchema:
        # A CommerceML document carries free-form requisites (ЗначенияРеквизитов): any name a
        # mapping writes is valid to 1C, so there is no field list to check mappings against.
        return LiveSchema()

    def write(self, op: WriteOp) -> WriteResult:
        """Queue the document for 1C's next `mode=query`; it stays pending until 1C's `success`."""
        if op.kind not in WRITES:
            raise PermanentError(f"1C exchange cannot send {op.kind!r} documents", connector=self.name,
                                 op_id=op.op_id)
        ext = op.external_id or op.external_key
        fields = jsonable(dict(op.fields))
        if op.op == "delete":
            fields = {"ПометкаУдаления": "true"}
        if op.kind == "order" and op.op == "create":
            fields.setdefault("Номер", ext)
        self.queue.put(ext, op.kind, fields, op.op_id)
        return WriteResult(ext, dict(op.fields))

    # -- query ----------------------------------------------------------------------------------
    def render_query(self) -> tuple[bytes, dict[str, int]]:
        """The orders XML for `mode=query` and the {Ид: rev} it contains."""
        pending = self.queue.pending()
        served: dict[str, int] = {}
        orders = [(e, d) for e, d in pending if d["kind"] == "order"]
        embedded: set[str] = set()
        buf = io.BytesIO()
        enc = self.settings.encoding
        with CmlWriter(buf, encoding=enc, bom=enc == "utf-8", schema_version=self.settings.version) as w:
            for ext, doc in orders:
                cps = []
                for key in ("Контрагент", "Покупатель"):
                    cid = doc["fields"].get(key)
                    if not cid:
                        continue
                    cdoc = self.queue.get(str(cid))
                    if cdoc is not None:
                        cps.append(convert.counterparty_from_fields(str(cid), cdoc["fields"], cdoc["kind"]))
                        embedded.add(str(cid))
                        if cdoc["rev"] > cdoc["acked"]:
                            served[str(cid)] = cdoc["rev"]
                    else:
                        cps.append(Counterparty(id=str(cid), role="Покупатель"))
                el = document_element(convert.order_from_fields(ext, doc["fields"], cps), MOSCOW)
                if self.settings.container:
                    with w.section("Контейнер"):
                        w.write(el)
                else:
                    w.write(el)
                served[ext] = doc["rev"]
            # counterparties alone: edits of ones 1C already has (S7); new ones wait for their first order
            loose = [(e, d) for e, d in pending if d["kind"] != "order" and e not in embedded
                     and (d["acked"] > 0 or self.settings.send_all_counterparties)]
            if loose:
                with w.section("Контрагенты"):
                    for ext, doc in loose:
                        w.write(counterparty_element(convert.counterparty_from_fields(ext, doc["fields"],
                                                                                      doc["kind"])))
                        served[ext] = doc["rev"]
        return buf.getvalue(), served
