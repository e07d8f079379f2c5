"""The Bitrix24 sandbox's control API for fault tests, over real HTTP: writes refused until cleared
(dead letter → fix → replay), an answer lost after the write was done, the portal's clock and
back-dated records."""

from __future__ import annotations

import time
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
    return info


def rest(info: dict[str, Any], method: str, params: dict[str, Any] | None = None) -> requests.Response:
    return requests.post(info["webhook_url"] + method + ".json", json=params or {}, timeout=10)


def ok(info: dict[str, Any], method: str, params: dict[str, Any] | None = None) -> Any:
    r = rest(info, method, params)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def ctl(info: dict[str, Any], method: str, path: str, body: Any = None, status: int | None = None) -> Any:
    r = requests.request(method, info["ctl"] + path, json=body, timeout=10)
    if status is not None:
        assert r.status_code == status, (r.status_code, r.text)
    else:
        assert r.status_code < 300, (r.status_code, r.text)
    return r.json()


def deals(info: dict[str, Any], **flt: Any) -> list[dict[str, Any]]:
    return ok(info, "crm.deal.list", {"filter": flt, "select": ["ID", "TITLE", "DATE_CREATE", "DATE_MODIFY"]})


# -- writes refused until cleared -----------------------------------------------------------------
def test_an_add_with_matching_fields_is_refused_until_cleared(portal: dict[str, Any]) -> None:
    rule = ctl(portal, "POST", "/rejections", {"method": "crm.deal.add", "fields": {"UTM_SOURCE": "spam"},
                                               "description": "Поле \"Источник\" заполнено неверно."}, 201)
    r = rest(portal, "crm.deal.add", {"fields": {"TITLE": "Заказ", "UTM_SOURCE": "spam"}})
    assert r.status_code == 400 and r.json() == {"error": "ERROR_CORE",
                                                 "error_description": "Поле \"Источник\" заполнено неверно."}
    assert deals(portal) == []
    # other fields pass; the same write inside a batch fails alone, as a per-command error
    ok(portal, "crm.deal.add", {"fields": {"TITLE": "Заказ", "UTM_SOURCE": "yandex"}})
    cmd = {"bad": "crm.deal.add?" + build_query({"fields": {"TITLE": "b", "UTM_SOURCE": "spam"}}),
           "good": "crm.deal.add?" + build_query({"fields": {"TITLE": "g"}})}
    res = ok(portal, "batch", {"halt": 0, "cmd": cmd})
    assert res["result_error"]["bad"]["error"] == "ERROR_CORE" and "good" in res["result"]
    assert ctl(portal, "GET", "/rejections")["rejections"][0]["hits"] == 2
    # cleared: the same write goes through (the replay after the fix)
    assert ctl(portal, "DELETE", f"/rejections/{rule['id']}") == {"cleared": 1}
    ok(portal, "crm.deal.add", {"fields": {"TITLE": "Заказ", "UTM_SOURCE": "spam"}})
    assert sorted(d["TITLE"] for d in deals(portal)) == ["g", "Заказ", "Заказ"]


def test_an_update_of_one_record_fails_permanently_or_n_times(portal: dict[str, Any]) -> None:
    a = ok(portal, "crm.deal.add", {"fields": {"TITLE": "A"}})
    b = ok(portal, "crm.deal.add", {"fields": {"TITLE": "B"}})
    ctl(portal, "POST", "/rejections", {"method": "crm.deal.update", "record_id": a, "status": 400,
                                        "error": "ERROR_CORE", "description": "Сделка заблокирована."}, 201)
    for _ in range(3):
        assert rest(portal, "crm.deal.update", {"id": a, "fields": {"TITLE": "A2"}}).status_code == 400
    assert ok(portal, "crm.deal.update", {"id": b, "fields": {"TITLE": "B2"}}) is True
    assert ok(portal, "crm.deal.get", {"id": a})["TITLE"] == "A"
    ctl(portal, "DELETE", "/rejections")
    # `times`: the next N matching calls only
    ctl(portal, "POST", "/rejections", {"method": "crm.deal.update", "record_id": a, "times": 1}, 201)
    assert rest(portal, "crm.deal.update", {"id": a, "fields": {"TITLE": "A3"}}).status_code == 400
    assert ok(portal, "crm.deal.update", {"id": a, "fields": {"TITLE": "A3"}}) is True
    assert ctl(portal, "POST", "/rejections", {"method": "crm.deal.add", "bogus": 1}, 400)["error"] == "bad_request"


