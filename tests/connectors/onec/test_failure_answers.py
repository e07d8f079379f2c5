"""What 1C is told when a file cannot be taken in: `failure` and a reason its user can read, in
the encoding and line format 1C parses — on every path (zip, old sale protocol, catalog)."""

from __future__ import annotations

import io
import zipfile

import httpx
import pytest
from onechelpers import LOGIN, PASSWORD, World, crm_deal, requisites

from syncd.sandbox.onec import OneCExchangeError


def _session(world: World, typ: str = "sale", version: str | None = "2.08") -> tuple[dict, dict]:
    lines = httpx.get(world.url, params={"type": typ, "mode": "checkauth"},
                      auth=(LOGIN, PASSWORD)).content.decode("cp1251").split("\n")
    h, s = {"Cookie": f"{lines[1]}={lines[2]}"}, {"sessid": lines[3].split("=", 1)[1]}
    httpx.get(world.url, params={"type": typ, "mode": "init", **s, **({"version": version} if version else {})},
              headers=h)
    return h, s


def _raw(world: World, h: dict, s: dict, typ: str, mode: str, body: bytes | None = None, **params) -> httpx.Response:
    p = {"type": typ, "mode": mode, **s, **params}
    if body is None:
        return httpx.get(world.url, params=p, headers=h)
    return httpx.post(world.url, params=p, headers=h, content=body)


def _failure(r: httpx.Response, encoding: str = "windows-1251") -> str:
    """The reason of a `failure` answer, checking the answer is exactly what 1C parses."""
    assert r.status_code == 200
    assert r.headers["content-type"] == f"text/plain; charset={encoding}"
    raw = r.content
    assert not raw.startswith(b"\xef\xbb\xbf") and raw.endswith(b"\n") and b"\r" not in raw
    lines = raw.decode(encoding).rstrip("\n").split("\n")
    assert len(lines) == 2 and lines[0] == "failure" and lines[1].strip(), lines
    return lines[1]


def _import(world: World, h: dict, s: dict, name: str, typ: str = "sale") -> httpx.Response:
    for _ in range(1000):
        r = _raw(world, h, s, typ, "import", filename=name)
        if not r.content.startswith(b"progress"):
            return r
    raise AssertionError("import never ended")


def _orders_zip(n: int = 1) -> bytes:
    xml = ('<?xml version="1.0" encoding="UTF-8"?><КоммерческаяИнформация ВерсияСхемы="2.08">'
           + "".join(f"<Контрагенты><Контрагент><Ид>z{i}</Ид><Наименование>Иванов Иван {i}</Наименование>"
                     "</Контрагент></Контрагенты>" for i in range(n))
           + "</КоммерческаяИнформация>").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("orders.xml", xml)
    return buf.getvalue()


# -- zip ------------------------------------------------------------------------------------------

