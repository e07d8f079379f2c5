"""The ASGI app: ``/api/v4/…`` (faults, auth, payment, rate limit, routing), ``/oauth2/access_token`` and
the control API under ``/_sandbox`` (control.py). API routes are small functions over a `Ctx`."""

from __future__ import annotations

import functools

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from syncd.sandbox.amocrm import activity, auth, control, records
from syncd.sandbox.amocrm.hooks import SETTINGS, Dispatcher
from syncd.sandbox.amocrm.records import Done, Event, Rec, filter_of
from syncd.sandbox.amocrm.state import (ENTITY_TYPES, Account, AmoError, Hook, invalid, issue, problem,
                                        self_link)
from syncd.sandbox.server import DroppedResponse, quiet_dropped_answers

E = "(leads|contacts|companies)"


def parse_query(qs: str) -> dict[str, Any]:
    """PHP bracket notation: ``filter[id][]=1&filter[id][]=2`` and ``filter[id][0]=1`` both give
    ``{"filter": {"id": {"0": "1", …}}}`` (lists stay dicts keyed by index)."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(qs, keep_blank_values=True):
        m = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", key)
        parts = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))] if m else [key]
        node = root
        for i, p in enumerate(parts):
            p = p or str(len(node))
            if i == len(parts) - 1:
                node[p] = value
            else:
                if not isinstance(node.get(p), dict):
                    node[p] = {}
                node = node[p]
    return root


@dataclass
class Ctx:
    acc: Account
    user_id: int
    base: str                   # http://127.0.0.1:PORT/api/v4: where _links point
    url: str                    # this request's URL: _links.self and next
    params: dict[str, Any]
    body: Any
    events: list[Event] = field(default_factory=list)

    def with_(self) -> set[str]:
        return set(str(self.params.get("with") or "").split(","))


Answer = tuple[int, Any]
ROUTES: list[tuple[str, re.Pattern[str], Callable[..., Answer]]] = []


def route(method: str, pattern: str) -> Callable[[Callable[..., Answer]], Callable[..., Answer]]:
    def deco(fn: Callable[..., Answer]) -> Callable[..., Answer]:
        ROUTES.append((method, re.compile(pattern), fn))
        return fn
    return deco


def page(ctx: Ctx, rows: list[Any], key: str, render: Callable[[Any], dict[str, Any]]) -> Answer:
    """One HAL page; an empty page is 204 with no body. ``next`` is linked when the page is full
    (so a pager whose total is a multiple of the limit ends on a 204). A limit over 250 is served as 250."""
    try:
        number, limit = max(1, int(ctx.params.get("page") or 1)), int(ctx.params.get("limit") or 50)
    except ValueError:
        raise problem(400, "page and limit must be integers") from None
    limit = max(1, min(limit, 250))
    chunk = rows[(number - 1) * limit:number * limit]
    if not chunk:
        return 204, None
    url = URL(ctx.url)
    links = {"self": {"href": str(url.include_query_params(page=number))}}
    if len(chunk) == limit:
        links["next"] = {"href": str(url.include_query_params(page=number + 1))}
    if number > 1:
        links["first"] = {"href": str(url.include_query_params(page=1))}
        links["prev"] = {"href": str(url.include_query_params(page=number - 1))}
    return 200, {"_page": number, "_links": links, "_embedded": {key: [render(r) for r in chunk]}}


def listing(ctx: Ctx, key: str, items: list[Rec]) -> Answer:
    """An unpaged list (pipelines, statuses, links, webhooks); empty is 204 too."""
    if not items:
        return 204, None
    return 200, {"_total_items": len(items), "_links": self_link(ctx.url), "_embedded": {key: items}}


def refs(ctx: Ctx, path: str, done: Done, *extra: str) -> Rec:
    """What a batch write answers: per item its id, request_id and link (and `extra` fields)."""
    key = path.rsplit("/", 1)[-1]
    return {"_links": self_link(f"{ctx.base}/{path}"), "_embedded": {key: [
        {"id": r["id"], **{k: r[k] for k in extra}, "request_id": rid,
         "_links": self_link(f"{ctx.base}/{path}/{r['id']}")} for rid, r in done]}}


# -- account, users, pipelines, custom fields -----------------------------------------------------------
@route("GET", "account")
def get_account(ctx: Ctx) -> Answer:
    acc, w = ctx.acc, ctx.with_()
    admin = min(acc.users)
    d: Rec = {"id": acc.id, "name": acc.name, "subdomain": acc.subdomain, "created_at": 1577836800,
              "created_by": admin, "updated_at": 1577836800, "updated_by": admin,
              "current_user_id": ctx.user_id, "country": "RU", "currency": "RUB", "currency_symbol": "₽",
              "customers_mode": "disabled",
              "is_unsorted_on": True, "is_loss_reason_enabled": True, "is_helpbot_enabled": False,
              "is_technical_account": False, "contact_name_display_order": 1,
              "_links": self_link(f"{ctx.base}/account")}
    d.update({k: v for k, v in (("amojo_id", f"{acc.id:08x}-amojo"), ("uuid", f"{acc.id:08x}-uuid"),
                                ("version", 11)) if k in w})
    emb = {"task_types": [{"id": 1, "name": "Связаться", "color": None, "icon_id": None, "code": "FOLLOW_UP"},
                          {"id": 2, "name": "Встреча", "color": None, "icon_id": None, "code": "MEETING"}],
           "users_groups": [{"id": 0, "name": "Отдел продаж", "uuid": None}]}
    if emb.keys() & w:
        d["_embedded"] = {k: v for k, v in emb.items() if k in w}
    return 200, d


@route("GET", "users")
def list_users(ctx: Ctx) -> Answer:
    return page(ctx, sorted(ctx.acc.users.values(), key=lambda u: u.id), "users", lambda u: u.view(ctx.base))


@route("GET", r"users/(\d+)")
def get_user(ctx: Ctx, uid: str) -> Answer:
    u = ctx.acc.users.get(int(uid))
    return (200, u.view(ctx.base)) if u else (204, None)


@route("GET", "leads/pipelines")
def list_pipelines(ctx: Ctx) -> Answer:
    return listing(ctx, "pipelines", [p.view(ctx.base, ctx.acc.id) for p in ctx.acc.pipelines.values()])


@route("GET", r"leads/pipelines/(\d+)(/statuses)?(?:/(\d+))?")
def get_pipeline(ctx: Ctx, pid: str, statuses: str | None, sid: str | None) -> Answer:
    p = ctx.acc.pipelines.get(int(pid))
    if p is None:
        return 204, None
    if not statuses:
        return (200, p.view(ctx.base, ctx.acc.id)) if sid is None else (404, None)
    if sid is None:
        return listing(ctx, "statuses", [s.view(ctx.base, ctx.acc.id) for s in p.statuses])
    s = p.status(int(sid))
    return (200, s.view(ctx.base, ctx.acc.id)) if s else (204, None)


@route("GET", rf"{E}/custom_fields(?:/(\d+))?")
def get_fields(ctx: Ctx, etype: str, fid: str | None) -> Answer:
    fields = sorted((f for f in ctx.acc.fields.values() if f.entity_type == etype), key=lambda f: f.sort)
    if fid is None:
        return page(ctx, fields, "custom_fields", lambda f: f.view(ctx.base, ctx.acc.id))
    f = next((f for f in fields if f.id == int(fid)), None)
    return (200, f.view(ctx.base, ctx.acc.id)) if f else (204, None)


# -- leads, contacts, companies -------------------------------------------------------------------------
@route("GET", E)
def list_records(ctx: Ctx, etype: str) -> Answer:
    rows = records.select(ctx.acc, etype, ctx.params)
    return page(ctx, rows, etype, lambda r: records.view(ctx.acc, etype, r, ctx.base, ctx.with_()))


@route("GET", rf"{E}/(\d+)")
def get_record(ctx: Ctx, etype: str, rid: str) -> Answer:
    rec = ctx.acc.records[etype].get(int(rid))       # an unknown id answers 204, as both clients expect
    return (200, records.view(ctx.acc, etype, rec, ctx.base, ctx.with_())) if rec else (204, None)


@route("POST", E)
def add_records(ctx: Ctx, etype: str) -> Answer:
    done, ctx.events = records.create(ctx.acc, etype, ctx.body, ctx.user_id)
    return 200, refs(ctx, etype, done)


@route("PATCH", rf"{E}(?:/(\d+))?")
def update_records(ctx: Ctx, etype: str, rid: str | None) -> Answer:
    if rid is not None and not isinstance(ctx.body, dict):
        raise problem(400, "Request body must be a JSON object")
    items = [ctx.body] if rid is not None else ctx.body
    done, ctx.events = records.update(ctx.acc, etype, items, ctx.user_id, one_id=int(rid) if rid else None)
    if rid is not None:
        r = done[0][1]
        return 200, {"id": r["id"], "updated_at": r["updated_at"],
                     "_links": self_link(f"{ctx.base}/{etype}/{r['id']}")}
    return 200, refs(ctx, etype, done, "updated_at")


@route("POST", "leads/complex")
def add_complex(ctx: Ctx) -> Answer:
    results, ctx.events = records.complex_add(ctx.acc, ctx.body, ctx.user_id)
    return 200, results


@route("GET", rf"{E}/tags")
def list_tags(ctx: Ctx, etype: str) -> Answer:
    tags = [{"id": i, "name": n, "color": None} for n, i in ctx.acc.tags[etype].items()]
    return page(ctx, tags, "tags", lambda t: t)


# -- links ----------------------------------------------------------------------------------------------
def _link_body(etype: str, rid: int, to_type: str, to_id: int, meta: Rec) -> Rec:
    main = meta.get("main_contact")
    return {"entity_id": rid, "entity_type": etype, "to_entity_id": to_id, "to_entity_type": to_type,
            "metadata": {"main_contact": main} if main is not None else None}


@route("POST", rf"{E}/(\d+)/(link|unlink)")
def link_records(ctx: Ctx, etype: str, rid_s: str, verb: str) -> Answer:
    acc, rid, errors = ctx.acc, int(rid_s), {}
    items = records.batch(ctx.body)
    for i, it in enumerate(items):
        ok = rid in acc.records[etype] and isinstance(it, dict) and it.get("to_entity_type") in ENTITY_TYPES \
            and it["to_entity_type"] != etype and it.get("to_entity_id") in acc.records[it["to_entity_type"]]
        if not ok:
            errors[str(i)] = [issue("NotFound", "to_entity_id", "Entity not found")]
    if errors:
        raise invalid(errors)
    out = []
    for it in items:
        a, b = (etype, rid), (it["to_entity_type"], it["to_entity_id"])
        if verb == "unlink":
            acc.unlink(a, b)
            continue
        meta = it.get("metadata") or {}
        records.link(acc, a, b, main=bool(meta.get("is_main") or meta.get("main_contact")))
        out.append(_link_body(etype, rid, *b, acc.links[a][b]))
    return (204, None) if verb == "unlink" else listing(ctx, "links", out)


@route("GET", rf"{E}/(\d+)/links")
def list_links(ctx: Ctx, etype: str, rid: str) -> Answer:
    wanted = filter_of(ctx.params).get("to_entity_type")
    mine = ctx.acc.links.get((etype, int(rid)), {})
    links = [_link_body(etype, int(rid), t, i, m) for (t, i), m in mine.items() if wanted in (None, t)]
    return listing(ctx, "links", links)


# -- notes and tasks ------------------------------------------------------------------------------------
@route("GET", rf"{E}(?:/(\d+))?/notes(?:/(\d+))?")
def get_notes(ctx: Ctx, etype: str, eid: str | None, nid: str | None) -> Answer:
    rows = activity.notes_of(ctx.acc, etype, int(eid) if eid else None, ctx.params)
    if nid is None:
        return page(ctx, rows, "notes", lambda n: activity.note_view(n, ctx.base))
    note = next((n for n in rows if n["id"] == int(nid)), None)
    return (200, activity.note_view(note, ctx.base)) if note else (204, None)


@route("POST", rf"{E}(?:/(\d+))?/notes")
def add_notes(ctx: Ctx, etype: str, eid: str | None) -> Answer:
    entity_id = int(eid) if eid else None
    done, ctx.events = activity.add_notes(ctx.acc, etype, ctx.body, ctx.user_id, entity_id=entity_id)
    return 200, {"_links": self_link(ctx.url), "_embedded": {"notes": [
        {"id": n["id"], "entity_id": n["entity_id"], "request_id": rid,
         "_links": self_link(f"{ctx.base}/{etype}/{n['entity_id']}/notes/{n['id']}")} for rid, n in done]}}


@route("PATCH", rf"{E}(?:/(\d+))?/notes(?:/(\d+))?")
def update_notes(ctx: Ctx, etype: str, eid: str | None, nid: str | None) -> Answer:
    if nid is not None and not isinstance(ctx.body, dict):
        raise problem(400, "Request body must be a JSON object")
    done = activity.update_notes(ctx.acc, etype, [ctx.body] if nid is not None else ctx.body, ctx.user_id,
                                 entity_id=int(eid) if eid else None, one_id=int(nid) if nid else None)
    views = [{"id": n["id"], "entity_id": n["entity_id"], "updated_at": n["updated_at"], "request_id": rid,
              "_links": self_link(f"{ctx.base}/{etype}/{n['entity_id']}/notes/{n['id']}")} for rid, n in done]
    if nid is not None:
        return 200, {k: v for k, v in views[0].items() if k != "request_id"}
    return 200, {"_links": self_link(ctx.url), "_embedded": {"notes": views}}


@route("GET", r"tasks(?:/(\d+))?")
def get_tasks(ctx: Ctx, tid: str | None) -> Answer:
    if tid is None:
        rows = activity.select_tasks(ctx.acc, ctx.params)
        return page(ctx, rows, "tasks", lambda t: activity.task_view(t, ctx.base))
    t = ctx.acc.tasks.get(int(tid))
    return (200, activity.task_view(t, ctx.base)) if t else (204, None)


@route("POST", "tasks")
def add_tasks(ctx: Ctx) -> Answer:
    return 200, refs(ctx, "tasks", activity.write_tasks(ctx.acc, ctx.body, ctx.user_id, update=False))


@route("PATCH", r"tasks(?:/(\d+))?")
def update_tasks(ctx: Ctx, tid: str | None) -> Answer:
    if tid is None:
        done = activity.write_tasks(ctx.acc, ctx.body, ctx.user_id, update=True)
        return 200, refs(ctx, "tasks", done, "updated_at")
    if not isinstance(ctx.body, dict):
        raise problem(400, "Request body must be a JSON object")
    (_, t), = activity.write_tasks(ctx.acc, [ctx.body], ctx.user_id, update=True, one_id=int(tid))
    return 200, {"id": t["id"], "updated_at": t["updated_at"],
                 "_links": self_link(f"{ctx.base}/tasks/{t['id']}")}


# -- webhooks -------------------------------------------------------------------------------------------
@route("GET", "webhooks")
def list_hooks(ctx: Ctx) -> Answer:
    return listing(ctx, "webhooks", [h.view(ctx.acc.id) for h in ctx.acc.hooks.values()])


@route("POST", "webhooks")
def add_hook(ctx: Ctx) -> Answer:
    b, acc = ctx.body if isinstance(ctx.body, dict) else {}, ctx.acc
    dest, settings = b.get("destination"), b.get("settings")
    errs = [] if isinstance(dest, str) and re.match(r"https?://", dest) else [
        issue("InvalidUrl", "destination", "This value is not a valid URL.")]
    if not isinstance(settings, list) or not settings or not set(settings) <= set(SETTINGS):
        errs.append(issue("NotSupportedChoice", "settings", "The value you selected is not a valid choice."))
    if errs or not isinstance(dest, str) or not isinstance(settings, list):
        raise invalid({"0": errs})
    hook = next((h for h in acc.hooks.values() if h.destination == dest), None)
    if hook is None:      # registering a destination again replaces its settings
        hook = Hook(acc.next_id("hook"), dest, [], acc.ts(), ctx.user_id, int(b.get("sort") or 1))
        acc.hooks[hook.id] = hook
    hook.settings = list(dict.fromkeys(settings))
    return 200, hook.view(acc.id)


@route("DELETE", "webhooks")
def delete_hook(ctx: Ctx) -> Answer:
    dest = ctx.body.get("destination") if isinstance(ctx.body, dict) else None
    ctx.acc.hooks = {i: h for i, h in ctx.acc.hooks.items() if h.destination != dest}
    return 204, None


# -- HTTP -----------------------------------------------------------------------------------------------
# the dropped-answer fault: an answer started as this peer starts it, cut short
_dropped = functools.partial(DroppedResponse, "application/hal+json", b'{"_embedded":')


def answer(status: int, body: Any, media_type: str = "application/hal+json") -> Response:
    if body is None:
        return Response(status_code=status)
    return Response(json.dumps(body, ensure_ascii=False), status, media_type=media_type)


def nginx(status: int) -> Response:
    """What the front servers answer for limits and failures: an HTML page, not JSON (the official
    SDK only raises its TooManyRequests exception for a 429 whose body is not JSON)."""
    text = {429: "Too Many Requests", 403: "Forbidden", 502: "Bad Gateway", 504: "Gateway Time-out"}.get(
        status, "Internal Server Error")
    return HTMLResponse(f"<html>\r\n<head><title>{status} {text}</title></head>\r\n<body>\r\n<center>"
                        f"<h1>{status} {text}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n"
                        "</html>\r\n", status)


async def read_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    if "x-www-form-urlencoded" in request.headers.get("content-type", ""):
        return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    try:
        return json.loads(raw)
    except ValueError:
        raise problem(400, "Request body is not valid JSON") from None


class App:
    def __init__(self, acc: Account) -> None:
        self.acc = acc
        if acc.webhooks is None:
            acc.webhooks = Dispatcher(acc)
        if not acc.credentials:
            acc.credentials = auth.default_credentials(acc)

    async def api(self, request: Request) -> Response:
        acc, t0 = self.acc, time.monotonic()
        entry: dict[str, Any] = {"kind": "api", "ts": acc.now(), "method": request.method,
                                 "path": request.url.path, "query": request.url.query}
        try:
            fault = acc.take_fault(request.method, request.url.path)
            if fault and fault[0] == "error":
                entry.update(status=fault[1], fault="error")
                return nginx(fault[1])
            if fault and fault[0] == "drop":
                entry.update(status=None, fault="drop")
                return _dropped()
            tok = auth.bearer(acc, request.headers.get("authorization", ""))
            entry.update(client_id=tok.client_id, user_id=tok.user_id)
            if not acc.paid:
                raise problem(402, "Account is not paid")
            refusal = acc.admit(tok.client_id)
            if refusal:
                entry.update(status=refusal, error="rate_limit")
                return nginx(refusal)
            body = await read_body(request)
            entry["body"] = body
            ctx = Ctx(acc, tok.user_id, str(request.base_url).rstrip("/") + "/api/v4", str(request.url),
                      parse_query(request.url.query), body)
            sub = request.url.path.removeprefix("/api/v4").strip("/")
            status, out = self.dispatch(request.method, sub, ctx)
            entry["status"] = status
            if fault and fault[0] == "lost":     # done, then the answer is lost on the way back
                entry.update(status=None, fault="lost")
                return _dropped()
            return answer(status, out)
        except AmoError as e:
            entry.update(status=e.status, error=(e.body or {}).get("detail"))
            return answer(e.status, e.body, "application/problem+json")
        except Exception as e:  # noqa: BLE001 - a sandbox bug answers 500 like the front does, and is logged
            entry.update(status=500, exception=repr(e))
            return nginx(500)
        finally:
            entry["duration"] = round(time.monotonic() - t0, 5)
            acc.record(entry)

    def dispatch(self, method: str, sub: str, ctx: Ctx) -> Answer:
        for m, rx, fn in ROUTES:
            if m == method and (match := rx.fullmatch(sub)):
                with ctx.acc.lock:
                    result = fn(ctx, *match.groups())
                    ctx.acc.webhooks.emit(ctx.events)
                return result
        raise AmoError(404, None)

    async def oauth(self, request: Request) -> Response:
        entry: Rec = {"kind": "oauth", "ts": self.acc.now(), "method": "POST", "path": request.url.path}
        try:
            fault = self.acc.take_fault("POST", request.url.path)
            if fault:
                entry.update(status=fault[1], fault=fault[0])
                return nginx(fault[1]) if fault[0] == "error" else _dropped()
            body = await read_body(request)
            entry["grant_type"] = body.get("grant_type") if isinstance(body, dict) else None
            out = auth.grant(self.acc, body if isinstance(body, dict) else {})
            entry["status"] = 200
            return JSONResponse(out)
        except AmoError as e:
            entry.update(status=e.status, error=(e.body or {}).get("hint"))
            return answer(e.status, e.body, "application/problem+json")
        finally:
            self.acc.record(entry)

    async def control(self, request: Request) -> Response:
        return await control.handle(self.acc, request, await read_body(request))


def create_app(acc: Account | None = None) -> Starlette:
    """The sandbox as an ASGI app; the account is at ``app.state.account``."""
    acc = acc or Account()
    quiet_dropped_answers()
    app_ = App(acc)
    methods = ["GET", "POST", "PATCH", "DELETE"]
    app = Starlette(routes=[Route("/api/v4/{path:path}", app_.api, methods=methods),
                            Route("/oauth2/access_token", app_.oauth, methods=["POST"]),
                            Route("/_sandbox/{path:path}", app_.control, methods=methods)])
    app.state.account = acc
    return app
