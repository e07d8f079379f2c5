"""Fixtures: one Bitrix24 sandbox server per session, a fresh portal per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from b24helpers import Portal, new_portal

from syncd.sandbox.bitrix24 import start


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Any]:
    h = start(rate_limit=False)
    yield h
    h.stop()


@pytest.fixture
def portal(sandbox: Any) -> Portal:
    return new_portal(sandbox)
