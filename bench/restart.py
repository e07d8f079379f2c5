"""kill -9 of a real `syncd run` -> its first confirmed write once started again (issue 20: goal < 5 s,
notices on), and a backlog with notices against what the portal's rate limit allows for it.

A real `syncd run` process works through a backlog of shop orders (the shop's demo buyers, persons
and companies, orders paid, part-paid and unpaid) into the sandbox Bitrix24 portal, its cloud limit
on (2 requests/s, burst 50); mappings/rules.toml is loaded, so every new deal also gets a notice to
its responsible manager (and the rules' tasks, when they fire). A write is *confirmed* when its
outbox row is settled `done` after its peer answered it (read from the daemon's database); both the
first confirmed write of any peer (the shop gets order updates too) and the first confirmed CRM
write are measured.

Clean run (the anchors): the daemon started on the backlog — seconds from its start to its first
confirmed write, and to its first confirmed CRM write; then the backlog runs to its end (every order a deal, nothing left in the
outbox). Its time (process start -> the portal's answer to the last write) is set against what the
rate limit allows for the commands it sent: commands (counted in the portal's request log) / 50
commands per batch call / 2 calls per second. Goal: within 1.2 x. Also printed: the same time
against what the limit allows for the requests actually sent ((requests - 50) / 2, the bucket
starting empty), which separates the pacing from the packing of commands into calls.

Crash run, on fresh peers with the same backlog: the process is killed with SIGKILL while it holds
claimed writes and started again at once with the same config (the same instance, named in its
state dir). Measured from the kill: the first confirmed write and the first confirmed CRM write
(goal < 5 s), the first write the portal answered, the first of the dead process's own claims
through. Ratios: each / the clean start's. `--other-instance` adds a run restarted
under another instance name: the dead one's claims then wait out `push.claim_ttl`.

Usage: python bench/restart.py [--orders 120] [--claim-ttl 30] [--other-instance] [--pg URL]
(--orders 2000 for the issue's backlog figure). The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any

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

CONFIRMED = "SELECT MIN(updated_at) FROM outbox WHERE status = 'done' AND attempts > 0 AND updated_at > :since"
CONFIRMED_CRM = CONFIRMED + " AND system = 'crm'"


def since(db: DB, t: float) -> Any:
    """A timestamp parameter the way the database compares it."""
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return d if db.url.startswith("postgresql") else d.replace(tzinfo=None).isoformat(sep=" ")


def first_confirmed_after(db: DB, t0: float, timeout: float = 180.0, sql: str = CONFIRMED) -> float:
    """Seconds from t0 to the first write settled `done` after t0 (its settle time in the database)."""
    while time.time() - t0 < timeout:
        at = as_epoch(db.one(sql, since=since(db, t0)))
        if at is not None:
            return at - t0
        time.sleep(0.05)
    raise SystemExit(f"no write confirmed within {timeout} s")


def first_portal_write_after(peers: Peers, t0: float) -> float | None:
    ws = [end_of(e) for e in admitted(peers.log(t0)["entries"]) if not e.get("error")
          and any(is_write(m) for m in methods_of(e))]
    return min(ws) - t0 if ws else None


class World:
    """Fresh peers with the backlog, a database, and a config for one daemon."""

    def __init__(self, tmp: Path, name: str, a: argparse.Namespace) -> None:
        self.peers = Peers(rate_limit=True, orders=a.orders, seed_deals=True)
        self.drop = None
        url = None
        if a.pg:
            url, self.drop = fresh_pg(a.pg)
        self.state = tmp / name
        self.port = free_port()
        self.url = url or f"sqlite:///{self.state}/syncd.db"
        self.cfg = write_config(self.state, self.peers, db_url=url, port=self.port, claim_ttl=a.claim_ttl)
        self.db = DB(self.url)
        self.a = a

    def daemon(self, instance: str | None = None) -> Daemon:
        cfg = self.cfg
        if instance:
            cfg = write_config(self.state, self.peers, db_url=None if not self.a.pg else self.url, port=self.port,
                               claim_ttl=self.a.claim_ttl, instance=instance)
        return Daemon(cfg, self.port).start()

    def synced(self) -> bool:
        """Every shop order is a deal and nothing waits in the outbox."""
        with self.peers.shop_state.lock:
            want = {o.xml_id for o in self.peers.shop_state.orders.values()}
        with self.peers.portal.lock:
            have = {str(d.get("ORIGIN_ID")) for d in self.peers.portal.tables["deal"].values()}
        return want <= have and self.db.one(
            "SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'sending', 'blocked')") == 0

    def close(self) -> None:
        self.db.close()
        self.peers.stop()
        if self.drop:
            self.drop()


def clean_run(tmp: Path, a: argparse.Namespace) -> dict[str, Any]:
    w = World(tmp, "clean", a)
    try:
        t0 = time.time()
        d = w.daemon()
        try:
            out: dict[str, Any] = {"first_confirmed_s": first_confirmed_after(w.db, t0),
                                   "first_confirmed_crm_s": first_confirmed_after(w.db, t0, sql=CONFIRMED_CRM)}
            deadline = t0 + a.timeout
            while not w.synced() and time.time() < deadline:
                time.sleep(0.2)
            out["drained"] = w.synced()
            errors = d.errors()
        finally:
            d.stop()
        lg = w.peers.log(0)
        es = [e for e in admitted(lg["entries"]) if e["ts"] >= t0]
        writes = [e for e in es if not e.get("error") and any(is_write(m) for m in methods_of(e))]
        t_last = max(end_of(e) for e in writes)
        es = [e for e in es if e["ts"] <= t_last]
        commands = sum(commands_of(e) for e in es)
        notices = sum(1 for e in es for m in methods_of(e) if m.startswith("im.notify"))
        with w.peers.portal.lock:
            deals = len(w.peers.portal.tables["deal"])
        out.update(drain_s=t_last - t0, requests=len(es), commands=commands, limit_hits=lg["limit_hits"],
                   packing=packing(es),
                   commands_bound_s=commands / BATCH / RATE, requests_bound_s=max(0.0, len(es) - BURST) / RATE,
                   notices=notices, deals=deals, errors=len(errors),
                   dead=w.db.one("SELECT COUNT(*) FROM outbox WHERE status = 'dead'"))
        return out
    finally:
        w.close()


def crash_run(tmp: Path, name: str, a: argparse.Namespace, *, other_instance: bool = False) -> dict[str, Any]:
    w = World(tmp, name, a)
    try:
        d = w.daemon()
        deadline = time.time() + 180
        while time.time() < deadline:          # writes in flight: some confirmed, some claimed
            done = w.db.one("SELECT COUNT(*) FROM outbox WHERE status = 'done'") or 0
            sending = w.db.one("SELECT COUNT(*) FROM outbox WHERE status = 'sending'") or 0
            if done >= 3 and sending >= 1:
                break
            time.sleep(0.02)
        t_kill = d.kill9()
        left = [row[0] for row in w.db.q("SELECT id FROM outbox WHERE status = 'sending'")]
        t_restart = time.time()
        d = w.daemon("another-instance" if other_instance else None)
        try:
            out: dict[str, Any] = {"claims_left": len(left), "restart_after_kill_s": t_restart - t_kill}
            out["first_confirmed_s"] = first_confirmed_after(w.db, t_kill)
            ids = ",".join(str(i) for i in left) or "0"
            reclaimed = crm = None
            while time.time() - t_kill < a.claim_ttl + 120 and (reclaimed is None or crm is None):
                if reclaimed is None:
                    reclaimed = as_epoch(w.db.one(f"SELECT MIN(updated_at) FROM outbox WHERE id IN ({ids}) AND "
                                                  "status IN ('done', 'blocked') AND updated_at > :since",
                                                  since=since(w.db, t_kill)))
                if crm is None:      # the first write confirmed by the portal (not the shop)
                    crm = as_epoch(w.db.one(CONFIRMED_CRM, since=since(w.db, t_kill)))
                time.sleep(0.05)
            out["first_reclaimed_s"] = None if reclaimed is None else reclaimed - t_kill
            out["first_confirmed_crm_s"] = None if crm is None else crm - t_kill
            row = w.db.q("SELECT id, system, entity_type FROM outbox WHERE status = 'done' AND attempts > 0 AND "
                         "updated_at > :since ORDER BY updated_at LIMIT 1", since=since(w.db, t_kill))
            if row:
                out["first_confirmed_what"] = f"{row[0][1]} {row[0][2]}" + (
                    " (one the dead process had claimed)" if row[0][0] in left else "")
            # the new process's first write the portal answered (a request the dying one had sent may
            # still be answered after the kill)
            at = first_portal_write_after(w.peers, t_restart)
            out["first_portal_write_s"] = None if at is None else at + (t_restart - t_kill)
            out["errors"] = len(d.errors())
        finally:
            d.stop()
        return out
    finally:
        w.close()


class Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0], formatter_class=Help,
                                 epilog="\n\n".join((__doc__ or "").split("\n\n")[1:-1]))
    ap.add_argument("--orders", type=int, default=120, help="shop orders in the backlog (the issue's figure: 2000)")
    ap.add_argument("--claim-ttl", type=float, default=30.0, help="push.claim_ttl of the daemon")
    ap.add_argument("--other-instance", action="store_true",
                    help="also restart under another instance name (waits for the claim TTL)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds the clean run's backlog may take")
    ap.add_argument("--pg", metavar="URL", help="a fresh database on this PostgreSQL server instead of SQLite")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="syncd-restart-") as tmp_s:
        tmp = Path(tmp_s)
        clean = clean_run(tmp, a)
        crash = crash_run(tmp, "crash", a)
        other = crash_run(tmp, "other", a, other_instance=True) if a.other_instance else None
    vs_bound = clean["drain_s"] / clean["commands_bound_s"]
    fig: dict[str, Any] = {
        "kill_to_first_confirmed_s": r(crash["first_confirmed_s"]),
        "kill_goal_met": crash["first_confirmed_s"] < 5.0,
        "clean_start_first_confirmed_s": r(clean["first_confirmed_s"]),
        "kill_vs_clean_start": r(crash["first_confirmed_s"] / clean["first_confirmed_s"], 3),
        "kill_to_first_portal_write_s": r(crash["first_portal_write_s"]),
        "kill_to_first_confirmed_crm_s": r(crash["first_confirmed_crm_s"]),
        "kill_crm_goal_met": crash["first_confirmed_crm_s"] is not None and crash["first_confirmed_crm_s"] < 5.0,
        "clean_start_first_confirmed_crm_s": r(clean["first_confirmed_crm_s"]),
        "kill_vs_clean_start_crm": r(crash["first_confirmed_crm_s"] / clean["first_confirmed_crm_s"], 3)
        if crash["first_confirmed_crm_s"] is not None else None,
        "kill_to_first_reclaimed_s": r(crash["first_reclaimed_s"]),
        "restart_to_first_confirmed_s": r(crash["first_confirmed_s"] - crash["restart_after_kill_s"]),
        "claims_left_by_kill": crash["claims_left"],
        "drain_s": r(clean["drain_s"], 1), "drain_commands": clean["commands"], "drain_requests": clean["requests"],
        "drain_commands_bound_s": r(clean["commands_bound_s"], 1), "drain_vs_commands_bound": r(vs_bound, 3),
        "drain_goal_met": vs_bound <= 1.2 and clean["drained"],
        "drain_requests_bound_s": r(clean["requests_bound_s"], 1),
        "drain_vs_requests_bound": r(clean["drain_s"] / clean["requests_bound_s"], 3)
        if clean["requests_bound_s"] else None,
        "commands_per_request": r(clean["commands"] / clean["requests"], 1), "drain_packing": clean["packing"],
        "drained": clean["drained"], "notices": clean["notices"], "limit_hits": clean["limit_hits"],
        "dead_writes": clean["dead"], "claim_ttl_s": a.claim_ttl, "orders": a.orders,
        "database": "postgresql" if a.pg else "sqlite",
    }
    print(f"clean start: first confirmed write {clean['first_confirmed_s']:.2f} s after the process started, first "
          f"confirmed CRM write {clean['first_confirmed_crm_s']:.2f} s (anchors)")
    print(f"kill -9 with {crash['claims_left']} writes claimed, restarted at once (same instance): first confirmed "
          f"write {crash['first_confirmed_s']:.2f} s after the kill -> {fig['kill_vs_clean_start']} x the clean start "
          f"(goal < 5 s: {'met' if fig['kill_goal_met'] else 'NOT met'}): a {crash.get('first_confirmed_what')}; the "
          f"portal answered the new process's first write (add/update/set/notice) "
          f"{fig['kill_to_first_portal_write_s']} s after the kill; first of the dead process's own claims settled "
          f"after {fig['kill_to_first_reclaimed_s']} s")
    print(f"  the first CRM write confirmed {fig['kill_to_first_confirmed_crm_s']} s after the kill -> "
          f"{fig['kill_vs_clean_start_crm']} x the clean start's (goal < 5 s: "
          f"{'met' if fig['kill_crm_goal_met'] else 'NOT met'})")
    print(f"backlog of {a.orders} orders with notices ({clean['notices']} notices; {clean['deals']} deals in the "
          f"portal, the seeded ones adopted without a notice; {'drained' if clean['drained'] else 'NOT drained'}, {clean['dead']} dead, "
          f"{clean['limit_hits']} limit hits): {clean['drain_s']:.1f} s from the start to the last write; its "
          f"{clean['commands']} commands in {clean['requests']} requests ({fig['commands_per_request']} a request) "
          f"-> the limit allows {clean['commands_bound_s']:.1f} s for the commands: ratio {vs_bound:.3f} "
          f"(goal <= 1.2: {'met' if fig['drain_goal_met'] else 'NOT met'}); for the requests sent "
          f"{clean['requests_bound_s']:.1f} s: ratio {fig['drain_vs_requests_bound']}")
    pk = clean["packing"]
    print(f"  calls with writes: {pk['writes']['requests']} carrying {pk['writes']['commands']} commands "
          f"({pk['writes']['per_request']} a call); read-only calls (look-ups, reads): {pk['reads']['requests']} "
          f"carrying {pk['reads']['commands']} ({pk['reads']['per_request']} a call)")
    if clean["errors"] or crash["errors"]:
        print(f"daemon error lines: clean {clean['errors']}, after the restart {crash['errors']}")
    if other is not None:
        fig["other_instance_first_confirmed_s"] = r(other["first_confirmed_s"])
        fig["other_instance_first_reclaimed_s"] = r(other["first_reclaimed_s"])
        print(f"restart under another instance name: first confirmed write {other['first_confirmed_s']:.2f} s after "
              f"the kill; the dead instance's claims through after {fig['other_instance_first_reclaimed_s']} s "
              f"(they wait out the {a.claim_ttl:.0f} s claim TTL)")
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
