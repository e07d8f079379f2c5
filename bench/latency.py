"""End-to-end latency of a real `syncd run` (issue 20), timed from the sandboxes' own request logs.

Two paths, over the same run:

1. shop order -> CRM deal (the poll path): the shop is polled every `--poll` seconds (the demo's 3 s),
   notices to the responsible are on (mappings/rules.toml), the portal has its cloud limit (2
   requests/s, burst 50). Timed from the moment the order was placed in the shop (the checkout
   returned) to the moment the portal answered the request that created its deal (the portal's
   request log; the k-th `crm.deal.add` it executed made deal ID k). Goal: p95 <= poll + 2 s.
2. CRM edit -> shop (the event path): a manager edits the deal's comment in the portal's UI; the
   portal posts ONCRMDEALUPDATE to the daemon's /hooks/bitrix24/crm (an outgoing webhook, with
   ONCRMDEALADD, as an integrator sets it up); timed from the edit to the shop's answer to the import
   that applied that order (the shop's exchange log). Goal: <= 2 s. The CRM streams are polled as in
   config.example.toml (deals every 2 min), so an edit arrives by its event, not by a poll.

Orders are placed open-loop at `--rate` per second, each by a new buyer (a contact, a deal with its
product rows, a notice); from the moment a deal has existed for `--edit-after` seconds its manager
edits it, one edit per tick, interleaved with the orders. Nothing polls the CRM for timing.

Anchors, per item, measured in the same run from the same logs:
- order -> deal: the poll path's floor — the wait for the poll (placed -> the shop's answer to the
  `mode=query` that exported it) plus the portal's own time for the request that created the deal;
  syncd's part is the rest (export -> deal);
- edit -> shop: the peers' own time — the portal's event delivery (edit -> its POST to the daemon)
  plus the shop's upload (its `mode=file` request -> the import's answer); syncd's part is the rest.
The ratios are p50 and p95 over those floors.

Usage: python bench/latency.py [--orders 200] [--rate 1] [--poll 3] [--latency 0] [--pg URL]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from world import (
    DB,
    Daemon,
    Peers,
    end_of,
    free_port,
    fresh_pg,
    methods_of,
    percentile,
    r,
    rest,
    write_config,
)

OPEN = "SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'sending', 'blocked')"


def deal_times(entries: list[dict[str, Any]], deals: dict[int, dict[str, Any]]) -> tuple[dict[int, float], str]:
    """Deal ID -> when the portal answered the request that created it.

    The sandbox executes requests one at a time and logs each as it answers, so the k-th
    `crm.deal.add` of its log made deal ID k (no deal is made any other way here). Checked: the
    count must match the deals it holds and no request carrying an add may have failed; otherwise
    the portal's ONCRMDEALADD deliveries (kind "event", logged as they start) are used.
    """
    adds: list[float] = []
    broken = False
    for e in rest(entries):
        n = sum(1 for m in methods_of(e) if m == "crm.deal.add")
        if not n or e.get("error") == "QUERY_LIMIT_EXCEEDED":      # refused by the bucket: not executed
            continue
        if e.get("error") or e.get("batch_errors"):
            broken = True                       # which of its adds made a deal is not in the log
            continue
        adds += [end_of(e)] * n
    if not broken and len(adds) == len(deals) and sorted(deals) == list(range(1, len(deals) + 1)):
        return {k: adds[k - 1] for k in deals}, "portal request log (k-th crm.deal.add -> deal k)"
    out: dict[int, float] = {}
    for e in entries:
        if e.get("kind") == "event" and e.get("event") == "ONCRMDEALADD":
            out.setdefault(int(e["id"]), float(e["ts"]))
    return out, "portal event deliveries (ONCRMDEALADD)"


def shop_exports(shop_log: list[dict[str, Any]]) -> list[float]:
    """When the shop answered each `mode=query` that exported orders."""
    return sorted(end_of(e) for e in shop_log if e.get("mode") == "query" and (e.get("exported") or 0) > 0)


def first_at_or_after(times: list[float], t: float) -> float | None:
    import bisect
    i = bisect.bisect_left(times, t)
    return times[i] if i < len(times) else None


def run(a: argparse.Namespace) -> dict[str, Any]:
    peers = Peers(rate_limit=not a.no_limit, latency=a.latency)
    st = peers.shop_state
    drop = None
    db_url = None
    if a.pg:
        db_url, drop = fresh_pg(a.pg)
    tmp = Path(tempfile.mkdtemp(prefix="syncd-latency-"))
    port = free_port()
    peers.outgoing_webhook(f"http://127.0.0.1:{port}/hooks/bitrix24/crm", ["ONCRMDEALADD", "ONCRMDEALUPDATE"])
    crm = a.crm_poll
    cfg = write_config(tmp, peers, db_url=db_url, port=port, push_interval=1.0, rules_interval=10.0,
                       jobs=(("shop", "orders", f"{a.poll:g}s"), ("crm", "deals", f"{crm:g}s"),
                             ("crm", "contacts", f"{max(crm, 300):g}s"), ("crm", "companies", f"{max(crm, 600):g}s"),
                             ("crm", "leads", f"{max(crm, 600):g}s")),
                       event_debounce=a.event_debounce, rate=2.0 if not a.no_limit else 1000.0,
                       burst=50.0 if not a.no_limit else 1000.0, log_level=a.log_level)
    daemon = Daemon(cfg, port).start()
    db = DB(db_url or f"sqlite:///{tmp}/syncd.db")
    try:
        daemon.wait_ready()
        t_start = time.time()
        placed: dict[str, float] = {}           # order Ид -> placed at
        seen: dict[str, float] = {}            # order Ид -> first seen as a deal (for choosing edits only)
        edits: dict[str, tuple[float, int, str]] = {}   # order Ид -> (edited at, deal id, text)
        tick = 1.0 / a.rate
        i = 0
        last_action = time.time()
        print(f"placing {a.orders} orders at {a.rate:g}/s; a manager edits each deal {a.edit_after:g} s after "
              f"it appears", flush=True)
        while True:
            due = t_start + i * tick
            time.sleep(max(0.0, due - time.time()))
            if i < a.orders:
                o = peers.place_orders(1)[0]
                placed[o.xml_id] = time.time()
                last_action = time.time()
            with peers.portal.lock:
                by_origin = {str(rec.get("ORIGIN_ID")): did for did, rec in peers.portal.tables["deal"].items()}
            now = time.time()
            for x in by_origin:
                seen.setdefault(x, now)
            todo = [x for x in placed if x not in edits]
            ready = [x for x in todo if x in by_origin and now - seen[x] >= a.edit_after]
            if ready:
                x = ready[0]
                text = f"Правка менеджера к заказу {x}"
                te = time.time()
                peers.ctl("PATCH", f"/ui/deal/{by_origin[x]}", {"fields": {"COMMENTS": text}})
                edits[x] = (te, by_origin[x], text)
                last_action = time.time()
            i += 1
            if i >= a.orders and not todo:
                break
            if i >= a.orders and time.time() - last_action > a.timeout:
                print(f"  gave up waiting for {len(todo)} deals to appear", flush=True)
                break
        # the last edits reach the shop
        deadline = time.time() + a.timeout
        while time.time() < deadline:
            with st.lock:
                arrived = sum(1 for x, (_, _, txt) in edits.items() if st.find_order(x).comment == txt)
            if arrived == len(edits) and db.one(OPEN) == 0:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        t_end = time.time()
        ct = psutil.Process(daemon.pid).cpu_times()
        cpu = ct.user + ct.system
        open_writes = db.one(OPEN)
        dead = db.one("SELECT COUNT(*) FROM outbox WHERE status = 'dead'")
    finally:
        daemon.stop()
    try:
        lg = peers.log(0)
        entries = lg["entries"]
        with peers.portal.lock:
            deals = {did: dict(rec) for did, rec in peers.portal.tables["deal"].items()}
            notices = len(peers.portal.notify_log)
        with st.lock:
            shop_log = [dict(e) for e in st.log]
            comments = {x: st.find_order(x).comment for x in edits}
    finally:
        db.close()
        peers.stop()
        if drop:
            drop()

    errs = daemon.errors()
    if a.dump:
        Path(a.dump).mkdir(parents=True, exist_ok=True)
        Path(a.dump, "portal-log.json").write_text(json.dumps(entries, ensure_ascii=False, default=str))
        Path(a.dump, "shop-log.json").write_text(json.dumps(shop_log, ensure_ascii=False, default=str))
        Path(a.dump, "placed.json").write_text(json.dumps({"placed": placed, "edits": edits}, default=str))
        shutil.copy(tmp / "daemon.log", Path(a.dump) / "daemon.log")
        if (tmp / "syncd.db").exists():
            shutil.copy(tmp / "syncd.db", Path(a.dump) / "syncd.db")
    shutil.rmtree(tmp, ignore_errors=True)

    # -- order -> deal ----------------------------------------------------------------------------------
    created, source = deal_times(entries, deals)
    exports = shop_exports(shop_log)
    lat: list[float] = []
    floor: list[float] = []
    ours: list[float] = []
    waits: list[float] = []
    by_order: list[tuple[float, float]] = []
    durations = {}
    for e in rest(entries):
        if "crm.deal.add" in methods_of(e) and not e.get("error"):
            durations[end_of(e)] = float(e.get("duration") or 0.0)
    for did, rec in deals.items():
        x = str(rec.get("ORIGIN_ID"))
        if x not in placed or did not in created:
            continue
        t_deal = created[did]
        latency = t_deal - placed[x]
        exported = first_at_or_after(exports, placed[x])
        lat.append(latency)
        by_order.append((placed[x], latency))
        if exported is not None and exported <= t_deal:
            waits.append(exported - placed[x])
            floor.append(exported - placed[x] + durations.get(t_deal, 0.0))
            ours.append(t_deal - exported)
    missing_deals = len([x for x in placed if x not in {str(d.get("ORIGIN_ID")) for d in deals.values()}])
    by_order.sort()
    q = max(1, len(by_order) // 4)
    first_q = [v for _, v in by_order[:q]]
    last_q = [v for _, v in by_order[-q:]]

    # -- edit -> shop ---------------------------------------------------------------------------------
    imports = [e for e in shop_log if e.get("imported")]
    files = [e for e in shop_log if e.get("mode") == "file"]
    events = [e for e in entries if e.get("kind") == "event"]
    e_lat: list[float] = []
    e_floor: list[float] = []
    e_ours: list[float] = []
    lost = 0
    for x, (te, did, txt) in edits.items():
        if comments.get(x) != txt:
            lost += 1
        hit = next((e for e in imports if e["ts"] >= te and x in (e["imported"].get("updated") or [])), None)
        if hit is None:
            continue
        arrived = end_of(hit)
        e_lat.append(arrived - te)
        ev = next((e for e in events if e.get("event") == "ONCRMDEALUPDATE" and str(e.get("id")) == str(did)
                   and e["ts"] >= te), None)
        up = [f for f in files if f.get("filename") == hit.get("filename") and f["ts"] <= hit["ts"]]
        if ev is not None and up:
            e_floor.append((ev["ts"] - te) + (arrived - up[-1]["ts"]))
            e_ours.append(arrived - te - e_floor[-1])
    ev_status = collections.Counter((e.get("event"), e.get("status")) for e in events)
    # the shop's polls as the shop saw them: every `--poll` seconds, unless a run overran its tick
    polls = sorted(e["ts"] for e in shop_log if e.get("mode") == "query" and t_start <= e["ts"] <= t_end)
    gaps = [b - a_ for a_, b in itertools.pairwise(polls)]

    # -- the portal's traffic ---------------------------------------------------------------------------
    rs = [e for e in rest(entries) if e["ts"] >= t_start]
    commands = collections.Counter(m for e in rs for m in methods_of(e))
    p = {k: percentile(lat, k) for k in (50, 90, 95)}
    goal = a.poll + 2.0
    fig: dict[str, Any] = {
        "order_to_deal_p50_s": r(p[50]), "order_to_deal_p90_s": r(p[90]), "order_to_deal_p95_s": r(p[95]),
        "order_to_deal_max_s": r(max(lat) if lat else None), "order_to_deal_goal_s": goal,
        "order_to_deal_goal_met": bool(lat) and p[95] <= goal and not missing_deals,
        "order_to_deal_anchor_p50_s": r(percentile(floor, 50)), "order_to_deal_anchor_p95_s": r(percentile(floor, 95)),
        "order_to_deal_vs_anchor_p50": r(p[50] / percentile(floor, 50), 3) if floor else None,
        "order_to_deal_vs_anchor_p95": r(p[95] / percentile(floor, 95), 3) if floor else None,
        "poll_wait_p50_s": r(percentile(waits, 50)), "poll_wait_p95_s": r(percentile(waits, 95)),
        "syncd_part_p50_s": r(percentile(ours, 50)), "syncd_part_p95_s": r(percentile(ours, 95)),
        "order_to_deal_first_quarter_p50_s": r(percentile(first_q, 50)),
        "order_to_deal_last_quarter_p50_s": r(percentile(last_q, 50)),
        "edit_to_shop_p50_s": r(percentile(e_lat, 50)), "edit_to_shop_p95_s": r(percentile(e_lat, 95)),
        "edit_to_shop_max_s": r(max(e_lat) if e_lat else None), "edit_to_shop_goal_s": 2.0,
        "edit_to_shop_goal_met": bool(e_lat) and max(e_lat) <= 2.0 and not lost,
        "edit_to_shop_anchor_p50_s": r(percentile(e_floor, 50), 3),
        "edit_to_shop_anchor_p95_s": r(percentile(e_floor, 95), 3),
        "edit_to_shop_vs_anchor_p50": r(percentile(e_lat, 50) / percentile(e_floor, 50), 1) if e_floor else None,
        "edit_to_shop_vs_anchor_p95": r(percentile(e_lat, 95) / percentile(e_floor, 95), 1) if e_floor else None,
        "edit_syncd_part_p50_s": r(percentile(e_ours, 50)), "edit_syncd_part_p95_s": r(percentile(e_ours, 95)),
        "shop_polls": len(polls), "shop_poll_gap_p50_s": r(percentile(gaps, 50)),
        "shop_poll_gap_max_s": r(max(gaps) if gaps else None),
        "shop_polls_late": sum(1 for g in gaps if g > 1.5 * a.poll),
        "orders": a.orders, "deals_timed": len(lat), "deals_missing": missing_deals, "edits": len(edits),
        "edits_timed": len(e_lat), "edits_lost": lost, "rate_per_s": a.rate, "poll_s": a.poll,
        "portal_latency_s": a.latency, "rate_limit": not a.no_limit, "limit_hits": lg["limit_hits"],
        "portal_requests": len(rs), "notices": notices,
        "notices_missing": max(0, len(deals) - notices), "open_writes_at_end": open_writes, "dead_writes": dead,
        "daemon_cpu_s": r(cpu, 1), "seconds": r(t_end - t_start, 1), "database": "postgresql" if a.pg else "sqlite",
        "deal_time_source": source,
    }
    print(f"order -> deal ({len(lat)} orders, poll {a.poll:g} s, deal time from the {source}):")
    print(f"  p50 {p[50]:.2f} s, p90 {p[90]:.2f} s, p95 {p[95]:.2f} s, max {fig['order_to_deal_max_s']} s "
          f"(goal p95 <= {goal:g} s: {'met' if fig['order_to_deal_goal_met'] else 'NOT met'})")
    print(f"  anchor (wait for the poll + the portal's own time for the deal's request): p50 "
          f"{fig['order_to_deal_anchor_p50_s']} s, p95 {fig['order_to_deal_anchor_p95_s']} s -> ratio p50 "
          f"{fig['order_to_deal_vs_anchor_p50']}, p95 {fig['order_to_deal_vs_anchor_p95']}")
    print(f"  of which the wait for the poll p50 {fig['poll_wait_p50_s']} s, p95 {fig['poll_wait_p95_s']} s; "
          f"syncd (export -> deal) p50 {fig['syncd_part_p50_s']} s, p95 {fig['syncd_part_p95_s']} s")
    print(f"  the shop was polled {len(polls)} times, every {fig['shop_poll_gap_p50_s']} s (p50), at most "
          f"{fig['shop_poll_gap_max_s']} s apart; {fig['shop_polls_late']} gaps over 1.5 x the {a.poll:g} s interval")
    print(f"  first quarter of the orders p50 {fig['order_to_deal_first_quarter_p50_s']} s, last quarter "
          f"p50 {fig['order_to_deal_last_quarter_p50_s']} s; deals missing: {missing_deals}")
    print(f"CRM edit -> shop ({len(e_lat)} of {len(edits)} edits timed; {lost} did not arrive):")
    print(f"  p50 {fig['edit_to_shop_p50_s']} s, p95 {fig['edit_to_shop_p95_s']} s, max {fig['edit_to_shop_max_s']} s "
          f"(goal <= 2 s: {'met' if fig['edit_to_shop_goal_met'] else 'NOT met'})")
    print(f"  anchor (the portal's event delivery + the shop's upload): p50 {fig['edit_to_shop_anchor_p50_s']} s, "
          f"p95 {fig['edit_to_shop_anchor_p95_s']} s -> ratio p50 {fig['edit_to_shop_vs_anchor_p50']}, "
          f"p95 {fig['edit_to_shop_vs_anchor_p95']}; syncd's part (incl. its {a.event_debounce or 1.0:g} s event "
          f"debounce) p50 {fig['edit_syncd_part_p50_s']} s, p95 {fig['edit_syncd_part_p95_s']} s")
    print(f"portal: {len(rs)} requests ({fig['limit_hits']} limit hits), {notices} notices for {len(deals)} new "
          f"deals; commands "
          + ", ".join(f"{m} {n}" for m, n in commands.most_common(8)))
    print("events delivered: " + ", ".join(f"{ev} {st_}: {n}" for (ev, st_), n in sorted(ev_status.items(), key=str)))
    print(f"writes still open at the end: {open_writes}, dead: {dead}; daemon CPU {fig['daemon_cpu_s']} s in "
          f"{fig['seconds']} s")
    if errs:
        print(f"daemon logged {len(errs)} error line(s); first: {errs[0]}")
    return fig


class Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0], formatter_class=Help,
                                 epilog="\n\n".join((__doc__ or "").split("\n\n")[1:-1]))
    ap.add_argument("--orders", type=int, default=200, help="shop orders placed (each deal is edited once)")
    ap.add_argument("--rate", type=float, default=1.0, help="orders placed per second (open loop)")
    ap.add_argument("--poll", type=float, default=3.0, help="seconds between polls of the shop (the demo's)")
    ap.add_argument("--crm-poll", type=float, default=120.0,
                    help="seconds between polls of the CRM's deals (contacts every 5 min, companies and leads "
                         "10 min, or this if longer), as in config.example.toml: edits come by their events")
    ap.add_argument("--edit-after", type=float, default=5.0,
                    help="seconds a deal exists before its manager edits it")
    ap.add_argument("--event-debounce", type=float, default=None,
                    help="the connector's event_debounce (None: the connector's own, 1 s)")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds the portal adds to every answer")
    ap.add_argument("--no-limit", action="store_true", help="portal without its 2 requests/s limit (a box portal)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the last deals and edits")
    ap.add_argument("--pg", metavar="URL", help="a fresh database on this PostgreSQL server instead of SQLite")
    ap.add_argument("--log-level", default="warning", help="the daemon's log_level (its log goes to --dump)")
    ap.add_argument("--dump", metavar="DIR", help="also write the peers' request logs and the daemon's log there")
    a = ap.parse_args()
    fig = run(a)
    print(json.dumps(fig, ensure_ascii=False))


if __name__ == "__main__":
    main()
