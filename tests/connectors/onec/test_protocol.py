"""The exchange protocol as 1C sees it, over the network: exact answers, auth, limits, no loss."""

from __future__ import annotations

import socket
import time
import zipfile
from io import BytesIO

import httpx
import pytest
from onechelpers import LOGIN, PASSWORD, World, crm_deal, waiting

from connectors.onec import COOKIE, clean_filename
from connectors.onec.exchange import Refused
from syncd.errors import PermanentError
from syncd.sandbox.onec import OneCExchangeError

AUTH = (LOGIN, PASSWORD)


def _get(world: World, **params) -> httpx.Response:
    return httpx.get(world.url, params=params, auth=AUTH if params.get("mode") == "checkauth" else None)


def _session(world: World, typ: str = "sale") -> tuple[dict, dict]:
    r = httpx.get(world.url, params={"type": typ, "mode": "checkauth"}, auth=AUTH)
    lines = r.content.decode("cp1251").split("\n")
    assert lines[0] == "success", lines
    return {"Cookie": f"{lines[1]}={lines[2]}"}, {"sessid": lines[3].split("=", 1)[1]}


def _call(world: World, headers: dict, sessid: dict, typ: str, mode: str, body: bytes | None = None,
          **params) -> list[str]:
    p = {"type": typ, "mode": mode, **sessid, **params}
    if body is None:
        r = httpx.get(world.url, params=p, headers=headers)
    else:
        r = httpx.post(world.url, params=p, headers=headers, content=body)
    return r.content.decode(world.onec.settings.encoding).rstrip("\n").split("\n")


# -- answers ------------------------------------------------------------------------------------

def test_checkauth_and_init_answer_exactly_like_bitrix(world: World) -> None:
    r = _get(world, type="catalog", mode="checkauth")
    assert r.headers["content-type"] == "text/plain; charset=windows-1251"
    raw = r.content
    assert not raw.startswith(b"\xef\xbb\xbf") and b"<" not in raw and raw.endswith(b"\n")
    lines = raw.decode("cp1251").rstrip("\n").split("\n")
    assert lines[0] == "success" and lines[1] == COOKIE and len(lines[2]) == 32
    assert lines[3].startswith("sessid=") and lines[4].startswith("timestamp=")
    assert abs(int(lines[4].split("=")[1]) - time.time()) < 5
    # sale: no timestamp line
    # sale: no timestamp line (and the catalog session above, never used, does not stand in the way)
    sale = _get(world, type="sale", mode="checkauth").content.decode("cp1251").rstrip("\n").split("\n")
    assert len(sale) == 4 and sale[0] == "success"
    h = {"Cookie": f"{sale[1]}={sale[2]}"}
    # init without version: two lines; with version: + sessid= and version=
    assert _call(world, h, {}, "sale", "init") == ["zip=yes", f"file_limit={world.onec.settings.file_limit}"]
    lines = _call(world, h, {}, "sale", "init", version="2.10")
    assert lines[:2] == ["zip=yes", f"file_limit={world.onec.settings.file_limit}"]
    assert lines[2] == sale[3] and lines[3] == "version=2.08"


def test_wrong_password_missing_cookie_and_expired_session_fail(world_factory) -> None:
    world = world_factory(session_ttl=0.5)
    r = httpx.get(world.url, params={"type": "sale", "mode": "checkauth"}, auth=(LOGIN, "wrong"))
    assert r.content.decode("cp1251").split("\n")[0] == "failure"
    with pytest.raises(OneCExchangeError) as e:
        world.client(password="wrong").run_cycle()
    assert e.value.status == "failure" and e.value.mode == "checkauth"
    # every other mode needs the cookie
    assert _call(world, {}, {}, "sale", "init")[0] == "failure"
    assert _call(world, {"Cookie": f"{COOKIE}=forged"}, {}, "sale", "query")[0] == "failure"
    assert _call(world, {"Cookie": f"{COOKIE}=forged"}, {}, "sale", "success")[0] == "error"   # as Bitrix
    h, s = _session(world)
    assert _call(world, h, s, "sale", "init")[0] == "zip=yes"
    time.sleep(0.7)
    lines = _call(world, h, s, "sale", "query")
    assert lines[0] == "failure" and "сессия истекла" in lines[1]


