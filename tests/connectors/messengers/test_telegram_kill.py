"""kill -9 of a real `syncd run` right after it answered Telegram 200: the update was committed before
the answer (connectors/messengers/common.py), so after a restart on the same config and database
a new person's message is one lead with its text, her reply one comment on it — nothing lost,
nothing doubled, whether Telegram posts an update again or not. Telegram (the messenger sandbox)
posts real Updates with the secret header; the portal is read through its REST."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from msgworld import TG_SECRET, ChatWorld, make_world

from daemonproc import REPO, SyncdProcess

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
FIRST = "Здравствуйте! Нужен самовар на 5 литров, успеете до пятницы?"
REPLY = "Доставка в Тверь возможна?"


class Daemon(SyncdProcess):
    def start(self) -> None:
        super().start()
        self.ready(30)


@pytest.fixture
def world(tmp_path: Path, sandbox_url: str) -> Iterator[tuple[ChatWorld, Daemon]]:
    w = make_world(tmp_path, sandbox_url)
    cfg = w.config()                       # msgworld's config (the portal, Telegram, VK) on w.port
    text = cfg.read_text(encoding="utf-8").replace("[daemon]\n", "[daemon]\npush_interval = 0.2\n", 1)
    assert "push_interval" in text
    cfg.write_text(text, encoding="utf-8")
    d = Daemon(cfg, port=w.port, env=dict(os.environ, **w.env))
    try:
        # set-up readiness: the connector has set Telegram's webhook to the daemon, with the secret
        d.wait(lambda: w.tg.webhook_info()["url"] == w.tg_hook and w.tg.state.webhook["secret_token"] == TG_SECRET,
               "Telegram's webhook is set", 30)
        yield w, d
    finally:
        d.kill9()
        w.close()


def _db(w: ChatWorld, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    from sqlalchemy import create_engine, text

    eng = create_engine(f"sqlite:///{w.tmp}/syncd.db")
    try:
        with eng.connect() as c:
            return [tuple(r) for r in c.execute(text(sql), params)]
    finally:
        eng.dispose()


def _stored_bodies(w: ChatWorld) -> list[str]:
    """The messages the daemon committed (their text)."""
    return sorted(str(json.loads(f).get("message.body")) for (f,) in
                  _db(w, "SELECT fields FROM entities WHERE type = 'message'"))


def _redeliver(w: ChatWorld, update: dict[str, Any]) -> int:
    """Telegram posts an update again (it saw no answer): the same body, the secret header."""
    r = requests.post(w.tg_hook, data=json.dumps(update, ensure_ascii=False).encode(), timeout=10,
                      headers={"Content-Type": "application/json", SECRET_HEADER: TG_SECRET})
    return r.status_code


def _drained(w: ChatWorld, writes: int) -> bool:
    """Nothing is left to write to the portal, and at least `writes` writes were done (what the
    portal holds is then counted exactly)."""
    open_writes = _db(w, "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending', 'blocked')")[0][0]
    done = _db(w, "SELECT count(*) FROM outbox WHERE system = 'crm' AND status = 'done'")[0][0]
    return open_writes == 0 and done >= writes


def _audit(w: ChatWorld, cfg: Path) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "syncd.cli", "-c", str(cfg), "--json", "audit", "crm"],
                       capture_output=True, text=True, cwd=str(REPO), timeout=60, env=dict(os.environ, **w.env))
    lines = r.stdout.strip().splitlines()
    assert lines, f"audit printed nothing (exit {r.returncode}): {r.stderr[-2000:]}"
    report = json.loads(lines[-1])
    assert r.returncode == 0 and report["drift_records"] == 0 and report["drift"] == [], report
    return report


def test_kill_9_right_after_each_200_one_lead_with_the_message_and_the_reply_one_comment(
        world: tuple[ChatWorld, Daemon]) -> None:
    w, d = world
    ann = w.tg.user("Анна", "Сбоева", username="anna_crash")

    # a new person's first message: answered 200, and the daemon dies at once
    first = w.tg.send_text(ann, FIRST)
    d.kill9()
    assert first.delivered and [a.get("status") for a in first.attempts] == [200], first.attempts
    assert _stored_bodies(w) == [FIRST]                          # committed before the 200

    # while it is down, a second person writes: Telegram gets no answer (it keeps the update)
    boris = w.tg.user("Борис", "Ждущий")
    waiting = w.tg.send_text(boris, "Есть ли самовары на 3 литра?")
    assert not waiting.delivered and all("error" in a for a in waiting.attempts), waiting.attempts

    d.start()                                                    # the same config, the same database
    # her reply, answered 200, and the daemon dies again at once — maybe before her lead is made
    reply = w.tg.send_text(ann, REPLY)
    d.kill9()
    assert reply.delivered and [a.get("status") for a in reply.attempts] == [200], reply.attempts
    assert _stored_bodies(w) == sorted([FIRST, REPLY])

    d.start()
    # Telegram posts again what it has no 200 for (Boris's update), and — as it may after a crash —
    # the answered ones as well: the same updates are the same messages
    assert _redeliver(w, waiting.update) == 200
    assert _redeliver(w, first.update) == 200
    assert _redeliver(w, reply.update) == 200
    d.wait(lambda: _drained(w, 3), "two leads and a comment written to the portal", 30)

    leads = w.portal.leads()
    mine = [ld for ld in leads if ld["TITLE"] == "Telegram: Анна Сбоева"]
    assert len(mine) == 1, leads
    lead = mine[0]
    assert FIRST in lead["COMMENTS"] and lead["ASSIGNED_BY_ID"] == w.manager, lead
    comments = w.portal.comments("lead", lead["ID"])
    assert len(comments) == 1 and REPLY in comments[0]["COMMENT"], comments
    assert FIRST not in comments[0]["COMMENT"]
    theirs = [ld for ld in leads if ld["TITLE"] == "Telegram: Борис Ждущий"]
    assert len(theirs) == 1 and "на 3 литра" in theirs[0]["COMMENTS"], leads
    assert w.portal.comments("lead", theirs[0]["ID"]) == []
    assert len(leads) == 2, leads
    assert _stored_bodies(w) == sorted([FIRST, REPLY, "Есть ли самовары на 3 литра?"])
    assert not _db(w, "SELECT id FROM outbox WHERE status = 'dead'")

    d.stop(15, must=True)
    report = _audit(w, d.cfg)
    assert report["checked"].get("crm", 0) >= 2, report          # the two leads read back and compared
