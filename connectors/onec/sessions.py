"""The 1C exchange's sessions and its upload lock, kept in the store (the connector's state).

Every `checkauth` opens a session of its own (cookie + sessid); any number may be open at once,
from one 1C or several, answered by any instance sharing the database. Nothing a session needs
lives in one process's memory: a restarted daemon, or another instance, answers its next step.

State keys (under the connector's namespace):
  session:<h>  one session's record; h is a hash of its cookie (the store never holds a cookie)
  sessions     index {h: {"login", "created"}}: for sweeping, and for finding a login's sessions
  lock         the upload lock {"session", "login", "type", "since", "last"}
  import_seq   imports started so far (the first half of the versions of the records they carry)

Records change by compare-and-set (`ctx.state_swap`), never by a blind write, so two requests
racing on two instances cannot lose each other's changes. The upload lock is what keeps two
uploads from interleaving; a session's own requests are kept in order by a `busy` mark.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from .settings import OneCSettings

log = structlog.get_logger("syncd.onec")

INDEX, LOCK, SEQ = "sessions", "lock", "import_seq"
BARE_TTL = 60.0          # s a session that never went past checkauth (a probe, a browser) is kept


class LockHeld(Exception):
    """Another session holds the upload lock."""

    def __init__(self, holder: dict[str, Any]) -> None:
        super().__init__(f"held by login {holder.get('login')!r}")
        self.holder = holder


class Busy(Exception):
    """The session is answering another request (1C repeated one whose answer it lost)."""


class Lost(Exception):
    """The session's record changed under this request (taken over, swept) or is gone."""


