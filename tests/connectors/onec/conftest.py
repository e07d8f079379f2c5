from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from onechelpers import World, make_world


@pytest.fixture
def world_factory(tmp_path, store) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    made: list[World] = []

    def make(**settings: Any) -> World:
        w = make_world(tmp_path, store, **settings)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()


@pytest.fixture
def world(world_factory) -> World:  # type: ignore[no-untyped-def]
    return world_factory()
