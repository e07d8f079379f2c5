"""The endpoint as the daemon serves it: config -> Runtime -> the daemon's ASGI app -> 1C client."""

from __future__ import annotations

from pathlib import Path

import httpx
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
