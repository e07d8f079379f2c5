"""Settings of one mailbox (`[systems.NAME]` with `type = "imap"`): the server, what to read, and
where its mails go in the CRM (read by the routing stage, syncd/pipeline/route_mail.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

DEFAULT_EXCLUDE = ["mailer-daemon@*", "postmaster@*", "no-reply@*", "noreply@*", "no_reply@*",
                   "donotreply@*", "do-not-reply@*", "bounce*@*"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ImapSettings(BaseModel):
    """One mailbox. Credentials come from the environment (`password = "${MAIL_PASSWORD}"`)."""

    model_config = ConfigDict(extra="forbid")

    host: str                                   # the IMAP server (imap.example.ru)
    port: int | None = Field(None, ge=1, le=65535)   # default: 993 for implicit TLS, 143 otherwise
    # implicit: TLS from the first byte (port 993); starttls: plain connect, then STARTTLS before the
    # login (port 143); none: no TLS at all — refused unless the host is loopback (tests, a local relay)
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    ca_bundle: str | None = None                # PEM of the CA to trust (a private CA); default: the system's
    username: str                               # the login
    password: SecretStr                         # "${MAIL_PASSWORD}": never logged
    folders: list[str] = Field(default_factory=lambda: ["INBOX"], min_length=1)   # folders to read
    # the period read on the first start (and after a UIDVALIDITY change), as the CRM's own mail
    # connector does: mails older than this many days are not taken in
    first_days: float = Field(3.0, gt=0)
    # after a mail is committed to the store: nothing, set a flag (e.g. "$SyncdTaken" or "\\Seen"),
    # or move it to `move_to`. Mails are never deleted.
    after_commit: Literal["none", "flag", "move"] = "none"
    flag: str = "$SyncdTaken"                   # the flag for after_commit = "flag"
    move_to: str | None = None                  # the folder for after_commit = "move"
    idle: bool = True                           # wait for new mail with IDLE when the server can (else poll)
    idle_renew: float = Field(600.0, ge=10, le=1740)   # seconds before an IDLE is re-issued (RFC 2177: < 29 min)
    poll_interval: float = Field(60.0, gt=0)    # seconds between polls (also the fallback when IDLE drops)
    timeout: float = Field(60.0, gt=0)          # seconds per network operation
    batch: int = Field(200, ge=1, le=5000)      # mails fetched and committed per batch

    # -- what the mails become in the CRM (the routing stage) ----------------------------------------
    # an unknown sender's mail: a new lead, or a deal in `pipeline` at `stage` (CRMs run without leads)
    target: Literal["lead", "deal"] = "lead"
    pipeline: str | None = None                 # the deal's pipeline when target = "deal": name or CATEGORY_ID
    stage: str | None = None                    # the deal's first stage when target = "deal": name or STAGE_ID
    manager: str | None = None                  # responsible for new leads/deals: e-mail, «Имя Фамилия» or user id
    source: str = "EMAIL"                       # the lead's / deal's source: name («Электронная почта») or SOURCE_ID
    # senders whose mail is ignored (counted as skipped, never quarantined): glob patterns of
    # addresses; the defaults cover bounces and robots
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE))
    # the company's own domains: a mail from one of them is outgoing (its recipients are the
    # clients), a mail between two own addresses is ignored
    own_domains: list[str] = Field(default_factory=list)
    # the CRM's own address: a mail forwarded to it counts as from the original sender
    crm_address: str | None = None
    # deal stages that mean closed (a known client's mail goes to an open deal only); the part after
    # "C<n>:" is compared, so "WON" covers every pipeline's won stage
    closed_stages: list[str] = Field(default_factory=lambda: ["WON", "LOSE", "APOLOGY"])
    # attachments: metadata always (name, type, size); content only when `keep_attachments`, and
    # then only up to `max_attachment` bytes each
    keep_attachments: bool = False
    max_attachment: int = Field(10 * 2**20, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "ImapSettings":
        if self.tls == "none" and not _loopback(self.host):
            raise ValueError("tls = \"none\" sends the password in clear: allowed only for a loopback host "
                             "(use implicit or starttls)")
        if self.after_commit == "move" and not self.move_to:
            raise ValueError("after_commit = \"move\" needs move_to (the folder to move taken mails to)")
        if self.target == "deal" and not (self.pipeline is not None and self.stage):
            raise ValueError("target = \"deal\" needs pipeline and stage")
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise ValueError(f"ca_bundle: no such file {self.ca_bundle!r}")
        self.own_domains = [d.lower().lstrip("@") for d in self.own_domains]
        self.exclude = [p.lower() for p in self.exclude]
        if self.crm_address:
            self.crm_address = self.crm_address.lower()
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.tls == "implicit" else 143)
