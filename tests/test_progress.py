"""Progress bars of sync/backfill/replay: read bars count records and take a total when the source
gives one; write bars follow the outbox's pending count."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

from rich.console import Console

from factories import write_config
from syncd.progress import SyncProgress


def _bars() -> tuple[SyncProgress, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    return SyncProgress(enabled=True, console=console, poll=0.01), out


def test_read_bar_counts_and_takes_a_total_when_known() -> None:
    bars, _ = _bars()
    with bars:
        bar = bars.reading("shop", "orders")
        bar(10)  # today's runtime: progress(len(batch))
        task = bars.progress.tasks[0]
        assert task.completed == 10 and task.total is None
        bar(15, total=100)  # a connector that knows the size
        assert task.completed == 25 and task.total == 100
        bar(90)  # more than announced: the total follows
        bar(0, total=50)
        assert task.completed == 115 and task.total == 115


def test_write_bar_follows_the_pending_count() -> None:
    bars, out = _bars()
    pending = [5]
    with bars:
        with bars.writing("crm", lambda: pending[0]):
            for left in (4, 2, 3, 0):  # 3: a create unblocked a waiting link
                pending[0] = left
                time.sleep(0.05)
        task = bars.progress.tasks[0]
    assert task.total == 6 and task.completed == 6
    assert "crm push" in out.getvalue() and "writes" in out.getvalue()


def test_disabled_bars_print_nothing_and_still_count() -> None:
    out = io.StringIO()
    bars = SyncProgress(enabled=False, console=Console(file=out, force_terminal=True))
    with bars:
        bar = bars.reading("a", "b")
        bar(3)
        with bars.writing("a", lambda: 0):
            pass
    assert bar.done == 3 and out.getvalue() == ""


def test_sync_command_gives_each_stream_its_bar(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The CLI hands the runtime one bar per stream and one write bar per system."""
    from click.testing import CliRunner

    import syncd.progress as progress
    from syncd.cli import main

    seen: list[str] = []
    real_reading, real_writing = progress.SyncProgress.reading, progress.SyncProgress.writing

    def reading(self, system, stream, total=None):  # type: ignore[no-untyped-def]
        seen.append(f"read {system} {stream}")
        return real_reading(self, system, stream, total)

    def writing(self, system, pending):  # type: ignore[no-untyped-def]
        seen.append(f"write {system} {pending()}")
        return real_writing(self, system, pending)

    monkeypatch.setattr(progress.SyncProgress, "reading", reading)
    monkeypatch.setattr(progress.SyncProgress, "writing", writing)
    tag = uuid.uuid4().hex[:6]
    a, b = f"src{tag}", f"dst{tag}"  # memory systems live as long as the process
    cfg = write_config(tmp_path, systems={a: {"type": "memory", "seed": 4}, b: {"type": "memory"}})
    r = CliRunner().invoke(main, ["-c", str(cfg), "sync", "--create"], catch_exceptions=False)
    assert r.exit_code == 0
    assert seen == [
        f"read {a} person",
        f"read {a} order",
        f"read {b} person",
        f"read {b} order",
        f"write {a} 0",
        f"write {b} 4",
    ]
