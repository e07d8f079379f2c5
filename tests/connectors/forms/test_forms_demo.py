"""`syncd demo` serves a site form and prints its URL with the token; a post to that URL becomes a
lead in the demo's portal."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import requests

pytestmark = pytest.mark.slow        # a whole demo: ~25 s (SYNCD_SLOW=1)


def test_the_demo_prints_a_form_url_that_makes_a_lead() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "syncd.cli", "demo", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while not any(line.startswith("Ctrl-C") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stdout.readline().strip())
        form_url = next(line.split()[2] for line in lines if line.startswith("site form"))
        webhook = next(line.split()[2] for line in lines if line.startswith("Bitrix24 portal"))
        assert "/hooks/forms/callback?token=" in form_url
        r = requests.post(form_url, data={"name": "Демо Гость", "phone": "+7 903 765-43-21"}, timeout=30)
        assert r.status_code == 200 and r.json()["ok"] is True, r.text
        # without the token the same URL refuses
        assert requests.post(form_url.split("?")[0], data={"phone": "+79037654321"}, timeout=30).status_code == 401
        deadline = time.monotonic() + 30
        while True:
            # the demo's portal keeps Bitrix24's 2 req/s limit (shared with syncd): ask gently
            answer = requests.post(webhook + "crm.lead.list.json", json={"filter": {"NAME": "Демо Гость"}},
                                   timeout=30).json()
            leads = answer.get("result") or []
            if leads or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert len(leads) == 1 and leads[0]["TITLE"] == "Обратный звонок: Демо Гость"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
