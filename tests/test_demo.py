"""`syncd demo --until-synced`: the daemon against the sandbox peers; the seeded work flows and the
last line of output is the final /stats JSON."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def test_demo_until_synced() -> None:
    r = subprocess.run([sys.executable, "-m", "syncd.cli", "demo", "--until-synced", "--port", "0",
                        "--timeout", "240"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    lines = r.stdout.strip().splitlines()
    assert any("status page" in line for line in lines)
    assert any("Bitrix24 portal" in line and "/rest/" in line for line in lines)
    assert any("shop exchange" in line and "1c_exchange.php" in line for line in lines)
    flowed = [line for line in lines if line.strip().startswith("shop order ")]
    assert len(flowed) >= 5 and all("-> deal " in line and "deal -," not in line for line in flowed)
    assert any("manager " in line and "manager nobody" not in line for line in flowed)   # S1 assignment
    assert any(", in 1C" in line for line in flowed)                                    # S6: paid -> 1C
    from syncd.sandbox import dovecot

    if dovecot.available():     # the demo's mailbox: a new sender's mail is a lead, the bounce nothing
        assert any("mailbox" in line and "imap://127.0.0.1:" in line for line in lines)
        mail = [line for line in lines if line.strip().startswith("mail -> lead")]
        assert len(mail) == 1 and "«Запрос цены на самовары» (irina.volkova@chaihana.example)" in mail[0], lines[-4:]
    # the phone system's three calls (the client the CRM knows, a stranger, a missed one) and a chat
    calls = [line.strip() for line in lines if line.strip().startswith("call +7")]
    assert len(calls) == 3 and any("on contact" in c and "answered" in c for c in calls), calls
    assert any("on lead" in c and "code 304" in c for c in calls), calls
    assert any(line.strip().startswith("telegram -> lead ") for line in lines)
    stats = json.loads(lines[-1])
    crm, shop = stats["integrations"]["crm"], stats["integrations"]["shop"]
    assert shop["counts"]["created"] >= 5          # seeded orders and their buyers came in
    assert crm["counts"]["pushed"] >= 5            # and became deals/contacts in the portal
    assert stats["totals"]["outbox_pending"] == 0 and stats["totals"]["outbox_dead"] == 0


@pytest.mark.parametrize("crm,name,noun", [("amocrm", "amoCRM", "deal"), ("retailcrm", "RetailCRM", "order")])
def test_demo_with_another_crm_lands_the_shops_orders_there(crm: str, name: str, noun: str) -> None:
    """`syncd demo --crm amocrm|retailcrm`: the same shop's orders land in that CRM's sandbox, with
    managers by the rules, the paid one in 1C; what only the Bitrix24 demo has is said, not hidden."""
    r = subprocess.run([sys.executable, "-m", "syncd.cli", "demo", "--crm", crm, "--until-synced", "--port", "0",
                        "--timeout", "240"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    lines = r.stdout.strip().splitlines()
    assert any(line.strip().startswith(name) and "http://127.0.0.1:" in line for line in lines), lines[:12]
    assert any("only with --crm bitrix24" in line for line in lines)
    flowed = [line for line in lines if line.strip().startswith("shop order ")]
    assert len(flowed) == 5 and all(f"-> {crm} {noun} " in line and f"{noun} -," not in line for line in flowed)
    assert all("manager nobody" not in line for line in flowed)                          # S1 assignment
    assert any(", in 1C" in line and "PREPAYMENT_INVOICE" in line for line in flowed)     # paid: the stage, 1C
    stats = json.loads(lines[-1])
    assert stats["integrations"]["crm"]["counts"]["pushed"] >= 5
    assert stats["totals"]["outbox_pending"] == 0 and stats["totals"]["outbox_dead"] == 0


def _demo_processes(tmp: str) -> list[str]:
    """Command lines of processes that still use the demo's folder (its Dovecot)."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if tmp in cmd:
            out.append(cmd)
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_demo_leaves_no_process_and_no_folder(sig: signal.Signals) -> None:
    """Issue 22 #17: five demos stopped with SIGTERM left five Dovecots and their folders behind."""
    import re
    import time
    from pathlib import Path

    proc = subprocess.Popen([sys.executable, "-m", "syncd.cli", "demo", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "Ctrl-C to stop" in line:
            break
    m = next((re.search(r"\(SQLite: (\S+)/syncd\.db\)", x) for x in seen if "SQLite:" in x), None)
    assert m is not None and "Ctrl-C to stop" in seen[-1], "".join(seen)
    folder = m.group(1)
    from syncd.sandbox import dovecot

    if dovecot.available():
        assert _demo_processes(folder), "the demo's Dovecot was expected to run"
    proc.send_signal(sig)
    proc.wait(60)
    assert proc.returncode in (0, 1, 130, -sig), proc.returncode
    time.sleep(0.5)
    assert _demo_processes(folder) == [], _demo_processes(folder)
    assert not Path(folder).exists(), f"{folder} left behind"


def test_an_outside_1c_takes_the_documents_with_no_1c_client(tmp_path: Path) -> None:
    """Issue 22 #14: the demo's own 1C client took every document every 3 s, so a 1C pointed at the
    printed URL saw nothing. With --no-1c-client the banner says so and an outside 1C (the sandbox
    client, as an accountant's 1C would) receives the paid orders."""
    import re
    import time

    from syncd.sandbox.onec import OneCClient

    proc = subprocess.Popen([sys.executable, "-m", "syncd.cli", "demo", "--port", "0", "--no-1c-client",
                             "--state-dir", str(tmp_path / "demo")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    try:
        seen: list[str] = []
        while True:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "Ctrl-C to stop" in line:
                break
        banner = "".join(seen)
        m = re.search(r"1C exchange\s+(\S+)\s+\(login onec / demo-1c-password; no 1C client of the demo's", banner)
        assert m is not None, banner
        client = OneCClient(m.group(1), "onec", "demo-1c-password")
        received = 0
        deadline = time.monotonic() + 90
        while received == 0 and time.monotonic() < deadline:
            received += client.run_cycle()["received"]
            time.sleep(1.0)
        assert received >= 1 and client.db.orders, "the outside 1C received nothing"
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def test_the_demo_tells_each_write_as_it_lands(tmp_path: Path) -> None:
    """Issue 22 #14: the demo's terminal printed nothing after the banner. Now one line per write
    that landed: the shop's orders become deals in the CRM, each said with both records' ids."""
    import queue
    import re
    import threading
    import time

    proc = subprocess.Popen([sys.executable, "-m", "syncd.cli", "demo", "--port", "0",
                             "--state-dir", str(tmp_path / "demo")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()   # type: ignore[union-attr]
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 120
        deals: set[str] = set()
        while time.monotonic() < deadline and len(deals) < 3:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                continue
            seen.append(line)
            m = re.search(r"shop заказ (\S+) → crm сделка (\d+): создана запись", line)
            if m:
                deals.add(m.group(1))
        after = "".join(seen[next(i for i, x in enumerate(seen) if "Ctrl-C to stop" in x):])
        assert len(deals) >= 3, after
        assert re.search(r"^\s+\d\d:\d\d:\d\d  ", after, re.M), after       # each line with its time
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
