"""RetailCRM (API v5) connector: orders, customers, corporate customers (read from history), tasks.

Registered as the `retailcrm` connector type (entry point `connectors.retailcrm:connector`).
"""

from __future__ import annotations

from typing import Any

from connectors.retailcrm.client import RetailCRMClient, TokenBucket, php_params
from connectors.retailcrm.connector import RetailCRMConnector
from connectors.retailcrm.records import KINDS, STREAMS, WRITES
from connectors.retailcrm.settings import RetailCRMSettings
from syncd.connector import ConnectorType


def factory(name: str, settings: RetailCRMSettings, ctx: Any) -> RetailCRMConnector:
    return RetailCRMConnector(name, settings, ctx)


connector = ConnectorType(
    "retailcrm", RetailCRMSettings, factory,
    "RetailCRM API v5 (API key): streams orders/customers/customers_corporate from history (syncd's own "
    "writes skipped); writes order, customer, customer_corporate keyed by externalId, and task")

__all__ = ["KINDS", "STREAMS", "WRITES", "RetailCRMClient", "RetailCRMConnector", "RetailCRMSettings",
           "TokenBucket", "connector", "factory", "php_params"]