# -- an answer lost after the write was done ---------------------------------------------------------
def test_the_next_call_of_a_named_method_is_executed_and_its_answer_lost(portal: dict[str, Any]) -> None:
    d = ok(portal, "crm.deal.add", {"fields": {"TITLE": "A"}})
    comment = {"fields": {"ENTITY_ID": d, "ENTITY_TYPE": "deal", "COMMENT": "Оплачено"}}
    ctl(portal, "PATCH", "/faults", {"methods": ["crm.timeline.comment.add"], "lost_next": 1})
    ok(portal, "crm.deal.update", {"id": d, "fields": {"TITLE": "B"}})           # other methods: untouched
    r = rest(portal, "crm.timeline.comment.add", comment)
    assert r.status_code == 500 and r.json()["error"] == "INTERNAL_SERVER_ERROR"
    listed = ok(portal, "crm.timeline.comment.list", {"filter": {"ENTITY_ID": d, "ENTITY_TYPE": "deal"}})
    assert [c["COMMENT"] for c in listed] == ["Оплачено"], "the write was done before the answer was lost"
    assert isinstance(ok(portal, "crm.timeline.comment.add", comment), int)      # only the next one
    # a batch that carries the method loses its answer too ("drop": the connection closes mid-answer)
    ctl(portal, "PATCH", "/faults", {"methods": ["im.notify.system.add"], "lost_next": 1, "lost_answer_mode": "drop"})
    with pytest.raises(requests.RequestException):
        rest(portal, "batch", {"cmd": {"n": "im.notify.system.add?USER_ID=1&MESSAGE=hi"}})
    assert [n["MESSAGE"] for n in ctl(portal, "GET", "/users/1/notifications")["notifications"]] == ["hi"]
    entries = ctl(portal, "GET", "/log")["entries"]
    assert [e.get("fault") for e in entries if e.get("fault")] == ["lost_answer", "lost_answer"]


# -- the portal's clock and back-dated records --------------------------------------------------------
def test_the_clock_moves_and_a_record_is_back_dated_without_an_event(portal: dict[str, Any], sandbox: Any) -> None:
    before = ctl(portal, "GET", "/clock")
    assert before["offset"] == 0
    moved = ctl(portal, "PATCH", "/clock", {"advance": 15 * 86400})
    assert moved["offset"] == 15 * 86400 and moved["now"][:10] > before["now"][:10]
    d = ok(portal, "crm.deal.add", {"fields": {"TITLE": "из будущего"}})
    assert ok(portal, "crm.deal.get", {"id": d})["DATE_CREATE"][:10] == moved["now"][:10]
    ctl(portal, "PATCH", "/clock", {"offset": 0})
    # the outgoing webhook is watching: back-dating is a data fix, nobody edited the deal now
    ctl(portal, "POST", "/outgoing_webhooks", {"url": sandbox.url + "/nowhere", "events": ["ONCRMDEALUPDATE"]})
    e = ok(portal, "crm.deal.add", {"fields": {"TITLE": "старая"}})
    out = ctl(portal, "PATCH", f"/dates/deal/{e}", {"DATE_CREATE": "2026-01-10T09:00:00+03:00",
                                                    "DATE_MODIFY": "2026-01-12T10:00:00+03:00",
                                                    "MOVED_TIME": "2026-01-12T10:00:00+03:00"})
    assert out["DATE_MODIFY"] == "2026-01-12T10:00:00+03:00"
    got = ok(portal, "crm.deal.get", {"id": e})
    assert (got["DATE_CREATE"], got["MOVED_TIME"]) == ("2026-01-10T09:00:00+03:00", "2026-01-12T10:00:00+03:00")
    assert [x["ID"] for x in deals(portal, **{"<DATE_MODIFY": "2026-02-01T00:00:00+03:00"})] == [str(e)]
    ctl(portal, "POST", "/events/wait", {"timeout": 5})
    time.sleep(0.2)
    assert not [x for x in ctl(portal, "GET", "/log")["entries"] if x.get("kind") == "event"]
    assert ctl(portal, "PATCH", f"/dates/deal/{e}", {"TITLE": "x"}, 400)["error"] == "bad_request"
    assert ctl(portal, "PATCH", "/dates/deal/999", {"DATE_CREATE": "2026-01-10"}, 404)["error"] == "not_found"
    # moving to a given instant
    assert ctl(portal, "PATCH", "/clock", {"now": "2030-05-01T12:00:00+03:00"})["now"] == "2030-05-01T12:00:00+03:00"
