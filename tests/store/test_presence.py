"""An instance name belongs to one live process (syncd.store.presence): a restart after kill -9
takes its dead predecessor's claims back at once; a second live process with the same name (a CLI
`sync` beside the daemon) works under a name of its own and takes nothing."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
from sqlalchemy import insert, select

from factories import make_world, person
from syncd.pipeline import outbox
from syncd.pipeline.push import Pusher, PushPolicy
from syncd.store import Store
from syncd.store import tables as t
from syncd.store.presence import Holder, Presence

POLICY = PushPolicy(base_delay=0.0, inline_wait_max=0.0, claim_ttl=300)


def _claimed(store: Store, n: int = 3, instance: str = "inst") -> tuple[object, dict, outbox.Claim]:
    syncer, remote = make_world(store, systems=("crm", "shop"), policy=POLICY)
    for i in range(n):
        remote["shop"].edit("person", f"s{i}", **person(name=f"К {i}", email=f"k{i}@example.ru"))
    syncer.pull("shop", "person")
    return syncer, remote, outbox.claim(store, "crm", instance=instance, ttl=300)


def _dead_holder() -> Holder:
    """A process of this host that has exited."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    started = psutil.Process(p.pid).create_time()
    p.wait()
    return Holder(Holder.me().host, p.pid, started, "dead")


def test_a_second_live_process_with_the_name_takes_no_claims(store: Store) -> None:
    syncer, remote, cl = _claimed(store)
    daemon = Presence(store, "inst")
    assert daemon.name == "inst" and daemon.took_over          # the name was free
    cli = Presence(store, "inst")                               # `syncd sync` with the same config
    assert cli.name.startswith("inst~") and not cli.took_over
    pusher = Pusher(store, syncer.mapper, syncer.connectors, worker="inst", policy=POLICY, presence=cli)
    assert pusher.start() == 0
    assert store.count("outbox", status="sending") == 3, "the live daemon's writes were taken from it"
    assert pusher.push("crm").pushed == 0 and remote["crm"].writes == 0
    daemon.leave()
    cli.leave()


def test_a_restart_after_kill_9_takes_its_claims_back_at_once(store: Store) -> None:
    syncer, remote, cl = _claimed(store)
    with store.begin() as c:                                    # the killed daemon's lease, still valid
        c.execute(insert(t.leases).values(name="instance:inst", holder=_dead_holder().text(),
                                          expires_at=time.time() + 300))
    restarted = Presence(store, "inst")
    assert restarted.name == "inst" and restarted.took_over
    pusher = Pusher(store, syncer.mapper, syncer.connectors, worker="inst", policy=POLICY, presence=restarted)
    assert pusher.start() == 3
    assert pusher.push("crm").pushed == 3 and remote["crm"].creates == 3
    restarted.leave()


def test_a_live_holder_on_another_host_is_waited_for_until_its_lease_expires(store: Store) -> None:
    syncer, _remote, _cl = _claimed(store)
    elsewhere = Holder("another-host", 4242, 1.0, "x")
    with store.begin() as c:
        c.execute(insert(t.leases).values(name="instance:inst", holder=elsewhere.text(),
                                          expires_at=time.time() + 300))
    p = Presence(store, "inst")
    assert p.name != "inst" and not p.took_over
    p.leave()
    with store.begin() as c:                                    # it stopped beating
        c.execute(t.leases.update().where(t.leases.c.name == "instance:inst").values(expires_at=time.time() - 1))
    q = Presence(store, "inst")
    assert q.name == "inst" and q.took_over
    q.leave()


def test_the_heartbeat_keeps_the_name_and_a_clean_stop_frees_it(store: Store) -> None:
    p = Presence(store, "inst", ttl=0.6)
    assert p.name == "inst"
    time.sleep(1.0)                                             # longer than the ttl: renewed meanwhile
    with store.read() as c:
        exp = c.execute(select(t.leases.c.expires_at).where(t.leases.c.name == "instance:inst")).scalar()
    assert exp > time.time()
    assert Presence(store, "inst").name != "inst"
    p.leave()
    with store.read() as c:
        assert c.execute(select(t.leases).where(t.leases.c.name == "instance:inst")).first() is None


def test_a_job_lease_of_a_gone_instance_is_taken_at_once_a_live_ones_is_not(tmp_path) -> None:
    """Issue 20 (scale-out c): the survivor of two instances ran the dead one's job only when its
    lease ran out (lease_ttl). A job lease whose holder is gone — killed on this host, or its
    presence expired elsewhere — is taken at once; a live holder's, or an unknown one's, is not."""
    from factories import write_config

    from syncd.config import load_settings
    from syncd.daemon.runtime import Runtime

    cfg = write_config(tmp_path, systems={"a": {"type": "memory"}, "b": {"type": "memory"}}, daemon={"lease_ttl": 300})
    rt = Runtime(load_settings(cfg))
    try:
        far = time.time() + 300
        with rt.store.begin() as c:
            c.execute(insert(t.leases).values(name="instance:killed", holder=_dead_holder().text(), expires_at=far))
            c.execute(insert(t.leases).values(name="instance:elsewhere", holder=Holder("host-b", 7, 1.0, "x").text(),
                                              expires_at=time.time() - 1))
            c.execute(insert(t.leases).values(name="instance:alive", holder=Holder("host-c", 8, 1.0, "y").text(),
                                              expires_at=far))
            for job, holder in (("job:a:one", "killed"), ("job:a:two", "elsewhere"), ("job:a:three", "alive"),
                                ("job:a:four", "never-registered")):
                c.execute(insert(t.leases).values(name=job, holder=holder, expires_at=far))
        assert rt.lease("job:a:one") and rt.store.lease_holder("job:a:one") == rt.instance
        assert rt.lease("job:a:two") and rt.store.lease_holder("job:a:two") == rt.instance
        assert not rt.lease("job:a:three") and rt.store.lease_holder("job:a:three") == "alive"
        assert not rt.lease("job:a:four") and rt.store.lease_holder("job:a:four") == "never-registered"
        # and the writes a gone instance had claimed go again now, a live one's stay claimed
        _syncer, _remote, claim = _claimed(rt.store, 3, instance="killed")
        live = claim.rows[0]["id"]
        with rt.store.begin() as c:              # one of them is the live instance's
            c.execute(t.outbox.update().where(t.outbox.c.id == live).values(claimed_by="alive"))
        assert rt.reclaim_gone() == 2
        with rt.store.read() as c:
            rows = {r.id: (r.status, r.claimed_by, r.attempts) for r in c.execute(
                select(t.outbox.c.id, t.outbox.c.status, t.outbox.c.claimed_by, t.outbox.c.attempts))}
        assert rows[live][:2] == ("sending", "alive")
        assert all(rows[r["id"]][0] == "pending" and rows[r["id"]][2] == 1 for r in claim.rows if r["id"] != live)
    finally:
        rt.close()
