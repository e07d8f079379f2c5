"""IMAP mailboxes (S5): mails -> `mail` records (and `vcard` contacts) for the routing stage.

Registered as the `imap` connector type (entry point `connectors.imap:connector`). Modules:
`settings` (one mailbox), `transport` (the IMAP session over imapclient), `parse` (raw mail ->
what the CRM needs, stdlib `email`), `connector` (cursor, batches, after-commit, IDLE).
"""

from __future__ import annotations

from typing import Any

from connectors.imap.connector import STREAM, ImapConnector
from connectors.imap.settings import ImapSettings
from syncd.connector import ConnectorType


def factory(name: str, settings: ImapSettings, ctx: Any) -> ImapConnector:
    return ImapConnector(name, settings, ctx)


connector = ConnectorType(
    "imap", ImapSettings, factory,
    "An IMAP mailbox (imapclient): stream `mail` reads its folders by UIDVALIDITY + UID (BODY.PEEK[], "
    "IDLE when the server can); mails become leads, deals or comments through the routing stage")

__all__ = ["STREAM", "ImapConnector", "ImapSettings", "connector", "factory"]
