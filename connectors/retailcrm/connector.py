"""The RetailCRM connector: one class made of parts — `streams` (history reads), `writes` (keyed by
externalId; tasks), `schema` (`describe()`); `records` holds the field names and codecs, `client` the
HTTP transport with the shared rate budget.

Kinds: ``order``, ``customer``, ``customer_corporate``, ``task``, ``call`` (uploaded, `calls`); field
names are RetailCRM's own,
with ``delivery_cost``, ``delivery_address``, ``items``, ``customer_id`` (orders), ``phones`` (a list
of numbers), ``INN``/``KPP``/``OGRN`` (a corporate customer's main company), ``custom_<code>``, and
``order_id``/``customer_id`` (tasks) flattened from the API's nested objects.
"""

from __future__ import annotations

from connectors.retailcrm.calls import Calls, call_kind
from connectors.retailcrm.client import RetailCRMClient
from connectors.retailcrm.records import KINDS, STREAMS, WRITES
from connectors.retailcrm.schema import Schema
from connectors.retailcrm.settings import RetailCRMSettings
from connectors.retailcrm.streams import Streams
from connectors.retailcrm.writes import Writes
from syncd.connector import BaseConnector, ConnectorContext, Health, LiveSchema, StreamSpec
from syncd.errors import PermanentError, TransientError


class RetailCRMConnector(Calls, Streams, Writes, Schema, BaseConnector):
    # customers are people's work (typed by managers, made from orders by RetailCRM itself): syncd reads
    # them once through before it makes any, so a known client is bound by e-mail or phone, not doubled
    # (orders are found by their externalId)
    read_before_create = frozenset({"customer", "customer_corporate"})
    # each write is one or two requests (look-up is grouped): 20 a part keeps a part within ~2 s of budget
    write_part = 20

    def __init__(self, name: str, settings: RetailCRMSettings, ctx: ConnectorContext | None = None) -> None:
        self.name, self.settings, self.ctx = name, settings, ctx
        host = settings.url.split("://", 1)[-1].split("/", 1)[0].lower()
        budget = getattr(ctx, "rate_budget", None)
        # one budget per account, whichever system or instance calls it (the limit is the key's)
        bucket = budget(f"retailcrm:{host}", settings.rate, settings.burst) if budget else None
        self.client = RetailCRMClient(settings, name=name, bucket=bucket)
        self.streams = {s: StreamSpec(s, (k,), f"RetailCRM {k} changes from {KINDS[k][0]}/history", 60.0)
                        for s, k in STREAMS.items()}
        self.writes = WRITES
        self.write_retries = 3

    def describe(self) -> LiveSchema:
        schema = super().describe()
        schema.kinds.update(call_kind())           # calls.py: uploaded to the calls history
        return schema

    def record_url(self, kind: str, external_id: str) -> str | None:
        """Where a person opens the record in RetailCRM."""
        if kind == "order":
            return f"{self.settings.url}/orders/{external_id}/edit"
        if kind == "customer":
            return f"{self.settings.url}/customers/{external_id}"
        if kind == "customer_corporate":
            return f"{self.settings.url}/customers-corporate/{external_id}"
        return None

    def health(self) -> Health:
        try:
            cred = self.client.get("/api/credentials") or {}
        except (TransientError, PermanentError) as exc:
            return Health(False, str(exc))
        sites = [str(s) for s in cred.get("sitesAvailable") or []]
        site = self.settings.site
        if site is None and len(sites) > 1:
            return Health(False, f"the API key reaches sites {', '.join(sites)}: set `site` to the one syncd "
                                 "writes to")
        if site is not None and site not in sites:
            return Health(False, f"site {site!r} is not reachable with this key (reaches: {', '.join(sites)})")
        return Health(True, f"{self.settings.url} site {site or (sites[0] if sites else '?')}")

    def close(self) -> None:
        self.client.close()
