"""Several 1C clients at once, over HTTP: per-session sessid, the upload lock, the alias path,
sessions kept in the store (a restart, a second instance), and clients that speak like older 1C."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from onechelpers import LOGIN, PASSWORD, Ctx, World, crm_deal, waiting

from connectors.onec import OneCSettings
from connectors.onec.sessions import Sessions, session_key
from syncd.sandbox.onec import OneCClient, OneCExchangeError

SECOND, SECOND_PW = "бухгалтерия-2", "пароль-второй"


def _paid(world: World, number: str) -> bool:
    eid = world.store.find_entity("crm", "order", f"deal-{number}")
    return world.store.entity(eid)["fields"].get("order.paid") is True


def _upload(c: OneCClient, zip_ok: bool, limit: int, name: str | None = None) -> list[str]:
    """1C's upload phase on its open session: its changed orders, step-wise or old-protocol."""
    orders = [c.db.orders[i] for i in c._changed_orders]
    body = c._orders_xml(orders, list(c._linked), [])
    name = name or f"orders-{uuid.uuid4().hex[:8]}.xml"
    last = c._upload("sale", {name: body}, zip_ok, limit)
    answer = c.import_file("sale", name) if c.send_version else last
    c._changed_orders.clear()
    c._linked.clear()
    return answer


def _chunks(c: OneCClient, number: str, size: int = 1024) -> list[bytes]:
    body = c._orders_xml([c.db.order(number)], list(c._linked), [])
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    assert len(chunks) >= 2
    return chunks


def _lines(r: httpx.Response) -> list[str]:
    return r.content.decode("cp1251").rstrip("\n").split("\n")


EMPTY = '<?xml version="1.0" encoding="UTF-8"?><КоммерческаяИнформация ВерсияСхемы="2.08"/>'.encode()


# -- sessid is per session --------------------------------------------------------------------------

def test_sessid_and_no_sessid_clients_interleaved(world_factory) -> None:
    world = world_factory(file_limit=1024)
    crm_deal(world)
    world.sync()
    a = world.client()                                   # a current 1C: sessid, version, zip
    # an older configuration: no version at init (old sale protocol), no sessid, cp1251 auth
    b = world.client(send_sessid=False, send_version=False, auth_encoding="cp1251", use_zip=False)
    b_urls: list[str] = []
    b.http.event_hooks["request"].append(lambda req: b_urls.append(str(req.url)))
    a.checkauth("sale")
    b.checkauth("sale")
    za, la = a.init("sale")
    zb, lb = b.init("sale")
    assert a.query() == 1
    a._call("sale", "success")
    crm_deal(world, number="D-2002", seed=2)
    world.sync()
    assert b.query() == 1                                # after A sent sessid, B still needs none
    b._call("sale", "success")
    assert waiting(world) == {}
    a.pay("D-1001")
    b.pay("D-2002")
    assert _upload(a, za, la)[0] == "success"
    answer = _upload(b, zb, lb)                          # old protocol: imported at its last chunk
    assert answer[0] == "success" and answer[1].startswith("принято записей")
    assert sum(1 for t, m, _ in b.log if m == "file") >= 2 and not any(m == "import" for _, m, _ in b.log)
    assert _paid(world, "D-1001") and _paid(world, "D-2002")
    assert b_urls and not any("sessid=" in u for u in b_urls)
    # A's session sent sessid: a call in it without sessid is not A's; B's never needs it
    lines = _lines(httpx.get(world.url, params={"type": "sale", "mode": "init"}, headers=a._headers()))
    assert lines[0] == "failure" and "sessid" in lines[1]
    assert _lines(httpx.get(world.url, params={"type": "sale", "mode": "init"}, headers=b._headers()))[0] == "zip=yes"
    # and a whole new client without sessid after all that
    assert world.client(send_sessid=False).run_cycle()["received"] == 0
    assert world.store.list_quarantine() == []


def test_cp1251_basic_auth_and_a_second_login(world_factory) -> None:
    world = world_factory(users={SECOND: SECOND_PW})
    for kw in ({}, {"auth_encoding": "cp1251"}, {"login": SECOND, "password": SECOND_PW},
               {"login": SECOND, "password": SECOND_PW, "auth_encoding": "cp1251"}):
        assert world.client(**kw).checkauth("sale")[0] == "success"
    with pytest.raises(OneCExchangeError) as e:
        world.client(login=SECOND, password=PASSWORD).checkauth("sale")     # not each other's password
    assert e.value.reason == "неверный логин или пароль"


# -- the upload lock --------------------------------------------------------------------------------

