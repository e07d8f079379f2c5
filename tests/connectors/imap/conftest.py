"""A real Dovecot per test (tests/connectors/imap/dovecot.py); skipped only where it is not installed
(.ci/run installs Debian's dovecot-imapd, so CI always runs these)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dovecot import Dovecot, available


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Dovecot]:
    if not available():
        pytest.skip("needs Debian's dovecot-imapd (.ci/run installs it)")
    with Dovecot(tmp_path / "dovecot") as d:
        yield d
