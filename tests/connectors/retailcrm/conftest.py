"""Fixtures: one RetailCRM sandbox per session (rate limit off), a fresh account per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rchelpers import Account

from syncd.sandbox.retailcrm import start


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Any]:
    h = start(rate_limit=False)
    yield h
    h.stop()


@pytest.fixture
def account(sandbox: Any) -> Account:
    acc = Account(sandbox)
    acc.ctl("POST", "/reset", {"references": True})
    return acc
