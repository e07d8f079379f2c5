"""The shop connector against the sandbox shop set to behave like other CommerceML sites (Peer knobs).

Each knob is one habit of a real site: where the session cookie comes from, what init answers, how the
export is encoded and shaped, which modes exist, whether `mode=file` appends or overwrites. syncd must
work with all of them unchanged, or say exactly what the site cannot do.
"""

from __future__ import annotations

import importlib.util
from decimal import Decimal
from typing import Any

import pytest
import requests
from sqlalchemy import select
from shop_world import MUG, PERSON, TEAPOT, place, settle

from connectors.shop import ShopConnector, ShopSettings
from syncd.commerceml.validate import validate
from syncd.connector import RawRecord, WriteOp
from syncd.errors import PermanentError, TransientError
from syncd.pipeline.push import outbox_sizes
from syncd.sandbox.shop.seed import company_requisites
from syncd.store import tables as t

COMPANY = {"kind": "company", "company_name": "ООО «Ромашка»", "full_name": "Общество с ограниченной "
           "ответственностью «Ромашка»", "email": "zakaz@romashka.example", "phone": "+7 (495) 765-43-21",
           "legal_address": "119991, г. Москва, ул. Лесная, д. 5", "contact_person": "Петров Иван"}


def peer(w: dict[str, Any], **knobs: Any) -> None:
    r = requests.patch(f"{w['api']}/peer", json=knobs)
    assert r.status_code == 200, r.text


def conn_for(shop: Any, **kw: Any) -> ShopConnector:
    return ShopConnector("shop", ShopSettings(url=shop.extra["exchange_url"], login="1c_exchange",
                                              password="secret", timeout=5, **kw))


def log(w: dict[str, Any]) -> list[dict[str, Any]]:
    return requests.get(f"{w['api']}/log").json()


def order_op(ext: str, fields: dict[str, Any], op_id: str = "op-1") -> WriteOp:
    return WriteOp(op_id, "shop", "order", "update", "order", "e1", ext, fields, "syncd-e1")


@pytest.mark.parametrize("session,minimal,source", [
    ("bitrix", False, "session cookie in the body and Set-Cookie, sessid"),
    ("body", False, "session cookie from the answer body, sessid"),
    ("cookie", False, "session cookie from Set-Cookie, no sessid"),
    ("basic", False, "no session cookie, HTTP Basic on every request, no sessid"),
    ("bitrix", True, "session cookie in the body and Set-Cookie, no sessid"),
])
def test_session_forms_read_and_ack(world: dict[str, Any], session: str, minimal: bool, source: str) -> None:
    w = world
    peer(w, session=session, init_minimal=minimal)
    o = place(w, PERSON)
    h = w["conn"].health()
    assert h.ok and source in h.detail, h.detail
    if minimal:
        assert "version=" not in h.detail
    c = w["syncer"].pull("shop", "orders")
    assert c.failed == 0 and w["store"].find_entity("shop", "order", str(o["id"])) is not None
    last = log(w)[-1]
    assert (last["mode"], last["answer"]) == ("success", "success")
    # and an upload goes through the same session form
    w["conn"].write(order_op(str(o["id"]), {"Комментарий": "Перезвонить"}))
    assert w["st"].orders[o["id"]].comment == "Перезвонить"


def test_cookie_refused_then_basic_on_every_request(world: dict[str, Any]) -> None:
    """A site that hands out a cookie but honours only HTTP Basic: one retry with Basic, then always."""
    w = world
    o = place(w, PERSON)
    peer(w, session="basic-cookie")
    conn: ShopConnector = w["conn"]
    (batch,) = conn.read("orders", None)
    assert conn.client.session is not None and conn.client.session.basic
    assert [r.external_id for r in batch.records if isinstance(r, RawRecord) and r.kind == "order"] == [str(o["id"])]
    assert batch.ack is not None
    batch.ack()
    assert log(w)[-1]["answer"] == "success"


