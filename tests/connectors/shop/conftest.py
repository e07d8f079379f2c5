"""Fixtures of the shop connector tests: the sandbox shop (`shop`) and shop + engine + CRM (`world`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from shop_world import shop_fixture, world_fixture

from syncd.store import Store


@pytest.fixture
def shop() -> Iterator[Any]:
    yield from shop_fixture()


@pytest.fixture
def world(store: Store, shop: Any) -> dict[str, Any]:
    return world_fixture(store, shop)
