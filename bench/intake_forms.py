"""Form posts per second into a running `syncd run`, with latency, and every 200 a lead (S4 goal:
200 posts/s for 60 s with p99 < 200 ms on loopback).

Set-up: a Bitrix24 sandbox with a fresh portal (its rate limit off, so the drain measures syncd, not
the portal's 2 req/s), and `syncd run` as a separate process with one form (rate limit off,
duplicate window on) on SQLite (`--pg URL`: a fresh database on that PostgreSQL server, dropped after).

Phases, in one run:
1. anchor — a trivial Starlette endpoint (reads the body, answers 200 JSON) in its own process on
   the same uvicorn and loopback, driven closed-loop by the same client: the most posts/s this
   machine's HTTP stack gives.
2. paced — the form posted at `--rate` posts/s for `--seconds` (open loop: post i is due at
   t0 + i/rate, so a slow answer does not slow the offered load); latency is send -> answer.
3. saturation — the form driven closed-loop like the anchor for `--burst-seconds`: its most
   posts/s; ratio = saturation / anchor.
4. drain — wait until the portal holds a lead for every distinct id answered 200, counted through
   the portal's public REST (crm.lead.list `total`).

Usage: python bench/intake_forms.py [--seconds 60] [--rate 200] [--workers 16] [--pg URL]
The last line of output is one JSON object with the figures. `run(args)` returns the same dict
(bench/intake.py combines it with the mailbox figures).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from syncd.sandbox.server import free_port  # noqa: E402

TOKEN = "bench-form-token-0123"
ANCHOR_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def post(request):
    await request.body()
    return JSONResponse({"ok": True, "id": "anchor"})

app = Starlette(routes=[Route("/hooks/forms/anchor", post, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, lifespan="off")
"""


SANDBOX_APP = """
import sys, threading
from syncd.sandbox import bitrix24
bitrix24.start(port=int(sys.argv[1]), rate_limit=False)
threading.Event().wait()
"""


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))]


def wait_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def body(i: int, tag: str) -> dict[str, str]:
    return {"your_name": f"Bench {tag} {i}", "tel": f"+7999{i % 10_000_000:07d}", "msg": "Перезвоните, пожалуйста"}


# -- load --------------------------------------------------------------------------------------------
class Load:
    """Posts from `workers` threads, each with its own keep-alive connection."""

    def __init__(self, url: str, workers: int, tag: str, token: str | None) -> None:
        self.url, self.workers, self.tag = url, workers, tag
        self.headers = {"X-Syncd-Token": token} if token else {}
        self.lat: list[float] = []
        self.codes: dict[int, int] = {}
        self.ids: set[str] = set()
        self.late: list[float] = []
        self._lock = threading.Lock()
        self._next = 0

    def _take(self) -> int:
        with self._lock:
            i = self._next
            self._next += 1
            return i

    def _one(self, s: requests.Session, i: int) -> None:
        t = time.perf_counter()
        try:
            r = s.post(self.url, data=body(i, self.tag), headers=self.headers, timeout=30)
            code = r.status_code
            sid = r.json().get("id") if code == 200 else None
        except requests.RequestException:
            code, sid = 0, None
        dt_ = time.perf_counter() - t
        with self._lock:
            self.lat.append(dt_)
            self.codes[code] = self.codes.get(code, 0) + 1
            if sid:
                self.ids.add(sid)

    def _each_worker(self, worker: Any) -> None:
        """Run `worker` in each of the client threads, until all return."""
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.workers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    def paced(self, rate: float, seconds: float) -> float:
        """Open loop: post i at t0 + i/rate. Returns the elapsed seconds."""
        total = int(rate * seconds)
        t0 = time.perf_counter() + 0.2

        def worker() -> None:
            s = requests.Session()
            while True:
                i = self._take()
                if i >= total:
                    return
                due = t0 + i / rate
                now = time.perf_counter()
                if due > now:
                    time.sleep(due - now)
                else:
                    with self._lock:
                        self.late.append(now - due)
                self._one(s, i)

        self._each_worker(worker)
        return time.perf_counter() - t0

    def closed(self, seconds: float, start: int = 0) -> float:
        """Closed loop: each worker posts again as soon as answered. Returns elapsed seconds."""
        self._next = start
        stop = time.perf_counter() + seconds
        t0 = time.perf_counter()

        def worker() -> None:
            s = requests.Session()
            while time.perf_counter() < stop:
                self._one(s, self._take())

        self._each_worker(worker)
        return time.perf_counter() - t0

    def figures(self, elapsed: float) -> dict[str, Any]:
        ok = self.codes.get(200, 0)
        return {"posts": sum(self.codes.values()), "ok": ok, "codes": {str(k): v for k, v in self.codes.items()},
                "posts_per_s": round(ok / elapsed, 1) if elapsed else 0.0,
                "p50_ms": round(percentile(self.lat, 50) * 1000, 2), "p99_ms": round(percentile(self.lat, 99) * 1000, 2),
                "max_ms": round(max(self.lat) * 1000, 2) if self.lat else None,
                "late_starts": len(self.late)}


