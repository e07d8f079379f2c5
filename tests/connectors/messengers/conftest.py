"""Fixtures of the messengers suite: one Bitrix24 sandbox for the module, a fresh portal per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from msgworld import ChatWorld, make_world


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    from syncd.sandbox.bitrix24 import start

    h = start(rate_limit=False)
    yield h.url
    h.stop()


@pytest.fixture
def w(tmp_path: Path, sandbox_url: str) -> Iterator[ChatWorld]:
    world = make_world(tmp_path, sandbox_url)
    try:
        world.sync()          # the portal's contacts and deals are known; Telegram's webhook is set
        yield world
    finally:
        world.close()
