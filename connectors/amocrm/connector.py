"""The amoCRM connector: one class made of parts — `streams` (reading), `writes` (leads, contacts,
companies), `activity` (tasks, notes), `calls` (a PBX's calls as call notes), `schema` (`describe()`),
`hooks` (webhooks); `client` is the transport with `auth` (tokens), `meta` the account's pipelines and
fields, `values` the encodings.

What the engine sees is amoCRM's own names, decoded: kinds `lead` (amoCRM's deals), `contact`,
`company`, `task`, `note`, `call` (written only); a lead's pipeline and status by name, custom fields
by their code (else cf_<id>), PHONE/EMAIL as lists of values.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from connectors.amocrm.activity import Activity
from connectors.amocrm.calls import Calls
from connectors.amocrm.client import AmoClient
from connectors.amocrm.hooks import Hooks
from connectors.amocrm.meta import STREAMS, Catalog
from connectors.amocrm.schema import Schema
from connectors.amocrm.settings import AmoCRMSettings
from connectors.amocrm.streams import Streams
from connectors.amocrm.writes import WRITES, Writes
from syncd.connector import BaseConnector, ConnectorContext, Health, StreamSpec
from syncd.errors import PermanentError, TransientError

DETAIL_PATHS = {"lead": "leads", "contact": "contacts", "company": "companies"}


class AmoCRMConnector(Streams, Writes, Activity, Calls, Schema, Hooks, BaseConnector):
    # contacts and companies are people's work (typed by managers): read them once through before
    # syncd makes any, so a known client is bound by e-mail or phone instead of duplicated
    read_before_create = frozenset({"contact", "company"})
    # a POST carries up to 250 records; 50 keeps one refused request's resend small
    write_part = 50

    def __init__(self, name: str, settings: AmoCRMSettings, ctx: ConnectorContext | None = None) -> None:
        self.name, self.settings, self.ctx = name, settings, ctx
        self.client = AmoClient(settings, name=name, ctx=ctx)
        self.catalog = Catalog(self.client, name)
        self.streams = {s: StreamSpec(s, (k,), f"amoCRM {s} changed since the cursor (updated_at|id)")
                        for s, k in STREAMS.items()}
        self.writes = WRITES
        self._lock = threading.Lock()
        self._taken: OrderedDict[tuple[str, int], int] = OrderedDict()
        self.write_retries = 3

    def record_url(self, kind: str, external_id: str) -> str | None:
        """Where a person opens the record in amoCRM."""
        path = DETAIL_PATHS.get(kind)
        return f"{self.settings.origin}/{path}/detail/{external_id}" if path else None

    def health(self) -> Health:
        try:
            acc = self.client.get("account") or {}
            me = self.client.get(f"users/{acc.get('current_user_id')}") if acc.get("current_user_id") else None
        except (TransientError, PermanentError) as exc:
            return Health(False, str(exc))
        who = (me or {}).get("name") or f"user {acc.get('current_user_id')}"
        return Health(True, f"{acc.get('subdomain')} as {who}")

    def close(self) -> None:
        self.client.close()
