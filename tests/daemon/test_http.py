"""The daemon's HTTP app against a real server: health, stats, metrics, admin actions, secrets."""

from __future__ import annotations

import re

import httpx
from daemon_env import SHOP_PASSWORD, TOKEN, Env
from prometheus_client.parser import text_string_to_metric_families

from syncd.sandbox import memory

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def client(env: Env, **kw) -> httpx.Client:  # type: ignore[no-untyped-def]
    return httpx.Client(base_url=env.url, timeout=10, follow_redirects=False, **kw)


def login(c: httpx.Client) -> str:
    r = c.post("/login", data={"token": TOKEN, "next": "/"})
    assert r.status_code == 303 and r.headers["location"] == "/"
    html = c.get("/").text
    m = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert m, "logged-in page carries a CSRF field"
    return m.group(1)


# -- health, stats, metrics ---------------------------------------------------------------------
def test_healthz(env: Env) -> None:
    with client(env) as c:
        r = c.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "db": True, "instance": env.rt.instance}


def test_healthz_503_when_db_is_down(env: Env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def boom() -> bool:
        raise RuntimeError("database is gone")
    monkeypatch.setattr(env.rt.store, "ping", boom)
    with client(env) as c:
        r = c.get("/healthz")
    assert r.status_code == 503 and r.json()["db"] is False and r.json()["status"] == "error"


def test_stats_shape_and_numbers(env: Env) -> None:
    env.shop_person("s1")
    env.shop_person("s2", name="Пётр Сидоров", email="petr@example.ru")
    env.settle()
    with client(env) as c:
        r = c.get("/stats")
    assert r.status_code == 200
    st = r.json()
    assert st["instance"] == env.rt.instance
    assert set(st["integrations"]) == {env.crm, env.shop}
    shop, crm = st["integrations"][env.shop], st["integrations"][env.crm]
    for it in (shop, crm):
        assert set(it) >= {"last_run", "counts", "last_24h", "lag_seconds", "outbox", "quarantine_open",
                           "review_open"}
        assert set(it["counts"]) >= {"created", "updated", "skipped", "failed", "conflicts", "quarantined"}
        assert set(it["outbox"]) >= {"pending", "dead"}
        assert it["last_run"]["result"] == "ok" and it["last_run"]["started_at"] and it["last_run"]["finished_at"]
    # two people entered the shop: two entities created from the shop, two records created in the
    # crm by the push; the crm's echo of them creates nothing more
    assert shop["counts"]["created"] == 2 and shop["counts"]["pushed"] == 0
    assert crm["counts"]["created"] == 2 and crm["counts"]["pushed"] == 2
    assert shop["counts"]["failed"] == crm["counts"]["failed"] == 0
    assert crm["outbox"] == {"pending": 0, "blocked": 0, "dead": 0, "done": 2}
    assert crm["paused"] is False
    assert st["totals"]["since_start"]["created"] == 4
    assert st["totals"]["last_24h"]["created"] == 4
    assert st["totals"]["conflicts_open"] == 0
    assert len(memory._SYSTEMS[env.crm].objects["person"]) == 2


def test_metrics_parse_with_integration_labels(env: Env) -> None:
    env.make_conflict()
    with client(env) as c:
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in ("syncd_up", "syncd_records", "syncd_outbox_pending", "syncd_outbox_dead", "syncd_lag_seconds",
                 "syncd_conflicts_open", "syncd_quarantine_open", "syncd_last_run_timestamp_seconds"):
        assert name in fams, name
    assert fams["syncd_records"].type == "counter"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert samples[("syncd_up", ())] == 1
    assert samples[("syncd_conflicts_open", ())] == 1
    assert samples[("syncd_records_total", (("integration", env.shop), ("result", "created")))] == 1
    assert samples[("syncd_outbox_pending", (("integration", env.crm),))] == 0
    labels = {s.labels.get("integration") for s in fams["syncd_outbox_dead"].samples}
    assert labels == {env.crm, env.shop}
    assert samples[("syncd_last_run_timestamp_seconds", (("integration", env.shop),))] > 1.7e9


def test_two_apps_in_one_process_have_their_own_registries(env: Env) -> None:
    from syncd.daemon.http import create_app
    other = create_app(env.rt)       # would raise "Duplicated timeseries" on a shared registry
    assert other.state.registry is not None
    with client(env) as c:
        assert c.get("/metrics").status_code == 200


# -- admin auth --------------------------------------------------------------------------------
def test_admin_needs_the_token(env: Env) -> None:
    conflict = env.make_conflict()
    path = f"/admin/conflicts/{conflict['id']}/resolve"
    with client(env) as c:
        r = c.post(path, json={"take": env.crm})
        assert r.status_code == 401 and "error" in r.json()
        r = c.post(path, json={"take": env.crm}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        r = c.post(path, json={"take": env.crm}, headers={"Authorization": f"Basic {TOKEN}"})
        assert r.status_code == 401
        for api in ("/api/conflicts", "/api/quarantine", "/api/review", "/api/dead"):
            assert c.get(api).status_code == 401, api
            assert c.get(api, headers={"Authorization": "Bearer x"}).status_code == 401, api
            assert c.get(api, headers=AUTH).status_code == 200, api
        r = c.post("/admin/replay", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        # a browser form post without a session goes to the login form
        r = c.post(path, data={"take": env.crm}, headers={"Accept": "text/html"})
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert env.rt.store.list_conflicts()[0]["id"] == conflict["id"]     # nothing happened


def test_resolve_via_api_pushes_the_chosen_value(env: Env) -> None:
    conflict = env.make_conflict()
    crm_ext = env.crm_id()
    with client(env) as c:
        listed = c.get("/api/conflicts", headers=AUTH).json()
        assert [x["id"] for x in listed] == [conflict["id"]]
        assert {cd["system"] for cd in listed[0]["candidates"]} == {env.crm, env.shop}
        r = c.post(f"/admin/conflicts/{conflict['id']}/resolve", json={"take": env.crm}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["ok"] is True and r.json()["winner"] == env.crm
        # twice: already resolved
        r = c.post(f"/admin/conflicts/{conflict['id']}/resolve", json={"take": env.crm}, headers=AUTH)
        assert r.status_code == 409
        assert c.post("/admin/conflicts/99999/resolve", json={"take": env.crm}, headers=AUTH).status_code == 404
        assert c.get("/api/conflicts", headers=AUTH).json() == []
    assert env.rt.store.list_conflicts() == []
    assert [x["id"] for x in env.rt.store.list_conflicts("resolved")] == [conflict["id"]]
    env.settle()
    assert env.remote(env.shop).objects["person"]["s1"]["comment"] == "из CRM"
    assert env.remote(env.crm).objects["person"][crm_ext]["comment"] == "из CRM"


def test_resolve_with_a_free_value(env: Env) -> None:
    conflict = env.make_conflict()
    crm_ext = env.crm_id()
    with client(env) as c:
        r = c.post(f"/admin/conflicts/{conflict['id']}/resolve", json={"value": "оба правы"}, headers=AUTH)
        assert r.status_code == 200, r.text
        r = c.post(f"/admin/conflicts/{conflict['id']}/resolve", json={}, headers=AUTH)
        assert r.status_code in (400, 409)
    env.settle()
    assert env.remote(env.shop).objects["person"]["s1"]["comment"] == "оба правы"
    assert env.remote(env.crm).objects["person"][crm_ext]["comment"] == "оба правы"


def test_replay_dead_letters(env: Env) -> None:
    crm = env.remote(env.crm)
    crm.faults.append("permanent")
    env.shop_person("s1")
    env.settle(1)
    dead = env.rt.store.list_outbox("dead")
    assert len(dead) == 1 and dead[0]["system"] == env.crm
    assert crm.objects["person"] == {}
    with client(env) as c:
        listed = c.get("/api/dead", headers=AUTH).json()
        assert [d["id"] for d in listed] == [dead[0]["id"]]
        assert c.get("/stats").json()["integrations"][env.crm]["outbox"]["dead"] == 1
        r = c.post("/admin/replay", json={"ids": [dead[0]["id"]]}, headers=AUTH)
        assert r.status_code == 200 and r.json()["replayed"] == 1
        assert c.post("/admin/replay", headers=AUTH).json()["replayed"] == 0
    env.settle()
    assert env.rt.store.list_outbox("dead") == []
    assert [p["email"] for p in crm.objects["person"].values()] == ["ivan@example.ru"]


def test_quarantine_release(env: Env) -> None:
    env.remote(env.shop).edit("order", "o1", number="1", status="UNKNOWN", total="10")
    env.settle(1)
    items = env.rt.store.list_quarantine()
    assert len(items) == 1 and items[0]["system"] == env.shop
    with client(env) as c:
        assert c.get("/stats").json()["integrations"][env.shop]["quarantine_open"] == 1
        listed = c.get("/api/quarantine", headers=AUTH).json()
        assert [q["id"] for q in listed] == [items[0]["id"]]
        # released as it is, it is taken in again and fails again: nothing changes, the reason is told
        r = c.post(f"/admin/quarantine/{items[0]['id']}/release", headers=AUTH)
        assert r.status_code == 400 and "still cannot be processed" in r.json()["error"]
        assert r.json()["error"].count("UNKNOWN") >= 1
        assert c.post("/admin/quarantine/424242/release", headers=AUTH).status_code == 404
        assert [q["id"] for q in c.get("/api/quarantine", headers=AUTH).json()] == [items[0]["id"]]
    # fixed at the source: the next read supersedes the entry
    env.remote(env.shop).edit("order", "o1", status="N")
    env.settle(1)
    assert env.rt.store.list_quarantine() == []
    assert [q["id"] for q in env.rt.store.list_quarantine("superseded")] == [items[0]["id"]]


def test_review_create_new(env: Env) -> None:
    # person identity originates in the shop only: a new person typed into the crm is reviewed
    env.remote(env.crm).edit("person", "c9", name="Анна", email="anna@example.ru")
    env.settle(1)
    items = env.rt.store.list_review()
    assert len(items) == 1 and items[0]["external_id"] == "c9"
    with client(env) as c:
        assert c.post(f"/admin/review/{items[0]['id']}/resolve", json={}, headers=AUTH).status_code == 400
        r = c.post(f"/admin/review/{items[0]['id']}/resolve", json={"entity_id": "nope"}, headers=AUTH)
        assert r.status_code == 404
        env.remote(env.shop).edit("order", "o1", number="1", status="N", total="10")
        env.settle(1)
        order_id = env.rt.store.find_entity(env.shop, "order", "o1")
        r = c.post(f"/admin/review/{items[0]['id']}/resolve", json={"entity_id": order_id}, headers=AUTH)
        assert r.status_code == 400 and "is a order" in r.json()["error"]
        r = c.post(f"/admin/review/{items[0]['id']}/resolve", json={"create": True}, headers=AUTH)
        assert r.status_code == 200, r.text
        eid = r.json()["entity_id"]
    assert env.rt.store.find_entity(env.crm, "person", "c9") == eid
    env.settle()
    assert any(p.get("email") == "anna@example.ru" for p in env.remote(env.shop).objects["person"].values())


def test_browser_session_login_csrf_and_form_actions(env: Env) -> None:
    conflict = env.make_conflict()
    with client(env) as c:
        r = c.post("/login", data={"token": "wrong", "next": "/"})
        assert r.status_code == 401 and "Неверный токен." in r.text          # Russian unless asked otherwise
        r = c.post("/login", data={"token": TOKEN, "next": "//evil.example/"})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        sid = c.cookies.get("syncd_session")
        assert sid and TOKEN not in sid and TOKEN not in cookie
        page = c.get("/").text
        m = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert m
        csrf = m.group(1)
        path = f"/admin/conflicts/{conflict['id']}/resolve"
        # the cookie alone is not enough: a form post needs the CSRF field
        r = c.post(path, data={"take": env.shop})
        assert r.status_code == 403
        r = c.post(path, data={"take": env.shop, "csrf": "0" * 64})
        assert r.status_code == 403
        assert len(env.rt.store.list_conflicts()) == 1
        r = c.post(path, data={"take": env.shop, "csrf": csrf})
        assert r.status_code == 303 and r.headers["location"].startswith("/?notice=")
        assert env.rt.store.list_conflicts() == []
        # an error comes back to the page, escaped
        r = c.post(path, data={"take": env.shop, "csrf": csrf})
        assert r.status_code == 303 and r.headers["location"].startswith("/?error=")
        assert "already resolved" in c.get(r.headers["location"]).text
        # the session also reads the JSON lists, and JSON posts need the CSRF header
        assert c.get("/api/conflicts").status_code == 200
        assert c.post("/admin/replay", json={}).status_code == 403
        r = c.post("/admin/replay", json={}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json() == {"ok": True, "replayed": 0,
                                                     "notice": "0 записей возвращено в очередь."}
        # log out: the session is gone on the server, not only in the browser
        assert c.post("/logout", data={"csrf": csrf}).status_code == 303
        c.cookies.set("syncd_session", sid)
        assert c.get("/api/conflicts").status_code == 401
    env.settle()
    assert env.remote(env.crm).objects["person"][env.crm_id()]["comment"] == "из магазина"


def test_no_admin_token_configured_refuses_admin(env_no_token: Env) -> None:
    env = env_no_token
    with client(env) as c:
        r = c.post("/admin/replay", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403 and "admin_token" in r.json()["error"]
        assert c.get("/api/conflicts").status_code == 403
        assert c.post("/admin/poll/x/y").status_code == 403
        r = c.get("/login")
        assert r.status_code == 403 and "admin_token" in r.text
        r = c.post("/login", data={"token": ""})
        assert r.status_code == 403
        assert c.get("/").status_code == 200
        assert c.get("/healthz").status_code == 200


# -- hooks and connector routes ----------------------------------------------------------------
def test_poll_now_is_an_admin_action(env: Env) -> None:
    calls: list[tuple[str, str]] = []
    env.rt.trigger_hook = lambda system, stream: calls.append((system, stream))
    with client(env) as c:
        assert c.post(f"/admin/poll/{env.shop}/person").status_code == 401
        assert c.post(f"/admin/poll/{env.shop}/person", headers={"Authorization": "Bearer x"}).status_code == 401
        r = c.post(f"/admin/poll/{env.shop}/person", headers=AUTH)
        assert r.status_code == 200 and r.json()["triggered"] == {"system": env.shop, "stream": "person"}
        assert c.post("/admin/poll/nope/person", headers=AUTH).status_code == 404
        r = c.post(f"/admin/poll/{env.shop}/nope", headers=AUTH)
        assert r.status_code == 404 and "person" in r.json()["error"]
        # /hooks/… belongs to the peers' webhooks (connector routes), not to an admin action
        assert c.post(f"/hooks/{env.shop}/person", headers=AUTH).status_code in (404, 405)
    assert calls == [(env.shop, "person")]


def test_connector_routes_are_mounted_with_their_own_auth(env: Env) -> None:
    with client(env) as c:
        path = f"/shop/{env.shop}/ping"
        assert c.get(path).status_code == 403
        assert c.get(path, headers=AUTH).status_code == 403       # the admin token is not its auth
        r = c.get(path, headers={"x-shop-password": SHOP_PASSWORD})
        assert r.status_code == 200 and r.json() == {"pong": env.shop}


# -- secrets and the page ----------------------------------------------------------------------
def test_secrets_never_leave(env: Env) -> None:
    env.make_conflict()
    env.rt.connectors[env.shop].fail_reads = 2     # both streams fail, the password in the message
    env.rt.sync_once([env.shop])
    runs = env.rt.store.recent_runs(50)
    assert any(SHOP_PASSWORD in (r["error"] or "") for r in runs), "the test must provoke a leak"
    with client(env) as c:
        csrf_client = client(env)
        login(csrf_client)
        bodies = {
            "/": c.get("/").text,
            "/ (logged in)": csrf_client.get("/").text,
            "/stats": c.get("/stats").text,
            "/metrics": c.get("/metrics").text,
            "/api/conflicts": c.get("/api/conflicts", headers=AUTH).text,
            "/login": c.get("/login").text,
        }
        csrf_client.close()
    for name, body in bodies.items():
        assert TOKEN not in body, name
        assert SHOP_PASSWORD not in body, name
    assert "***" in bodies["/stats"] and "***" in bodies["/ (logged in)"]


def test_status_page_shows_everything_escaped(env: Env) -> None:
    env.make_conflict()
    env.remote(env.shop).edit("order", "<o1>", number="1", status="<script>alert(1)</script>", total="10")
    env.settle(1)
    with client(env, headers={"Accept-Language": "en-GB,en;q=0.9"}) as c:
        anonymous = c.get("/").text
        login(c)
        r = c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"
    page = r.text
    assert '<meta charset="utf-8">' in page
    assert env.rt.instance in page
    assert f'id="integration-{env.crm}"' in page and f'id="integration-{env.shop}"' in page
    assert "из CRM" in page and "из магазина" in page
    assert f"take {env.crm}" in page and f"take {env.shop}" in page
    assert "person.comment" in page and "review" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;o1&gt;" in page
    assert "take in again" in page
    assert "Recent runs" in page and '<html lang="en">' in page
    # not logged in: no CSRF field, the login form, nothing of the records
    assert 'name="csrf"' not in anonymous and 'id="token"' in anonymous
    for private in ("из CRM", "из магазина", "&lt;o1&gt;", "person.comment", "alert(1)"):
        assert private not in anonymous, private


def test_connector_routes_win_and_may_not_shadow_the_daemons_own(env: Env) -> None:
    from starlette.responses import PlainTextResponse

    from syncd.connector import Route
    from syncd.daemon.http import create_app

    conn = env.rt.connectors[env.shop]

    async def hook(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("mine")

    # a connector's webhook under /hooks/… reaches the connector, whatever the daemon serves
    conn.http_routes = lambda: [Route(f"/hooks/{env.shop}/events", hook, ("POST",))]  # type: ignore[method-assign]
    from starlette.testclient import TestClient

    with TestClient(create_app(env.rt)) as c:
        r = c.post(f"/hooks/{env.shop}/events")
        assert r.status_code == 200 and r.text == "mine"
    # a route one of the daemon's own would also match is refused at start, naming both
    for path in ("/admin/replay", "/admin/poll/a/b", "/healthz"):
        conn.http_routes = lambda p=path: [Route(p, hook, ("POST", "GET"))]  # type: ignore[method-assign]
        try:
            create_app(env.rt)
        except ValueError as exc:
            assert env.shop in str(exc) and path.split("/")[1] in str(exc)
        else:
            raise AssertionError(f"{path} was allowed to shadow a daemon route")
