"""The reader's guarantees hold whatever size the chunks fed to lxml are (syncd/commerceml/pull.py).

The recovery and safety tests (`pytestmark = pytest.mark.usefixtures("feed_size")`) run once per
feed size, from a few bytes (a record spread over many feeds, the error in a later feed than the
record's start) to megabytes (the whole file, many records and the damage in one feed).
"""

from __future__ import annotations

import pytest

from syncd.commerceml import pull

FEED_SIZES = [7, 4096, 1 << 16, 1 << 22]


@pytest.fixture(params=FEED_SIZES, ids=lambda n: f"feed{n}")
def feed_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(pull, "FEED_SIZE", request.param)
    return request.param
