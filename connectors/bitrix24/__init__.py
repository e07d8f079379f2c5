"""Bitrix24 connector: deals, contacts, companies (with requisites), leads; tasks, comments, notifications.

Registered as the `bitrix24` connector type (entry point `connectors.bitrix24:connector`).
"""

from __future__ import annotations

from typing import Any

from connectors.bitrix24.client import Bitrix24Client, LeakyBucket, php_query
from connectors.bitrix24.connector import STREAMS, WRITES, Bitrix24Connector
from connectors.bitrix24.settings import Bitrix24Settings
from syncd.connector import ConnectorType


def factory(name: str, settings: Bitrix24Settings, ctx: Any) -> Bitrix24Connector:
    return Bitrix24Connector(name, settings, ctx)


connector = ConnectorType(
    "bitrix24", Bitrix24Settings, factory,
    "Bitrix24 REST (inbound webhook or OAuth app): streams deals/contacts/companies/leads by DATE_MODIFY; "
    "writes deal, contact, company (+requisites), lead, product, task, comment, notify; outbound events at "
    "POST /hooks/bitrix24/<system>")

__all__ = [
    "STREAMS",
    "WRITES",
    "Bitrix24Client",
    "Bitrix24Connector",
    "Bitrix24Settings",
    "LeakyBucket",
    "connector",
    "factory",
    "php_query",
]
