"""A concurrency model of the write path (issue 20): pushers and pullers whose steps interleave.

Three pushers share one outbox. Each goes through the write path one step at a time — claim,
decide (build the payload), send one write, settle one row (confirm, block, nothing, failure) —
and Hypothesis chooses whose step comes next, between pulls, people's edits in the shop and the
CRM, lost answers, crashes and expired claims. So it reaches orders of steps that threads hit
once in thousands of runs: a deal decided "blocked: waiting for its contact" before another
pusher creates the contact and settled after it; a pull reading back a record whose create is
not confirmed yet; a claim taken over from a pusher that is still sending.

What the model checks comes from what people did, not from what syncd computed (an oracle the
engine's own state cannot fool):
- a phone edited in both systems at once ends as the CRM's (`person.phone`: priority crm, shop);
- a buyer the CRM already has (same e-mail) is the same contact, never a second one (dedup);
- an order's total is the shop's latest (`order.total`: owner shop), even when an older read of
  the order is taken in again after a newer one (stale versions are dropped);
- every order reaches the CRM once, linked to its buyer's contact;
and, when the steps stop and every pusher has finished what it held, a normal drain (no sweep)
leaves nothing pending, blocked or dead, and no write blocked on a record that exists.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import update

from syncd.connector import Batch, RawRecord, WriteResult, traits
from syncd.mapping import Mapper, parse_mapping_doc
from syncd.mapping.load import validate_set
from syncd.pipeline import confirm, outbox, payload
from syncd.pipeline import batch as batch_mod
from syncd.pipeline.push import PushPolicy
from syncd.sandbox.memory import STAMP, MemoryConnector, MemorySystem
from syncd.store import Store, utcnow
from syncd.store import store as store_mod
from syncd.store import tables as t
from syncd.sync import Syncer

SYSTEMS = ("shop", "crm")
PUSHERS = ("p1", "p2", "p3")
POLICY = PushPolicy(base_delay=0.0, inline_wait_max=0.0, claim_ttl=300, max_attempts=50)


def _phases() -> tuple[Phase, ...]:
    """tests/mutations/run.py only asks whether a mutation is caught: it skips shrinking."""
    if os.environ.get("SYNCD_HYPOTHESIS_NO_SHRINK"):
        return (Phase.explicit, Phase.reuse, Phase.generate)
    return tuple(Phase)


def mapping() -> Mapper:
    maps = []
    for s in SYSTEMS:
        maps += [{"system": s, "kind": "person", "entity": "person", "create": True,
                  "fields": {"person.name": "name", "person.email": "email", "person.phone": "phone"}},
                 {"system": s, "kind": "order", "entity": "order", "create": True,
                  "fields": {"order.number": "number", "order.total": {"field": "total", "transform": "money"},
                             "order.customer": "customer_id"}}]
    ms = parse_mapping_doc({
        "maps": maps,
        "identity": {"person": {"keys": ["email"], "origin": ["shop", "crm"]},
                     "order": {"keys": ["number"], "origin": ["shop", "crm"]}},
        "conflicts": {"person.phone": {"policy": "priority", "order": ["crm", "shop"]},
                      "order.total": {"policy": "owner", "owner": "shop"},
                      "*": {"policy": "newest"}},
    }, "interleavings")
    validate_set(ms)
    return Mapper(ms)


class Remote(MemoryConnector):
    """A system; it remembers what each read returned (to take an old read in again later)."""

    def __init__(self, name: str, system: MemorySystem) -> None:
        super().__init__(name, system)
        self.snapshots: list[RawRecord] = []

    def read(self, stream: str, cursor: str | None, *, since: Any = None) -> Any:
        for batch in super().read(stream, cursor, since=since):
            self.snapshots.extend(batch.records)      # type: ignore[arg-type]
            yield batch


@dataclass
class Step:
    """One pusher between its steps: what it holds."""

    claim: outbox.Claim | None = None
    outcomes: list[payload.Outcome] | None = None
    results: dict[int, Any] = field(default_factory=dict)     # row index -> WriteResult | Exception
    settled: set[int] = field(default_factory=set)


class Interleavings(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # ids in creation order, the same on every run of an example (syncd's ids are time-ordered
        # with a random tail: two made in one millisecond would sort either way, and Hypothesis
        # replays an example expecting the same steps to do the same thing)
        seq = itertools.count(1)
        self._ids = [(m, m.new_id) for m in (batch_mod, outbox, store_mod)]
        for m, _ in self._ids:
            m.new_id = lambda: f"{next(seq):032x}"   # type: ignore[attr-defined]
        self.tmp = tempfile.mkdtemp()
        self._pg = None
        if os.environ.get("SYNCD_MODEL_PG"):
            from pgutil import _pg_database

            self._pg = _pg_database()
            url = next(self._pg)
        else:
            url = f"sqlite:///{self.tmp}/s.db"
        self.store = Store(url)
        self.mapper = mapping()
        self.remote = {s: MemorySystem(s, ("person", "order")) for s in SYSTEMS}
        self.conns = {s: Remote(s, self.remote[s]) for s in SYSTEMS}
        self.syncer = Syncer(self.store, self.mapper, self.conns, worker="drain", policy=POLICY)
        self.steps = {p: Step() for p in PUSHERS}
        self.n = 0
        self.phone: dict[str, str] = {}        # e-mail -> the phone it must end with
        self.total: dict[str, str] = {}        # order number -> the shop's latest total
        self.buyer: dict[str, str] = {}        # order number -> the buyer's e-mail
        self.stale: list[str] = []

    def _close(self) -> None:
        for m, fn in self._ids:
            m.new_id = fn                            # type: ignore[attr-defined]
        try:
            self.store.close()
        finally:
            if self._pg is not None:
                next(self._pg, None)
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _next(self) -> int:
        self.n += 1
        return self.n

    # -- people ---------------------------------------------------------------------------------
    @initialize()
    def a_client_the_crm_has(self) -> None:
        """A client typed into the CRM before the shop knew them; syncd has read the CRM."""
        self.remote["crm"].edit("person", "crm-p0", name="Давний клиент", email="old@example.ru", phone="+70000000000")
        self.phone["old@example.ru"] = "+70000000000"
        self.syncer.pull("crm", "person")

    @rule(known=st.booleans(), read=st.booleans())
    def shop_order(self, known: bool, read: bool) -> None:
        """A shop order; its buyer is new, or the CRM's client (same e-mail: their shop account,
        made on their first order, must become the CRM's contact, not a second one)."""
        n = self._next()
        if known:
            # their account, if the shop has one (syncd may have made it from the CRM), else a new one
            email = "old@example.ru"
            pid = self._ext_of("shop", email) or "shop-old"
            if pid not in self.remote["shop"].objects["person"]:
                self.remote["shop"].edit("person", pid, name="Давний клиент", email=email,
                                         phone=self.phone[email])
        else:
            email, pid = f"b{n}@example.ru", f"shop-p{n}"
            self.remote["shop"].edit("person", pid, name=f"Покупатель {n}", email=email, phone=f"+7916{n:07d}")
            self.phone[email] = f"+7916{n:07d}"
        self.remote["shop"].edit("order", f"shop-o{n}", number=f"N{n}", total=f"{100 + n}.00", customer_id=pid)
        self.total[f"N{n}"] = f"{100 + n}.00"
        self.buyer[f"N{n}"] = email
        if read:                      # the shop's export is read at once: buyer and order planned together
            self.pull_the_shop()

    @rule(data=st.data(), read=st.booleans())
    def shop_edits_a_total(self, data: st.DataObject, read: bool) -> None:
        """A shop manager changes an order's total (and syncd reads it at once, or later)."""
        orders = sorted(self.remote["shop"].objects["order"])
        if not orders:
            return
        ext = data.draw(st.sampled_from(orders))
        value = f"{self._next()}.50"
        self.remote["shop"].edit("order", ext, total=value)
        self.total[self.remote["shop"].objects["order"][ext]["number"]] = value
        if read:
            self.syncer.pull("shop", "order")

    @rule(data=st.data(), crm_first=st.booleans())
    def phone_edited_in_both(self, data: st.DataObject, crm_first: bool) -> None:
        """The same client's phone changed in the shop and in the CRM before syncd read either:
        the CRM has priority. Both are read in this step (in either order)."""
        both = [e for e in self.phone if self._ext_of("shop", e) and self._ext_of("crm", e)]
        if not both:
            return
        email = data.draw(st.sampled_from(sorted(both)))
        n = self._next()
        for s in SYSTEMS:
            for ext in self._exts_of(s, email):
                self.remote[s].edit("person", ext, phone=f"+7{'9' if s == 'crm' else '8'}{n:09d}")
        self.phone[email] = f"+79{n:09d}"
        for s in (("crm", "shop") if crm_first else ("shop", "crm")):
            self.syncer.pull(s, "person")

    def _exts_of(self, system: str, email: str) -> list[str]:
        return sorted(e for e, o in self.remote[system].objects["person"].items() if o.get("email") == email)

    def _ext_of(self, system: str, email: str) -> str | None:
        found = self._exts_of(system, email)
        return found[0] if found else None

    # -- syncd's readers ------------------------------------------------------------------------
    @rule(system=st.sampled_from(SYSTEMS), kind=st.sampled_from(("person", "order")))
    def pull(self, system: str, kind: str) -> None:
        self.syncer.pull(system, kind)

    @rule(data=st.data())
    def an_old_read_taken_in_again(self, data: st.DataObject) -> None:
        """An overlap window (or a re-sent export) brings an order's older read after a newer one."""
        reads = [r for r in self.conns["shop"].snapshots if r.kind == "order"]
        newest = {r.external_id: r.version for r in reads}
        old = [r for r in reads if r.version != newest[r.external_id]]
        if not old:
            return
        rec = data.draw(st.sampled_from(old))
        self.syncer.engine.ingest("shop", Batch("order", [rec]))

    @rule()
    def pull_the_shop(self) -> None:
        """A pass over the shop's streams: its new buyers and their orders are planned together."""
        self.syncer.pull("shop", "person")
        self.syncer.pull("shop", "order")

    # -- faults ---------------------------------------------------------------------------------
    @rule()
    def the_next_answer_is_lost(self) -> None:
        self.remote["crm"].faults.append("lost")

    # -- pushers, one step at a time ------------------------------------------------------------
    @precondition(lambda self: any(s.claim is None for s in self.steps.values()))
    @rule(p=st.sampled_from(PUSHERS))
    def claim(self, p: str) -> None:
        st_ = self.steps[p]
        if st_.claim is None:
            cl = outbox.claim(self.store, "crm", instance=p, ttl=POLICY.claim_ttl, limit=3)
            if cl.rows:
                self.steps[p] = Step(claim=cl)

    @rule(p=st.sampled_from(PUSHERS))
    def decide(self, p: str) -> None:
        st_ = self.steps[p]
        if st_.claim is None or st_.outcomes is not None:
            return
        with self.store.read() as c:
            st_.outcomes = payload.build(c, self.mapper, st_.claim.rows, traits(self.conns["crm"]), now=utcnow(),
                                         link_wait=POLICY.link_wait)
        # what a write carries is decided now, from what syncd holds now: checked here. (A pull that
        # commits between this decision and the send makes the write older than the golden record
        # by the time it lands; its confirm sees the record changed in flight and sends it again —
        # the drain at the end checks that every value arrived.)
        for o in st_.outcomes:
            if isinstance(o, payload.Ready):
                self._check_not_stale(o.op)

    @rule(p=st.sampled_from(PUSHERS))
    def send(self, p: str) -> None:
        st_ = self.steps[p]
        if st_.outcomes is None:
            return
        todo = [i for i, o in enumerate(st_.outcomes) if isinstance(o, payload.Ready) and i not in st_.results]
        if not todo:
            return
        i = todo[0]
        op = st_.outcomes[i].op                     # type: ignore[union-attr]
        try:
            st_.results[i] = self.conns["crm"].write(op)
        except Exception as exc:  # noqa: BLE001 - settled as the pusher would
            st_.results[i] = exc

    @rule(p=st.sampled_from(PUSHERS))
    def settle(self, p: str) -> None:
        st_ = self.steps[p]
        if st_.outcomes is None or st_.claim is None:
            return
        for i, o in enumerate(st_.outcomes):
            if i in st_.settled:
                continue
            row, token = st_.claim.rows[i], st_.claim.token
            if isinstance(o, payload.Ready):
                if i not in st_.results:
                    return                          # to be sent first
                self._settle_sent(row, token, o, st_.results[i])
            elif isinstance(o, payload.Blocked):
                with self.store.begin() as c:
                    confirm.blocked(c, row, token, o, link_wait=POLICY.link_wait)
            elif isinstance(o, payload.Nothing):
                with self.store.begin() as c:
                    confirm.nothing(c, row, token, o.reason)
            else:
                with self.store.begin() as c:
                    confirm.failed(c, row, token, o.error, backoff=self.syncer.pusher.backoff, permanent=True)
            st_.settled.add(i)
            break
        if len(st_.settled) == len(st_.outcomes):
            self.steps[p] = Step()

    def _settle_sent(self, row: dict[str, Any], token: str, o: payload.Ready, res: Any) -> None:
        with self.store.begin() as c:
            if isinstance(res, WriteResult):
                confirm.confirmed(c, self.mapper, row, token, o, res, link_wait=POLICY.link_wait)
            else:
                confirm.failed(c, row, token, res, backoff=self.syncer.pusher.backoff, permanent=False)

    @rule(p=st.sampled_from(PUSHERS))
    def a_pusher_dies_and_its_claim_expires(self, p: str) -> None:
        """Killed mid-claim: what it sent stays sent, its rows are anybody's after the deadline."""
        st_ = self.steps[p]
        if st_.claim is None:
            return
        with self.store.begin() as c:
            c.execute(update(t.outbox).where(t.outbox.c.claim_token == st_.claim.token)
                      .values(claim_until=utcnow().replace(year=2000)))
        self.steps[p] = Step()

    # -- checks ---------------------------------------------------------------------------------
    def _check_not_stale(self, op: Any) -> None:
        """A write carries what syncd holds when it is decided (never an older value: not one frozen
        when it was planned)."""
        ent = self.store.entity(op.entity_id)
        em = self.mapper.push_map("crm", op.entity)
        if ent is None or em is None:
            return
        for name, fm in em.fields.items():
            if fm.field in op.fields and name != "order.customer":
                want = self.mapper.from_canonical(em, {name: ent["fields"].get(name)}, create=False).get(fm.field)
                if op.fields[fm.field] != want:
                    self.stale.append(f"{op.kind} {fm.field}={op.fields[fm.field]!r}, syncd holds {want!r}")

    @invariant()
    def no_stale_write(self) -> None:
        assert not self.stale, self.stale[:3]

    @invariant()
    def no_client_twice_in_the_crm(self) -> None:
        emails = [o.get("email") for o in self.remote["crm"].objects["person"].values()]
        assert len(emails) == len(set(emails)), f"a contact made twice: {sorted(emails)}"

    @precondition(lambda self: self.n > 0 and self.n % 4 == 0)
    @rule()
    def pause(self) -> None:
        """Now and then everything settles mid-run (then the steps go on)."""
        self.everything_settles()

    def teardown(self) -> None:
        try:
            if self.n > 0:
                self.everything_settles()
        finally:
            self._close()

    def everything_settles(self) -> None:
        """The steps stop: each pusher finishes what it holds, then a normal drain (no sweep)."""
        for p in PUSHERS:
            for _ in range(12):
                if self.steps[p].claim is None:
                    break
                self.decide(p)
                self.send(p)
                self.send(p)
                self.send(p)
                self.settle(p)
        self.remote["crm"].faults.clear()
        with self.store.read() as c:
            assert outbox.stale_blocked(c) == 0, "a write waits for a record that exists (a lost wake-up)"
        self.syncer.until_quiet(max_passes=8)
        for status in ("pending", "sending", "blocked", "dead"):
            n = self.store.count("outbox", status=status)
            assert n == 0, f"{n} write(s) {status} after the drain"
        crm, shop = self.remote["crm"].objects, self.remote["shop"].objects
        for email, phone in self.phone.items():
            for s in SYSTEMS:
                for ext in self._exts_of(s, email):
                    assert self.remote[s].objects["person"][ext].get("phone") == phone, \
                        f"{s}: {email} has phone {self.remote[s].objects['person'][ext].get('phone')}, the CRM's is {phone}"
        deals = {o["number"]: o for o in crm["order"].values()}
        assert sorted(deals) == sorted(self.total), "every order is one deal"
        for number, total in self.total.items():
            assert deals[number].get("total") == total, f"deal {number}: total {deals[number].get('total')}, shop's {total}"
            shop_order = next(o for o in shop["order"].values() if o["number"] == number)
            assert shop_order.get("total") == total
            contact = crm["person"].get(deals[number].get("customer_id") or "")
            assert contact is not None and contact.get("email") == self.buyer[number], f"deal {number}: its buyer"
        assert len({o.get(STAMP) for o in crm["order"].values()}) == len(crm["order"])


Interleavings.TestCase.settings = settings(
    max_examples=int(os.environ.get("SYNCD_HYPOTHESIS_EXAMPLES", "80" if os.environ.get("SYNCD_SLOW") == "1" else "15")),
    stateful_step_count=45, deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=_phases())
TestInterleavings = Interleavings.TestCase


def test_interleavings_on_postgres() -> None:
    """The same machine against PostgreSQL (each example makes a database)."""
    from pgutil import PG_URL

    if not PG_URL:
        pytest.skip("SYNCD_TEST_POSTGRES_URL is not set")
    os.environ["SYNCD_MODEL_PG"] = "1"
    try:
        from hypothesis.stateful import run_state_machine_as_test

        n = int(os.environ.get("SYNCD_HYPOTHESIS_EXAMPLES", "20" if os.environ.get("SYNCD_SLOW") == "1" else "4"))
        run_state_machine_as_test(Interleavings, settings=settings(
            max_examples=n, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow],
            phases=_phases()))
    finally:
        os.environ.pop("SYNCD_MODEL_PG", None)
