"""Which processes are alive: an instance name belongs to one live process at a time.

A daemon's name is stable (`<state_dir>/instance-id`) so that, restarted after a crash, it takes
back the writes it had claimed at once instead of waiting for their claims to expire. That is
only safe when the process that held the name is dead: `syncd sync` run with the daemon's config,
or a second daemon pointed at the same state folder, has the same name while the first one lives.

So the name is a lease row (`instance:<name>`) held by one process — its host, pid and start
time — and renewed by a heartbeat thread. A process that starts takes the name when the lease is
free, expired, or held by a process of this host that no longer runs (kill -9: its pid is gone,
or is another program's now); it then knows its predecessor is dead and takes its claims back
(`took_over`). When a live process holds the name, the newcomer works under a name of its own
(`<name>~<pid>`) and takes nothing back: a dead holder on another host is recognised when its
lease expires (`ttl`), and its claims expire on their own (`claim_ttl`).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

import psutil
import structlog
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from syncd.store import tables as t
from syncd.store.store import Store

log = structlog.get_logger("syncd.presence")

TTL = 15.0                 # seconds a heartbeat is valid; renewed every third of it


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float          # the process's start time (a reused pid has another)
    nonce: str

    def text(self) -> str:
        return f"{self.host}|{self.pid}|{self.started:.2f}|{self.nonce}"

    @classmethod
    def parse(cls, text: str) -> "Holder | None":
        try:
            host, pid, started, nonce = text.split("|")
            return cls(host, int(pid), float(started), nonce)
        except ValueError:
            return None

    @classmethod
    def me(cls) -> "Holder":
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time(), secrets.token_hex(4))

    def dead_here(self) -> bool:
        """A process of this host that no longer runs (its pid gone, or another program's now)."""
        if self.host != socket.gethostname():
            return False
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) > 0.5
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            return False


class Presence:
    """This process's name among the instances on one database (see the module docstring)."""

    def __init__(self, store: Store, base: str, *, ttl: float = TTL) -> None:
        self.store, self.base, self.ttl = store, base, ttl
        self.me = Holder.me()
        self._name: str | None = None
        self.took_over = False          # the name's last holder is dead: its claims are ours to take
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        """The name this process works under (taken on first use)."""
        with self._lock:
            if self._name is None:
                self._name = self._enter()
                self._thread = threading.Thread(target=self._beat, name="presence", daemon=True)
                self._thread.start()
            return self._name

    def _enter(self) -> str:
        if self._take(self.base):
            return self.base
        own = f"{self.base}~{self.me.pid}"
        log.info("instance_name_in_use", name=self.base, working_as=own,
                 note="another live process holds this instance's name; its claims are left alone")
        self._take(own, force=True)
        self.took_over = False          # its own name: nobody's claims to take
        return own

    def _take(self, name: str, *, force: bool = False) -> bool:
        """Hold `name`'s lease if it is free, expired or its holder is dead here (or `force`)."""
        key = f"instance:{name}"
        now = time.time()
        with self.store.begin() as c:
            q = select(t.leases.c.holder, t.leases.c.expires_at).where(t.leases.c.name == key)
            row = c.execute(q.with_for_update() if self.store.is_postgres else q).first()
            if row is None:
                try:
                    with c.begin_nested():
                        c.execute(insert(t.leases).values(name=key, holder=self.me.text(), expires_at=now + self.ttl))
                except IntegrityError:    # another process inserted it first: it is alive
                    return False
                self.took_over = True
                return True
            held = Holder.parse(row.holder)
            if not force and row.expires_at >= now and held is not None and not held.dead_here():
                return False
            c.execute(update(t.leases).where(t.leases.c.name == key)
                      .values(holder=self.me.text(), expires_at=now + self.ttl))
            self.took_over = True
            if held is not None and row.expires_at >= now:
                log.info("instance_taken_over", name=name, dead_pid=held.pid)
            return True

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                with self.store.begin() as c:
                    n = c.execute(update(t.leases).where(t.leases.c.name == f"instance:{self._name}",
                                                         t.leases.c.holder == self.me.text())
                                  .values(expires_at=time.time() + self.ttl)).rowcount
                if not n:
                    # taken over while this process was stuck past its lease: it must not act as
                    # the holder any more (its claims were, or will be, taken back)
                    log.error("instance_lease_lost", name=self._name)
            except Exception as exc:  # noqa: BLE001 - retried at the next beat
                log.warning("heartbeat_failed", error=f"{type(exc).__name__}: {exc}")

    def alive(self, name: str) -> bool:
        """Is `name` held by a live process (as far as this host can tell)?"""
        with self.store.read() as c:
            row = c.execute(select(t.leases.c.holder, t.leases.c.expires_at)
                            .where(t.leases.c.name == f"instance:{name}")).first()
        if row is None or row.expires_at < time.time():
            return False
        held = Holder.parse(row.holder)
        return held is not None and not held.dead_here()

    def gone(self, name: str) -> bool:
        """Is `name` known to have stopped without leaving (a kill -9, a lost host): its presence
        expired, or held by a process of this host that no longer runs? A name never registered,
        or one that left cleanly, is not "gone": nothing can be said about it."""
        with self.store.read() as c:
            row = c.execute(select(t.leases.c.holder, t.leases.c.expires_at)
                            .where(t.leases.c.name == f"instance:{name}")).first()
        if row is None:
            return False
        if row.expires_at < time.time():
            return True
        held = Holder.parse(row.holder)
        return held is not None and held.dead_here()

    def leave(self) -> None:
        """A clean stop: the name is free at once."""
        self._stop.set()
        if self._name is None:
            return
        try:
            with self.store.begin() as c:
                c.execute(delete(t.leases).where(t.leases.c.name == f"instance:{self._name}",
                                                 t.leases.c.holder == self.me.text()))
        except Exception as exc:  # noqa: BLE001 - it expires by itself
            log.warning("instance_leave_failed", error=f"{type(exc).__name__}: {exc}")


__all__ = ["Presence", "Holder", "TTL"]