def test_a_truncated_zip_is_answered_failure_each_time_it_is_imported(world: World) -> None:
    h, s = _session(world)
    data = _orders_zip(50)
    assert _raw(world, h, s, "sale", "file", data[: len(data) // 2], filename="a.zip").content == b"success\n"
    reason = _failure(_import(world, h, s, "a.zip"))
    assert reason.startswith("архив a.zip не распакован: ")
    assert _failure(_import(world, h, s, "a.zip")) == reason           # 1C repeats: the same answer
    assert _failure(_import(world, h, s, "orders.xml")) == reason       # a member of it, as catalog asks
    assert world.store.list_review() == []                              # nothing half-read was taken in


def test_a_zip_with_corrupt_data_or_no_xml_says_why(world: World) -> None:
    data = bytearray(_orders_zip(200))
    mid = len(data) // 3
    data[mid:mid + 40] = bytes(40)                       # the deflate stream is broken, headers intact
    h, s = _session(world)
    _raw(world, h, s, "sale", "file", bytes(data), filename="b.zip")
    reason = _failure(_import(world, h, s, "b.zip"))
    assert "b.zip" in reason and "внутренняя ошибка" not in reason
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "нет заказов")
    h, s = _session(world)
    _raw(world, h, s, "sale", "file", buf.getvalue(), filename="c.zip")
    assert "нет XML" in _failure(_import(world, h, s, "c.zip"))


# -- the old sale protocol (no version at init) ---------------------------------------------------

@pytest.mark.parametrize("use_zip", [False, True])
def test_old_protocol_chunked_upload_is_imported_at_its_last_chunk(world_factory, use_zip: bool) -> None:
    world = world_factory(file_limit=1024)
    for i in range(8):
        crm_deal(world, number=f"D-{i}", seed=i + 1)
    world.sync()
    c = world.client(send_version=False, use_zip=use_zip)
    assert c.run_cycle()["received"] == 8
    for i in range(8):
        c.pay(f"D-{i}")
    out = c.run_cycle()
    files = [line for t, m, line in c.log if (t, m) == ("sale", "file")]
    assert len(files) >= 2 and all(x == "success" for x in files)
    assert out["import"][0] == "success" and out["import"][1].startswith("принято записей: ")
    assert not any(m == "import" for _, m, _ in c.log)
    for i in range(8):
        eid = world.store.find_entity("crm", "order", f"deal-D-{i}")
        assert world.store.entity(eid)["fields"]["order.paid"] is True
    assert world.store.list_quarantine() == []


def test_old_protocol_answers_failure_with_the_reason_at_mode_file(world: World) -> None:
    r = requisites(5)
    c = world.client(send_version=False)
    c.new_counterparty('ООО "Опечатка"', inn=r["inn"][:-1] + str((int(r["inn"][-1]) + 1) % 10), kpp=r["kpp"])
    with pytest.raises(OneCExchangeError) as e:
        c.run_cycle()
    assert e.value.mode == "file" and e.value.status == "failure"
    assert "не приняты записи: 1 из 1" in e.value.reason and "ИНН" in e.value.reason


def test_old_protocol_unreadable_file_is_answered_failure(world: World) -> None:
    h, s = _session(world, version=None)
    r = _raw(world, h, s, "sale", "file", b'<?xml version="1.0"?>\n<x>\n<y></x>', filename="o.xml")
    reason = _failure(r)
    assert "o.xml" in reason and "line" in reason


# -- catalog --------------------------------------------------------------------------------------

OFFERS_BAD = """<?xml version="1.0" encoding="windows-1251"?>
<КоммерческаяИнформация ВерсияСхемы="2.08">
<ПакетПредложений СодержитТолькоИзменения="true"><Ид>p1</Ид><Наименование>Пакет</Наименование>
<Предложения>
<Предложение><Ид>g-1</Ид><Наименование>Кружка</Наименование><Количество>5</Количество></Предложение>
<Предложение><Ид>g-2</Ид><Наименование>Тарелка</Наименование><Количество>много</Количество></Предложение>
</Предложения></ПакетПредложений></КоммерческаяИнформация>""".encode("cp1251")


def test_catalog_import_with_a_bad_offer_is_answered_failure_with_the_line(world: World) -> None:
    h, s = _session(world, "catalog")
    _raw(world, h, s, "catalog", "file", OFFERS_BAD, filename="offers.xml")
    reason = _failure(_import(world, h, s, "offers.xml", "catalog"))
    assert reason.startswith("не приняты записи: 1 из 2") and "line 6" in reason
    (q,) = world.store.list_quarantine()
    assert q["external_id"] == "g-2"


def test_catalog_import_of_a_truncated_file_is_answered_failure(world: World) -> None:
    h, s = _session(world, "catalog")
    _raw(world, h, s, "catalog", "file", OFFERS_BAD[: len(OFFERS_BAD) - 60], filename="offers.xml")
    reason = _failure(_import(world, h, s, "offers.xml", "catalog"))
    assert reason.startswith("файл не прочитан до конца: offers.xml")


def test_a_file_never_uploaded_and_the_utf8_endpoint(world_factory) -> None:
    world = world_factory(encoding="utf-8")
    h, s = _session(world)
    reason = _failure(_import(world, h, s, "nothing.xml"), "utf-8")
    assert reason == "файл nothing.xml не загружался в этом обмене"


ORDERS_NO_ID = """<?xml version="1.0" encoding="windows-1251"?>
<КоммерческаяИнформация ВерсияСхемы="2.08">
<Документ><Ид>doc-ok</Ид><Номер>101</Номер><Дата>2026-11-24</Дата><ХозОперация>Заказ товара</ХозОперация>
<Роль>Продавец</Роль><Валюта>руб</Валюта><Курс>1</Курс><Сумма>100.00</Сумма></Документ>
<Документ><Номер>102</Номер><Дата>2026-11-24</Дата><ХозОперация>Заказ товара</ХозОперация>
<Роль>Продавец</Роль><Валюта>руб</Валюта><Курс>1</Курс><Сумма>200.00</Сумма></Документ>
</КоммерческаяИнформация>""".encode("cp1251")


def test_a_document_without_an_id_is_quarantined_whole_and_1c_is_told(world: World) -> None:
    """Issue 20: a <Документ> without <Ид> was answered `success` and dropped. It goes to
    quarantine with its raw form, 1C gets `failure` naming it, the other document is taken in."""
    h, s = _session(world)
    _raw(world, h, s, "sale", "file", ORDERS_NO_ID, filename="orders.xml")
    reason = _failure(_import(world, h, s, "orders.xml"))
    assert reason.startswith("не приняты записи: 1 из 2"), reason
    (q,) = world.store.list_quarantine()
    assert q["external_id"] is None and "<Номер>102</Номер>" in q["raw"] and "Ид" in q["reason"]
    assert world.store.find_entity("onec", "order", "doc-ok") is not None or \
        world.store.count("entities", type="order") == 1
    # a file holding nothing but such a document (the batch has no id to look up at all)
    a, b = ORDERS_NO_ID.index("<Документ><Ид>doc-ok".encode("cp1251")), \
        ORDERS_NO_ID.index("<Документ><Номер>102".encode("cp1251"))
    only = ORDERS_NO_ID[:a] + ORDERS_NO_ID[b:]
    _raw(world, h, s, "sale", "file", only, filename="orders2.xml")
    reason = _failure(_import(world, h, s, "orders2.xml"))
    assert reason.startswith("не приняты записи: 1 из 1"), reason
    assert len(world.store.list_quarantine()) == 2


def test_1c_resending_a_partly_refused_file_takes_nothing_in_twice(world: World) -> None:
    """Issue 22 #13: a file with one bad document is answered `failure` (1C shows the reason to the
    accountant) while the good documents are taken in; 1C then sends the same file again at its next
    exchange. The good documents are not taken in twice, nothing new is planned, and the answer is
    the same `failure` naming the same record."""
    from sqlalchemy import func, select

    from syncd.store import tables as t

    def state() -> tuple[int, int, int]:
        with world.store.read() as c:
            return (c.execute(select(func.count()).select_from(t.entities).where(t.entities.c.type == "order")).scalar(),
                    c.execute(select(func.count()).select_from(t.outbox)).scalar(),
                    c.execute(select(func.count()).select_from(t.changelog)).scalar())

    h, s = _session(world)
    _raw(world, h, s, "sale", "file", ORDERS_NO_ID, filename="orders.xml")
    first = _failure(_import(world, h, s, "orders.xml"))
    before = state()
    h, s = _session(world)                               # the next exchange: the same file again
    _raw(world, h, s, "sale", "file", ORDERS_NO_ID, filename="orders.xml")
    again = _failure(_import(world, h, s, "orders.xml"))
    assert again == first and again.startswith("не приняты записи: 1 из 2"), (first, again)
    assert state() == before, "the resent file was taken in again"
