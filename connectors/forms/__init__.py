"""Site forms (S4): `POST /hooks/forms/<form>` turns a post into a CRM lead (or a deal).

Registered as the `forms` connector type (entry point `connectors.forms:connector`). Push-based:
no streams to poll, nothing written to it; a post is committed to the store (the CRM write follows
from the outbox) before it is answered. Settings: connectors/forms/settings.py.
"""

from __future__ import annotations

from typing import Any

from connectors.forms.connector import PATH, TOKEN_HEADER, FormsConnector, form_url
from connectors.forms.settings import FormSettings, FormsSettings
from syncd.connector import ConnectorType


def factory(name: str, settings: FormsSettings, ctx: Any) -> FormsConnector:
    return FormsConnector(name, settings, ctx)


connector = ConnectorType(
    "forms", FormsSettings, factory,
    "site forms: POST /hooks/forms/<form> (urlencoded, multipart or JSON) with a per-form token "
    "(X-Syncd-Token or ?token=) and optional HMAC-SHA256 signature; each post becomes a lead (or a deal "
    "in a pipeline), answered 200 with its id once committed; honeypot, rate limit, duplicate window, "
    "size limit, consent, review mode")

__all__ = ["PATH", "TOKEN_HEADER", "FormSettings", "FormsConnector", "FormsSettings", "connector",
           "factory", "form_url"]
