"""Settings of one amoCRM account: a long-lived token or an OAuth integration, limits, webhooks."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> str:
    """https only; plain http is allowed on loopback (the sandbox), never over a network."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)):
        return url
    raise ValueError(f"{what} must be https:// (plain http only on loopback, for the sandbox)")


class AmoCRMSettings(BaseModel):
    """`token` (a long-lived token) OR OAuth (`client_id`, `client_secret`, `redirect_uri` and an
    `auth_code` and/or a `refresh_token`)."""

    model_config = ConfigDict(extra="forbid")

    # https://SUBDOMAIN.amocrm.ru (or .kommo.com): the account's own address, API and token endpoint
    base_url: str
    # a long-lived token (Settings -> Integrations -> your private integration -> Keys and access)
    token: SecretStr | None = None
    # OAuth integration: its ID, secret and the redirect URI registered with it
    client_id: str | None = None
    client_secret: SecretStr | None = None
    redirect_uri: str | None = None
    # the authorization code (valid 20 minutes, once): exchanged at the first start only; afterwards
    # the tokens live in syncd's state (rotated on every refresh) and this value is ignored
    auth_code: SecretStr | None = None
    # a refresh token to start from instead of a code (each works once: syncd keeps the new ones)
    refresh_token: SecretStr | None = None
    rate: float = Field(7.0, gt=0)               # requests per second (amoCRM allows 7 per integration)
    burst: float = Field(7.0, ge=1)              # requests allowed at once before the rate applies
    timeout: float = Field(30.0, gt=0)           # seconds per HTTP request
    # code of the text custom field (on leads, contacts and companies) that carries syncd's key: the
    # integrator creates it once per kind (Settings -> Fields), e.g. "Ключ syncd" with code SYNCD_KEY
    key_field: str = "SYNCD_KEY"
    # when set, webhooks must be registered as .../hooks/amocrm/<system>?token=<this value>
    webhook_secret: SecretStr | None = None
    page_limit: int = Field(250, ge=1, le=250)   # rows per list page (250 is amoCRM's maximum)
    # a poll re-reads this many seconds before its cursor (an edit saved late with an earlier
    # updated_at is not missed); rows already taken in unchanged are not handed over again
    overlap_seconds: int = Field(60, ge=0)
    retries: int = Field(3, ge=0)                # 429/5xx/connection retries of calls safe to resend

    @model_validator(mode="after")
    def _auth(self) -> AmoCRMSettings:
        check_url(self.base_url, "base_url")
        if urlsplit(self.base_url).path.strip("/"):
            raise ValueError("base_url is the account's address only: https://SUBDOMAIN.amocrm.ru")
        oauth = [k for k in ("client_id", "client_secret", "redirect_uri", "auth_code", "refresh_token")
                 if getattr(self, k) is not None]
        if self.token is not None:
            if oauth:
                raise ValueError(f"give either token or OAuth settings, not both (also set: {', '.join(oauth)})")
            return self
        missing = [k for k in ("client_id", "client_secret", "redirect_uri") if getattr(self, k) is None]
        if missing:
            raise ValueError("set token (a long-lived token), or client_id + client_secret + redirect_uri + "
                             f"auth_code/refresh_token (missing: {', '.join(missing)})")
        if self.auth_code is None and self.refresh_token is None:
            raise ValueError("OAuth needs auth_code (first start) and/or refresh_token")
        return self

    @property
    def is_oauth(self) -> bool:
        return self.token is None

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc.lower()

    @property
    def origin(self) -> str:
        return self.base_url.rstrip("/")