def session_key(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8", "replace")).hexdigest()[:32]


def _norm(value: Any) -> Any:
    """The value as the store gives it back (JSON), so compare-and-set compares like with like."""
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


@dataclass
class Session:
    key: str
    rec: dict[str, Any]        # what this request changes; saved by `Sessions.finish`
    begun: dict[str, Any]      # the record as stored while this request runs (busy mark included)


class Sessions:
    def __init__(self, ctx: Any, settings: OneCSettings, spool: Path) -> None:
        self.ctx, self.s, self.spool = ctx, settings, spool
        self.busy_ttl = max(60.0, settings.lock_timeout)   # a request that long is presumed dead

    # -- compare-and-set helpers ---------------------------------------------------------------
    def _update(self, key: str, change: Callable[[Any], Any], tries: int = 50) -> Any:
        """Apply `change` (old value -> new value, None deletes) until no one raced us."""
        for _ in range(tries):
            cur = self.ctx.state_get(key)
            new = change(copy.deepcopy(cur))
            new = None if new is None else _norm(new)
            if new == cur or self.ctx.state_swap(key, cur, new):
                return new
            time.sleep(0.005)
        raise RuntimeError(f"state {key!r} kept changing while it was updated")

    # -- sessions --------------------------------------------------------------------------------
    def open(self, login: str, typ: str, now: float) -> tuple[str, dict[str, Any]]:
        """A new session for `login`: its cookie and record."""
        cookie = secrets.token_hex(16)
        key = session_key(cookie)
        rec = _norm({"login": login, "sessid": secrets.token_hex(16), "type": typ, "created": now,
                     "last": now, "used": False, "sessid_used": False, "version": None,
                     "dir": secrets.token_hex(6), "files": {}, "uploaded": 0, "unzipped": {},
                     "imports": {}, "finished": False, "timestamp": int(now), "served": None,
                     "busy": None})
        self.ctx.state_set(f"session:{key}", rec)
        self._update(INDEX, lambda idx: {**(idx or {}), key: {"login": login, "created": now}})
        return cookie, rec

    def get(self, cookie: str) -> tuple[str, dict[str, Any]] | None:
        key = session_key(cookie)
        rec = self.ctx.state_get(f"session:{key}")
        return (key, rec) if rec else None

    def expired(self, rec: dict[str, Any], now: float) -> bool:
        ttl = self.s.session_ttl if rec.get("used") else min(self.s.session_ttl, BARE_TTL)
        return now - rec["last"] > ttl

    def begin(self, key: str, rec: dict[str, Any], now: float) -> Session:
        """Mark the session busy with this request (so another instance does not answer the same
        session at the same time); raises Busy while a request of it is running elsewhere."""
        for _ in range(10):
            busy = rec.get("busy")
            if busy and busy["until"] > now:
                raise Busy()
            begun = _norm({**rec, "busy": {"token": secrets.token_hex(8), "until": now + self.busy_ttl}})
            if self.ctx.state_swap(f"session:{key}", rec, begun):
                return Session(key, copy.deepcopy(begun), begun)
            # changed since it was read (another session gave back its query, a takeover): again
            rec = self.ctx.state_get(f"session:{key}")
            if not rec:
                raise Lost()
        raise Busy()

    def finish(self, sess: Session) -> bool:
        """Save what the request changed and clear the busy mark; False if the record was taken
        from under us (the request ran longer than busy_ttl, or the session was dropped)."""
        rec = _norm({**sess.rec, "busy": None})
        return self.ctx.state_swap(f"session:{sess.key}", sess.begun, rec)

    def of_login(self, login: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, meta in (self.ctx.state_get(INDEX) or {}).items():
            if meta.get("login") == login:
                rec = self.ctx.state_get(f"session:{key}")
                if rec:
                    yield key, rec

    def clear_served(self, key: str, rec: dict[str, Any]) -> bool:
        """Take an idle session's unconfirmed query from it (its token is then given back)."""
        if (rec.get("busy") or {}).get("until", 0) > time.time():
            return False
        return self.ctx.state_swap(f"session:{key}", rec, _norm({**rec, "served": None}))

    def drop(self, key: str, rec: dict[str, Any] | None, on_drop: Callable[[dict[str, Any]], None]) -> bool:
        """Forget a session: its record, its index entry, its spool folder and its lock."""
        if rec is not None and not self.ctx.state_swap(f"session:{key}", rec, None):
            return False                        # it changed meanwhile: it is alive after all
        self._update(INDEX, lambda idx: {k: v for k, v in (idx or {}).items() if k != key})
        if rec is not None:
            on_drop(rec)
            shutil.rmtree(self.spool / rec["dir"], ignore_errors=True)
        self.release_lock(key)
        return True

    def sweep(self, now: float, on_drop: Callable[[dict[str, Any]], None],
              current: Session | None = None) -> int:
        """Drop expired sessions, and the idle sessions of a login that has opened a newer one
        since (1C gave that exchange up); remove spool folders no session owns. `current`: the
        session whose request sweeps, as this request sees it (not saved yet)."""
        index = self.ctx.state_get(INDEX) or {}
        live: dict[str, dict[str, Any]] = {}
        for key in index:
            rec = self.ctx.state_get(f"session:{key}")
            live[key] = rec
        if current is not None:
            live[current.key] = current.rec
        dropped = 0
        for key, rec in live.items():
            if rec is None:
                dropped += self.drop(key, None, on_drop)
                continue
            # a newer session of that login that did more than checkauth (a monitoring probe
            # with 1C's login supersedes nothing: 1C may be busy reading a long query answer)
            newer = any(k != key and r and r.get("used") and r["login"] == rec["login"]
                        and r["created"] > rec["last"] for k, r in live.items())
            idle = now - rec["last"]
            busy = (rec.get("busy") or {}).get("until", 0) > now
            if current is not None and key == current.key:
                continue
            if self.expired(rec, now) or (newer and idle > self.s.lock_timeout and not busy):
                dropped += self.drop(key, rec, on_drop)
        owned = {r["dir"] for r in live.values() if r}
        if self.spool.is_dir():
            for p in self.spool.iterdir():
                # a folder of no session, older than any session could be: left by a crash
                if p.is_dir() and p.name not in owned and now - p.stat().st_mtime > self.s.session_ttl:
                    shutil.rmtree(p, ignore_errors=True)
        return dropped

    # -- the upload lock -------------------------------------------------------------------------
    def take_lock(self, key: str, rec: dict[str, Any], now: float) -> dict[str, Any] | None:
        """Hold the upload lock for this session (renewed by every upload/import step). Returns
        the lock taken over, if any. Raises LockHeld while another session holds it: a lock
        idle longer than lock_timeout is free; one of the same login whose holder has been
        quiet since this session began is taken over at once (that 1C started anew)."""
        taken: list[dict[str, Any]] = []

        def change(cur: dict[str, Any] | None) -> dict[str, Any]:
            taken.clear()
            if cur and cur["session"] == key:
                return {**cur, "last": now}
            if cur:
                expired = now - cur["last"] >= self.s.lock_timeout
                superseded = cur["login"] == rec["login"] and cur["last"] < rec["created"]
                if not (expired or superseded):
                    raise LockHeld(cur)
                taken.append(cur)
            return {"session": key, "login": rec["login"], "type": rec["type"], "since": now, "last": now}

        self._update(LOCK, change)
        return taken[0] if taken else None

    def mark_taken_over(self, key: str) -> None:
        """The session whose lock was taken over is over: its next upload step is refused."""
        self._update(f"session:{key}", lambda rec: {**rec, "taken_over": True} if rec else None)

    def holds_lock(self, key: str) -> bool:
        cur = self.ctx.state_get(LOCK)
        return bool(cur) and cur["session"] == key

    def release_lock(self, key: str) -> None:
        self._update(LOCK, lambda cur: None if cur and cur["session"] == key else cur)

    # -- counters --------------------------------------------------------------------------------
    def next_seq(self) -> int:
        return int(self._update(SEQ, lambda n: int(n or 0) + 1))
