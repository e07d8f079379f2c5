"""PostgreSQL for tests: a fresh database per use on the server named by SYNCD_TEST_POSTGRES_URL.

In CI the URL is always set; a server that does not answer then fails the tests that need it,
never skips them silently.
"""

from __future__ import annotations

import os
import uuid
from typing import Iterator

from sqlalchemy import create_engine, text

from syncd.store.db import normalize_url

PG_URL = os.environ.get("SYNCD_TEST_POSTGRES_URL")


def _pg_database() -> Iterator[str]:
    assert PG_URL
    name = f"syncd_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    base = normalize_url(PG_URL).rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
