"""A post answered 200 is never lost: kill -9 right after the answer, and the lead still reaches the
CRM after the restart (the answer waits for the commit; the CRM write is in the same transaction's
outbox)."""

from __future__ import annotations

import time
from pathlib import Path

from formsworld import TOKEN, make_portal, suite_forms
from formshelpers import Daemon, stored_fields, wait_leads, write_config

from syncd.sandbox.server import free_port


def test_kill_9_right_after_200_the_lead_arrives_after_restart(tmp_path: Path, sandbox_url: str) -> None:
    portal, managers, _client, pipeline = make_portal(sandbox_url)
    port = free_port()
    forms = suite_forms(managers, pipeline)
    # the first run never drains its outbox by itself (an hour between drains): whatever reaches the
    # CRM reaches it after the restart, from what was committed before the answer
    cfg = write_config(tmp_path, port, portal.webhook_url, forms, push_interval=3600)
    daemon = Daemon(cfg, port)
    try:
        answers = [daemon.post("contact", {"your_name": f"Сбой {i}", "tel": f"+7903222330{i}", "agree": "on"},
                               token=TOKEN) for i in range(3)]
        daemon.kill9()                                  # at once, after the last answer
        assert [a.status_code for a in answers] == [200, 200, 200]
        ids = [a.json()["id"] for a in answers]
        assert all(stored_fields(tmp_path / "syncd.db", "forms", i) for i in ids)
        time.sleep(0.3)
        assert [ld for ld in portal.leads() if ld["NAME"].startswith("Сбой")] == [], \
            "nothing was sent before the kill"
        write_config(tmp_path, port, portal.webhook_url, forms, push_interval=0.2)
        daemon.start()
        for i in range(3):
            assert len(wait_leads(portal, 1, NAME=f"Сбой {i}")) == 1, f"lead {i} after the restart"
        # a post repeated by the site after the crash (it got its 200, but retries anyway) is the same one
        again = daemon.post("contact", {"your_name": "Сбой 0", "tel": "+79032223300", "agree": "on"}, token=TOKEN)
        assert again.json()["id"] == ids[0]
    finally:
        daemon.stop()
