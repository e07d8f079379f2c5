"""kill -9 of a real `syncd run` while a PBX posts its calls: a call event answered 200 is never lost
and never doubled. The calls connector answers only after the event is committed (group commit,
syncd/commit_queue.py); the portal's telephony write (register, finish) is found again by its
EXTERNAL_CALL_ID after a crash in the middle of it. The daemon is killed right after the last 200,
and at random moments while the PBX posts (posts left without an answer are sent again, in order,
as a PBX does); restarted on the same config and database; the portal is read through its REST."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import hmac
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from callsworld import CLIENT_E164, SECRET, World

from daemonproc import REPO, SyncdProcess
from syncd.sandbox.server import free_port

T0 = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))
# the known client in the spellings a PBX may give (all match his contact by E.164)
KNOWN = (CLIENT_E164, "8 912 345-67-01", "79123456701")


# -- the world: the sandboxes of callsworld, syncd as a real process on a fixed port -------------------
class Daemon(SyncdProcess):
    def start(self) -> None:
        super().start()
        self.ready(30)

    @property
    def hook(self) -> str:
        return self.url + "/hooks/calls/calls"


def _daemon_config(w: World, port: int) -> Path:
    """callsworld's config (the portal as an OAuth app, the example mappings), served on `port`,
    the outbox drained often."""
    text = w.config.read_text(encoding="utf-8")
    text = text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"')
    text = text.replace("[daemon]\n", "[daemon]\npush_interval = 0.2\n", 1)
    assert f"127.0.0.1:{port}" in text and "push_interval" in text
    w.config.write_text(text, encoding="utf-8")
    return w.config


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[World, Daemon]]:
    w = World(tmp_path, ami=False)
    # the user fields the example deal map names (the daemon checks its mappings against the portal)
    for name, type_, label in (("UF_CRM_SHOP_ORDER", "string", "Номер заказа на сайте"),
                               ("UF_CRM_FROM_SHOP", "boolean", "Заказ с сайта")):
        w._j("POST", "/userfields", {"entity": "deal", "field_name": name, "type": type_, "label": label})
    port = free_port()
    d = Daemon(_daemon_config(w, port), port=port)
    try:
        # set-up readiness, not an assertion: the daemon has read the portal's contacts (the client)
        d.wait(lambda: _db(tmp_path, "SELECT 1 FROM match_keys WHERE type = 'person' AND key = :k",
                           k=f"phone:{CLIENT_E164}"), "the client's contact is read", 30)
        yield w, d
    finally:
        d.kill9()
        w.close()


def _db(tmp: Path, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    from sqlalchemy import create_engine, text

    eng = create_engine(f"sqlite:///{tmp}/syncd.db")
    try:
        with eng.connect() as c:
            return [tuple(r) for r in c.execute(text(sql), params)]
    finally:
        eng.dispose()


def _stored_calls(tmp: Path) -> dict[str, dict[str, Any]]:
    """The calls the daemon committed: the PBX's call id -> the stored fields."""
    out = {}
    for (f,) in _db(tmp, "SELECT fields FROM entities WHERE type = 'call'"):
        fields = json.loads(f)
        out[str(fields["call.id"])] = fields
    return out


# -- the PBX: syncd's JSON events, signed --------------------------------------------------------------
class Call:
    def __init__(self, i: int) -> None:
        self.id = f"kill-{i:03d}"
        self.known = i % 3 == 0
        self.caller = KNOWN[i % len(KNOWN)] if self.known else f"+7903{7000000 + i:07d}"
        self.duration = 11 + i                   # unique: tells the calls apart in the portal
        start = T0 + dt.timedelta(minutes=i)
        base = {"call_id": self.id, "direction": "in", "caller": self.caller, "called": "74951234567",
                "extension": "101" if i % 2 else "102"}
        self.events = [
            {**base, "event": "start", "at": start.isoformat()},
            {"call_id": self.id, "event": "end", "duration": self.duration, "status": "answered",
             "at": (start + dt.timedelta(seconds=self.duration + 5)).isoformat()},
        ]