def test_sessid_ratchet_and_unknown_modes(world: World) -> None:
    h, s = _session(world)
    assert _call(world, h, {}, "sale", "init")[0] == "zip=yes"          # no sessid yet: allowed
    assert _call(world, h, s, "sale", "init")[0] == "zip=yes"
    lines = _call(world, h, {}, "sale", "init")                          # once given, required
    assert lines[0] == "failure" and "sessid" in lines[1]
    assert _call(world, h, {"sessid": "0" * 32}, "sale", "init")[0] == "failure"
    assert _call(world, h, s, "sale", "deactivate")[0] == "failure"     # a catalog mode
    assert _call(world, h, s, "sale", "nonsense") == ["failure", "неизвестная команда 'nonsense'"]
    assert _call(world, h, s, "stock", "init")[0] == "failure"
    r = httpx.get(world.url, params={"type": "sale", "mode": "info", **s}, headers=h)
    assert r.headers["content-type"] == "application/xml; charset=windows-1251"
    assert "Принят".encode("cp1251") in r.content


def test_catalog_deactivate_needs_timestamp_and_complete_ends(world: World) -> None:
    h, s = _session(world, "catalog")
    assert _call(world, h, s, "catalog", "init")[0] == "zip=yes"
    assert _call(world, h, s, "catalog", "deactivate")[0] == "failure"
    assert _call(world, h, s, "catalog", "deactivate", timestamp=str(int(time.time())))[0] == "success"
    assert _call(world, h, s, "catalog", "complete")[0] == "success"
    _session(world)                      # the finished exchange does not hold the endpoint


# -- safety ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..\\..\\boot.ini", "a/../../b.xml",
                                  "C:\\Windows\\x.xml", "import_files/../../../x.xml", "shell.php",
                                  "x.phtml", ".htaccess", "nul\x00.xml", ""])
def test_traversal_and_script_names_are_refused(world: World, name: str) -> None:
    h, s = _session(world)
    _call(world, h, s, "sale", "init", version="2.08")
    lines = _call(world, h, s, "sale", "file", body=b"<x/>", filename=name)
    assert lines[0] == "failure" and len(lines) == 2
    assert not any((world.tmp / "etc").exists() for _ in [0])
    assert not list(world.tmp.glob("**/passwd"))


def test_bitrix_prefixes_are_stripped() -> None:
    assert clean_filename("/tmp/v8_1A2B/orders.xml") == "v8_1A2B/orders.xml"
    assert clean_filename("tmp/orders.xml") == "orders.xml"
    assert clean_filename("upload/1c/webdata/import_files/ab/abcd.jpg") == "import_files/ab/abcd.jpg"
    assert clean_filename("./import.xml") == "import.xml"
    with pytest.raises(Refused):
        clean_filename("/tmp/../etc/passwd")


def test_oversized_upload_and_too_many_files_fail(world_factory) -> None:
    world = world_factory(max_upload=4096, max_files=2)
    h, s = _session(world)
    _call(world, h, s, "sale", "init", version="2.08")
    lines = _call(world, h, s, "sale", "file", body=b"x" * 5000, filename="big.xml")
    assert lines[0] == "failure" and "больше допустимого" in lines[1]
    assert _call(world, h, s, "sale", "file", body=b"x" * 3000, filename="a.xml") == ["success"]
    lines = _call(world, h, s, "sale", "file", body=b"y" * 2000, filename="a.xml")   # total over 4096
    assert lines[0] == "failure" and "за один обмен" in lines[1] and "4096 байт" in lines[1]
    assert _call(world, h, s, "sale", "import", filename="a.xml")[0] == "failure"   # dropped with the error
    assert _call(world, h, s, "sale", "file", body=b"1", filename="b.xml") == ["success"]
    assert _call(world, h, s, "sale", "file", body=b"2", filename="c.xml") == ["success"]
    lines = _call(world, h, s, "sale", "file", body=b"3", filename="d.xml")
    assert lines[0] == "failure" and "не более 2 файлов" in lines[1]


