"""Fixtures of the acceptance suite (tests/acceptance/harness.py): each test gets a fresh portal and
shop set up as an integrator would, and syncd configured by `syncd init` plus the integrator's edits.

Every test that ran syncd ends with an audit of the systems it touched (issue 21): `syncd audit`
reads every bound CRM record back through the portal's REST API and compares it with syncd's, and
each bound shop order is compared through the shop's own API (the CommerceML exchange cannot read an
order back). Zero drift, or the test fails with the differences.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Integration, money


def _audit(i: Integration) -> None:
    if i.rt is None:
        return                                    # syncd never ran in this test
    rt = i.runtime()
    report = rt.audit()
    drift = [d.as_dict() for d in report.drift]
    assert drift == [], f"the systems are out of step after the test: {drift[:5]}"
    assert report.checked.get("crm"), "the audit read nothing back from the portal"
    # the shop, through its own API: each bound order's lines and total are syncd's
    from sqlalchemy import select

    from syncd import schema
    from syncd.store import tables as t

    with rt.store.read() as c:
        rows = c.execute(select(t.bindings.c.external_id, t.entities.c.fields)
                         .join(t.entities, t.entities.c.id == t.bindings.c.entity_id)
                         .where(t.bindings.c.system == "shop", t.bindings.c.type == "order",
                                t.bindings.c.alias.is_(False), t.entities.c.hold.is_(None))).all()
    orders = {o["xml_id"]: o for o in i.shop.orders()}
    for ext, fields in rows:
        golden = schema.decode(fields)
        o = orders.get(ext)
        if o is None or "order.total" not in golden:
            continue
        assert money(o["total"]) == money(golden["order.total"]), \
            f"shop order {o['number']}: total {o['total']}, syncd {golden['order.total']}"
        assert sorted(float(x["quantity"]) for x in o["items"]) == sorted(
            float(x.get("quantity") or 0) for x in golden.get("order.items") or ()), f"shop order {o['number']}: lines"


@pytest.fixture
def it(tmp_path: Path) -> Iterator[Integration]:
    """The integration: shop, portal and syncd (no 1C)."""
    i = Integration(tmp_path)
    try:
        yield i
        _audit(i)
    finally:
        i.close()


@pytest.fixture
def it1c(tmp_path: Path) -> Iterator[Integration]:
    """The integration with 1C: syncd also serves the exchange 1C calls."""
    i = Integration(tmp_path, onec=True)
    try:
        yield i
        _audit(i)
    finally:
        i.close()