def _post(http: requests.Session, url: str, event: dict[str, Any]) -> int | None:
    """One post; its status, or None when no answer came (the connection broke: the daemon died)."""
    raw = json.dumps(event).encode()
    sig = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    try:
        return http.post(url, data=raw, timeout=10,
                         headers={"Content-Type": "application/json", "X-Syncd-Signature": sig}).status_code
    except requests.RequestException:
        return None


class Pbx:
    """Posts each call's events in order, several calls at once; a post without a 200 stops that
    call's queue (a PBX retries it, and only then sends the call's next event)."""

    def __init__(self, calls: list[Call]) -> None:
        self.todo: dict[str, list[dict[str, Any]]] = {c.id: list(c.events) for c in calls}
        self.ended: set[str] = set()             # calls whose end event got a 200
        self.answers: Counter[int | None] = Counter()
        self._lock = threading.Lock()

    def run(self, url: str, workers: int = 6) -> None:
        def one(call_id: str) -> None:
            with requests.Session() as http:
                while True:
                    with self._lock:
                        if not self.todo[call_id]:
                            return
                        ev = self.todo[call_id][0]
                    status = _post(http, url, ev)
                    with self._lock:
                        self.answers[status] += 1
                        if status != 200:
                            return
                        self.todo[call_id].pop(0)
                        if ev["event"] == "end":
                            self.ended.add(call_id)

        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, [c for c, evs in self.todo.items() if evs]))

    @property
    def left(self) -> int:
        return sum(len(v) for v in self.todo.values())


