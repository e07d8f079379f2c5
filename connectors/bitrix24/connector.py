"""The Bitrix24 connector: streams (deals, contacts, companies, leads), writes, live schema, events.

One class made of parts, one module per idea: `streams` (reading), `requisites` (a company's
requisites, bank details, legal address), `writes` (CRM records and products), `side_effects`
(tasks, timeline comments, notices), `calls` (a PBX's calls through the portal's external
telephony), `schema` (`describe()`), `events` (the outbound-event
webhook); `values` holds the names and value helpers they share, `client` the REST transport.

What the engine sees of a record is the portal's own field names with values as the portal
returns them (strings), plus pseudo-fields the portal keeps elsewhere:

- deals: ``PRODUCT_ROWS`` (``crm.deal.productrows.get``), a list of row dicts;
- companies: ``RQ_INN``, ``RQ_KPP``, ``RQ_OGRN``, ``RQ_COMPANY_FULL_NAME``, ``RQ_DIRECTOR`` (first
  requisite), ``BANK_DETAILS`` (its bank details: ``RQ_BIK``, ``RQ_ACC_NUM``, ``RQ_COR_ACC_NUM``,
  ``RQ_BANK_NAME``, ``RQ_BANK_ADDR``), ``ADDRESS_LEGAL`` (its legal address, TYPE_ID 6, as text);
- multi-fields ``PHONE``/``EMAIL``/``WEB``/``IM`` as lists of their values (strings), so the
  `multifield` and `first` transforms both apply.

Writes stamp ``ORIGINATOR_ID = "syncd"`` and ``ORIGIN_ID = op.external_key`` on create and look the
key up first, so a create retried after a lost answer returns the existing record (guarantee 3).
Side effects have keys too: a task is found by title, responsible and CRM bindings; a timeline
comment by its owner, exact text and our user (the portal gives comments no external id); a
notice carries ``TAG`` = the op's external key, so a repeat replaces it on the user's screen.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from connectors.bitrix24.calls import Calls
from connectors.bitrix24.client import Bitrix24Client, safe_burst
from connectors.bitrix24.events import Events
from connectors.bitrix24.requisites import Requisites
from connectors.bitrix24.schema import Schema
from connectors.bitrix24.settings import Bitrix24Settings
from connectors.bitrix24.side_effects import SideEffects
from connectors.bitrix24.streams import Streams
from connectors.bitrix24.values import (
    STREAMS,
    WRITES,
    merge_multi,
    multi_items,
    norm_multi,
    parse_bx_time,
    parse_cursor,
    utc_version,
)
from connectors.bitrix24.writes import Writes
from syncd.connector import BaseConnector, ConnectorContext, Health, StreamSpec
from syncd.errors import PermanentError, TransientError


class Bitrix24Connector(Streams, Requisites, Writes, SideEffects, Calls, Schema, Events, BaseConnector):
    # a portal's contacts and companies are people's work (typed by managers, made by the shop's
    # module): syncd reads them once through before it makes any, so a known client is bound by
    # e-mail, phone or ИНН instead of getting a second contact (deals are found by their stamp)
    read_before_create = frozenset({"contact", "company"})
    # a batch call carries 50 commands: 50 contacts or notices fill one, 50 deals with their rows two
    # (25 a part left contacts' and notices' calls half empty: 2,000 orders took 175 write calls)
    write_part = 50
    # a deal a manager made (by phone) names the shop order syncd made from it (ORIGINATOR_ID/
    # ORIGIN_ID). Contacts and companies are not: their counterparts are found by e-mail, phone, ИНН
    names_sources = frozenset({"deal"})

    def __init__(self, name: str, settings: Bitrix24Settings, ctx: ConnectorContext | None = None) -> None:
        self.name, self.settings, self.ctx = name, settings, ctx
        budget = getattr(ctx, "rate_budget", None)
        self.client = Bitrix24Client(settings, name=name,
                                     state_get=ctx.state_get if ctx is not None else None,
                                     state_set=ctx.state_set if ctx is not None else None,
                                     # one budget per portal, whichever system or instance writes to it
                                     bucket=budget(f"bitrix24:{_portal(settings)}", settings.rate,
                                                   safe_burst(settings.burst)) if budget else None)
        self.streams = {s: StreamSpec(s, (k,), f"Bitrix24 {k}s changed since the cursor (DATE_MODIFY|ID)")
                        for s, k in STREAMS.items()}
        self.writes = WRITES
        self._preset: str | None = None
        self._me: str | None = None
        self._dirty_requisites: set[str] = set()
        self._lock = threading.Lock()
        self._taken: OrderedDict[tuple[str, str], Any] = OrderedDict()   # see Streams.read
        # portal events (see Events): armed timers, IDs the events named, syncd's own recent writes
        self._debounce: dict[str, tuple[float, threading.Timer]] = {}
        self._event_ids: dict[str, list[list[Any]]] = {}
        self._scan_due: set[str] = set()
        self._targeted: set[str] = set()
        self._scanned: set[str] = set()
        self._wrote: OrderedDict[tuple[str, str], list[tuple[str, float]]] = OrderedDict()
        self.write_retries = 3

    def record_url(self, kind: str, external_id: str) -> str | None:
        """Where a person opens the record in the portal (deals, contacts, companies, leads)."""
        if kind not in ("deal", "contact", "company", "lead"):
            return None
        return f"https://{self.client.host}/crm/{kind}/details/{external_id}/"

    def health(self) -> Health:
        try:
            me = self.client.call("profile").result or {}
        except (TransientError, PermanentError) as exc:
            return Health(False, str(exc))
        who = " ".join(str(me.get(k) or "") for k in ("NAME", "LAST_NAME")).strip()
        return Health(True, f"{self.client.host} as user {me.get('ID')}{' (' + who + ')' if who else ''}")

    def close(self) -> None:
        with self._lock:
            timers = [t for _, t in self._debounce.values()]
            self._debounce.clear()
        for t in timers:
            t.cancel()
        self.client.close()


__all__ = ["STREAMS", "WRITES", "Bitrix24Connector", "merge_multi", "multi_items", "norm_multi", "parse_bx_time",
           "parse_cursor", "utc_version"]


def _portal(settings: Bitrix24Settings) -> str:
    """The portal's host: its budget is one, whatever webhook or application calls it."""
    url = settings.webhook_url.get_secret_value() if settings.webhook_url else (settings.portal_url or "")
    return urlsplit(url).netloc.lower()
