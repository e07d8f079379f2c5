"""The Bitrix24 client against the sandbox over HTTP: envelope, paging, batch, errors, OAuth, the bucket."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

import pytest
import requests
from b24helpers import State, new_portal, op

from connectors.bitrix24 import Bitrix24Client, Bitrix24Connector, Bitrix24Settings, php_query
from connectors.bitrix24.client import classify, ref
from syncd.errors import PermanentError, TransientError
from syncd.sandbox.bitrix24.php import parse_query


def _client(portal, **kw) -> Bitrix24Client:
    kw.setdefault("rate", 200.0)
    kw.setdefault("burst", 1000.0)
    return Bitrix24Client(Bitrix24Settings(webhook_url=portal.webhook_url, **kw), name="crm")


def _add_deals(client: Bitrix24Client, n: int, prefix: str = "Сделка") -> list[str]:
    res = client.batch({f"d{i}": ("crm.deal.add", {"fields": {"TITLE": f"{prefix} {i}"}}) for i in range(n)},
                       retry=False)
    assert not res.errors
    return [str(res.results[f"d{i}"]) for i in range(n)]


def test_php_query_nested_and_result_refs() -> None:
    q = php_query({"fields": {"TITLE": "A & B", "PHONE": [{"VALUE": "+7 1", "VALUE_TYPE": "WORK"}]},
                   "filter": {">ID": 5, "@ORIGIN_ID": ["x", "y"]}, "select": ["ID"], "id": ref("a", "ID"),
                   "flag": True})
    assert "fields[TITLE]=A%20%26%20B" in q and "filter[%3EID]=5" in q.replace(">", "%3E")
    assert "id=$result[a][ID]" in q
    back = parse_query(q)
    assert back["fields"] == {"TITLE": "A & B", "PHONE": [{"VALUE": "+7 1", "VALUE_TYPE": "WORK"}]}
    assert back["filter"] == {">ID": "5", "@ORIGIN_ID": ["x", "y"]}
    assert back["select"] == ["ID"] and back["flag"] == "1"


def test_envelope_and_fast_pagination(portal) -> None:
    c = _client(portal)
    ids = _add_deals(c, 50) + _add_deals(c, 50) + _add_deals(c, 30)
    env = c.call("crm.deal.list", {"select": ["ID"], "order": {"ID": "ASC"}})
    assert len(env.result) == 50 and env.next == 50 and env.total == 130
    assert "operating" in env.time or "duration" in env.time
    portal.clear_log()
    seen = [r["ID"] for r in c.list_all("crm.deal.list", {"select": ["ID", "TITLE"]})]
    assert seen == ids and len(set(seen)) == 130
    entries = [e for e in portal.log()["entries"] if e.get("kind", "rest") == "rest"]
    assert len(entries) == 3            # 50 + 50 + 30 (< 50 ends the scan), no total counting


def test_batch_references_errors_and_split(portal) -> None:
    c = _client(portal)
    res = c.batch({"a": ("crm.deal.add", {"fields": {"TITLE": "по ссылке"}}),
                   "b": ("crm.deal.get", {"id": ref("a")}),
                   "c": ("crm.deal.get", {"id": 999999}),
                   "d": ("crm.deal.update", {"id": ref("a"), "fields": {"COMMENTS": "ok"}})}, retry=False)
    assert res.results["b"]["TITLE"] == "по ссылке" and res.results["d"] is True
    assert set(res.errors) == {"c"}
    with pytest.raises(PermanentError):
        res.get("c")
    many = c.batch({f"g{i}": ("crm.deal.get", {"id": res.results["a"]}) for i in range(120)})
    assert len(many.results) == 120 and not many.errors


@pytest.mark.parametrize("setup, method, params, kind, code", [
    ({"faults": {"fail_next": 1, "error_statuses": [500]}}, "crm.deal.add", {"fields": {"TITLE": "x"}},
     TransientError, "INTERNAL_SERVER_ERROR"),
    ({"faults": {"fail_next": 1, "error_statuses": [502]}}, "crm.deal.add", {"fields": {"TITLE": "x"}},
     TransientError, "HTTP_502"),
    ({"faults": {"fail_next": 1, "error_statuses": [500], "error_html": True}}, "crm.deal.add",
     {"fields": {"TITLE": "x"}}, TransientError, "HTTP_500"),
    ({"faults": {"access_denied": True}}, "crm.deal.list", {}, PermanentError, "ACCESS_DENIED"),
    ({}, "crm.deal.get", {"id": 424242}, PermanentError, "ERROR_NOT_FOUND"),
    ({}, "crm.contact.add", {"fields": {"EMAIL": [{"VALUE": "not an e-mail"}]}}, PermanentError, "ERROR_CORE"),
    ({}, "crm.nothing.here", {}, PermanentError, "ERROR_METHOD_NOT_FOUND"),
    ({"limits": {"enabled": True, "operating_limit": 0.0}}, "crm.deal.list", {}, TransientError,
     "OPERATION_TIME_LIMIT"),
])
def test_error_classification(sandbox, setup, method, params, kind, code) -> None:
    p = new_portal(sandbox)
    c = _client(p, transient_retries=0, limit_retries=0)
    if setup.get("faults"):
        p.faults(**setup["faults"])
    if setup.get("limits"):
        c.call("crm.deal.list", {"select": ["ID"]})     # one call so operating time is spent
        p.limits(**setup["limits"])
    with pytest.raises(kind) as ei:
        c.call(method, params)
    assert ei.value.code == code
    if code == "OPERATION_TIME_LIMIT":
        assert ei.value.retry_after and ei.value.retry_after > 0
    assert p.webhook_url.split("/rest/")[1] not in str(ei.value)       # no secrets in messages


def test_insufficient_scope_and_bad_webhook(portal) -> None:
    r = requests.post(f"{portal.ctl}/webhooks", json={"user_id": 1, "scopes": ["user"]}, timeout=10).json()
    c = Bitrix24Client(Bitrix24Settings(webhook_url=r["webhook_url"]))
    with pytest.raises(PermanentError) as ei:
        c.call("crm.deal.list")
    assert ei.value.code == "insufficient_scope"
    bad = portal.webhook_url.rsplit("/", 2)[0] + "/wrongcode/"
    with pytest.raises(PermanentError) as ei:
        Bitrix24Client(Bitrix24Settings(webhook_url=bad)).call("profile")
    assert ei.value.code == "NO_AUTH_FOUND" and "wrongcode" not in str(ei.value)
    health = Bitrix24Connector("crm", Bitrix24Settings(webhook_url=bad)).health()
    assert not health.ok and "NO_AUTH_FOUND" in health.detail and "wrongcode" not in health.detail


def test_classify_codes_not_produced_by_the_sandbox() -> None:
    assert isinstance(classify("INVALID_CREDENTIALS", "", 403), PermanentError)
    assert isinstance(classify("NOT_FOUND", "", 400), PermanentError)
    assert isinstance(classify("OVERLOAD_LIMIT", "", 503), TransientError)
    e = classify("OPERATION_TIME_LIMIT", "", 503, time_info={"operating_reset_at": time.time() + 30})
    assert isinstance(e, TransientError) and 25 < e.retry_after <= 30
    assert isinstance(classify("", "", 504), TransientError)
    assert isinstance(classify("WHATEVER", "", 400), PermanentError)


def test_timeouts_and_limit_hits_are_retried_for_reads(portal) -> None:
    c = _client(portal, timeout=0.5)
    portal.faults(timeout_next=1, timeout_sleep=1.5)
    assert c.call("crm.deal.list", {"select": ["ID"]}).result == []       # read: retried inside
    portal.faults(timeout_next=1, timeout_sleep=1.5)
    with pytest.raises(TransientError) as ei:
        c.call("crm.deal.add", {"fields": {"TITLE": "x"}})               # write: surfaced
    assert ei.value.code == "TIMEOUT"
    portal.faults(fail_next=2, error_statuses=[503])                      # QUERY_LIMIT_EXCEEDED x2
    assert c.call("crm.deal.add", {"fields": {"TITLE": "y"}}).result     # refused requests: resent
    portal.faults(fail_next=50, error_statuses=[503])
    with pytest.raises(TransientError) as ei:
        _client(portal, limit_retries=1).call("crm.deal.add", {"fields": {"TITLE": "z"}})
    assert ei.value.code == "QUERY_LIMIT_EXCEEDED" and ei.value.retry_after
    portal.faults(fail_next=0)


def test_503_storm_loses_nothing_and_creates_nothing_twice(portal) -> None:
    conn = portal.connector()
    portal.faults(error_rate=0.25, error_statuses=[503, 500], lost_answer_rate=0.1, seed=7)
    results = {}
    for i in range(25):
        for attempt in range(10):          # what the pusher does: retry transient failures
            try:
                results[i] = conn.write(op("contact", f"storm{i}", {"NAME": f"Клиент {i}",
                                                                   "PHONE": [f"+7 900 000-00-{i:02d}"]}))
                break
            except TransientError:
                continue
    portal.faults(error_rate=0.0, lost_answer_rate=0.0)
    assert len(results) == 25
    rows = list(conn.client.list_all("crm.contact.list", {"select": ["ID", "ORIGIN_ID", "PHONE"]}))
    assert len(rows) == 25
    assert sorted(r["ORIGIN_ID"] for r in rows) == sorted(f"syncd-storm{i}" for i in range(25))
    assert all(len(r["PHONE"]) == 1 for r in rows)
    assert {str(results[i].external_id) for i in range(25)} == {r["ID"] for r in rows}
    errors = portal.log()["errors"]
    assert errors.get("INTERNAL_SERVER_ERROR", 0) + errors.get("QUERY_LIMIT_EXCEEDED", 0) > 5


def test_oauth_token_expiry_refreshes_and_persists(sandbox) -> None:
    p = new_portal(sandbox)
    tok = requests.post(f"{p.ctl}/oauth/tokens", json={"user_id": 1}, timeout=10).json()
    parts = urlsplit(tok["rest_url"])
    settings = Bitrix24Settings(portal_url=f"{parts.scheme}://{parts.netloc}{parts.path.removesuffix('/rest/')}",
                                client_id=tok["client_id"], client_secret=tok["client_secret"],
                                access_token=tok["access_token"], refresh_token=tok["refresh_token"],
                                oauth_url=tok["token_url"])
    state = State()
    c = Bitrix24Client(settings, state_get=state.state_get, state_set=state.state_set)
    _add_deals(c, 5)
    requests.post(f"{p.ctl}/oauth/expire", timeout=10)
    got = list(c.list_all("crm.deal.list", {"select": ["ID"]}))          # 401 expired_token -> refresh
    assert len(got) == 5
    saved = state.kv["oauth"]
    assert saved["access_token"] != tok["access_token"] and saved["refresh_token"] != tok["refresh_token"]
    assert not [e for e in p.log()["entries"] if tok["access_token"] in str(e)]
    # a restarted daemon with the old settings uses the persisted tokens (the old refresh token is spent)
    c2 = Bitrix24Client(settings, state_get=state.state_get, state_set=state.state_set)
    assert c2.call("profile").result["ID"] == "1"
    requests.post(f"{p.ctl}/oauth/expire", timeout=10)
    assert c2.call("crm.deal.add", {"fields": {"TITLE": "после обновления"}}).result
    assert state.kv["oauth"]["access_token"] != saved["access_token"]


def test_leaky_bucket_keeps_limit_hits_at_zero(sandbox) -> None:
    # the real shape (bucket + leak) at 10/s so 200 requests take ~20 s instead of ~80 s
    p = new_portal(sandbox, rate_limit=True, leak_rate=10.0, burst=20.0)
    c = _client(p, rate=10.0, burst=20.0)
    n_threads, per = 4, 50
    errors: list[Exception] = []

    def work() -> None:
        for _ in range(per):
            try:
                c.call("crm.deal.list", {"select": ["ID"], "start": -1})
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
    t0 = time.time()
    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - t0
    log = p.log()
    assert not errors
    assert log["requests"] == 200 and log["limit_hits"] == 0 and c.limit_hits == 0
    assert took >= (200 - 20) / 10.0 * 0.9           # it really was throttled, not lucky
