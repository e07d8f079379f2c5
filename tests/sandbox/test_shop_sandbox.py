"""The sandbox shop through the network: exchange semantics (protocols.md §1) and the control API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from syncd.commerceml import iter_documents
from syncd.sandbox.shop import start

AUTH = ("1c_exchange", "secret")


@pytest.fixture
def shop() -> Iterator[dict]:
    h = start(seed=4)
    yield {"url": h.extra["exchange_url"], "base": h.url, "state": h.extra["state"]}
    h.stop()


def _lines(r: requests.Response) -> list[str]:
    assert r.headers["content-type"] == "text/html; charset=windows-1251"
    return r.content.decode("cp1251").split("\n")


def _login(url: str, typ: str = "sale") -> tuple[dict[str, str], str, list[str]]:
    r = requests.get(url, params={"type": typ, "mode": "checkauth"}, auth=AUTH)
    lines = _lines(r)
    assert lines[0] == "success" and lines[1] == "PHPSESSID"
    assert lines[3].startswith("sessid=") and len(lines[3]) == len("sessid=") + 32
    return {"PHPSESSID": lines[2]}, lines[3].split("=", 1)[1], lines


def test_checkauth_wrong_password_is_failure_in_cp1251(shop: dict) -> None:
    r = requests.get(shop["url"], params={"type": "sale", "mode": "checkauth"}, auth=("1c_exchange", "nope"))
    lines = _lines(r)
    assert lines[0] == "failure" and "Неверный" in lines[1]
    r = requests.get(shop["url"], params={"type": "sale", "mode": "checkauth"})
    assert _lines(r)[0] == "failure"


def test_session_cookie_and_sessid_ratchet(shop: dict) -> None:
    url = shop["url"]
    _, _, cat = _login(url, "catalog")
    assert cat[4].startswith("timestamp=")                       # catalog checkauth has a timestamp
    cookies, sessid, sale = _login(url)
    assert sale[4] == ""                                         # sale: no timestamp line
    # no cookie -> failure
    assert _lines(requests.get(url, params={"type": "sale", "mode": "init"}))[0] == "failure"
    # cookie without sessid works before the ratchet; init without version: two lines only
    r = requests.get(url, params={"type": "sale", "mode": "init"}, cookies=cookies)
    assert _lines(r) == ["zip=no", "file_limit=204800", ""]
    # a valid sessid flips the ratchet
    r = requests.get(url, params={"type": "sale", "mode": "init", "version": "2.08", "sessid": sessid},
                     cookies=cookies)
    assert _lines(r) == ["zip=no", "file_limit=204800", f"sessid={sessid}", "version=2.09", ""]
    r = requests.get(url, params={"type": "sale", "mode": "init"}, cookies=cookies)
    assert _lines(r)[0] == "failure" and "source check" in _lines(r)[1]
    r = requests.get(url, params={"type": "sale", "mode": "init", "sessid": "0" * 32}, cookies=cookies)
    assert _lines(r)[0] == "failure"
    # success with a cookie that is no session: `error`, not `failure`
    r = requests.get(url, params={"type": "sale", "mode": "success", "sessid": sessid},
                     cookies={"PHPSESSID": "bogus"})
    assert _lines(r)[0] == "error"


def test_query_reexports_until_success(shop: dict) -> None:
    url = shop["url"]
    cookies, sessid, _ = _login(url)
    p = {"type": "sale", "sessid": sessid}
    requests.get(url, params={**p, "mode": "init", "version": "2.08"}, cookies=cookies)
    r = requests.get(url, params={**p, "mode": "query"}, cookies=cookies)
    assert r.headers["content-type"] == "application/xml; charset=windows-1251"
    assert r.content.startswith(b"<?xml version='1.0' encoding='windows-1251'?>")
    docs = list(iter_documents(r.content))
    assert len(docs) == 4 and all(d.status and d.status.startswith("[") for d in docs)
    assert any("Кружка" in (i.name or "") or i.name for d in docs for i in d.items)
    again = list(iter_documents(requests.get(url, params={**p, "mode": "query"}, cookies=cookies).content))
    assert [d.id for d in again] == [d.id for d in docs]         # no success yet: the same orders
    assert _lines(requests.get(url, params={**p, "mode": "success"}, cookies=cookies))[0] == "success"
    assert list(iter_documents(requests.get(url, params={**p, "mode": "query"}, cookies=cookies).content)) == []
    # a customer pays: that order alone is exported next
    oid = docs[0].id
    requests.post(f"{shop['base']}/_sandbox/orders/{oid}/pay", json={})
    docs = list(iter_documents(requests.get(url, params={**p, "mode": "query"}, cookies=cookies).content))
    assert [d.id for d in docs] == [oid] and docs[0].is_paid


def test_file_chunks_and_import_update_the_order_book(shop: dict) -> None:
    url, st = shop["url"], shop["state"]
    cookies, sessid, _ = _login(url)
    p = {"type": "sale", "sessid": sessid}
    requests.get(url, params={**p, "mode": "init", "version": "2.08"}, cookies=cookies)
    order = next(iter(st.orders.values()))
    xml = f"""<?xml version="1.0" encoding="windows-1251"?>
