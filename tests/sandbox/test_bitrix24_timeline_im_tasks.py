"""The Bitrix24 sandbox over real HTTP: timeline comments, notifications with TAG, tasks — the calls a
client makes to find its own side effects again before re-sending them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from syncd.sandbox.bitrix24 import start
from syncd.sandbox.bitrix24.php import build_query


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    h = start(rate_limit=False)
    yield h
    h.stop()


@pytest.fixture
def portal(sandbox: Any) -> dict[str, Any]:
    r = requests.post(f"{sandbox.url}/_sandbox/portals", json={"name": "p" + uuid.uuid4().hex[:8],
                                                               "rate_limit": False}, timeout=10)
    assert r.status_code == 201, r.text
    info = r.json()
    info["ctl"] = f"{sandbox.url}/_sandbox/{info['portal']}"
    info["base"] = sandbox.url
    return info


def rest(info: dict[str, Any], method: str, params: dict[str, Any] | None = None) -> requests.Response:
    return requests.post(info["webhook_url"] + method + ".json", json=params or {}, timeout=10)


def ok(info: dict[str, Any], method: str, params: dict[str, Any] | None = None) -> Any:
    r = rest(info, method, params)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def err(info: dict[str, Any], method: str, params: dict[str, Any] | None = None) -> tuple[int, str, str]:
    r = rest(info, method, params)
    body = r.json()
    return r.status_code, body["error"], body["error_description"]


def ctl(info: dict[str, Any], method: str, path: str, body: Any = None, **kw: Any) -> Any:
    r = requests.request(method, info["ctl"] + path, json=body, timeout=10, **kw)
    assert r.status_code < 300, (r.status_code, r.text)
    return r.json()


# -- timeline comments --------------------------------------------------------------------------------
def test_comments_list_by_owner_with_select_order_and_paging(portal: dict[str, Any]) -> None:
    a = ok(portal, "crm.deal.add", {"fields": {"TITLE": "A"}})
    b = ok(portal, "crm.deal.add", {"fields": {"TITLE": "B"}})
    ids = [ok(portal, "crm.timeline.comment.add", {"fields": {"ENTITY_ID": a, "ENTITY_TYPE": "deal",
                                                              "COMMENT": f"Звонок {i}"}}) for i in range(3)]
    ok(portal, "crm.timeline.comment.add", {"fields": {"ENTITY_ID": b, "ENTITY_TYPE": "deal", "COMMENT": "другая",
                                                       "AUTHOR_ID": 1}})
    r = rest(portal, "crm.timeline.comment.list", {"filter": {"ENTITY_ID": a, "ENTITY_TYPE": "deal"}}).json()
    assert [c["ID"] for c in r["result"]] == [str(i) for i in ids] and r["total"] == 3 and "next" not in r
    assert set(r["result"][0]) == {"ID", "CREATED", "ENTITY_ID", "ENTITY_TYPE", "AUTHOR_ID", "COMMENT", "FILES"}
    assert r["result"][0]["ENTITY_ID"] == str(a) and r["result"][0]["AUTHOR_ID"] == "1"
    assert r["result"][0]["CREATED"].endswith("+03:00") and r["result"][0]["FILES"] == {}
    sel = ok(portal, "crm.timeline.comment.list", {"filter": {"ENTITY_ID": a, "ENTITY_TYPE": "deal"},
                                                   "select": ["ID", "COMMENT"], "order": {"ID": "DESC"}})
    assert sel == [{"ID": str(i), "COMMENT": f"Звонок {n}"} for n, i in reversed(list(enumerate(ids)))]
    # paging: 50 a page, `next`, `total`
    for i in range(60):
        cmd = {"c": "crm.timeline.comment.add?" + build_query({"fields": {"ENTITY_ID": b, "ENTITY_TYPE": "deal",
                                                                          "COMMENT": f"#{i}"}})}
        assert not ok(portal, "batch", {"cmd": cmd})["result_error"]
    p1 = rest(portal, "crm.timeline.comment.list", {"filter": {"ENTITY_ID": b, "ENTITY_TYPE": "deal"}}).json()
    assert len(p1["result"]) == 50 and p1["next"] == 50 and p1["total"] == 61
    p2 = rest(portal, "crm.timeline.comment.list", {"filter": {"ENTITY_ID": b, "ENTITY_TYPE": "deal"},
                                                    "start": 50}).json()
    assert len(p2["result"]) == 11 and "next" not in p2
    # get
    got = ok(portal, "crm.timeline.comment.get", {"id": ids[1]})
    assert got["COMMENT"] == "Звонок 1" and got["ENTITY_TYPE"] == "deal"
    # the control API shows the same, per owner
    seen = ctl(portal, "GET", "/comments", params={"entity_type": "deal", "entity_id": str(a)})["comments"]
    assert [c["COMMENT"] for c in seen] == ["Звонок 0", "Звонок 1", "Звонок 2"]


def test_comment_errors_as_documented(portal: dict[str, Any]) -> None:
    d = ok(portal, "crm.deal.add", {"fields": {"TITLE": "A"}})
    assert err(portal, "crm.timeline.comment.get", {"id": 999}) == (400, "", "Not found.")
    assert err(portal, "crm.timeline.comment.list", {"filter": {"ENTITY_TYPE": "deal"}})[:2] == (400, "")
    assert err(portal, "crm.timeline.comment.add", {"fields": {"ENTITY_ID": 999, "ENTITY_TYPE": "deal",
                                                               "COMMENT": "x"}})[:2] == (400, "NOT_FOUND")
    assert err(portal, "crm.timeline.comment.add", {"fields": {"ENTITY_ID": d, "ENTITY_TYPE": "deal",
                                                               "COMMENT": "  "}})[:2] == (400, "INVALID_ARG_VALUE")
    assert err(portal, "crm.timeline.comment.add", {"fields": {"COMMENT": "x"}})[:2] == (400, "100")
    c = ok(portal, "crm.timeline.comment.add", {"fields": {"ENTITY_ID": d, "ENTITY_TYPE": "deal", "COMMENT": "x"}})
    ok(portal, "crm.timeline.comment.update", {"id": c, "fields": {"COMMENT": "исправлено"}})
    assert ok(portal, "crm.timeline.comment.get", {"id": c})["COMMENT"] == "исправлено"
    ok(portal, "crm.timeline.comment.delete", {"id": c})
    assert ok(portal, "crm.timeline.comment.list", {"filter": {"ENTITY_ID": d, "ENTITY_TYPE": "deal"}}) == []
    assert ok(portal, "crm.timeline.comment.fields")["ENTITY_ID"]["isRequired"] is True


# -- notifications with TAG -----------------------------------------------------------------------
def test_a_notice_with_the_same_tag_replaces_the_earlier_one_for_that_user(portal: dict[str, Any]) -> None:
    u2 = ctl(portal, "POST", "/users", {"name": "Анна", "last_name": "Смирнова"})["ID"]
    u3 = ctl(portal, "POST", "/users", {"name": "Игорь", "last_name": "Петров"})["ID"]
    tagged = {"TAG": "syncd|order-1001", "CLIENT_ID": "syncd"}
    n1 = ok(portal, "im.notify.system.add", {"USER_ID": u2, "MESSAGE": "Новый заказ №1001", **tagged})
    n2 = ok(portal, "im.notify.system.add", {"USER_ID": u2, "MESSAGE": " Новый заказ №1001 ", **tagged})
    ok(portal, "im.notify.system.add", {"USER_ID": u3, "MESSAGE": "Новый заказ №1001", **tagged})
    ok(portal, "im.notify.system.add", {"USER_ID": u2, "MESSAGE": "Другой", "TAG": "other", "CLIENT_ID": "syncd"})
    seen = ctl(portal, "GET", f"/users/{u2}/notifications")["notifications"]
    assert [(n["ID"], n["MESSAGE"]) for n in seen] == [(n2, "Новый заказ №1001"), (n2 + 2, "Другой")]
    assert seen[0]["REPLACED"] == [n1] and seen[0]["TAG"] == "syncd|order-1001"
    assert len(ctl(portal, "GET", f"/users/{u3}/notifications")["notifications"]) == 1
    assert len(ctl(portal, "GET", "/notifications", params={"all": "1", "user_id": str(u2)})["notifications"]) == 3
    # a webhook call without CLIENT_ID has no application to scope the tag to: nothing is replaced
    ok(portal, "im.notify.system.add", {"USER_ID": u3, "MESSAGE": "a", "TAG": "t"})
    ok(portal, "im.notify.system.add", {"USER_ID": u3, "MESSAGE": "b", "TAG": "t"})
    assert [n["MESSAGE"] for n in ctl(portal, "GET", f"/users/{u3}/notifications")["notifications"]][-2:] == ["a", "b"]


def test_an_apps_tag_is_scoped_to_the_app_and_errors_are_documented(portal: dict[str, Any]) -> None:
    tok = ctl(portal, "POST", "/oauth/tokens", {"user_id": 1})
    url = portal["base"] + portal["prefix"] + "/rest/im.notify.system.add.json"
    for text in ("первое", "второе"):
        r = requests.post(url, json={"USER_ID": 1, "MESSAGE": text, "TAG": "t1", "auth": tok["access_token"]},
                          timeout=10)
        assert r.status_code == 200, r.text
    assert [n["MESSAGE"] for n in ctl(portal, "GET", "/users/1/notifications")["notifications"]] == ["второе"]
    assert err(portal, "im.notify.system.add", {"MESSAGE": "x"})[:2] == (400, "USER_ID_EMPTY")
    assert err(portal, "im.notify.system.add", {"USER_ID": 1, "MESSAGE": " "})[:2] == (400, "MESSAGE_EMPTY")


# -- tasks --------------------------------------------------------------------------------------------
def test_tasks_update_get_and_a_list_that_filters_like_the_portal(portal: dict[str, Any]) -> None:
    u2 = int(ctl(portal, "POST", "/users", {"name": "Анна", "last_name": "Смирнова"})["ID"])
    t1 = ok(portal, "tasks.task.add", {"fields": {"TITLE": "Позвонить клиенту", "RESPONSIBLE_ID": u2,
                                                  "UF_CRM_TASK": ["D_5", "C_7"]}})["task"]
    t2 = ok(portal, "tasks.task.add", {"fields": {"TITLE": "Позвонить клиенту", "RESPONSIBLE_ID": 1,
                                                  "UF_CRM_TASK": ["D_6"]}})["task"]
    t3 = ok(portal, "tasks.task.add", {"fields": {"TITLE": "Выставить счёт", "RESPONSIBLE_ID": u2}})["task"]
    assert t1["status"] == "2" and t1["ufCrmTask"] == ["D_5", "C_7"] and t1["responsibleId"] == str(u2)

    def ids(flt: dict[str, Any], **kw: Any) -> list[str]:
        return [t["id"] for t in ok(portal, "tasks.task.list", {"filter": flt, **kw})["tasks"]]

    # default order: ID descending
    assert ids({}) == [t3["id"], t2["id"], t1["id"]]
    assert ids({"TITLE": "позвонить КЛИЕНТУ"}, order={"ID": "ASC"}) == [t1["id"], t2["id"]]   # LIKE, any case
    assert ids({"TITLE": "Позвонить"}) == []                                                 # no pattern: whole
    assert ids({"TITLE": "%счёт"}) == [t3["id"]] and ids({"TITLE": "Вы_тавить%"}) == [t3["id"]]
    assert ids({"TITLE": "Позвонить клиенту", "RESPONSIBLE_ID": u2}) == [t1["id"]]
    assert ids({"UF_CRM_TASK": "D_5"}) == [t1["id"]] and ids({"!RESPONSIBLE_ID": u2}) == [t2["id"]]
    assert ids({">ID": t1["id"]}, order={"ID": "ASC"}) == [t2["id"], t3["id"]]
    listed = ok(portal, "tasks.task.list", {"filter": {"ID": t1["id"]}, "select": ["ID", "TITLE", "UF_CRM_TASK"]})
    assert listed["tasks"] == [{"id": t1["id"], "title": "Позвонить клиенту", "ufCrmTask": ["D_5", "C_7"]}]

    up = ok(portal, "tasks.task.update", {"taskId": t1["id"], "fields": {"TITLE": "Перезвонить", "STATUS": 5}})
    assert up["task"]["title"] == "Перезвонить" and up["task"]["status"] == "5" and up["task"]["closedDate"]
    assert ok(portal, "tasks.task.get", {"taskId": t1["id"]})["task"]["title"] == "Перезвонить"
    assert ids({"REAL_STATUS": 5}) == [t1["id"]] and ids({"!STATUS": 5}) == [t3["id"], t2["id"]]
    assert err(portal, "tasks.task.update", {"taskId": 999, "fields": {"TITLE": "x"}})[:2] == (400, "0")
    assert err(portal, "tasks.task.update", {"taskId": t1["id"], "fields": {}})[:2] == (400, "100")
    assert err(portal, "tasks.task.update", {"taskId": t1["id"], "fields": {"RESPONSIBLE_ID": 99}})[:2] == \
        (400, "ERROR_CORE")
    assert err(portal, "tasks.task.get", {"taskId": 999})[:2] == (400, "0")


def test_task_list_pages_and_filters_dates_by_the_portals_clock(portal: dict[str, Any]) -> None:
    old = ok(portal, "tasks.task.add", {"fields": {"TITLE": "старая"}})["task"]
    ctl(portal, "PATCH", "/clock", {"advance": 20 * 86400})
    new = [ok(portal, "tasks.task.add", {"fields": {"TITLE": f"новая {i}"}})["task"] for i in range(55)]
    assert new[0]["createdDate"][:10] > old["createdDate"][:10]
    since = new[0]["createdDate"]
    page1 = rest(portal, "tasks.task.list", {"filter": {">=CREATED_DATE": since}, "select": ["ID"]}).json()
    assert page1["total"] == 55 and page1["next"] == 50 and len(page1["result"]["tasks"]) == 50
    page2 = rest(portal, "tasks.task.list", {"filter": {">=CREATED_DATE": since}, "select": ["ID"],
                                             "start": 50}).json()
    assert len(page2["result"]["tasks"]) == 5 and "next" not in page2
    assert [t["id"] for t in ok(portal, "tasks.task.list", {"filter": {"<CREATED_DATE": since}})["tasks"]] == \
        [old["id"]]
