"""The demo's site form (S4): a "callback" form served by the demo daemon, and its address.

Kept apart from syncd/demo.py so the demo's other parts (the mailbox) change without touching it:
the demo adds `config_lines()` to its config, `mapping_file()` to its mappings, and prints
`announce()`. The token is made per run and printed with the URL, as the site owner would paste it.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

FORM = "callback"
TOKEN = "demo-form-" + secrets.token_hex(6)


def mapping_file(maps: Path) -> list[str]:
    path = maps / "forms.toml"
    return [str(path)] if path.exists() else []


def config_lines(*, deal: bool = False) -> list[str]:
    """[systems.forms] with one form: name, phone, e-mail and message; the phone is required.
    `deal`: the post becomes a deal in the first stage of the main pipeline (a CRM without leads;
    canonical ids, which every CRM's mapping translates)."""
    fields = {"name": "lead.name", "phone": "lead.phone", "email": "lead.email", "message": "lead.comment"}
    lines = ["[systems.forms]", 'type = "forms"', "", f"[systems.forms.form.{FORM}]",
             f'token = "{TOKEN}"',
             "fields = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in fields.items()) + " }",
             'required = ["phone"]', 'title = "Обратный звонок"', 'honeypot = "website"']
    return lines + (['target = "deal"', 'pipeline = "0"', 'stage = "NEW"'] if deal else []) + [""]


def announce(url: str) -> list[str]:
    """What the demo prints: the form's URL with its token, and a post to try."""
    from connectors.forms import form_url

    address = form_url(url, FORM, TOKEN)
    return [f"  site form        {address}",
            f"                   try: curl --data-urlencode name=Иван --data-urlencode phone=+79031234567 "
            f"'{address}'"]