<КоммерческаяИнформация ВерсияСхемы="2.08" ДатаФормирования="2026-11-24T10:00:00">
<Документ><Ид>{order.xml_id}</Ид><Номер>{order.number}</Номер><ХозОперация>Заказ товара</ХозОперация>
<Комментарий>Изменено менеджером</Комментарий>
<ЗначенияРеквизитов>
<ЗначениеРеквизита><Наименование>Статус заказа</Наименование><Значение>[G] Готов к отгрузке</Значение></ЗначениеРеквизита>
<ЗначениеРеквизита><Наименование>Номер по 1С</Наименование><Значение>УТ-000123</Значение></ЗначениеРеквизита>
</ЗначенияРеквизитов></Документ></КоммерческаяИнформация>""".encode("cp1251")
    half = len(xml) // 2
    for off, chunk in ((0, xml[:half]), (0, xml[:half]), (half, xml[half:])):   # one chunk retried
        r = requests.post(url, params={**p, "mode": "file", "filename": "orders.xml", "offset": off},
                          data=chunk, cookies=cookies)
        assert _lines(r)[0] == "success"
    answers = []
    for _ in range(5):
        r = requests.get(url, params={**p, "mode": "import", "filename": "orders.xml"}, cookies=cookies)
        answers.append(_lines(r)[0])
        if answers[-1] != "progress":
            break
    assert answers == ["progress", "progress", "success"]
    assert order.status == "G" and order.comment == "Изменено менеджером" and order.onec_number == "УТ-000123"
    # an import is not exported back (UPDATED_1C) and the same Ид again does not duplicate
    n = len(st.orders)
    for _ in range(3):
        requests.get(url, params={**p, "mode": "import", "filename": "orders.xml"}, cookies=cookies)
    assert len(st.orders) == n
    bad = requests.post(url, params={**p, "mode": "file", "filename": "../x.php"}, data=b"x", cookies=cookies)
    assert _lines(bad)[0] == "failure"


def test_control_api_place_pay_status_requisites_log(shop: dict) -> None:
    base = shop["base"] + "/_sandbox"
    o = requests.post(f"{base}/orders", json={
        "user": {"kind": "company", "company_name": "ООО «Тест»", "inn": "7707083893", "kpp": "773601001",
                 "email": "t@test.example", "phone": "+7 916 123 45 67"},
        "items": [{"product_id": "9f1c2a10-0000-4c1e-8a00-000000000001", "quantity": 12}],
        "delivery_price": 300}).json()
    assert o["total"] == "6180.00" and o["status"] == "N"
    o = requests.post(f"{base}/orders/{o['id']}/pay", json={"amount": "1000"}).json()
    assert o["paid_sum"] == "1000.00" and not o["paid"]
    o = requests.post(f"{base}/orders/{o['id']}/pay", json={}).json()
    assert o["paid"] and o["status"] == "P"
    o = requests.post(f"{base}/orders/{o['id']}/status", json={"status": "S"}).json()
    assert o["status"] == "S"
    u = requests.patch(f"{base}/users/{o['user_id']}", json={"kpp": "773601002"}).json()
    assert u["kpp"] == "773601002"
    assert requests.post(f"{base}/orders/{o['id']}/status", json={"status": "ZZ"}).status_code == 400
    requests.get(shop["url"], params={"type": "sale", "mode": "checkauth"}, auth=AUTH)
    log = requests.get(f"{base}/log").json()
    assert log[-1]["mode"] == "checkauth" and log[-1]["answer"] == "success"
    requests.patch(f"{base}/faults", json={"failure_next": 1})
    r = requests.get(shop["url"], params={"type": "sale", "mode": "checkauth"}, auth=AUTH)
    assert _lines(r)[0] == "failure"
    requests.patch(f"{base}/faults", json={"fail_next": 1})
    assert requests.get(shop["url"], params={"type": "sale", "mode": "checkauth"}, auth=AUTH).status_code == 503


def test_sale_info_and_catalog_import(shop: dict) -> None:
    url, st = shop["url"], shop["state"]
    cookies, sessid, lines = _login(url, "catalog")
    p = {"type": "catalog", "sessid": sessid}
    requests.get(url, params={**p, "mode": "init"}, cookies=cookies)
    offers = """<?xml version="1.0" encoding="UTF-8"?>
