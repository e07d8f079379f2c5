"""The write path as one state machine (syncd/pipeline/outbox.py): every transition of its table,
walked one by one with its guard, and the rule that nothing else in syncd changes a row's status.

Each test starts from the state the table names, makes the transition the way the pusher, the
planner or a person does, and reads the row back from the store.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from syncd.pipeline import outbox
from syncd.store import Store, new_id, utcnow
from syncd.store import tables as t

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)


def _entity(store: Store, *, hold: str | None = None, fields: str = '{"person.name":"Анна"}') -> str:
    eid = new_id()
    with store.begin() as c:
        c.execute(insert(t.entities).values(id=eid, type="person", fields=fields, versions="{}", created_at=NOW,
                                            updated_at=NOW, hold=hold))
    return eid


def _plan(store: Store, eid: str, system: str = "crm", op: str = "create") -> int:
    with store.begin() as c:
        outbox.plan(c, [outbox.Intent(eid, "person", system, op, "test", {"person.name": "Анна"})], now=NOW)
    return _row(store, eid, system)["id"]


def _row(store: Store, eid: str, system: str = "crm") -> dict[str, Any]:
    with store.read() as c:
        rows = [dict(r) for r in c.execute(select(t.outbox).where(t.outbox.c.entity_id == eid,
                                                                   t.outbox.c.system == system)
                                           .order_by(t.outbox.c.id)).mappings()]
    return rows[-1]


def _claim(store: Store, system: str = "crm", *, instance: str = "i1", ttl: float = 60,
           now: dt.datetime | None = None) -> outbox.Claim:
    # (rows woken by unblock are due at the real time, after NOW)
    return outbox.claim(store, system, instance=instance, ttl=ttl, now=now or utcnow() + dt.timedelta(seconds=1))


def _sending(store: Store, **kw: Any) -> tuple[str, dict[str, Any], str]:
    eid = _entity(store)
    _plan(store, eid)
    cl = _claim(store, **kw)
    assert [r["entity_id"] for r in cl.rows] == [eid]
    return eid, cl.rows[0], cl.token


def _bind(store: Store, eid: str, system: str = "crm", how: str = "created") -> None:
    with store.begin() as c:
        c.execute(insert(t.bindings).values(system=system, type="person", external_id=f"x-{eid}", entity_id=eid,
                                            created_at=NOW, how=how, alias=False))


# -- plan -------------------------------------------------------------------------------------------

def test_plan_makes_a_pending_row_and_coalesces_into_an_open_one(store: Store) -> None:
    eid = _entity(store)
    rid = _plan(store, eid)
    assert (_row(store, eid)["status"], _row(store, eid)["gen"]) == ("pending", 0)
    assert _plan(store, eid, op="update") == rid and _row(store, eid)["gen"] == 1      # pending: coalesced
    _claim(store)
    _plan(store, eid)
    r = _row(store, eid)
    assert (r["id"], r["status"], r["gen"]) == (rid, "sending", 2)                       # sending: stays so


def test_plan_wakes_a_blocked_row_and_bumps_a_dead_one(store: Store) -> None:
    eid, row, token = _sending(store)
    other = _entity(store)
    with store.begin() as c:
        assert outbox.block(c, outbox.fence(c, row["id"], token), on=other, why="create", detail="waits",
                            now=NOW, link_wait=600) == "blocked"
    _plan(store, eid)
    r = _row(store, eid)
    assert (r["status"], r["blocked_on"], r["gen"]) == ("pending", None, 1)
    cl = _claim(store)
    with store.begin() as c:
        outbox.dead(c, outbox.fence(c, cl.rows[0]["id"], cl.token), error="boom", now=NOW)
    _plan(store, eid)
    assert (_row(store, eid)["status"], _row(store, eid)["gen"]) == ("dead", 2)


# -- claim, renew, release, reclaim --------------------------------------------------------------

def test_claim_takes_due_rows_expired_claims_and_blocked_rows_due_for_a_recheck(store: Store) -> None:
    eid = _entity(store)
    _plan(store, eid)
    assert _claim(store, now=NOW - dt.timedelta(seconds=5)).rows == []                   # not due yet
    first = _claim(store, ttl=10, now=NOW + dt.timedelta(seconds=1))
    assert _row(store, eid)["claim_token"] == first.token and _row(store, eid)["claimed_by"] == "i1"
    assert _claim(store, instance="i2", now=NOW + dt.timedelta(seconds=5)).rows == []     # held, in time
    later = _claim(store, instance="i2", now=NOW + dt.timedelta(seconds=30))              # deadline passed
    assert later.rows[0]["claimed_from"] == "sending" and _row(store, eid)["claimed_by"] == "i2"
    on = _entity(store)
    with store.begin() as c:
        outbox.block(c, outbox.fence(c, later.rows[0]["id"], later.token), on=on, why="create",
                     detail="waits", now=NOW, link_wait=600)
    recheck = _row(store, eid)["next_attempt_at"].replace(tzinfo=dt.timezone.utc)
    assert _claim(store, now=recheck - dt.timedelta(seconds=1)).rows == []
    again = _claim(store, now=recheck + dt.timedelta(seconds=1))
    assert again.rows[0]["claimed_from"] == "blocked" and _row(store, eid)["status"] == "sending"


def test_renew_pushes_only_the_tokens_deadlines(store: Store) -> None:
    a, _row_a, token_a = _sending(store)
    b, _row_b, _token_b = _sending(store)
    before = {e: _row(store, e)["claim_until"] for e in (a, b)}
    assert outbox.renew(store, [token_a], ttl=3600) == 1
    assert _row(store, a)["claim_until"] > before[a] and _row(store, b)["claim_until"] == before[b]


def test_release_gives_the_tokens_rows_back_untouched(store: Store) -> None:
    eid, row, token = _sending(store)
    assert outbox.release(store, [row["id"]], "not-the-token") == 0
    assert outbox.release(store, [row["id"]], token) == 1
    r = _row(store, eid)
    assert (r["status"], r["claim_token"], r["attempts"]) == ("pending", None, 0)


def test_reclaim_takes_back_a_dead_instances_rows_as_an_attempt(store: Store) -> None:
    mine, _r1, _t1 = _sending(store, instance="gone")
    other, _r2, _t2 = _sending(store, instance="alive")
    assert sorted(outbox.claimers(store, exclude="nobody")) == ["alive", "gone"]
    assert outbox.reclaim(store, "gone") == 1
    assert (_row(store, mine)["status"], _row(store, mine)["attempts"]) == ("pending", 1)
    assert _row(store, other)["status"] == "sending"
    # killed again and again with the same write in flight: marked as tried once, never counted up
    # to a dead letter the peer never caused
    for _ in range(12):
        _claim(store, instance="gone")
        assert outbox.reclaim(store, "gone") == 1
    assert (_row(store, mine)["status"], _row(store, mine)["attempts"]) == ("pending", 1)


# -- settling: fence, done, again, block, dead ------------------------------------------------------

def test_done_only_by_the_claims_holder(store: Store) -> None:
    eid, row, token = _sending(store)
    with store.begin() as c:
        assert outbox.fence(c, row["id"], "stolen") is None
        assert outbox.fence(c, row["id"], token) is not None
        outbox.done(c, row["id"], last_error=None)
    with store.begin() as c:
        assert outbox.fence(c, row["id"], token) is None                               # settled: no more
    assert _row(store, eid)["status"] == "done" and _row(store, eid)["claim_token"] is None


def test_again_makes_it_pending_at_the_time_given(store: Store) -> None:
    eid, row, token = _sending(store)
    at = NOW + dt.timedelta(minutes=5)
    with store.begin() as c:
        outbox.fence(c, row["id"], token)
        outbox.again(c, row["id"], at=at, attempts=1, last_error="timeout")
    r = _row(store, eid)
    assert (r["status"], r["attempts"], r["last_error"]) == ("pending", 1, "timeout")
    assert r["next_attempt_at"].replace(tzinfo=dt.timezone.utc) == at


@pytest.mark.parametrize("why", ["create", "record", "held", "confirm", "dead"])
def test_block_never_waits_for_what_is_there(store: Store, why: str) -> None:
    eid, row, token = _sending(store)
    on = _entity(store, hold="review" if why == "held" else None, fields="{}" if why == "record" else
                 '{"person.name":"Борис"}')
    if why == "create":
        _bind(store, on)
    with store.begin() as c:
        status = outbox.block(c, outbox.fence(c, row["id"], token), on=on, why=why, detail="waits", now=NOW,
                              link_wait=600)
    # what it waits for: a binding there (present), no fields yet, a hold, no open create, no dead letter
    expected = {"create": "pending", "record": "blocked", "held": "blocked", "confirm": "pending", "dead": "pending"}
    assert status == expected[why] == _row(store, eid)["status"]


def test_dead_makes_what_waits_for_it_wait_for_a_person(store: Store) -> None:
    buyer, row, token = _sending(store)
    order = _entity(store)
    _plan(store, order)
    cl = _claim(store)
    with store.begin() as c:
        outbox.block(c, outbox.fence(c, cl.rows[0]["id"], cl.token), on=buyer, why="create", detail="buyer",
                     now=NOW, link_wait=600)
        outbox.dead(c, outbox.fence(c, row["id"], token), error="PermanentError: refused", now=NOW)
    assert _row(store, buyer)["status"] == "dead"
    waiting = _row(store, order)
    assert (waiting["status"], waiting["blocked_why"]) == ("blocked", "dead") and "replay" in waiting["last_error"]


# -- waking, replay, merge ------------------------------------------------------------------------

def test_unblock_and_sweep_wake_what_waited(store: Store) -> None:
    eid, row, token = _sending(store)
    on = _entity(store)
    with store.begin() as c:
        outbox.block(c, outbox.fence(c, row["id"], token), on=on, why="create", detail="waits", now=NOW,
                     link_wait=600)
    with store.begin() as c:
        assert outbox.unblock(c, [on], system="other") == 0                 # another system's wait: not this
        assert outbox.unblock(c, [on], system="crm") == 1
    assert _row(store, eid)["status"] == "pending"
    cl = _claim(store)
    with store.begin() as c:
        outbox.block(c, outbox.fence(c, cl.rows[0]["id"], cl.token), on=on, why="create", detail="w", now=NOW,
                     link_wait=600)
        # a wake-up missed (the binding written behind the outbox's back): the sweep finds and repairs it
    _bind(store, on)
    with store.begin() as c:
        assert outbox.stale_blocked(c) == 1 and outbox.sweep(c) == 1 and outbox.stale_blocked(c) == 0
    assert _row(store, eid)["status"] == "pending"


def test_replay_sends_a_dead_letter_again_from_scratch(store: Store) -> None:
    eid, row, token = _sending(store)
    with store.begin() as c:
        outbox.dead(c, outbox.fence(c, row["id"], token), error="boom", now=NOW, attempts=8)
    assert outbox.replay(store) == 1
    r = _row(store, eid)
    assert (r["status"], r["attempts"], r["origin"]) == ("pending", 0, "replay")


def test_merged_closes_the_open_writes_of_an_entity_merged_away(store: Store) -> None:
    held = _entity(store)
    _plan(store, held, "crm")
    _plan(store, held, "shop")
    sending = _claim(store, "shop")
    with store.begin() as c:
        assert outbox.close_merged(c, held, "into", "review 1") == 1              # not the one in flight
    assert _row(store, held, "crm")["status"] == "done" and "merged into into" in _row(store, held, "crm")["last_error"]
    assert _row(store, held, "shop")["status"] == "sending" and sending.rows


# -- nothing else changes a row's status -----------------------------------------------------------

def test_only_the_outbox_module_writes_outbox_rows() -> None:
    """The table above is the whole truth only if no other module writes the outbox table."""
    writes = re.compile(r"(update|insert|delete)\(\s*t\.outbox\b|t\.outbox\.(update|insert|delete)\(")
    offenders = []
    for path in sorted((ROOT / "syncd").rglob("*.py")) + sorted((ROOT / "connectors").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "syncd/pipeline/outbox.py":
            continue
        if writes.search(path.read_text(encoding="utf-8")):
            offenders.append(rel)
    assert offenders == []


def test_every_transition_of_the_table_has_a_test_here() -> None:
    doc = outbox.__doc__ or ""
    table = doc.split("----------   ", 1)[1].split("Why a block", 1)[0]
    names = {m.group(1) for m in re.finditer(r"^    (\w+)\s{2,}", table, re.M)}
    assert names == {"plan", "claim", "renew", "release", "reclaim", "done", "again", "block", "dead", "unblock",
                     "sweep", "replay", "merged"}
    here = Path(__file__).read_text(encoding="utf-8")
    for name in names:
        assert re.search(rf"def test_[a-z_]*{name}", here), f"no test walks the {name!r} transition"
