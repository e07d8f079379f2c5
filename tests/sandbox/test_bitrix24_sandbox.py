"""The Bitrix24 REST sandbox over real HTTP: requests-level protocol checks and fast-bitrix24 unchanged."""

from __future__ import annotations

import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from syncd.sandbox.bitrix24 import SandboxState, create_app, seed_demo, start
from syncd.sandbox.bitrix24.php import build_query, parse_query
from syncd.sandbox.server import serve_in_thread


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    h = start(rate_limit=False)
    yield h
    h.stop()


def _portal(sandbox: Any, **opts: Any) -> dict[str, Any]:
    body = {"name": "p" + uuid.uuid4().hex[:8], "rate_limit": False, **opts}
    r = requests.post(f"{sandbox.url}/_sandbox/portals", json=body, timeout=10)
    assert r.status_code == 201, r.text
    info = r.json()
    info["ctl"] = f"{sandbox.url}/_sandbox/{info['portal']}"
    return info


@pytest.fixture
def portal(sandbox: Any) -> dict[str, Any]:
    return _portal(sandbox)


def rest(info: dict[str, Any], method: str, params: dict[str, Any] | None = None, **kw: Any) -> requests.Response:
    return requests.post(info["webhook_url"] + method + ".json", json=params or {}, timeout=10, **kw)


def ok(info: dict[str, Any], method: str, params: dict[str, Any] | None = None) -> Any:
    r = rest(info, method, params)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def add_deals(info: dict[str, Any], n: int, **fields: Any) -> list[int]:
    ids: list[int] = []
    for start_ in range(0, n, 50):
        cmd = {f"d{i}": "crm.deal.add?" + build_query({"fields": {"TITLE": f"Заказ {i}", **fields}})
               for i in range(start_, min(n, start_ + 50))}
        res = ok(info, "batch", {"halt": 0, "cmd": cmd})
        assert not res["result_error"]
        ids += [res["result"][k] for k in cmd]
    return ids


# ------------------------------------------------------------------------------------------------
def test_php_bracket_parsing() -> None:
    q = parse_query("fields[TITLE]=x&filter[>ID]=5&order[ID]=ASC&cmd[a]=crm.deal.get%3Fid%3D1"
                    "&select[]=ID&select[]=UF_*&fields[PHONE][0][VALUE]=1&fields[PHONE][n1][VALUE]=2&start=-1")
    assert q == {"fields": {"TITLE": "x", "PHONE": {"0": {"VALUE": "1"}, "n1": {"VALUE": "2"}}},
                 "filter": {">ID": "5"}, "order": {"ID": "ASC"}, "cmd": {"a": "crm.deal.get?id=1"},
                 "select": ["ID", "UF_*"], "start": "-1"}
    assert parse_query(build_query({"rows": [{"PRICE": 1}, {"PRICE": 2}]})) == {"rows": [{"PRICE": "1"},
                                                                                        {"PRICE": "2"}]}


