"""At a glance: throughput per hour, the lag history, quiet runs folded, when 1C last called."""

from __future__ import annotations

import datetime as dt
import json

from daemon_env import Env
from sqlalchemy import update

from syncd.daemon import glance
from syncd.store import tables as t
from syncd.store import utcnow


def _run(env: Env, system: str, stream: str, counts: dict[str, int], *, hours_ago: float = 0.0,
         error: str | None = None) -> str:
    store = env.rt.store
    rid = store.start_run(system, stream, "test")
    store.finish_run(rid, counts, error)
    if hours_ago:
        with store.begin() as c:
            c.execute(update(t.runs).where(t.runs.c.id == rid).values(
                started_at=utcnow() - dt.timedelta(hours=hours_ago)))
    return rid


def test_throughput_per_hour_of_the_last_day(env: Env) -> None:
    _run(env, env.shop, "order", {"created": 3, "updated": 2, "skipped": 9})
    _run(env, env.shop, "push", {"pushed": 4, "dead": 1})
    _run(env, env.shop, "order", {"created": 7, "failed": 2}, hours_ago=5.2)
    _run(env, env.shop, "order", {"created": 100}, hours_ago=30)          # older than a day: not shown
    _run(env, env.crm, "person", {"updated": 1}, hours_ago=22.5)   # inside the window whatever the minute
    now = utcnow()
    tp = glance.throughput(env.rt.store, [env.shop, env.crm], now)
    shop, crm = tp[env.shop], tp[env.crm]
    assert len(shop.total) == glance.HOURS
    assert shop.records_in[-1] == 5 and shop.records_out[-1] == 4 and shop.failed[-1] == 1
    i = int(((now - dt.timedelta(hours=5.2)) - shop.start).total_seconds() // 3600)
    assert i in (17, 18) and shop.records_in[i] == 7 and shop.failed[i] == 2
    assert sum(shop.records_in) == 12 and sum(shop.failed) == 3
    assert sum(crm.records_in) == 1
    assert shop.start <= now - dt.timedelta(hours=23) and shop.start > now - dt.timedelta(hours=25)


def test_lag_is_sampled_and_kept_for_a_day(env: Env) -> None:
    store = env.rt.store
    systems = [env.crm, env.shop]
    env.shop_person("s1")
    env.rt.run_stream(env.shop, "person")          # read, not pushed yet: a write to the CRM waits
    assert len(env.rt.store.list_outbox("pending")) == 1
    t0 = utcnow()
    glance.sample_lag(store, systems, t0 + dt.timedelta(seconds=90))
    hist = glance.lag_history(store, systems, t0 + dt.timedelta(seconds=90))
    assert [p[1] >= 89 for p in hist[env.crm]] == [True]
    assert [p[1] for p in hist[env.shop]] == [0.0]
    # a day later the old point is gone and the new one is there
    later = t0 + dt.timedelta(hours=24, minutes=5)
    glance.sample_lag(store, systems, later)
    hist = glance.lag_history(store, systems, later)
    assert len(hist[env.crm]) == 1 and hist[env.crm][0][0] == round(later.timestamp(), 1)
    # a system no longer configured is dropped from the history
    glance.sample_lag(store, [env.crm], later)
    assert set(store.kv_get(glance.LAG_KEY)) == {env.crm}


def test_quiet_runs_fold_into_one_line() -> None:
    now = utcnow()

    def run(i: int, stream: str, counts: dict[str, int], **kw: object) -> dict[str, object]:
        return {"system": "crm", "stream": stream, "started_at": now - dt.timedelta(seconds=i), "status": "ok",
                "counts": counts, "error": None, **kw}

    runs = [run(0, "push", {}), run(1, "push", {"pushed": 0}), run(2, "deal", {"created": 1}),
            run(3, "push", {}), run(4, "deal", {"skipped": 3}), run(5, "deal", {}, status="failed", error="503"),
            run(6, "deal", {}, status="running"), run(7, "push", {"pushed": 2})]
    out = glance.fold_runs(runs)
    assert isinstance(out[0], glance.Folded)
    assert len(out[0].runs) == 4 and out[0].streams == [("crm/push", 3), ("crm/deal", 1)]
    assert out[0].first == now - dt.timedelta(seconds=4) and out[0].last == now
    assert [r["started_at"] for r in out[1:]] == [now - dt.timedelta(seconds=i) for i in (2, 5, 6, 7)]
    # the busy runs shown set the span; quiet runs older than the oldest shown are not counted
    out = glance.fold_runs(runs, limit=1)
    assert len(out) == 2 and len(out[0].runs) == 2
    assert glance.fold_runs([]) == [] and glance.fold_runs(runs[2:3]) == runs[2:3]


def test_last_exchange_of_a_peer_that_calls_syncd(env: Env) -> None:
    store = env.rt.store
    ts = utcnow().timestamp() - 60
    store.kv_set(f"conn:{env.crm}:last_exchange", ts)
    store.kv_set(f"conn:{env.shop}:last_exchange", "garbage")
    assert glance.last_exchanges(store, [env.crm, env.shop]) == {env.crm: ts}
    assert json.loads(json.dumps(glance.last_exchanges(store, ["nope"]))) == {}
