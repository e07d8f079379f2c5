"""1C calls syncd every minute: its row on the page says when it last did (the connector keeps
`last_exchange` in its state), not "never"."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from syncd.config import load_settings
from syncd.daemon.http import create_app
from syncd.daemon.runtime import Runtime
from syncd.sandbox.onec import OneCClient
from syncd.sandbox.server import serve_in_thread

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "adm-1c-page-token-0123"


def test_the_1c_row_shows_its_last_exchange(tmp_path: Path) -> None:
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "onec.toml").write_text((ROOT / "mappings" / "onec.toml").read_text("utf-8"), "utf-8")
    (tmp_path / "config.toml").write_text(
        "[daemon]\n"
        f'database_url = "sqlite:///{tmp_path}/syncd.db"\n'
        f'state_dir = "{tmp_path}/state"\n'
        'admin_token = "${SYNCD_ADMIN_TOKEN}"\n'
        'mappings = ["mappings/*.toml"]\n\n'
        '[systems.onec]\ntype = "onec"\nlogin = "exchange"\npassword = "${ONEC_PASSWORD}"\n', encoding="utf-8")
    rt = Runtime(load_settings(tmp_path / "config.toml", env={"ONEC_PASSWORD": "pw-1c", "SYNCD_ADMIN_TOKEN": TOKEN}))
    server = serve_in_thread(create_app(rt))
    onec = OneCClient(server.url + "/1c/exchange", "exchange", "pw-1c")
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            c.post("/login", data={"token": TOKEN, "next": "/"})
            before = c.get("/").text
            onec.run_cycle()
            after = c.get("/").text
            glance = c.get("/part/glance").text
    finally:
        onec.close()
        server.stop()
        rt.close()
    row = re.compile(r'<tr id="integration-onec".*?</tr>', re.DOTALL)
    assert "ещё не было" in row.search(before).group(0)                      # type: ignore[union-attr]
    for page in (after, glance):
        cell = row.search(page).group(0)                                      # type: ignore[union-attr]
        assert "последний обмен" in cell and "ещё не было" not in cell
        assert 'data-action="backfill-open"' not in cell                    # 1C calls us: nothing to import
