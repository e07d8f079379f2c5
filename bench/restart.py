"""Time from kill -9 + restart to the first successful write (core issue: goal < 10 s).

A real `syncd run` process works through a backlog of shop orders into the sandbox Bitrix24 portal
(its 2 req/s limit on, so writes are in flight at any moment); the process is killed with SIGKILL
while it holds claimed writes, then started again with the same config (the same instance, named
in its state dir). Measured: seconds from the restart to the first write settled `done` after it,
and how many claimed rows the killed process left behind.

Anchor, measured in the same run: the same daemon started cleanly over the same kind of backlog
(no claims left behind) — seconds to its first settled write. The ratio restart / clean start says
what a crash costs on top of a start. A third figure starts the survivor under another instance
name: its wait is the claim TTL (`push.claim_ttl`), for comparison.

Usage: python bench/restart.py [--orders 120] [--claim-ttl 30]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from syncd.sandbox import bitrix24, shop  # noqa: E402


def write_config(state_dir: Path, shop_h, b24_h, *, instance: str | None, claim_ttl: float) -> Path:  # type: ignore[no-untyped-def]
    maps = ROOT / "mappings"
    patterns = [str(maps / n) for n in ("sync.toml", "shop.toml", "bitrix24.toml", "rules.toml")]
    info = b24_h.extra["state"].portal().info()
    lines = ["[daemon]", f'database_url = "sqlite:///{state_dir}/syncd.db"', 'listen = "127.0.0.1:0"',
             f"mappings = {json.dumps(patterns)}", f'state_dir = "{state_dir}"', "push_interval = 0.5",
             'log_level = "warning"']
    if instance:
        lines.append(f'instance = "{instance}"')
    lines += ["", "[push]", f"claim_ttl = {claim_ttl}", "",
              "[systems.shop]", 'type = "shop"', f'url = "{shop_h.extra["exchange_url"]}"',
              f'login = "{shop_h.extra["login"]}"', f'password = "{shop_h.extra["password"]}"', "",
              "[systems.crm]", 'type = "bitrix24"', f'webhook_url = "{b24_h.extra["webhook_url"]}"',
              f'application_token = "{info.get("application_token", "")}"', "",
              "[[jobs]]", 'system = "shop"', 'stream = "orders"', 'every = "1s"', ""]
    path = state_dir / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def start_daemon(cfg: Path) -> subprocess.Popen:  # type: ignore[type-arg]
    return subprocess.Popen([sys.executable, "-m", "syncd.cli", "-c", str(cfg), "run"], cwd=str(cfg.parent),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def q(db: Path, sql: str, **kw: object) -> list[tuple]:  # type: ignore[type-arg]
    if not db.exists():
        return []
    eng = create_engine(f"sqlite:///{db}")
    try:
        with eng.connect() as c:
            return [tuple(r) for r in c.execute(text(sql), kw)]
    except Exception:  # noqa: BLE001 - the daemon may be migrating it right now
        return []
    finally:
        eng.dispose()


def first_write_after(db: Path, t0: float, timeout: float = 120.0) -> float:
    """Seconds from t0 until a write settled `done` after t0 (polled every 50 ms)."""
    import datetime as dt

    since = dt.datetime.fromtimestamp(t0, dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    while time.time() - t0 < timeout:
        rows = q(db, "SELECT MIN(updated_at) FROM outbox WHERE status = 'done' AND attempts > 0 "
                     "AND updated_at > :s", s=since)
        if rows and rows[0][0]:
            return time.time() - t0
        time.sleep(0.05)
    raise SystemExit(f"no write settled within {timeout} s")


def world(orders: int):  # type: ignore[no-untyped-def]
    b24_h = bitrix24.start(rate_limit=True, seed=True)
    shop_h = shop.start(seed=orders)
    return shop_h, b24_h


def run_case(tmp: Path, name: str, orders: int, claim_ttl: float, *, crash: bool,
             other_instance: bool = False) -> dict[str, float]:
    shop_h, b24_h = world(orders)
    state = tmp / name
    state.mkdir()
    db = state / "syncd.db"
    try:
        cfg = write_config(state, shop_h, b24_h, instance=None, claim_ttl=claim_ttl)
        out: dict[str, float] = {}
        if not crash:
            t0 = time.time()
            p = start_daemon(cfg)
            out["first_write_s"] = first_write_after(db, t0)
            p.send_signal(signal.SIGTERM)
            p.wait(30)
            return out
        p = start_daemon(cfg)
        # wait until writes are in flight: some done, some claimed
        deadline = time.time() + 120
        while time.time() < deadline:
            done = q(db, "SELECT COUNT(*) FROM outbox WHERE status = 'done'")
            sending = q(db, "SELECT COUNT(*) FROM outbox WHERE status = 'sending'")
            if done and sending and done[0][0] >= 3 and sending[0][0] >= 1:
                break
            time.sleep(0.02)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        left = [r[0] for r in q(db, "SELECT id FROM outbox WHERE status = 'sending'")]
        out["claims_left_by_the_killed_process"] = float(len(left))
        if other_instance:
            cfg = write_config(state, shop_h, b24_h, instance="another-instance", claim_ttl=claim_ttl)
        t0 = time.time()
        p = start_daemon(cfg)
        out["first_write_s"] = first_write_after(db, t0)
        # the writes the dead process held: when is the first of them through?
        ids = ",".join(str(i) for i in left) or "0"
        while time.time() - t0 < 300:
            if q(db, f"SELECT 1 FROM outbox WHERE id IN ({ids}) AND status IN ('done', 'blocked')"):
                break
            time.sleep(0.05)
        out["first_reclaimed_write_s"] = time.time() - t0
        # and its own claims are taken back: none of them stays claimed past a few seconds
        p.send_signal(signal.SIGTERM)
        p.wait(30)
        return out
    finally:
        shop_h.stop()
        b24_h.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=120, help="shop orders in the backlog")
    ap.add_argument("--claim-ttl", type=float, default=30.0, help="push.claim_ttl of the daemon")
    ap.add_argument("--other-instance", action="store_true",
                    help="also restart under another instance name (waits for the claim TTL)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        clean = run_case(tmp, "clean", a.orders, a.claim_ttl, crash=False)
        crash = run_case(tmp, "crash", a.orders, a.claim_ttl, crash=True)
        other = run_case(tmp, "other", a.orders, a.claim_ttl, crash=True, other_instance=True) \
            if a.other_instance else None
    fig = {"restart_first_write_s": round(crash["first_write_s"], 2),
           "restart_first_reclaimed_write_s": round(crash["first_reclaimed_write_s"], 2),
           "claims_left_by_kill": int(crash["claims_left_by_the_killed_process"]),
           "clean_start_first_write_s": round(clean["first_write_s"], 2),
           "restart_vs_clean_start": round(crash["first_write_s"] / clean["first_write_s"], 3),
           "claim_ttl_s": a.claim_ttl, "orders": a.orders}
    print(f"clean start: first write after {clean['first_write_s']:.2f} s (anchor)")
    print(f"kill -9 with {fig['claims_left_by_kill']} writes claimed, restart (same instance): first write "
          f"after {crash['first_write_s']:.2f} s -> {fig['restart_vs_clean_start']} x the clean start "
          f"(goal < 10 s); first of the dead process's own claims through after "
          f"{crash['first_reclaimed_write_s']:.2f} s")
    if other is not None:
        fig["other_instance_first_write_s"] = round(other["first_write_s"], 2)
        fig["other_instance_first_reclaimed_write_s"] = round(other["first_reclaimed_write_s"], 2)
        print(f"restart under another instance name: first write after {other['first_write_s']:.2f} s "
              f"(its own new work goes first; the dead instance's claims wait out the {a.claim_ttl:.0f} s TTL)")
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
