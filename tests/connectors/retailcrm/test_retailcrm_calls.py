"""Calls end to end with RetailCRM as the CRM: syncd's JSON call events posted to the daemon's HTTP
app (a Runtime from a config file: mappings/sync.toml, retailcrm.toml, calls-retailcrm.toml) -> calls
uploaded to the RetailCRM sandbox's calls history (telephony/calls/upload), bound by RetailCRM to the
customer with the number. The account has a customer typed by a manager and a manager with the
internal code 102."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from syncd.config import load_settings
from syncd.daemon.http import create_app
from syncd.daemon.runtime import Runtime
from syncd.sandbox.retailcrm import start
from syncd.sandbox.server import serve_in_thread

REPO = Path(__file__).resolve().parents[3]
MAPPINGS = [str(REPO / "mappings" / n) for n in ("sync.toml", "retailcrm.toml", "calls-retailcrm.toml")]
SECRET = "pbx-secret"
CLIENT_PHONE = "8 (912) 345-67-01"


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.h = start(rate_limit=False)
        self.sb = self.h.extra["state"]
        self.manager = self.ctl("POST", "/users", {"firstName": "Олег", "lastName": "Кузнецов", "code": "102"})["id"]
        self.client_id = int(self.ctl("POST", "/ui/customers", {"customer": {
            "firstName": "Дмитрий", "lastName": "Волков", "phones": [{"number": CLIENT_PHONE}]}})["id"])
        self.config = self._write_config()
        self.rt: Runtime | None = None
        self.http: Any = None

    def ctl(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = requests.request(method, f"{self.h.url}/_sandbox{path}", json=body, timeout=10)
        r.raise_for_status()
        return r.json()

    def _write_config(self) -> Path:
        crm = {"url": self.h.url, "api_key": self.h.extra["api_key"], "rate": 500.0, "burst": 500.0,
               "telephony_module": "syncd-pbx"}
        calls = {"vendor": "syncd", "secret": SECRET, "crm": "crm", "presence_ttl": 0.2}
        lines = ["[daemon]", f'database_url = "sqlite:///{self.tmp}/syncd.db"', 'listen = "127.0.0.1:0"',
                 f"mappings = {json.dumps(MAPPINGS)}", f'state_dir = "{self.tmp}"', "",
                 "[push]", "base_delay = 0.0", "", "[systems.calls]", 'type = "calls"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in calls.items()]
        lines += ["", "[systems.crm]", 'type = "retailcrm"'] + [f"{k} = {json.dumps(v)}" for k, v in crm.items()]
        lines += ["", "[[jobs]]", 'system = "crm"', 'stream = "customers"', 'every = "3s"']
        path = self.tmp / "config.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def start(self) -> None:
        self.rt = Runtime(load_settings(self.config))
        self.http = serve_in_thread(create_app(self.rt))

    def close(self) -> None:
        if self.http is not None:
            self.http.stop()
        if self.rt is not None:
            self.rt.close()
        self.h.stop()

    def post(self, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        sig = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        r = requests.post(self.http.url + "/hooks/calls/calls", data=raw, timeout=10,
                          headers={"Content-Type": "application/json", "X-Syncd-Signature": sig})
        assert r.status_code == 200, r.text

    def call(self, call_id: str, caller: str, *, status: str = "answered", duration: int = 0,
             direction: str = "in", called: str = "74951234567", extension: str = "102",
             recording: str | None = None) -> None:
        base = {"call_id": call_id, "direction": direction, "caller": caller, "called": called,
                "extension": extension}
        self.post({**base, "event": "start", "at": "2024-05-01T10:00:00+03:00"})
        end = {**base, "event": "end", "duration": duration, "status": status, "at": "2024-05-01T10:01:05+03:00"}
        if recording:
            end["recording_url"] = recording
        self.post(end)

    def sync(self, rounds: int = 8) -> None:
        assert self.rt is not None
        for _ in range(rounds):
            c = self.rt.sync_once()
            if not (c.created or c.updated or c.pushed or c.planned):
                return
        raise AssertionError(f"no quiescence after {rounds} passes: {c.as_dict()}")

    def calls(self) -> list[dict[str, Any]]:
        return list(self.ctl("GET", "/calls")["calls"])

    def uploads(self) -> list[dict[str, Any]]:
        return [e for e in self.ctl("GET", "/log")["entries"] if e["path"] == "/api/v5/telephony/calls/upload"]

    def failed_ops(self) -> list[Any]:
        from sqlalchemy import select

        from syncd.store import tables as t
        assert self.rt is not None
        with self.rt.store.engine.connect() as conn:
            return list(conn.execute(select(t.outbox.c.entity_type, t.outbox.c.status, t.outbox.c.last_error)
                                     .where(t.outbox.c.status != "done")))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        w.start()
        w.sync()
        yield w
    finally:
        w.close()


def test_known_customers_call_is_uploaded_once_with_duration_and_result(world: World) -> None:
    world.call("pbx-1", "+79123456701", duration=42, recording="https://records.example/pbx-1.mp3")
    world.sync()
    calls = world.calls()
    assert len(calls) == 1, (calls, world.failed_ops())
    c = calls[0]
    assert (c["type"], c["result"], c["duration"], c["externalId"]) == ("in", "answered", 42, "calls-pbx-1")
    assert c["customerId"] == world.client_id                 # bound by RetailCRM, by the number
    assert c["userId"] == world.manager and c["code"] == "102"
    assert c["date"] == "2024-05-01 10:00:00"                  # the account's (Moscow) time
    assert c["phone"] == "+79123456701" and c["externalPhone"] == "74951234567"
    assert c["recordUrl"] == "https://records.example/pbx-1.mp3"
    assert c["clientId"] == "syncd-pbx"
    assert world.sb.modules["syncd-pbx"]["integrations"]["telephony"]   # the module was registered
    assert world.failed_ops() == []


def test_the_same_events_twice_make_one_call(world: World) -> None:
    world.call("pbx-2", "+7 912 345 67 01", duration=15)
    world.call("pbx-2", "+7 912 345 67 01", duration=15)
    world.sync()
    world.call("pbx-2", "+7 912 345 67 01", duration=15)
    world.sync()
    calls = world.calls()
    assert len(calls) == 1, calls
    assert calls[0]["duration"] == 15 and calls[0]["customerId"] == world.client_id


def test_a_retried_upload_is_a_duplicate_not_a_second_call(world: World) -> None:
    """The upload is done but its answer lost: the retry is reported as a duplicate by RetailCRM."""
    world.ctl("PATCH", "/faults", {"lose_next": 1, "path": "/api/v5/telephony/calls/upload"})
    world.call("pbx-3", "+79123456701", duration=7)
    world.sync()
    assert len(world.calls()) == 1, (world.calls(), world.failed_ops())
    ups = world.uploads()
    assert len(ups) >= 2 and ups[0].get("fault") == "lost_answer"
    assert world.failed_ops() == []


def test_missed_call_is_no_answer(world: World) -> None:
    world.call("pbx-5", "+79123456701", status="missed", duration=0)
    world.sync()
    calls = world.calls()
    assert len(calls) == 1, (calls, world.failed_ops())
    assert (calls[0]["result"], calls[0]["duration"]) == ("no answer", 0)


def test_outgoing_call(world: World) -> None:
    world.call("pbx-6", "102", called="+79123456701", direction="out", duration=30)
    world.sync()
    calls = world.calls()
    assert len(calls) == 1, (calls, world.failed_ops())
    assert (calls[0]["type"], calls[0]["phone"], calls[0]["customerId"]) == ("out", "+79123456701", world.client_id)


def test_sandbox_upload_rules(world: World) -> None:
    """The API as modelled: no telephony module -> refused; duplicates listed, not counted."""
    key = {"X-API-KEY": world.h.extra["api_key"]}
    url = world.h.url + "/api/v5/telephony/calls/upload"
    world.sb.modules.clear()
    call = {"date": "2024-05-01 10:00:00", "type": "in", "phone": "+79123456701", "result": "answered",
            "duration": 3, "externalId": "x-1"}
    r = requests.post(url, data={"calls": json.dumps([call])}, headers=key, timeout=10)
    assert r.status_code == 400 and r.json()["success"] is False
    ok = requests.post(world.h.url + "/api/v5/integration-modules/tel/edit", headers=key, timeout=10, data={
        "integrationModule": json.dumps({"integrationCode": "tel", "name": "PBX", "clientId": "c1",
                                         "integrations": {"telephony": {"makeCallUrl": "https://pbx.example/c"}}})})
    assert ok.status_code == 201, ok.text
    first = requests.post(url, data={"calls": json.dumps([call])}, headers=key, timeout=10).json()
    again = requests.post(url, data={"calls": json.dumps([call, {**call, "externalId": "x-2",
                                                                 "result": "no answer"}])},
                          headers=key, timeout=10).json()
    assert first == {"success": True, "processedCallsCount": 1}
    assert again == {"success": True, "processedCallsCount": 1, "duplicateCalls": ["x-1"]}
    bad = requests.post(url, data={"calls": json.dumps([{**call, "externalId": "x-3", "result": "no answered"}])},
                        headers=key, timeout=10)
    assert bad.status_code == 400
