"""Push: a write that waits for its link's create goes again in the same drain once that create
is done, and the `yn` transform reads Bitrix24 boolean user fields ("1"/"0")."""

from __future__ import annotations

from factories import make_world, person

from syncd.mapping.transforms import TRANSFORMS
from syncd.store import Store


def test_order_waiting_for_its_customer_goes_in_the_same_drain(store: Store) -> None:
    syncer, remote = make_world(store, systems=("crm", "shop"))
    # the order arrives before its buyer, so its outbox row comes first
    remote["crm"].edit("order", "o1", number="77", status="NEW", total="100", customer_id="c1")
    remote["crm"].edit("person", "c1", **person())
    syncer.pull("crm", "order")
    syncer.pull("crm", "person")
    c = syncer.push("shop")
    assert c.pushed >= 2 and store.count("outbox", status="pending") == 0
    (order,) = remote["shop"].objects["order"].values()
    assert order["customer_id"] in remote["shop"].objects["person"]


def test_yn_reads_boolean_user_fields() -> None:
    yn = TRANSFORMS["yn"]
    assert [yn.pull(v) for v in ("Y", "N", "1", "0", 1, 0, "")] == [True, False, True, False, True, False, False]
