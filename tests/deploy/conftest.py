"""Fixtures of the deployment tests: syncd built as a wheel and installed into a fresh venv, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from wheel_env import build_wheel, make_venv


@pytest.fixture(scope="session")
def syncd_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory, syncd_wheel: Path) -> Iterator[Path]:
    yield make_venv(tmp_path_factory.mktemp("venv") / "venv", syncd_wheel)
