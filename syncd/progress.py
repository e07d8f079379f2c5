"""Progress bars for `syncd sync`, `backfill` and `replay` (rich, on stderr, only in a terminal).

One bar per stream read and one per system's pending writes. A read bar has a total only when the
source says how many records are coming: the callback handed to the runtime is
`advance(n, total=None)`: today the runtime calls `advance(len(batch))`; a connector that learns
the size of what it reads (Bitrix24's `total`, a CommerceML file's document count) can pass
`total=` with any call and the bar becomes a proper one. A write bar's total is the number of
writes pending for the system when the push starts (plus any that arrive during it); it is fed by
polling the outbox, so it needs nothing from the pusher.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Advance(Protocol):
    def __call__(self, n: int, total: int | None = None) -> None: ...


class StreamBar:
    """The progress callback of one stream's read: `bar(n)` or `bar(n, total=T)`."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress, self.task = progress, task
        self.done = 0

    def __call__(self, n: int, total: int | None = None) -> None:
        self.done += n
        if total is not None:
            self.progress.update(self.task, total=max(total, self.done))
        self.progress.update(self.task, completed=self.done)


class SyncProgress:
    """Bars for one CLI command; a no-op (but still counting) when disabled."""

    def __init__(self, *, enabled: bool, console: Console | None = None, poll: float = 0.25) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal
        self.poll = poll
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.enabled,
            transient=False,
        )

    def __enter__(self) -> SyncProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def reading(self, system: str, stream: str, total: int | None = None) -> StreamBar:
        """A bar for reading `stream` of `system`; pass it as the runtime's progress callback."""
        task = self.progress.add_task(f"{system} {stream}", total=total, unit="records read")
        return StreamBar(self.progress, task)

    @contextmanager
    def writing(self, system: str, pending: Callable[[], int]) -> Iterator[None]:
        """A bar over the writes pending for `system` while the block pushes them.

        `pending()` counts what is still to send; the bar shows how many of the writes that were
        pending at the start (or arrived since) have left the queue.
        """
        start = pending()
        task = self.progress.add_task(f"{system} push", total=start, unit="writes")
        if not start:
            yield
            return
        stop = threading.Event()
        state = {"total": start, "done": 0}

        def refresh() -> None:
            left = pending()
            # writes planned meanwhile (a create that unblocked its links) grow the total
            state["done"] = max(state["done"], state["total"] - left)
            state["total"] = max(state["total"], state["done"] + left)
            self.progress.update(task, total=state["total"], completed=state["done"])

        def loop() -> None:
            while not stop.wait(self.poll):
                try:
                    refresh()
                except Exception:  # noqa: BLE001 - a bar must never break the push it watches
                    return

        thread = threading.Thread(target=loop, name="progress", daemon=True) if self.enabled else None
        if thread:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread:
                thread.join(2)
            try:
                refresh()
            except Exception:  # noqa: BLE001
                pass
