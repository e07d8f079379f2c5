"""`syncd check` with a PBX: the CRM's managers must have extensions (Bitrix24's UF_PHONE_INNER) for a
returning client's call to reach his manager; `syncd init` writes the PBX and messenger blocks."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import requests
from click.testing import CliRunner

from syncd.cli import main

REPO = Path(__file__).resolve().parents[3]


def _check(cfg: Path, env: Path) -> list[dict[str, object]]:
    r = CliRunner().invoke(main, ["-c", str(cfg), "--env-file", str(env), "--json", "check"])
    return json.loads(r.stdout)


def test_init_then_check_names_managers_without_an_extension_and_one_extension_twice(tmp_path: Path) -> None:
    from syncd.sandbox import bitrix24
    from syncd.sandbox.bitrix24 import seed_demo

    etc = tmp_path / "etc"
    r = CliRunner().invoke(main, ["init", str(etc), "--systems", "bitrix24,calls,telegram,vk",
                                  "--state-dir", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    cfg = etc / "config.toml"
    doc = tomllib.loads(cfg.read_text(encoding="utf-8"))
    assert sorted(doc["systems"]) == ["calls", "crm", "telegram", "vk"]
    assert doc["daemon"]["mappings"] == ["mappings/sync.toml", "mappings/bitrix24.toml", "mappings/rules.toml",
                                         "mappings/calls.toml", "mappings/messengers.toml"]
    env_text = (etc / "env").read_text(encoding="utf-8")
    assert all(f"# {k}=" in env_text for k in ("PBX_SECRET", "TG_BOT_TOKEN", "TG_SECRET", "VK_SECRET", "VK_TOKEN"))
    h = bitrix24.start(rate_limit=False)
    try:
        seed_demo(h.extra["state"], deals=False)           # managers 2, 3, 4
        # only the PBX against the portal: the messengers are not this test's
        text = cfg.read_text(encoding="utf-8")
        text = re.sub(r"(?ms)^\[systems\.(telegram|vk)\].*?(?=^\[|\Z)", "", text)
        text = text.replace(', "mappings/messengers.toml"', "")
        cfg.write_text(text, encoding="utf-8")
        env = etc / "env"
        env.write_text(f"B24_WEBHOOK_URL={h.extra['webhook_url']}\nB24_APP_TOKEN=x\nPBX_SECRET=x\n"
                       f"SYNCD_ADMIN_TOKEN={'t' * 32}\n", encoding="utf-8")
        ctl = h.url + "/_sandbox/default/users/"

        def calls() -> dict[str, object]:
            (f,) = [f for f in _check(cfg, env) if f["name"] == "extensions"]
            return f

        f = calls()
        assert f["ok"] is False and "calls: no user of crm has an extension (UF_PHONE_INNER)" in str(f["detail"])
        requests.patch(ctl + "2", json={"phone_inner": "101"}, timeout=10).raise_for_status()
        f = calls()
        assert f["ok"] is True and "101 2 Анна Смирнова" in str(f["detail"]), f
        detail = str(f["detail"])
        assert "without one (their clients' calls go to the queue)" in detail and "3 Игорь" in detail
        requests.patch(ctl + "3", json={"phone_inner": "101"}, timeout=10).raise_for_status()
        f = calls()
        assert f["ok"] is False and "calls: the same extension for several users of crm: 101:" in str(f["detail"]), f
    finally:
        h.stop()
