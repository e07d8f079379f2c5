"""The onec settings as an integrator reads them: config.example.toml states every key and its default."""

from __future__ import annotations

import re
import tomllib

import pytest
from onechelpers import ROOT

from connectors.onec import OneCSettings


def _example_section() -> str:
    text = (ROOT / "config.example.toml").read_text("utf-8")
    start = text.index("[systems.onec]")
    return text[start:text.index("\n# ----", start)]


def test_config_example_states_every_onec_key_with_its_true_default() -> None:
    found = {}
    for line in _example_section().splitlines():
        m = re.match(r"^#?\s*([a-z_]+) = (.+?)(?:\s+#.*)?$", line)
        if m:
            found[m.group(1)] = tomllib.loads(f"v = {m.group(2)}")["v"]
    missing = [k for k in OneCSettings.model_fields if k not in found]
    assert not missing, f"config.example.toml does not document {missing}"
    for name, info in OneCSettings.model_fields.items():
        if info.is_required():
            continue
        default = info.get_default(call_default_factory=True)
        if default in (None, {}):
            continue                      # an example value, not a default
        assert found[name] == default, f"{name}: the example says {found[name]!r}, the code {default!r}"
    assert found["lock_timeout"] == 120.0 and found["file_limit"] == 2 * 1024 * 1024


def test_logins_and_paths_are_checked() -> None:
    s = OneCSettings(login="onec", password="pw", users={"ut": "pw2"})
    assert s.credentials() == {"onec": "pw", "ut": "pw2"}
    assert s.aliases == ["/bitrix/admin/1c_exchange.php"]
    with pytest.raises(ValueError, match="already `login`"):
        OneCSettings(login="onec", password="pw", users={"onec": "x"})
    with pytest.raises(ValueError, match="':'"):
        OneCSettings(login="on:ec", password="pw")
    with pytest.raises(ValueError, match="path"):
        OneCSettings(login="onec", password="pw", path="/1c/exchange?x=1")