@pytest.mark.parametrize("version", ["2.03", "2.10"])
def test_plain_cp1251_export_and_company_without_inn(world: dict[str, Any], version: str) -> None:
    """windows-1251 without BOM or charset, single-quoted declaration, no xmlns, an old or new
    ВерсияСхемы, the address as a plain <Адрес>, a company whose ИНН is only in an XML comment."""
    w = world
    peer(w, query_content_type="text/xml", schema_version=version, address="plain", company_inn="comment")
    req = company_requisites(__import__("random").Random(3))
    o = place(w, {**COMPANY, **req})
    p = place(w, PERSON)
    xml = requests.get(f"{w['api']}/orders/{o['id']}/xml").content
    assert f"<!-- ИНН {req['inn']}".encode("cp1251") in xml and "<ИНН>".encode("cp1251") not in xml
    w["syncer"].pull("shop", "orders")
    store = w["store"]
    order = store.entity(store.find_entity("shop", "order", str(o["id"])))["fields"]
    assert order.get("order.customer") is None
    company = store.entity(order["order.company"])["fields"]
    assert company["company.name"] == "ООО «Ромашка»" and "company.inn" not in company
    assert company["company.legal_address"] == COMPANY["legal_address"]
    person_order = store.entity(store.find_entity("shop", "order", str(p["id"])))["fields"]
    person = store.entity(person_order["order.customer"])["fields"]
    assert person["person.email"] == PERSON["email"] and person["person.address"] == PERSON["address"]


def test_address_beside_the_counterparty_and_namespaced_export(world: dict[str, Any]) -> None:
    w = world
    peer(w, address="beside", xmlns=True, company_inn="comment")
    o = place(w, COMPANY)
    c = w["syncer"].pull("shop", "orders")
    assert (c.failed, c.quarantined) == (0, 0)
    store = w["store"]
    order = store.entity(store.find_entity("shop", "order", str(o["id"])))["fields"]
    company = store.entity(order["order.company"])["fields"]
    assert company["company.name"] == "ООО «Ромашка»"
    assert log(w)[-1]["mode"] == "success"


def test_missing_import_is_stated_and_nothing_is_uploaded(world: dict[str, Any]) -> None:
    w = world
    peer(w, missing_modes=["import", "info", "deactivate", "complete"])
    o = place(w, PERSON)
    conn: ShopConnector = w["conn"]
    h = conn.health()
    assert h.ok and "\n" not in h.detail
    assert "this shop stores uploaded order files but does not import them (sale&mode=import: HTTP 404)" in h.detail
    assert "no sale&mode=info (HTTP 404)" in h.detail
    assert conn.writes == frozenset()
    with pytest.raises(PermanentError, match="does not import them"):
        conn.write(order_op(str(o["id"]), {"Комментарий": "x"}))
    assert not [e for e in log(w) if e["mode"] == "file"]


def test_failed_import_is_one_dead_letter_not_an_upload_per_pass(world: dict[str, Any]) -> None:
    w = world
    syncer, store, crm = w["syncer"], w["store"], w["crm"]
    place(w, PERSON)
    settle(syncer, store)
    requests.patch(f"{w['api']}/faults", json={"failure_rate": 1.0, "modes": ["import"]})
    deal_id = next(iter(crm.objects["order"]))
    crm.edit("order", deal_id, status="READY")
    settle(syncer, store)
    files = len([e for e in log(w) if e["mode"] == "file"])
    for _ in range(3):
        settle(syncer, store)
    assert len([e for e in log(w) if e["mode"] == "file"]) == files <= 2     # one upload, one retry after relogin
    assert outbox_sizes(store)["shop"].get("dead") == 1
    with store.engine.connect() as c:
        (err,) = c.execute(select(t.outbox.c.last_error).where(t.outbox.c.status == "dead")).scalars()
    assert "import: failure — Ошибка сервера" in err


