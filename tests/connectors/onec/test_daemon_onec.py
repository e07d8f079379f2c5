"""The endpoint as the daemon serves it: config -> Runtime -> the daemon's ASGI app -> 1C client."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from onechelpers import CRM_MAPPING, ROOT

from syncd.config import load_settings
from syncd.daemon.http import create_app
from syncd.daemon.runtime import Runtime
from syncd.sandbox import memory
from syncd.sandbox.onec import OneCClient
from syncd.sandbox.server import serve_in_thread


def test_daemon_serves_the_exchange_and_runs_s6(tmp_path: Path) -> None:
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "onec.toml").write_text((ROOT / "mappings" / "onec.toml").read_text("utf-8"), "utf-8")
    (tmp_path / "mappings" / "crm.toml").write_text(CRM_MAPPING, "utf-8")
    (tmp_path / "config.toml").write_text(
        "[daemon]\n"
        f'database_url = "sqlite:///{tmp_path}/syncd.db"\n'
        f'state_dir = "{tmp_path}/state"\n'
        'mappings = ["mappings/*.toml"]\n\n'
        "[push]\nbase_delay = 0\n\n"
        '[systems.crm]\ntype = "memory"\nkinds = ["company", "person", "order"]\n\n'
        '[systems.onec]\ntype = "onec"\nlogin = "exchange"\npassword = "${ONEC_PASSWORD}"\n'
        'file_limit = 4096\n', encoding="utf-8")
    memory._SYSTEMS.pop("crm", None)
    rt = Runtime(load_settings(tmp_path / "config.toml", env={"ONEC_PASSWORD": "pw-1c"}))
    server = serve_in_thread(create_app(rt))
    client = OneCClient(server.url + "/1c/exchange", "exchange", "pw-1c")
    try:
        crm = memory._SYSTEMS["crm"]
        assert (tmp_path / "state" / "onec" / "onec").is_dir()      # spool under the state dir
        crm.edit("company", "co1", title="ИП Смирнова Анна Петровна", inn="500100732259", email="anna@example.ru")
        crm.edit("order", "d1", number="D-9", title="Сделка D-9", total="1500.00", stage="NEW", company_id="co1",
                 to_1c="true")
        for _ in range(3):
            rt.sync_once()
        assert client.run_cycle()["received"] == 1
        assert client.db.order("D-9").total == 1500
        # the path 1C nodes set up for a 1C-Bitrix site serves the same exchange
        alias = OneCClient(server.url + "/bitrix/admin/1c_exchange.php", "exchange", "pw-1c")
        assert alias.run_cycle()["received"] == 0
        alias.close()
        client.pay("D-9")
        client.run_cycle()
        rt.sync_once()
        assert crm.objects["order"]["d1"]["paid"] == "true"
        assert rt.store.list_review() == [] and rt.store.list_quarantine() == []   # the ИП stays a company
        health = rt.health()["onec"]
        assert health.ok and "last exchange" in health.detail and "never" not in health.detail
        stats = httpx.get(server.url + "/stats").json()
        assert "onec" in stats["integrations"]
    finally:
        client.close()
        server.stop()
        rt.close()
        memory._SYSTEMS.pop("crm", None)


def _two_onec(tmp_path: Path, second: str, path: str = "/1c/ut") -> Runtime:
    (tmp_path / "config.toml").write_text(
        "[daemon]\n"
        f'database_url = "sqlite:///{tmp_path}/syncd.db"\n'
        f'state_dir = "{tmp_path}/state"\n'
        "mappings = []\n\n"
        '[systems.onec]\ntype = "onec"\nlogin = "exchange"\npassword = "pw-1"\n\n'
        f'[systems.onec_ut]\ntype = "onec"\npath = "{path}"\nlogin = "ut"\npassword = "pw-2"\n{second}',
        encoding="utf-8")
    return Runtime(load_settings(tmp_path / "config.toml", env={}))


def _first_line(url: str, auth: tuple[str, str]) -> str:
    return httpx.get(url, params={"type": "sale", "mode": "checkauth"}, auth=auth).text.split("\n")[0]


def test_two_1c_integrations_share_the_default_alias_without_a_quarrel(tmp_path: Path) -> None:
    rt = _two_onec(tmp_path, "")
    server = serve_in_thread(create_app(rt))
    try:
        bitrix = server.url + "/bitrix/admin/1c_exchange.php"
        assert _first_line(bitrix, ("exchange", "pw-1")) == "success"     # the first keeps the alias
        assert _first_line(bitrix, ("ut", "pw-2")) == "failure"
        assert _first_line(server.url + "/1c/ut", ("ut", "pw-2")) == "success"
    finally:
        server.stop()
        rt.close()


def test_an_alias_asked_for_explicitly_wins_and_two_explicit_claims_are_an_error(tmp_path: Path) -> None:
    rt = _two_onec(tmp_path, 'aliases = ["/bitrix/admin/1c_exchange.php"]\n')
    server = serve_in_thread(create_app(rt))
    try:
        assert _first_line(server.url + "/bitrix/admin/1c_exchange.php", ("ut", "pw-2")) == "success"
    finally:
        server.stop()
        rt.close()
    (tmp_path / "syncd.db").unlink()
    rt = _two_onec(tmp_path, "", path="/1c/exchange")
    try:
        with pytest.raises(ValueError, match=r"/1c/exchange is already taken by 'onec'.*\[systems\]"):
            create_app(rt)
    finally:
        rt.close()
