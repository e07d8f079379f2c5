"""Settings of the `calls` connector: one PBX (a cloud PBX's webhooks and/or Asterisk's AMI).

    [systems.calls]
    type = "calls"
    vendor = "zadarma"                 # the webhook format of POST /hooks/calls/calls
    secret = "${ZADARMA_SECRET}"       # the key its Signature header is made with
    crm = "crm"                        # whose users (extension, presence) the routing endpoint reads
    # ami_host = "10.0.0.5"            # an on-premises Asterisk: its Manager Interface
    api_key = "${ZADARMA_API_KEY}"     # Zadarma's API: fetches each call's recording link
    api_secret = "${ZADARMA_API_SECRET}"

Every key is documented on `CallsSettings`; an unknown key stops the daemon at start.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class CallsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # the format of POST /hooks/calls/<system>: "zadarma" (its NOTIFY_* form posts) or "syncd"
    # (syncd's own JSON, docs in connectors/calls/events.py, for any PBX that can post JSON). A JSON
    # body is always read as syncd's format, whatever the vendor
    vendor: Literal["zadarma", "syncd"] = "zadarma"
    # the vendor's signing key (Zadarma: the API secret its Signature header is made with; syncd's
    # JSON: HMAC-SHA256 of the body, hex, in X-Syncd-Signature). Set, a post without a valid
    # signature is answered 403; unset, posts are not checked (a PBX on a private network only)
    secret: SecretStr | None = None
    # the time zone the PBX writes its local times in (Zadarma's call_start, Asterisk's CDR times)
    timezone: str = "Europe/Moscow"
    # the CRM system whose users give the routing endpoint each manager's extension and presence
    crm: str = "crm"
    # seconds the CRM's users (extensions, presence) are kept before they are read again, in the
    # background: the routing endpoint never waits on the CRM
    presence_ttl: float = Field(30.0, gt=0)
    # Asterisk Manager Interface: host and port of the PBX, the manager user and secret (manager.conf
    # with `read = call,cdr`). No host: no AMI connection
    ami_host: str | None = None
    ami_port: int = Field(5038, gt=0, lt=65536)     # manager.conf `port`
    ami_user: str | None = None                     # the manager.conf section's name
    ami_secret: SecretStr | None = None             # its `secret`
    # seconds between AMI reconnect attempts: doubled after each failure up to `ami_backoff_max`
    ami_backoff: float = Field(1.0, gt=0)
    ami_backoff_max: float = Field(60.0, gt=0)      # the longest pause between reconnects, seconds
    # Zadarma's API (my.zadarma.com/api/: "key" and "secret"): a NOTIFY_RECORD webhook names the
    # recording only by the call's ids; its link is asked for with GET /v1/pbx/record/request/, after
    # the webhook is answered, and stored as the call's `recording` (zadarma_api.py). Without both,
    # Zadarma's recordings are not fetched (logged once at start)
    api_key: str | None = None
    api_secret: SecretStr | None = None
    api_url: str = "https://api.zadarma.com"        # the API's origin (or https://api-sandbox.zadarma.com)
    # a failed recording-link request (or its store) is tried again this many times, the pause
    # doubling from `api_backoff` seconds up to `api_backoff_max`; then it is logged and dropped
    api_retries: int = Field(4, ge=0, le=20)
    api_backoff: float = Field(2.0, gt=0)
    api_backoff_max: float = Field(60.0, gt=0)
    # a CDR whose Source has at most this many digits was dialled from an extension (outgoing)
    extension_digits: int = Field(5, ge=1, le=9)

    @model_validator(mode="after")
    def _ami(self) -> CallsSettings:
        if self.ami_host and not (self.ami_user and self.ami_secret):
            raise ValueError("ami_host needs ami_user and ami_secret (manager.conf)")
        if bool(self.api_key) != bool(self.api_secret):
            raise ValueError("api_key and api_secret go together (Zadarma's API key and secret)")
        return self