<КоммерческаяИнформация ВерсияСхемы="2.08" ДатаФормирования="2026-11-24T10:00:00"><ПакетПредложений>
<Предложения><Предложение><Ид>9f1c2a10-0000-4c1e-8a00-000000000001</Ид><Наименование>Кружка</Наименование>
<Цены><Цена><ИдТипаЦены>1</ИдТипаЦены><ЦенаЗаЕдиницу>510.00</ЦенаЗаЕдиницу></Цена></Цены><Количество>40</Количество>
</Предложение></Предложения></ПакетПредложений></КоммерческаяИнформация>""".encode()
    requests.post(url, params={**p, "mode": "file", "filename": "offers.xml"}, data=offers, cookies=cookies)
    for _ in range(3):
        r = requests.get(url, params={**p, "mode": "import", "filename": "offers.xml"}, cookies=cookies)
    assert _lines(r)[0] == "success"
    assert str(st.products["9f1c2a10-0000-4c1e-8a00-000000000001"].price) == "510.00"
    ts = lines[4].split("=", 1)[1]
    assert _lines(requests.get(url, params={**p, "mode": "deactivate", "timestamp": ts}, cookies=cookies))[0] == "success"
    assert _lines(requests.get(url, params={**p, "mode": "complete"}, cookies=cookies))[0] == "success"
    c2, s2, _ = _login(url)
    r = requests.get(url, params={"type": "sale", "mode": "info", "sessid": s2}, cookies=c2)
    assert "Принят".encode("cp1251") in r.content


# ---- other sites: the Peer knobs on the wire ---------------------------------------------------------

def _peer(shop: dict, **knobs: object) -> None:
    r = requests.patch(f"{shop['base']}/_sandbox/peer", json=knobs)
    assert r.status_code == 200, r.text


def test_peer_session_forms(shop: dict) -> None:
    url = shop["url"]
    _peer(shop, session="cookie")
    r = requests.get(url, params={"type": "sale", "mode": "checkauth"}, auth=AUTH)
    assert _lines(r) == ["success", ""] and r.cookies.get("PHPSESSID")
    init = requests.get(url, params={"type": "sale", "mode": "init", "version": "2.08"},
                        cookies={"PHPSESSID": r.cookies["PHPSESSID"]})
    assert _lines(init) == ["zip=no", "file_limit=204800", ""]          # no sessid, no version
    _peer(shop, session="body")
    r = requests.get(url, params={"type": "sale", "mode": "checkauth"}, auth=AUTH)
    assert _lines(r)[:2] == ["success", "PHPSESSID"] and "set-cookie" not in r.headers
    _peer(shop, session="basic")
    r = requests.get(url, params={"type": "sale", "mode": "checkauth"}, auth=AUTH)
    assert _lines(r) == ["success", ""] and "set-cookie" not in r.headers
    assert requests.get(url, params={"type": "sale", "mode": "init"}).status_code == 401
    assert requests.get(url, params={"type": "sale", "mode": "query"}, auth=AUTH).content.startswith(b"<?xml")
    assert requests.get(url, params={"type": "sale", "mode": "checkauth"}, auth=("1c_exchange", "x")).status_code == 401


def test_peer_init_minimal_never_checks_sessid(shop: dict) -> None:
    url = shop["url"]
    _peer(shop, init_minimal=True)
    cookies = {"PHPSESSID": _lines(requests.get(url, params={"type": "sale", "mode": "checkauth"}, auth=AUTH))[2]}
    r = requests.get(url, params={"type": "sale", "mode": "init", "version": "2.08"}, cookies=cookies)
    assert _lines(r) == ["zip=no", "file_limit=204800", ""]
    r = requests.get(url, params={"type": "sale", "mode": "init", "sessid": "0" * 32}, cookies=cookies)
    assert _lines(r)[0] == "zip=no"


def test_peer_missing_modes_are_404_and_export_shape(shop: dict) -> None:
    url = shop["url"]
    _peer(shop, missing_modes=["import", "info"], query_content_type="text/xml", schema_version="2.03",
          address="beside", company_inn="comment")
    cookies, sessid, _ = _login(url)
    p = {"type": "sale", "sessid": sessid}
    assert requests.get(url, params={**p, "mode": "import", "filename": "a.xml"}, cookies=cookies).status_code == 404
    assert requests.get(url, params={**p, "mode": "info"}, cookies=cookies).status_code == 404
    r = requests.get(url, params={**p, "mode": "query"}, cookies=cookies)
    assert r.headers["content-type"] == "text/xml"
    assert r.content.startswith(b"<?xml version='1.0' encoding='windows-1251'?>")
    text = r.content.decode("cp1251")
    assert 'ВерсияСхемы="2.03"' in text and "xmlns" not in text
    assert "</Контрагент>\n          <Адрес>" in text or "</Контрагент><Адрес>" in text.replace("\n", "").replace(" ", "")
    assert requests.patch(f"{shop['base']}/_sandbox/peer", json={"session": "nonsense"}).status_code == 400
    assert requests.patch(f"{shop['base']}/_sandbox/peer", json={"nope": 1}).status_code == 400


def test_peer_file_overwrite_and_zip_import(shop: dict) -> None:
    import io
    import zipfile

    url, st = shop["url"], shop["state"]
    _peer(shop, file_writes="overwrite")
    cookies, sessid, _ = _login(url)
    p = {"type": "sale", "sessid": sessid}
    requests.get(url, params={**p, "mode": "init", "version": "2.08"}, cookies=cookies)
    for part in (b"first", b"second"):
        requests.post(url, params={**p, "mode": "file", "filename": "a.xml"}, data=part, cookies=cookies)
    (sess,) = [s for s in st.sessions.values() if s.sessid == sessid]
    assert bytes(sess.files["sale:a.xml"]) == b"second"                # the last POST only
    order = next(iter(st.orders.values()))
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<КоммерческаяИнформация ВерсияСхемы="2.08" ДатаФормирования="2026-11-24T10:00:00">
<Документ><Ид>{order.xml_id}</Ид><Номер>{order.number}</Номер><ХозОперация>Заказ товара</ХозОперация>
<Комментарий>Из архива</Комментарий></Документ></КоммерческаяИнформация>""".encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("orders.xml", xml)
    requests.post(url, params={**p, "mode": "file", "filename": "orders.zip"}, data=buf.getvalue(), cookies=cookies)
    answers = []
    for _ in range(6):
        r = requests.get(url, params={**p, "mode": "import", "filename": "orders.xml"}, cookies=cookies)
        answers.append(_lines(r)[0])
        if answers[-1] != "progress":
            break
    assert answers == ["progress", "progress", "progress", "success"]    # unzip, then the import steps
    assert order.comment == "Из архива"


