"""The operator's actions (admin, CSRF-protected on the page): conflicts, quarantine, review, replay,
poll, check, backfill, run now, pause and resume; and the JSON lists behind them (`/api/…`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from syncd.daemon.i18n import N_, Conflict, Lang, NotFound, Refusal
from syncd.daemon.operations import check_all, check_system, run_now
from syncd.daemon.search import search as search_entities
from syncd.daemon.web import Web, _int, _since, _truthy
from syncd.errors import BadInput
from syncd.pipeline import settle
from syncd.store import tables as t

log = structlog.get_logger("syncd.http")


def routes(web: Web) -> list[StarletteRoute]:
    """The admin actions and JSON lists."""
    rt = web.rt
    d = web.d
    backfills = web.backfills
    trace_fn = web.trace_fn
    jresp = web.jresp
    admin_action = web.admin_action
    api_auth = web.api_auth

    # -- admin actions --------------------------------------------------------------------------
    engine = rt.syncer.engine

    async def resolve_conflict(request: Request) -> Response:
        cid = _int(request.path_params["id"])

        def act(p: dict[str, Any]) -> dict[str, Any]:
            if cid is None:
                raise KeyError("conflict id must be a number")
            take = p.get("take")
            if take not in (None, ""):
                eid = settle.resolve_conflict(engine, cid, take=str(take))
                return {"conflict": cid, "entity_id": eid, "winner": str(take)}
            if "value" in p:
                eid = settle.resolve_conflict(engine, cid, value=p["value"])
                return {"conflict": cid, "entity_id": eid, "winner": "review"}
            raise Refusal(N_("give `take` (a system) or `value`"))

        return await admin_action(request, act, lambda r, t: t._("Conflict {id} resolved: {winner}.").format(
            id=cid, winner=r["winner"] if r["winner"] != "review" else t._("the value given")), "conflicts")

    async def release_quarantine(request: Request) -> Response:
        qid = _int(request.path_params["id"])

        def act(p: dict[str, Any]) -> dict[str, Any]:
            if qid is None:
                raise KeyError(f"no quarantine item {request.path_params['id']}")
            try:
                outcome = settle.release_quarantine(rt.syncer.engine, qid)
            except BadInput as exc:
                raise ValueError(str(exc)) from None
            return {"released": qid, "outcome": outcome}

        # a refusal on the page says which item, and that the record is still held
        return await admin_action(
            request, act, lambda r, t: t._("Quarantine item {id} taken in again.").format(id=qid), "quarantine",
            fail=lambda reason, t: t._("Quarantine item {id} still cannot be taken in: {reason}").format(
                id=qid, reason=reason))

    async def resolve_review(request: Request) -> Response:
        rid = _int(request.path_params["id"])

        def act(p: dict[str, Any]) -> dict[str, Any]:
            if rid is None:
                raise KeyError("review id must be a number")
            entity_id = str(p.get("entity_id") or "").strip()
            if entity_id:
                ent = rt.store.entity(entity_id)
                if ent is None:
                    raise NotFound(N_("no entity {id}"), id=entity_id)
                with rt.store.read() as c:
                    rtype = c.execute(select(t.review.c.type).where(t.review.c.id == rid)).scalar()
                if rtype is not None and rtype != ent["type"]:
                    raise Refusal(N_("entity {id} is a {type}, review item {review} is a {rtype}"),
                                  id=entity_id, type=ent["type"], review=rid, rtype=rtype)
                eid = settle.resolve_review(engine, rid, entity_id=entity_id)
            elif _truthy(p.get("create")):
                eid = settle.resolve_review(engine, rid, create=True)
            elif _truthy(p.get("dismiss")):
                eid = settle.dismiss_review(engine, rid)       # junk (a spam form post): sent nowhere
            else:
                raise Refusal(N_("give `create=1` or `entity_id`"))   # (or `dismiss=1`)
            return {"review": rid, "entity_id": eid}

        return await admin_action(request, act, lambda r, tr: tr._("Review item {id} resolved: entity {entity}.").format(
            id=rid, entity=r["entity_id"]), "review")

    async def replay(request: Request) -> Response:
        def act(p: dict[str, Any]) -> dict[str, Any]:
            raw = p.get("ids")
            ids: list[int] | None = None
            if raw not in (None, "", []):
                items = raw if isinstance(raw, list) else str(raw).replace(",", " ").split()
                ids = []
                for x in items:
                    n = _int(x)
                    if n is None:
                        raise Refusal(N_("not an outbox id: {value}"), value=repr(x))
                    ids.append(n)
            from syncd.pipeline import outbox

            return {"replayed": outbox.replay(rt.store, ids)}

        return await admin_action(request, act, lambda r, t: t.ngettext(
            "{n} write put back in the queue.", "{n} writes put back in the queue.", r["replayed"]).format(
            n=r["replayed"]), "dead")

    async def poll(request: Request) -> Response:
        """Poll a stream now instead of at its next tick (an operator's "sync now")."""
        system, stream = request.path_params["system"], request.path_params["stream"]

        def act(p: dict[str, Any]) -> dict[str, Any]:
            conn = rt.connectors.get(system)
            if conn is None:
                raise KeyError(f"no system {system!r}")
            if stream not in conn.streams:
                raise KeyError(f"system {system!r} has no stream {stream!r} (streams: "
                               f"{', '.join(sorted(conn.streams))})")
            if rt.is_paused(system):
                raise Conflict(N_("{system} is paused; resume it first"), system=system)
            rt.trigger(system, stream)
            return {"triggered": {"system": system, "stream": stream}}

        return await admin_action(request, act, lambda r, t: t._("{system}/{stream}: poll started.").format(
            system=system, stream=stream))

    async def check_one(request: Request) -> Response:
        system = request.path_params.get("system")

        def act(p: dict[str, Any]) -> dict[str, Any]:
            found = check_system(rt, system) if system else check_all(rt)
            return {"ok": all(f.ok for f in found), "findings": [f.as_dict() for f in found]}

        def done(r: dict[str, Any], t: Lang) -> str:
            lines = [("✓ " if f["ok"] else "✗ ") + f"{f['name']}: {f['detail']}" for f in r["findings"]]
            return "\n".join(lines)

        return await admin_action(request, act, done, "integrations")

    async def backfill(request: Request) -> Response:
        system = request.path_params["system"]
        tz = Lang("en", d.timezone).tz

        def act(p: dict[str, Any]) -> dict[str, Any]:
            return {"job": backfills.start(system, _since(p.get("since"), tz)).view()}

        return await admin_action(request, act, lambda r, t: t._(
            "Import of {system} started (records changed since {since}).").format(
            system=system, since=t.time(r["job"]["since"], seconds=False)), "integrations")

    async def run_system(request: Request) -> Response:
        system = request.path_params["system"]
        return await admin_action(request, lambda p: {"triggered": run_now(rt, system)}, lambda r, t: t._(
            "{system}: polling {streams} now.").format(system=system, streams=", ".join(r["triggered"])),
            "integrations")

    async def pause(request: Request) -> Response:
        system = request.path_params["system"]
        on = request.url.path.startswith("/admin/pause/")

        def act(p: dict[str, Any]) -> dict[str, Any]:
            if system not in rt.connectors:
                raise NotFound(N_("no system {system}"), system=system)
            changed = rt.set_paused(system, on)
            if not on and changed:
                for stream in rt.connectors[system].streams:
                    rt.trigger(system, stream)          # catch up at once
            return {"system": system, "paused": on, "changed": changed}

        def done(r: dict[str, Any], t: Lang) -> str:
            if r["paused"]:
                return t._("{system} paused: nothing is read from it or written to it until resumed.").format(
                    system=system)
            return t._("{system} resumed.").format(system=system)

        return await admin_action(request, act, done, "integrations")

    # -- JSON lists -----------------------------------------------------------------------------
    def _limit(request: Request) -> int:
        n = _int(request.query_params.get("limit", "100"))
        return max(1, min(n or 100, 1000))

    def _api(path: str, make: Callable[[Request], Any]) -> StarletteRoute:
        async def endpoint(request: Request) -> Response:
            denied = api_auth(request)
            if denied is not None:
                return denied
            try:
                return jresp(await run_in_threadpool(make, request))
            except Refusal as exc:
                return jresp({"error": str(exc)}, exc.status)
        return StarletteRoute(path, endpoint, methods=["GET"])

    def _quarantine_item(request: Request) -> dict[str, Any]:
        qid = _int(request.path_params["id"])
        item = rt.store.quarantine_item(qid) if qid is not None else None
        if item is None:
            raise NotFound(N_("no quarantine item {id}"), id=request.path_params["id"])
        return item

    def _entities(request: Request) -> dict[str, Any]:
        q = request.query_params.get("q", "")
        type_ = request.query_params.get("type") or None
        return {"query": q, "results": search_entities(rt.store, q, type_=type_, region=d.region,
                                                       limit=min(_limit(request), 50))}

    def _trace(request: Request) -> dict[str, Any]:
        q = request.query_params.get("q", "").strip()
        if not q:
            raise Refusal(N_("give a query: ?q=order number, phone, e-mail, ИНН or an id"))
        if trace_fn is None:
            raise Refusal(N_("the record trace is not available in this build"))
        return trace_fn(q)

    return [
        StarletteRoute("/admin/conflicts/{id}/resolve", resolve_conflict, methods=["POST"]),
        StarletteRoute("/admin/quarantine/{id}/release", release_quarantine, methods=["POST"]),
        StarletteRoute("/admin/review/{id}/resolve", resolve_review, methods=["POST"]),
        StarletteRoute("/admin/replay", replay, methods=["POST"]),
        StarletteRoute("/admin/poll/{system}/{stream}", poll, methods=["POST"]),
        StarletteRoute("/admin/check", check_one, methods=["POST"]),
        StarletteRoute("/admin/check/{system}", check_one, methods=["POST"]),
        StarletteRoute("/admin/backfill/{system}", backfill, methods=["POST"]),
        StarletteRoute("/admin/run/{system}", run_system, methods=["POST"]),
        StarletteRoute("/admin/pause/{system}", pause, methods=["POST"]),
        StarletteRoute("/admin/resume/{system}", pause, methods=["POST"]),
        _api("/api/conflicts", lambda r: rt.store.list_conflicts(r.query_params.get("status", "open"), _limit(r))),
        _api("/api/quarantine", lambda r: rt.store.list_quarantine(r.query_params.get("status", "open"), _limit(r))),
        _api("/api/quarantine/{id}", _quarantine_item),
        _api("/api/review", lambda r: rt.store.list_review(r.query_params.get("status", "open"), _limit(r))),
        _api("/api/dead", lambda r: rt.store.list_outbox("dead", _limit(r))),
        _api("/api/entities", _entities),
        _api("/api/trace", _trace),
        _api("/api/backfill/{id}", lambda r: backfills.get(r.path_params["id"]).view()),
    ]
