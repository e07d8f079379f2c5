"""Fixtures of the forms suite: one Bitrix24 sandbox for the session, and per module a fresh portal
with `syncd run` serving the suite's forms (formsworld.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from formsworld import World, start_world


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    from syncd.sandbox.bitrix24 import start

    handle = start(rate_limit=False)
    yield handle.url
    handle.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sandbox_url: str) -> Iterator[World]:
    w = start_world(tmp_path_factory.mktemp("forms"), sandbox_url)
    try:
        yield w
    finally:
        w.daemon.stop()
