"""PostgreSQL for tests: a fresh database per use on the server named by SYNCD_TEST_POSTGRES_URL.

In CI the URL is always set; a server that does not answer then fails the tests that need it,
never skips them silently.
"""

from __future__ import annotations

import os
from typing import Iterator

from syncd.store.scratch import scratch_database

PG_URL = os.environ.get("SYNCD_TEST_POSTGRES_URL")


def _pg_database() -> Iterator[str]:
    assert PG_URL
    url, drop = scratch_database(PG_URL, "syncd_t_")
    try:
        yield url
    finally:
        drop()