# -- set-up ------------------------------------------------------------------------------------------
def fresh_pg(url: str) -> tuple[str, Any]:
    """A new database on the server of `url`, and a function dropping it."""
    from syncd.store.scratch import scratch_database

    return scratch_database(url, "syncd_bench_")


def write_config(tmp: Path, port: int, webhook_url: str, db_url: str, push_interval: float = 0.2) -> Path:
    maps = [str(ROOT / "mappings" / n) for n in ("sync.toml", "bitrix24.toml", "forms.toml")]
    lines = ["[daemon]", f'database_url = "{db_url}"', f'listen = "127.0.0.1:{port}"', f"mappings = {json.dumps(maps)}",
             f'state_dir = "{tmp}"', f"push_interval = {push_interval}", 'log_level = "warning"', "retention_days = 0", "",
             "[systems.crm]", 'type = "bitrix24"', f'webhook_url = "{webhook_url}"', "",
             "[systems.forms]", 'type = "forms"', "",
             "[systems.forms.form.bench]", f'token = "{TOKEN}"',
             'fields = { your_name = "lead.name", tel = "lead.phone", msg = "lead.comment" }',
             'required = ["tel"]', 'responsible = "1"', "rate_limit = 0", "duplicate_window = 600", ""]
    path = tmp / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def lead_total(webhook_url: str) -> int:
    r = requests.post(webhook_url + "crm.lead.list.json", json={"select": ["ID"]}, timeout=30).json()
    return int(r.get("total", 0))


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"bench": "intake_forms", "store": "postgresql" if args.pg else "sqlite",
                           "push_interval": args.push_interval,
                           "goal": {"posts_per_s": args.rate, "seconds": args.seconds, "p99_ms": 200}}
    # the portal in a process of its own, as a real one is: it must not share this client's GIL
    bport = free_port()
    procs: list[subprocess.Popen[bytes]] = [subprocess.Popen([sys.executable, "-c", SANDBOX_APP, str(bport)])]
    b24_url = f"http://127.0.0.1:{bport}"
    tmp = Path(tempfile.mkdtemp(prefix="syncd-bench-forms-"))
    drop = None
    db_url = f"sqlite:///{tmp}/syncd.db"
    try:
        wait_up(b24_url + "/_sandbox/portals")
        portal = requests.post(b24_url + "/_sandbox/portals", json={"name": "bench", "rate_limit": False},
                               timeout=30).json()
        webhook = portal["webhook_url"]
        for name, type_ in (("UF_CRM_SHOP_ORDER", "string"), ("UF_CRM_FROM_SHOP", "boolean")):
            # the user fields the example deal map names (the daemon checks them at start)
            requests.post(f"{b24_url}/_sandbox/bench/userfields", json={"entity": "deal", "field_name": name,
                                                                         "type": type_, "label": name}, timeout=30)
        if args.pg:
            db_url, drop = fresh_pg(args.pg)
        # 1. the anchor: a bare endpoint on the same uvicorn and loopback
        aport = free_port()
        procs.append(subprocess.Popen([sys.executable, "-c", ANCHOR_APP, str(aport)]))
        wait_up(f"http://127.0.0.1:{aport}/")
        anchor = Load(f"http://127.0.0.1:{aport}/hooks/forms/anchor", args.workers, "anchor", None)
        out["anchor"] = anchor.figures(anchor.closed(args.burst_seconds))
        anchor_proc = procs.pop()
        anchor_proc.terminate()
        anchor_proc.wait(10)

        # the daemon
        port = free_port()
        cfg = write_config(tmp, port, webhook, db_url, args.push_interval)
        daemon = subprocess.Popen([sys.executable, "-m", "syncd.cli", "-c", str(cfg), "run"], cwd=str(ROOT),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(daemon)
        wait_up(f"http://127.0.0.1:{port}/healthz")
        url = f"http://127.0.0.1:{port}/hooks/forms/bench"
        # warm-up: first connections, the engine's first batch
        warm = Load(url, 2, "warmup", TOKEN)
        warm.paced(50, 1.0)
        if not warm.ids:
            raise SystemExit(f"the daemon answers no post: {warm.codes}")

        # 2. paced at the goal's rate
        paced = Load(url, args.workers, "paced", TOKEN)
        out["paced"] = paced.figures(paced.paced(args.rate, args.seconds))
        # 3. saturation
        sat = Load(url, args.workers, "burst", TOKEN)
        out["saturation"] = sat.figures(sat.closed(args.burst_seconds))
        a = out["anchor"]["posts_per_s"]
        out["ratio_vs_anchor"] = round(out["saturation"]["posts_per_s"] / a, 3) if a else None

        # 4. drain: every distinct id answered 200 is a lead in the portal (warm-up posts included)
        expected = len(warm.ids) + len(paced.ids) + len(sat.ids)
        t0 = time.perf_counter()
        have = 0
        while time.perf_counter() - t0 < args.drain_timeout and daemon.poll() is None:
            have = lead_total(webhook)
            if have >= expected:
                break
            time.sleep(0.5)
        out["drain"] = {"expected_leads": expected, "leads_in_portal": have,
                        "seconds": round(time.perf_counter() - t0, 1), "all_arrived": have == expected}
        p = out["paced"]
        out["goal_met"] = bool(p["posts_per_s"] >= 0.97 * args.rate and p["p99_ms"] < 200
                               and p["ok"] == p["posts"] and out["drain"]["all_arrived"])
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        return out
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
                pr.wait(10)
        if drop is not None:
            drop()


def parser() -> argparse.ArgumentParser:
    """The options `run` reads (bench/intake.py: `run(parser().parse_args([...]))`)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="paced phase length (goal: 60)")
    ap.add_argument("--rate", type=float, default=200.0, help="offered posts/s in the paced phase (goal: 200)")
    ap.add_argument("--workers", type=int, default=16, help="client threads (keep-alive connections)")
    ap.add_argument("--burst-seconds", type=float, default=5.0, help="closed-loop phases (anchor, saturation)")
    ap.add_argument("--drain-timeout", type=float, default=900.0, help="seconds to wait for every lead")
    # the daemon drains its outbox this often while posts arrive: short pushes keep the store's
    # writer (and the GIL) free for the posts; a long interval makes each push a long pause
    ap.add_argument("--push-interval", type=float, default=0.2, help="the daemon's push_interval, seconds")
    ap.add_argument("--pg", metavar="URL", help="PostgreSQL server: a fresh database on it instead of SQLite")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    res = run(args)
    a, p, s, d = res["anchor"], res["paced"], res["saturation"], res["drain"]
    print(f"anchor (bare Starlette endpoint): {a['posts_per_s']} posts/s, p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms")
    print(f"forms paced at {args.rate}/s for {args.seconds:g} s ({res['store']}): {p['posts_per_s']} posts/s answered 200, "
          f"p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} ms, codes {p['codes']}")
    print(f"forms saturation: {s['posts_per_s']} posts/s, p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms; "
          f"ratio vs anchor {res['ratio_vs_anchor']}")
    print(f"drain: {d['leads_in_portal']}/{d['expected_leads']} leads in the portal after {d['seconds']} s")
    print(f"goal (>= {args.rate:g}/s, p99 < 200 ms, every 200 a lead): {'met' if res['goal_met'] else 'NOT met'}")
    print(json.dumps(res, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
