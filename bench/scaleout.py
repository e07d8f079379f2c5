"""Scaling out on PostgreSQL (issue 20): one and two `syncd run` instances on one database, against a
sandbox Bitrix24 portal that adds 200 ms to every answer, working off a backlog of shop orders
(each by a new buyer: a contact, a deal with product rows, a notice to its manager).

(a) Self-hosted portal (no rate limit; the connector's `rate` raised to 1000/s): orders per second
    from the shop's answer to the poll that read the backlog to the portal's answer to the last
    write (the wait for that poll, 0-3 s, is printed apart), one instance, then two on a fresh
    database and fresh peers. Anchor: one instance, same run. Goal: two >= 1.6 x one. The
    machine's CPU use over the run is printed beside it (2 daemons, PostgreSQL and the sandboxes
    share its cores).
(b) Cloud limit (2 requests/s, burst 50; the connector's default rate 2/s, burst 50), one and then
    two instances: the rate of requests the portal let through while the bucket was full, against
    the portal's ceiling (anchor): the most its leaky bucket admits over that window (2/s, plus
    what was left of the bucket when the window opened). The window opens when the portal's bucket
    (replayed from its own request log) first comes within 5 of full and closes at the last write.
    Goal: >= 0.95 for both, with zero QUERY_LIMIT_EXCEEDED. Also printed: the whole backlog's time
    against what the limit allows for its commands (commands / 50 per batch call / 2 calls per s).
(c) Two instances, cloud limit: one is killed with SIGKILL while it holds a job's lease and claimed
    writes. Measured from the kill: the survivor's first run of the job the dead one held (leases:
    job:<system>:<stream>; runs table), against `daemon.lease_ttl` (anchor); the survivor claiming
    the writes the dead one had claimed (outbox claimed_at), against `push.claim_ttl` (anchor), and
    confirming them. Goal: the job within the lease time (the claims are printed against their
    TTL beside it). Then the backlog drains and the portal is checked for duplicates and losses
    (deals, contacts, notices: one each per order).

Jobs (every instance): shop orders every 3 s (the demo's poll), CRM deals 3 s, contacts 5 s,
companies and leads 10 s; push_interval 0.5 s. Each part starts on a fresh database and fresh peers;
the daemons are up (their live checks passed) before the backlog is placed in the shop at once.
Needs PostgreSQL: --pg URL or SYNCD_TEST_POSTGRES_URL.

Usage: python bench/scaleout.py [--orders 400] [--only a,b,c] [--repeat 1] [--latency 0.2] [--lease-ttl 30]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Self

from world import (
    BATCH,
    BURST,
    DB,
    RATE,
    Daemon,
    Peers,
    admitted,
    as_epoch,
    commands_of,
    end_of,
    free_port,
    fresh_pg,
    is_write,
    methods_of,
    packing,
    r,
    write_config,
)

JOBS = (("shop", "orders", "3s"), ("crm", "deals", "3s"), ("crm", "contacts", "5s"), ("crm", "companies", "10s"),
        ("crm", "leads", "10s"))
OPEN = "SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'sending', 'blocked')"


class Cluster:
    """Fresh peers, a fresh PostgreSQL database and `k` daemons on it, all up."""

    def __init__(self, a: argparse.Namespace, tmp: Path, tag: str, k: int, *, cloud: bool) -> None:
        self.a, self.cloud = a, cloud
        self.url, self._drop = fresh_pg(a.pg)
        self.peers = Peers(rate_limit=cloud, latency=a.latency)
        self.db = DB(self.url)
        self.daemons: list[Daemon] = []
        rate, burst = (RATE, BURST) if cloud else (1000.0, 1000.0)
        for i in range(k):
            port = free_port()
            cfg = write_config(tmp / f"{tag}-{i + 1}", self.peers, db_url=self.url, instance=f"bench-{i + 1}",
                               port=port, jobs=JOBS, push_interval=0.5, lease_ttl=a.lease_ttl,
                               claim_ttl=a.claim_ttl, rate=rate, burst=burst)
            self.daemons.append(Daemon(cfg, port))

    def __enter__(self) -> Self:
        try:
            for d in self.daemons:
                d.start()
            for d in self.daemons:
                d.wait_ready(120)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for d in self.daemons:
            d.stop()
        self.db.close()
        self.peers.stop()
        self._drop()

    def drained(self, n: int) -> bool:
        with self.peers.portal.lock:
            deals = len(self.peers.portal.tables["deal"])
        return deals >= n and self.db.one(OPEN) == 0

    def cpu(self) -> list[float | None]:
        out: list[float | None] = []
        for d in self.daemons:
            try:
                import psutil
                ct = psutil.Process(d.pid).cpu_times()
                out.append(round(ct.user + ct.system, 1))
            except Exception:  # noqa: BLE001 - killed, or no psutil
                out.append(None)
        return out

    def shares(self) -> dict[str, int]:
        """Writes each instance confirmed to the portal (its push runs' created + updated)."""
        out: dict[str, int] = collections.Counter()
        for inst, counts in self.db.q("SELECT instance, counts FROM runs WHERE system = 'crm' AND stream = 'push'"):
            c = json.loads(counts or "{}")
            out[inst] += int(c.get("created", 0)) + int(c.get("updated", 0))
        return dict(sorted(out.items()))

    def portal_counts(self) -> dict[str, int]:
        p = self.peers.portal
        with p.lock:
            deals = list(p.tables["deal"].values())
            return {"deals": len(deals), "distinct_deal_origins": len({d.get("ORIGIN_ID") for d in deals}),
                    "contacts": len(p.tables["contact"]), "notices": len(p.notify_log)}


def machine_busy() -> float:
    """CPU seconds this machine spent busy (all processes, all cores) so far."""
    import psutil
    ct = psutil.cpu_times()
    return float(ct.user + ct.system + getattr(ct, "nice", 0.0) + getattr(ct, "irq", 0.0)
                 + getattr(ct, "softirq", 0.0))


def cpu_by_process() -> dict[tuple[int, float], tuple[float, str]]:
    """(pid, start time) -> (CPU seconds so far, command line) of every process."""
    import psutil
    out = {}
    for p in psutil.process_iter(["pid", "create_time", "cpu_times", "cmdline"]):
        try:
            ct = p.info["cpu_times"]
            out[(p.info["pid"], p.info["create_time"])] = (ct.user + ct.system, " ".join(p.info["cmdline"] or []))
        except Exception:  # noqa: BLE001, S112 - gone, or not ours to read
            continue
    return out


def others_cpu(before: dict[tuple[int, float], tuple[float, str]], mine: set[int], db_url: str) -> float:
    """CPU seconds processes other than this benchmark's (its daemons, its database sessions, itself)
    used since `before`: the rest of the machine's load during the run."""
    db = db_url.rsplit("/", 1)[-1]
    total = 0.0
    for key, (cpu, cmd) in cpu_by_process().items():
        if key[0] in mine or key[0] == os.getpid() or db in cmd:
            continue
        total += cpu - before.get(key, (0.0, ""))[0]
    return total


def last_write(entries: list[dict[str, Any]], t0: float) -> dict[str, Any] | None:
    """The last write the portal executed after `t0` (by its answer)."""
    ws = [e for e in admitted(entries) if e["ts"] >= t0 and not e.get("error")
          and any(is_write(m) for m in methods_of(e))]
    return max(ws, key=end_of) if ws else None


def traffic(entries: list[dict[str, Any]], t0: float, t1: float) -> dict[str, Any]:
    es = [e for e in admitted(entries) if t0 <= e["ts"] <= t1]
    return {"requests": len(es), "commands": sum(commands_of(e) for e in es), "packing": packing(es)}


def bucket_level(times: list[float], at: float, rate: float) -> float:
    """The bucket's level just before `at`, replayed from the admissions before it."""
    level, prev = 0.0, None
    for t in times:
        if t >= at:
            break
        if prev is not None:
            level = max(0.0, level - (t - prev) * rate)
        level += 1
        prev = t
    return level if prev is None else max(0.0, level - (at - prev) * rate)


def ceiling(entries: list[dict[str, Any]], t0: float, end: float, latency: float,
            rate: float = RATE, burst: float = BURST) -> dict[str, Any]:
    """Requests admitted while the bucket was full, against the most the bucket admits then.

    The portal's bucket is replayed from its log: every admitted request enters it when it is
    admitted (logged at arrival; the latency fault sleeps before the bucket is asked) and it leaks
    `rate` a second. The window opens at the first admission after `t0` that finds the level
    within 5 of `burst` (at `t0` if none does) and closes at `end` (the last write's admission).
    The most the portal admits in it: `rate` x its length + what was left of the bucket."""
    times = sorted(e["ts"] + latency for e in admitted(entries))
    start = next((t for t in times if t0 <= t <= end and bucket_level(times, t, rate) + 1 >= burst - 5), None)
    full = start is not None
    if start is None:
        start = t0
    n = sum(1 for t in times if start <= t <= end)
    most = rate * (end - start) + (burst - bucket_level(times, start, rate))
    whole_n = sum(1 for t in times if t0 <= t <= end)
    whole_most = rate * (end - t0) + (burst - bucket_level(times, t0, rate))
    return {"window_s": round(end - start, 1), "admitted": n, "most": round(most, 1),
            "ratio": round(n / most, 3) if most > 0 else None, "bucket_was_full": full,
            "per_s": round(n / (end - start), 3) if end > start else None,
            "whole_ratio": round(whole_n / whole_most, 3) if whole_most > 0 else None}


def backlog(a: argparse.Namespace, tmp: Path, tag: str, k: int, *, cloud: bool) -> dict[str, Any]:
    """`k` instances work off `a.orders` orders; figures of the run."""
    n = a.orders
    with Cluster(a, tmp, tag, k, cloud=cloud) as cl:
        t0 = time.time()
        busy0 = machine_busy()
        procs0 = cpu_by_process()
        cl.peers.place_orders(n)
        deadline = t0 + a.timeout
        while not cl.drained(n):
            if time.time() > deadline:
                break
            time.sleep(0.1)
        done = cl.drained(n)
        busy = machine_busy() - busy0
        others = others_cpu(procs0, {d.pid for d in cl.daemons}, cl.url)
        cpu = cl.cpu()
        lg = cl.peers.log(0)
        entries = lg["entries"]
        last = last_write(entries, t0)
        if last is None:
            raise SystemExit(f"{tag}: no write reached the portal; daemon log:\n{cl.daemons[0].log_tail()}")
        t_last = end_of(last)
        # the clock starts when the shop answered the poll that read the backlog (the wait for the
        # next poll, 0-3 s, is the schedule's, the same for one instance or two)
        with cl.peers.shop_state.lock:
            reads = sorted(end_of(e) for e in cl.peers.shop_state.log
                           if e.get("mode") == "query" and (e.get("exported") or 0) > 0 and end_of(e) >= t0)
        t_read = reads[0] if reads else t0
        elapsed = t_last - t_read
        tr = traffic(entries, t0, t_last)
        ncpu = os.cpu_count() or 1
        out: dict[str, Any] = {"instances": k, "orders": n, "drained": done, "seconds": round(elapsed, 2),
                               "orders_per_s": round(n / elapsed, 2), "poll_wait_s": round(t_read - t0, 2),
                               "machine_cpu_busy": round(busy / ((time.time() - t0) * ncpu), 2),
                               "others_cpu_cores": round(others / (time.time() - t0), 2),
                               **tr, "limit_hits": lg["limit_hits"],
                               "commands_bound_s": round(tr["commands"] / BATCH / RATE, 1),
                               "vs_commands_bound": round(elapsed / (tr["commands"] / BATCH / RATE), 2),
                               "writes_by_instance": cl.shares(), "daemon_cpu_s": cpu,
                               "portal": cl.portal_counts(), "dead_writes": cl.db.one(
                                   "SELECT COUNT(*) FROM outbox WHERE status = 'dead'"),
                               "errors": sum(len(d.errors()) for d in cl.daemons),
                               "first_errors": [e for d in cl.daemons for e in d.errors()[:2]][:3]}
        if cloud:
            out["ceiling"] = ceiling(entries, t0, last["ts"] + a.latency, a.latency)
        if not done:
            out["open_writes"] = cl.db.one(OPEN)
        return out


def say_backlog(name: str, f: dict[str, Any]) -> None:
    p = f["portal"]
    print(f"  {name}: {f['orders']} orders in {f['seconds']} s = {f['orders_per_s']} orders/s (from the shop's "
          f"answer to the poll that read them, {f['poll_wait_s']} s after they were placed) "
          f"({'drained' if f['drained'] else 'NOT drained: ' + str(f.get('open_writes')) + ' writes open'}); "
          f"{f['requests']} requests, {f['commands']} commands, {f['limit_hits']} limit hits; writes by instance "
          f"{f['writes_by_instance']}; daemon CPU {f['daemon_cpu_s']} s, the machine's {os.cpu_count()} cores "
          f"{f['machine_cpu_busy']:.0%} busy ({f['others_cpu_cores']} cores' worth by other processes); portal "
          f"{p['deals']} deals, "
          f"{p['contacts']} contacts, {p['notices']} notices; dead {f['dead_writes']}; error lines {f['errors']}")
    for line in f.get("first_errors") or []:
        print(f"    daemon error: {line}")


def part_a(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    print(f"(a) self-hosted portal, no rate limit, {a.latency * 1000:.0f} ms latency", flush=True)
    ones, twos = [], []
    for i in range(a.repeat):             # alternated, so a busy spell of the machine hits both
        ones.append(backlog(a, tmp, f"a1-{i}", 1, cloud=False))
        say_backlog("one instance (anchor)", ones[-1])
        twos.append(backlog(a, tmp, f"a2-{i}", 2, cloud=False))
        say_backlog("two instances", twos[-1])
    one = max(ones, key=lambda f: f["orders_per_s"])
    two = max(twos, key=lambda f: f["orders_per_s"])
    if a.repeat > 1:
        print(f"  best of {a.repeat}: one {one['orders_per_s']} orders/s, two {two['orders_per_s']} orders/s")
    ratio = two["orders_per_s"] / one["orders_per_s"]
    print(f"  two / one = {ratio:.3f} (goal >= 1.6: {'met' if ratio >= 1.6 else 'NOT met'})", flush=True)
    if max(one["machine_cpu_busy"], two["machine_cpu_busy"]) >= 0.9:
        print("  note: the machine's CPU was saturated during a run: the ratio is the machine's, not the "
              "instances'", flush=True)
    return {"a_one_orders_per_s": one["orders_per_s"], "a_two_orders_per_s": two["orders_per_s"],
            "a_two_vs_one": round(ratio, 3), "a_goal_met": ratio >= 1.6 and one["drained"] and two["drained"],
            "a_machine_cpu_busy": [one["machine_cpu_busy"], two["machine_cpu_busy"]],
            "a_others_cpu_cores": [one["others_cpu_cores"], two["others_cpu_cores"]],
            "a_repeat": a.repeat, "a_one": one, "a_two": two}


def part_b(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    print(f"(b) cloud limit ({RATE:g} requests/s, burst {BURST:g}), {a.latency * 1000:.0f} ms latency", flush=True)
    out: dict[str, Any] = {}
    met = True
    for k in (1, 2):
        f = backlog(a, tmp, f"b{k}", k, cloud=True)
        say_backlog(f"{k} instance{'s' if k > 1 else ''}", f)
        c = f["ceiling"]
        ok = c["ratio"] is not None and c["ratio"] >= 0.95 and f["limit_hits"] == 0 and f["drained"]
        met = met and ok
        print(f"    bucket full for {c['window_s']} s: {c['admitted']} requests admitted = {c['per_s']}/s; the "
              f"ceiling admits {c['most']} -> {c['ratio']} (goal >= 0.95 with 0 limit hits: "
              f"{'met' if ok else 'NOT met'}){'' if c['bucket_was_full'] else ' [the bucket never filled]'}; "
              f"whole backlog {c['whole_ratio']} of the ceiling", flush=True)
        pk = f["packing"]
        print(f"    backlog {f['seconds']} s vs what the limit allows for its {f['commands']} commands "
              f"({f['commands_bound_s']} s) -> {f['vs_commands_bound']}; calls with writes "
              f"{pk['writes']['requests']} ({pk['writes']['per_request']} commands a call), read-only calls "
              f"{pk['reads']['requests']} ({pk['reads']['per_request']} a call)", flush=True)
        out[f"b_{k}_ceiling_ratio"] = c["ratio"]
        out[f"b_{k}_limit_hits"] = f["limit_hits"]
        out[f"b_{k}_orders_per_s"] = f["orders_per_s"]
        out[f"b_{k}"] = f
    out["b_goal_met"] = met
    return out


def part_c(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    print(f"(c) two instances, cloud limit; one killed (lease_ttl {a.lease_ttl:g} s, claim_ttl {a.claim_ttl:g} s)",
          flush=True)
    n = a.orders
    with Cluster(a, tmp, "c", 2, cloud=True) as cl:
        victim, survivor = cl.daemons
        va, sb = victim.instance, survivor.instance
        t0 = time.time()
        cl.peers.place_orders(n)
        held: list[tuple[str, float]] = []
        claimed: list[int] = []
        deadline = t0 + 120
        jobs = {f"job:{s}:{st}" for s, st, _ in JOBS}
        while time.time() < deadline:
            held = [(name, float(exp)) for name, exp in cl.db.q(
                "SELECT name, expires_at FROM leases WHERE holder = :h", h=va) if name in jobs]
            claimed = [row[0] for row in cl.db.q(
                "SELECT id FROM outbox WHERE status = 'sending' AND claimed_by = :h", h=va)]
            if held and claimed and time.time() - t0 > 2:
                break
            time.sleep(0.02)
        t_kill = victim.kill9()
        # what it held, as the database had it at the kill
        held = [(name, float(exp)) for name, exp in cl.db.q(
            "SELECT name, expires_at FROM leases WHERE holder = :h", h=va) if name in jobs]
        claimed = [row[0] for row in cl.db.q(
            "SELECT id FROM outbox WHERE status = 'sending' AND claimed_by = :h", h=va)]
        print(f"  killed {va} (pid {victim.pid}) {t_kill - t0:.1f} s into the backlog, holding "
              f"{', '.join(f'{nm} ({exp - t_kill:.1f} s left)' for nm, exp in held) or 'no job lease'} and "
              f"{len(claimed)} claimed writes", flush=True)
        job_taken: dict[str, float | None] = {name: None for name, _ in held}
        claims_taken: dict[int, float] = {}
        claims_settled: dict[int, float] = {}
        wait_until = t_kill + max(a.lease_ttl, a.claim_ttl) + 60
        ids = ",".join(str(i) for i in claimed) or "0"
        while time.time() < wait_until:
            for name in [nm for nm, v in job_taken.items() if v is None]:
                _, system, stream = name.split(":", 2)
                started = as_epoch(cl.db.one("SELECT MIN(started_at) FROM runs WHERE instance = :b AND system = :s "
                                             "AND stream = :st AND started_at > :tk", b=sb, s=system, st=stream,
                                             tk=dt.datetime.fromtimestamp(t_kill, dt.UTC)))
                if started is not None:
                    job_taken[name] = started - t_kill
            for rid, status, by, claimed_at, updated in cl.db.q(
                    f"SELECT id, status, claimed_by, claimed_at, updated_at FROM outbox WHERE id IN ({ids})"):
                if by != va and rid not in claims_taken:
                    claims_taken[rid] = (as_epoch(claimed_at) or time.time()) - t_kill
                if status in ("done", "blocked", "dead") and rid not in claims_settled:
                    claims_settled[rid] = (as_epoch(updated) or time.time()) - t_kill
            if all(v is not None for v in job_taken.values()) and len(claims_settled) == len(claimed) \
                    and len(claims_taken) == len(claimed):
                break
            time.sleep(0.05)
        # the backlog finishes on the survivor
        deadline = time.time() + a.timeout
        while not cl.drained(n) and time.time() < deadline:
            time.sleep(0.2)
        drained = cl.drained(n)
        counts = cl.portal_counts()
        errors = survivor.errors()
        shares = cl.shares()
    job_s = max((v for v in job_taken.values() if v is not None), default=None)
    lease_left = max((exp - t_kill for _, exp in held), default=None)
    taken_s = max(claims_taken.values(), default=None)
    first_taken = min(claims_taken.values(), default=None)
    settled_s = max(claims_settled.values(), default=None)
    first_settled = min(claims_settled.values(), default=None)
    dupes = {k: v - n for k, v in counts.items() if k in ("deals", "contacts", "notices") and v != n}
    job_ok = bool(held) and all(v is not None for v in job_taken.values()) and job_s is not None \
        and job_s <= a.lease_ttl
    claims_ok = bool(claimed) and len(claims_taken) == len(claimed) and taken_s is not None \
        and taken_s <= a.claim_ttl
    for name, v in job_taken.items():
        print(f"  {name}: the survivor ran it {v:.2f} s after the kill" if v is not None else
              f"  {name}: the survivor did NOT run it within {wait_until - t_kill:.0f} s")
    print(f"  job takeover {r(job_s)} s vs lease_ttl {a.lease_ttl:g} s (anchor) -> "
          f"{r(job_s / a.lease_ttl, 3) if job_s is not None else None} (goal: within the lease time: "
          f"{'met' if job_ok else 'NOT met'}); the lease had {r(lease_left)} s left at the kill, so the survivor "
          f"ran the job {r(job_s - lease_left) if job_s is not None and lease_left is not None else None} s after "
          f"it expired (its own schedule: every 3-10 s)")
    print(f"  claimed writes: {len(claims_taken)} of {len(claimed)} taken over by the survivor, first after "
          f"{r(first_taken)} s, last after {r(taken_s)} s vs claim_ttl {a.claim_ttl:g} s (anchor) -> "
          f"{r(taken_s / a.claim_ttl, 3) if taken_s is not None else None} (within it: "
          f"{'yes' if claims_ok else 'no'}; the survivor claims 50 rows at a time, at its push ticks); "
          f"confirmed (done) first after {r(first_settled)} s, last after {r(settled_s)} s "
          f"({len(claims_settled)} settled; under the limit they queue behind the survivor's own writes)")
    print(f"  backlog {'drained' if drained else 'NOT drained'}; portal {counts}; "
          f"{'no duplicates' if not dupes else 'DIFFERENCES from ' + str(n) + ': ' + str(dupes)}; writes by "
          f"instance {shares}; survivor error lines {len(errors)}", flush=True)
    return {"c_job_takeover_s": r(job_s), "c_lease_ttl_s": a.lease_ttl,
            "c_job_vs_lease_ttl": r(job_s / a.lease_ttl, 3) if job_s is not None else None,
            "c_lease_left_at_kill_s": r(lease_left), "c_jobs_held": [nm for nm, _ in held],
            "c_claims_at_kill": len(claimed), "c_claims_taken": len(claims_taken),
            "c_claims_first_taken_s": r(first_taken), "c_claims_taken_s": r(taken_s),
            "c_claims_taken_vs_claim_ttl": r(taken_s / a.claim_ttl, 3) if taken_s is not None else None,
            "c_claims_settled": len(claims_settled),
            "c_claims_first_settled_s": r(first_settled), "c_claims_settled_s": r(settled_s),
            "c_claim_ttl_s": a.claim_ttl,
            "c_claims_settled_vs_claim_ttl": r(settled_s / a.claim_ttl, 3) if settled_s is not None else None,
            "c_goal_met": job_ok, "c_claims_within_claim_ttl": claims_ok, "c_drained": drained, "c_portal": counts,
            "c_duplicates": dupes, "c_writes_by_instance": shares}


class Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0], formatter_class=Help,
                                 epilog="\n\n".join((__doc__ or "").split("\n\n")[1:-1]))
    ap.add_argument("--orders", type=int, default=400, help="orders in the backlog of each run")
    ap.add_argument("--only", default="a,b,c", help="parts to run, comma-separated (a, b, c)")
    ap.add_argument("--repeat", type=int, default=1, help="(a): runs of each, alternated; the best of each counts")
    ap.add_argument("--latency", type=float, default=0.2, help="seconds the portal adds to every answer")
    ap.add_argument("--lease-ttl", type=float, default=30.0, help="daemon.lease_ttl (default config: 120)")
    ap.add_argument("--claim-ttl", type=float, default=30.0, help="push.claim_ttl")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds a backlog may take")
    ap.add_argument("--keep", metavar="DIR", help="keep each daemon's config and log under DIR")
    ap.add_argument("--pg", default=os.environ.get("SYNCD_TEST_POSTGRES_URL"),
                    help="PostgreSQL server (a fresh database per run; default $SYNCD_TEST_POSTGRES_URL)")
    a = ap.parse_args()
    if not a.pg:
        ap.error("PostgreSQL needed: --pg URL or SYNCD_TEST_POSTGRES_URL")
    parts = {p.strip() for p in a.only.split(",") if p.strip()}
    fig: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="syncd-scaleout-") as tmp_s:
        tmp = Path(a.keep) if a.keep else Path(tmp_s)
        if "a" in parts:
            fig.update(part_a(a, tmp))
        if "b" in parts:
            fig.update(part_b(a, tmp))
        if "c" in parts:
            fig.update(part_c(a, tmp))
    fig.update({"orders": a.orders, "latency_s": a.latency})
    print(json.dumps(fig, ensure_ascii=False))


if __name__ == "__main__":
    main()
