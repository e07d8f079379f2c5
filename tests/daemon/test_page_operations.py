"""The page's operations over HTTP: who sees what, connection check, backfill with progress, run
now, pause and resume, the entity search, the trace, languages."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon_env import SHOP_PASSWORD, TOKEN, Env, _teardown, build_env
from trace_fake import fake_trace

from syncd.connector import Health
from syncd.daemon.runtime import _Context
from syncd.daemon.scheduler import Scheduler

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def client(env: Env, **kw: Any) -> httpx.Client:
    return httpx.Client(base_url=env.url, timeout=10, follow_redirects=False, **kw)


@contextmanager
def session(env: Env, **kw: Any) -> Iterator[tuple[httpx.Client, str]]:
    """A browser's session: logged in, with the page's CSRF token."""
    with client(env, **kw) as c:
        assert c.post("/login", data={"token": TOKEN, "next": "/"}).status_code == 303
        m = re.search(r'<meta name="csrf" content="([0-9a-f]+)">', c.get("/").text)
        assert m
        yield c, m.group(1)


def _private_world(env: Env) -> None:
    env.make_conflict()
    env.remote(env.crm).edit("person", "c9", name="Анна Смирнова", email="anna@example.ru")
    env.remote(env.shop).edit("order", "o-bad", number="77", status="НЕИЗВЕСТНО", total="10")
    env.settle(1)


PRIVATE = ("anna@example.ru", "Анна Смирнова", "НЕИЗВЕСТНО", "из CRM", "из магазина", "person.comment")


@pytest.fixture
def public_env(tmp_path: Path) -> Any:
    e = build_env(tmp_path, daemon="public_stats = true")
    yield e
    _teardown(e)


# -- who sees what ---------------------------------------------------------------------------------
def test_without_a_login_the_page_shows_no_customer_data(env: Env) -> None:
    _private_world(env)
    with client(env) as c:
        r = c.get("/")
        assert r.status_code == 200 and 'id="token"' in r.text and "Вход в syncd" in r.text
        for s in (*PRIVATE, env.crm, "Интеграции"):          # not even the counts by default
            assert s not in r.text, s
        assert c.get("/part/glance").status_code == 401 and c.get("/part/runs").status_code == 401
        assert c.get("/part/nope").status_code == 404
        # a notice or error in the URL is not echoed to a visitor without a login
        assert "<b>x" not in c.get("/", params={"error": "<b>x</b>"}).text
        for api in ("/api/entities?q=anna", "/api/trace?q=77", "/api/quarantine/1", "/api/backfill/x"):
            assert c.get(api).status_code == 401, api
        for post in ("/admin/check", f"/admin/check/{env.shop}", f"/admin/backfill/{env.shop}",
                     f"/admin/run/{env.shop}", f"/admin/pause/{env.shop}", f"/admin/resume/{env.shop}"):
            assert c.post(post, json={}).status_code == 401, post
    assert not env.rt.is_paused(env.shop)


def test_public_stats_shows_counts_but_nothing_of_a_customer(public_env: Env) -> None:
    env = public_env
    _private_world(env)
    env.rt.connectors[env.shop].fail_reads = 2
    env.rt.sync_once([env.shop])                          # runs that failed, the password in the error
    with client(env) as c:
        page = c.get("/").text
        part = c.get("/part/glance")
        assert c.get("/part/runs").status_code == 401
    assert part.status_code == 200
    for body in (page, part.text):
        assert f'id="integration-{env.crm}"' in body and 'data-k="outbox_dead"' in body
        assert "svg" in body                                # the charts
        for s in (*PRIVATE, SHOP_PASSWORD, "TransientError", "shop.example", TOKEN):
            assert s not in body, s
        assert 'data-action="check"' not in body and "/admin/" not in body      # no operations either
    assert 'id="token"' in page and 'id="review"' not in page and 'id="runs"' not in page


def test_logged_in_the_page_has_everything(env: Env) -> None:
    _private_world(env)
    env.rt.store.kv_set(f"conn:{env.crm}:last_exchange", time.time() - 120)
    with session(env) as (c, _csrf):
        page = c.get("/").text
        runs = c.get("/part/runs").text
        glance = c.get("/part/glance").text
    for s in PRIVATE:
        assert s in page, s
    assert "последний обмен 2 минуты назад" in page and "последний обмен" in glance
    assert "запусков без изменений" in runs or "запуск без изменений" in runs
    assert 'data-action="check"' in glance and f"/admin/pause/{env.crm}" in glance


def test_static_files_and_language(env: Env) -> None:
    with client(env) as c:
        js = c.get("/static/page.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert c.get("/static/page.css").headers["content-type"].startswith("text/css")
        assert c.get("/static/../http.py").status_code == 404 and c.get("/static/x.js").status_code == 404
        page = c.get("/").text
        assert re.search(r'/static/page\.css\?v=[0-9a-f]{10}', page)
        assert 'lang="ru"' in page
        assert 'lang="en"' in c.get("/", headers={"Accept-Language": "en-US,en;q=0.9"}).text
        assert "Log in to syncd" in c.get("/login", headers={"Accept-Language": "en"}).text
        # the switch at the top: a cookie, then back where the visitor was
        r = c.get("/lang/en", params={"next": "/login"})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert "Log in to syncd" in c.get("/login").text
        assert c.get("/lang/en", params={"next": "https://evil.example/"}).headers["location"] == "/"
        c.get("/lang/ru")
        assert "Вход в syncd" in c.get("/login", headers={"Accept-Language": "en"}).text


def test_configured_language_wins_over_the_browser(tmp_path: Path) -> None:
    env = build_env(tmp_path, daemon='language = "en"\ntimezone = "Asia/Yekaterinburg"')
    try:
        with session(env, headers={"Accept-Language": "ru-RU,ru"}) as (c, _):
            page = c.get("/").text
        assert 'lang="en"' in page and "Integrations" in page and "Asia/Yekaterinburg, UTC+05:00" in page
    finally:
        _teardown(env)


# -- connection check ------------------------------------------------------------------------------
def test_check_one_system_and_all(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    with client(env) as c:
        r = c.post(f"/admin/check/{env.shop}", headers=AUTH)
        assert r.status_code == 200 and r.json()["ok"] is True
        assert r.json()["findings"] == [{"name": env.shop, "ok": True, "detail": "0 objects"}]
        r = c.post("/admin/check", headers=AUTH)
        names = [f["name"] for f in r.json()["findings"]]
        assert names == ["database", env.crm, env.shop] and r.json()["ok"] is True
        assert c.post("/admin/check/nope", headers=AUTH).status_code == 404

        def down() -> Health:
            raise ConnectionError(f"connect to https://syncd:{SHOP_PASSWORD}@shop.example/ refused")

        monkeypatch.setattr(env.rt.connectors[env.shop], "health", down)
        monkeypatch.setattr(env.rt.connectors[env.crm], "health", lambda: Health(False, "HTTP 401 from the portal"))
        r = c.post("/admin/check", headers=AUTH)
        found = {f["name"]: f for f in r.json()["findings"]}
        assert r.json()["ok"] is False
        assert found[env.crm] == {"name": env.crm, "ok": False, "detail": "HTTP 401 from the portal"}
        assert found[env.shop]["ok"] is False and "ConnectionError" in found[env.shop]["detail"]
        assert SHOP_PASSWORD not in r.text and "***" in found[env.shop]["detail"]


def test_check_from_the_page_needs_csrf_and_reports_in_a_notice(env: Env) -> None:
    with session(env) as (c, csrf):
        assert c.post(f"/admin/check/{env.shop}", json={}).status_code == 403
        r = c.post(f"/admin/check/{env.shop}", json={}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json()["notice"] == f"✓ {env.shop}: 0 objects"
        r = c.post(f"/admin/check/{env.shop}", data={"csrf": csrf})       # without the script: a form post
        assert r.status_code == 303 and r.headers["location"].startswith("/?notice=")
        assert f"✓ {env.shop}: 0 objects" in c.get(r.headers["location"]).text


# -- backfill ------------------------------------------------------------------------------------------
def _wait_job(c: httpx.Client, job_id: str, timeout: float = 20) -> list[dict[str, Any]]:
    seen = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        j = c.get(f"/api/backfill/{job_id}", headers=AUTH).json()
        seen.append(j)
        if j["state"] in ("done", "failed"):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"backfill {job_id} did not finish: {seen[-1]}")


def test_backfill_runs_in_the_background_with_progress(env: Env) -> None:
    for i in range(24):
        env.shop_person(f"p{i}", name=f"Клиент {i}", email=f"c{i}@example.ru", comment="")
    conn = env.rt.connectors[env.shop]
    conn.batch_size, conn.read_delay = 4, 0.1
    with client(env) as c:
        r = c.post(f"/admin/backfill/{env.shop}", json={"since": "2026-01-01"}, headers=AUTH)
        assert r.status_code == 200, r.text
        job = r.json()["job"]
        assert job["state"] == "running" and job["since"] == "2025-12-31T21:00:00+00:00"   # midnight in Moscow
        again = c.post(f"/admin/backfill/{env.shop}", json={"since": "2026-01-01"}, headers=AUTH)
        assert again.status_code == 409 and "already running" in again.json()["error"]
        seen = _wait_job(c, job["id"])
    done = seen[-1]
    assert done["state"] == "done" and done["percent"] == 100 and done["error"] is None
    # 24 people read from the shop and created in syncd, then 24 created in the CRM
    assert done["records_read"] == 24 and done["counts"]["created"] == 48 and done["counts"]["pushed"] == 24
    assert [s["state"] for s in done["streams"]] == ["done", "done"]
    reads = [j["records_read"] for j in seen]
    assert reads == sorted(reads) and 0 < len({*reads}) and any(0 < n < 24 for n in reads)   # it moved
    percents = [j["percent"] for j in seen]
    assert percents == sorted(percents) and percents[0] < 100
    assert len(env.remote(env.crm).objects["person"]) == 24
    assert done["finished_at"] is not None


def test_backfill_refusals(env: Env) -> None:
    with session(env) as (c, csrf):
        def post(system: str, since: Any) -> httpx.Response:
            return c.post(f"/admin/backfill/{system}", json={"since": since}, headers={"X-CSRF-Token": csrf})

        r = post(env.shop, "not-a-date")
        assert r.status_code == 400 and "не дата: not-a-date" in r.json()["error"]       # the page's language
        assert post(env.shop, "").status_code == 400
        assert "в будущем" in post(env.shop, "2999-01-01").json()["error"]
        assert post("nope", "2026-01-01").status_code == 404
        env.rt.set_paused(env.shop, True)
        r = post(env.shop, "2026-01-01")
        assert r.status_code == 409 and "приостановлена" in r.json()["error"]
        # a peer that calls syncd (1C) has no streams: nothing to import
        env.rt.connectors[env.crm].streams = {}
        r = post(env.crm, "2026-01-01")
        assert r.status_code == 400 and "нечего загружать" in r.json()["error"]
        assert c.get("/api/backfill/nope").status_code == 404
    with client(env) as api:
        r = api.post(f"/admin/backfill/{env.crm}", json={"since": "2026-01-01"}, headers=AUTH)
        assert "nothing to import" in r.json()["error"]         # the API speaks English


# -- run now, pause, resume ----------------------------------------------------------------------------
def test_run_now_pause_and_resume(env: Env) -> None:
    calls: list[tuple[str, str]] = []
    env.rt.trigger_hook = lambda system, stream: calls.append((system, stream))
    with client(env) as c:
        r = c.post(f"/admin/run/{env.shop}", headers=AUTH)
        assert r.status_code == 200 and r.json()["triggered"] == ["person", "order"]
        assert calls == [(env.shop, "person"), (env.shop, "order")]
        calls.clear()
        assert c.post(f"/admin/pause/{env.shop}", headers=AUTH).json() == {
            "ok": True, "system": env.shop, "paused": True, "changed": True}
        assert c.post(f"/admin/pause/{env.shop}", headers=AUTH).json()["changed"] is False
        assert env.rt.is_paused(env.shop) and c.get("/stats").json()["integrations"][env.shop]["paused"] is True
        assert c.post(f"/admin/run/{env.shop}", headers=AUTH).status_code == 409
        assert c.post(f"/admin/poll/{env.shop}/person", headers=AUTH).status_code == 409
        assert calls == []
        r = c.post(f"/admin/resume/{env.shop}", headers=AUTH)
        assert r.json()["paused"] is False and not env.rt.is_paused(env.shop)
        assert calls == [(env.shop, "person"), (env.shop, "order")]           # catching up at once
        assert c.post("/admin/pause/nope", headers=AUTH).status_code == 404


def test_a_paused_system_is_neither_pulled_nor_pushed(env: Env) -> None:
    sched = Scheduler(env.rt)
    env.shop_person("s1")
    env.rt.set_paused(env.shop, True)
    env.rt.set_paused(env.crm, True)
    sched._run_stream(env.shop, "person")
    sched._push(None)
    assert env.rt.store.recent_runs(10) == [] and env.rt.store.find_entity(env.shop, "person", "s1") is None
    env.rt.set_paused(env.shop, False)
    sched._run_stream(env.shop, "person")                  # the shop is read; the CRM still paused
    assert env.rt.store.find_entity(env.shop, "person", "s1") is not None
    assert env.remote(env.crm).objects["person"] == {}
    assert len(env.rt.store.list_outbox("pending")) == 1
    # a peer that downloads its writes (1C) gets an empty claim while paused
    ctx = _Context(env.rt, env.crm)
    claim = ctx.take_writes()
    assert claim.ops == [] and claim.token.startswith("paused-")
    ctx.settle_writes(claim.token, {})
    ctx.release_writes(claim.token)
    env.rt.set_paused(env.crm, False)
    sched._push(None)
    assert [p["email"] for p in env.remote(env.crm).objects["person"].values()] == ["ivan@example.ru"]


def test_one_stream_is_never_read_twice_at_once(env: Env) -> None:
    import threading

    for i in range(8):
        env.shop_person(f"p{i}", email=f"p{i}@example.ru")
    conn = env.rt.connectors[env.shop]
    conn.batch_size, conn.read_delay = 2, 0.2
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(env.rt.run_stream(env.shop, "person")))
    t.start()
    lock = env.rt._stream_lock(env.shop, "person")
    deadline = time.monotonic() + 10
    while not lock.locked() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert lock.locked()
    assert env.rt.run_stream(env.shop, "person") is None          # busy: skipped (a scheduled tick)
    waited = env.rt.run_stream(env.shop, "person", wait=True)     # a backfill waits its turn
    t.join()
    assert out[0].created == 8 and waited is not None and waited.created == 0


# -- review by search, quarantine, trace ----------------------------------------------------------------------
def test_entities_api_binds_a_review_by_search(env: Env) -> None:
    env.shop_person("s2", name="Анна Смирнова", email="anna@example.ru")
    env.settle()
    env.remote(env.crm).edit("person", "c9", name="Смирнова А.", email="a.smirnova@mail.ru")
    env.settle(1)
    (item,) = env.rt.store.list_review()
    with client(env) as c:
        r = c.get("/api/entities", params={"q": "Смирнова", "type": "person"}, headers=AUTH)
        assert r.status_code == 200
        results = r.json()["results"]
        assert [x["label"] for x in results] == ["Анна Смирнова"]
        assert c.get("/api/entities", params={"q": "Смирнова", "type": "order"}, headers=AUTH).json()["results"] == []
        r = c.post(f"/admin/review/{item['id']}/resolve", json={"entity_id": results[0]["id"]}, headers=AUTH)
        assert r.status_code == 200, r.text
    assert env.rt.store.find_entity(env.crm, "person", "c9") == results[0]["id"]


def test_quarantine_record_and_a_refused_release_on_the_page(env: Env) -> None:
    env.remote(env.shop).edit("order", "o1", number="1", status="UNKNOWN", total="10")
    env.settle(1)
    (item,) = env.rt.store.list_quarantine()
    with session(env) as (c, csrf):
        r = c.get(f"/api/quarantine/{item['id']}")
        assert r.status_code == 200 and "UNKNOWN" in r.json()["raw"]
        assert c.get("/api/quarantine/999").status_code == 404
        assert "запись в полученном виде" in c.get("/").text
        r = c.post(f"/admin/quarantine/{item['id']}/release", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"].endswith("#quarantine")
        page = c.get(r.headers["location"]).text
        m = re.search(r'<div class="error" id="error" role="alert">(.*?)</div>', page, re.DOTALL)
        assert m and f"Запись карантина {item['id']} по-прежнему не принимается" in m.group(1)
        assert "UNKNOWN" in m.group(1)


def test_trace_api(env: Env) -> None:
    env.remote(env.shop).edit("order", "o1", number="1001", status="N", total="1500")
    env.settle()
    with client(env) as c:
        assert c.get("/api/trace", params={"q": "1001"}).status_code == 401
        # the real trace (syncd.trace): the order by its number, its ids in both systems
        r = c.get("/api/trace", params={"q": "1001"}, headers=AUTH)
        assert r.status_code == 200
        (real,) = r.json()["records"]
        assert real["type"] == "order" and set(real["ids"]) == {env.shop, env.crm}
        assert any(e["kind"] == "write" and "confirmed" in e["summary"] for e in real["events"])
    from syncd.daemon.http import create_app
    from syncd.sandbox.server import serve_in_thread

    server = serve_in_thread(create_app(env.rt, trace=fake_trace(env.rt.store, env.crm)))
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            assert c.get("/api/trace", headers=AUTH).status_code == 400
            body = c.get("/api/trace", params={"q": "1001"}, headers=AUTH).json()
    finally:
        server.stop()
    (rec,) = body["records"]
    assert body["query"] == "1001" and rec["type"] == "order" and set(rec["ids"]) == {env.shop, env.crm}
    assert {e["kind"] for e in rec["events"]} == {"change", "write"}
