"""Shared fixtures: a store on SQLite, and on PostgreSQL when SYNCD_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from pgutil import PG_URL, _pg_database
from syncd.store import Store


def pytest_sessionstart(session: pytest.Session) -> None:
    """A PostgreSQL URL that is set must answer: its tests fail, they never skip silently."""
    if not PG_URL:
        return
    from sqlalchemy import create_engine, text

    from syncd.store.db import normalize_url

    eng = create_engine(normalize_url(PG_URL), connect_args={"connect_timeout": 10})
    try:
        with eng.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - reported as the reason the run stops
        raise pytest.UsageError(f"SYNCD_TEST_POSTGRES_URL is set but the server does not answer: "
                                f"{type(exc).__name__}: {exc}") from None
    finally:
        eng.dispose()


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
