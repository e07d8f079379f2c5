"""The mapping layer: system fields <-> canonical fields, value maps, transforms, directions."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.errors import BadInput
from syncd.mapping import Mapper, parse_mapping_doc
from syncd.mapping.load import validate_set
from syncd.schema import Ref

DOC = {
    "maps": [
        {"system": "crm", "kind": "deal", "entity": "order", "create": True, "defaults": {"CATEGORY_ID": 0, "OPENED": "Y"},
         "fields": {
             "order.title": "TITLE",
             "order.status": {"field": "STAGE_ID", "values": "stages"},
             "order.total": {"field": "OPPORTUNITY", "transform": "money"},
             "order.opened": {"field": "OPENED", "transform": "yn"},
             "order.customer": "CONTACT_ID",
             "order.pipeline": {"field": "CATEGORY_ID", "direction": "pull"},
             "order.comment": {"field": "COMMENTS", "direction": "push"},
             "order.items": {"field": "ROWS", "items": {"product": "PRODUCT_ID", "name": "NAME",
                                                        "quantity": "QTY", "price": "PRICE"}},
         }},
        {"system": "crm", "kind": "contact", "entity": "person", "create": True, "fields": {"person.name": "NAME"}},
        {"system": "crm", "kind": "product", "entity": "product", "create": True, "fields": {"product.name": "NAME"}},
    ],
    "values": {"stages": {"new": "NEW", "paid": "PREPAYMENT_INVOICE", "completed": "WON", "canceled": "LOSE"}},
}


@pytest.fixture(scope="module")
def mapper() -> Mapper:
    ms = parse_mapping_doc(DOC, "test")
    validate_set(ms)
    return Mapper(ms)


def test_pull_maps_values_refs_and_items(mapper: Mapper) -> None:
    entity, f = mapper.to_canonical("crm", "deal", {
        "TITLE": "Заказ 1042", "STAGE_ID": "PREPAYMENT_INVOICE", "OPPORTUNITY": "5880.00", "OPENED": "Y",
        "CONTACT_ID": "12", "CATEGORY_ID": "0", "COMMENTS": "ignored: push only", "UNMAPPED": "x",
        "ROWS": [{"PRODUCT_ID": "7", "NAME": "Кружка", "QTY": "12", "PRICE": "490.00"}]})
    assert entity == "order"
    assert f["order.status"] == "paid" and f["order.total"] == Decimal("5880.00") and f["order.opened"] is True
    assert f["order.customer"] == Ref("person", "12") and f["order.pipeline"] == "0"
    assert "order.comment" not in f
    assert f["order.items"][0]["product"] == Ref("product", "7") and f["order.items"][0]["quantity"] == 12


def test_unknown_status_is_bad_input_naming_field_and_map(mapper: Mapper) -> None:
    with pytest.raises(BadInput) as e:
        mapper.to_canonical("crm", "deal", {"STAGE_ID": "C7:WEIRD"})
    assert "order.status <- STAGE_ID" in str(e.value) and "C7:WEIRD" in str(e.value) and "stages" in str(e.value)


def test_push_uses_defaults_only_on_create_and_respects_direction(mapper: Mapper) -> None:
    em = mapper.push_map("crm", "order")
    assert em is not None
    fields = {"order.status": "completed", "order.total": Decimal("10.5"), "order.pipeline": "3",
              "order.comment": "позвонить"}
    created = mapper.from_canonical(em, fields, create=True)
    assert created == {"CATEGORY_ID": 0, "OPENED": "Y", "STAGE_ID": "WON", "OPPORTUNITY": "10.50",
                       "COMMENTS": "позвонить"}
    updated = mapper.from_canonical(em, fields, create=False)
    assert "CATEGORY_ID" not in updated and updated["STAGE_ID"] == "WON"


def test_unmapped_canonical_value_on_push_is_bad_input(mapper: Mapper) -> None:
    em = mapper.push_map("crm", "order")
    assert em is not None
    with pytest.raises(BadInput, match="shipped"):
        mapper.from_canonical(em, {"order.status": "shipped"}, create=False)


money = st.decimals(min_value=Decimal("0"), max_value=Decimal("10000000"), places=2, allow_nan=False)
text = st.text(alphabet=st.characters(codec="cp1251", exclude_categories=("Cc", "Cs", "Zs")), min_size=1,
               max_size=30)


@given(status=st.sampled_from(["new", "paid", "completed", "canceled"]), total=money, opened=st.booleans(),
       title=text, rows=st.lists(st.tuples(text, st.integers(1, 999), money), max_size=4))
def test_push_then_pull_is_identity(mapper: Mapper, status: str, total: Decimal, opened: bool, title: str,
                                    rows: list[tuple[str, int, Decimal]]) -> None:
    em = mapper.push_map("crm", "order")
    assert em is not None
    canon = {"order.status": status, "order.total": total, "order.opened": opened, "order.title": title,
             "order.items": tuple({"name": n, "quantity": Decimal(q), "price": p} for n, q, p in rows)}
    system = mapper.from_canonical(em, canon, create=False)
    _, back = mapper.to_canonical("crm", "deal", system)
    assert back["order.status"] == status and back["order.total"] == total and back["order.opened"] is opened
    assert back["order.title"] == title.strip()
    assert [(i["name"], i["quantity"], i["price"]) for i in back["order.items"]] == [
        (n.strip(), Decimal(q), p) for n, q, p in rows]
    # and the shadow value the engine stores after a push equals what is read back (no echo)
    for name, value in canon.items():
        assert mapper.roundtrip(em, name, value) == back[name]


@given(st.dictionaries(st.sampled_from(["TITLE", "STAGE_ID", "OPPORTUNITY", "OPENED", "CONTACT_ID", "ROWS"]),
                       st.one_of(st.none(), st.text(max_size=20), st.integers(), st.lists(st.integers(), max_size=2),
                                 st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))))
def test_garbage_never_crashes_only_bad_input(mapper: Mapper, raw: dict) -> None:  # type: ignore[type-arg]
    try:
        entity, fields = mapper.to_canonical("crm", "deal", raw)
    except BadInput as exc:
        assert str(exc)
    else:
        assert entity == "order" and isinstance(fields, dict)


def test_datetime_fields_are_timezone_aware() -> None:
    from syncd.schema import normalize

    d = normalize("order.date", "2026-11-24T10:12:31")
    assert d.tzinfo is not None and d == dt.datetime(2026, 11, 24, 10, 12, 31, tzinfo=dt.timezone.utc)
    assert normalize("order.date", "2026-11-24T10:12:31+03:00").utcoffset() == dt.timedelta(hours=3)