def test_a_probe_checkauth_never_locks_1c_out(world: World) -> None:
    crm_deal(world)
    world.sync()
    c = world.client()
    c.run_cycle()
    c.pay("D-1001")

    def probe() -> None:
        assert _lines(httpx.get(world.url, params={"type": "sale", "mode": "checkauth"},
                                auth=(LOGIN, PASSWORD)))[0] == "success"

    for _ in range(3):
        probe()
    page = httpx.get(world.url)                                               # a browser opens the URL
    assert page.headers["content-type"].startswith("text/html") and "Адрес обмена 1С" in page.text
    assert _lines(httpx.get(world.url, params={"type": "sale", "mode": "checkauth"}))[0] == "failure"
    c.checkauth("sale")
    c.init("sale")
    chunks = _chunks(c, "D-1001")
    c.upload_chunk("sale", "o.xml", chunks[0])
    probe()                                               # between 1C's chunks: 1C goes on
    for ch in chunks[1:]:
        assert c.upload_chunk("sale", "o.xml", ch) == ["success"]
    probe()
    assert c.import_file("sale", "o.xml")[0] == "success"
    assert _paid(world, "D-1001")
    c._changed_orders.clear()
    c._linked.clear()
    probe()
    assert c.run_cycle()["received"] == 0                  # and the next cycle right after a probe


def test_a_stale_lock_of_the_same_login_is_taken_over_another_logins_is_not(world_factory) -> None:
    world = world_factory(file_limit=1024, users={SECOND: SECOND_PW})
    crm_deal(world)
    world.sync()
    seed = world.client()
    seed.run_cycle()
    seed.pay("D-1001")
    chunks = _chunks(seed, "D-1001")
    a = world.client()
    a.checkauth("sale")
    a.init("sale")
    assert a.upload_chunk("sale", "o.xml", chunks[0]) == ["success"]      # holds the lock; then 1C dies
    other = world.client(login=SECOND, password=SECOND_PW)
    other.checkauth("sale")
    other.init("sale")                                    # checkauth and init never wait for the lock
    with pytest.raises(OneCExchangeError) as e:
        other.upload_chunk("sale", "x.xml", EMPTY)
    assert e.value.status == "failure" and "идёт другой обмен с 1С" in e.value.reason and LOGIN in e.value.reason
    b = world.client()                                    # the same 1C starts its exchange anew
    b.checkauth("sale")
    b.init("sale")
    for ch in chunks:
        assert b.upload_chunk("sale", "o.xml", ch) == ["success"]           # taken over at once
    assert b.import_file("sale", "o.xml")[0] == "success"
    assert _paid(world, "D-1001")
    with pytest.raises(OneCExchangeError) as e:           # the old session learns its exchange is over
        a.upload_chunk("sale", "o.xml", chunks[1])
    assert e.value.status == "failure" and "прерван" in e.value.reason
    # B's import is done, the lock is free: the other login uploads now
    assert other.upload_chunk("sale", "x.xml", EMPTY) == ["success"]
    assert other.import_file("sale", "x.xml") == ["success", "принято записей: 0"]


def test_another_logins_lock_is_free_only_after_lock_timeout(world_factory) -> None:
    world = world_factory(users={SECOND: SECOND_PW}, lock_timeout=0.6)
    other = world.client(login=SECOND, password=SECOND_PW)
    other.checkauth("sale")
    other.init("sale")
    other.upload_chunk("sale", "x.xml", EMPTY[:20])       # and then it goes quiet
    a = world.client()
    a.checkauth("sale")
    a.init("sale")
    with pytest.raises(OneCExchangeError) as e:
        a.upload_chunk("sale", "y.xml", EMPTY)
    assert SECOND in e.value.reason
    time.sleep(0.7)
    assert a.upload_chunk("sale", "y.xml", EMPTY) == ["success"]
    assert a.import_file("sale", "y.xml")[0] == "success"


def test_an_active_exchange_of_the_same_login_is_not_taken_over(world: World) -> None:
    a, b = world.client(), world.client()
    a.checkauth("sale")
    b.checkauth("sale")                                   # B is newer, but A goes on working after it
    a.init("sale")
    b.init("sale")
    assert a.upload_chunk("sale", "a.xml", EMPTY) == ["success"]
    with pytest.raises(OneCExchangeError) as e:
        b.upload_chunk("sale", "b.xml", EMPTY)
    assert "идёт другой обмен" in e.value.reason
    assert a.import_file("sale", "a.xml")[0] == "success"          # A's import ends: lock released
    assert b.upload_chunk("sale", "b.xml", EMPTY) == ["success"]
    assert b.import_file("sale", "b.xml")[0] == "success"