# ---- control API for acceptance tests: dated orders, refused imports, the clock ----------------------

def _upload(url: str, xml: bytes, filename: str = "orders.xml") -> list[str]:
    """What 1C (or syncd) does to put a file into the shop: checkauth, init, file, import until done."""
    cookies, sessid, _ = _login(url)
    p = {"type": "sale", "sessid": sessid}
    requests.get(url, params={**p, "mode": "init", "version": "2.08"}, cookies=cookies)
    assert _lines(requests.post(url, params={**p, "mode": "file", "filename": filename}, data=xml,
                                cookies=cookies))[0] == "success"
    for _ in range(6):
        lines = _lines(requests.get(url, params={**p, "mode": "import", "filename": filename}, cookies=cookies))
        if lines[0] != "progress":
            return lines
    raise AssertionError("import never finished")


def _order_doc(xml_id: str, number: str, status: str, comment: str = "") -> str:
    return f"""<Документ><Ид>{xml_id}</Ид><Номер>{number}</Номер><Дата>2026-11-24</Дата>
<ХозОперация>Заказ товара</ХозОперация><Комментарий>{comment}</Комментарий><ЗначенияРеквизитов>
<ЗначениеРеквизита><Наименование>Статус заказа</Наименование><Значение>{status}</Значение></ЗначениеРеквизита>
</ЗначенияРеквизитов></Документ>"""


