"""SIGTERM on a real `syncd run` while pulls and pushes are in flight loses nothing, and two
instances sharing a database never run the same job at the same time."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import select

from daemonproc import SyncdProcess
from factories import write_config
from syncd.config import load_settings
from syncd.daemon.runtime import Runtime
from syncd.store import Store
from syncd.store import tables as t

N = 300


def test_sigterm_mid_work_loses_nothing(tmp_path: Path) -> None:
    systems = {"src": {"type": "memory", "seed": N, "batch_size": 20, "read_delay": 0.05},
               "dst": {"type": "memory", "write_delay": 0.01}}
    cfg = write_config(tmp_path, systems=systems, jobs=[{"system": "src", "stream": "person", "every": "1s"}])
    run = SyncdProcess(cfg, "run")
    db = f"sqlite:///{tmp_path}/syncd.db"
    try:
        run.wait(lambda: Path(tmp_path / "syncd.db").exists(), "the database is made", 30)
        store = Store(db)
        run.wait(lambda: store.count("outbox", status="done") >= 5, "five writes done", 30)
        run.stop(60, must=True)
    finally:
        run.kill9()
    assert run.proc.returncode == 0, run.tail(20)
    events = [e["event"] for e in run.log]
    assert "daemon_stopping" in events and events[-1] == "daemon_stopped"

    # nothing half-done: no write left claimed, each entity whole with its binding and shadow
    assert store.count("outbox", status="sending") == 0
    ingested = store.count("bindings", system="src")
    assert 0 < ingested <= N
    assert store.count("entities") == ingested == store.count("shadows", system="src")
    cursor = int(store.get_cursor("src", "person") or 0)
    assert cursor == ingested, "the cursor moved exactly as far as what was committed"
    with store.engine.connect() as c:
        done = c.execute(select(t.outbox.c.entity_id).where(t.outbox.c.status == "done")).scalars().all()
        bound = set(c.execute(select(t.bindings.c.entity_id).where(t.bindings.c.system == "dst")).scalars())
    assert set(done) <= bound
    store.close()

    # a restart (one pass) picks up exactly where it stopped: every record once, none twice
    r = subprocess.run([sys.executable, "-m", "syncd.cli", "-c", str(cfg), "--json", "sync"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout[-1500:], [l for l in r.stderr.splitlines() if "error" in l][:5])
    store = Store(db)
    assert store.count("bindings", system="src") == N
    assert store.count("entities") == N
    store.close()


def test_two_instances_never_run_one_job_at_once(tmp_path: Path, pg_url: str) -> None:
    systems = {"src": {"type": "memory", "seed": 200, "batch_size": 10, "read_delay": 0.02},
               "dst": {"type": "memory"}}
    cfg = write_config(tmp_path, systems=systems, daemon={"database_url": pg_url, "lease_ttl": 60})
    settings = load_settings(cfg)
    a = Runtime(settings)
    settings_b = load_settings(cfg)
    settings_b.daemon.instance = "second"
    b = Runtime(settings_b)
    ran: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def go(name: str, rt: Runtime) -> None:
        barrier.wait()
        ran[name] = rt.run_stream("src", "person")

    threads = [threading.Thread(target=go, args=(n, rt)) for n, rt in (("a", a), ("b", b))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    # exactly one of them ran the job; the other saw the lease and stepped aside
    assert sorted(v is None for v in ran.values()) == [False, True]
    with a.store.engine.connect() as c:
        runs = c.execute(select(t.runs).where(t.runs.c.system == "src")).mappings().all()
    assert len(runs) == 1 and runs[0]["status"] == "ok"
    # the lease is free again afterwards; a dead holder's lease expires and is taken over
    assert b.store.acquire_lease("job:src:person", "second", 0.1)
    time.sleep(0.2)
    assert a.store.acquire_lease("job:src:person", a.instance, 60)
    a.close()
    b.close()