def test_a_catalog_exchange_holds_the_lock_until_complete(world_factory) -> None:
    world = world_factory(users={SECOND: SECOND_PW})
    c = world.client(use_zip=False)
    c.set_product("Кружка", sku="MUG-1", price="490.00", stock="5")
    c.checkauth("catalog")
    c.init("catalog")
    c._upload("catalog", {"import.xml": c._catalog_xml(), "offers.xml": c._offers_xml()}, False, 1 << 20)
    assert c.import_file("catalog", "import.xml")[0] == "success"
    other = world.client(login=SECOND, password=SECOND_PW)
    other.checkauth("sale")
    other.init("sale")
    with pytest.raises(OneCExchangeError):               # between the catalog's files: still its lock
        other.upload_chunk("sale", "x.xml", EMPTY)
    assert c.import_file("catalog", "offers.xml")[0] == "success"
    c._call("catalog", "complete")
    assert other.upload_chunk("sale", "x.xml", EMPTY) == ["success"]


# -- the alias path ---------------------------------------------------------------------------------

def test_the_bitrix_path_serves_the_exchange_too(world_factory) -> None:
    world = world_factory()
    crm_deal(world)
    world.sync()
    c = OneCClient(world.server.url + "/bitrix/admin/1c_exchange.php", LOGIN, PASSWORD)
    world.clients.append(c)
    assert c.run_cycle()["received"] == 1
    c.pay("D-1001")
    assert c.run_cycle()["import"][0] == "success"
    assert _paid(world, "D-1001")


def test_aliases_are_a_setting(world_factory) -> None:
    world = world_factory(aliases=["/exchange/1c.php"])
    base = world.server.url
    assert httpx.get(base + "/bitrix/admin/1c_exchange.php", params={"type": "sale", "mode": "checkauth"},
                     auth=(LOGIN, PASSWORD)).status_code == 404
    assert _lines(httpx.get(base + "/exchange/1c.php", params={"type": "sale", "mode": "checkauth"},
                            auth=(LOGIN, PASSWORD)))[0] == "success"
    assert OneCSettings(login="x", password="y", aliases=["/1c/exchange"]).aliases == []   # its own path once
    with pytest.raises(ValueError, match="path"):
        OneCSettings(login="x", password="y", aliases=["bitrix/admin/1c_exchange.php"])


# -- sessions in the store: a restart, a second instance ------------------------------------------

def test_a_second_instance_answers_the_next_step_and_a_restart_changes_nothing(world_factory) -> None:
    world = world_factory(file_limit=1024, import_step=1)
    twin = world.twin()
    crm_deal(world)
    world.sync()
    c = world.client(use_zip=False)
    urls = lambda: [world.url, twin.url]             # the first instance's URL changes on restart
    c.checkauth("sale")
    c.url = urls()[1]
    c.init("sale")
    assert c.query() == 1                                 # served by the second instance…
    c.url = urls()[0]
    c._call("sale", "success")                            # …confirmed at the first
    assert waiting(world) == {}
    c.pay("D-1001", "5880.00")
    c.ship("D-1001", "РН-7")
    chunks = _chunks(c, "D-1001")
    for i, ch in enumerate(chunks):
        c.url = urls()[i % 2]
        assert c.upload_chunk("sale", "o.xml", ch) == ["success"]
    answers = []
    for step in range(200):
        if step == 3:
            world.start()                                 # the first instance restarts mid-import
        c.url = urls()[step % 2]
        lines = c._call("sale", "import", filename=c.temp_prefix + "o.xml", _ok=("progress", "success"))
        answers.append(lines[0])
        if lines[0] == "success":
            break
    assert answers.count("progress") >= 3 and answers[-1] == "success"
    eid = world.store.find_entity("crm", "order", "deal-D-1001")
    f = world.store.entity(eid)["fields"]
    assert f["order.paid"] is True and f["order.shipment_number"] == "РН-7"
    assert world.store.list_quarantine() == []            # every record once, in order, whole


def test_instances_that_do_not_share_the_spool_say_so(world_factory) -> None:
    world = world_factory()
    twin = world.twin(spool_dir=str(world.tmp / "spool-elsewhere"))
    c = world.client()
    c.checkauth("sale")
    c.init("sale")
    assert c.upload_chunk("sale", "o.xml", EMPTY) == ["success"]
    c.url = twin.url
    with pytest.raises(OneCExchangeError) as e:
        c.import_file("sale", "o.xml")
    assert "spool_dir" in e.value.reason and "o.xml" in e.value.reason


