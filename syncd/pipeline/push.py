"""Stage 8: claim outbox rows, decide each write now, send it through the target connector, settle.

Claims are fenced (see `syncd.pipeline.outbox`): a claim carries a token and a deadline that a
keeper thread renews while the writes are in flight, and only the token's holder settles the
rows. An instance has a stable name, so a restarted daemon takes back its own claims at once; a
dead instance's claims are taken by anyone after `claim_ttl` seconds. The connector's look-up of
the external key before a create keeps a write taken over that way from creating twice.

Every outcome is classified: confirmed (`done`, or `pending` again when the record changed in
flight), nothing to send, blocked by a record it links to, transient (retried with backoff),
permanent (dead letter), or unexpected (counted as an attempt, logged with its traceback, a dead
letter after `max_attempts`). Nothing stays claimed.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import structlog
from sqlalchemy import func, select
from tenacity import retry, retry_if_exception_type, stop_after_attempt

from syncd.connector import Connector, Traits, WriteClaim, WriteResult, traits
from syncd.errors import BadInput, PermanentError, TransientError
from syncd.mapping import Mapper
from syncd.pipeline import confirm, outbox, payload
from syncd.pipeline.counts import Counts
from syncd.pipeline.payload import Blocked, Failed, Nothing, Ready, external_key
from syncd.store import Store, utcnow
from syncd.store import tables as t
from syncd.store.presence import Presence

log = structlog.get_logger("syncd.push")

# writes handed to a connector's write_many at once, unless it says otherwise (its `write_part`)
WRITE_MANY_PART = 25


@dataclass(frozen=True)
class PushPolicy:
    max_attempts: int = 8           # then the write is dead-lettered
    inline_tries: int = 3           # tenacity tries inside one claim
    base_delay: float = 2.0         # outbox backoff: base * 2**attempts, jittered, capped
    max_delay: float = 900.0
    claim_ttl: float = 30.0         # a claim not renewed for this long belongs to a dead worker
    inline_wait_max: float = 2.0
    link_wait: float = 600.0        # a write waits this long for a linked record's first appearance
    download_ttl: float = 600.0     # a download (1C's query) waits this long for the peer's confirm


class ClaimKeeper:
    """Renews the deadline of the claims in hand every third of the TTL, on its own thread."""

    def __init__(self, store: Store, ttl: float) -> None:
        self.store, self.ttl = store, ttl
        self._tokens: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, token: str) -> None:
        with self._lock:
            self._tokens.add(token)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="claim-keeper", daemon=True)
                self._thread.start()

    def drop(self, token: str) -> None:
        with self._lock:
            self._tokens.discard(token)
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(max(0.2, self.ttl / 3))
            self._wake.clear()
            with self._lock:
                tokens = set(self._tokens)
                if not tokens:
                    self._thread = None
                    return
            try:
                outbox.renew(self.store, tokens, self.ttl)
            except Exception as exc:  # noqa: BLE001 - a missed renewal is retried; the claim may lapse
                log.warning("claim_renewal_failed", error=f"{type(exc).__name__}: {exc}")


class Pusher:
    """`presence` names this process among the instances (syncd.store.presence): its claims are
    taken back at start only when the name's last holder is dead. Without one, the caller vouches
    that no other live process works as `worker` (tests that restart a pusher in one process)."""

    def __init__(self, store: Store, mapper: Mapper, connectors: Mapping[str, Connector], *,
                 worker: str = "w", policy: PushPolicy = PushPolicy(),
                 sleep: Callable[[float], None] | None = None, presence: Presence | None = None) -> None:
        self.store, self.mapper, self.connectors = store, mapper, connectors
        self.worker, self.policy, self.presence = worker, policy, presence
        self._sleep = sleep
        self.stopping = threading.Event()     # set on shutdown: finish the row in hand, claim no more
        self.keeper = ClaimKeeper(store, policy.claim_ttl)
        self.backoff = confirm.Backoff(policy.max_attempts, policy.base_delay, policy.max_delay)
        # systems whose ids are documents' own ids: keys made from their records keep them as they are
        self.natural = frozenset(n for n, c in connectors.items() if getattr(c, "natural_ids", False))
        self.naming = {n: traits(c).names_sources for n, c in connectors.items() if traits(c).names_sources}
        self._started = False
        self._start_lock = threading.Lock()
        # downloads served and not yet confirmed by the peer: token -> row id -> (row, decided write)
        self._downloads: dict[str, dict[int, tuple[dict[str, Any], Ready]]] = {}

    def start(self) -> int:
        """Take back the claims this instance's dead predecessor held (crash, kill -9) — never a
        live process's."""
        with self._start_lock:
            if self._started:
                return 0
            self._started = True
            if self.presence is not None:
                self.worker = self.presence.name
                if not self.presence.took_over:
                    return 0
        n = outbox.reclaim(self.store, self.worker)
        if n:
            log.info("claims_taken_back", rows=n, instance=self.worker)
        return n

    # -- push -----------------------------------------------------------------------------------
    def push(self, system: str, *, limit: int = 50, max_rows: int | None = None) -> Counts:
        """Drain ready rows of one target system (up to max_rows); returns counts."""
        self.start()
        counts = Counts()
        conn_ = self.connectors.get(system)
        tr = traits(conn_) if conn_ is not None else Traits()
        if tr.delivery == "download":
            return counts                     # the peer fetches its writes (take_writes)
        done = 0
        while (max_rows is None or done < max_rows) and not self.stopping.is_set():
            want = limit if max_rows is None else min(limit, max_rows - done)
            cl = outbox.claim(self.store, system, instance=self.worker, ttl=self.policy.claim_ttl, limit=want)
            if not cl.rows:
                break
            self.keeper.hold(cl.token)
            try:
                self._send(conn_, tr, cl, counts)
            finally:
                self.keeper.drop(cl.token)
            done += len(cl.rows)
        return counts

    def _send(self, conn_: Connector | None, tr: Traits, cl: outbox.Claim, counts: Counts) -> None:
        rows = cl.rows
        if conn_ is None:
            err = PermanentError(f"no connector named {rows[0]['system']!r} is configured", connector=rows[0]["system"])
            for row in rows:
                self._fail(row, cl.token, err, counts, permanent=True)
            return
        ready = self._decide(cl, tr, counts)
        if not ready:
            return
        if self.stopping.is_set():
            outbox.release(self.store, [r["id"] for r, _ in ready], cl.token)
            return
        if len(ready) > 1 and hasattr(conn_, "write_many"):
            # a part at a time, each settled as soon as its answers are in: a restart resends at
            # most the part in flight, and the first confirmed write does not wait for the claim
            size = int(getattr(conn_, "write_part", WRITE_MANY_PART) or WRITE_MANY_PART)
            for k in range(0, len(ready), size):
                if self.stopping.is_set():
                    outbox.release(self.store, [r["id"] for r, _ in ready[k:]], cl.token)
                    return
                part = ready[k:k + size]
                try:
                    results: list[Any] = list(conn_.write_many([o.op for _, o in part]))
                except Exception as exc:  # noqa: BLE001 - classified per row below
                    results = [exc] * len(part)
                if len(results) != len(part):
                    results = [PermanentError("the connector returned a wrong number of results")] * len(part)
                for (row, o), res in zip(part, results):
                    self._settle(row, cl.token, o, res, counts)
            return
        for i, (row, o) in enumerate(ready):
            if self.stopping.is_set():
                outbox.release(self.store, [r["id"] for r, _ in ready[i:]], cl.token)
                return
            try:
                res: Any = self._write_with_retry(conn_, o)
            except Exception as exc:  # noqa: BLE001 - classified in _settle
                res = exc
            self._settle(row, cl.token, o, res, counts)

    def _decide(self, cl: outbox.Claim, tr: Traits, counts: Counts) -> list[tuple[dict[str, Any], Ready]]:
        """Compute every claimed row's write now; settle those with nothing to send or blocked."""
        now = utcnow()
        try:
            with self.store.read() as c:
                outcomes = payload.build(c, self.mapper, cl.rows, tr, now=now, link_wait=self.policy.link_wait,
                                         natural=self.natural)
        except Exception as exc:  # noqa: BLE001 - a bug deciding must not strand the claim
            log.error("push_decide_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
            for row in cl.rows:
                self._fail(row, cl.token, exc, counts, permanent=False)
            return []
        ready: list[tuple[dict[str, Any], Ready]] = []
        for row, o in zip(cl.rows, outcomes):
            if isinstance(o, Ready):
                ready.append((row, o))
            elif isinstance(o, Nothing):
                with self.store.begin() as c:
                    confirm.nothing(c, row, cl.token, o.reason)
                counts.skipped += 1
            elif isinstance(o, Blocked):
                with self.store.begin() as c:
                    status = confirm.blocked(c, row, cl.token, o, link_wait=self.policy.link_wait, now=now)
                if status == "blocked":
                    counts.blocked += 1
                    log.info("push_blocked", system=row["system"], entity_id=row["entity_id"], on=o.on,
                             why=o.why, detail=o.detail)
            elif isinstance(o, Failed):
                self._fail(row, cl.token, o.error, counts, permanent=isinstance(o.error, (PermanentError, BadInput)))
        return ready

    def _write_with_retry(self, conn_: Connector, o: Ready) -> WriteResult:
        p = self.policy

        def _wait(state: Any) -> float:
            exc = state.outcome.exception() if state.outcome else None
            ra = getattr(exc, "retry_after", None)
            n = state.attempt_number
            base = min(p.inline_wait_max, 0.2 * 2 ** (n - 1)) * random.uniform(0.5, 1.0)
            return min(max(base, ra or 0), p.inline_wait_max * 2)

        kwargs: dict[str, Any] = dict(retry=retry_if_exception_type(TransientError),
                                      stop=stop_after_attempt(p.inline_tries), wait=_wait, reraise=True)
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        tries = 0

        def write(op: Any) -> WriteResult:
            nonlocal tries
            tries += 1
            # a try after one whose answer never came may have made it: it looks the key up
            return conn_.write(op if tries == 1 or not op.unsent else dataclasses.replace(op, unsent=False))

        res = retry(**kwargs)(write)(o.op)
        if tries > 1 and getattr(res, "found", False):
            # found by its key after a try whose answer never came: that try made it — syncd's own
            res = dataclasses.replace(res, found=False)
        return res

    # -- outcomes -------------------------------------------------------------------------------
    def _settle(self, row: dict[str, Any], token: str, o: Ready, res: Any, counts: Counts) -> None:
        if isinstance(res, WriteResult):
            try:
                with self.store.begin() as c:
                    status = confirm.confirmed(c, self.mapper, row, token, o, res, link_wait=self.policy.link_wait,
                                               naming=self.naming)
            except confirm.BindingClash as exc:
                self._fail(row, token, PermanentError(f"binding clash: {exc}"), counts, permanent=True)
                return
            if status == "lost":
                counts.failed += 1
                log.warning("claim_lost", system=row["system"], entity_id=row["entity_id"], row=row["id"],
                            note="the claim expired and another worker took the row; its result is not applied")
                return
            counts.pushed += 1
            if o.op.op == "create":
                counts.created += 1
            else:
                counts.updated += 1
            log.info("pushed", system=o.op.system, op=o.op.op, kind=o.op.kind, entity_id=o.op.entity_id,
                     external_id=res.external_id, op_id=o.op.op_id, then=status)
            return
        if isinstance(res, BaseException):
            permanent = isinstance(res, (PermanentError, BadInput))
            self._fail(row, token, res, counts, permanent=permanent)
            return
        self._fail(row, token, PermanentError(f"the connector returned {type(res).__name__}, not a result"),
                   counts, permanent=True)

    def _fail(self, row: dict[str, Any], token: str, error: BaseException, counts: Counts, *,
              permanent: bool) -> None:
        expected = isinstance(error, (TransientError, PermanentError, BadInput))
        with self.store.begin() as c:
            status = confirm.failed(c, row, token, error, backoff=self.backoff, permanent=permanent)
        if status == "lost":
            return
        counts.failed += 1
        if status == "dead":
            counts.dead += 1
        fields = dict(system=row["system"], entity_id=row["entity_id"], row=row["id"], then=status,
                      error=f"{type(error).__name__}: {error}")
        if not expected:
            log.error("push_unexpected_error", **fields, exc_info=error)
        elif status == "dead":
            log.error("dead_letter", **fields)
        else:
            log.warning("push_deferred", **fields)

    # -- downloads (the peer fetches its writes: 1C's `mode=query`) -----------------------------
    def take(self, system: str, *, limit: int | None = None) -> WriteClaim:
        """Claim what is ready for a downloading peer, decided now; kept until settled or expired."""
        self.start()
        conn_ = self.connectors.get(system)
        tr = traits(conn_)
        cl = outbox.claim(self.store, system, instance=self.worker, ttl=self.policy.download_ttl,
                          limit=limit or 10_000)
        counts = Counts()
        ready = self._decide(cl, tr, counts)
        self._downloads[cl.token] = {r["id"]: (r, o) for r, o in ready}
        return WriteClaim(cl.token, [o.op for _, o in ready], blocked=counts.blocked)

    def settle_download(self, system: str, token: str, results: Mapping[str, Any]) -> Counts:
        """The peer confirmed (or refused) what it downloaded: settle each row under the fence.
        A result without an external id means "taken as it was sent" (the peer knows the record
        by the Ид it was given)."""
        counts = Counts()
        held = self._downloads.pop(token, None)
        if held is None:
            held = self._reload_download(system, token)
        rest = []
        for row, o in held.values():
            res = results.get(o.op.op_id)
            if res is None:
                rest.append(row["id"])
                continue
            if isinstance(res, WriteResult) and not res.external_id:
                res = WriteResult(o.op.external_id or o.op.external_key, res.fields, res.version)
            self._settle(row, token, o, res, counts)
        outbox.release(self.store, rest, token)
        return counts

    def release_download(self, token: str, op_ids: Any = None) -> None:
        """Give back what the peer did not take (all of the claim, or the given writes)."""
        held = self._downloads.get(token)
        if held is None:                  # served before a restart: give back what the token holds
            if op_ids is None:
                outbox.release_token(self.store, token)
            return
        if op_ids is None:
            self._downloads.pop(token, None)
            ids = list(held)
        else:
            wanted = set(op_ids)
            ids = [rid for rid, (_r, o) in held.items() if o.op.op_id in wanted]
            for rid in ids:
                held.pop(rid, None)
        outbox.release(self.store, ids, token)

    def _reload_download(self, system: str, token: str) -> dict[int, tuple[dict[str, Any], Ready]]:
        """A download served by an instance that restarted since: decide its rows again (they are
        still claimed under the token) so the peer's confirm settles them."""
        with self.store.read() as c:
            rows = [dict(r, claimed_from="sending") for r in c.execute(
                select(t.outbox).where(t.outbox.c.claim_token == token, t.outbox.c.status == "sending")).mappings()]
        if not rows:
            return {}
        conn_ = self.connectors.get(system)
        now = utcnow()
        with self.store.read() as c:
            outcomes = payload.build(c, self.mapper, rows, traits(conn_), now=now, link_wait=self.policy.link_wait,
                                     natural=self.natural)
        return {r["id"]: (r, o) for r, o in zip(rows, outcomes) if isinstance(o, Ready)}


def outbox_sizes(store: Store) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with store.read() as c:
        for system, status, n in c.execute(select(t.outbox.c.system, t.outbox.c.status, func.count())
                                           .group_by(t.outbox.c.system, t.outbox.c.status)):
            out.setdefault(system, {})[status] = n
    return out


__all__ = ["Pusher", "PushPolicy", "ClaimKeeper", "external_key", "outbox_sizes"]
