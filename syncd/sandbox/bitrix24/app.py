"""The ASGI app: REST routing, auth, envelope, faults, the leaky bucket, OAuth token server, control API."""

from __future__ import annotations

import functools

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import random
import secrets
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from syncd.sandbox.bitrix24 import im, telephony
from syncd.sandbox.bitrix24 import methods as M
from syncd.sandbox.bitrix24.php import parse_query
from syncd.sandbox.bitrix24.portal import TZ, BxError, Portal, SandboxState
from syncd.sandbox.bitrix24.seed import seed_demo
from syncd.sandbox.server import DroppedResponse, quiet_dropped_answers

JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status_code=status, headers=JSON_HEADERS)


def _err(e: BxError) -> Response:
    return _json(e.body(), e.status)


# the dropped-answer fault: an answer started as this peer starts it, cut short
_dropped = functools.partial(DroppedResponse, "application/json", b'{"result":')


def _time_block(t0: float, t1: float, operating: float, reset_at: float) -> dict[str, Any]:
    return {"start": round(t0, 5), "finish": round(t1, 5), "duration": round(t1 - t0, 5),
            "processing": round(t1 - t0, 5),
            "date_start": dt.datetime.fromtimestamp(t0, TZ).replace(microsecond=0).isoformat(),
            "date_finish": dt.datetime.fromtimestamp(t1, TZ).replace(microsecond=0).isoformat(),
            "operating_reset_at": int(reset_at), "operating": round(operating, 5)}