def _file(*docs: str, ns: bool = False) -> bytes:
    xmlns = ' xmlns="urn:1C.ru:commerceml_2"' if ns else ""
    return (f'<?xml version="1.0" encoding="windows-1251"?>\n<КоммерческаяИнформация{xmlns} ВерсияСхемы="2.08" '
            f'ДатаФормирования="2026-11-24T10:00:00">{"".join(docs)}</КоммерческаяИнформация>').encode("cp1251")


def _query(url: str) -> list:
    """The shop's export read with plain lxml (not syncd's reader): the Документ elements."""
    from lxml import etree

    cookies, sessid, _ = _login(url)
    r = requests.get(url, params={"type": "sale", "mode": "query", "sessid": sessid}, cookies=cookies)
    root = etree.fromstring(r.content)
    requests.get(url, params={"type": "sale", "mode": "success", "sessid": sessid}, cookies=cookies)
    return root.findall("Документ")


def _req(doc, name: str) -> str | None:
    for r in doc.iter("ЗначениеРеквизита"):
        if r.findtext("Наименование") == name:
            return r.findtext("Значение")
    return None


@pytest.fixture
def empty_shop() -> Iterator[dict]:
    h = start()
    base = h.url + "/_sandbox"
    requests.post(f"{base}/products", json={"xml_id": "mug", "name": "Кружка", "price": "490"})
    yield {"url": h.extra["exchange_url"], "base": h.url, "ctl": base, "state": h.extra["state"]}
    h.stop()


def test_an_order_placed_with_a_date_number_and_customer(empty_shop: dict) -> None:
    ctl, url = empty_shop["ctl"], empty_shop["url"]
    buyer = {"kind": "person", "last_name": "Петров", "first_name": "Иван", "email": "ivan@example.ru",
             "phone": "8 (495) 123-45-67"}
    r = requests.post(f"{ctl}/orders", json={"user": buyer, "items": [{"product_id": "mug", "quantity": 2}],
                                             "created": "2024-02-01T10:30:00", "number": "А-2024-17",
                                             "status": "F"})
    assert r.status_code == 201, r.text
    o = r.json()
    assert (o["number"], o["created"], o["updated_at"], o["status"]) == (
        "А-2024-17", "2024-02-01T10:30:00+03:00", "2024-02-01T10:30:00+03:00", "F")
    # the same customer typing the phone another way: the same buyer; a date without time is midnight
    o2 = requests.post(f"{ctl}/orders", json={"user": dict(buyer, email="", phone="+7 495 1234567"),
                                              "items": [{"product_id": "mug", "quantity": 1}],
                                              "created": "2024-01-15"}).json()
    assert o2["user_id"] == o["user_id"] and o2["created"] == "2024-01-15T00:00:00+03:00"
    assert o2["number"] == str(o2["id"])
    # every later listing answers (a dated order once made GET /orders answer 500)
    listed = requests.get(f"{ctl}/orders")
    assert listed.status_code == 200 and [x["number"] for x in listed.json()] == ["А-2024-17", o2["number"]]
    # bad input is a 400 naming the field, and places nothing; a taken number is a 409
    bad = requests.post(f"{ctl}/orders", json={"user_id": o["user_id"], "items": [{"product_id": "mug"}],
                                               "created": "01.02.2024"})
    assert bad.status_code == 400 and "created" in bad.json()["error"]
    assert requests.post(f"{ctl}/orders", json={"user_id": o["user_id"], "items": [{"product_id": "mug"}],
                                                "number": "А-2024-17"}).status_code == 409
    assert len(requests.get(f"{ctl}/orders").json()) == 2
    # the export carries the date, the number, the status and the change time of that day
    docs = {d.findtext("Номер"): d for d in _query(url)}
    d = docs["А-2024-17"]
    assert (d.findtext("Дата"), d.findtext("Время")) == ("2024-02-01", "10:30:00")
    assert _req(d, "Дата изменения") == "2024-02-01 10:30:00" and _req(d, "Статуса заказа ИД") == "F"


