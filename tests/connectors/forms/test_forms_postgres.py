"""The core of S4 with the daemon on PostgreSQL (SYNCD_TEST_POSTGRES_URL): a post committed before
its 200, duplicates answered from the store, a known client linked, review mode held."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from formshelpers import stored_fields, wait_leads
from formsworld import CLIENT_EMAIL, KNOWN_TOKEN, REVIEW_TOKEN, TOKEN, World, start_world

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_world(tmp_path: Path, sandbox_url: str, pg_url: str) -> Iterator[World]:
    w = start_world(tmp_path, sandbox_url, db_url=pg_url)
    try:
        yield w
    finally:
        w.daemon.stop()


def test_forms_on_postgresql(pg_world: World) -> None:
    w = pg_world
    data = {"your_name": "Пг Дубль", "tel": "+79035550001", "agree": "on"}
    first, again = (w.daemon.post("contact", data, token=TOKEN) for _ in range(2))
    assert first.status_code == 200 and first.json() == again.json()
    known = w.daemon.post("known", {"your_name": "Пг Ольга", "mail": CLIENT_EMAIL}, token=KNOWN_TOKEN)
    held = w.daemon.post("review", {"your_name": "Пг Проверка", "tel": "+79035550002"}, token=REVIEW_TOKEN)
    assert known.status_code == held.status_code == 200
    assert stored_fields(w.db, "forms", held.json()["id"])["_hold"] == "review"  # type: ignore[index]
    assert len(wait_leads(w.portal, 1, NAME="Пг Дубль")) == 1
    [lead] = wait_leads(w.portal, 1, NAME="Пг Ольга")
    assert str(lead["CONTACT_ID"]) == w.client_id and lead["ASSIGNED_BY_ID"] == w.managers["boris"]
    assert w.portal.leads(NAME="Пг Проверка") == []
