"""Calls (issue 25): a PBX's call events into a running `syncd run`, and its routing endpoint, each
against a bare endpoint on the same uvicorn server in the same run.

    python bench/calls.py [--seconds 30] [--rate 200] [--route-seconds 10] [--route-rate 200]

Set-up: a Bitrix24 sandbox in a process of its own (a portal with four managers with extensions
101-104 at work, and `--contacts` clients typed in by hand, each phone in a spelling of its own,
each with one of the managers as responsible); syncd's daemon as a separate process — `syncd run`'s
own code path (config file -> Runtime -> Daemon: scheduler, live check, uvicorn) with the calls
system (syncd's JSON format, HMAC-signed), the portal as an OAuth application (telephony.externalcall.*
work only in an application's context), mappings sync.toml + bitrix24.toml + calls.toml, on SQLite.
The one difference to `syncd run`: a bare route `/bench/bare` (reads the body, answers 200 "ok") is
added to the daemon's own Starlette app, so the anchor is served by the same uvicorn server, event
loop and process as the calls endpoints.

The portal's rate limit (2 req/s, burst 50) is OFF, as in tests/connectors/calls/callsworld.py (and
the crm system's client rate is raised as there): every call costs the portal 3-4 REST requests
(statistic lookup, register, finish, statistic read), so at 2 req/s the drain of one 30 s run would
take hours. `--portal-rate-limit` turns it back on (then give a long `--drain-timeout`).

Phases, in one run (all open loop: request i is sent at t0 + i/rate by one of `--workers` threads,
each with its own keep-alive connection, so a slow answer does not slow the offered load; latency
is send -> answer; a request sent late because every worker was busy is counted in `late_starts`,
and `p99_from_due_ms` measures from the time it was due, the wait for a free worker included):
1. anchor (calls) — the bare endpoint POSTed the same signed JSON bodies at `--rate` for `--seconds`.
2. calls — the same pacing on POST /hooks/calls/calls: `--rate` events/s, each call a start and an
   end event (end 1-6 s after its start), a mix of known callers (the portal's contacts, the number
   in E.164 as a PBX gives it) and unknown ones (a new number per call), `--missed` of them missed.
   Goal: p99 < 100 ms, every event answered 200.
3. drain — until the portal holds a finished call for every call whose end was answered 200: counted
   through the portal's REST (voximplant.statistic.get `total`), then checked call by call (each
   expected caller number against the statistics, through the sandbox's control API) for missing
   and duplicate calls; call activities (crm.activity.list TYPE_ID 2), calls bound to the known
   clients' contacts and the missed ones (STATUS_CODE 304) are counted too.
4. anchor (routing) — the bare endpoint GET at `--route-rate` for `--route-seconds`.
5. routing — GET /hooks/calls/route?caller=… at the same pacing, callers known (any spelling) and
   unknown; every answer checked: a known caller's manager's extension, "" for an unknown one.
   Goal: p99 < 50 ms.

The last line of output is one JSON object with the figures; `run(args)` returns the same dict.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from syncd.sandbox.server import free_port  # noqa: E402

SECRET = "bench-calls-secret"
SYSTEM = "calls"
LINE = "+74951234567"                       # the company's number the clients call
MANAGERS = (("Анна", "Смирнова", "101"), ("Борис", "Петров", "102"), ("Вера", "Козлова", "103"),
            ("Глеб", "Орлов", "104"))
GOAL_CALLS_P99_MS = 100.0
GOAL_ROUTE_P99_MS = 50.0

SANDBOX_APP = """
import sys, threading
from syncd.sandbox import bitrix24
bitrix24.start(port=int(sys.argv[1]), rate_limit=sys.argv[2] == "on")
threading.Event().wait()
"""

# `syncd run` (syncd/cli/daemon.py -> syncd.daemon.main.Daemon) with one bare route added to the
# daemon's own Starlette app: the anchor shares the server, its event loop and the process
DAEMON_APP = """
import sys
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from syncd.daemon import main as daemon_main

_own = daemon_main._http_app

async def bare(request):
    await request.body()
    return PlainTextResponse("ok")

def _http_app(rt, checks):
    app = _own(rt, checks)
    app.router.routes.insert(0, Route("/bench/bare", bare, methods=["GET", "POST"]))
    return app