def test_zip_bomb_and_zip_traversal_fail_at_import(world: World) -> None:
    h, s = _session(world)
    _call(world, h, s, "sale", "init", version="2.08")
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("../../evil.xml", "<x/>")
    assert _call(world, h, s, "sale", "file", body=buf.getvalue(), filename="a.zip") == ["success"]
    lines = _call(world, h, s, "sale", "import", filename="a.zip")
    assert lines[0] == "failure" and "escapes" in lines[1]
    assert not (world.tmp / "evil.xml").exists()


# -- no loss, no duplicates ---------------------------------------------------------------------------

def test_unacknowledged_query_is_served_again_acknowledged_never(world_factory) -> None:
    world = world_factory(lock_timeout=0.3)
    crm_deal(world)
    world.sync()
    c = world.client()
    c.checkauth("sale")
    c.init("sale")
    assert c.query() == 1                   # 1C dies before `success`
    time.sleep(0.4)
    c2 = world.client()
    c2.checkauth("sale")
    c2.init("sale")
    assert c2.query() == 1                  # served again
    # a change made after the query is not swallowed by its `success`
    world.crm.edit("order", "deal-D-1001", total="6000.00")
    world.sync()
    c2._call("sale", "success")
    assert waiting(world) == {"order": 1}
    out = c2.run_cycle()
    assert out["received"] == 1 and c2.db.order("D-1001").total == 6000
    assert c2.run_cycle()["received"] == 0  # acknowledged: never again


def test_nothing_is_pushed_to_1c_it_downloads_its_writes(world: World) -> None:
    from syncd.connector import WriteOp, traits

    assert traits(world.onec).delivery == "download"
    op = WriteOp("op-1", "onec", "order", "create", "order", "e1", None, {"Номер": "42"}, "syncd-e1")
    with pytest.raises(PermanentError, match="mode=query"):
        world.onec.write(op)


