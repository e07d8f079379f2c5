"""What `syncd audit` costs: records compared per second against reading the same records back
without comparing them.

Setup: the sandbox shop and Bitrix24 portal (rate limit off: a self-hosted portal, so the figure
is syncd's and the portal's, not the cloud limit's), the example mappings and rules, N shop
orders synced in by `syncd sync` passes (in process) until nothing is left to write. Then, in the
same run and on the same bound records:

- anchor: every bound CRM record (deals, contacts, products) read back through the connector's
  own read path (`fetch`, 50 ids a `crm.*.list` call) and nothing else — the least an audit
  must do;
- audit: `syncd audit` on the CRM (the same reads, plus mapping each record to canonical fields,
  loading syncd's golden records, shadows and open writes, and comparing field by field).

The ratio audit/anchor is what comparing costs on top of reading. Both are timed three times
(best of three), alternating. The audit must find zero drift (a run that finds drift fails).

Usage: python bench/audit.py [--n 1000]
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from world import Peers, write_config  # noqa: E402

from syncd.config import load_settings  # noqa: E402
from syncd.daemon.runtime import Runtime  # noqa: E402
from syncd.logs import configure_logging  # noqa: E402
from syncd.store import tables as t  # noqa: E402


def _bound(rt: Runtime, system: str) -> dict[str, list[str]]:
    """kind -> external ids of the records syncd has bound in `system`."""
    from sqlalchemy import select

    kinds: dict[str, list[str]] = {}
    with rt.store.read() as c:
        for typ, ext in c.execute(select(t.bindings.c.type, t.bindings.c.external_id)
                                  .where(t.bindings.c.system == system)):
            em = rt.mapper.push_map(system, typ)
            if em is not None:
                kinds.setdefault(em.kind, []).append(ext)
    return kinds


def _read_only(rt: Runtime, system: str, kinds: dict[str, list[str]]) -> int:
    conn = rt.connectors[system]
    n = 0
    for kind, ids in kinds.items():
        if kind in conn.fetchable:
            n += sum(1 for _ in conn.fetch(kind, ids))
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000, help="shop orders (each a new buyer)")
    args = ap.parse_args()
    configure_logging("console", "warning")
    peers = Peers(rate_limit=False)
    tmp = Path(tempfile.mkdtemp(prefix="syncd-bench-audit-"))
    rt = Runtime(load_settings(write_config(tmp, peers, rate=1000.0, burst=1000.0)))
    try:
        peers.place_orders(args.n)
        t0 = time.monotonic()
        for _ in range(20):
            c = rt.sync_once()
            rt.tick_rules()
            if not (c.created or c.updated or c.pushed or c.planned):
                break
        sync_s = time.monotonic() - t0
        kinds = _bound(rt, "crm")
        records = sum(len(v) for v in kinds.values())
        print(f"synced {args.n} orders in {sync_s:.1f} s; bound in the CRM: "
              + ", ".join(f"{k} {len(v)}" for k, v in sorted(kinds.items())))
        best_read, best_audit = float("inf"), float("inf")
        checked = read = 0
        drift = -1
        for _ in range(3):
            t0 = time.monotonic()
            read = _read_only(rt, "crm", kinds)
            best_read = min(best_read, time.monotonic() - t0)
            t0 = time.monotonic()
            report = rt.audit(systems=["crm"])
            best_audit = min(best_audit, time.monotonic() - t0)
            checked, drift = report.checked.get("crm", 0), len(report.drift)
        if drift:
            print(f"audit found {drift} differences on a settled world: {report.as_dict()['drift'][:5]}")
            sys.exit(1)
        read_rps, audit_rps = read / best_read, checked / best_audit
        print(f"anchor: read back {read} records in {best_read:.2f} s = {read_rps:,.0f} records/s")
        print(f"audit:  compared {checked} records in {best_audit:.2f} s = {audit_rps:,.0f} records/s, drift 0")
        print(f"audit / read-only = {audit_rps / read_rps:.3f}")
        out: dict[str, Any] = {"bench": "audit", "orders": args.n, "bound_crm_records": records,
                               "read_records": read, "audited_records": checked,
                               "read_only_records_per_s": round(read_rps, 1),
                               "audit_records_per_s": round(audit_rps, 1),
                               "ratio": round(audit_rps / read_rps, 3), "drift": drift}
        print(json.dumps(out))
    finally:
        rt.close()
        peers.stop()


if __name__ == "__main__":
    main()
