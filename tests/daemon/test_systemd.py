"""`syncd run` speaks sd_notify the way a Type=notify unit with WatchdogSec expects: READY=1 once
HTTP and the scheduler are up, WATCHDOG=1 pings at half the watchdog interval, STOPPING=1 on
SIGTERM. The unit file in systemd/ asks for exactly that."""

from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from factories import write_config

ROOT = Path(__file__).resolve().parents[2]


def test_notify_ready_watchdog_stopping(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    cfg = write_config(tmp_path, systems={"a": {"type": "memory"}, "b": {"type": "memory"}},
                       daemon={"listen": "127.0.0.1:0"})
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="400000")
    proc = subprocess.Popen([sys.executable, "-m", "syncd.cli", "-c", str(cfg), "--log-format", "json", "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    got: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and got.count("WATCHDOG=1") < 3:
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                pass
        assert got and got[0].startswith("READY=1"), got
        assert got.count("WATCHDOG=1") >= 3
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "STOPPING=1" not in got:
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                pass
        assert "STOPPING=1" in got
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_ready_means_http_answers(tmp_path: Path) -> None:
    """READY=1 is sent only after the HTTP server accepts connections."""
    sock_path = tmp_path / "n.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    from syncd.sandbox.server import free_port

    port = free_port()
    cfg = write_config(tmp_path, systems={"a": {"type": "memory"}, "b": {"type": "memory"}},
                       daemon={"listen": f"127.0.0.1:{port}"})
    proc = subprocess.Popen([sys.executable, "-m", "syncd.cli", "-c", str(cfg), "run"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, NOTIFY_SOCKET=str(sock_path)))
    try:
        assert sock.recv(4096).decode().startswith("READY=1")
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["db"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        sock.close()


def test_unit_file_is_notify_with_watchdog_and_hardening() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(ROOT / "systemd" / "syncd.service")
    svc = unit["Service"]
    assert svc["Type"] == "notify" and svc["WatchdogSec"] and svc["Restart"] == "on-failure"
    assert svc["DynamicUser"] == "yes" and svc["StateDirectory"] == "syncd"
    for key in ("ProtectSystem", "NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert key in svc
    assert " run" in svc["ExecStart"]
