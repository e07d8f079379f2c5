"""The live check in the background: a system is held until its check answers, an unreachable one is
checked again, a mismatch stops `syncd run` with exit code 2 naming the mapping key."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from syncd.connector import LiveSchema
from syncd.daemon.livecheck import LiveCheck
from syncd.errors import TransientError
from syncd.mapping import Mapper, parse_mapping_doc
from syncd.sandbox import bitrix24

REPO = Path(__file__).resolve().parents[2]


class FlakyPeer:
    """describe() fails `down` times, then answers with `fields` for kind person."""

    def __init__(self, down: int, fields: set[str]) -> None:
        self.down, self.fields, self.calls = down, fields, 0

    def describe(self) -> LiveSchema:
        self.calls += 1
        if self.calls <= self.down:
            raise TransientError("crm.batch: ConnectionError talking to 127.0.0.1:9", connector="crm")
        return LiveSchema(kinds={"person": set(self.fields)})


def _mapper() -> Mapper:
    return Mapper(parse_mapping_doc({"maps": [{"system": "crm", "kind": "person", "entity": "person", "create": True,
                                               "fields": {"person.name": "NAME", "person.email": "EMAIL"}}],
                                     "identity": {"person": {"keys": ["email"], "origin": ["crm"]}}}, "test"))


def _wait(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_held_until_checked_released_when_unreachable_rechecked_until_it_answers() -> None:
    peer = FlakyPeer(down=2, fields={"NAME", "EMAIL"})
    released: list[str] = []
    mismatched: list[Any] = []
    lc = LiveCheck(_mapper(), {"crm": peer}, on_release=released.append,
                   on_mismatch=lambda s, p: mismatched.append((s, p)), retry=0.05, retry_max=0.1)
    assert not lc.ready("crm") and lc.summary() == "pending"
    lc.start()
    _wait(lambda: released == ["crm"])
    # unreachable: released (its runs fail and retry like any fault), reported with the reason
    assert lc.ready("crm") and released == ["crm"]
    assert lc.view()["crm"]["state"] == "unreachable" and "ConnectionError" in lc.view()["crm"]["detail"]
    _wait(lambda: lc.view()["crm"]["state"] == "ok")
    assert peer.calls == 3 and lc.view()["crm"]["attempts"] == 3 and lc.summary() == "ok"
    assert released == ["crm"] and mismatched == []
    lc.stop()


def test_mismatch_is_reported_and_holds_the_system() -> None:
    peer = FlakyPeer(down=0, fields={"NAME"})
    mismatched: list[Any] = []
    lc = LiveCheck(_mapper(), {"crm": peer}, on_mismatch=lambda s, p: mismatched.append((s, p)))
    lc.start()
    _wait(lambda: bool(mismatched))
    system, problems = mismatched[0]
    assert system == "crm" and any("EMAIL" in p and "fields.person.email" in p for p in problems), problems
    assert not lc.ready("crm") and lc.summary() == "mismatch"
    assert lc.view()["crm"]["problems"] == problems


def test_a_silent_peer_delays_nobody_else() -> None:
    gate = threading.Event()

    class Silent:
        def describe(self) -> LiveSchema:
            gate.wait(10)
            return LiveSchema()

    released: list[str] = []
    doc = {"maps": [{"system": s, "kind": "person", "entity": "person", "create": True, "fields": {"person.name": "NAME"}}
                    for s in ("crm", "shop")],
           "identity": {"person": {"keys": ["email"], "origin": ["crm"]}}}
    lc = LiveCheck(Mapper(parse_mapping_doc(doc, "t")), {"crm": Silent(), "shop": FlakyPeer(0, {"NAME"})},
                   on_release=released.append)
    lc.start()
    _wait(lambda: released == ["shop"])
    assert lc.ready("shop") and not lc.ready("crm") and lc.summary() == "pending"
    gate.set()
    _wait(lambda: sorted(released) == ["crm", "shop"])
    lc.stop()


def test_syncd_run_stops_with_exit_2_when_the_mappings_do_not_match_the_portal(tmp_path: Path) -> None:
    # a portal without the custom fields the example mapping uses (nobody created UF_CRM_SHOP_ORDER)
    sandbox = bitrix24.start(rate_limit=False)
    try:
        maps = [str(REPO / "mappings" / n) for n in ("sync.toml", "bitrix24.toml")]
        cfg = tmp_path / "config.toml"
        cfg.write_text("\n".join([
            "[daemon]", f'database_url = "sqlite:///{tmp_path}/syncd.db"', 'listen = "127.0.0.1:0"',
            f"mappings = {json.dumps(maps)}", "",
            "[systems.crm]", 'type = "bitrix24"', f'webhook_url = "{sandbox.extra["webhook_url"]}"', ""]),
            encoding="utf-8")
        r = subprocess.run([sys.executable, "-m", "syncd.cli", "-c", str(cfg), "--log-format", "json", "run"],
                           capture_output=True, text=True, timeout=60, check=False)
    finally:
        sandbox.stop()
    assert r.returncode == 2, r.stderr[-2000:]
    assert "mappings do not match the live system 'crm'" in r.stderr
    assert "UF_CRM_SHOP_ORDER" in r.stderr and "maps[" in r.stderr
    events = [json.loads(x)["event"] for x in r.stderr.splitlines() if x.startswith("{")]
    assert "daemon_started" in events and "daemon_stopped" in events
