"""The ASGI app: request parsing (PHP bracket keys), API key check, faults, the token bucket, the
request log, then the v5 method (api.py) or the control API (control.py)."""

from __future__ import annotations

import functools

import asyncio
import json
import re
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from syncd.sandbox.retailcrm import api, control
from syncd.sandbox.retailcrm.state import ApiError, Sandbox
from syncd.sandbox.server import DroppedResponse, quiet_dropped_answers

_BRACKETS = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")


def parse_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """PHP-style keys, as the API reads them: filter[ids][]=1&filter[email]=x -> nested dicts/lists."""
    out: dict[str, Any] = {}
    for name, value in pairs:
        m = _BRACKETS.fullmatch(name)
        keys = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))] if m else [name]
        append = len(keys) > 1 and keys[-1] == ""
        if append:
            keys.pop()
        cur = out
        for k in keys[:-1]:
            if not isinstance(cur.get(k), dict):
                cur[k] = {}
            cur = cur[k]
        if append:
            if not isinstance(cur.get(keys[-1]), list):
                cur[keys[-1]] = []
            cur[keys[-1]].append(value)
        else:
            cur[keys[-1]] = value
    return out


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status_code=status,
                    headers={"Content-Type": "application/json; charset=UTF-8"})


# the dropped-answer fault: an answer started as this peer starts it, cut short
_dropped = functools.partial(DroppedResponse, "application/json", b'{"success":')


def _nginx(status: int) -> Response:
    title = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Temporarily Unavailable",
             504: "Gateway Time-out"}.get(status, "Error")
    return HTMLResponse(f"<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n"
                        f"<center><h1>{status} {title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
                        "</body>\r\n</html>\r\n", status)


class App:
    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path.rstrip("/") or "/"
        if path == "/_sandbox" or path.startswith("/_sandbox/"):
            return await control.handle(self.sb, request, path)
        if not path.startswith("/api/"):
            return json_response({"success": False, "errorMsg": "Not found"}, 404)
        return await self.api(request, path)

    async def api(self, request: Request, path: str) -> Response:
        sb, f = self.sb, self.sb.faults
        entry: dict[str, Any] = {"ts": time.time(), "method": request.method, "path": path}
        try:
            params = parse_pairs(parse_qsl(request.url.query, keep_blank_values=True))
            if "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
                # writes are forms with JSON-encoded entity fields; a JSON body is not read, as live
                body = (await request.body()).decode("utf-8", "replace")
                params.update(parse_pairs(parse_qsl(body, keep_blank_values=True)))
            key = request.headers.get("x-api-key") or params.pop("apiKey", None) or ""
            params.pop("apiKey", None)
            entry["key"] = key
            hit = not f.path or path.startswith(f.path)
            if hit and f.latency:
                await asyncio.sleep(f.latency)
            if hit and f.drop_next > 0:
                with sb.lock:
                    f.drop_next -= 1
                entry.update(status=0, fault="drop")
                return _dropped()
            if hit and f.fail_next > 0:
                with sb.lock:
                    f.fail_next -= 1
                entry.update(status=f.fail_status, fault="error")
                if f.html:
                    return _nginx(f.fail_status)
                return json_response({"success": False, "errorMsg": "Internal Server Error"
                                      if f.fail_status == 500 else "Service Unavailable"}, f.fail_status)
            if not key:
                raise ApiError(403, '"apiKey" is missing.')
            api_key = sb.keys.get(key)
            if api_key is None:
                raise ApiError(403, 'Wrong "apiKey" value.')
            if not sb.admit(key):
                entry["fault"] = "rate_limit"
                raise ApiError(sb.limits.status, "Limit of requests per second exceeded")
            handler, ident = api.route(request.method, path)
            with sb.lock:
                status, body = handler(api.Ctx(sb, api_key, params, ident))
            if hit and f.lose_next > 0:
                with sb.lock:
                    f.lose_next -= 1
                entry.update(status=0, fault="lost_answer", done=status)
                return _dropped()
            entry["status"] = status
            return json_response(body, status)
        except ApiError as e:
            entry.update(status=e.status, error=e.msg)
            return json_response(e.body(), e.status)
        except Exception as e:  # noqa: BLE001 - a sandbox bug answers 500 like the API would, and is logged
            entry.update(status=500, error="exception", exception=repr(e))
            return json_response({"success": False, "errorMsg": "Internal Server Error"}, 500)
        finally:
            entry["duration"] = round(time.time() - entry["ts"], 5)
            sb.record(entry)


def create_app(sb: Sandbox | None = None) -> Starlette:
    quiet_dropped_answers()
    handler = App(sb or Sandbox())
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    app = Starlette(routes=[Route("/{path:path}", handler.dispatch, methods=methods)])
    app.state.sandbox = handler.sb
    return app
