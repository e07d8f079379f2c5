"""Settings of one Bitrix24 portal: an inbound webhook or an OAuth application, limits, events."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

LOOPBACK_NAMES = {"localhost"}


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)):
        return url
    raise ValueError(f"{what} must be https:// (plain http only on loopback, for the sandbox)")


class Bitrix24Settings(BaseModel):
    """`webhook_url` (inbound webhook) OR OAuth (`portal_url`, `client_id`, `client_secret`, tokens)."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: SecretStr | None = None        # https://PORTAL/rest/USER/CODE/ (the code is a secret)
    portal_url: str | None = None               # https://PORTAL (OAuth application)
    client_id: str | None = None
    client_secret: SecretStr | None = None
    access_token: SecretStr | None = None
    refresh_token: SecretStr | None = None
    oauth_url: str = "https://oauth.bitrix.info/oauth/token/"
    rate: float = Field(2.0, gt=0)              # requests per second the portal leaks (2; Enterprise 5)
    burst: float = Field(50.0, ge=1)            # the portal's bucket; ours is kept a little under it
    timeout: float = Field(30.0, gt=0)          # seconds per HTTP request
    ca_bundle: str | None = None                # PEM file of the CA to trust (a box portal behind a private
                                                # CA); default: the system's CAs or REQUESTS_CA_BUNDLE
    # verifies outbound events (auth[application_token]). The portal gives each outgoing webhook
    # handler (Developer resources -> Other -> Outgoing webhook) and each local application its
    # own token: list every one whose events are posted to /hooks/bitrix24/<system>
    application_token: SecretStr | list[SecretStr] | None = None

    def application_tokens(self) -> list[str]:
        t = self.application_token
        return [] if t is None else [x.get_secret_value() for x in (t if isinstance(t, list) else [t])]
    page_overlap_seconds: int = Field(300, ge=0)
    from_shop_field: str | None = None          # e.g. UF_CRM_FROM_SHOP (S3 "deal by phone")
    # ORIGINATOR_ID each source system's records carry here, by syncd system name (default: the
    # system's name). A deal syncd makes from shop order 1001 gets ORIGINATOR_ID = originators.shop
    # and ORIGIN_ID = 1001; a deal the shop's own CRM integration made before syncd, stamped the
    # same way, is adopted on the first sync instead of duplicated: set the value it uses here.
    originators: dict[str, str] = Field(default_factory=dict)
    # the product row that carries a deal's delivery when a mapping writes DELIVERY_PRICE (the
    # portal sums a deal from its rows: without the row the delivery is lost from the deal's sum)
    delivery_row: str = "Доставка"
    category_id: list[int] | None = None        # only deals of these pipelines (None = all)
    event_debounce: float = Field(1.0, ge=0)    # events within this many seconds trigger one pull
    # an event about a record syncd itself wrote less than `echo_window` seconds ago (its own echo)
    # is read after `echo_delay` seconds, with whatever else is due: a manager's edit in that window
    # reaches syncd late by at most `echo_delay`, and the echoes cost one request per `echo_delay`
    echo_window: float = Field(3.0, ge=0)       # an event syncd's write accounts for within it is an echo
    echo_delay: float = Field(10.0, ge=0)       # an echo is read this many seconds after it came
    # a PBX's call from a number the portal does not know: register it with CRM_CREATE, so the
    # portal makes the lead itself (without leads: a contact and a deal), as its own telephony does
    call_crm_create: bool = True
    limit_retries: int = Field(5, ge=0)         # QUERY_LIMIT_EXCEEDED retries inside the client
    transient_retries: int = Field(3, ge=0)     # 5xx/timeout retries of read-only calls in the client

    @model_validator(mode="after")
    def _auth(self) -> Bitrix24Settings:
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise ValueError(f"ca_bundle: no such file {self.ca_bundle!r}")
        if self.webhook_url is not None:
            url = check_url(self.webhook_url.get_secret_value(), "webhook_url")
            if "/rest/" not in url:
                raise ValueError("webhook_url must look like https://PORTAL/rest/USER_ID/CODE/")
            if self.portal_url or self.client_id:
                raise ValueError("give either webhook_url or OAuth settings (portal_url, client_id…), not both")
            return self
        missing = [k for k in ("portal_url", "client_id", "client_secret") if getattr(self, k) is None]
        if missing:
            raise ValueError("set webhook_url, or portal_url + client_id + client_secret + tokens "
                             f"(missing: {', '.join(missing)})")
        if self.access_token is None and self.refresh_token is None:
            raise ValueError("OAuth needs access_token and/or refresh_token")
        assert self.portal_url is not None
        check_url(self.portal_url, "portal_url")
        check_url(self.oauth_url, "oauth_url")
        return self

    @property
    def is_webhook(self) -> bool:
        return self.webhook_url is not None
