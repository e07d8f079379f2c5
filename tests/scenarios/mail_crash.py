"""Run the mailbox stream once in a real process that stops dead at a chosen point, for kill -9 tests.

    python mail_crash.py CONFIG ENV_JSON MARKER before_commit|after_commit

The engine's ingest is wrapped (in this process only): `before_commit` writes MARKER after the
mails were fetched and parsed, then sleeps before the batch's transaction — the test kills the
process there; `after_commit` lets the batch commit (records + cursor), writes MARKER and sleeps
before anything is pushed to the CRM.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    config, env_json, marker, where = sys.argv[1:5]
    from syncd.config import load_settings
    from syncd.daemon.runtime import Runtime
    from syncd.pipeline.engine import Engine

    real = Engine.ingest

    def ingest(self: Engine, system: str, batch, *, run_id=None):  # type: ignore[no-untyped-def]
        if system == "mail" and batch.records and where == "before_commit":
            Path(marker).write_text("fetched", encoding="utf-8")
            time.sleep(120)
        counts = real(self, system, batch, run_id=run_id)
        if system == "mail" and batch.records and where == "after_commit":
            Path(marker).write_text("committed", encoding="utf-8")
            time.sleep(120)
        return counts

    Engine.ingest = ingest  # type: ignore[method-assign]
    rt = Runtime(load_settings(config, env=json.loads(env_json)))
    rt.run_stream("mail", "mail", wait=True)
    rt.push_all()


if __name__ == "__main__":
    main()
