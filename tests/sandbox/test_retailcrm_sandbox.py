"""The RetailCRM API v5 sandbox, checked by the vendor's Python client `retailcrm` 5.3.0 running unchanged
in its own venv (crm_clients.run), plus direct HTTP for what the client cannot show (form encoding,
routing errors, the control API, faults, the request log)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from crm_clients import run
from syncd.sandbox.retailcrm import start
from syncd.sandbox.server import ServerHandle

# Every client script starts with a client `c` and `R(response)` -> {"status", "ok", "body"}.
PRELUDE = """\
import json, retailcrm
c = retailcrm.v5(P["url"], P["key"])
def R(r):
    return {"status": r.get_status_code(), "ok": r.is_successful(), "body": r.get_response()}
"""


@pytest.fixture
def h() -> Iterator[ServerHandle]:
    handle = start(rate_limit=False)
    yield handle
    handle.stop()


def client(h: ServerHandle, script: str, key: str | None = None, **params: Any) -> Any:
    return run(PRELUDE + textwrap.dedent(script), url=h.url, key=key or h.extra["api_key"], **params)


def ctl(h: ServerHandle, method: str, path: str, body: dict[str, Any] | None = None) -> requests.Response:
    return requests.request(method, f"{h.url}/_sandbox{path}", json=body)


def api(h: ServerHandle, method: str, path: str, *, key: str | None = None, **kw: Any) -> requests.Response:
    return requests.request(method, f"{h.extra['api_url']}{path}", headers={"X-API-KEY": key or h.extra["api_key"]},
                            **kw)


ORDER = {"externalId": "shop-1001", "firstName": "Иван", "lastName": "Петров", "email": "ivan@example.com",
         "phone": "+79001112233", "customerComment": "позвонить",
         "items": [{"offer": {"externalId": "sku-1"}, "productName": "Кружка", "initialPrice": 450, "quantity": 2},
                   {"productName": "Ложка", "initialPrice": 99.5, "quantity": 1}],
         "delivery": {"code": "courier", "cost": 300, "address": {"text": "Москва, Тверская 1"}},
         "customFields": {"onec_guid": "9f1c-01"}}


# ---- the official client -------------------------------------------------------------------------
def test_client_order_create_and_get_by_external_id_and_id(h: ServerHandle) -> None:
    assert ctl(h, "POST", "/custom-fields", {"entity": "order", "code": "onec_guid"}).status_code == 200
    out = client(h, """
        r = c.order_create(P["order"])
        oid = r.get_response()["id"]
        print(json.dumps({"create": R(r), "ext": R(c.order(P["order"]["externalId"])),
                          "id": R(c.order(oid, "id")), "site": R(c.order(P["order"]["externalId"], site="shop"))}))
    """, order=ORDER)
    create = out["create"]
    assert create["status"] == 201 and create["ok"] and create["body"]["success"] is True
    o = create["body"]["order"]
    assert create["body"]["id"] == o["id"] == 1 and o["number"] == "1A" and o["site"] == "shop"
    assert o["status"] == "new" and o["orderMethod"] == "shopping-cart" and o["fromApi"] is True
    assert o["summ"] == 999.5 and o["totalSumm"] == 1299.5          # goods, goods + delivery
    assert [(i["productName"], i["initialPrice"], i["quantity"]) for i in o["items"]] == [
        ("Кружка", 450, 2), ("Ложка", 99.5, 1)]
    assert o["items"][0]["offer"] == {"externalId": "sku-1"}
    assert o["delivery"]["code"] == "courier" and o["delivery"]["address"]["text"] == "Москва, Тверская 1"
    assert o["customFields"] == {"onec_guid": "9f1c-01"} and o["payments"] == {}
    # no customer given: one is made from the order's contact data
    assert o["customer"]["firstName"] == "Иван" and o["customer"]["phones"] == [{"number": "+79001112233"}]
    assert o["customer"]["ordersCount"] == 1 and o["customer"]["totalSumm"] == 1299.5
    for k in ("ext", "id", "site"):
        assert out[k]["status"] == 200 and out[k]["body"]["order"] == o


def test_client_orders_paging_limits_and_filters(h: ServerHandle) -> None:
    made = ctl(h, "POST", "/seed", {"orders": 120}).json()["orders"]
    assert len(made) == 120
    out = client(h, """
        pages = {}
        for limit in (20, 50, 100):
            page, got = 1, []
            while True:
                r = c.orders(limit=limit, page=page).get_response()
                got.append({"pagination": r["pagination"], "ids": [o["id"] for o in r["orders"]]})
                if page >= r["pagination"]["totalPageCount"]:
                    break
                page += 1
            pages[limit] = got
        default = c.orders().get_response()["pagination"]
        by_ids = c.orders({"ids": [3, 5, 7]}).get_response()["orders"]
        by_ext = c.orders({"externalIds": [P["ext"]]}).get_response()["orders"]
        by_name = c.orders({"customer": "покупатель17"}).get_response()["orders"]
        past = c.orders(page=99).get_response()
        bad = c.orders(limit=30)
        print(json.dumps({"pages": pages, "default": default, "ids": [o["id"] for o in by_ids],
                          "ext": [o["externalId"] for o in by_ext], "name": sorted(o["firstName"] for o in by_name),
                          "past": [past["orders"], past["pagination"]["currentPage"]],
                          "bad": [bad.get_status_code(), bad.get_error_msg(), bad.get_errors()]}))
    """, ext=h.extra["state"].orders[7]["externalId"])
    for limit, count in ((20, 6), (50, 3), (100, 2)):
        got = out["pages"][str(limit)]
        assert len(got) == count
        for n, page in enumerate(got, 1):
            assert page["pagination"] == {"limit": limit, "totalCount": 120, "currentPage": n, "totalPageCount": count}
        ids = [i for page in got for i in page["ids"]]
        assert ids == sorted(made, reverse=True)                       # every order once, newest first
    assert out["default"]["limit"] == 20
    assert sorted(out["ids"]) == [3, 5, 7] and out["ext"] == [h.extra["state"].orders[7]["externalId"]]
    assert out["name"] == ["Покупатель17"]
    assert out["past"] == [[], 99]
    assert out["bad"][0] == 400 and out["bad"][2] == {"limit": "The value you selected is not a valid choice."}


def test_client_edit_and_history_mark_own_writes_not_ui_edits(h: ServerHandle) -> None:
    other = ctl(h, "POST", "/api-keys", {}).json()["key"]
    script = """
        if P.get("write"):
            oid = c.order_create(P["order"]).get_response()["id"]
            edit = c.order_edit({"externalId": P["order"]["externalId"], "status": "assembling",
                                 "managerComment": "собрать", "managerId": 2,
                                 "items": [{"id": 1, "quantity": 3}]})
            by_id = c.order_edit({"id": oid, "email": "new@example.com"}, "id")
            print(json.dumps({"edit": R(edit), "by_id": R(by_id)}))
        else:
            first = c.orders_history({"sinceId": P["since"]}, limit=50).get_response()
            print(json.dumps(first))
    """
    out = client(h, script, write=True, order=ORDER)
    assert out["edit"]["status"] == 200 and out["edit"]["body"]["id"] == 1
    edited = out["edit"]["body"]["order"]
    assert edited["status"] == "assembling" and edited["managerId"] == 2 and edited["managerComment"] == "собрать"
    assert [i["id"] for i in edited["items"]] == [1] and edited["summ"] == 1350    # item 2 left out: removed
    assert out["by_id"]["body"]["order"]["email"] == "new@example.com"
    # a manager edits the order in the web UI
    ui = ctl(h, "PATCH", "/ui/orders/1", {"user_id": 3, "order": {"status": "delivering"}})
    assert ui.status_code == 200
    hist = client(h, script, since=0)
    rows = [(e["field"], e["oldValue"], e["newValue"]) for e in hist["history"]]
    # one record per changed field; the order of the records of one write is not significant
    assert rows[0] == ("status", None, {"code": "new"}) and rows[5:] == [
        ("order_product.quantity", 2, 3), ("email", "ivan@example.com", "new@example.com"),
        ("status", {"code": "assembling"}, {"code": "delivering"})]
    assert sorted(rows[1:5], key=str) == sorted([("status", {"code": "new"}, {"code": "assembling"}),
                                                 ("manager", None, {"id": 2}), ("manager_comment", None, "собрать"),
                                                 ("order_product", {"id": 2}, None)], key=str)
    created, *changes, by_ui = hist["history"]
    assert created["created"] is True and created["order"]["externalId"] == "shop-1001"
    assert created["order"]["items"][0]["quantity"] == 2                # the order as created
    assert all(e["source"] == "api" and e["apiKey"] == {"current": True} for e in [created, *changes])
    assert changes[0]["order"] == {"id": 1, "externalId": "shop-1001", "managerId": 2, "site": "shop",
                                   "status": "assembling"}
    item = {e["field"]: e.get("item") for e in changes}
    assert item["order_product"] == {"id": 2}
    assert item["order_product.quantity"] == {"id": 1, "offer": {"externalId": "sku-1"}}
    assert by_ui["source"] == "user" and by_ui["user"] == {"id": 3} and "apiKey" not in by_ui
    ids = [e["id"] for e in hist["history"]]
    assert ids == sorted(ids) and hist["pagination"]["totalCount"] == 8
    # sinceId is exclusive; another key sees the same API writes as not its own
    later = client(h, script, since=ids[-2])
    assert [e["id"] for e in later["history"]] == [ids[-1]]
    theirs = client(h, script, key=other, since=0)
    assert {e["apiKey"]["current"] for e in theirs["history"] if e["source"] == "api"} == {False}


def test_client_customers_create_list_edit_history(h: ServerHandle) -> None:
    out = client(h, """
        cust = {"externalId": "c-1", "firstName": "Анна", "lastName": "Смирнова", "email": "anna@example.com",
                "phones": [{"number": "+79005550001"}], "address": {"text": "Казань"}}
        create = R(c.customer_create(cust))
        dup = R(c.customer_create(cust))
        c.customer_create({"externalId": "c-2", "firstName": "Борис", "email": "boris@example.com"})
        edit = R(c.customer_edit({"externalId": "c-1", "firstName": "Аня",
                                  "phones": [{"number": "+79005550002"}]}))
        print(json.dumps({"create": create, "dup": dup, "edit": edit,
                          "by_email": R(c.customers({"email": "anna@example.com"})),
                          "by_ext": R(c.customers({"externalIds": ["c-1", "c-2"]})),
                          "get": R(c.customer("c-1")), "get_id": R(c.customer(create["body"]["id"], "id")),
                          "hist": R(c.customers_history({"sinceId": 0}))}))
    """)
    assert out["create"]["status"] == 201 and out["create"]["body"] == {"success": True, "id": 1}
    assert out["dup"]["status"] == 400 and out["dup"]["body"]["errors"] == {
        "externalId": "Customer with externalId=c-1 already exists."}
    assert out["edit"]["status"] == 200 and out["edit"]["body"] == {"success": True, "id": 1}
    assert [x["externalId"] for x in out["by_email"]["body"]["customers"]] == ["c-1"]
    assert [x["externalId"] for x in out["by_ext"]["body"]["customers"]] == ["c-2", "c-1"]
    got = out["get"]["body"]["customer"]
    assert got == out["get_id"]["body"]["customer"]
    assert got["firstName"] == "Аня" and got["phones"] == [{"number": "+79005550002"}] and got["type"] == "customer"
    assert got["address"]["text"] == "Казань" and got["customFields"] == [] and got["ordersCount"] == 0
    hist = out["hist"]["body"]["history"]
    assert [(e["field"], e["oldValue"], e["newValue"]) for e in hist] == [
        ("id", None, 1), ("id", None, 2), ("first_name", "Анна", "Аня"),
        ("phones", "+79005550001", None), ("phones", None, "+79005550002")]
    assert hist[0]["created"] is True and hist[0]["customer"]["email"] == "anna@example.com"
    assert hist[2]["customer"] == {"id": 1, "externalId": "c-1", "site": "shop"}
    assert all(e["apiKey"] == {"current": True} for e in hist)


def test_client_corporate_customer(h: ServerHandle) -> None:
    out = client(h, """
        corp = {"externalId": "cc-1", "nickName": "ООО Ромашка", "managerId": 2,
                "companies": [{"name": "Ромашка", "isMain": True,
                               "contragent": {"legalName": "ООО «Ромашка»", "INN": "7707083893", "KPP": "773601001"}}]}
        create = R(c.customer_corporate_create(corp))
        blank = R(c.customer_corporate_create({"externalId": "cc-2"}))
        edit = R(c.customer_corporate_edit({"externalId": "cc-1", "nickName": "Ромашка"}))
        print(json.dumps({"create": create, "blank": blank, "edit": edit, "get": R(c.customer_corporate("cc-1")),
                          "by_inn": R(c.customers_corporate({"contragentInn": "7707083893"})),
                          "companies": R(c.customer_corporate_companies("cc-1")),
                          "hist": R(c.customers_corporate_history())}))
    """)
    assert out["create"]["status"] == 201 and out["create"]["body"]["success"] is True
    assert out["blank"]["status"] == 400
    assert out["blank"]["body"]["errors"] == {"nickName": "This value should not be blank."}
    # retailcrm 5.3.0 sends `customersCorporate`; the API reads `customerCorporate`
    assert out["edit"]["status"] == 400
    assert out["edit"]["body"]["errorMsg"] == "Parameter 'customerCorporate' is missing"
    corp = out["get"]["body"]["customerCorporate"]
    assert corp["type"] == "customer_corporate" and corp["nickName"] == "ООО Ромашка" and corp["managerId"] == 2
    assert corp["mainCompany"]["name"] == "Ромашка"
    assert [x["externalId"] for x in out["by_inn"]["body"]["customersCorporate"]] == ["cc-1"]
    comp = out["companies"]["body"]["companies"][0]
    assert comp["contragent"] == {"contragentType": "legal-entity", "legalName": "ООО «Ромашка»",
                                  "INN": "7707083893", "KPP": "773601001"}
    assert comp["customer"] == {"type": "customer_corporate", "id": corp["id"], "externalId": "cc-1", "site": "shop"}
    hist = out["hist"]["body"]["history"]
    assert len(hist) == 1 and hist[0]["created"] is True and hist[0]["customer"]["nickName"] == "ООО Ромашка"
    # the right parameter name works
    form = {"customerCorporate": json.dumps({"nickName": "Ромашка"})}
    r = api(h, "POST", "/customers-corporate/cc-1/edit", data=form)
    assert r.status_code == 200 and h.extra["state"].corporate[corp["id"]]["nickName"] == "Ромашка"


def test_client_payments_create_and_edit(h: ServerHandle) -> None:
    out = client(h, """
        c.order_create(P["order"])
        pay = R(c.order_payment_create({"order": {"externalId": "shop-1001"}, "type": "bank-card", "amount": 500,
                                        "externalId": "pay-1"}))
        bad = R(c.order_payment_create({"order": {"externalId": "nope"}, "type": "bank-card"}))
        edit = R(c.order_payment_edit({"id": pay["body"]["id"], "status": "paid"}, "id"))
        edit_ext = R(c.order_payment_edit({"externalId": "pay-1", "amount": 600}))
        print(json.dumps({"pay": pay, "bad": bad, "edit": edit, "edit_ext": edit_ext,
                          "order": c.order("shop-1001").get_response()["order"],
                          "hist": c.orders_history({"sinceId": 1}).get_response()["history"]}))
    """, order=ORDER)
    assert out["pay"]["status"] == 201 and out["pay"]["body"] == {"success": True, "id": 1}
    assert out["bad"]["status"] == 400 and out["bad"]["body"]["errors"] == {"order": "Order not found."}
    assert out["edit"]["status"] == 200 and out["edit_ext"]["status"] == 200
    o = out["order"]
    assert o["payments"] == {"1": {"id": 1, "status": "paid", "type": "bank-card", "amount": 600,
                                   "externalId": "pay-1"}}
    assert o["prepaySum"] == 600
    assert [(e["field"], e["oldValue"], e["newValue"]) for e in out["hist"]] == [
        ("payments", None, {"id": 1, "type": "bank-card"}),
        ("payments.status", {"code": "not-paid"}, {"code": "paid"}),
        ("payments.amount", 500, 600)]
    assert out["hist"][0]["payment"] == {"id": 1, "status": "not-paid", "type": "bank-card", "amount": 500}


def test_client_reference_books_and_users(h: ServerHandle) -> None:
    out = client(h, """
        print(json.dumps({"statuses": c.statuses().get_response(), "groups": c.status_groups().get_response(),
                          "sites": c.sites().get_response(), "pay": c.payment_types().get_response(),
                          "delivery": c.delivery_types().get_response(), "methods": c.order_methods().get_response(),
                          "users": c.users({"isManager": True}).get_response(), "user": R(c.user(2)),
                          "nouser": R(c.user(999)), "versions": R(c.api_versions()),
                          "cred": R(c.api_credentials())}))
    """)
    st = out["statuses"]["statuses"]
    assert list(st) == ["new", "client-confirmed", "assembling", "delivering", "complete", "cancel-other"]
    assert st["cancel-other"] == {"name": "Отменен", "code": "cancel-other", "active": True, "ordering": 60,
                                  "group": "cancel"}
    groups = out["groups"]["statusGroups"]
    assert list(groups) == ["new", "approval", "assembling", "delivery", "complete", "cancel"]
    assert groups["delivery"]["statuses"] == ["delivering"]
    assert out["sites"]["sites"]["shop"]["code"] == "shop" and "_suffix" not in out["sites"]["sites"]["shop"]
    assert set(out["pay"]["paymentTypes"]) == {"cash", "bank-card", "bank-transfer"}
    assert out["delivery"]["deliveryTypes"]["courier"]["defaultCost"] == 300
    assert out["methods"]["orderMethods"]["shopping-cart"]["defaultForApi"] is True
    assert [u["id"] for u in out["users"]["users"]] == [2, 3] and out["users"]["pagination"]["totalCount"] == 2
    assert out["user"]["body"]["user"]["lastName"] == "Петрова" and out["user"]["body"]["user"]["isManager"] is True
    assert out["nouser"]["status"] == 404 and out["nouser"]["body"]["errorMsg"] == "Not found"
    assert out["versions"]["body"]["versions"] == ["3.0", "4.0", "5.0"]
    cred = out["cred"]["body"]
    assert cred["siteAccess"] == "access_full" and cred["sitesAvailable"] == ["shop"]
    assert "/api/v5/orders/history" in cred["credentials"]


def test_client_validation_errors(h: ServerHandle) -> None:
    out = client(h, """
        def E(r):
            return [r.get_status_code(), r.is_successful(), r.get_error_msg(), r.get_errors()]
        c.order_create({"externalId": "dup"})
        print(json.dumps({
            "codes": E(c.order_create({"status": "zzz", "orderMethod": "fax", "email": "not-an-email",
                                       "delivery": {"code": "teleport"}})),
            "dup": E(c.order_create({"externalId": "dup"})),
            "customer": E(c.order_create({"customer": {"externalId": "ghost"}})),
            "item": E(c.order_create({"items": [{"initialPrice": 10, "quantity": 0}]})),
            "manager": E(c.order_edit({"externalId": "dup", "managerId": 1})),
            "cust_email": E(c.customer_create({"email": "x@"})),
        }))
    """)
    assert out["codes"][:3] == [400, False, "Order is not loaded"]
    assert out["codes"][3] == {"status": '"zzz" is not a valid status code.',
                               "orderMethod": '"fax" is not a valid order method code.',
                               "email": "This value is not a valid email address.",
                               "delivery.code": '"teleport" is not a valid delivery type code.'}
    assert out["dup"] == [400, False, "Order is not loaded",
                          {"externalId": "Order with externalId=dup already exists."}]
    assert out["customer"][3] == {"customer.externalId": "Customer with externalId=ghost not found."}
    assert out["item"][3] == {"items[0].quantity": "This value should be greater than 0.",
                              "items[0].productName": "This value should not be blank."}
    assert out["manager"][3] == {"managerId": "Manager with id=1 not found."}         # user 1 is no manager
    assert out["cust_email"][:3] == [400, False, "Errors in the entity format"]
    assert len(h.extra["state"].orders) == 1                                          # nothing half-written


def test_client_not_found(h: ServerHandle) -> None:
    out = client(h, """
        c.order_create({"externalId": "e-1"})
        rs = [c.order("nope"), c.order(999, "id"), c.order_edit({"externalId": "nope", "status": "new"}),
              c.customer("nope"), c.customer_corporate("nope"), c.order_payment_edit({"id": 5, "amount": 1}, "id")]
        print(json.dumps([[r.get_status_code(), r.is_successful(), r.get_error_msg()] for r in rs]))
    """)
    assert out == [[404, False, "Not found"]] * 6


def test_client_wrong_and_missing_key(h: ServerHandle) -> None:
    script = """
        rs = [c.orders(), c.order_create({"externalId": "x"}), c.api_versions(), c.api_credentials()]
        print(json.dumps([[r.get_status_code(), r.is_successful(), r.get_response()] for r in rs]))
    """
    wrong = client(h, script, key="0" * 32)
    assert wrong == [[403, False, {"success": False, "errorMsg": 'Wrong "apiKey" value.'}]] * 4
    missing = run(PRELUDE.replace('P["key"]', "None") + textwrap.dedent(script), url=h.url)
    assert missing == [[403, False, {"success": False, "errorMsg": '"apiKey" is missing.'}]] * 4
    assert h.extra["state"].orders == {}
    assert [e["key"] for e in h.extra["state"].log][-1] == ""


def test_client_rate_limit_burst_gets_503_then_recovers() -> None:
    h = start()                                                        # rate limit on by default (10/s)
    try:
        out = client(h, """
            import time
            burst = [c.statuses() for _ in range(30)]
            time.sleep(1.2)
            after = [c.statuses() for _ in range(5)]
            print(json.dumps({"burst": [[r.get_status_code(), r.is_successful(), r.get_response()] for r in burst],
                              "after": [r.get_status_code() for r in after]}))
        """)
    finally:
        h.stop()
    codes = [b[0] for b in out["burst"]]
    assert codes[:10] == [200] * 10 and codes.count(503) >= 15 and set(codes) == {200, 503}
    refused = next(b for b in out["burst"] if b[0] == 503)
    assert refused[1] is False and refused[2] == {"success": False, "errorMsg": "Limit of requests per second exceeded"}
    assert out["after"] == [200] * 5


def test_client_site_access_and_number_suffix(h: ServerHandle) -> None:
    ctl(h, "POST", "/reference/sites", {"code": "outlet", "name": "Аутлет"}).raise_for_status()
    outlet_key = ctl(h, "POST", "/api-keys", {"sites": ["outlet"]}).json()["key"]
    out = client(h, """
        print(json.dumps({"no_site": R(c.order_create({"externalId": "a"})),
                          "shop": R(c.order_create({"externalId": "a"}, "shop")),
                          "same_ext_outlet": R(c.order_create({"externalId": "a"}, "outlet")),
                          "get_any": R(c.order("a", site="outlet")), "unknown": R(c.order("a", site="mars"))}))
    """)
    assert out["no_site"]["status"] == 400 and out["no_site"]["body"]["errorMsg"] == "Parameter 'site' is missing"
    assert out["shop"]["body"]["order"]["number"] == "1A"
    assert out["same_ext_outlet"]["status"] == 201 and out["same_ext_outlet"]["body"]["order"]["number"] == "2B"
    assert out["get_any"]["body"]["order"]["site"] == "outlet"
    assert out["unknown"]["status"] == 400
    mine = client(h, """
        print(json.dumps({"list": R(c.orders()), "shop": R(c.order("a", site="shop")), "get": R(c.order("a")),
                          "create": R(c.order_create({"externalId": "b"})), "cred": R(c.api_credentials()),
                          "sites": R(c.sites())}))
    """, key=outlet_key)
    assert [o["site"] for o in mine["list"]["body"]["orders"]] == ["outlet"]
    assert mine["shop"]["status"] == 403 and mine["shop"]["body"]["errorMsg"] == "Access denied."
    assert mine["get"]["body"]["order"]["number"] == "2B"
    assert mine["create"]["status"] == 201 and mine["create"]["body"]["order"]["site"] == "outlet"   # its only site
    assert mine["cred"]["body"]["siteAccess"] == "access_selective"
    assert list(mine["sites"]["body"]["sites"]) == ["outlet"]


def test_client_orders_statuses_and_extended_status_filter(h: ServerHandle) -> None:
    out = client(h, """
        c.order_create({"externalId": "s-1"}); c.order_create({"externalId": "s-2", "status": "delivering"})
        def ext(status):
            return [o["externalId"] for o in c.orders({"extendedStatus": [status]}).get_response()["orders"]]
        print(json.dumps({"st": R(c.orders_statuses([1], ["s-2"])), "group": ext("delivery"), "code": ext("new")}))
    """)
    assert out["st"]["body"]["orders"] == [{"id": 1, "externalId": "s-1", "status": "new", "group": "new"},
                                           {"id": 2, "externalId": "s-2", "status": "delivering", "group": "delivery"}]
    assert out["group"] == ["s-2"] and out["code"] == ["s-1"]


# ---- direct HTTP -----------------------------------------------------------------------------------
def test_http_form_encoding_with_json_fields(h: ServerHandle) -> None:
    order = {"externalId": "f-1", "firstName": "Олег",
             "items": [{"productName": "Чай", "initialPrice": 10, "quantity": 3}]}
    r = api(h, "POST", "/orders/create", data={"order": json.dumps(order, ensure_ascii=False), "site": "shop"})
    assert r.status_code == 201 and r.headers["content-type"] == "application/json; charset=UTF-8"
    assert r.json()["order"]["summ"] == 30
    # a JSON body is not how the API takes writes
    r = api(h, "POST", "/orders/create", json={"order": order})
    assert r.status_code == 400 and r.json() == {"success": False, "errorMsg": "Parameter 'order' is missing"}
    r = api(h, "POST", "/orders/create", data={"order": "{not json"})
    assert r.status_code == 400 and r.json()["errors"] == {"order": "This value should be a JSON object."}
    # edit by id, key as a query parameter, PHP-indexed filter keys
    r = requests.post(f"{h.extra['api_url']}/orders/1/edit", params={"apiKey": h.extra["api_key"]},
                      data={"by": "id", "order": json.dumps({"firstName": "Олег Иванович"})})
    assert r.status_code == 200 and r.json()["order"]["firstName"] == "Олег Иванович"
    r = requests.get(f"{h.extra['api_url']}/orders", params={"apiKey": h.extra["api_key"], "filter[ids][0]": "1",
                                                             "filter[customFields][nope]": "x"})
    assert r.status_code == 200 and r.json()["pagination"]["totalCount"] == 0
    r = api(h, "GET", "/orders", params={"filter[ids][]": "1"})
    assert [o["externalId"] for o in r.json()["orders"]] == ["f-1"]
    r = api(h, "POST", "/orders/f-1/edit", data={"by": "number", "order": "{}"})
    assert r.status_code == 400 and "'by'" in r.json()["errorMsg"]


def test_http_routing_and_list_errors(h: ServerHandle) -> None:
    r = api(h, "GET", "/orders/create")
    assert r.status_code == 405 and r.json() == {"success": False, "errorMsg": "Method Not Allowed"}
    r = api(h, "GET", "/telephony/manager")
    assert r.status_code == 404 and r.json()["errorMsg"] == "API method not found"
    r = api(h, "GET", "/orders", params={"filter[city]": "Москва"})
    assert r.status_code == 400 and r.json() == {"success": False, "errorMsg": "Errors in the filter",
                                                 "errors": {"filter[city]": "This filter is not supported."}}
    r = api(h, "GET", "/orders/history", params={"limit": 10})
    assert r.status_code == 400 and "limit" in r.json()["errors"]
    r = api(h, "GET", "/customers", params={"page": 0})
    assert r.status_code == 400 and "page" in r.json()["errors"]
    assert requests.get(f"{h.url}/nowhere").status_code == 404


def test_control_faults_fail_next_json_html_and_path(h: ServerHandle) -> None:
    f = ctl(h, "PATCH", "/faults", {"fail_next": 2, "fail_status": 503}).json()
    assert f["fail_next"] == 2 and f["fail_status"] == 503
    codes = [api(h, "GET", "/reference/statuses") for _ in range(3)]
    assert [r.status_code for r in codes] == [503, 503, 200]
    assert codes[0].json() == {"success": False, "errorMsg": "Service Unavailable"}
    ctl(h, "PATCH", "/faults", {"fail_next": 1, "fail_status": 502, "html": True, "path": "/api/v5/orders"})
    assert api(h, "GET", "/reference/statuses").status_code == 200                 # another path: untouched
    r = api(h, "GET", "/orders")
    assert r.status_code == 502 and r.headers["content-type"].startswith("text/html") and "nginx" in r.text
    assert api(h, "GET", "/orders").status_code == 200
    assert ctl(h, "PATCH", "/faults", {"nope": 1}).status_code == 400


BROKEN = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)


def test_control_faults_drop_and_lost_answer(h: ServerHandle) -> None:
    form = {"order": json.dumps({"externalId": "d-1"})}
    ctl(h, "PATCH", "/faults", {"drop_next": 1})
    with pytest.raises(BROKEN):                                                    # closed mid-answer
        api(h, "POST", "/orders/create", data=form)
    assert h.extra["state"].orders == {}                                            # dropped before doing it
    ctl(h, "PATCH", "/faults", {"lose_next": 1, "path": "/api/v5/orders/create"})
    with pytest.raises(BROKEN):                                                    # closed mid-answer
        api(h, "POST", "/orders/create", data=form)
    assert [o["externalId"] for o in h.extra["state"].orders.values()] == ["d-1"]   # done, answer lost
    retry = api(h, "POST", "/orders/create", data=form)                             # a blind retry
    assert retry.status_code == 400
    assert retry.json()["errors"] == {"externalId": "Order with externalId=d-1 already exists."}
    faults = [e.get("fault") for e in ctl(h, "GET", "/log").json()["entries"]]
    assert faults == ["drop", "lost_answer", None]


def test_control_request_log(h: ServerHandle) -> None:
    api(h, "GET", "/orders")
    api(h, "GET", "/orders", key="wrong")
    api(h, "POST", "/orders/create", data={"order": "{}"})
    log = ctl(h, "GET", "/log").json()["entries"]
    assert [(e["method"], e["path"], e["status"], e["key"]) for e in log] == [
        ("GET", "/api/v5/orders", 200, h.extra["api_key"]), ("GET", "/api/v5/orders", 403, "wrong"),
        ("POST", "/api/v5/orders/create", 201, h.extra["api_key"])]
    assert log[1]["error"] == 'Wrong "apiKey" value.' and all(e["duration"] >= 0 for e in log)
    assert ctl(h, "DELETE", "/log").json() == {"ok": True} and ctl(h, "GET", "/log").json()["entries"] == []


def test_control_limits_status_429_and_switch_off(h: ServerHandle) -> None:
    assert ctl(h, "GET", "/limits").json()["enabled"] is False                      # start(rate_limit=False)
    lim = ctl(h, "PATCH", "/limits", {"enabled": True, "burst": 2, "rate": 0.5, "status": 429}).json()
    assert lim == {"enabled": True, "rate": 0.5, "burst": 2, "status": 429}
    codes = [api(h, "GET", "/users").status_code for _ in range(4)]
    assert codes == [200, 200, 429, 429]
    other = ctl(h, "POST", "/api-keys", {}).json()["key"]
    assert api(h, "GET", "/users", key=other).status_code == 200                  # the bucket is per key
    assert [e.get("fault") for e in ctl(h, "GET", "/log").json()["entries"]].count("rate_limit") == 2
    ctl(h, "PATCH", "/limits", {"enabled": False})
    assert api(h, "GET", "/users").status_code == 200
    h2 = start(limit_status=429)
    try:
        assert h2.extra["state"].limits.enabled is True and h2.extra["state"].limits.status == 429
    finally:
        h2.stop()


def test_control_clock_moves_dates_and_filters(h: ServerHandle) -> None:
    now = ctl(h, "PATCH", "/clock", {"now": "2024-03-01 10:00:00"}).json()
    assert now["now"] == "2024-03-01 10:00:00"
    first = api(h, "POST", "/orders/create", data={"order": "{}"}).json()["order"]
    moved = ctl(h, "PATCH", "/clock", {"advance": 86400}).json()
    assert moved["now"].startswith("2024-03-02 10:00")
    second = api(h, "POST", "/orders/create", data={"order": "{}"}).json()["order"]
    assert first["createdAt"].startswith("2024-03-01 10:00") and second["createdAt"].startswith("2024-03-02")
    r = api(h, "GET", "/orders", params={"filter[createdAtFrom]": "2024-03-02"})
    assert [o["id"] for o in r.json()["orders"]] == [second["id"]]
    r = api(h, "GET", "/orders/history", params={"filter[endDate]": "2024-03-01"})
    assert [e["order"]["id"] for e in r.json()["history"]] == [first["id"]]
    assert r.json()["generatedAt"].startswith("2024-03-02")
    api(h, "POST", f"/orders/{first['id']}/edit", data={"by": "id", "order": json.dumps({"status": "complete"})})
    r = api(h, "GET", "/orders", params={"filter[statusUpdatedAtFrom]": "2024-03-02", "filter[createdAtTo]": "2024-03-01"})
    assert [(o["id"], o["statusUpdatedAt"][:10]) for o in r.json()["orders"]] == [(first["id"], "2024-03-02")]
    assert ctl(h, "PATCH", "/clock", {"speed": 2}).status_code == 400


def test_control_reference_users_and_custom_fields(h: ServerHandle) -> None:
    assert ctl(h, "POST", "/reference/status-groups", {"code": "return", "name": "Возврат"}).status_code == 200
    st = ctl(h, "POST", "/reference/statuses", {"code": "returned", "name": "Возвращен", "group": "return"}).json()
    assert st == {"name": "Возвращен", "code": "returned", "active": True, "ordering": 990, "group": "return"}
    assert ctl(h, "POST", "/reference/statuses", {"code": "x", "name": "X", "group": "nope"}).status_code == 400
    assert ctl(h, "POST", "/reference/order-methods", {"code": "marketplace", "name": "Маркетплейс"}).status_code == 200
    assert ctl(h, "POST", "/reference/planets", {"code": "x", "name": "X"}).status_code == 400
    user = ctl(h, "POST", "/users", {"firstName": "Вера", "lastName": "Новикова", "email": "vera@shop.example"}).json()
    assert user["id"] == 4 and user["isManager"] is True
    ctl(h, "POST", "/custom-fields", {"entity": "customer", "code": "loyalty", "type": "string"}).raise_for_status()
    groups = api(h, "GET", "/reference/status-groups").json()["statusGroups"]
    assert groups["return"]["statuses"] == ["returned"]
    order = {"status": "returned", "orderMethod": "marketplace", "managerId": 4}
    assert api(h, "POST", "/orders/create", data={"order": json.dumps(order)}).status_code == 201
    r = api(h, "POST", "/customers/create", data={"customer": json.dumps({"customFields": {"loyalty": "gold",
                                                                                             "undefined": 1}})})
    cust = api(h, "GET", f"/customers/{r.json()['id']}", params={"by": "id"}).json()["customer"]
    assert cust["customFields"] == {"loyalty": "gold"}                                # undefined codes ignored
    assert ctl(h, "GET", "/nothing").status_code == 404


def test_control_ui_writes_are_the_managers(h: ServerHandle) -> None:
    made = ctl(h, "POST", "/ui/orders", {"user_id": 2, "order": {"externalId": "ui-1", "firstName": "Гость"}}).json()
    o = api(h, "GET", "/orders/ui-1").json()["order"]
    assert o["id"] == made["id"] and o["fromApi"] is False and o["orderMethod"] == "phone"
    bad = ctl(h, "PATCH", f"/ui/orders/{made['id']}", {"order": {"status": "nope"}})
    assert bad.status_code == 400 and bad.json()["errors"] == {"status": '"nope" is not a valid status code.'}
    cust = ctl(h, "POST", "/ui/customers", {"customer": {"firstName": "Пётр"}}).json()
    ctl(h, "PATCH", f"/ui/customers/{cust['id']}", {"customer": {"lastName": "Первый"}}).raise_for_status()
    assert ctl(h, "DELETE", f"/ui/orders/{made['id']}").json() == {"deleted": made["id"]}
    assert api(h, "GET", "/orders/ui-1").status_code == 404
    hist = api(h, "GET", "/orders/history").json()["history"]
    assert [(e.get("created"), e.get("deleted"), e["source"], e["user"]) for e in hist] == [
        (True, None, "user", {"id": 2}), (None, True, "user", {"id": 2})]
    assert hist[1]["field"] == "id" and hist[1]["oldValue"] == made["id"] and hist[1]["order"]["externalId"] == "ui-1"
    chist = api(h, "GET", "/customers/history").json()["history"]
    assert [(e["field"], e["source"]) for e in chist][-1] == ("last_name", "user")
    assert ctl(h, "PATCH", "/ui/orders/999", {"order": {}}).status_code == 404
    assert ctl(h, "POST", "/ui/orders", {"user_id": 99}).status_code == 400


def test_control_seed_reset_and_info(h: ServerHandle) -> None:
    ctl(h, "POST", "/seed", {"customers": 3, "orders": 2}).raise_for_status()
    ctl(h, "POST", "/reference/sites", {"code": "outlet", "name": "Аутлет"})
    info = ctl(h, "GET", "").json()
    assert info["api_key"] == h.extra["api_key"] and info["counts"] == {"orders": 2, "customers": 5,
                                                                        "customers_corporate": 0}
    assert ctl(h, "POST", "/reset").json() == {"ok": True}
    sb = h.extra["state"]
    assert sb.orders == {} and sb.customers == {} and sb.history["order"] == [] and len(sb.log) == 0
    assert "outlet" in sb.ref("sites")                                              # configuration kept
    ctl(h, "POST", "/reset", {"references": True})
    assert list(sb.ref("sites")) == ["shop"]
    # ids start over after a reset
    assert api(h, "POST", "/orders/create", data={"order": "{}"}).json()["id"] == 1


def test_start_handle() -> None:
    h = start(api_key="k" * 32)
    try:
        assert h.extra["api_key"] == "k" * 32 and h.extra["api_url"] == h.url + "/api/v5"
        assert h.url.startswith("http://127.0.0.1:") and h.extra["state"].limits.enabled is True
        r = requests.get(f"{h.url}/api/api-versions", headers={"X-API-KEY": "k" * 32})
        assert r.json() == {"success": True, "versions": ["3.0", "4.0", "5.0"]}
    finally:
        h.stop()


def test_client_tasks_create_list_get_edit(h: ServerHandle) -> None:
    order = api(h, "POST", "/orders/create", data={"order": json.dumps(ORDER)}).json()
    out = client(h, """
        made = c.task_create({"text": "Перезвонить", "commentary": "после 18:00", "datetime": "2030-01-02 10:00",
                              "performerId": 2, "order": {"externalId": "shop-1001"}}, site="shop")
        tid = made.get_response()["id"]
        other = c.task_create({"text": "Отправить счёт", "performerId": 3, "order": {"id": P["oid"]}})
        nobody = c.task_create({"text": "Без исполнителя"})
        bad = c.task_create({"text": "x", "performerId": 2, "datetime": "02.01.2030",
                             "order": {"id": 999}})
        listed = c.tasks({"performers": [2], "status": "performing", "text": "перезвон"}, limit=20)
        by_number = c.tasks({"order": "1A"}, limit=50)
        done = c.task_edit({"id": tid, "complete": True, "commentary": "дозвонился"})
        after = c.tasks({"status": "completed"})
        print(json.dumps({"made": R(made), "other": R(other), "nobody": R(nobody), "bad": R(bad),
                          "listed": R(listed), "by_number": R(by_number), "done": R(done), "after": R(after),
                          "one": R(c.task(tid)), "missing": R(c.task(999))}))
    """, oid=order["id"])
    assert out["made"]["status"] == 201 and out["made"]["body"] == {"success": True, "id": 1}
    assert out["other"]["status"] == 201 and out["other"]["body"]["id"] == 2
    assert out["nobody"]["status"] == 400 and out["nobody"]["body"]["errors"] == {
        "performerId": "This value should not be blank."}
    assert out["bad"]["status"] == 400 and set(out["bad"]["body"]["errors"]) == {"datetime", "order.id"}
    listed = out["listed"]["body"]
    assert [t["id"] for t in listed["tasks"]] == [1] and listed["pagination"]["totalCount"] == 1
    t = listed["tasks"][0]
    assert (t["text"], t["commentary"], t["datetime"], t["performer"], t["complete"]) == (
        "Перезвонить", "после 18:00", "2030-01-02 10:00", 2, False)
    assert t["order"] == {"id": order["id"], "externalId": "shop-1001", "number": "1A"}
    assert [t["id"] for t in out["by_number"]["body"]["tasks"]] == [2, 1]                   # newest first
    assert out["done"]["status"] == 200 and out["done"]["body"]["success"] is True
    assert [t["id"] for t in out["after"]["body"]["tasks"]] == [1]
    one = out["one"]["body"]["task"]
    assert one["complete"] is True and one["commentary"] == "дозвонился" and one["text"] == "Перезвонить"
    assert out["missing"]["status"] == 404 and out["missing"]["body"]["errorMsg"] == "Not found"
    # a manager completes the other task in the UI; the control API lists every task
    assert ctl(h, "PATCH", "/ui/tasks/2", {"task": {"complete": True}}).status_code == 200
    assert [x["complete"] for x in ctl(h, "GET", "/tasks").json()["tasks"]] == [True, True]
    assert api(h, "GET", "/tasks", params={"filter[status]": "late"}).status_code == 400


def test_http_custom_fields_and_ui_corporate(h: ServerHandle) -> None:
    ctl(h, "POST", "/custom-fields", {"entity": "order", "code": "onec_guid"}).raise_for_status()
    ctl(h, "POST", "/custom-fields", {"entity": "customer", "code": "loyalty", "name": "Лояльность"})
    got = api(h, "GET", "/custom-fields", params={"filter[entity]": "customer"}).json()
    assert [(f["code"], f["name"], f["entity"]) for f in got["customFields"]] == [("loyalty", "Лояльность", "customer")]
    made = ctl(h, "POST", "/ui/customers-corporate", {"user_id": 2, "customerCorporate": {
        "nickName": "ООО Ромашка", "companies": [{"name": "ООО Ромашка", "contragent": {"INN": "7707083893"}}]}})
    cid = made.json()["id"]
    ctl(h, "PATCH", f"/ui/customers-corporate/{cid}", {"customerCorporate": {"email": "info@romashka.ru"}}
        ).raise_for_status()
    hist = api(h, "GET", "/customers-corporate/history").json()["history"]
    assert [(e["field"], e["source"], e["user"]) for e in hist] == [("id", "user", {"id": 2}),
                                                                      ("email", "user", {"id": 2})]
