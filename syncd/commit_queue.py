"""One writer that commits what queued while its last commit ran, as one batch (group commit).

A push connector answers its peer only after what arrived is committed, so nothing answered is ever
lost. Committing each arrival alone makes every one wait for its own transaction and fsync, and
under load the waits queue up; here the writer takes everything that queued meanwhile (up to
`max_batch`) and commits it at once, so under load the commits grow instead of the queue, and an
idle peer adds no delay.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("syncd.commit_queue")

T = TypeVar("T")


class CommitQueue(Generic[T]):
    def __init__(self, name: str, commit: Callable[[Sequence[T]], None], max_batch: int = 500) -> None:
        self.name, self.commit, self.max_batch = name, commit, max_batch
        self._q: queue.Queue[tuple[T, concurrent.futures.Future[None]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"commit-{name}", daemon=True)
        self._lock = threading.Lock()
        self._started = False

    def submit(self, item: T) -> concurrent.futures.Future[None]:
        """Queue `item`; the future is done once it is committed (or carries why it was not)."""
        with self._lock:
            if not self._started:
                self._thread.start()
                self._started = True
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._q.put((item, done))
        return done

    def close(self, timeout: float = 5.0) -> None:
        if self._started:
            self._q.put(None)
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                self.commit([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the writer outlives a failed commit: each waiter is told
                log.error("commit_failed", queue=self.name, items=len(batch), error=f"{type(exc).__name__}: {exc}")
                for _, done in batch:
                    done.set_exception(exc)
            else:
                for _, done in batch:
                    done.set_result(None)
            if stop:
                return


__all__ = ["CommitQueue"]
