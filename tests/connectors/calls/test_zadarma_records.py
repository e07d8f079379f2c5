"""Zadarma's recordings: a NOTIFY_RECORD names the recording only by ids; syncd answers the webhook at
once, asks Zadarma's API (GET /v1/pbx/record/request/, signed) for the link in the background and
stores it as the call's `recording`, which the portal's call gets through attachRecord, once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from callsworld import CLIENT_E164, World
from structlog.testing import capture_logs

from connectors.calls.events import CallEvent
from connectors.calls.settings import CallsSettings
from connectors.calls.zadarma_api import (RECORD_METHOD, ApiError, RecordFetcher, RecordJob, ZadarmaApi,
                                          params_string, signature)

API_KEY, API_SECRET = "zd-key-123", "zd-api-secret-456"
# the origin the PBX sandbox's links name: a public one, as Zadarma's are (the portal refuses to
# attach a record from a loopback/private address)
PUBLIC = "https://records.zadarma.example"


# -- signing ------------------------------------------------------------------------------------------
def _documented(method: str, params: dict[str, str], secret: str) -> str:
    """zadarma/user-api-v1 lib/Client.php::_getAuthHeader, by hand for these params: ksort, then
    http_build_query (RFC 1738), then base64(hash_hmac('sha1', method . qs . md5(qs), secret))."""
    qs = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    hexdigest = hmac.new(secret.encode(), (method + qs + hashlib.md5(qs.encode()).hexdigest()).encode(),
                         hashlib.sha1).hexdigest()
    return base64.b64encode(hexdigest.encode()).decode()


def test_signature_is_zadarmas_documented_one() -> None:
    params = {"format": "json", "call_id": "1733600000.42"}
    assert params_string(params) == "call_id=1733600000.42&format=json"
    assert signature(RECORD_METHOD, params, API_SECRET) == _documented(RECORD_METHOD, params, API_SECRET)
    # php urlencode (RFC 1738): space '+', '~' '%7E', '/' and ':' encoded
    assert params_string({"b": "a b~c", "a": "x/y:z"}) == "a=x%2Fy%3Az&b=a+b%7Ec"
    # a fixed value: the formula above, once, for these inputs
    fixed = base64.b64encode(hmac.new(b"secret", b"/v1/info/balance/format=json"
                                      + hashlib.md5(b"format=json").hexdigest().encode(),
                                      hashlib.sha1).hexdigest().encode()).decode()
    assert signature("/v1/info/balance/", {"format": "json"}, "secret") == fixed


# -- a Zadarma API stub that fails on demand ------------------------------------------------------------
class _Api:
    def __init__(self, fail_first: int = 0, status: int = 500) -> None:
        self.fail_first, self.status = fail_first, status
        self.requests: list[tuple[str, dict[str, str], str]] = []
        api = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                u = urlsplit(self.path)
                q = dict(parse_qsl(u.query))
                api.requests.append((u.path, q, self.headers.get("Authorization", "")))
                if len(api.requests) <= api.fail_first:
                    body, code = {"status": "error", "message": "try later"}, api.status
                else:
                    body, code = {"status": "success", "link": f"https://rec.example/{q.get('call_id')}.mp3",
                                  "lifetime_till": "2030-01-01 00:00:00"}, 200
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api_stub() -> Iterator[_Api]:
    a = _Api()
    yield a
    a.close()


def test_request_is_signed_and_retried_with_backoff_without_leaking_secrets(api_stub: _Api) -> None:
    api_stub.fail_first = 2
    stored: list[CallEvent] = []
    done = threading.Event()

    def store(ev: CallEvent) -> None:
        stored.append(ev)
        done.set()

    f = RecordFetcher(ZadarmaApi(API_KEY, API_SECRET, api_stub.url), store, system="calls",
                      retries=3, backoff=0.01)
    with capture_logs() as logs:
        f.submit(RecordJob("in_1", "1733.7"))
        f.submit(RecordJob("in_1", "1733.7"))           # the NOTIFY_RECORD twice: asked once
        assert done.wait(10)
        f.close()
    assert len(stored) == 1 and stored[0].call_id == "in_1" and stored[0].stage == "record"
    assert stored[0].fields == {"recording": "https://rec.example/1733.7.mp3"}
    assert len(api_stub.requests) == 3
    path, q, auth = api_stub.requests[-1]
    assert path == RECORD_METHOD and q == {"call_id": "1733.7", "format": "json"}
    assert auth == f"{API_KEY}:{_documented(RECORD_METHOD, q, API_SECRET)}"
    failed = [e for e in logs if e["event"] == "call_record_fetch_failed"]
    assert [e["attempt"] for e in failed] == [1, 2]
    assert API_SECRET not in repr(logs) and API_KEY not in repr(logs)


def test_gives_up_after_the_retries(api_stub: _Api) -> None:
    api_stub.fail_first, api_stub.status = 100, 401
    stored: list[CallEvent] = []
    f = RecordFetcher(ZadarmaApi(API_KEY, API_SECRET, api_stub.url), stored.append, system="calls",
                      retries=2, backoff=0.01)
    with capture_logs() as logs:
        f.submit(RecordJob("in_2", None))
        for _ in range(200):
            if f.failed:
                break
            threading.Event().wait(0.02)
        f.close()
    assert f.failed == 1 and stored == []
    assert len(api_stub.requests) == 3
    assert api_stub.requests[0][1] == {"pbx_call_id": "in_2", "format": "json"}
    failed = [e.get("giving_up") for e in logs if e["event"] == "call_record_fetch_failed"]
    assert failed == [False, False, True]
    assert API_SECRET not in repr(logs)
    with pytest.raises(ApiError):
        ZadarmaApi(API_KEY, API_SECRET, "http://127.0.0.1:9").record_link("x", None)


class _State:
    """The connector state as the daemon keeps it (here: a dict)."""

    def __init__(self) -> None:
        self.kv: dict[str, Any] = {}

    def state_get(self, key: str, default: Any = None) -> Any:
        return self.kv.get(key, default)

    def state_set(self, key: str, value: Any) -> None:
        self.kv[key] = value


def test_a_fetch_not_done_before_a_stop_is_taken_up_at_the_next_start(api_stub: _Api) -> None:
    """Zadarma does not send an answered NOTIFY_RECORD again: a job given up (the API down) or cut
    by a stop stays in the connector's state until its link is stored."""
    api_stub.fail_first, api_stub.status = 100, 503
    state, stored = _State(), []
    first = RecordFetcher(ZadarmaApi(API_KEY, API_SECRET, api_stub.url), stored.append, system="calls",
                          retries=1, backoff=0.01, state=state)
    first.submit(RecordJob("in_3", "rec_3"))
    for _ in range(200):
        if first.failed:
            break
        threading.Event().wait(0.02)
    first.close()
    assert first.failed == 1 and stored == [] and state.kv[RecordFetcher.STATE_KEY] == [["in_3", "rec_3"]]
    api_stub.fail_first = 0                      # the API is back; syncd starts again
    again = RecordFetcher(ZadarmaApi(API_KEY, API_SECRET, api_stub.url), stored.append, system="calls",
                          retries=1, backoff=0.01, state=state)
    for _ in range(200):
        if again.fetched:
            break
        threading.Event().wait(0.02)
    again.close()
    assert [(e.call_id, e.stage, bool(e.fields.get("recording"))) for e in stored] == [("in_3", "record", True)]
    assert state.kv[RecordFetcher.STATE_KEY] == []