def test_envelope_strings_and_deal_defaults(portal: dict[str, Any]) -> None:
    r = rest(portal, "crm.deal.add", {"fields": {"TITLE": "Заказ №1", "OPPORTUNITY": 1500,
                                                 "ORIGINATOR_ID": "shop", "ORIGIN_ID": "1001"}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["result"], int) and "next" not in body and "total" not in body
    assert set(body["time"]) == {"start", "finish", "duration", "processing", "date_start", "date_finish",
                                 "operating_reset_at", "operating"}
    deal = ok(portal, "crm.deal.get", {"id": body["result"]})
    assert deal["ID"] == str(body["result"]) and deal["OPPORTUNITY"] == "1500.00"
    assert deal["STAGE_ID"] == "NEW" and deal["CATEGORY_ID"] == "0" and deal["CLOSED"] == "N"
    assert deal["OPENED"] == "Y" and deal["CREATED_BY_ID"] == "1" and deal["ORIGIN_ID"] == "1001"
    assert deal["DATE_CREATE"].endswith("+03:00") and "T" in deal["DATE_CREATE"]
    # TITLE is not required for deals: Bitrix makes one up
    d2 = ok(portal, "crm.deal.add", {"fields": {}})
    assert ok(portal, "crm.deal.get", {"id": d2})["TITLE"] == f"Сделка #{d2}"
    ok(portal, "crm.deal.update", {"id": d2, "fields": {"STAGE_ID": "WON"}})
    assert ok(portal, "crm.deal.get", {"id": d2})["CLOSED"] == "Y"


def test_form_encoded_and_get_query(portal: dict[str, Any]) -> None:
    body = "fields[TITLE]=Форма&fields[UTM_SOURCE]=yandex&params[REGISTER_SONET_EVENT]=Y"
    r = requests.post(portal["webhook_url"] + "crm.deal.add", data=body.encode(),
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    did = r.json()["result"]
    g = requests.get(portal["webhook_url"] + f"crm.deal.get.json?id={did}", timeout=10).json()["result"]
    assert g["TITLE"] == "Форма" and g["UTM_SOURCE"] == "yandex"
    lst = requests.get(portal["webhook_url"] + "crm.deal.list?filter[=UTM_SOURCE]=yandex&select[]=ID"
                       "&select[]=TITLE", timeout=10).json()
    assert lst["result"] == [{"ID": str(did), "TITLE": "Форма"}] and lst["total"] == 1


def test_pagination_next_total_and_fast_scan(portal: dict[str, Any]) -> None:
    ids = add_deals(portal, 120)
    first = rest(portal, "crm.deal.list", {"order": {"ID": "ASC"}, "select": ["ID"]}).json()
    assert len(first["result"]) == 50 and first["next"] == 50 and first["total"] == 120
    last = rest(portal, "crm.deal.list", {"order": {"ID": "ASC"}, "select": ["ID"], "start": 100}).json()
    assert len(last["result"]) == 20 and "next" not in last and last["total"] == 120
    seen: list[int] = []
    last_id = 0
    while True:
        page = rest(portal, "crm.deal.list", {"order": {"ID": "ASC"}, "filter": {">ID": last_id},
                                              "select": ["ID"], "start": -1}).json()
        assert "total" not in page and "next" not in page
        seen += [int(x["ID"]) for x in page["result"]]
        if len(page["result"]) < 50:
            break
        last_id = seen[-1]
    assert seen == ids


def test_filter_prefixes_select_and_order(portal: dict[str, Any]) -> None:
    requests.post(portal["ctl"] + "/userfields", json={"entity": "deal", "field_name": "UF_CRM_SHOP_ORDER"},
                  timeout=10)
    ids = []
    for i, (title, amount) in enumerate([("Альфа", 100), ("Бета", 200), ("Гамма", 300), ("Дельта", 400)]):
        ids.append(ok(portal, "crm.deal.add", {"fields": {"TITLE": title, "OPPORTUNITY": amount,
                                                          "UF_CRM_SHOP_ORDER": f"A-{i}", "UF_CRM_UNKNOWN": "x"}}))

    def titles(flt: dict[str, Any], **kw: Any) -> list[str]:
        return [d["TITLE"] for d in ok(portal, "crm.deal.list", {"filter": flt, "select": ["TITLE"], **kw})]
    assert titles({">OPPORTUNITY": 200}) == ["Гамма", "Дельта"]
    assert titles({">=OPPORTUNITY": 200, "<OPPORTUNITY": 400}) == ["Бета", "Гамма"]
    assert titles({"<=ID": ids[0]}) == ["Альфа"]
    assert titles({"!TITLE": "Альфа"}) == ["Бета", "Гамма", "Дельта"]
    assert titles({"%TITLE": "ль"}) == ["Альфа", "Дельта"]
    assert titles({"@ID": [ids[1], ids[3]]}) == ["Бета", "Дельта"]
    assert titles({"=UF_CRM_SHOP_ORDER": "A-2"}) == ["Гамма"]
    assert titles({">=DATE_CREATE": "2000-01-01T00:00:00+03:00"}, order={"OPPORTUNITY": "DESC"}) == \
        ["Дельта", "Гамма", "Бета", "Альфа"]
    assert titles({">DATE_MODIFY": "2999-01-01T00:00:00+03:00"}) == []
    row = ok(portal, "crm.deal.list", {"filter": {"ID": ids[0]}, "select": ["*", "UF_*"]})[0]
    assert row["UF_CRM_SHOP_ORDER"] == "A-0" and "UF_CRM_UNKNOWN" not in row and "STAGE_ID" in row
    assert "UF_CRM_SHOP_ORDER" not in ok(portal, "crm.deal.list", {"filter": {"ID": ids[0]}})[0]


def test_batch_reference_sets_product_rows(portal: dict[str, Any]) -> None:
    res = ok(portal, "batch", {"halt": 1, "cmd": {
        "add_deal": "crm.deal.add?" + build_query({"fields": {"TITLE": "Заказ 77"}}),
        "rows": "crm.deal.productrows.set?id=$result[add_deal]&" + build_query(
            {"rows": [{"PRODUCT_NAME": "Кабель ВВГнг 3x2.5", "PRICE": 120.5, "QUANTITY": 10},
                      {"PRODUCT_NAME": "Автомат ABB S201", "PRICE": 850, "QUANTITY": 2}]}),
        "get": "crm.deal.get?id=$result[add_deal]",
        "title": "crm.deal.list?filter[TITLE]=$result[get][TITLE]&select[]=ID"}})
    assert res["result_error"] == [] and res["result"]["rows"] is True
    did = res["result"]["add_deal"]
    assert res["result"]["get"]["OPPORTUNITY"] == "2905.00"
    assert res["result"]["title"] == [{"ID": str(did)}] and res["result_total"]["title"] == 1
    assert set(res["result_time"]) == {"add_deal", "rows", "get", "title"}
    rows = ok(portal, "crm.deal.productrows.get", {"id": did})
    assert [r["PRODUCT_NAME"] for r in rows] == ["Кабель ВВГнг 3x2.5", "Автомат ABB S201"]


def test_batch_limits_halt_and_nesting(portal: dict[str, Any]) -> None:
    r = rest(portal, "batch", {"cmd": {f"c{i}": "profile" for i in range(51)}})
    assert r.status_code == 400 and r.json()["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"
    cmd = {"a": "crm.deal.add?fields[TITLE]=A", "b": "crm.deal.get?id=999999", "c": "crm.deal.add?fields[TITLE]=C"}
    halted = ok(portal, "batch", {"halt": 1, "cmd": cmd})
    assert set(halted["result"]) == {"a"} and halted["result_error"]["b"]["error"] == "ERROR_NOT_FOUND"
    full = ok(portal, "batch", {"halt": 0, "cmd": cmd})
    assert set(full["result"]) == {"a", "c"} and set(full["result_error"]) == {"b"}
    nested = ok(portal, "batch", {"cmd": {"x": "batch?cmd[y]=profile", "z": "crm.deal.list?start=-1"}})
    assert nested["result_error"]["x"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    assert "z" in nested["result"] and "z" not in nested["result_total"]
    # the batch counts as one request in the log
    log = requests.get(portal["ctl"] + "/log", timeout=10).json()
    assert [e["method"] for e in log["entries"]].count("batch") == 4


def test_multifield_update_semantics(portal: dict[str, Any]) -> None:
    cid = ok(portal, "crm.contact.add", {"fields": {"NAME": "Дмитрий", "LAST_NAME": "Волков", "PHONE": [
        {"VALUE": "+79123456701", "VALUE_TYPE": "MOBILE"}], "EMAIL": [{"VALUE": "d.volkov@example.ru"}]}})
    c = ok(portal, "crm.contact.get", {"id": cid})
    assert c["HAS_PHONE"] == "Y" and c["PHONE"][0]["TYPE_ID"] == "PHONE" and c["EMAIL"][0]["VALUE_TYPE"] == "WORK"
    first = c["PHONE"][0]["ID"]
    # a manager adds a second phone by hand in the UI
    requests.patch(portal["ctl"] + f"/ui/contact/{cid}", json={"fields": {"PHONE": [
        {"VALUE": "+74957771020", "VALUE_TYPE": "WORK"}]}}, timeout=10).raise_for_status()
    ok(portal, "crm.contact.update", {"id": cid, "fields": {"PHONE": [{"ID": first, "VALUE": "+79990000000"}]}})
    phones = ok(portal, "crm.contact.get", {"id": cid})["PHONE"]
    assert [(p["VALUE"], p["VALUE_TYPE"]) for p in phones] == [("+79990000000", "MOBILE"), ("+74957771020", "WORK")]
    second = phones[1]["ID"]
    ok(portal, "crm.contact.update", {"id": cid, "fields": {"PHONE": [{"ID": first, "DELETE": "Y"},
                                                                      {"VALUE": "+78005553535"}]}})
    phones = ok(portal, "crm.contact.get", {"id": cid})["PHONE"]
    assert [p["VALUE"] for p in phones] == ["+74957771020", "+78005553535"]
    ok(portal, "crm.contact.update", {"id": cid, "fields": {"PHONE": [{"ID": second, "VALUE": ""}]}})
    assert [p["VALUE"] for p in ok(portal, "crm.contact.get", {"id": cid})["PHONE"]] == ["+78005553535"]
    assert [x["ID"] for x in ok(portal, "crm.contact.list", {"filter": {"PHONE": "+78005553535"}})] == [str(cid)]
    bad = rest(portal, "crm.contact.update", {"id": cid, "fields": {"EMAIL": [{"VALUE": "not-an-email"}]}})
    assert bad.status_code == 400 and bad.json()["error"] == "ERROR_CORE"


def test_productrows_set_replaces_and_recomputes(portal: dict[str, Any]) -> None:
    did = ok(portal, "crm.deal.add", {"fields": {"TITLE": "Заказ", "OPPORTUNITY": 1}})
    ok(portal, "crm.deal.productrows.set", {"id": did, "rows": [{"PRODUCT_NAME": "A", "PRICE": 100, "QUANTITY": 3},
                                                                {"PRODUCT_NAME": "B", "PRICE": 50}]})
    assert ok(portal, "crm.deal.get", {"id": did})["OPPORTUNITY"] == "350.00"
    ok(portal, "crm.deal.productrows.set", {"id": did, "rows": [{"PRODUCT_NAME": "C", "PRICE": 10, "QUANTITY": 2}]})
    rows = ok(portal, "crm.deal.productrows.get", {"id": did})
    assert [r["PRODUCT_NAME"] for r in rows] == ["C"]
    assert ok(portal, "crm.deal.get", {"id": did})["OPPORTUNITY"] == "20.00"
    ok(portal, "crm.deal.update", {"id": did, "fields": {"OPPORTUNITY": 999}})         # recomputed from rows
    assert ok(portal, "crm.deal.get", {"id": did})["OPPORTUNITY"] == "20.00"
    ok(portal, "crm.deal.update", {"id": did, "fields": {"OPPORTUNITY": 999, "IS_MANUAL_OPPORTUNITY": "Y"}})
    ok(portal, "crm.deal.productrows.set", {"id": did, "rows": []})
    assert ok(portal, "crm.deal.get", {"id": did})["OPPORTUNITY"] == "999.00"
    assert ok(portal, "crm.deal.productrows.get", {"id": did}) == []


def test_leaky_bucket(sandbox: Any) -> None:
    info = _portal(sandbox, rate_limit=True)
    s = requests.Session()
    codes = [s.post(info["webhook_url"] + "profile", timeout=10) for _ in range(60)]
    passed = [r for r in codes if r.status_code == 200]
    refused = [r for r in codes if r.status_code != 200]
    assert 49 <= len(passed) <= 53
    assert all(r.status_code == 503 and r.json()["error"] == "QUERY_LIMIT_EXCEEDED" for r in refused)
    assert all(r.status_code == 200 for r in codes[:49])
    time.sleep(1.1)
    assert s.post(info["webhook_url"] + "profile", timeout=10).status_code == 200
    log = requests.get(info["ctl"] + "/log", timeout=10).json()
    assert log["limit_hits"] == len(refused) and log["requests"] == 61
    assert sum(log["per_second"].values()) == 61 and log["max_per_second"] >= 30
    # limits are a per-portal knob
    requests.patch(info["ctl"] + "/limits", json={"enabled": False}, timeout=10).raise_for_status()
    assert s.post(info["webhook_url"] + "profile", timeout=10).status_code == 200


def test_operating_time_limit(portal: dict[str, Any]) -> None:
    requests.patch(portal["ctl"] + "/limits", json={"enabled": True, "burst": 1000, "operating_limit": 3,
                                                    "operating_extra": 1.0}, timeout=10).raise_for_status()
    answers = [rest(portal, "crm.deal.list") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[2].json()["time"]["operating"] >= 3
    assert answers[3].json()["error"] == "OPERATION_TIME_LIMIT"
    assert rest(portal, "crm.contact.list").status_code == 200           # per method


def test_oauth_expired_token_then_refresh(sandbox: Any, portal: dict[str, Any]) -> None:
    tok = requests.post(portal["ctl"] + "/oauth/tokens", json={"user_id": 1}, timeout=10).json()
    assert tok["expires_in"] == 3600 and tok["member_id"] == portal["member_id"]
    url = tok["rest_url"]
    assert requests.post(url + "crm.deal.add.json", json={"auth": tok["access_token"],
                                                         "fields": {"TITLE": "OAuth"}}, timeout=10).status_code == 200
    requests.post(portal["ctl"] + "/oauth/expire", timeout=10).raise_for_status()
    r = requests.post(url + "crm.deal.list", params={"auth": tok["access_token"]}, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "expired_token"
    bad = requests.get(tok["token_url"], params={"grant_type": "refresh_token", "client_id": tok["client_id"],
                                                 "client_secret": "wrong", "refresh_token": tok["refresh_token"]},
                       timeout=10)
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    new = requests.get(tok["token_url"], params={"grant_type": "refresh_token", "client_id": tok["client_id"],
                                                 "client_secret": tok["client_secret"],
                                                 "refresh_token": tok["refresh_token"]}, timeout=10).json()
    assert new["access_token"] != tok["access_token"] and new["expires_in"] == 3600
    r = requests.post(url + "crm.deal.list", data={"auth": new["access_token"]}, timeout=10)
    assert r.status_code == 200 and r.json()["total"] == 1
    again = requests.post(tok["token_url"], data={"grant_type": "refresh_token", "client_id": tok["client_id"],
                                                  "client_secret": tok["client_secret"],
                                                  "refresh_token": tok["refresh_token"]}, timeout=10)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # event.bind is for apps only
    assert rest(portal, "event.bind", {"event": "ONCRMDEALADD", "handler": "http://x/"}).status_code == 401
    assert requests.post(url + "event.bind", json={"auth": new["access_token"], "event": "onCrmDealAdd",
                                                   "handler": "http://127.0.0.1:9/h"}, timeout=10).json()["result"]
    got = requests.post(url + "event.get", json={"auth": new["access_token"]}, timeout=10).json()["result"]
    assert got[0]["event"] == "ONCRMDEALADD"


class Receiver:
    def __init__(self) -> None:
        self.forms: list[dict[str, Any]] = []
        self.event = threading.Event()

        async def hook(request: Request) -> PlainTextResponse:
            self.forms.append({"ctype": request.headers.get("content-type"),
                               **parse_query((await request.body()).decode())})
            self.event.set()
            return PlainTextResponse("ok")
        self.handle = serve_in_thread(Starlette(routes=[Route("/hook", hook, methods=["POST"])]))
        self.url = self.handle.url + "/hook"


def test_outbound_events_delivered(portal: dict[str, Any]) -> None:
    rcv = Receiver()
    try:
        reg = requests.post(portal["ctl"] + "/outgoing_webhooks", json={
            "url": rcv.url, "events": ["ONCRMDEALADD", "ONCRMDEALUPDATE"]}, timeout=10).json()
        did = ok(portal, "crm.deal.add", {"fields": {"TITLE": "Событие"}})
        ok(portal, "crm.deal.update", {"id": did, "fields": {"STAGE_ID": "EXECUTING"}})
        requests.patch(portal["ctl"] + f"/ui/deal/{did}", json={"fields": {"COMMENTS": "Позвонить"}, "user_id": 1},
                       timeout=10).raise_for_status()
        assert requests.post(portal["ctl"] + "/events/wait", json={}, timeout=10).json()["done"]
        assert [f["event"] for f in rcv.forms] == ["ONCRMDEALADD", "ONCRMDEALUPDATE", "ONCRMDEALUPDATE"]
        f = rcv.forms[0]
        assert f["ctype"] == "application/x-www-form-urlencoded"
        assert f["data"] == {"FIELDS": {"ID": str(did)}} and int(f["ts"]) > 0
        assert f["event_handler_id"] == str(reg["ids"][0])
        assert f["auth"]["application_token"] == reg["application_token"]
        assert f["auth"]["member_id"] == portal["member_id"] and f["auth"]["domain"] == portal["domain"]
        assert f["auth"]["client_endpoint"].endswith(f"/{portal['portal']}/rest/")
        assert "server_endpoint" in f["auth"]
        events = [e for e in requests.get(portal["ctl"] + "/log", timeout=10).json()["entries"]
                  if e["kind"] == "event"]
        assert len(events) == 3 and all(e["status"] == 200 for e in events)
    finally:
        rcv.handle.stop()


def test_slow_or_dead_handler_does_not_block(portal: dict[str, Any]) -> None:
    requests.post(portal["ctl"] + "/outgoing_webhooks", json={"url": "http://127.0.0.1:9/nothing",
                                                              "events": ["ONCRMCONTACTADD"]}, timeout=10)
    t0 = time.time()
    ok(portal, "crm.contact.add", {"fields": {"NAME": "Ольга"}})
    assert time.time() - t0 < 1
    requests.post(portal["ctl"] + "/events/wait", json={}, timeout=15)
    ev = [e for e in requests.get(portal["ctl"] + "/log", timeout=10).json()["entries"] if e["kind"] == "event"]
    assert ev and ev[0]["status"] is None and ev[0]["error"]


def test_two_portals_are_independent(sandbox: Any) -> None:
    a, b = _portal(sandbox), _portal(sandbox, rate_limit=True, burst=3)
    ok(a, "crm.deal.add", {"fields": {"TITLE": "A"}})
    assert ok(b, "crm.deal.list") == []
    assert ok(b, "crm.deal.add", {"fields": {"TITLE": "B"}}) == 1          # own id sequence
    assert rest(b, "profile").status_code == 200
    assert rest(b, "profile").status_code == 503                         # b's bucket is full ...
    assert rest(a, "profile").status_code == 200                         # ... a's is not
    # b's webhook code does not open a
    r = requests.post(a["webhook_url"].replace(a["webhook_code"], b["webhook_code"]) + "profile", timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "NO_AUTH_FOUND"
    la = requests.get(a["ctl"] + "/log", timeout=10).json()
    lb = requests.get(b["ctl"] + "/log", timeout=10).json()
    assert la["limit_hits"] == 0 and lb["limit_hits"] == 1


def test_auth_errors_and_unknown_method(sandbox: Any, portal: dict[str, Any]) -> None:
    r = requests.post(f"{sandbox.url}/{portal['portal']}/rest/1/wrongcode/crm.deal.list.json", timeout=10)
    assert r.status_code == 401 and r.json() == {"error": "NO_AUTH_FOUND",
                                                 "error_description": "Wrong authorization data"}
    r = rest(portal, "crm.deal.nosuchthing")
    assert r.status_code == 404 and r.json()["error"] == "ERROR_METHOD_NOT_FOUND"
    hook = requests.post(portal["ctl"] + "/webhooks", json={"user_id": 1, "scopes": ["task"]}, timeout=10).json()
    r = requests.post(hook["webhook_url"] + "crm.deal.list", timeout=10)
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    assert requests.post(hook["webhook_url"] + "tasks.task.list", timeout=10).status_code == 200
    requests.patch(portal["ctl"] + "/faults", json={"access_denied": True}, timeout=10)
    assert rest(portal, "profile").json()["error"] == "ACCESS_DENIED"
    requests.patch(portal["ctl"] + "/faults", json={"access_denied": False}, timeout=10)
    # secrets never appear in the request log
    log = requests.get(portal["ctl"] + "/log", timeout=10).text
    assert portal["webhook_code"] not in log and hook["webhook_code"] not in log


def test_validation_and_not_found(portal: dict[str, Any]) -> None:
    r = rest(portal, "crm.deal.get", {"id": 424242})
    assert r.status_code == 404 and r.json() == {"error": "ERROR_NOT_FOUND", "error_description": "Not found"}
    assert rest(portal, "crm.deal.update", {"id": 424242, "fields": {"TITLE": "x"}}).status_code == 404
    r = rest(portal, "crm.company.add", {"fields": {"COMPANY_TYPE": "CUSTOMER"}})
    assert r.status_code == 400 and r.json()["error"] == "ERROR_CORE"
    r = rest(portal, "crm.contact.add", {"fields": {"NAME": "X", "EMAIL": [{"VALUE": "x@@"}]}})
    assert r.status_code == 400 and r.json()["error"] == "ERROR_CORE"
    r = rest(portal, "crm.deal.add", {"fields": {"CATEGORY_ID": 77}})
    assert r.status_code == 400 and r.json()["error"] == "ERROR_CORE"


def test_faults(portal: dict[str, Any]) -> None:
    ctl = portal["ctl"] + "/faults"
    requests.patch(ctl, json={"fail_next": 1, "error_statuses": [503]}, timeout=10)
    r = rest(portal, "crm.deal.list")
    assert r.status_code == 503
    assert rest(portal, "crm.deal.list").status_code == 200
    requests.patch(ctl, json={"fail_next": 1, "error_statuses": [502]}, timeout=10)
    r = rest(portal, "crm.deal.list")
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html")
    # write applied, answer lost (500)
    requests.patch(ctl, json={"lost_next": 1, "lost_answer_mode": "500"}, timeout=10)
    r = rest(portal, "crm.deal.add", {"fields": {"TITLE": "Потерянный ответ", "ORIGIN_ID": "L1"}})
    assert r.status_code == 500 and r.json()["error"] == "INTERNAL_SERVER_ERROR"
    assert len(ok(portal, "crm.deal.list", {"filter": {"ORIGIN_ID": "L1"}})) == 1
    # write applied, connection dropped mid-answer
    requests.patch(ctl, json={"lost_next": 1, "lost_answer_mode": "drop"}, timeout=10)
    with pytest.raises(requests.exceptions.RequestException):
        rest(portal, "crm.deal.add", {"fields": {"TITLE": "Обрыв", "ORIGIN_ID": "L2"}}).json()
    assert len(ok(portal, "crm.deal.list", {"filter": {"ORIGIN_ID": "L2"}})) == 1
    # timeout longer than the client's
    requests.patch(ctl, json={"timeout_next": 1, "timeout_sleep": 2.0}, timeout=10)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(portal["webhook_url"] + "profile", timeout=0.3)
    requests.patch(ctl, json={"latency": 0.2, "methods": ["crm.deal.get"]}, timeout=10)
    t0 = time.time()
    ok(portal, "crm.deal.list")
    assert time.time() - t0 < 0.2
    assert requests.patch(ctl, json={"nope": 1}, timeout=10).status_code == 400
    faults = [e.get("fault") for e in requests.get(portal["ctl"] + "/log", timeout=10).json()["entries"]]
    assert faults.count("lost_answer") == 2 and faults.count("error") == 2


def test_requisites_bankdetails_addresses(portal: dict[str, Any]) -> None:
    presets = ok(portal, "crm.requisite.preset.list")
    assert [p["NAME"] for p in presets] == ["Организация", "ИП", "Физ. лицо"]
    co = ok(portal, "crm.company.add", {"fields": {"TITLE": "ООО «СтройМонтаж»"}})
    rq = ok(portal, "crm.requisite.add", {"fields": {"ENTITY_TYPE_ID": 4, "ENTITY_ID": co, "PRESET_ID": 1,
                                                     "NAME": "Реквизиты", "RQ_INN": "7707083893",
                                                     "RQ_KPP": "773601001"}})
    assert ok(portal, "crm.requisite.list", {"filter": {"RQ_INN": "7707083893"}})[0]["ID"] == str(rq)
    ok(portal, "crm.requisite.update", {"id": rq, "fields": {"RQ_KPP": "773601002"}})
    assert ok(portal, "crm.requisite.get", {"id": rq})["RQ_KPP"] == "773601002"
    assert rest(portal, "crm.requisite.add", {"fields": {"ENTITY_TYPE_ID": 4, "ENTITY_ID": co,
                                                         "NAME": "x"}}).json()["error"] == "ERROR_CORE"
    bd = ok(portal, "crm.requisite.bankdetail.add", {"fields": {"ENTITY_ID": rq, "NAME": "Основной счёт",
                                                                "RQ_BIK": "044525225",
                                                                "RQ_ACC_NUM": "40702810938000000001"}})
    assert ok(portal, "crm.requisite.bankdetail.get", {"id": bd})["RQ_BIK"] == "044525225"
    key = {"TYPE_ID": 6, "ENTITY_TYPE_ID": 8, "ENTITY_ID": rq}
    assert ok(portal, "crm.address.add", {"fields": {**key, "CITY": "Москва", "ADDRESS_1": "ул. Ленина, 1"}})
    assert rest(portal, "crm.address.add", {"fields": {**key, "CITY": "x"}}).status_code == 400
    ok(portal, "crm.address.update", {"fields": {**key, "POSTAL_CODE": "101000"}})
    addr = ok(portal, "crm.address.list", {"filter": {"ENTITY_ID": rq}})
    assert addr[0]["CITY"] == "Москва" and addr[0]["POSTAL_CODE"] == "101000" and addr[0]["TYPE_ID"] == "6"
    ok(portal, "crm.address.delete", {"fields": key})
    assert ok(portal, "crm.address.list", {"filter": {"ENTITY_ID": rq}}) == []
    ok(portal, "crm.requisite.delete", {"id": rq})
    assert rest(portal, "crm.requisite.bankdetail.get", {"id": bd}).status_code == 404


def test_seed_and_directory_methods(sandbox: Any) -> None:
    info = _portal(sandbox, seed=True)
    cats = ok(info, "crm.category.list", {"entityTypeId": 2})["categories"]
    assert [c["name"] for c in cats] == ["Общая", "PRO.Leads"]
    stages = ok(info, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE"}})
    assert [s["STATUS_ID"] for s in stages] == ["NEW", "PREPARATION", "PREPAYMENT_INVOICE", "EXECUTING",
                                                "FINAL_INVOICE", "WON", "LOSE"]
    pro = ok(info, "crm.status.list", {"filter": {"ENTITY_ID": f"DEAL_STAGE_{cats[1]['id']}"}})
    assert "Готов к первому заказу" in [s["NAME"] for s in pro] and pro[0]["STATUS_ID"].startswith("C1:")
    ufs = {u["FIELD_NAME"] for u in ok(info, "crm.deal.userfield.list")}
    assert {"UF_CRM_FROM_SHOP", "UF_CRM_SHOP_ORDER"} <= ufs
    assert ok(info, "crm.contact.userfield.list")[0]["FIELD_NAME"] == "UF_CRM_SHOP_CUSTOMER_ID"
    users = ok(info, "user.get", {"ACTIVE": True})
    by_name = {f"{u['NAME']} {u['LAST_NAME']}": u for u in users}
    assert by_name["Анна Смирнова"]["IS_ONLINE"] == "Y" and by_name["Игорь Петров"]["IS_ONLINE"] == "N"
    igor = int(by_name["Игорь Петров"]["ID"])
    assert ok(info, "timeman.status", {"USER_ID": igor})["STATUS"] == "CLOSED"
    requests.patch(info["ctl"] + f"/users/{igor}", json={"online": True, "workday": "OPENED"}, timeout=10)
    assert ok(info, "user.get", {"ID": igor})[0]["IS_ONLINE"] == "Y"
    assert ok(info, "timeman.status", {"USER_ID": igor})["STATUS"] == "OPENED"
    shop = ok(info, "crm.deal.list", {"filter": {"UF_CRM_FROM_SHOP": "1"}, "select": ["ID", "UF_CRM_SHOP_ORDER"]})
    assert [d["UF_CRM_SHOP_ORDER"] for d in shop] == ["1001", "1002"]
    assert ok(info, "profile")["ADMIN"] is True
    n = ok(info, "im.notify.system.add", {"USER_ID": igor, "MESSAGE": "Новый заказ №1003"})
    assert requests.get(info["ctl"] + "/notifications", timeout=10).json()["notifications"][0]["ID"] == n
    task = ok(info, "tasks.task.add", {"fields": {"TITLE": "Перезвонить клиенту", "RESPONSIBLE_ID": igor,
                                                  "UF_CRM_TASK": ["D_1"]}})
    assert task["task"]["id"] == "1"
    listed = rest(info, "tasks.task.list", {"filter": {"RESPONSIBLE_ID": igor}}).json()
    assert listed["result"]["tasks"][0]["title"] == "Перезвонить клиенту" and listed["total"] == 1
    assert isinstance(ok(info, "crm.timeline.comment.add", {"fields": {"ENTITY_ID": 1, "ENTITY_TYPE": "deal",
                                                                      "COMMENT": "Оплачено"}}), int)
    fields = ok(info, "crm.deal.fields")
    assert fields["UF_CRM_SHOP_ORDER"]["isDynamic"] is True and fields["ID"]["isReadOnly"] is True


def test_crm_item_universal_api(portal: dict[str, Any]) -> None:
    item = ok(portal, "crm.item.add", {"entityTypeId": 2, "fields": {"title": "Через crm.item", "opportunity": 500,
                                                                     "originatorId": "shop", "originId": "77"}})
    it = item["item"]
    assert it["title"] == "Через crm.item" and it["stageId"] == "NEW" and it["opportunity"] == 500.0
    assert isinstance(it["id"], int) and it["categoryId"] == 0
    ok(portal, "crm.item.update", {"entityTypeId": 2, "id": it["id"], "fields": {"stageId": "EXECUTING"}})
    assert ok(portal, "crm.deal.get", {"id": it["id"]})["STAGE_ID"] == "EXECUTING"
    found = ok(portal, "crm.item.list", {"entityTypeId": 2, "filter": {"originId": "77"}})
    assert [x["id"] for x in found["items"]] == [it["id"]]
    r = rest(portal, "crm.item.get", {"entityTypeId": 2, "id": 99999})
    assert r.status_code == 400 and r.json()["error"] == "NOT_FOUND"


def test_products_leads_and_authorization_code(sandbox: Any, portal: dict[str, Any]) -> None:
    pid = ok(portal, "crm.product.add", {"fields": {"NAME": "Кабель ВВГнг 3x2.5", "PRICE": 120.5}})
    assert ok(portal, "crm.product.list", {"select": ["ID", "NAME", "PRICE"]}) == [
        {"ID": str(pid), "NAME": "Кабель ВВГнг 3x2.5", "PRICE": "120.50"}]
    lid = ok(portal, "crm.lead.add", {"fields": {"NAME": "Пётр", "EMAIL": [{"VALUE": "petr@example.ru"}]}})
    ok(portal, "crm.lead.productrows.set", {"id": lid, "rows": [{"PRODUCT_ID": pid, "PRICE": 5, "QUANTITY": 2}]})
    lead = ok(portal, "crm.lead.get", {"id": lid})
    assert lead["OPPORTUNITY"] == "10.00" and lead["STATUS_ID"] == "NEW" and lead["TITLE"] == f"Лид #{lid}"
    code = requests.post(portal["ctl"] + "/oauth/code", json={"user_id": 1}, timeout=10).json()["code"]
    form = {"grant_type": "authorization_code", "client_id": portal["client_id"],
            "client_secret": portal["client_secret"], "code": code}
    tok = requests.post(f"{sandbox.url}/oauth/token/", data=form, timeout=10).json()
    assert tok["member_id"] == portal["member_id"] and tok["client_endpoint"].endswith(f"/{portal['portal']}/rest/")
    assert requests.post(f"{sandbox.url}/oauth/token/", data=form, timeout=10).json()["error"] == "invalid_grant"
    assert requests.get(tok["client_endpoint"] + "profile.json", params={"auth": tok["access_token"]},
                        timeout=10).json()["result"]["ID"] == "1"


def test_state_api_and_app_factory() -> None:
    state = SandboxState(rate_limit=False)
    ids = seed_demo(state, "default")
    assert ids["pipeline_pro_leads"] == 1 and len(ids["deals"]) == 3
    h = serve_in_thread(create_app(state))
    try:
        info = state.portal().info()
        r = requests.post(h.url + info["webhook_path"] + "crm.deal.list", json={"filter": {">=ID": 2}}, timeout=10)
        assert r.json()["total"] == 2
        assert "code" not in repr(state.portal().webhooks[0])
    finally:
        h.stop()


# ------------------------------------------------------------------------------------------------
# fast-bitrix24 from PyPI, unchanged
def _fb(url: str) -> Any:
    from fast_bitrix24 import Bitrix
    return Bitrix(url, verbose=False, ssl=False)


def test_fast_bitrix24_bulk(portal: dict[str, Any]) -> None:
    b = _fb(portal["webhook_url"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        created = b.call("crm.deal.add", [{"fields": {"TITLE": f"Заказ №{i}", "ORIGIN_ID": str(i),
                                                      "ORIGINATOR_ID": "shop"}} for i in range(130)])
    assert len(created) == 130 and len(set(created)) == 130, created
    deals = b.get_all("crm.deal.list", {"select": ["ID", "TITLE", "ORIGIN_ID"], "filter": {"ORIGINATOR_ID": "shop"}})
    assert len(deals) == 130 and {d["ORIGIN_ID"] for d in deals} == {str(i) for i in range(130)}
    by_id = b.get_by_ID("crm.deal.get", created[:60])
    # (call() returns results in batch completion order, so match by content, not position)
    assert set(by_id) == {str(i) for i in created[:60]}
    assert all(d["TITLE"] == f"Заказ №{d['ORIGIN_ID']}" for d in by_id.values())
    first = min(created)
    res = b.call_batch({"halt": 0, "cmd": {"one": f"crm.deal.get?id={first}",
                                           "rows": "crm.deal.productrows.set?id=$result[one][ID]"
                                                   "&rows[0][PRICE]=10&rows[0][QUANTITY]=3",
                                           "two": f"crm.deal.get?id={first}"}})
    assert res["one"]["ID"] == str(first) and res["two"]["OPPORTUNITY"] == "30.00"
    log = requests.get(portal["ctl"] + "/log", timeout=10).json()
    assert log["limit_hits"] == 0 and not log["errors"], log["errors"]
    assert log["requests"] <= 12, [e["method"] for e in log["entries"]]


def test_fast_bitrix24_with_rate_limit_on(sandbox: Any) -> None:
    info = _portal(sandbox, rate_limit=True)
    b = _fb(info["webhook_url"])
    ids = [b.call("crm.contact.add", {"fields": {"NAME": f"Клиент {i}", "PHONE": [{"VALUE": f"+7900000000{i}"}]}})
           for i in range(5)]
    assert len(set(ids)) == 5
    contacts = b.get_all("crm.contact.list", {"select": ["ID", "NAME", "PHONE"]})
    assert len(contacts) == 5 and contacts[0]["PHONE"][0]["VALUE"].startswith("+7900")
    assert b.get_all("user.get")[0]["ID"] == "1"
    log = requests.get(info["ctl"] + "/log", timeout=10).json()
    assert log["limit_hits"] == 0 and log["requests"] == 7
