"""`syncd demo --until-synced`: the daemon against the sandbox peers; the seeded work flows and the
last line of output is the final /stats JSON."""

from __future__ import annotations

import json
import subprocess
import sys


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
    stats = json.loads(lines[-1])
    crm, shop = stats["integrations"]["crm"], stats["integrations"]["shop"]
    assert shop["counts"]["created"] >= 5          # seeded orders and their buyers came in
    assert crm["counts"]["pushed"] >= 5            # and became deals/contacts in the portal
    assert stats["totals"]["outbox_pending"] == 0 and stats["totals"]["outbox_dead"] == 0
