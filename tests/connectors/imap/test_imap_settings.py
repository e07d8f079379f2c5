"""config.example.toml documents every mailbox key with the default the code has."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from connectors.imap import ImapSettings

ROOT = Path(__file__).resolve().parents[3]


def _example_section() -> str:
    text = (ROOT / "config.example.toml").read_text("utf-8")
    start = text.index("[systems.mail]")
    return text[start:text.index("\n# ----", start)]


def test_config_example_states_every_mailbox_key_with_its_true_default() -> None:
    found = {}
    for line in _example_section().splitlines():
        m = re.match(r"^#?\s*([a-z_]+) = (.+?)(?:\s+#.*)?$", line)
        if m:
            found[m.group(1)] = tomllib.loads(f"v = {m.group(2)}")["v"]
    missing = [k for k in ImapSettings.model_fields if k not in found]
    assert not missing, f"config.example.toml does not document {missing}"
    for name, info in ImapSettings.model_fields.items():
        if info.is_required() or name in ("port", "own_domains", "crm_address", "manager"):
            continue                       # example values, not defaults
        default = info.get_default(call_default_factory=True)
        if default is None:
            continue
        assert found[name] == default, f"{name}: the example says {found[name]!r}, the code {default!r}"