def test_update_is_a_complete_valid_document(world: dict[str, Any]) -> None:
    """Only the changed field comes in (no WriteOp.full yet): the document still has every required
    element, from the last read of the order, and passes `syncd cml check`'s validation."""
    w = world
    o = place(w, {**PERSON}, items=[{"product_id": MUG, "quantity": 2}, {"product_id": TEAPOT, "quantity": 1}])
    w["syncer"].pull("shop", "orders")
    conn: ShopConnector = w["conn"]
    conn.write(order_op(str(o["id"]), {"Статус заказа": "[G] Готов к отгрузке"}, op_id="op-7"))
    (sess,) = [s for s in w["st"].sessions.values() if "sale:orders-op-7.xml" in s.files]
    sent = bytes(sess.files["sale:orders-op-7.xml"])
    assert validate(sent) == []
    text = sent.decode("cp1251")
    for el in ("Ид", "Номер", "Дата", "ХозОперация", "Роль", "Валюта", "Курс", "Сумма", "Контрагенты"):
        assert f"<{el}>" in text, el
    assert f"<Номер>{o['number']}</Номер>" in text and f"<Дата>{o['created'][:10]}</Дата>" in text
    order = w["st"].orders[o["id"]]
    assert order.status == "G" and len(order.items) == 2 and order.total == Decimal("2270.00")
    # a document that would not validate is never sent
    with pytest.raises(PermanentError, match="not valid CommerceML"):
        conn.write(order_op(str(o["id"]), {"Сумма": "NaN"}, op_id="op-8"))
    assert not any("sale:orders-op-8.xml" in s.files for s in w["st"].sessions.values())


def _big_items(n: int = 60) -> list[dict[str, Any]]:
    return [{"Ид": MUG, "Наименование": f"Кружка керамическая 350 мл, вариант {i} " + "узор " * 20,
             "Количество": "1", "ЦенаЗаЕдиницу": "490"} for i in range(n)]


def test_overwriting_site_never_gets_a_split_document(world: dict[str, Any]) -> None:
    w = world
    o = place(w, PERSON)
    w["syncer"].pull("shop", "orders")
    requests.patch(f"{w['api']}/settings", json={"file_limit": 4096})
    peer(w, file_writes="overwrite")
    conn: ShopConnector = w["conn"]
    with pytest.raises(PermanentError, match=r"over the shop's file_limit=4096; not sent in pieces"):
        conn.write(order_op(str(o["id"]), {"Товары": _big_items()}))
    assert not [e for e in log(w) if e["mode"] == "file"]
    # the site offers zip: the document goes up zipped, in one piece, and is applied whole
    requests.patch(f"{w['api']}/settings", json={"zip": True})
    conn.write(order_op(str(o["id"]), {"Товары": _big_items()}, op_id="op-2"))
    files = [e for e in log(w) if e["mode"] == "file"]
    assert len(files) == 1 and files[0]["filename"].endswith(".zip") and files[0]["bytes_in"] <= 4096
    assert len(w["st"].orders[o["id"]].items) == 60


def test_appending_site_may_get_chunks_when_allowed(shop: Any) -> None:
    requests.patch(shop.url + "/_sandbox/settings", json={"file_limit": 4096})
    st = shop.extra["state"]
    st.add_product(MUG, "Кружка керамическая 350 мл", "490")
    o = st.place_order(user=PERSON, items=[{"product_id": MUG, "quantity": 1}])
    conn = conn_for(shop, split_uploads=True)
    conn.write(order_op(str(o.id), {"Товары": _big_items()}))
    files = [e for e in requests.get(shop.url + "/_sandbox/log").json() if e["mode"] == "file"]
    assert len(files) > 1 and len(st.orders[o.id].items) == 60


