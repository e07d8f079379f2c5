"""Shared fixtures: a store on SQLite, and on PostgreSQL when SYNCD_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text

from syncd.store import Store
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


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("SYNCD_TEST_POSTGRES_URL is not set")
    yield from _pg_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/syncd.db"
    else:
        if not PG_URL:
            pytest.skip("SYNCD_TEST_POSTGRES_URL is not set")
        yield from _pg_database()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow suites are opt-in locally (SYNCD_SLOW=1); CI sets it."""
    if os.environ.get("SYNCD_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow suite: set SYNCD_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
