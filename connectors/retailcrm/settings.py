"""Settings of one RetailCRM account (API v5): address, key, site, request budget, defaults."""

from __future__ import annotations

import ipaddress
import zoneinfo
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    """https://ACCOUNT.retailcrm.ru; plain http only on loopback (the sandbox): the key travels in a header."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError("url must look like https://ACCOUNT.retailcrm.ru")
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)):
        return url.rstrip("/")
    raise ValueError("url must be https:// (plain http only on loopback, for the sandbox)")


class RetailCRMSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str                                    # https://ACCOUNT.retailcrm.ru (the API lives under /api/v5)
    api_key: SecretStr                          # Settings -> Integration -> API access keys
    # the site (shop) code the account's orders and customers belong to: required when the key reaches
    # several sites (the API refuses a write without it); reads are then narrowed to it too
    site: str | None = None
    rate: float = Field(10.0, gt=0)             # requests per second per key (RetailCRM allows 10)
    burst: float = Field(10.0, ge=1)            # requests that may go at once before the rate applies
    timeout: float = Field(30.0, gt=0)          # seconds per HTTP request
    order_method: str | None = None             # orderMethod code set on orders syncd creates (else the
                                                # account's API default)
    history_limit: Literal[20, 50, 100] = 100   # history records per call (the API takes 20, 50 or 100)
    # the syncd system an externalId that syncd did not make belongs to: RetailCRM's own shop modules
    # stamp an order with the shop order's id, so such an order is bound to that shop order, not copied
    origin_system: str = "shop"
    timezone: str = "Europe/Moscow"             # the account's time zone: the API prints local times
    # the code of the telephony integration module calls are uploaded for (write kind `call`,
    # connectors/retailcrm/calls.py): registered by the connector if the account has none with it
    telephony_module: str | None = None
    limit_retries: int = Field(5, ge=0)         # "Limit of requests per second exceeded" retries in the client
    transient_retries: int = Field(3, ge=0)     # 5xx/timeout retries of GETs in the client

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_url(v)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @field_validator("site", "order_method", "telephony_module")
    @classmethod
    def _code(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None