# -- checks --------------------------------------------------------------------------------------------
def _pages(w: World, method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    start = 0
    while True:
        body = requests.post(w.webhook_url + method + ".json", json={**params, "start": start}, timeout=30).json()
        assert "error" not in body, body
        out += body["result"]
        if "next" not in body:
            return out
        start = body["next"]


def _drained(tmp: Path, n_calls: int) -> bool:
    """Every call is stored and bound to its portal call, and no write is left to do."""
    open_writes = _db(tmp, "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending', 'blocked')")[0][0]
    bound = _db(tmp, "SELECT count(*) FROM entities e JOIN bindings b ON b.entity_id = e.id "
                     "WHERE e.type = 'call' AND b.system = 'crm'")[0][0]
    return open_writes == 0 and bound == n_calls


def _check_portal(w: World, calls: list[Call]) -> None:
    """Each call once in the portal's call statistics and once as a call activity, bound to the
    client's contact when he is known; one lead per unknown caller, none for the client."""
    want = sorted(c.duration for c in calls)
    stats = _pages(w, "voximplant.statistic.get", {})
    assert sorted(int(s["CALL_DURATION"]) for s in stats) == want, \
        f"calls in the portal's statistics (by duration): {Counter(int(s['CALL_DURATION']) for s in stats)}"
    acts = _pages(w, "crm.activity.list", {"filter": {"TYPE_ID": 2}, "select": ["*"]})
    got = Counter(int((dt.datetime.fromisoformat(a["END_TIME"]) - dt.datetime.fromisoformat(a["START_TIME"]))
                      .total_seconds()) for a in acts)
    assert sorted(got.elements()) == want, f"call activities (by duration): {got}"
    on_client = _pages(w, "crm.activity.list", {"filter": {"TYPE_ID": 2, "OWNER_TYPE_ID": 3,
                                                           "OWNER_ID": w.client_id}, "select": ["*"]})
    assert len(on_client) == sum(c.known for c in calls), on_client
    assert all(a["COMPLETED"] == "Y" and a["DIRECTION"] == "1" for a in acts)
    leads = _pages(w, "crm.lead.list", {"select": ["ID", "PHONE"]})
    lead_phones = Counter("".join(ch for ch in ld["PHONE"][0]["VALUE"] if ch.isdigit())[-10:] for ld in leads)
    unknown = Counter(c.caller[-10:] for c in calls if not c.known)
    assert lead_phones == unknown, f"leads by phone: {lead_phones}, unknown callers: {unknown}"


def _audit(w: World) -> dict[str, Any]:
    """`syncd --json audit crm` as the integrator runs it (after the daemon stopped)."""
    r = subprocess.run([sys.executable, "-m", "syncd.cli", "-c", str(w.config), "--json", "audit", "crm"],
                       capture_output=True, text=True, cwd=str(REPO), timeout=60)
    lines = r.stdout.strip().splitlines()
    assert lines, f"audit printed nothing (exit {r.returncode}): {r.stderr[-2000:]}"
    report = json.loads(lines[-1])
    assert r.returncode == 0 and report["drift_records"] == 0 and report["drift"] == [], report
    return report


def _finish(w: World, d: Daemon, calls: list[Call]) -> None:
    d.wait(lambda: _drained(w.tmp, len(calls)), "every call written to the portal", 40)
    _check_portal(w, calls)
    n_leads = len(_pages(w, "crm.lead.list", {"select": ["ID"]}))
    # the leads the portal made are read back and bound (the leads stream, every 3 s)
    d.wait(lambda: _db(w.tmp, "SELECT count(*) FROM bindings WHERE system = 'crm' AND type = 'lead'")[0][0]
           == n_leads, "the portal's leads are read", 15)
    d.stop(15, must=True)
    report = _audit(w)
    assert report["checked"].get("crm", 0) >= 1 + n_leads, report      # the client and the leads compared
    assert not _db(w.tmp, "SELECT id FROM outbox WHERE status = 'dead'")
    assert not d.events("dead_letter") and not d.events("push_unexpected_error"), d.tail(20)


# -- the tests -----------------------------------------------------------------------------------------
def test_kill_9_right_after_the_last_200_every_call_is_in_the_portal_once(world: tuple[World, Daemon]) -> None:
    w, d = world
    calls = [Call(i) for i in range(24)]
    pbx = Pbx(calls)
    pbx.run(d.hook)
    d.kill9()                                                  # at once, after the last answer
    assert pbx.answers == Counter({200: 48}) and pbx.left == 0
    # each answered event was committed before its 200: every call is stored, ended
    stored = _stored_calls(w.tmp)
    assert sorted(stored) == sorted(c.id for c in calls), sorted(stored)
    assert all(f.get("call.status") == "answered" and f.get("call.caller") for f in stored.values()), stored
    d.start()                                                  # the same config, the same database
    _finish(w, d, calls)


def test_kill_9_at_random_moments_while_the_pbx_posts_loses_and_doubles_nothing(
        world: tuple[World, Daemon]) -> None:
    w, d = world
    seed = int(os.environ.get("SYNCD_KILL_SEED") or random.randrange(1 << 30))
    rnd = random.Random(seed)
    print(f"kill moments: SYNCD_KILL_SEED={seed}")            # shown with a failure, to replay it
    calls = [Call(i) for i in range(30)]
    pbx = Pbx(calls)
    kills = 0
    deadline = time.monotonic() + 30
    while pbx.left:
        assert time.monotonic() < deadline, f"seed {seed}: the PBX's queue did not empty: {pbx.todo}"
        if kills < 3:
            # a kill at a random moment while the PBX posts (or pushes run)
            killer = threading.Timer(rnd.uniform(0.05, 0.6), d.kill9)
            killer.start()
            pbx.run(d.hook)
            killer.join()
            kills += 1
            assert d.proc.poll() is not None
            # whatever got its 200 is stored: every call whose end was answered is ended in the store
            ended = {i for i, f in _stored_calls(w.tmp).items() if f.get("call.status") == "answered"}
            assert pbx.ended <= ended, f"seed {seed}: answered but not stored: {pbx.ended - ended}"
            d.start()
        else:
            pbx.run(d.hook)                                      # the PBX's retries, the daemon up
    assert pbx.ended == {c.id for c in calls}, seed
    # a post was answered 200 or not at all (the daemon died under it): never refused
    assert set(pbx.answers) <= {200, None} and pbx.answers[200] >= 60, (seed, pbx.answers)
    _finish(w, d, calls)