def test_a_rejection_refuses_one_orders_import_until_cleared(empty_shop: dict) -> None:
    ctl, url, st = empty_shop["ctl"], empty_shop["url"], empty_shop["state"]
    user = {"kind": "person", "last_name": "Петров", "email": "ivan@example.ru"}
    a = requests.post(f"{ctl}/orders", json={"user": user, "items": [{"product_id": "mug"}]}).json()
    b = requests.post(f"{ctl}/orders", json={"user": user, "items": [{"product_id": "mug"}]}).json()
    r = requests.post(f"{ctl}/rejections", json={"number": a["number"], "message": "Заказ заблокирован 1С"})
    assert r.status_code == 201 and r.json()["hits"] == 0
    rid = r.json()["id"]
    both = _file(_order_doc(a["xml_id"], a["number"], "[G] Готов к отгрузке"),
                 _order_doc(b["xml_id"], b["number"], "[G] Готов к отгрузке"))
    for _ in range(2):                                # permanent: refused again on a retry
        lines = _upload(url, both)
        assert lines[:2] == ["success", f"Импорт завершен с ошибками: Документ {a['xml_id']}: Заказ заблокирован 1С"]
    assert requests.get(f"{ctl}/orders/{a['id']}").json()["status"] == "N"        # not applied
    assert requests.get(f"{ctl}/orders/{b['id']}").json()["status"] == "G"        # the rest of the file was
    assert requests.get(f"{ctl}/rejections").json()[0]["hits"] == 2
    assert requests.get(f"{ctl}/imports").json()[-1]["refused"] == [a["xml_id"]]
    # cleared: the same upload goes through
    assert requests.delete(f"{ctl}/rejections/{rid}").json() == {"cleared": 1}
    assert requests.delete(f"{ctl}/rejections/{rid}").status_code == 404
    assert _upload(url, both)[:2] == ["success", "Импорт завершен"]
    assert st.orders[a["id"]].status == "G"
    # `times` and matching on a requisite and on counterparties
    requests.post(f"{ctl}/rejections", json={"kind": "any", "requisites": {"Статус заказа": "[F] Выполнен"},
                                             "times": 1})
    requests.post(f"{ctl}/rejections", json={"kind": "user", "email": "IVAN@example.ru", "message": "Профиль закрыт"})
    done = _file(_order_doc(a["xml_id"], a["number"], "[F] Выполнен"))
    assert "ошибками" in _upload(url, done)[1] and st.orders[a["id"]].status == "G"
    assert _upload(url, done)[1] == "Импорт завершен" and st.orders[a["id"]].status == "F"
    cp = ('<Контрагенты><Контрагент><Ид>x</Ид><Наименование>Петров Иван</Наименование><Фамилия>Петров</Фамилия>'
          '<Контакты><Контакт><Тип>Почта</Тип><Значение>ivan@example.ru</Значение></Контакт></Контакты>'
          '<АдресРегистрации><Представление>Москва</Представление></АдресРегистрации></Контрагент></Контрагенты>')
    assert _upload(url, _file(cp))[1] == "Импорт завершен с ошибками: Контрагент x: Профиль закрыт"
    assert st.users[a["user_id"]].address == ""
    assert requests.delete(f"{ctl}/rejections").json() == {"cleared": 2}
    assert _upload(url, _file(cp))[1] == "Импорт завершен" and st.users[a["user_id"]].address == "Москва"
    bad = requests.post(f"{ctl}/rejections", json={"kind": "deal"})
    assert bad.status_code == 400 and "kind" in bad.json()["error"]
    assert requests.post(f"{ctl}/rejections", json={"nope": 1}).status_code == 400