daemon_main._http_app = _http_app
from syncd.cli import main
main(["-c", sys.argv[1], "run"], prog_name="syncd")
"""


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))]


def wait_up(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{url}: its process ended (exit {proc.returncode})")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def digits(phone: Any) -> str:
    """A phone's digits, the Russian trunk prefix folded (8XXXXXXXXXX, XXXXXXXXXX -> 7XXXXXXXXXX)."""
    d = re.sub(r"\D", "", str(phone or ""))
    if len(d) == 11 and d.startswith("8"):
        d = "7" + d[1:]
    elif len(d) == 10:
        d = "7" + d
    return d


# -- load ------------------------------------------------------------------------------------------
class Load:
    """Open-loop requests from `workers` threads, each with its own keep-alive connection.

    `reqs` are prepared before the clock starts: (method, url, body or None, headers)."""

    def __init__(self, reqs: list[tuple[str, str, bytes | None, dict[str, str]]], workers: int) -> None:
        self.reqs, self.workers = reqs, workers
        self.lat: list[float] = [0.0] * len(reqs)
        self.lat_due: list[float] = [0.0] * len(reqs)     # answer - due: the wait for a free worker too
        self.code: list[int] = [0] * len(reqs)
        self.text: list[str | None] = [None] * len(reqs)
        self.late: list[float] = []
        self._lock = threading.Lock()
        self._next = 0

    def _take(self) -> int:
        with self._lock:
            i = self._next
            self._next += 1
            return i

    def paced(self, rate: float) -> float:
        """Request i at t0 + i/rate. Returns the seconds from t0 to the last answer."""
        total = len(self.reqs)
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
                elif now - due > 0.001:
                    with self._lock:
                        self.late.append(now - due)
                method, url, body, headers = self.reqs[i]
                t = time.perf_counter()
                try:
                    r = s.request(method, url, data=body, headers=headers, timeout=30)
                    code, text = r.status_code, r.text
                except requests.RequestException as exc:
                    code, text = 0, f"{type(exc).__name__}: {exc}"
                done = time.perf_counter()
                self.lat[i], self.lat_due[i] = done - t, done - due
                self.code[i], self.text[i] = code, text

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.workers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return time.perf_counter() - t0

    def figures(self, elapsed: float) -> dict[str, Any]:
        codes = Counter(self.code)
        ok = codes.get(200, 0)
        return {"requests": len(self.reqs), "ok": ok, "codes": {str(k): v for k, v in sorted(codes.items())},
                "per_s": round(ok / elapsed, 1) if elapsed else 0.0,
                "p50_ms": round(percentile(self.lat, 50) * 1000, 2), "p99_ms": round(percentile(self.lat, 99) * 1000, 2),
                "max_ms": round(max(self.lat) * 1000, 2) if self.lat else None,
                "p99_from_due_ms": round(percentile(self.lat_due, 99) * 1000, 2),
                "late_starts": len(self.late), "latest_start_ms": round(max(self.late) * 1000, 1) if self.late else 0.0}


