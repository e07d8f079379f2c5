"""A post answered 200 is never lost: kill -9 right after the answer, and the lead still reaches the
CRM after the restart (the answer waits for the commit; the CRM write is in the same transaction's
outbox)."""

from __future__ import annotations

from pathlib import Path

from formsworld import TOKEN, make_portal, suite_forms
from formshelpers import Daemon, stored_fields, wait_leads, write_config

from syncd.sandbox.server import free_port


def test_kill_9_right_after_200_the_lead_arrives_after_restart(tmp_path: Path, sandbox_url: str) -> None:
    portal, managers, _client, pipeline = make_portal(sandbox_url)
    port = free_port()
    forms = suite_forms(managers, pipeline)
    cfg = write_config(tmp_path, port, portal.webhook_url, forms)
    daemon = Daemon(cfg, port)
    try:
        # the CRM is paused (nothing is written to it): whatever reaches it reaches it after the
        # restart, from what was committed before each answer
        assert daemon.admin("POST", "/admin/pause/crm", json={}).status_code == 200
        answers = [daemon.post("contact", {"your_name": f"Сбой {i}", "tel": f"+7903222330{i}", "agree": "on"},
                               token=TOKEN) for i in range(3)]
        daemon.kill9()                                  # at once, after the last answer
        assert [a.status_code for a in answers] == [200, 200, 200]
        ids = [a.json()["id"] for a in answers]
        assert all(stored_fields(tmp_path / "syncd.db", "forms", i) for i in ids)
        assert [ld for ld in portal.leads() if ld["NAME"].startswith("Сбой")] == [], \
            "nothing was sent before the kill"
        daemon.start()
        assert daemon.admin("POST", "/admin/resume/crm", json={}).status_code == 200
        for i in range(3):
            assert len(wait_leads(portal, 1, NAME=f"Сбой {i}")) == 1, f"lead {i} after the restart"
        # a post repeated by the site after the crash (it got its 200, but retries anyway) is the same one
        again = daemon.post("contact", {"your_name": "Сбой 0", "tel": "+79032223300", "agree": "on"}, token=TOKEN)
        assert again.json()["id"] == ids[0]
    finally:
        daemon.stop()
