"""Fixtures of the acceptance suite (tests/acceptance/harness.py): each test gets a fresh portal and
shop set up as an integrator would, and syncd configured by `syncd init` plus the integrator's edits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Integration


@pytest.fixture
def it(tmp_path: Path) -> Iterator[Integration]:
    """The integration: shop, portal and syncd (no 1C)."""
    i = Integration(tmp_path)
    try:
        yield i
    finally:
        i.close()


@pytest.fixture
def it1c(tmp_path: Path) -> Iterator[Integration]:
    """The integration with 1C: syncd also serves the exchange 1C calls."""
    i = Integration(tmp_path, onec=True)
    try:
        yield i
    finally:
        i.close()
