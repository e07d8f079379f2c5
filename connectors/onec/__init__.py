"""1C:Enterprise exchange endpoint: syncd serves the CommerceML 2 exchange 1C calls (S6, S7).

Registered as the `onec` connector type (entry point `connectors.onec:connector`). Push-based: it has
no streams to poll; 1C's `mode=import` uploads are delivered to the engine with `ctx.ingest`, and the
engine's writes (orders, counterparties) wait in the store for 1C's next `mode=query`.
"""

from __future__ import annotations

from typing import Any

from connectors.onec.connector import WRITES, OneCConnector
from connectors.onec.exchange import COOKIE, Exchange, clean_filename
from connectors.onec.settings import OneCSettings
from syncd.connector import ConnectorType


def factory(name: str, settings: OneCSettings, ctx: Any) -> OneCConnector:
    return OneCConnector(name, settings, ctx)


connector = ConnectorType(
    "onec", OneCSettings, factory,
    "1C:Enterprise 'exchange with a site' (CommerceML 2): serves GET/POST <path>?type=catalog|sale&mode=...; "
    "reads orders (payments, shipments, statuses, requisites), counterparties, catalog and offers; "
    "serves orders and counterparties to 1C's mode=query from the outbox", delivery="download")

__all__ = [
    "COOKIE",
    "WRITES",
    "Exchange",
    "OneCConnector",
    "OneCSettings",
    "clean_filename",
    "connector",
    "factory",
]
