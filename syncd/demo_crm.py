"""The demo's CRM when it is not Bitrix24 (`syncd demo --crm amocrm|retailcrm`): its sandbox, set up
as an integrator sets up the account for the shop (managers, the shop's stages, the fields the
example mapping names), the config block, the mapping, the jobs, and the rules as `syncd init`
writes them for that CRM with the account's managers in place of the example's.

Bitrix24 stays in syncd/demo.py with the parts only it has in the demo (the portal's story before
syncd, the mailbox's leads): the demo says so when another CRM runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CRMS = ("bitrix24", "amocrm", "retailcrm")
NAMES = {"bitrix24": "Bitrix24", "amocrm": "amoCRM", "retailcrm": "RetailCRM"}
STREAMS = {"amocrm": (("leads", "3s"), ("contacts", "5s"), ("companies", "10s")),
           "retailcrm": (("orders", "3s"), ("customers", "5s"))}


def with_managers(rules: str, managers: dict[str, str]) -> str:
    """rules.toml with its managers (the example's user ids "2", "3", "4") replaced by an account's."""
    def swap(line: str) -> str:
        if 'manager = "' not in line and "group = [" not in line:
            return line
        return re.sub(r'"(\d+)"', lambda q: f'"{managers.get(q.group(1), q.group(1))}"', line)

    return "\n".join(swap(line) for line in rules.splitlines()) + "\n"


@dataclass
class DemoCrm:
    type: str
    handle: Any
    managers: dict[str, str]                       # the example rules' ids -> the account's user ids
    settings: dict[str, Any] = field(default_factory=dict)
    address: str = ""                              # what the banner shows

    @property
    def name(self) -> str:
        return NAMES[self.type]

    def config_lines(self) -> list[str]:
        import json

        return (["[systems.crm]", f'type = "{self.type}"']
                + [f"{k} = {json.dumps(v)}" for k, v in self.settings.items()] + [""])

    def jobs(self) -> tuple[tuple[str, str], ...]:
        return STREAMS[self.type]

    def rules(self, maps: Path, state_dir: Path) -> str:
        """The rules file for this account, written beside the demo's database."""
        from syncd.init import mapping_text

        text = mapping_text("rules.toml", ["shop", self.type], (maps / "rules.toml").read_text(encoding="utf-8"))
        path = state_dir / "rules.toml"
        path.write_text(with_managers(text, self.managers), encoding="utf-8")
        return str(path)

    def users(self) -> dict[str, str]:
        """User id -> name, from the account (for the demo's summary)."""
        if self.type == "amocrm":
            return {str(u.id): u.name for u in self.handle.extra["state"].users.values()}
        return {str(u["id"]): f"{u.get('firstName', '')} {u.get('lastName', '')}".strip()
                for u in self.handle.extra["state"].users.values()}

    def stop(self) -> None:
        self.handle.stop()


def start(crm_type: str, *, rate_limit: bool = True) -> DemoCrm:
    if crm_type == "amocrm":
        from syncd.sandbox import amocrm
        from syncd.sandbox.amocrm.demo import seed_shop

        h = amocrm.start(rate_limit=rate_limit)
        ids = seed_shop(h.extra["state"])
        return DemoCrm("amocrm", h, {k: str(v) for k, v in ids["managers"].items()},
                       {"base_url": h.url, "token": str(h.extra["long_lived_token"])},
                       f"{h.url}/api/v4/leads   (its long-lived token is in the config)")
    if crm_type == "retailcrm":
        from syncd.sandbox import retailcrm
        from syncd.sandbox.retailcrm.demo import seed_shop as seed_retail

        h = retailcrm.start(rate_limit=rate_limit)
        ids = seed_retail(h.extra["state"])
        return DemoCrm("retailcrm", h, {k: str(v) for k, v in ids["managers"].items()},
                       {"url": h.url, "api_key": str(h.extra["api_key"]), "site": ids["site"]},
                       f"{h.url}/api/v5/orders   (its API key is in the config)")
    raise ValueError(f"unknown CRM {crm_type!r} (one of {', '.join(CRMS)})")