def test_settings_keys() -> None:
    s = CallsSettings(api_key="k", api_secret="s")
    assert s.api_url == "https://api.zadarma.com" and s.api_secret is not None
    assert "s" not in repr(s.api_secret)
    with pytest.raises(ValueError):
        CallsSettings(api_key="k")


# -- end to end: the PBX sandbox's webhooks and API -> syncd -> the sandbox portal ---------------------------
class ApiWorld(World):
    """callsworld's World with Zadarma's API keys in the calls system (the sandbox serves the API)."""

    with_api = True

    def _write_config(self) -> Path:
        path = super()._write_config()
        if self.with_api:
            extra = {"api_key": API_KEY, "api_secret": API_SECRET, "api_url": self.pbx_h.url,
                     "api_backoff": 0.05}
            keys = "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra.items())
            text = path.read_text(encoding="utf-8").replace('type = "calls"\n', 'type = "calls"\n' + keys, 1)
            path.write_text(text, encoding="utf-8")
        return path


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ApiWorld]:
    w = ApiWorld(tmp_path, ami=False)
    try:
        w.pbx_h.extra["app"].state.base_url["url"] = PUBLIC
        w.start()
        w.sync()
        yield w
    finally:
        w.close()


def _attach_calls(world: World) -> list[dict[str, Any]]:
    log = requests.get(world.ctl + "/log", timeout=10).json()["entries"]
    return [e for e in log if str(e.get("method", "")).lower() == "telephony.externalcall.attachrecord"]