def _run_one(ctx: M.Ctx, method: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """One method with its operating-time accounting; returns (result, {total, next, time})."""
    key = method.lower()
    ctx.portal.operating_check(ctx.who, key)
    ctx.portal.check_rejection(key, params)        # a write refused until cleared (control API)
    t0 = time.time()
    try:
        value = M.call(ctx, method, params)
    finally:
        t1 = time.time()
        operating, reset_at = ctx.portal.operating_add(ctx.who, key, t1 - t0)
    extra: dict[str, Any] = {"time": _time_block(t0, t1, operating, reset_at)}
    if isinstance(value, M.Page):
        extra["total"], extra["next"] = value.total, value.next
        value = {value.wrap: value.rows} if value.wrap else value.rows
    return value, extra


async def _params(request: Request) -> dict[str, Any]:
    params = parse_query(request.url.query) if request.url.query else {}
    body = await request.body()
    if body:
        ctype = request.headers.get("content-type", "")
        text = body.decode("utf-8", "replace")
        if "json" in ctype or (not ctype and text.lstrip()[:1] in "{["):
            try:
                data = json.loads(text)
            except ValueError:
                raise BxError("INVALID_REQUEST", "Invalid JSON body", 400)
            if isinstance(data, dict):
                params.update(data)
        else:
            params.update(parse_query(text))
    return params


class App:
    def __init__(self, state: SandboxState) -> None:
        self.state = state

    # ---- REST -------------------------------------------------------------------------------
    async def rest(self, request: Request, portal: Portal, rest_path: list[str]) -> Response:
        t0 = time.time()
        rest_path = [s for s in rest_path if s != ""]
        method = rest_path[-1] if rest_path else ""
        method = method.removesuffix(".json").strip()
        entry: dict[str, Any] = {"kind": "rest", "ts": t0, "method": method.lower(), "auth": None}
        try:
            try:
                params = await _params(request)
            except BxError as e:
                entry.update(status=e.status, error=e.code)
                return _err(e)
            f = portal.faults
            # a fault "for method X" hits any request that carries X, alone or inside a batch
            carried = {method.lower()}
            if method.lower() == "batch":
                cmds = M.arg(params, "cmd") or {}
                carried |= {str(v).split("?", 1)[0].strip("/").lower().removesuffix(".json")
                            for v in (cmds.values() if isinstance(cmds, dict) else cmds)}
            applies = not f.methods or bool(carried & {m.lower() for m in f.methods})
            rng = portal.rng
            if applies and f.latency:
                await asyncio.sleep(f.latency)
            if applies and (f.timeout_next > 0 or (f.timeout_rate and rng.random() < f.timeout_rate)):
                with portal.lock:
                    f.timeout_next = max(0, f.timeout_next - 1)
                entry["fault"] = "timeout"
                await asyncio.sleep(f.timeout_sleep)
            if applies and (f.fail_next > 0 or (f.error_rate and rng.random() < f.error_rate)):
                with portal.lock:
                    f.fail_next = max(0, f.fail_next - 1)
                status = rng.choice(list(f.error_statuses) or [500])
                entry.update(status=status, fault="error")
                if f.error_html or status in (502, 504):
                    entry["error"] = f"HTML{status}"
                    return HTMLResponse(f"<html><head><title>{status}</title></head><body><h1>{status} "
                                        f"Service Temporarily Unavailable</h1><hr>nginx</body></html>", status)
                code = {503: "QUERY_LIMIT_EXCEEDED", 500: "INTERNAL_SERVER_ERROR"}.get(status, "INTERNAL_SERVER_ERROR")
                entry["error"] = code
                return _json({"error": code, "error_description": "Too many requests" if status == 503
                              else "Internal server error"}, status)
            if not portal.bucket_admit():
                entry.update(status=503, error="QUERY_LIMIT_EXCEEDED")
                return _json({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}, 503)
            ctx = self._auth(portal, rest_path, params, entry)
            if f.access_denied:
                raise BxError("ACCESS_DENIED", "REST API is available only on commercial plans", 403)
            if not method:
                raise BxError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)
            params.pop("auth", None)
            if method.lower() == "batch":
                cmds = M.arg(params, "cmd") or {}
                entry["commands"] = len(cmds)
                # the methods inside, for tests that count writes ("crm.deal.add", …)
                entry["batch_methods"] = [str(v).split("?", 1)[0].strip("/") for v in (
                    cmds.values() if isinstance(cmds, dict) else cmds)]
                bt0 = time.time()
                result = M.batch(ctx, params, _run_one)
                extra = {"time": _time_block(bt0, time.time(), 0.0, time.time())}
            else:
                result, extra = _run_one(ctx, method, params)
            lost = applies and (f.lost_next > 0 or (f.lost_answer_rate and rng.random() < f.lost_answer_rate))
            if lost:
                with portal.lock:
                    f.lost_next = max(0, f.lost_next - 1)
                entry["fault"] = "lost_answer"
                if f.lost_answer_mode == "drop":
                    entry.update(status=200, error="DROPPED")
                    return _dropped()
                entry.update(status=500, error="INTERNAL_SERVER_ERROR")
                return _json({"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}, 500)
            body: dict[str, Any] = {"result": result}
            if extra.get("next") is not None:
                body["next"] = extra["next"]
            if extra.get("total") is not None:
                body["total"] = extra["total"]
            body["time"] = extra["time"]
            entry["status"] = 200
            if method.lower() == "batch" and result.get("result_error"):
                entry["batch_errors"] = len(result["result_error"])
            return _json(body)
        except BxError as e:
            entry.update(status=e.status, error=e.code)
            return _err(e)
        except Exception as e:  # noqa: BLE001 - a sandbox bug answers like Bitrix does, and is logged
            logging.getLogger("syncd.sandbox.bitrix24").exception("sandbox bug in %s", method)
            entry.update(status=500, error="INTERNAL_SERVER_ERROR", exception=repr(e))
            return _json({"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}, 500)
        finally:
            entry["duration"] = round(time.time() - t0, 5)
            portal.record(**entry)

    def _auth(self, portal: Portal, rest_path: list[str], params: dict[str, Any], entry: dict[str, Any]) -> M.Ctx:
        if len(rest_path) >= 3:
            w = portal.find_webhook(rest_path[0], rest_path[1])
            if w is None:
                raise BxError("NO_AUTH_FOUND", "Wrong authorization data", 401)
            entry["auth"] = f"webhook:{w.user_id}"
            return M.Ctx(portal, w.user_id, "webhook", list(w.scopes), who=f"webhook:{w.user_id}:{id(w)}")
        token = params.get("auth")
        if len(rest_path) == 1 and token:
            t = portal.tokens.get(str(token))
            if t is None:
                raise BxError("NO_AUTH_FOUND", "Wrong authorization data", 401)
            entry["auth"] = f"oauth:{t.user_id}"
            if t.expires_at <= time.time():
                raise BxError("expired_token", "The access token provided has expired.", 401)
            return M.Ctx(portal, t.user_id, "oauth", list(t.scopes), who=f"app:{portal.client_id}")
        raise BxError("NO_AUTH_FOUND", "Wrong authorization data", 401)

    # ---- OAuth token server -------------------------------------------------------------------
    async def oauth(self, request: Request, portal: Portal | None) -> Response:
        params = await _params(request)
        grant = params.get("grant_type")
        portals = [portal] if portal else list(self.state.portals.values())
        client = [p for p in portals if p.client_id == params.get("client_id")]
        if not grant or not params.get("client_id"):
            return _json({"error": "invalid_request", "error_description": "Invalid request"}, 400)
        if not client or not secrets.compare_digest(client[0].client_secret, str(params.get("client_secret", ""))):
            return _json({"error": "invalid_client", "error_description": "Invalid client"}, 401)
        p = client[0]
        if grant == "refresh_token":
            t = p.refresh(str(params.get("refresh_token", "")))
        elif grant == "authorization_code":
            with p.lock:
                c = p.codes.pop(str(params.get("code", "")), None)
            t = p.issue_token(c[0], c[2]) if c and c[1] > time.time() else None
        else:
            return _json({"error": "invalid_request", "error_description": "Unsupported grant_type"}, 400)
        if t is None:
            return _json({"error": "invalid_grant", "error_description": "Invalid grant"}, 400)
        return _json(p.token_answer(t))

    # ---- dispatcher ---------------------------------------------------------------------------
    async def dispatch(self, request: Request) -> Response:
        segs = request.url.path.strip("/").split("/")
        if segs and segs[0] == "_sandbox":
            try:
                return await self.control(request, segs[1:])
            except KeyError as e:
                return JSONResponse({"error": "not_found", "detail": str(e)}, 404)
            except (ValueError, TypeError) as e:
                return JSONResponse({"error": "bad_request", "detail": str(e)}, 400)
        name = "default"
        if segs and segs[0] not in ("rest", "oauth"):
            name, segs = segs[0], segs[1:]
        portal = self.state.get(name)
        if segs[:2] == ["oauth", "token"]:
            return await self.oauth(request, portal if name != "default" else None)
        if portal is None or not segs or segs[0] != "rest":
            return JSONResponse({"error": "NOT_FOUND", "error_description": "Portal or page not found"}, 404)
        portal.base_url = f"{request.url.scheme}://{request.url.netloc}"
        return await self.rest(request, portal, segs[1:])

    # ---- control API --------------------------------------------------------------------------
    async def control(self, request: Request, segs: list[str]) -> Response:
        meth = request.method
        body: dict[str, Any] = {}
        raw = await request.body()
        if raw:
            body = json.loads(raw)
        base = f"{request.url.scheme}://{request.url.netloc}"
        st = self.state
        if segs == ["portals"]:
            if meth == "GET":
                return JSONResponse({"portals": sorted(st.portals)})
            opts = {k: body[k] for k in ("rate_limit", "leak_rate", "burst", "domain") if k in body}
            p = st.create_portal(body["name"], **opts)
            p.base_url = base
            if body.get("seed"):
                seed_demo(st, p.name)
            return JSONResponse(p.info(), 201)
        if segs == ["reset"]:
            st.reset()
            st.portal().base_url = base
            return JSONResponse({"ok": True})
        p = st.portal(segs[0])
        if not p.base_url:
            p.base_url = base
        rest = segs[1:]
        if not rest:
            if meth == "DELETE":
                st.delete_portal(p.name)
                return JSONResponse({"ok": True})
            return JSONResponse(p.info())
        what = rest[0]
        if what == "reset":
            p.reset_data()
            p.clear_log()
            return JSONResponse({"ok": True})
        if what == "seed":
            return JSONResponse(seed_demo(st, p.name))
        if what == "webhooks":
            w = p.add_webhook(int(body.get("user_id", 1)), body.get("scopes"))
            return JSONResponse({"user_id": w.user_id, "webhook_code": w.code, "scopes": w.scopes,
                                 "webhook_url": f"{base}{p.prefix}/rest/{w.user_id}/{w.code}/"}, 201)
        if what == "oauth":
            sub = rest[1] if len(rest) > 1 else ""
            if sub == "tokens":
                t = p.issue_token(int(body.get("user_id", 1)), body.get("scopes"), float(body.get("expires_in", 3600)))
                return JSONResponse({**p.token_answer(t), "client_id": p.client_id,
                                     "client_secret": p.client_secret, "token_url": f"{base}/oauth/token/",
                                     "rest_url": f"{base}{p.prefix}/rest/"}, 201)
            if sub == "code":
                code = secrets.token_hex(16)
                with p.lock:
                    p.codes[code] = (int(body.get("user_id", 1)), time.time() + 30, body.get("scopes") or [])
                return JSONResponse({"code": code, "client_id": p.client_id}, 201)
            if sub == "expire":
                return JSONResponse({"expired": p.expire_tokens()})
        if what == "users" and len(rest) == 3 and rest[2] == "notifications":
            with p.lock:
                seen = [im.public(n) for n in p.notifications if str(n["USER_ID"]) == rest[1]]
            return JSONResponse({"user_id": int(rest[1]), "notifications": seen})
        if what == "users":
            if len(rest) == 1 and meth == "POST":
                u = p.add_user(body.get("name", ""), body.get("last_name", ""), email=body.get("email", ""),
                               position=body.get("position", ""), online=bool(body.get("online", False)),
                               workday=body.get("workday", "CLOSED"), active=bool(body.get("active", True)),
                               phone_inner=body.get("phone_inner"))
                return JSONResponse(_public_user(u), 201)
            if len(rest) == 2:
                u = p.set_presence(int(rest[1]), online=body.get("online"), workday=body.get("workday"),
                                   active=body.get("active"), phone_inner=body.get("phone_inner", ...))
                return JSONResponse(_public_user(u))
            return JSONResponse({"users": [_public_user(u) for u in p.users.values()]})
        if what == "pipelines":
            if meth == "POST":
                cid = p.add_pipeline(body["name"], body.get("stages"), int(body.get("sort", 200)))
                return JSONResponse({"id": cid, "stages": p.stages[cid]}, 201)
            return JSONResponse({"pipelines": [{**c, "stages": p.stages[i]} for i, c in p.categories.items()]})
        if what == "userfields":
            if meth == "POST":
                return JSONResponse(p.add_userfield(body.get("entity", "deal"), body["field_name"],
                                                    body.get("type", "string"), body.get("label", ""),
                                                    bool(body.get("multiple")), bool(body.get("mandatory"))), 201)
            return JSONResponse(dict(p.userfields))
        if what in ("faults", "limits"):
            obj = p.faults if what == "faults" else p.limits
            if meth in ("PATCH", "PUT", "POST"):
                names = {f.name for f in dataclasses.fields(obj)}
                bad = set(body) - names
                if bad:
                    raise ValueError(f"unknown knobs: {sorted(bad)}")
                with p.lock:
                    for k, v in body.items():
                        setattr(obj, k, tuple(v) if isinstance(v, list) else v)
                    if what == "faults" and "seed" in body:
                        p.rng = random.Random(body["seed"])
            return JSONResponse(dataclasses.asdict(obj))
        if what == "log":
            if meth == "DELETE":
                p.clear_log()
                return JSONResponse({"ok": True})
            return JSONResponse(p.log_view(float(request.query_params.get("since", 0))))
        if what == "outgoing_webhooks":
            if meth == "POST":
                token = secrets.token_hex(16)
                hs = [p.add_handler(e, body["url"], application_token=token) for e in body["events"]]
                return JSONResponse({"ids": [h.id for h in hs], "application_token": token,
                                     "events": [h.event for h in hs]}, 201)
            if meth == "DELETE" and len(rest) == 2:
                with p.lock:
                    p.handlers = [h for h in p.handlers if h.id != int(rest[1])]
                return JSONResponse({"ok": True})
            return JSONResponse({"handlers": [{"id": h.id, "event": h.event, "url": h.url, "source": h.source}
                                              for h in p.handlers]})
        if what == "events" and rest[1:] == ["wait"]:
            return JSONResponse({"done": await asyncio.to_thread(p.wait_events, float(body.get("timeout", 5)))})
        if what == "ui":
            ent = M.ENTITIES[rest[1]]
            ctx = M.Ctx(p, int(body.get("user_id", 1)), "ui", source="ui")
            # the deal's "Products" tab: PRODUCT_ROWS in `fields` (deal, lead) are saved as
            # crm.deal.productrows.set would save them
            fields = dict(body.get("fields", {}))
            rows = fields.pop("PRODUCT_ROWS", None) if ent.name in ("deal", "lead") else None
            try:
                if meth == "POST" and len(rest) == 2:
                    new_id = M.write(ctx, ent, fields)
                    if rows is not None:
                        M.productrows_set(ctx, ent.name, {"id": new_id, "rows": rows})
                    return JSONResponse({"id": new_id}, 201)
                rid = int(rest[2])
                if meth == "DELETE":
                    return JSONResponse({"ok": M.delete(ctx, ent, rid)})
                if fields or rows is None:
                    M.write(ctx, ent, fields, rid)
                if rows is not None:
                    M.productrows_set(ctx, ent.name, {"id": rid, "rows": rows})
                with p.lock:
                    return JSONResponse(M.out_record(p, ent, p.tables[ent.name][rid]))
            except BxError as e:
                return JSONResponse(e.body(), e.status)
        if what == "notifications":
            uid = request.query_params.get("user_id")
            with p.lock:
                notes = p.notify_log if request.query_params.get("all") else p.notifications
                notes = [im.public(n) for n in notes if uid is None or str(n["USER_ID"]) == uid]
            return JSONResponse({"notifications": notes})
        if what == "comments":
            q = request.query_params
            with p.lock:
                found = [dict(c) for c in p.comments
                         if (not q.get("entity_type") or c["ENTITY_TYPE"] == q["entity_type"].lower())
                         and (not q.get("entity_id") or c["ENTITY_ID"] == q["entity_id"])]
            return JSONResponse({"comments": found})
        if what == "telephony":
            return JSONResponse(telephony.control(p, meth, rest[1:], body, request.query_params))
        if what == "tasks":
            with p.lock:
                return JSONResponse({"tasks": [dict(t) for _, t in sorted(p.tables["task"].items())]})
        if what == "clock":
            if meth in ("PATCH", "PUT", "POST"):
                bad = set(body) - {"offset", "advance", "now"}
                if bad:
                    raise ValueError(f"unknown clock keys: {sorted(bad)} (offset, advance, now)")
                return JSONResponse(p.set_clock(**body))
            return JSONResponse(p.set_clock())
        if what == "dates" and len(rest) == 3:
            return JSONResponse(_backdate(p, rest[1], int(rest[2]), body))
        if what == "rejections":
            if meth == "POST" and len(rest) == 1:
                opts = {k: body[k] for k in ("record_id", "fields", "status", "error", "description", "times")
                        if k in body}
                bad = set(body) - set(opts) - {"method"}
                if bad:
                    raise ValueError(f"unknown keys: {sorted(bad)}")
                return JSONResponse(p.add_rejection(str(body["method"]), **opts).view(), 201)
            if meth == "DELETE":
                with p.lock:
                    before = len(p.rejections)
                    p.rejections = [r for r in p.rejections if len(rest) == 2 and r.id != int(rest[1])]
                    return JSONResponse({"cleared": before - len(p.rejections)})
            with p.lock:
                return JSONResponse({"rejections": [r.view() for r in p.rejections]})
        return JSONResponse({"error": "not_found"}, 404)


DATE_FIELDS = ("date", "datetime")


def _backdate(p: Portal, entity: str, rid: int, body: dict[str, Any]) -> dict[str, Any]:
    """Set a record's date fields (DATE_CREATE, DATE_MODIFY, MOVED_TIME, BEGINDATE…) as they would
    be had it been made or last touched then; no event fires (nobody edited it now)."""
    ent = M.ENTITIES[entity]
    with p.lock:
        rec = p.tables[ent.name].get(rid)
        if rec is None:
            raise KeyError(f"no {entity} {rid}")
        for k, v in body.items():
            k = str(k).upper()
            if ent.fields.get(k) not in DATE_FIELDS and k not in ("DATE_CREATE", "DATE_MODIFY", "TIMESTAMP_X"):
                raise ValueError(f"{k} is not a date field of {entity}")
            rec[k] = M.norm_value("datetime", v)
        return M.out_record(p, ent, rec)


def _public_user(u: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in u.items() if not k.startswith("_")}, "workday": u["_workday"]}


def create_app(state: SandboxState | None = None) -> Starlette:
    """The Bitrix24 sandbox as an ASGI app; the state is at ``app.state.sandbox``."""
    state = state or SandboxState()
    quiet_dropped_answers()
    handler = App(state)
    app = Starlette(routes=[Route("/{path:path}", handler.dispatch, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])
    app.state.sandbox = state
    return app