def _drop_mid_chunk(world: World, headers: dict, sessid: str, name: str, data: bytes) -> None:
    """Send a `mode=file` request whose body stops half-way, then close the socket."""
    host, port = world.server.host, world.server.port
    path = world.onec.settings.path + f"?type=sale&mode=file&filename={name}&sessid={sessid}"
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: {headers['Cookie']}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n").encode()
    with socket.create_connection((host, port)) as sock:
        sock.sendall(head + data[: len(data) // 2])
        time.sleep(0.2)


def test_crash_mid_upload_then_restart_resumes_cleanly(world_factory) -> None:
    world = world_factory(file_limit=1024, import_step=1)
    crm_deal(world)
    world.sync()
    c = world.client(use_zip=False)
    c.run_cycle()
    c.pay("D-1001", "5880.00")
    c.ship("D-1001", "РН-7")
    body = c._orders_xml([c.db.order("D-1001")], list(c._linked), [])
    c.checkauth("sale")
    c.init("sale")
    chunks = [body[i:i + 1024] for i in range(0, len(body), 1024)]
    assert len(chunks) >= 2
    c.upload_chunk("sale", "orders.xml", chunks[0])
    _drop_mid_chunk(world, c._headers(), c._sessid, c.temp_prefix + "orders.xml", chunks[1])
    world.start()                                       # the daemon restarts on the same store and spool
    c.url = world.url
    for ch in chunks[1:]:                               # 1C goes on in the same session
        assert c.upload_chunk("sale", "orders.xml", ch) == ["success"]
    first = c._call("sale", "import", filename=c.temp_prefix + "orders.xml", _ok=("progress", "success"))
    assert first[0] == "progress"                       # step-wise
    world.start()                                       # and again in the middle of the import
    c.url = world.url
    assert c.import_file("sale", "orders.xml")[0] == "success"
    eid = world.store.find_entity("crm", "order", "deal-D-1001")
    f = world.store.entity(eid)["fields"]
    assert f["order.paid"] is True and f["order.shipment_number"] == "РН-7"
    assert world.store.list_quarantine() == []          # the file was whole: nothing was appended twice


def test_repeated_chunk_is_not_appended_twice(world: World) -> None:
    h, s = _session(world)
    _call(world, h, s, "sale", "init", version="2.08")
    body = ('<?xml version="1.0" encoding="UTF-8"?><КоммерческаяИнформация ВерсияСхемы="2.08">'
            '<Контрагенты><Контрагент><Ид>x1</Ид><Наименование>Иванов Иван</Наименование></Контрагент>'
            '</Контрагенты></КоммерческаяИнформация>').encode()
    half = len(body) // 2
    assert _call(world, h, s, "sale", "file", body=body[:half], filename="o.xml") == ["success"]
    assert _call(world, h, s, "sale", "file", body=body[:half], filename="o.xml") == ["success"]  # lost answer
    assert _call(world, h, s, "sale", "file", body=body[half:], filename="o.xml") == ["success"]
    lines = _call(world, h, s, "sale", "import", filename="o.xml")
    assert lines[0] == "success"
    assert world.store.list_review()[0]["external_id"] == "x1"     # parsed whole; a person born in 1C


def test_bad_documents_are_quarantined_with_lines_the_rest_goes_on(world: World) -> None:
    crm_deal(world)
    world.sync()
    c = world.client()
    c.run_cycle()
    order = c.db.order("D-1001")
    xml = f"""<?xml version="1.0" encoding="windows-1251"?>
<КоммерческаяИнформация ВерсияСхемы="2.08" ДатаФормирования="2026-11-24T10:15:00">
 <Документ>
  <Ид>bad-1</Ид><Номер>77</Номер><Дата>2026-11-24</Дата><ХозОперация>Заказ товара</ХозОперация>
  <Сумма>двести</Сумма>
 </Документ>
 <Документ>
  <Ид>{order.id}</Ид><Номер>{order.number}</Номер><Дата>2026-11-24</Дата><ХозОперация>Заказ товара</ХозОперация>
  <Сумма>5880.00</Сумма>
  <ЗначенияРеквизитов><ЗначениеРеквизита><Наименование>Проведен</Наименование><Значение>true</Значение></ЗначениеРеквизита></ЗначенияРеквизитов>
 </Документ>
 <Документ>
  <Ид>pay-1</Ид><Номер>П-1</Номер><Дата>2026-11-24</Дата><ХозОперация>Выплата безналичных денег</ХозОперация>
  <Основание>НЕТ-ТАКОГО</Основание><Сумма>1.00</Сумма>
 </Документ>
</КоммерческаяИнформация>""".encode("cp1251")
    c.checkauth("sale")
    c.init("sale")
    c.upload_chunk("sale", "orders.xml", xml)
    # the good document is taken in; 1C is told the file was not taken in whole, with the reasons
    with pytest.raises(OneCExchangeError) as e:
        c.import_file("sale", "orders.xml")
    assert e.value.status == "failure" and "не приняты записи: 2 из 3" in e.value.reason
    assert "line 5" in e.value.reason and "НЕТ-ТАКОГО" in e.value.reason
    q = world.store.list_quarantine()
    bad = next(x for x in q if x["external_id"] == "bad-1")
    assert bad["reason"].startswith("line 5: ") and "Сумма" in bad["reason"]
    assert any("НЕТ-ТАКОГО" in x["reason"] for x in q)
    eid = world.store.find_entity("crm", "order", "deal-D-1001")
    assert world.store.entity(eid)["fields"]["order.posted"] is True


def test_utf8_endpoint_answers_utf8_and_query_has_bom(world_factory) -> None:
    world = world_factory(encoding="utf-8")
    crm_deal(world)
    world.sync()
    c = world.client(encoding="utf-8", bom=True)
    c.checkauth("sale")
    c.init("sale")
    r = httpx.get(world.url, params=c._params("sale", "query"), headers=c._headers())
    assert r.headers["content-type"] == "application/xml; charset=utf-8"
    assert r.content.startswith(b"\xef\xbb\xbf<?xml") and "Ромашка".encode() in r.content
    assert c.query() == 1


def test_old_sale_protocol_imports_the_posted_file_at_once(world: World) -> None:
    h, s = _session(world)
    assert _call(world, h, s, "sale", "init") == ["zip=yes", f"file_limit={world.onec.settings.file_limit}"]
    body = ('<?xml version="1.0" encoding="windows-1251"?><КоммерческаяИнформация ВерсияСхемы="2.03">'
            '<Контрагенты><Контрагент><Ид>old-1</Ид><Наименование>Петров Пётр</Наименование></Контрагент>'
            '</Контрагенты></КоммерческаяИнформация>').encode("cp1251")
    lines = _call(world, h, s, "sale", "file", body=body, filename="orders.xml")
    assert lines == ["success", "принято записей: 1"]
    assert world.store.list_review()[0]["external_id"] == "old-1"


def test_crash_mid_upload_then_a_fresh_exchange_starts_clean(world_factory) -> None:
    world = world_factory(file_limit=1024, lock_timeout=0.3)
    crm_deal(world)
    world.sync()
    c = world.client(use_zip=False)
    c.run_cycle()
    c.pay("D-1001", "5880.00")
    body = c._orders_xml([c.db.order("D-1001")], list(c._linked), [])
    c.checkauth("sale")
    c.init("sale")
    c.upload_chunk("sale", "orders.xml", body[:1024])
    _drop_mid_chunk(world, c._headers(), c._sessid, c.temp_prefix + "orders.xml", body[1024:2048])
    world.start()                                   # daemon restart; 1C gives that exchange up
    c.url = world.url
    time.sleep(0.4)
    out = c.run_cycle()                             # the next scheduled exchange: checkauth, init (cleans)…
    assert out["import"][0] == "success" and out["uploaded"] == 2
    eid = world.store.find_entity("crm", "order", "deal-D-1001")
    assert world.store.entity(eid)["fields"]["order.paid"] is True
    assert world.store.list_quarantine() == []
    spool = world.tmp / "spool"
    assert len([p for p in spool.iterdir() if p.is_dir()]) == 1     # the broken exchange's folder is gone
    assert not list(spool.glob("**/orders.xml"))


# -- acks never ahead of the data (core issue, defect 6) ------------------------------------------

def _upload_and_import(world: World, data: bytes, name: str = "orders.xml") -> list[str]:
    h, s = _session(world)
    _call(world, h, s, "sale", "init", version="2.08")
    assert _call(world, h, s, "sale", "file", body=data, filename=name)[0] == "success"
    while True:
        lines = _call(world, h, s, "sale", "import", filename=name)
        if lines[0] != "progress":
            return lines


def test_an_unreadable_upload_is_answered_failure_with_the_reason(world: World) -> None:
    data = ('<?xml version="1.0" encoding="UTF-8"?>\n<КоммерческаяИнформация ВерсияСхемы="2.08">\n'
            '<Документ><Ид>x1</Ид><Номер>1</Номер>\n<Сумма>10</Сумма></Док').encode()
    lines = _upload_and_import(world, data)
    assert lines[0] == "failure", lines
    assert "orders.xml" in lines[1] and "line" in lines[1]


def test_a_record_that_cannot_be_processed_makes_the_answer_failure(world: World) -> None:
    from onechelpers import requisites

    r = requisites(3)
    c = world.client()
    # a counterparty with an ИНН that fails its checksum, typed into 1C
    c.new_counterparty('ООО "Опечатка"', inn=r["inn"][:-1] + str((int(r["inn"][-1]) + 1) % 10), kpp=r["kpp"])
    with pytest.raises(OneCExchangeError) as e:
        c.run_cycle()
    assert e.value.status == "failure" and "не приняты записи: 1 из 1" in e.value.reason
    (q,) = world.store.list_quarantine()
    assert q["system"] == "onec" and "ИНН" in q["reason"]
    assert q["reason"] in e.value.reason            # 1C's user reads why


def test_the_exchange_url_opened_in_a_browser_says_what_it_is_and_shows_no_secret(world: World) -> None:
    """Issue 22 #14: a person opening the printed 1C URL saw `failure`; 1C always sends type and mode."""
    r = httpx.get(world.url, headers={"Accept": "text/html"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "Адрес обмена 1С с syncd" in r.text and world.url.split("?")[0] in r.text
    assert PASSWORD not in r.text and "failure" not in r.text
    # 1C's own requests are answered as before, a command without its type too
    assert _get(world, mode="init").content.decode("cp1251").startswith("failure")
    assert _get(world, type="sale", mode="checkauth").content.decode("cp1251").startswith("success")
