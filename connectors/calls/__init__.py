"""A PBX's calls (issue 25): cloud PBX webhooks (Zadarma, or syncd's JSON), Asterisk AMI, and the
routing endpoint for the dialplan. Registered as the `calls` connector type
(`connectors.calls:connector`); settings: connectors/calls/settings.py; mapping: mappings/calls.toml.
"""

from __future__ import annotations

from typing import Any

from connectors.calls.connector import PATH, ROUTE_PATH, CallsConnector
from connectors.calls.settings import CallsSettings
from syncd.connector import ConnectorType


def factory(name: str, settings: CallsSettings, ctx: Any) -> CallsConnector:
    return CallsConnector(name, settings, ctx)


connector = ConnectorType(
    "calls", CallsSettings, factory,
    "a PBX's calls: POST /hooks/calls/<system> (Zadarma's signed NOTIFY_* webhooks, or syncd's JSON), "
    "Asterisk AMI (DialBegin, Cdr); each event stored before the 200 as one `call` record per call; "
    "GET /hooks/calls/route?caller= answers the caller's manager's extension from the store")

__all__ = ["PATH", "ROUTE_PATH", "CallsConnector", "CallsSettings", "connector", "factory"]
