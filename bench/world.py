"""What bench/restart.py, bench/scaleout.py and bench/latency.py share: the sandbox peers, a config
for a real `syncd run` process, starting and killing that process, and reading the peers' own
request logs. Not a benchmark itself.

The sandboxes run in the benchmark's process (their request logs and state are read directly, the
way their control API returns them); each daemon is a separate `python -m syncd.cli run` process,
so a `kill -9` is a real one.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from syncd.sandbox import bitrix24, shop
from syncd.sandbox.bitrix24 import seed_demo
from syncd.sandbox.server import free_port

MAPPINGS = ("sync.toml", "shop.toml", "bitrix24.toml", "rules.toml")   # rules.toml: notices on new deals
WRITE_SUFFIXES = (".add", ".update", ".set", ".delete")
WRITE_METHODS = ("im.notify.system.add", "im.notify.personal.add")
BATCH = 50                    # commands per batch call (the portal's cap)
RATE = 2.0                    # requests/s a cloud portal leaks (the sandbox's default)
BURST = 50.0                  # its bucket


# -- numbers -----------------------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100.0 * len(s) + 0.5) - 1))]


def r(x: float | None, n: int = 2) -> float | None:
    return None if x is None or math.isnan(x) else round(x, n)


# -- the peers ---------------------------------------------------------------------------------------
class Peers:
    """A sandbox Bitrix24 portal (managers, pipelines and shop fields seeded, no deals) and a sandbox
    shop (its demo products and buyers, `orders` seeded orders)."""

    def __init__(self, *, rate_limit: bool = True, latency: float = 0.0, orders: int = 0,
                 seed_deals: bool = False, leak_rate: float = RATE, burst: float = BURST) -> None:
        self.b24 = bitrix24.start(rate_limit=rate_limit)
        self.state = self.b24.extra["state"]
        self.portal = self.state.portal()
        seed_demo(self.state, deals=seed_deals)
        self.portal.limits.leak_rate, self.portal.limits.burst = leak_rate, burst
        self.portal.faults.latency = latency
        self.shop = shop.start(seed=orders)
        self.shop_state = self.shop.extra["state"]
        if not orders:
            from syncd.sandbox.shop.seed import PRODUCTS
            for xml_id, name, price, sku in PRODUCTS:
                self.shop_state.add_product(xml_id, name, price, sku=sku)
        self.app_token = str(self.portal.info().get("application_token", ""))
        self._seq = 0

    @property
    def webhook_url(self) -> str:
        return str(self.b24.extra["webhook_url"])

    def ctl(self, method: str, path: str, body: Any = None) -> Any:
        res = requests.request(method, f"{self.b24.url}/_sandbox/default{path}", json=body, timeout=60)
        res.raise_for_status()
        return res.json()

    def outgoing_webhook(self, url: str, events: list[str]) -> str:
        """Developer resources -> Outgoing webhook: the portal posts `events` to `url`; returns the
        application token the daemon checks them against."""
        self.app_token = self.ctl("POST", "/outgoing_webhooks", {"url": url, "events": events})["application_token"]
        return self.app_token

    def place_orders(self, n: int, tag: str = "b") -> list[Any]:
        """`n` checkouts, each by a new buyer (a new contact in the CRM), one to three products."""
        from syncd.sandbox.shop.seed import PRODUCTS
        out = []
        st = self.shop_state
        with st.lock:
            for _ in range(n):
                self._seq += 1
                i = self._seq
                items = [{"product_id": PRODUCTS[(i + k) % len(PRODUCTS)][0], "quantity": 1 + (i + k) % 3}
                         for k in range(1 + i % 3)]
                user = {"kind": "person", "last_name": f"Покупатель{tag}{i}", "first_name": "Иван",
                        "email": f"buyer.{tag}{i}@example.ru", "phone": f"+7 9{i % 100:02d} {i % 10_000_000:07d}",
                        "address": f"Москва, ул. Тестовая, д. {i}"}
                out.append(st.place_order(user=user, items=items, comment=f"заказ {tag}{i}",
                                          delivery_price=300 if i % 2 else 0))
        return out

    def log(self, since: float = 0.0) -> dict[str, Any]:
        return self.portal.log_view(since)

    def stop(self) -> None:
        self.shop.stop()
        self.b24.stop()


# -- the portal's request log ------------------------------------------------------------------------
def rest(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("kind", "rest") == "rest"]


def methods_of(e: dict[str, Any]) -> list[str]:
    return [m.lower() for m in e.get("batch_methods") or []] if e.get("method") == "batch" else [e["method"]]


def commands_of(e: dict[str, Any]) -> int:
    return int(e.get("commands") or 1) if e.get("method") == "batch" else 1


def is_write(method: str) -> bool:
    m = method.lower()
    return m.endswith(WRITE_SUFFIXES) or m in WRITE_METHODS


def end_of(e: dict[str, Any]) -> float:
    """When the portal answered the request."""
    return float(e["ts"]) + float(e.get("duration") or 0.0)


def packing(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """How the requests carried their commands: read-only calls (look-ups, lists, gets) and calls
    with writes, each with its count, its commands and how full (of 50) its calls were."""
    out: dict[str, Any] = {}
    for kind in ("reads", "writes"):
        es = [e for e in entries if (kind == "writes") == any(is_write(m) for m in methods_of(e))]
        n = sum(commands_of(e) for e in es)
        out[kind] = {"requests": len(es), "commands": n, "per_request": round(n / len(es), 1) if es else None}
    return out


def admitted(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Requests the bucket let through (everything but QUERY_LIMIT_EXCEEDED)."""
    return [e for e in rest(entries) if e.get("error") != "QUERY_LIMIT_EXCEEDED"]


