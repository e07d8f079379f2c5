"""The control API (``/_sandbox/…``, not part of amoCRM): what an admin or a manager does in the web UI,
credentials, the clock, faults, limits and the request log. The ``ui_*`` functions are also the
in-process way to do the same from a test."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from syncd.sandbox.amocrm import auth, records
from syncd.sandbox.amocrm.state import ENTITY_TYPES, Account, AmoError


def ui_write(acc: Account, etype: str, fields: dict[str, Any], *, user_id: int | None = None,
             record_id: int | None = None) -> dict[str, Any]:
    """A manager creates (no `record_id`) or edits a record in the web UI: the API's checks apply,
    updated_at moves, webhooks fire. Returns the record as the API shows it."""
    uid = user_id if user_id is not None else min(acc.users)
    with acc.lock:
        if record_id is None:
            done, events = records.create(acc, etype, [fields], uid)
        else:
            done, events = records.update(acc, etype, [fields], uid, one_id=record_id)
        acc.webhooks.emit(events)
        return records.view(acc, etype, done[0][1], acc.base_url + "/api/v4", {"contacts", "leads"})


def ui_delete(acc: Account, etype: str, record_id: int) -> bool:
    with acc.lock:
        events = records.delete(acc, etype, record_id)
        acc.webhooks.emit(events)
        return bool(events)


def _set(obj: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Update a knobs dataclass from a JSON body; unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(obj)}
    if set(body) - names:
        raise ValueError(f"unknown keys: {sorted(set(body) - names)}; known: {sorted(names)}")
    for k, v in body.items():
        setattr(obj, k, type(getattr(obj, k))(v))
    return dataclasses.asdict(obj)


async def handle(acc: Account, request: Request, body: Any) -> Response:
    parts = request.url.path.removeprefix("/_sandbox").strip("/").split("/")
    b = body if isinstance(body, dict) else {}
    base = acc.base_url + "/api/v4"
    try:
        client_id = str(b.get("client_id") or acc.credentials.get("client_id", ""))
        user_id = int(b.get("user_id") or (min(acc.users) if acc.users else 0))
        with acc.lock:
            match [request.method, *parts]:
                case ["GET", "account"]:
                    return JSONResponse({**acc.credentials, "paid": acc.paid})
                case ["PATCH", "account"]:
                    acc.paid = bool(b.get("paid", acc.paid))
                    return JSONResponse({**acc.credentials, "paid": acc.paid})
                case ["POST", "reset"]:
                    acc.reset()
                    return JSONResponse({"ok": True})
                case ["POST", "users"]:
                    u = acc.add_user(str(b["name"]), str(b.get("email", "")),
                                     is_admin=bool(b.get("is_admin")))
                    return JSONResponse(u.view(base), 201)
                case ["POST", "pipelines"]:
                    p = acc.add_pipeline(str(b["name"]), list(b.get("statuses", [])),
                                         is_main=bool(b.get("is_main")))
                    return JSONResponse(p.view(base, acc.id), 201)
                case ["POST", "custom_fields"]:
                    f = acc.add_field(str(b["entity_type"]), str(b["name"]), str(b.get("type", "text")),
                                      code=b.get("code"), enums=b.get("enums"))
                    return JSONResponse(f.view(base, acc.id), 201)
                case ["POST", "integrations"]:
                    i = auth.add_integration(acc, str(b.get("name", "app")),
                                             str(b.get("redirect_uri", "https://example.com/oauth")))
                    return JSONResponse(dataclasses.asdict(i), 201)
                case ["POST", "tokens"]:
                    lives = float(b.get("expires_in", auth.LONG_LIVED_TTL))
                    t = auth.issue_access(acc, client_id, user_id, lives, long_lived=True)
                    return JSONResponse({"access_token": t.value, "expires_at": t.expires_at}, 201)
                case ["POST", "oauth", "code"]:
                    return JSONResponse({"code": auth.issue_code(acc, client_id, user_id)}, 201)
                case ["POST", "oauth", "tokens"]:
                    expires_in = float(b.get("expires_in", auth.ACCESS_TTL))
                    return JSONResponse(auth.token_pair(acc, client_id, user_id, expires_in), 201)
                case ["GET" | "PATCH", "clock"]:
                    acc.offset = float(b["offset"]) if "offset" in b else (
                        acc.offset + float(b.get("advance", 0)))
                    return JSONResponse({"now": acc.now(), "offset": acc.offset})
                case ["GET" | "PATCH", "faults"]:
                    return JSONResponse(_set(acc.faults, b))
                case ["GET" | "PATCH", "limits"]:
                    acc.buckets.clear()           # new limits start with full buckets
                    return JSONResponse(_set(acc.limits, b))
                case ["GET", "log"]:
                    q = request.query_params
                    return JSONResponse({"entries": acc.log_view(float(q.get("since", 0)), q.get("kind"))})
                case ["DELETE", "log"]:
                    acc.log.clear()
                    return Response(status_code=204)
                case ["POST", "webhooks", "wait"]:
                    pass                            # waited for below, outside the lock
                case ["POST", "ui", etype] if etype in ENTITY_TYPES:
                    return JSONResponse(ui_write(acc, etype, dict(b.get("fields", {})), user_id=user_id), 201)
                case ["PATCH", "ui", etype, rid] if etype in ENTITY_TYPES:
                    fields = dict(b.get("fields", {}))
                    return JSONResponse(ui_write(acc, etype, fields, user_id=user_id, record_id=int(rid)))
                case ["DELETE", "ui", etype, rid] if etype in ENTITY_TYPES:
                    return Response(status_code=204 if ui_delete(acc, etype, int(rid)) else 404)
                case _:
                    return JSONResponse({"error": "not_found"}, 404)
        return JSONResponse({"done": acc.webhooks.wait(float(b.get("timeout", 10)))})
    except AmoError as e:
        return JSONResponse(e.body, e.status)
    except (KeyError, ValueError, TypeError) as e:
        return JSONResponse({"error": "bad_request", "detail": str(e)}, 400)
