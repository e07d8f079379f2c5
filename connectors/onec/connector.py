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
    """1C:Enterprise through its standard "exchange with a site" (CommerceML 2): syncd is the site.

    Writes to 1C are outbox rows like any other write, but 1C fetches them: `mode=query` claims the
    ready rows (each decided at that moment: the whole document from the golden record), serves
    them as one XML, and 1C's `success` settles exactly that claim. A query 1C never confirms is
    given back (or lapses) and served again; a `success` for a claim another instance took over
    settles nothing (the claim is fenced).
    """

    natural_ids = True                 # a 1C Ид (a GUID) is kept as it is elsewhere
    delivery = "download"              # 1C downloads its documents at `mode=query`
    whole_records = True               # a CommerceML document is always the whole record
    keys_are_ids = True                # a document syncd makes is known to 1C by the Ид syncd gave it
    embeds_links = True                # an order carries its counterparty
    unreadable_why = ("1C sends its documents to syncd and downloads syncd's: nothing can be read back "
                      "from it on demand")

    def __init__(self, name: str, settings: OneCSettings, ctx: ConnectorContext) -> None:
        self.name = name
        self.settings = settings
        self.ctx = ctx
        self.spool_dir = settings.spool_dir or default_spool(name, ctx)
        Path(self.spool_dir).mkdir(parents=True, exist_ok=True)
        self.streams = {}
        self.writes = WRITES
        # a new customer reaches 1C inside its first order, unless told to send every one
        self.embedded_kinds = frozenset() if settings.send_all_counterparties else frozenset({"counterparty", "person"})
        self.exchange = Exchange(self)
        # the default alias yields to another 1C integration that also serves it
        self.optional_paths = frozenset() if "aliases" in settings.model_fields_set else frozenset(settings.aliases)

    # -- connector protocol ---------------------------------------------------------------------
    def http_routes(self) -> Sequence[Route]:
        # its own path and the aliases 1C nodes are commonly configured with (a 1C-Bitrix site's)
        return tuple(Route(p, self.exchange.endpoint, ("GET", "POST"))
                     for p in (self.settings.path, *self.settings.aliases))

    def health(self) -> Health:
        last = self.ctx.state_get("last_exchange")
        when = (dt.datetime.fromtimestamp(last, dt.UTC).isoformat(timespec="seconds")
                if last else "never")
        return Health(True, f"last exchange {when}")

    def describe(self) -> LiveSchema:
        # A CommerceML document carries free-form requisites (ЗначенияРеквизитов): any name a
        # mapping writes is valid to 1C, so there is no field list to check mappings against.
        return LiveSchema()

    def write(self, op: WriteOp) -> WriteResult:
        raise PermanentError("1C fetches its documents at mode=query; nothing is pushed to it",
                             connector=self.name, op_id=op.op_id)

    # -- what 1C knows by Ид (for payments and shipments that name their order) -------------------
    def remember(self, ext: str, kind: str, number: str | None) -> None:
        self.ctx.state_set(f"kind:{ext}", kind)
        if kind == "order" and number:
            self.ctx.state_set(f"number:{number}", ext)

    def kind_of(self, ext: str) -> str | None:
        return self.ctx.state_get(f"kind:{ext}")

    def by_number(self, number: str) -> str | None:
        return self.ctx.state_get(f"number:{number}")

    # -- query ----------------------------------------------------------------------------------
    def render_query(self) -> tuple[bytes, str | None, list[str]]:
        """The orders XML for `mode=query`: (xml, claim token, op ids served)."""
        claim = self.ctx.take_writes()
        served: list[str] = []
        by_ext = {(op.external_id or op.external_key): op for op in claim.ops if op.kind != "order"}
        embedded: set[str] = set()
        buf = io.BytesIO()
        enc = self.settings.encoding
        with CmlWriter(buf, encoding=enc, bom=enc == "utf-8", schema_version=self.settings.version) as w:
            for op in claim.ops:
                if op.kind != "order":
                    continue
                ext = op.external_id or op.external_key
                fields = jsonable(dict(op.full))
                cps = []
                for key in ("Контрагент", "Покупатель"):
                    cid = fields.get(key)
                    if not cid:
                        continue
                    cid = str(cid)
                    own = by_ext.get(cid)
                    kind, cfields = (own.kind, dict(own.full)) if own is not None else op.links.get(cid, (None, {}))
                    if kind is None:
                        cps.append(Counterparty(id=cid, role="Покупатель"))
                        continue
                    cps.append(convert.counterparty_from_fields(cid, jsonable(cfields), kind))
                    self.remember(cid, kind, None)
                    if own is not None and cid not in embedded:
                        embedded.add(cid)
                        served.append(own.op_id)
                if op.op == "create":
                    fields.setdefault("Номер", ext)
                el = document_element(convert.order_from_fields(ext, fields, cps), MOSCOW)
                if self.settings.container:
                    with w.section("Контейнер"):
                        w.write(el)
                else:
                    w.write(el)
                self.remember(ext, "order", str(fields.get("Номер") or ext))
                served.append(op.op_id)
            # counterparties alone: edits of ones 1C already has (S7); new ones travel in their first
            # order (their creates are not even claimed, see embedded_kinds)
            loose = [op for op in claim.ops if op.kind != "order" and (op.external_id or op.external_key) not in embedded]
            if loose:
                with w.section("Контрагенты"):
                    for op in loose:
                        ext = op.external_id or op.external_key
                        w.write(counterparty_element(convert.counterparty_from_fields(ext, jsonable(dict(op.full)),
                                                                                      op.kind)))
                        self.remember(ext, op.kind, None)
                        served.append(op.op_id)
        return buf.getvalue(), claim.token, served

    def confirm_query(self, token: str, served: Sequence[str]) -> Any:
        """1C's `success`: every document of that query is in 1C."""
        results = {op_id: WriteResult("") for op_id in served}
        return self.ctx.settle_writes(token, results)
