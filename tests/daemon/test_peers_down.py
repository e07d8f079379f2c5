"""`syncd run` with its peers down: start-up never waits on them, the live check is reported later,
and SIGTERM while a call to a silent peer is in flight still ends the process within 10 s with its
port free.

Two kinds of "down": a listening socket that accepts and never answers (a hung server, a
firewall that drops replies), and a closed port (connection refused). The shop's exchange and the
Bitrix24 portal both point at it; the example mappings are used as `syncd demo` writes them.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonproc import SyncdProcess
from syncd.sandbox.server import free_port

REPO = Path(__file__).resolve().parents[2]
STOP_BOUND = 10.0          # the bound: SIGTERM always stops within 10 s


class SilentPeer:
    """A listening socket that accepts, reads each request line and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self._conns: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            first = conn.recv(65536).split(b"\r\n", 1)[0].decode("latin-1")
        except OSError:
            return
        if first:
            self.requests.append(first)

    def close(self) -> None:
        self._closed = True
        for c in self._conns:
            c.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[SilentPeer]:
    peer = SilentPeer()
    yield peer
    peer.close()


def _config(tmp: Path, port: int, peer_port: int) -> Path:
    maps = [str(REPO / "mappings" / n) for n in ("sync.toml", "shop.toml", "bitrix24.toml", "rules.toml")]
    lines = ["[daemon]", f'database_url = "sqlite:///{tmp}/syncd.db"', f'listen = "127.0.0.1:{port}"',
             f"mappings = {json.dumps(maps)}", f'state_dir = "{tmp}"', "",
             # the shop waits as long as a real exchange may; the portal gives up after one short
             # try, so the check has a result to report while the test runs
             "[systems.shop]", 'type = "shop"',
             f'url = "http://127.0.0.1:{peer_port}/bitrix/admin/1c_exchange.php"',
             'login = "exchange"', 'password = "secret-pw-1"', "timeout = 120", "",
             "[systems.crm]", 'type = "bitrix24"', f'webhook_url = "http://127.0.0.1:{peer_port}/rest/1/code/"',
             "timeout = 2", "transient_retries = 0", "limit_retries = 0", ""]
    path = tmp / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_silent_peer_start_is_not_blocked_and_sigterm_mid_call_stops_within_10s(tmp_path: Path,
                                                                                  silent: SilentPeer) -> None:
    port = free_port()
    run = SyncdProcess(_config(tmp_path, port, silent.port), port=port)
    try:
        # HTTP answers while the portal's check is still waiting for the silent peer: start-up did
        # not wait for it
        first = run.wait(lambda: run.get("/healthz"), "/healthz answers", 60)
        assert first["db"] is True and first["checks"]["crm"]["state"] == "pending", first
        assert first["status"] == "starting"
        # the shop's check needs no call (its schema is the protocol's), so its orders are pulled
        # at once — into the silent socket, where the call hangs
        run.wait(lambda: any("1c_exchange.php" in r for r in silent.requests), "a shop call in flight")
        # the portal's check gives up after its one short try; the result is reported later
        health = run.wait(lambda: (h := run.get("/healthz"))["checks"]["crm"]["state"] == "unreachable" and h,
                          "the portal check is reported")
        assert health["status"] == "degraded" and "timeout" in health["checks"]["crm"]["detail"], health
        assert run.get("/stats")["checks"]["crm"]["state"] == "unreachable"
        assert any(e.get("system") == "crm" and e.get("state") == "unreachable" for e in run.events("live_check"))
        assert any("1c_exchange.php" in r for r in silent.requests)
        took = run.stop(STOP_BOUND, must=True)
    finally:
        run.kill9()
    assert run.proc.returncode == 0, run.log[-5:]
    assert took < STOP_BOUND
    assert _port_is_free(port), "the HTTP port is free after the stop"
    events = [e["event"] for e in run.log]
    assert "daemon_stopping" in events and events[-1] == "daemon_stopped", events[-5:]
    # the shop pull was still hanging in the silent socket: it was given up, not waited for
    abandoned = run.events("stop_abandoned")
    assert abandoned and any("shop" in r for r in abandoned[0]["running"]), abandoned
    assert "secret-pw-1" not in json.dumps(run.log)


def test_closed_port_start_is_not_blocked_and_the_check_is_reported(tmp_path: Path) -> None:
    port, closed = free_port(), free_port()
    run = SyncdProcess(_config(tmp_path, port, closed), port=port)
    try:
        run.wait(lambda: run.get("/healthz")["db"], "/healthz answers", 60)
        stats = run.wait(lambda: (s := run.get("/stats"))["checks"]["crm"]["state"] == "unreachable" and s,
                         "the portal check is reported on /stats")
        assert "Connection" in stats["checks"]["crm"]["detail"], stats["checks"]
        assert stats["checks"]["shop"]["state"] == "ok"
        health = run.get("/healthz")
        assert health["status"] == "degraded" and health["checks"]["crm"]["attempts"] >= 1
        # the runs against the closed port fail and are recorded; the daemon keeps going
        run.wait(lambda: any(e.get("integration") == "shop" for e in run.events("pull_failed")), "a failed pull")
        took = run.stop(STOP_BOUND, must=True)
    finally:
        run.kill9()
    assert run.proc.returncode == 0 and took < STOP_BOUND
    assert _port_is_free(port)