def test_several_exchanges_at_once_lose_nothing(world_factory) -> None:
    world = world_factory(file_limit=1024, users={SECOND: SECOND_PW})
    numbers = [f"D-{n}" for n in range(1, 7)]
    for i, n in enumerate(numbers):
        crm_deal(world, number=n, seed=i + 1)
    world.sync()
    first = world.client()
    assert first.run_cycle()["received"] == 6
    clients = [first, world.client(login=SECOND, password=SECOND_PW),
               world.client(send_sessid=False, send_version=False, use_zip=False)]
    for c in clients[1:]:
        c.db = dataclasses.replace(first.db, orders=dict(first.db.orders))   # the same orders in each base
    for c, pair in zip(clients, (numbers[:2], numbers[2:4], numbers[4:])):
        for n in pair:
            c.pay(n)
    errors: list[BaseException] = []
    refusals: list[str] = []

    def run(c: OneCClient) -> None:
        try:
            for _ in range(200):
                try:
                    c.run_cycle()
                    return
                except OneCExchangeError as exc:          # another upload holds the lock: later
                    refusals.append(exc.reason)
                    time.sleep(0.02)
            raise AssertionError("never got through")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert all("обмен" in r for r in refusals), refusals   # only lock refusals, never an internal error
    assert all(_paid(world, n) for n in numbers)
    assert world.store.list_quarantine() == []
    index = world.onec.ctx.state_get("sessions")
    assert index and all(world.onec.ctx.state_get(f"session:{k}") for k in index)


def test_state_swap_is_atomic_across_threads(store, tmp_path: Path) -> None:
    ctx = Ctx(store)
    sessions = Sessions(ctx, OneCSettings(login="x", password="y"), tmp_path)
    got: list[int] = []

    def bump() -> None:
        for _ in range(15):
            got.append(sessions.next_seq())

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 61))              # no increment lost, none given twice
    assert ctx.state_swap("k", None, {"a": 1}) and not ctx.state_swap("k", None, {"a": 2})
    assert ctx.state_swap("k", {"a": 1}, None) and ctx.state_get("k") is None


def test_sessions_are_swept_with_their_folders(world_factory) -> None:
    world = world_factory(session_ttl=0.5)
    spool = world.tmp / "spool"
    c = world.client()
    c.checkauth("sale")
    c.init("sale")
    c.upload_chunk("sale", "o.xml", EMPTY[:30])
    time.sleep(0.6)
    world.client().checkauth("sale")                      # sweeps the expired session
    assert len(world.onec.ctx.state_get("sessions")) == 1
    assert len([p for p in spool.iterdir() if p.is_dir()]) == 1
    with pytest.raises(OneCExchangeError) as e:
        c.upload_chunk("sale", "o.xml", EMPTY[30:])
    assert "checkauth" in e.value.reason


def test_a_catalog_exchange_without_complete_and_a_query_posted_as_a_form(world_factory) -> None:
    world = world_factory(users={SECOND: SECOND_PW})
    crm_deal(world)
    world.sync()
    c = world.client(send_complete=False, post_query=True, use_zip=False)
    c.set_product("Кружка", sku="MUG-1", price="490.00", stock="5")
    out = c.run_cycle()                                   # catalog (never completed), then sale
    assert [a[0] for a in out["catalog"]["imported"]] == ["success", "success"]
    assert not any(m == "complete" for _, m, _ in c.log)
    assert out["received"] == 1                           # mode=query as a form post
    assert any(b.stream == "import:catalog" for b in world.ctx.ingested)
    # the uncompleted catalog exchange holds the lock: another login waits for lock_timeout…
    other = world.client(login=SECOND, password=SECOND_PW)
    other.checkauth("sale")
    other.init("sale")
    with pytest.raises(OneCExchangeError):
        other.upload_chunk("sale", "x.xml", EMPTY)
    # …the same 1C's next exchange takes it over at once
    c.pay("D-1001")
    assert c.run_cycle()["import"][0] == "success"
    assert _paid(world, "D-1001")
    assert other.upload_chunk("sale", "x.xml", EMPTY) == ["success"]       # and released it at the end


def test_a_probe_does_not_sweep_away_1c_reading_a_long_query_answer(world_factory) -> None:
    world = world_factory(lock_timeout=0.3)
    crm_deal(world)
    world.sync()
    c = world.client()
    c.checkauth("sale")
    c.init("sale")
    assert c.query() == 1
    time.sleep(0.5)                                       # 1C reads the orders for a while…
    for _ in range(2):                                    # …while a probe checks the endpoint
        assert world.client().checkauth("sale")[0] == "success"
    assert c._call("sale", "success") == ["success"]      # the session is still there
    assert waiting(world) == {}
    # a real new exchange of that 1C, later, does sweep the abandoned session
    time.sleep(0.4)
    c2 = world.client()
    c2.checkauth("sale")
    c2.init("sale")
    assert world.onec.ctx.state_get(f"session:{session_key(c._cookie[1])}") is None
