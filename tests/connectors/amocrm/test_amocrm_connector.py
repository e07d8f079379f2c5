"""The amoCRM connector against the sandbox: settings, auth, streams, writes, schema, webhooks, limits."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests
from amohelpers import Ctx, acc_of, all_of, api, connector, ctl, op
from pydantic import SecretStr

from connectors.amocrm import AmoCRMSettings
from connectors.amocrm.streams import parse_cursor
from syncd.errors import PermanentError, TransientError
from syncd.sandbox.amocrm import records, ui_write
from syncd.sandbox.server import serve_in_thread


SETTLE = 2.1


def _read_all(conn: Any, stream: str, cursor: str | None = None) -> tuple[list[Any], str | None]:
    recs, cur = [], cursor
    for b in conn.read(stream, cursor):
        recs += b.records
        cur = b.cursor or cur
    return recs, cur


def _oauth(h: Any, ctx: Any, **kw: Any) -> Any:
    e = h.extra
    return connector(h, ctx=ctx, token=None, client_id=e["client_id"], client_secret=e["client_secret"],
                     redirect_uri=e["redirect_uri"], **kw)


def _grants(h: Any) -> list[dict[str, Any]]:
    return acc_of(h).log_view(kind="oauth")


# -- settings and auth ----------------------------------------------------------------------------------
def test_settings_validation() -> None:
    ok = AmoCRMSettings(base_url="https://example.amocrm.ru", token="t0ken")
    assert (ok.rate, ok.burst, ok.timeout, ok.key_field, ok.page_limit) == (7.0, 7, 30, "SYNCD_KEY", 250)
    assert "t0ken" not in repr(ok)
    AmoCRMSettings(base_url="http://127.0.0.1:8080", token="t")                    # loopback: the sandbox
    bad = [dict(base_url="http://example.amocrm.ru", token="t"),                   # plain http off loopback
           dict(base_url="https://example.amocrm.ru"),                              # no credentials
           dict(base_url="https://example.amocrm.ru", token="t", client_id="x"),    # both
           dict(base_url="https://example.amocrm.ru", client_id="x", client_secret="s", redirect_uri="u"),
           dict(base_url="https://example.amocrm.ru", token="t", colour="red"),     # extra="forbid"
           dict(base_url="https://example.amocrm.ru/api/v4", token="t"),
           dict(base_url="https://example.amocrm.ru", token="t", page_limit=500)]
    for kw in bad:
        with pytest.raises(ValueError):
            AmoCRMSettings(**kw)
    AmoCRMSettings(base_url="https://example.amocrm.ru", client_id="x", client_secret="s",
                   redirect_uri="https://example.com/oauth", auth_code="code")


def test_long_lived_token_health_and_record_url(amo) -> None:
    c = connector(amo)
    h = c.health()
    assert h.ok and h.detail == "example as Администратор"
    assert c.record_url("lead", "7") == f"{amo.url}/leads/detail/7"
    assert c.record_url("company", "9") == f"{amo.url}/companies/detail/9"
    assert c.record_url("task", "1") is None
    bad = connector(amo, token="nope")
    assert not bad.health().ok and "long-lived" in bad.health().detail


def test_oauth_first_start_exchanges_the_code_and_refreshes_on_expiry(amo) -> None:
    code = ctl(amo, "POST", "oauth/code", {})["code"]
    ctx = Ctx()
    c = _oauth(amo, ctx, auth_code=code)
    assert c.health().ok
    first = dict(ctx.kv["oauth"])
    assert set(first) == {"access", "refresh", "expires_at"}
    assert [g["grant_type"] for g in _grants(amo)] == ["authorization_code"]
    # the account's clock moves past the access token's life: 401 -> one refresh, persisted by swap
    ctl(amo, "PATCH", "clock", {"advance": 2 * 86400})
    assert c.client.get("account")["subdomain"] == "example"
    assert [(g["grant_type"], g["status"]) for g in _grants(amo)] == [("authorization_code", 200),
                                                                      ("refresh_token", 200)]
    assert ctx.kv["oauth"]["refresh"] != first["refresh"] and ctx.swaps == 2
    # a restart with the same settings (the code is spent) uses the saved tokens, no grant
    again = _oauth(amo, ctx, auth_code=code)
    assert again.health().ok and len(_grants(amo)) == 2


def test_two_instances_sharing_the_state_never_spend_one_refresh_token_twice(amo) -> None:
    pair = ctl(amo, "POST", "oauth/tokens", {"expires_in": 3600})
    ctx = Ctx(kv={"oauth": {"access": pair["access_token"], "refresh": pair["refresh_token"],
                            "expires_at": time.time() + 3600}})
    a, b = _oauth(amo, ctx, refresh_token="unused-initial"), _oauth(amo, ctx, refresh_token="unused-initial")
    assert a.health().ok and b.health().ok
    ctl(amo, "PATCH", "clock", {"advance": 7200})
    assert a.health().ok                       # a refreshes and stores the new pair
    assert b.health().ok                       # b's token is refused: it finds a's pair, spends nothing
    assert [g["status"] for g in _grants(amo)] == [200]
    # both at once: one grant succeeds; the loser's refresh token is revoked, it takes the winner's pair
    ctl(amo, "PATCH", "clock", {"advance": 86400})
    results: list[bool] = []
    threads = [threading.Thread(target=lambda c=c: results.append(c.health().ok)) for c in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True, True]
    ok = [g for g in _grants(amo) if g["status"] == 200]
    assert len(ok) == 2                        # one per expiry, never two for one refresh token
    assert a.client.tokens.refreshes + b.client.tokens.refreshes == 2


def test_a_revoked_refresh_token_says_how_to_reauthorize(amo) -> None:
    pair = ctl(amo, "POST", "oauth/tokens", {"expires_in": 60})
    e = amo.extra
    # somebody else (an old install) spends the refresh token
    r = requests.post(f"{amo.url}/oauth2/access_token", timeout=10, json={
        "client_id": e["client_id"], "client_secret": e["client_secret"], "grant_type": "refresh_token",
        "refresh_token": pair["refresh_token"], "redirect_uri": e["redirect_uri"]})
    assert r.status_code == 200
    ctx = Ctx(kv={"oauth": {"access": pair["access_token"], "refresh": pair["refresh_token"],
                            "expires_at": time.time() + 3600}})
    c = _oauth(amo, ctx, refresh_token="x")
    ctl(amo, "PATCH", "clock", {"advance": 120})
    with pytest.raises(PermanentError, match="auth_code") as err:
        c.client.get("account")
    assert "revoked" in str(err.value) and pair["refresh_token"] not in str(err.value)


# -- streams ----------------------------------------------------------------------------------------------
def test_paging_over_250_ends_on_204(amo) -> None:
    acc = acc_of(amo)
    with acc.lock:
        records.create(acc, "leads", [{"name": f"Сделка {i}"} for i in range(250)], min(acc.users))
        records.create(acc, "leads", [{"name": f"Сделка b{i}"} for i in range(250)], min(acc.users))
    c = connector(amo)
    recs, cursor = _read_all(c, "leads")
    assert len(recs) == 500 and len({r.external_id for r in recs}) == 500
    assert parse_cursor(cursor)[1] == max(int(r.external_id) for r in recs)
    assert any(e["status"] == 204 for e in acc.log_view(kind="api") if e["path"] == "/api/v4/leads")
    got = list(c.fetch("lead", [recs[0].external_id, recs[-1].external_id, "999"]))
    assert sorted(r.external_id for r in got) == sorted([recs[0].external_id, recs[-1].external_id])


def test_cursor_stream_changed_since_none_repeated_none_missed(amo) -> None:
    acc = acc_of(amo)
    ids = [ui_write(acc, "contacts", {"first_name": f"Клиент {i}"})["id"] for i in range(3)]
    time.sleep(SETTLE)
    # older than the second of the read (the server's Date header, which uvicorn updates once a
    # second): remembered as taken in
    c = connector(amo)
    recs, cursor = _read_all(c, "contacts")
    assert sorted(int(r.external_id) for r in recs) == ids
    time.sleep(SETTLE)
    t = acc.ts()
    # two edits share one updated_at
    ui_write(acc, "contacts", {"last_name": "Новый", "updated_at": t}, record_id=ids[0])
    ui_write(acc, "contacts", {"last_name": "Новый", "updated_at": t}, record_id=ids[2])
    time.sleep(SETTLE)
    recs2, cursor2 = _read_all(c, "contacts", cursor)
    assert sorted(int(r.external_id) for r in recs2) == [ids[0], ids[2]]
    assert all(r.fields["last_name"] == "Новый" for r in recs2)
    assert parse_cursor(cursor2) == (t, ids[2])
    third = _read_all(c, "contacts", cursor2)[0]
    assert third == []       # nothing new: nothing repeated
    # a reader stopped after the first of the two (one row a page) misses neither
    one = connector(amo, page_limit=1, overlap_seconds=0)
    gen = one.read("contacts", cursor)
    for first in gen:
        if [r.external_id for r in first.records] == [str(ids[0])]:
            break
    gen.close()
    assert parse_cursor(first.cursor) == (t, ids[0])
    rest, _ = _read_all(connector(amo, overlap_seconds=0), "contacts", first.cursor)
    assert str(ids[2]) in [r.external_id for r in rest]


# -- writes ----------------------------------------------------------------------------------------------
def test_a_lost_create_answer_then_retry_makes_one_record(amo) -> None:
    c = connector(amo)
    c.write_retries = 1                        # the engine retries, not the connector
    ctl(amo, "PATCH", "faults", {"count": 1, "mode": "lost", "paths": ["/api/v4/contacts"], "methods": ["POST"]})
    o = op("contact", "p1", {"first_name": "Иван", "last_name": "Петров", "EMAIL": ["ivan@example.ru"]})
    with pytest.raises(TransientError):
        c.write(o)
    res = c.write(o)
    assert res.found
    rows = all_of(amo, "contacts")
    assert len(rows) == 1 and str(rows[0]["id"]) == res.external_id
    # inline retries look up first as well
    ctl(amo, "PATCH", "faults", {"count": 1, "mode": "lost", "paths": ["/api/v4/contacts"], "methods": ["POST"]})
    res2 = connector(amo).write(op("contact", "p2", {"first_name": "Анна"}, unsent=True))
    assert res2.found and len(all_of(amo, "contacts")) == 2


def test_write_many_60_leads_maps_request_ids_back(amo) -> None:
    c = connector(amo)
    acc = acc_of(amo)
    acc.log.clear()
    ops = [op("lead", f"o{i}", {"name": f"Заказ {i}", "price": i * 100}, origin=("shop", str(1000 + i)))
           for i in range(60)]
    res = c.write_many(ops)
    assert all(not isinstance(r, Exception) for r in res)
    by_id = {str(r["id"]): r for r in all_of(amo, "leads")}
    assert len(by_id) == 60
    for o, r in zip(ops, res):
        lead = by_id[r.external_id]
        assert lead["name"] == o.fields["name"] and lead["price"] == o.fields["price"]
        key = next(e for e in lead["custom_fields_values"] if e["field_code"] == "SYNCD_KEY")
        assert key["values"][0]["value"] == f"shop:{o.origin[1]}"
    posts = [e for e in acc.log_view(kind="api") if e["method"] == "POST" and e["path"] == "/api/v4/leads"]
    assert [len(e["body"]) for e in posts] == [50, 10]
    # read back: the stamp names the shop order
    recs, _ = _read_all(c, "leads")
    assert {r.origin for r in recs} == {("shop", str(1000 + i)) for i in range(60)}
    # again (after a re-install): every one found, nothing new
    again = c.write_many([op("lead", f"o{i}", {"name": f"Заказ {i}"}, origin=("shop", str(1000 + i)))
                          for i in range(3)])
    assert all(r.found for r in again) and len(all_of(amo, "leads")) == 60


def test_write_many_one_refused_item_does_not_sink_the_rest(amo) -> None:
    c = connector(amo)
    res = c.write_many([op("lead", "a", {"name": "ok 1"}), op("lead", "b", {"name": "bad", "responsible_user_id": 1}),
                        op("lead", "c", {"name": "ok 2"})])
    assert isinstance(res[1], PermanentError) and "responsible_user_id" in str(res[1])
    assert not isinstance(res[0], Exception) and not isinstance(res[2], Exception)
    assert sorted(r["name"] for r in all_of(amo, "leads")) == ["ok 1", "ok 2"]


def test_pipeline_and_status_by_name(amo) -> None:
    ctl(amo, "POST", "pipelines", {"name": "Опт", "statuses": ["Заявка", "Счёт выставлен"]})
    c = connector(amo)
    res = c.write(op("lead", "l1", {"name": "Опт 1", "pipeline": "Опт", "status": "Счёт выставлен"}))
    lead = api(amo, "GET", f"leads/{res.external_id}")
    p = next(p for p in acc_of(amo).pipelines.values() if p.name == "Опт")
    assert lead["pipeline_id"] == p.id and lead["status_id"] == next(s.id for s in p.statuses if s.name == "Счёт выставлен")
    # the status alone: within the lead's own pipeline; 142 by its name
    c.write(op("lead", "l1", {"status": "Успешно реализовано"}, ext=res.external_id))
    lead = api(amo, "GET", f"leads/{res.external_id}")
    assert (lead["pipeline_id"], lead["status_id"]) == (p.id, 142) and lead["closed_at"]
    rec = next(c.fetch("lead", [res.external_id]))
    assert (rec.fields["pipeline"], rec.fields["status"]) == ("Опт", "Успешно реализовано")
    with pytest.raises(PermanentError, match="'Отгружено'.*Заявка") as err:
        c.write(op("lead", "l1", {"status": "Отгружено"}, ext=res.external_id))
    assert "Счёт выставлен" in str(err.value)
    with pytest.raises(PermanentError, match="'Розница'.*Воронка"):
        c.write(op("lead", "l2", {"name": "x", "pipeline": "Розница"}))


def test_lead_links_contact_and_company_on_create_and_update(amo) -> None:
    c = connector(amo)
    person = c.write(op("contact", "p", {"name": "Иван"})).external_id
    other = c.write(op("contact", "q", {"name": "Пётр"})).external_id
    firm = c.write(op("company", "f", {"name": "ООО Ромашка", "PHONE": ["+7 495 000-00-01"]})).external_id
    lead = c.write(op("lead", "l", {"name": "Заказ", "contact_id": person, "company_id": firm})).external_id
    rec = next(c.fetch("lead", [lead]))
    assert (rec.fields["contact_id"], rec.fields["company_id"]) == (person, firm)
    c.write(op("lead", "l", {"contact_id": other}, ext=lead))
    assert next(c.fetch("lead", [lead])).fields["contact_id"] == other


def test_phone_and_email_merge_never_delete(amo) -> None:
    c = connector(amo)
    ext = c.write(op("contact", "m", {"first_name": "Анна", "PHONE": ["+7 495 123-45-67"],
                                      "EMAIL": ["anna@example.ru"]})).external_id
    c.write(op("contact", "m", {"PHONE": ["8 (495) 123-45-67", "+7 916 000-00-00"],
                                "EMAIL": ["ANNA@example.ru"]}, ext=ext))
    rec = next(c.fetch("contact", [ext]))
    assert rec.fields["PHONE"] == ["+7 495 123-45-67", "+7 916 000-00-00"]
    assert rec.fields["EMAIL"] == ["anna@example.ru"]
    c.write(op("contact", "m", {"PHONE": []}, ext=ext))       # an empty list removes nothing
    assert next(c.fetch("contact", [ext])).fields["PHONE"] == ["+7 495 123-45-67", "+7 916 000-00-00"]


def test_tasks_and_notes_are_idempotent(amo) -> None:
    c = connector(amo)
    lead = c.write(op("lead", "l", {"name": "Заказ"})).external_id
    t = op("task", "t1", {"text": "Позвонить клиенту", "responsible_user_id": "5000002",
                          "complete_till": "2030-01-02T10:00:00+03:00", "lead_id": lead})
    first = c.write(t)
    again = c.write(t)
    assert again.found and again.external_id == first.external_id
    tasks = all_of(amo, "tasks")
    assert len(tasks) == 1
    assert (tasks[0]["entity_type"], str(tasks[0]["entity_id"]), tasks[0]["complete_till"],
            tasks[0]["task_type_id"]) == ("leads", lead, 1893567600, 1)
    n = op("note", "n1", {"text": "Клиент просил перезвонить после 18:00", "lead_id": lead})
    n1, n2 = c.write(n), c.write(n)
    assert n2.found and n1.external_id == n2.external_id
    notes = api(amo, "GET", f"leads/{lead}/notes")["_embedded"]["notes"]
    assert [n["params"]["text"] for n in notes] == ["Клиент просил перезвонить после 18:00"]


def test_validation_error_names_field_and_record(amo) -> None:
    c = connector(amo)
    with pytest.raises(PermanentError, match="responsible_user_id") as err:
        c.write(op("contact", "v", {"name": "X", "responsible_user_id": "42"}))
    assert "record 0" in str(err.value)
    with pytest.raises(PermanentError, match="no field 'NOPE'"):
        c.write(op("contact", "v2", {"name": "X", "NOPE": 1}))


# -- webhooks ---------------------------------------------------------------------------------------------
def test_webhook_route_parses_amo_bodies_and_checks_the_token(amo) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route as SRoute

    ctx = Ctx()
    c = connector(amo, ctx=ctx, webhook_secret=SecretStr("s3cret"))
    (route,) = c.http_routes()
    assert route.path == "/hooks/amocrm/crm" and route.methods == ("POST",)
    srv = serve_in_thread(Starlette(routes=[SRoute(route.path, route.endpoint, methods=list(route.methods))]))
    try:
        hook = f"{srv.url}{route.path}?token=s3cret"
        api(amo, "POST", "webhooks", json={"destination": hook, "settings": ["add_lead", "update_lead",
                                                                              "status_lead", "add_contact"]})
        ui_write(acc_of(amo), "leads", {"name": "С сайта"})          # a manager adds a lead: amoCRM posts
        ctl(amo, "POST", "webhooks/wait", {"timeout": 10})
        posted = [e for e in acc_of(amo).log_view(kind="webhook")]
        assert posted and posted[-1]["status"] == 200 and "leads%5Badd%5D" in posted[-1]["body"]
        assert ctx.triggers == ["leads"]
        r = requests.post(f"{srv.url}{route.path}?token=wrong", data=posted[-1]["body"], timeout=10,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 403
        r = requests.post(f"{srv.url}{route.path}", data=posted[-1]["body"], timeout=10)
        assert r.status_code == 403
        r = requests.post(hook, data="hello=world", timeout=10)
        assert r.status_code == 400 and "amoCRM webhook" in r.text
        body = "contacts%5Bupdate%5D%5B0%5D%5Bid%5D=5&leads%5Bstatus%5D%5B0%5D%5Bid%5D=7&account%5Bsubdomain%5D=example"
        r = requests.post(hook, data=body, timeout=10, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200 and r.json()["streams"] == ["contacts", "leads"]
        assert ctx.triggers == ["leads", "contacts", "leads"]
    finally:
        srv.stop()


# -- limits -----------------------------------------------------------------------------------------------
def test_the_rate_limit_is_respected(amo) -> None:
    ctl(amo, "PATCH", "limits", {"enabled": True})
    acc = acc_of(amo)
    acc.log.clear()
    c = connector(amo, rate=7.0, burst=7.0)
    for _ in range(25):
        assert c.client.get("account")["subdomain"] == "example"
    refused = [e for e in acc.log_view(kind="api") if e["status"] == 429]
    assert len(refused) == c.client.limit_hits <= 1
    # a client that believes in a bigger budget meets 429s and recovers from every one
    ctl(amo, "PATCH", "limits", {"enabled": True})
    greedy = connector(amo, rate=50.0, burst=50.0)
    for _ in range(20):
        assert greedy.client.get("account")["subdomain"] == "example"
    assert greedy.client.limit_hits > 0


def test_describe(amo) -> None:
    s = connector(amo).describe()
    assert s.pipelines["Воронка"] == ["Неразобранное", "Первичный контакт", "Переговоры", "Принимают решение",
                                      "Успешно реализовано", "Закрыто и не реализовано"]
    assert s.values["lead.pipeline"] == {"Воронка"} and "Переговоры" in s.values["lead.status"]
    assert {"name", "price", "pipeline", "status", "contact_id", "ORDER_NO", "SYNCD_KEY", "SHOP_ORDER",
            "FROM_SHOP"} <= s.kinds["lead"]
    assert {"PHONE", "EMAIL", "POSITION", "first_name"} <= s.kinds["contact"]
    assert {"text", "complete_till", "lead_id"} <= s.kinds["task"]
    assert s.users["5000002"] == {"name": "Анна Смирнова", "active": True, "present": True,
                                  "email": "anna@example.com"}
    assert s.names["user"]["anna@example.com"] == "5000002" and s.names["pipeline"] == {"Воронка": "Воронка"}
