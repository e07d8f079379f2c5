"""Fixtures: one amoCRM sandbox per session, reset to its seed (plus the integrator's fields) per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from amohelpers import prepare

from syncd.sandbox.amocrm import start


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Any]:
    h = start()
    yield h
    h.stop()


@pytest.fixture
def amo(sandbox: Any) -> Any:
    return prepare(sandbox)