def _stored_recording(world: World) -> str | None:
    from sqlalchemy import select

    from syncd import schema
    from syncd.store import tables as t
    assert world.rt is not None
    with world.rt.store.engine.connect() as conn:
        rows = [schema.decode(f) for (f,) in conn.execute(select(t.entities.c.fields)
                                                          .where(t.entities.c.type == "call"))]
    return rows[0].get("call.recording") if len(rows) == 1 else None


def test_recorded_call_gets_its_record_on_the_portal_once(world: ApiWorld) -> None:
    cloud = world.pbx_h.extra["cloud"]
    cloud.faults.duplicate = ["NOTIFY_RECORD"]               # delivered twice: fetched and attached once
    call = world.pbx.call(CLIENT_E164, "101", answered=True, talk_seconds=42, recorded=True)
    rec = call.ids["call_id_with_rec"]
    assert rec
    posts = [e for e in cloud.log if e["event"] == "NOTIFY_RECORD"]
    assert len(posts) == 2 and all(e["status"] == 200 for e in posts)
    want = f"{PUBLIC}/records/{rec}.mp3"
    world.wait_for(lambda: _stored_recording(world) == want, "the recording link is stored")
    world.sync()
    world.sync()
    acts = world.activities(OWNER_TYPE_ID=3, OWNER_ID=world.client_id)
    assert len(acts) == 1, acts
    assert [f["url"] for f in acts[0]["FILES"]] == [want]
    stats = world.rest("voximplant.statistic.get", {})
    assert len(stats) == 1 and stats[0]["CALL_RECORD_URL"] == want
    assert len(_attach_calls(world)) == 1
    assert requests.get(want.replace(PUBLIC, world.pbx_h.url), timeout=10).content.startswith(b"ID3")
    conn = world.rt.connectors["calls"]                       # type: ignore[union-attr]
    assert conn.records.fetched == 1                          # type: ignore[attr-defined]


def test_webhook_is_answered_before_the_api_is_asked(world: ApiWorld) -> None:
    """The API hangs: the NOTIFY_RECORD post is still answered at once; the link comes after."""
    conn = world.rt.connectors["calls"]                       # type: ignore[union-attr]
    api = conn.records.api                                    # type: ignore[attr-defined]
    gate = threading.Event()
    real = api.record_link

    def slow(*a: Any) -> str:
        assert gate.wait(10)
        return real(*a)

    api.record_link = slow
    call = world.pbx.call(CLIENT_E164, "101", answered=True, talk_seconds=5)
    assert [e["status"] for e in world.pbx_h.extra["cloud"].log if e["event"] == "NOTIFY_RECORD"] == [200]
    assert _stored_recording(world) is None
    gate.set()
    want = f"{PUBLIC}/records/{call.ids['call_id_with_rec']}.mp3"
    world.wait_for(lambda: _stored_recording(world) == want, "the recording link is stored")


def test_without_api_keys_recordings_are_not_fetched_and_that_is_logged_once(tmp_path: Path) -> None:
    ApiWorld.with_api = False
    try:
        w = ApiWorld(tmp_path, ami=False)
    finally:
        ApiWorld.with_api = True
    try:
        with capture_logs() as logs:
            w.start()
            w.pbx.call(CLIENT_E164, "101", answered=True, talk_seconds=5)
            w.pbx.call(CLIENT_E164, "102", answered=True, talk_seconds=6)
        assert len([e for e in logs if e["event"] == "call_records_not_fetched"]) == 1
        assert w.rt.connectors["calls"].records is None        # type: ignore[union-attr,attr-defined]
        w.sync()
        assert _attach_calls(w) == []
    finally:
        w.close()
