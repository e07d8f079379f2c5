"""Issue 20 (latency): what a portal event makes the connector read, through the sandbox's own
event deliveries to the connector's route and its request log.

- Once a stream has been read through, an event's read fetches only the records the events named:
  a deal with its product rows in one request, whatever the overlap window holds.
- The echoes of syncd's own writes wait `echo_delay`; a manager's edit of a record syncd has just
  written is read after `event_debounce`, not later; nothing an event named is left unread.
- Before the first read through, an event's read is a scan (the first-read gate of contact creates
  is never opened by a read of a few records).
"""

from __future__ import annotations

import time
from typing import Any

from b24helpers import State, new_portal, op
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.routing import Route as SRoute

from syncd.sandbox.server import serve_in_thread


class Ctx(State):
    """Records each trigger and runs the read it asks for, as the scheduler does."""

    def __init__(self) -> None:
        super().__init__()
        self.conn: Any = None
        self.reads: list[tuple[float, list[str]]] = []      # (when, record IDs read)
        self.records: dict[str, Any] = {}

    def trigger(self, stream: str) -> None:
        super().trigger(stream)
        recs = [r for b in self.conn.read(stream, "2000-01-01T00:00:00+03:00|0") for r in b.records]
        self.records.update((r.external_id, r) for r in recs)
        self.reads.append((time.time(), [r.external_id for r in recs]))


def _wired(sandbox: Any, **kw: Any) -> tuple[Any, Any, Ctx, Any]:
    p = new_portal(sandbox)
    ctx = Ctx()
    conn = p.connector(ctx=ctx, **kw)
    ctx.conn = conn
    (route,) = conn.http_routes()
    srv = serve_in_thread(Starlette(routes=[SRoute(route.path, route.endpoint, methods=["POST"])]))
    hook = p._j("POST", "/outgoing_webhooks", {"url": srv.url + route.path,
                                                "events": ["ONCRMDEALADD", "ONCRMDEALUPDATE"]})
    conn.settings.application_token = SecretStr(hook["application_token"])
    return p, conn, ctx, srv


def _methods(p: Any, since: float) -> list[str]:
    out = []
    for e in p.log(since)["entries"]:
        if e.get("kind") == "rest":
            out += e.get("batch_methods") or [e["method"]]
    return out


def _requests(p: Any, since: float) -> int:
    return sum(1 for e in p.log(since)["entries"] if e.get("kind") == "rest")


def test_an_event_reads_the_record_it_names_in_one_request_not_the_overlap(sandbox) -> None:
    p, conn, ctx, srv = _wired(sandbox, event_debounce=0.2)
    try:
        old = [p.ui_add("deal", {"TITLE": f"Старая {i}"}) for i in range(30)]    # all in the overlap window
        p._j("POST", "/events/wait", {"timeout": 5})
        time.sleep(0.5)
        list(conn.read("deals", None))                 # the first read through: a scan
        ctx.reads.clear()
        p.rest("crm.deal.productrows.set", {"id": old[7], "rows": [{"PRODUCT_NAME": "Мёд", "PRICE": 500,
                                                                     "QUANTITY": 2}]})
        t0 = time.time()
        p.ui_edit("deal", old[7], {"COMMENTS": "Правка менеджера"})
        p._j("POST", "/events/wait", {"timeout": 5})
        time.sleep(0.6)
        assert [ids for _, ids in ctx.reads] == [[str(old[7])]]
        assert _requests(p, t0) == 1, _methods(p, t0)           # its fields and product rows together
        assert sorted(_methods(p, t0)) == ["crm.deal.list", "crm.deal.productrows.get"]
        rec = ctx.records[str(old[7])]
        assert rec.fields["COMMENTS"] == "Правка менеджера"
        assert rec.fields["PRODUCT_ROWS"][0]["PRODUCT_NAME"] == "Мёд"
    finally:
        srv.stop()
        conn.close()


def test_before_the_first_read_through_an_event_read_is_a_scan(sandbox) -> None:
    p, conn, ctx, srv = _wired(sandbox, event_debounce=0.2)
    try:
        a = p.ui_add("deal", {"TITLE": "Первая"})
        b = p.ui_add("deal", {"TITLE": "Вторая"})
        p._j("POST", "/events/wait", {"timeout": 5})
        time.sleep(0.6)
        assert ctx.reads, "the events triggered no read"
        # the scan sees both deals (a targeted read would have too, but must not count as read through)
        assert sorted({i for _, ids in ctx.reads for i in ids}) == sorted([str(a), str(b)])
        assert "deals" in conn._scanned
    finally:
        srv.stop()
        conn.close()


def test_echoes_of_syncds_own_writes_wait_and_a_managers_edit_of_the_same_deal_does_not(sandbox) -> None:
    p, conn, ctx, srv = _wired(sandbox, event_debounce=0.2, echo_window=5.0, echo_delay=2.0)
    try:
        list(conn.read("deals", None))
        ctx.reads.clear()
        made = conn.write_many([op("deal", f"e{i}", {"TITLE": f"Заказ {i}", "PRODUCT_ROWS": [
            {"PRODUCT_NAME": "Чай", "PRICE": 10, "QUANTITY": 1}]}) for i in range(10)])
        ids = [m.external_id for m in made]
        p._j("POST", "/events/wait", {"timeout": 5})
        time.sleep(0.8)
        # 20 echoes (ADD + UPDATE of each deal's rows) delivered, none read yet
        assert ctx.reads == []
        # a manager edits one of them right away: read after the debounce, with the echoes along
        t_edit = time.time()
        p.ui_edit("deal", ids[3], {"COMMENTS": "Позвонить клиенту"})
        p._j("POST", "/events/wait", {"timeout": 5})
        time.sleep(0.6)
        assert len(ctx.reads) == 1 and ctx.reads[0][0] - t_edit < 1.0
        assert sorted(ctx.reads[0][1], key=int) == sorted(ids, key=int)
        # what an echo named was read: nothing waits any more
        time.sleep(2.2)
        assert len(ctx.reads) <= 2 and all(not ids_ for _, ids_ in ctx.reads[1:])
    finally:
        srv.stop()
        conn.close()


def test_an_echo_alone_is_read_after_echo_delay(sandbox) -> None:
    p, conn, ctx, srv = _wired(sandbox, event_debounce=0.2, echo_window=5.0, echo_delay=1.5)
    try:
        list(conn.read("deals", None))
        ctx.reads.clear()
        t0 = time.time()
        (m,) = conn.write_many([op("deal", "solo", {"TITLE": "Заказ"})])
        p._j("POST", "/events/wait", {"timeout": 5})
        time.sleep(0.6)
        assert ctx.reads == []
        time.sleep(1.5)
        assert [ids for _, ids in ctx.reads] == [[m.external_id]]
        assert 1.3 <= ctx.reads[0][0] - t0 < 2.8
    finally:
        srv.stop()
        conn.close()
