"""A throw-away PostgreSQL database on a given server: what the tests and benchmarks run on."""

from __future__ import annotations

import uuid
from typing import Callable

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from syncd.store.db import normalize_url


def scratch_database(server_url: str, prefix: str = "syncd_scratch_") -> tuple[str, Callable[[], None]]:
    """Create a new, empty database on the server of `server_url`; return its URL and a function
    that drops it (ending the sessions still connected to it first)."""
    base = make_url(normalize_url(server_url))
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()

    return base.set(database=name).render_as_string(hide_password=False), drop


__all__ = ["scratch_database"]