def test_the_clock_moves_and_orders_are_back_dated(empty_shop: dict) -> None:
    import datetime as dt

    ctl, url = empty_shop["ctl"], empty_shop["url"]
    before = dt.datetime.fromisoformat(requests.get(f"{ctl}/clock").json()["now"])
    moved = requests.patch(f"{ctl}/clock", json={"advance": 15 * 86400}).json()
    assert moved["offset"] == 15 * 86400
    assert dt.timedelta(days=15) <= dt.datetime.fromisoformat(moved["now"]) - before < dt.timedelta(days=15, minutes=1)
    o = requests.post(f"{ctl}/orders", json={"user": {"kind": "person", "last_name": "Орлова"},
                                             "items": [{"product_id": "mug"}]}).json()
    assert dt.datetime.fromisoformat(o["created"]) - before >= dt.timedelta(days=15)
    paid = requests.post(f"{ctl}/orders/{o['id']}/pay", json={}).json()
    assert paid["paid_at"][:10] == moved["now"][:10]
    (doc,) = _query(url)
    assert _req(doc, "Дата оплаты")[:10] == moved["now"][:10]
    at = requests.patch(f"{ctl}/clock", json={"now": "2024-03-01T09:00:00"}).json()
    assert at["now"] == "2024-03-01T09:00:00+03:00"
    assert requests.get(f"{ctl}/state").json()["clock"]["offset"] == at["offset"]
    assert requests.patch(f"{ctl}/clock", json={"offset": 0}).json()["offset"] == 0
    assert requests.patch(f"{ctl}/clock", json={"speed": 2}).status_code == 400
    # back-dating is a data fix: the order is not exported again
    r = requests.patch(f"{ctl}/orders/{o['id']}/dates", json={"created": "2024-01-10T12:00:00",
                                                               "updated_at": "2024-01-10T12:00:00", "paid_at": None})
    assert r.status_code == 200
    o = r.json()
    assert (o["created"], o["updated_at"], o["paid_at"]) == ("2024-01-10T12:00:00+03:00", "2024-01-10T12:00:00+03:00", None)
    assert _query(url) == []
    assert requests.patch(f"{ctl}/orders/{o['id']}/dates", json={"shipped": "2024-01-11"}).status_code == 400
    assert requests.patch(f"{ctl}/orders/{o['id']}/dates", json={"created": "вчера"}).status_code == 400


def test_uploads_are_read_by_the_sandboxs_own_parser(empty_shop: dict) -> None:
    """A namespaced file with a Контейнер, one document with a date that does not exist: that one is
    reported with its line, the rest applied; a file that is no CommerceML is a `failure`."""
    import syncd.sandbox.shop.xml as shop_xml

    assert "syncd.commerceml" not in open(shop_xml.__file__, encoding="utf-8").read()
    ctl, url, st = empty_shop["ctl"], empty_shop["url"], empty_shop["state"]
    o = requests.post(f"{ctl}/orders", json={"user": {"kind": "person", "last_name": "Орлова"},
                                             "items": [{"product_id": "mug"}]}).json()
    broken = _order_doc("new-1", "N-1", "[N] Принят").replace("2026-11-24", "2026-02-30")
    lines = _upload(url, _file("<Контейнер>" + _order_doc(o["xml_id"], o["number"], "[S] Отгружен", "ок")
                               + broken + "</Контейнер>", ns=True))
    assert lines[0] == "success" and "строка 5" in lines[1] and "2026-02-30" in lines[1] and "не дата" in lines[1]
    assert (st.orders[o["id"]].status, st.orders[o["id"]].comment) == ("S", "ок")
    assert st.find_order("new-1") is None
    assert _upload(url, b"<html>not xml")[0] == "failure"
    assert _upload(url, b'<?xml version="1.0"?><Other/>')[0] == "failure"
    dtd = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><КоммерческаяИнформация/>'.encode()
    assert _upload(url, dtd)[0] == "failure"
