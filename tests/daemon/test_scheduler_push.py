"""The push job asked to run while it runs (a pull planned writes while a CRM's writes wait at its
rate limit) goes round once more when it ends — it does not wait for its next tick (issue 20:
a manager's edit reached the shop a push interval late)."""

from __future__ import annotations

import threading
from typing import Any

from syncd.pipeline.counts import Counts


def test_a_push_asked_for_while_one_runs_goes_round_once_more(tmp_path: Any) -> None:
    from factories import write_config

    from syncd.config import load_settings
    from syncd.daemon.runtime import Runtime
    from syncd.daemon.scheduler import Scheduler

    cfg = write_config(tmp_path, systems={"a": {"type": "memory"}, "b": {"type": "memory"}})
    rt = Runtime(load_settings(cfg))
    try:
        sched = Scheduler(rt)         # not started: nothing runs on a timer here
        sched.setup()
        calls: list[str] = []
        inside = threading.Event()
        go = threading.Event()

        def push(name: str) -> Counts:
            calls.append(name)
            if len(calls) == 1:
                inside.set()
                assert go.wait(10)
            return Counts()

        rt.push = push                # type: ignore[method-assign]
        t = threading.Thread(target=sched._push, args=(None,))
        t.start()
        assert inside.wait(10)
        sched._push_soon()            # a pull planned writes meanwhile
        sched._push_soon()            # (twice: still one more round)
        go.set()
        t.join(10)
        assert calls == ["a", "b", "a", "b"]
        sched._push(None)             # nothing asked for since: one round
        assert calls[4:] == ["a", "b"]
    finally:
        rt.close()
