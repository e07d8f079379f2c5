"""amoCRM (API v4) connector: leads, contacts, companies; tasks and notes.

Registered as the `amocrm` connector type (entry point `connectors.amocrm:connector`).
"""

from __future__ import annotations

from typing import Any

from connectors.amocrm.client import AmoClient, TokenBucket
from connectors.amocrm.connector import AmoCRMConnector
from connectors.amocrm.settings import AmoCRMSettings
from syncd.connector import ConnectorType


def factory(name: str, settings: AmoCRMSettings, ctx: Any) -> AmoCRMConnector:
    return AmoCRMConnector(name, settings, ctx)


connector = ConnectorType(
    "amocrm", AmoCRMSettings, factory,
    "amoCRM API v4 (long-lived token or OAuth with single-use refresh tokens kept in syncd's state): streams "
    "leads/contacts/companies by updated_at; writes lead, contact, company (key in a custom field, SYNCD_KEY), "
    "task, note; webhooks at POST /hooks/amocrm/<system>")

__all__ = ["AmoCRMConnector", "AmoCRMSettings", "AmoClient", "TokenBucket", "connector", "factory"]
