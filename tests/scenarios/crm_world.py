"""One integration per CRM for the parametrised scenarios: the sandbox shop, a CRM sandbox set up as an
integrator would (tests/scenarios/crms.py), the 1C client, and syncd as the daemon runs it — a
Runtime from a config file with the example mappings (rules.toml as `syncd init` writes it for
that CRM), its HTTP app served for 1C's exchange and the site's forms. Time moves by passes
(`sync`) and by the rules' tick with a given clock, never by sleeping.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import requests
from crms import MAPPINGS, Crm, rules_text, start
from scenario_env import PRODUCTS, Shop

from syncd.config import load_settings
from syncd.daemon.runtime import Runtime
from syncd.store import utcnow

ONEC_PASSWORD = "pw-1c-scenarios"
FORM_TOKEN = "form-token-scenarios"


class CrmWorld:
    def __init__(self, tmp: Path, crm_type: str) -> None:
        from syncd.sandbox import shop

        self.tmp = tmp
        self.shop_h = shop.start()
        self.shop = Shop(self.shop_h)
        for p in PRODUCTS:
            self.shop.add_product(*p)
        self.crm: Crm = start(crm_type)
        self.rt: Runtime | None = None
        self.server: Any = None
        self.onec_client: Any = None

    # -- syncd -----------------------------------------------------------------------------------
    def config(self) -> Path:
        rules = self.tmp / "rules.toml"
        rules.write_text(rules_text(self.crm.type, self.crm.managers), encoding="utf-8")
        maps = [str(MAPPINGS / n) for n in ("sync.toml", "shop.toml", "onec.toml", "forms.toml")]
        maps += [self.crm.mapping(), str(rules)]
        lines = ["[daemon]", f'database_url = "sqlite:///{self.tmp}/syncd.db"', 'listen = "127.0.0.1:0"',
                 f"mappings = {json.dumps(maps)}", f'state_dir = "{self.tmp}"', "",
                 "[push]", "base_delay = 0.0", "",
                 "[systems.shop]", 'type = "shop"', f'url = "{self.shop_h.extra["exchange_url"]}"',
                 f'login = "{self.shop_h.extra["login"]}"', f'password = "{self.shop_h.extra["password"]}"', "",
                 "[systems.onec]", 'type = "onec"', 'login = "onec"', f'password = "{ONEC_PASSWORD}"', "",
                 "[systems.forms]", 'type = "forms"', "",
                 # a form that makes deals (no-leads mode): the same on every CRM, in canonical ids
                 "[systems.forms.form.order]", f'token = "{FORM_TOKEN}"', 'target = "deal"',
                 'pipeline = "0"', 'stage = "NEW"', 'title = "Заявка с сайта"',
                 'fields = { name = "lead.name", phone = "lead.phone", email = "lead.email", '
                 'message = "lead.comment" }', 'required = ["phone"]', ""]
        lines += self.crm.config_lines() + [""]
        path = self.tmp / "config.toml"
        path.write_text("\n".join(lines), encoding="utf-8")
        return path

    def runtime(self) -> Runtime:
        if self.rt is None:
            from syncd.daemon.http import create_app
            from syncd.sandbox.server import serve_in_thread

            self.rt = Runtime(load_settings(self.config()))
            self.server = serve_in_thread(create_app(self.rt))
        return self.rt

    def sync(self, rounds: int = 8, now: dt.datetime | None = None) -> None:
        """Passes (pull every stream, push, tick the rules) until one changes nothing."""
        rt = self.runtime()
        for _ in range(rounds):
            c = rt.sync_once()
            t = rt.tick_rules(now=now or utcnow())
            if t:
                rt.push_all()
            if not (c.created or c.updated or c.pushed or c.planned or t):
                return
        raise AssertionError(f"no quiescence after {rounds} passes: {c.as_dict()}; "
                             f"dead: {self.rt.store.list_dead() if self.rt else None}")

    def onec(self) -> Any:
        if self.onec_client is None:
            from syncd.sandbox.onec import OneCClient

            self.runtime()
            self.onec_client = OneCClient(self.server.url + "/1c/exchange", "onec", ONEC_PASSWORD)
        return self.onec_client

    def post_form(self, **fields: str) -> requests.Response:
        self.runtime()
        return requests.post(f"{self.server.url}/hooks/forms/order", data=fields,
                             headers={"X-Syncd-Token": FORM_TOKEN}, timeout=30)

    def audit(self) -> None:
        """`syncd audit`: every bound record read back through each system's API agrees with syncd."""
        report = self.runtime().audit()
        drift = [d.as_dict() for d in report.drift]
        assert drift == [], f"{self.crm.type}: the systems are out of step: {drift[:5]}"
        assert report.checked.get("crm"), f"{self.crm.type}: the audit read nothing back from the CRM"

    def trace(self, query: str) -> dict[str, Any]:
        """`syncd trace QUERY --json` as a user runs it."""
        from click.testing import CliRunner

        from syncd.cli import main

        res = CliRunner().invoke(main, ["-c", str(self.tmp / "config.toml"), "trace", query, "--json"])
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    def close(self) -> None:
        if self.onec_client is not None:
            self.onec_client.close()
        if self.server is not None:
            self.server.stop()
        if self.rt is not None:
            self.rt.close()
        self.shop_h.stop()
        self.crm.stop()