# -- the world -------------------------------------------------------------------------------------
class Portal:
    """The sandbox portal through its control API and its inbound webhook (public REST)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ctl = url + "/_sandbox/default"
        self.s = requests.Session()
        self.webhook = str(self._j("GET", "")["webhook_url"])

    def _j(self, method: str, path: str, body: Any = None) -> Any:
        r = self.s.request(method, self.ctl + path, json=body, timeout=60)
        if r.status_code >= 300:
            raise SystemExit(f"sandbox {method} {path}: {r.status_code} {r.text[:300]}")
        return r.json()

    def rest(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        body = self.s.post(self.webhook + method + ".json", json=params or {}, timeout=60).json()
        if "error" in body:
            raise SystemExit(f"portal {method}: {body}")
        return body

    def total(self, method: str, params: dict[str, Any] | None = None) -> int:
        return int(self.rest(method, params).get("total", 0))

    def statistics(self) -> list[dict[str, Any]]:
        return list(self._j("GET", "/telephony/statistics")["statistics"])


def spelled(e164: str, i: int) -> str:
    """A phone as a manager might type it: +7XXXXXXXXXX -> one of several spellings."""
    d = e164[2:]
    return [f"8 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}", f"+7 {d[:3]} {d[3:]}", f"8{d}",
            f"7-{d[:3]}-{d[3:6]}-{d[6:]}"][i % 4]


def set_up_portal(p: Portal, contacts: int) -> tuple[dict[str, str], dict[str, str]]:
    """Managers with extensions (at work), clients typed by hand. -> (user id -> extension,
    client's E.164 -> his manager's extension)."""
    for name, type_ in (("UF_CRM_SHOP_ORDER", "string"), ("UF_CRM_FROM_SHOP", "boolean")):
        # the user fields bitrix24.toml's deal map names (the daemon's live check needs them)
        p._j("POST", "/userfields", {"entity": "deal", "field_name": name, "type": type_, "label": name})
    staff: dict[str, str] = {}
    for name, last, inner in MANAGERS:
        uid = str(p._j("POST", "/users", {"name": name, "last_name": last, "workday": "OPENED",
                                          "phone_inner": inner})["ID"])
        staff[uid] = inner
    uids = list(staff)
    known: dict[str, str] = {}
    for i in range(contacts):
        e164 = f"+7916{i:07d}"
        uid = uids[i % len(uids)]
        p.rest("crm.contact.add", {"fields": {"NAME": f"Клиент {i}", "LAST_NAME": "Звонков", "ASSIGNED_BY_ID": uid,
                                              "PHONE": [{"VALUE": spelled(e164, i), "VALUE_TYPE": "MOBILE"}]}})
        known[e164] = staff[uid]
    return staff, known


def write_config(tmp: Path, port: int, tok: dict[str, Any], push_interval: float) -> Path:
    maps = [str(ROOT / "mappings" / n) for n in ("sync.toml", "bitrix24.toml", "calls.toml")]
    portal = tok["rest_url"].removesuffix("/").removesuffix("/rest")
    # the portal as an OAuth application, as callsworld sets it up (its client rate raised: the
    # sandbox's limit is off)
    crm = {"portal_url": portal, "client_id": tok["client_id"], "client_secret": tok["client_secret"],
           "access_token": tok["access_token"], "refresh_token": tok["refresh_token"],
           "oauth_url": tok["token_url"], "rate": 500.0, "burst": 1000.0}
    calls = {"vendor": "syncd", "secret": SECRET, "crm": "crm"}
    lines = ["[daemon]", f'database_url = "sqlite:///{tmp}/syncd.db"', f'listen = "127.0.0.1:{port}"',
             f"mappings = {json.dumps(maps)}", f'state_dir = "{tmp}"', f"push_interval = {push_interval}",
             'log_level = "warning"', 'log_format = "json"', "retention_days = 0", "",
             f"[systems.{SYSTEM}]", 'type = "calls"'] + [f"{k} = {json.dumps(v)}" for k, v in calls.items()]
    lines += ["", "[systems.crm]", 'type = "bitrix24"'] + [f"{k} = {json.dumps(v)}" for k, v in crm.items()]
    for stream in ("contacts", "leads"):
        lines += ["", "[[jobs]]", 'system = "crm"', f'stream = "{stream}"', 'every = "3s"']
    path = tmp / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- the calls -------------------------------------------------------------------------------------
def signed(doc: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Syncd-Signature": "sha256=" + sig}


def plan_calls(n: int, rate: float, known: dict[str, str], known_share: float, missed_share: float,
               tag: str, prefix: str, rng: random.Random) -> tuple[list[tuple[bytes, dict[str, str]]], list[dict[str, Any]]]:
    """n calls, 2n events in the order a PBX would send them over 2n/rate seconds: call c starts at
    c * 2/rate, ends 1-6 s later. -> (signed bodies in sending order, the calls)."""
    base = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    knowns = sorted(known)
    calls: list[dict[str, Any]] = []
    events: list[tuple[float, int, dict[str, Any]]] = []
    for c in range(n):
        is_known = rng.random() < known_share
        caller = rng.choice(knowns) if is_known else f"{prefix}{c:05d}"
        missed = rng.random() < missed_share
        ext = known[caller] if is_known else rng.choice(MANAGERS)[2]
        t_start = c * 2.0 / rate
        gap = rng.uniform(1.0, 6.0)
        call = {"call_id": f"bench-{tag}-{c}", "caller": caller, "known": is_known, "missed": missed}
        calls.append(call)
        common = {"call_id": call["call_id"], "direction": "in", "caller": caller, "called": LINE}
        start = {**common, "event": "start", "at": (base + dt.timedelta(seconds=t_start)).isoformat()}
        end = {**common, "event": "end", "at": (base + dt.timedelta(seconds=t_start + gap)).isoformat(),
               "status": "missed" if missed else "answered", "duration": 0 if missed else max(1, int(gap - 1))}
        if not missed:
            end["extension"] = ext
        events += [(t_start, 2 * c, start), (t_start + gap, 2 * c + 1, end)]
    events.sort()
    return [signed(ev) for _, _, ev in events], calls


def answered_calls(load: Load) -> tuple[set[str], set[str]]:
    """-> (call ids whose end was answered 200, call ids with any event answered 200)."""
    ended: set[str] = set()
    any_ok: set[str] = set()
    for (_, _, body, _), code in zip(load.reqs, load.code):
        if code != 200 or body is None:
            continue
        doc = json.loads(body)
        any_ok.add(doc["call_id"])
        if doc["event"] == "end":
            ended.add(doc["call_id"])
    return ended, any_ok


def post_reqs(url: str, bodies: list[tuple[bytes, dict[str, str]]]) -> list[tuple[str, str, bytes | None, dict[str, str]]]:
    return [("POST", url, b, h) for b, h in bodies]


def route_callers(n: int, known: dict[str, str], rng: random.Random) -> list[tuple[str, str]]:
    """n (caller as the PBX sends it, the answer it must get): half known (E.164 or another
    spelling), half unknown."""
    knowns = sorted(known)
    out = []
    for j in range(n):
        if j % 2 == 0:
            e164 = rng.choice(knowns)
            out.append((e164 if j % 4 == 0 else spelled(e164, j // 4), known[e164]))
        else:
            out.append((f"+7905{j:07d}", ""))
    return out


# -- the run ---------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    tag = f"{rng.randrange(100):02d}"
    out: dict[str, Any] = {
        "bench": "calls", "store": "sqlite", "push_interval": args.push_interval, "workers": args.workers,
        "portal_rate_limit": bool(args.portal_rate_limit),
        "goal": {"events_per_s": args.rate, "seconds": args.seconds, "calls_p99_ms": GOAL_CALLS_P99_MS,
                 "route_per_s": args.route_rate, "route_seconds": args.route_seconds,
                 "route_p99_ms": GOAL_ROUTE_P99_MS}}
    bport = free_port()
    procs: list[subprocess.Popen[bytes]] = [subprocess.Popen(
        [sys.executable, "-c", SANDBOX_APP, str(bport), "on" if args.portal_rate_limit else "off"])]
    b24_url = f"http://127.0.0.1:{bport}"
    tmp = Path(tempfile.mkdtemp(prefix="syncd-bench-calls-"))
    daemon_log = tmp / "daemon.log"
    try:
        wait_up(b24_url + "/_sandbox/portals", proc=procs[0])
        portal = Portal(b24_url)
        t = time.perf_counter()
        staff, known = set_up_portal(portal, args.contacts)
        tok = portal._j("POST", "/oauth/tokens", {"user_id": 1})
        out["setup"] = {"managers": len(staff), "contacts": len(known), "seconds": round(time.perf_counter() - t, 1)}

        # the daemon
        port = free_port()
        cfg = write_config(tmp, port, tok, args.push_interval)
        with open(daemon_log, "wb") as logf:
            daemon = subprocess.Popen([sys.executable, "-c", DAEMON_APP, str(cfg)], cwd=str(ROOT),
                                      stdout=logf, stderr=subprocess.STDOUT)
        procs.append(daemon)
        base = f"http://127.0.0.1:{port}"
        wait_up(base + "/healthz", proc=daemon)
        hook, route, bare = base + "/hooks/calls/" + SYSTEM, base + "/hooks/calls/route", base + "/bench/bare"

        # ready: the clients are read from the portal (the routing endpoint knows the last one's manager)
        t = time.perf_counter()
        last = f"+7916{args.contacts - 1:07d}"
        while True:
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon ended (exit {daemon.returncode}); its log: {daemon_log}")
            try:
                if requests.get(route, params={"caller": last}, timeout=5).text == known[last]:
                    break
            except requests.RequestException:
                pass
            if time.perf_counter() - t > 90:
                raise SystemExit(f"the daemon never routed a known client; its log: {daemon_log}")
            time.sleep(0.2)
        out["setup"]["ready_seconds"] = round(time.perf_counter() - t, 1)

        # warm-up: first connections, the first writes to the portal (their calls are counted too)
        wbodies, wcalls = plan_calls(10, 20.0, known, args.known, args.missed, tag + "w", f"+7904{tag}", rng)
        warm_b = Load(post_reqs(bare, wbodies), 4)
        warm_b.paced(40.0)
        warm = Load(post_reqs(hook, wbodies), 4)
        warm.paced(20.0)
        if warm.code.count(200) != len(wbodies):
            raise SystemExit(f"the daemon does not answer the warm-up calls 200: {Counter(warm.code)} "
                             f"{[x for x in warm.text if x != 'ok'][:3]}")

        # 1. anchor for the calls: the same bodies, the same pacing, the bare route
        n_calls = int(args.rate * args.seconds / 2)
        bodies, calls = plan_calls(n_calls, args.rate, known, args.known, args.missed, tag, f"+7903{tag}", rng)
        anchor = Load(post_reqs(bare, bodies), args.workers)
        out["calls_anchor"] = anchor.figures(anchor.paced(args.rate))

        # 2. the calls
        load = Load(post_reqs(hook, bodies), args.workers)
        out["calls"] = load.figures(load.paced(args.rate))
        t_end = time.perf_counter()
        c = out["calls"]
        c["calls"] = n_calls
        c["known_calls"] = sum(1 for x in calls if x["known"])
        c["missed_calls"] = sum(1 for x in calls if x["missed"])
        bad = [x for x, code in zip(load.text, load.code) if code != 200]
        if bad:
            c["first_errors"] = bad[:3]
        a = out["calls_anchor"]["p99_ms"]
        out["calls_ratio_p99"] = round(c["p99_ms"] / a, 2) if a else None

        # 3. drain: a finished call in the portal for every call whose end was answered 200
        ended, _ = answered_calls(load)
        wended, _ = answered_calls(warm)
        all_calls = {x["call_id"]: x for x in calls + wcalls}
        expected = len(ended) + len(wended)
        have = 0
        while time.perf_counter() - t_end < args.drain_timeout and daemon.poll() is None:
            have = portal.total("voximplant.statistic.get")
            if have >= expected:
                break
            time.sleep(0.5)
        drain_s = time.perf_counter() - t_end
        # call by call: each expected caller number against the statistics
        stats = portal.statistics()
        want = Counter(digits(all_calls[cid]["caller"]) for cid in ended | wended)
        got = Counter(digits(s.get("PHONE_NUMBER")) for s in stats)
        missing = sum(max(0, k - got.get(ph, 0)) for ph, k in want.items())
        extra = sum(max(0, k - want.get(ph, 0)) for ph, k in got.items())
        ext_ids = [s.get("EXTERNAL_CALL_ID") for s in stats]
        finished_ids = ended | wended
        out["drain"] = {
            "expected_calls": expected, "calls_in_portal": len(stats), "missing": missing, "extra": extra,
            "duplicates": len(ext_ids) - len(set(ext_ids)), "seconds": round(drain_s, 1),
            "all_arrived": missing == 0 and have >= expected,
            "missed_expected": sum(1 for cid in finished_ids if all_calls[cid]["missed"]),
            "missed_in_portal": sum(1 for s in stats if str(s.get("CALL_FAILED_CODE")) == "304"),
            "known_expected": sum(1 for cid in finished_ids if all_calls[cid]["known"]),
            "on_contacts": sum(1 for s in stats if s.get("CRM_ENTITY_TYPE") == "CONTACT"),
            "call_activities": portal.total("crm.activity.list", {"filter": {"TYPE_ID": 2}, "select": ["ID"]}),
            "leads": portal.total("crm.lead.list", {"select": ["ID"]}),
            "active_unfinished": len(portal._j("GET", "/telephony/calls")["calls"]),
            "daemon_alive": daemon.poll() is None}

        # 4. + 5. routing, against the bare route at the same pacing
        n_route = int(args.route_rate * args.route_seconds)
        callers = route_callers(n_route, known, rng)
        ranchor = Load([("GET", f"{bare}?caller={quote(cl)}", None, {}) for cl, _ in callers], args.workers)
        out["route_anchor"] = ranchor.figures(ranchor.paced(args.route_rate))
        rload = Load([("GET", f"{route}?caller={quote(cl)}", None, {}) for cl, _ in callers], args.workers)
        out["route"] = rload.figures(rload.paced(args.route_rate))
        r = out["route"]
        r["known"] = sum(1 for _, w in callers if w)
        r["right_answers"] = sum(1 for (_, w), code, txt in zip(callers, rload.code, rload.text)
                                 if code == 200 and txt == w)
        r["wrong"] = [{"caller": cl, "want": w, "got": txt} for (cl, w), txt in zip(callers, rload.text)
                      if txt != w][:3]
        a = out["route_anchor"]["p99_ms"]
        out["route_ratio_p99"] = round(r["p99_ms"] / a, 2) if a else None

        d = out["drain"]
        out["calls_goal_met"] = bool(c["p99_ms"] < GOAL_CALLS_P99_MS and c["ok"] == c["requests"]
                                     and d["all_arrived"] and d["extra"] == 0 and d["duplicates"] == 0)
        out["route_goal_met"] = bool(r["p99_ms"] < GOAL_ROUTE_P99_MS and r["right_answers"] == r["requests"])
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        return out
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
                pr.wait(10)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="calls phase length (goal: 30)")
    ap.add_argument("--rate", type=float, default=200.0, help="call events posted per second (goal: 200)")
    ap.add_argument("--route-seconds", type=float, default=10.0, help="routing phase length (goal: 10)")
    ap.add_argument("--route-rate", type=float, default=200.0, help="routing requests per second (goal: 200)")
    ap.add_argument("--contacts", type=int, default=300, help="known clients in the portal")
    ap.add_argument("--known", type=float, default=0.4, help="share of calls from known clients")
    ap.add_argument("--missed", type=float, default=0.2, help="share of missed calls")
    ap.add_argument("--workers", type=int, default=32, help="client threads (keep-alive connections)")
    ap.add_argument("--drain-timeout", type=float, default=180.0, help="seconds to wait for every call")
    ap.add_argument("--push-interval", type=float, default=0.2, help="the daemon's push_interval, seconds")
    ap.add_argument("--portal-rate-limit", action="store_true",
                    help="keep the portal's 2 req/s limit (the drain then takes hours)")
    ap.add_argument("--seed", type=int, default=25, help="random seed of the calls' mix")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    res = run(args)
    s, c, ca, d = res["setup"], res["calls"], res["calls_anchor"], res["drain"]
    r, ra = res["route"], res["route_anchor"]
    print(f"portal: {s['managers']} managers, {s['contacts']} contacts; rate limit "
          f"{'ON (2 req/s)' if res['portal_rate_limit'] else 'OFF (at 2 req/s the drain would take hours; as in callsworld)'}; "
          f"daemon routed the clients after {s['ready_seconds']} s")
    print(f"calls: {c['calls']} calls ({c['known_calls']} known, {c['missed_calls']} missed), "
          f"{c['requests']} events paced at {args.rate:g}/s for {args.seconds:g} s: {c['per_s']}/s answered 200, "
          f"p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms, max {c['max_ms']} ms, codes {c['codes']}; "
          f"late starts {c['late_starts']} (latest {c['latest_start_ms']} ms, p99 from due time "
          f"{c['p99_from_due_ms']} ms)")
    print(f"  bare endpoint, same server, same pacing: p50 {ca['p50_ms']} ms, p99 {ca['p99_ms']} ms, "
          f"max {ca['max_ms']} ms -> p99 ratio ours/bare {res['calls_ratio_p99']}")
    print(f"  drain: {d['calls_in_portal']}/{d['expected_calls']} calls in the portal after {d['seconds']} s, "
          f"missing {d['missing']}, extra {d['extra']}, duplicates {d['duplicates']}; missed {d['missed_in_portal']}/"
          f"{d['missed_expected']}, on contacts {d['on_contacts']}/{d['known_expected']}, call activities "
          f"{d['call_activities']}, leads {d['leads']}, still active {d['active_unfinished']}")
    print(f"  goal (p99 < {GOAL_CALLS_P99_MS:g} ms, every event 200, every call in the portal): "
          f"{'met' if res['calls_goal_met'] else 'NOT met'}")
    print(f"routing: {r['requests']} requests ({r['known']} known callers) paced at {args.route_rate:g}/s for "
          f"{args.route_seconds:g} s: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms, "
          f"right answers {r['right_answers']}/{r['requests']}, late starts {r['late_starts']} "
          f"(p99 from due time {r['p99_from_due_ms']} ms)")
    print(f"  bare endpoint, same server, same pacing: p50 {ra['p50_ms']} ms, p99 {ra['p99_ms']} ms -> "
          f"p99 ratio ours/bare {res['route_ratio_p99']}")
    print(f"  goal (p99 < {GOAL_ROUTE_P99_MS:g} ms, every answer right): {'met' if res['route_goal_met'] else 'NOT met'}")
    print(json.dumps(res, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
