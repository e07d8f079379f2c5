"""Shop connector: syncd as the 1C side of a shop's CommerceML exchange (`1c_exchange.php`).

Registered as the `shop` connector type (entry point `connectors.shop:connector`). See
`connectors.shop.connector` for streams, kinds and field names, and `mappings/shop.toml` for a mapping.
"""

from __future__ import annotations

from typing import Any

from connectors.shop.client import ExchangeClient, parse_status
from connectors.shop.connector import STREAMS, WRITES, ShopConnector
from connectors.shop.settings import ShopSettings
from syncd.connector import ConnectorType


def factory(name: str, settings: ShopSettings, ctx: Any) -> ShopConnector:
    return ShopConnector(name, settings, ctx)


connector = ConnectorType(
    "shop", ShopSettings, factory,
    "online shop over the CommerceML exchange (1C-Bitrix 1c_exchange.php and compatible): stream `orders` "
    "(user, company, product, order); writes order, user, company")

__all__ = [
    "STREAMS",
    "WRITES",
    "ExchangeClient",
    "ShopConnector",
    "ShopSettings",
    "connector",
    "factory",
    "parse_status",
]
