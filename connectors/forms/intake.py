"""The one writer of form posts: posts wait in a queue, a thread commits them in batches.

A post is answered only after its record is committed (with its outbox rows, in the engine's one
transaction), so a 200 is never lost. Committing each post alone would make every post wait for
its own fsync; the writer takes whatever queued while the previous commit ran and commits it as
one batch, so under load the commits grow instead of the queue, and an idle form adds no delay.

Being the only writer of this system also makes the duplicate window exact within one process: a
post is checked against the committed submissions (its fingerprint is the prefix of the record's
id, so the bindings' primary key finds them) and against the batch being built. Two instances
sharing a PostgreSQL store each have their own writer: an identical post reaching both within the
same few milliseconds can make two leads (a load balancer hashing by client IP avoids it).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import select

from syncd.connector import Batch, ConnectorContext, RawRecord
from syncd.store import tables as t

log = structlog.get_logger("syncd.forms")

MAX_BATCH = 500
KINDS_AS_TYPES = ("lead", "order")     # entity types a form's records become
PERSON_KIND = "contact"                 # a deal form's visitor (mappings/forms.toml)
COMPANY_KIND = "company"                # and the visitor's company


@dataclass
class Post:
    form: str
    kind: str
    fields: dict[str, Any]
    fp: str                             # fingerprint: what makes two posts identical
    window: float                       # duplicate window, seconds (0: none)
    hold: str | None                    # review mode: the reason it waits for an operator
    # a deal form's visitor (convert.visitor): a contact record taken in with the deal, which links to it
    person: dict[str, Any] | None = None
    company: dict[str, Any] | None = None       # and its company (convert.company), when the form asks
    at: float = field(default_factory=time.time)
    result: concurrent.futures.Future[tuple[str, bool]] = field(default_factory=concurrent.futures.Future)


def submission_id(fp: str, at: float) -> str:
    """The id a post is answered with and its record's external id: fingerprint, then the time in
    ms (fixed-width hex, so ids of one fingerprint sort by time)."""
    return f"{fp}.{int(at * 1000):011x}"


def _time_of(sid: str) -> float:
    try:
        return int(sid.rsplit(".", 1)[1], 16) / 1000.0
    except (IndexError, ValueError):
        return 0.0


class Intake:
    def __init__(self, system: str, ctx: ConnectorContext) -> None:
        self.system, self.ctx = system, ctx
        self._q: queue.Queue[Post | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"forms-intake-{system}", daemon=True)
        self._started = False
        self._lock = threading.Lock()

    def submit(self, post: Post) -> concurrent.futures.Future[tuple[str, bool]]:
        """Queue a post; the future gives (id, duplicate) once it is committed."""
        with self._lock:
            if not self._started:
                self._thread.start()
                self._started = True
        self._q.put(post)
        return post.result

    def close(self) -> None:
        if self._started:
            self._q.put(None)
            self._thread.join(5.0)

    # -- the writer ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            posts = [first]
            stop = False
            while len(posts) < MAX_BATCH:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                posts.append(nxt)
            try:
                self._commit(posts)
            except Exception as exc:  # noqa: BLE001 - the writer must outlive a bug: answer 503, go on
                log.error("form_intake_failed", system=self.system, error=f"{type(exc).__name__}: {exc}")
                for p in posts:
                    if not p.result.done():
                        p.result.set_exception(exc)
            if stop:
                return

    def _recent(self, posts: list[Post]) -> dict[str, str]:
        """fingerprint -> id of its newest committed submission, for posts with a window."""
        store = getattr(self.ctx, "store", None)
        out: dict[str, str] = {}
        if store is None:
            return out
        fps = sorted({p.fp for p in posts if p.window > 0})
        if not fps:
            return out
        with store.engine.connect() as conn:
            for fp in fps:
                # ids are "<fp>.<time>": a range on the primary key (system, type, external_id)
                rows = conn.execute(select(t.bindings.c.external_id).where(
                    t.bindings.c.system == self.system, t.bindings.c.type.in_(KINDS_AS_TYPES),
                    t.bindings.c.external_id >= fp + ".", t.bindings.c.external_id < fp + "/")).scalars().all()
                if rows:
                    out[fp] = max(rows, key=_time_of)
        return out

    def _commit(self, posts: list[Post]) -> None:
        try:
            recent = self._recent(posts)
        except Exception as exc:  # noqa: BLE001 - answered 503; the site may post again
            for p in posts:
                p.result.set_exception(exc)
            return
        records: list[RawRecord] = []
        fresh: list[tuple[Post, str]] = []
        for p in posts:
            prev = recent.get(p.fp)
            if prev is not None and p.at - _time_of(prev) <= p.window:
                p.result.set_result((prev, True))      # the same submission: the same answer
                continue
            sid = submission_id(p.fp, p.at)
            if p.window > 0:
                recent[p.fp] = sid                     # a twin later in this batch is its duplicate
            fresh.append((p, sid))
            when = dt.datetime.fromtimestamp(p.at, dt.timezone.utc)
            fields = p.fields
            if p.person is not None:
                # the visitor first: the deal's `customer` names that record (same id, another kind)
                records.append(RawRecord(PERSON_KIND, sid, p.person, version=sid.rsplit(".", 1)[1],
                                         source_time=when, hold=p.hold, statement=True))
                fields = {**fields, "customer": sid}
            if p.company is not None:
                records.append(RawRecord(COMPANY_KIND, sid, p.company, version=sid.rsplit(".", 1)[1],
                                         source_time=when, hold=p.hold, statement=True))
                fields = {**fields, "company": sid}
            records.append(RawRecord(p.kind, sid, fields, version=sid.rsplit(".", 1)[1], source_time=when, hold=p.hold))
        if not records:
            return
        try:
            self.ctx.ingest(Batch("posts", list(records)))
        except Exception as exc:  # noqa: BLE001 - nothing was committed: every post is told so
            log.error("form_posts_not_committed", system=self.system, posts=len(records),
                      error=f"{type(exc).__name__}: {exc}")
            for p, _sid in fresh:
                p.result.set_exception(exc)
            return
        for p, sid in fresh:
            p.result.set_result((sid, False))