def test_errors_name_the_step_and_the_answer(shop: Any) -> None:
    api = shop.url + "/_sandbox"
    requests.patch(f"{api}/faults", json={"fail_next": 1, "modes": ["checkauth"]})
    h = conn_for(shop).health()
    assert not h.ok and h.detail.startswith("shop: checkauth: HTTP 503 — the site failed: 503 Service") and \
        "unreachable" not in h.detail
    requests.patch(f"{api}/peer", json={"session": "basic"})
    h = ShopConnector("shop", ShopSettings(url=shop.extra["exchange_url"], login="1c_exchange",
                                           password="nope", timeout=5)).health()
    assert h.detail == "shop: checkauth: HTTP 401 — wrong login or password"
    requests.patch(f"{api}/peer", json={"session": "bitrix"})
    conn = conn_for(shop)
    conn.health()
    requests.patch(f"{api}/faults", json={"fail_next": 1, "modes": ["query"]})
    with pytest.raises(TransientError, match=r"^shop: query: HTTP 503 — the site failed"):
        list(conn.read("orders", None))
    down = ShopConnector("shop", ShopSettings(url="http://127.0.0.1:9/x", login="a", password="b", timeout=2))
    assert "127.0.0.1:9 unreachable (connection refused)" in down.health().detail


# -- acks never ahead of the data -------------------------------------------------------------------

needs_recovery = pytest.mark.skipif(
    importlib.util.find_spec("syncd.commerceml.recovery") is None,
    reason="needs the record-by-record CommerceML reader (syncd.commerceml.recovery, helper cml)")


@needs_recovery
def test_bad_byte_in_one_order_quarantines_that_order_only(world: dict[str, Any]) -> None:
    w = world
    syncer, store = w["syncer"], w["store"]
    placed = [place(w, {**PERSON, "email": f"buyer{i}@mail.example", "phone": f"+7 916 000 00 0{i}"},
                    comment=f"Заказ {i}") for i in range(5)]
    bad = placed[1]
    requests.post(f"{w['api']}/orders/{bad['id']}/break", json={"what": "byte"})
    c = syncer.pull("shop", "orders")
    assert c.quarantined == 1 and c.failed == 0
    for o in placed:
        eid = store.find_entity("shop", "order", str(o["id"]))
        # the bad order is stood for by a held entity (written nowhere) until it reads fine again
        assert eid is not None and (store.entity(eid)["hold"] == "quarantine") == (o is bad)
    with store.engine.connect() as conn:
        (row,) = conn.execute(t.quarantine.select()).mappings().all()
    raw = row["raw"] if isinstance(row["raw"], str) else row["raw"].decode("utf-8")
    assert raw.lstrip().startswith("<Документ") and raw.rstrip().endswith("</Документ>")
    assert f"<Ид>{bad['id']}</Ид>" in raw and "Заказ 1" in raw and "</Товары>" in raw
    assert "line" in row["reason"]
    assert log(w)[-1]["mode"] == "success"


def test_unreadable_export_is_not_acked_and_comes_again(world: dict[str, Any]) -> None:
    w = world
    syncer, store, conn = w["syncer"], w["store"], w["conn"]
    placed = [place(w, PERSON, comment=f"Заказ {i}") for i in range(3)]
    # a PHP warning printed before the XML: no record of this export can be trusted
    peer(w, export_prefix="\nWarning: Undefined variable $profile in /home/bitrix/www/local/php_interface/"
                          "init.php on line 42\n")
    c = syncer.pull("shop", "orders")
    assert c.failed == 1 and store.count("entities", type="order") == 0
    assert "success" not in [e["mode"] for e in log(w)]
    with pytest.raises(TransientError, match=r"^shop: query: the export cannot be read .*not acknowledged"):
        list(conn.read("orders", None))
    assert "success" not in [e["mode"] for e in log(w)]
    peer(w, export_prefix="")                       # the site is fixed: the same orders come again
    (batch,) = conn.read("orders", None)
    assert sorted(r.external_id for r in batch.records if isinstance(r, RawRecord) and r.kind == "order") == \
        sorted(str(o["id"]) for o in placed)