# -- a daemon process --------------------------------------------------------------------------------
def write_config(state_dir: Path, peers: Peers, *, db_url: str | None = None, instance: str | None = None,
                 port: int = 0, jobs: Iterable[tuple[str, str, str]] = (("shop", "orders", "1s"),),
                 push_interval: float = 0.5, rules_interval: float | None = None, claim_ttl: float = 30.0,
                 lease_ttl: float | None = None, rate: float = RATE, burst: float = BURST,
                 event_debounce: float | None = None, log_level: str = "warning") -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    patterns = [str(ROOT / "mappings" / n) for n in MAPPINGS]
    lines = ["[daemon]", f'database_url = "{db_url or f"sqlite:///{state_dir}/syncd.db"}"',
             f'listen = "127.0.0.1:{port}"', f"mappings = {json.dumps(patterns)}", f'state_dir = "{state_dir}"',
             f"push_interval = {push_interval}", f'log_level = "{log_level}"', 'log_format = "json"',
             "retention_days = 0"]
    if rules_interval is not None:
        lines.append(f"rules_interval = {rules_interval}")
    if lease_ttl is not None:
        lines.append(f"lease_ttl = {lease_ttl}")
    if instance:
        lines.append(f'instance = "{instance}"')
    lines += ["", "[push]", f"claim_ttl = {claim_ttl}", "",
              "[systems.shop]", 'type = "shop"', f'url = "{peers.shop.extra["exchange_url"]}"',
              f'login = "{peers.shop.extra["login"]}"', f'password = "{peers.shop.extra["password"]}"', "",
              "[systems.crm]", 'type = "bitrix24"', f'webhook_url = "{peers.webhook_url}"',
              f'application_token = "{peers.app_token}"', f"rate = {rate}", f"burst = {burst}"]
    if event_debounce is not None:
        lines.append(f"event_debounce = {event_debounce}")
    lines.append("")
    for system, stream, every in jobs:
        lines += ["[[jobs]]", f'system = "{system}"', f'stream = "{stream}"', f'every = "{every}"', ""]
    path = state_dir / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class Daemon:
    """`syncd run` as a child process; its stderr (JSON log lines) goes to <state_dir>/daemon.log."""

    def __init__(self, cfg: Path, port: int | None = None) -> None:
        self.cfg, self.port = cfg, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.instance: str | None = None

    def start(self) -> Daemon:
        logf = open(self.cfg.parent / "daemon.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen([sys.executable, "-m", "syncd.cli", "-c", str(self.cfg), "run"],
                                     cwd=str(self.cfg.parent), stdout=subprocess.DEVNULL, stderr=logf)
        logf.close()
        return self

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Until /healthz says ok (HTTP up, every peer's live check passed)."""
        assert self.port, "wait_ready needs a fixed port"
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"syncd run exited with {self.proc.returncode}; see {self.cfg.parent}/daemon.log:\n"
                                 + self.log_tail())
            try:
                last = requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).json()
                if last.get("status") == "ok":
                    self.instance = last.get("instance")
                    return dict(last)
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise SystemExit(f"syncd run not ready within {timeout} s (last /healthz: {last})")

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join((self.cfg.parent / "daemon.log").read_text("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> float:
        """SIGKILL; returns the time it was sent."""
        assert self.proc is not None
        t = time.time()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        return t

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def errors(self) -> list[str]:
        """The daemon's logged errors (level error/critical), as lines."""
        out = []
        try:
            for line in (self.cfg.parent / "daemon.log").read_text("utf-8", "replace").splitlines():
                if '"level": "error"' in line or '"level": "critical"' in line or "Traceback" in line:
                    out.append(line[:400])
        except OSError:
            pass
        return out


# -- the daemon's database ---------------------------------------------------------------------------
class DB:
    """Read-only look at a daemon's database (it may not exist yet, or be mid-migration)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url, poolclass=NullPool)

    def q(self, sql: str, **kw: Any) -> list[tuple[Any, ...]]:
        if self.url.startswith("sqlite:///") and not Path(self.url[len("sqlite:///"):]).exists():
            return []
        try:
            with self.engine.connect() as c:
                return [tuple(row) for row in c.execute(text(sql), kw)]
        except Exception:  # noqa: BLE001 - not created or being migrated right now
            return []

    def one(self, sql: str, **kw: Any) -> Any:
        rows = self.q(sql, **kw)
        return rows[0][0] if rows else None

    def close(self) -> None:
        self.engine.dispose()


def as_epoch(v: Any) -> float | None:
    """A timestamp column's value (aware datetime on PostgreSQL, text or naive UTC on SQLite) as unix time."""
    if v is None:
        return None
    if isinstance(v, str):
        v = dt.datetime.fromisoformat(v)
    if v.tzinfo is None:
        v = v.replace(tzinfo=dt.UTC)
    return float(v.timestamp())


def fresh_pg(url: str) -> tuple[str, Any]:
    """A new database on the PostgreSQL server of `url`, and a function dropping it."""
    from syncd.store.scratch import scratch_database

    return scratch_database(url, "syncd_bench_")


__all__ = [
    "BATCH",
    "BURST",
    "DB",
    "RATE",
    "ROOT",
    "Daemon",
    "Peers",
    "admitted",
    "as_epoch",
    "commands_of",
    "end_of",
    "free_port",
    "fresh_pg",
    "is_write",
    "methods_of",
    "packing",
    "percentile",
    "r",
    "rest",
    "write_config",
]
