"""What every route of the daemon's app shares (`Web`): admin auth (bearer token or a browser
session with a CSRF field), redaction of secrets, JSON and page answers, the statistics.

The app and what it serves: syncd/daemon/http.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

import structlog
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from syncd.daemon import page
from syncd.daemon.metrics import StatsCollector
from syncd.daemon.i18n import COOKIE as LANG_COOKIE
from syncd.daemon.i18n import N_, Lang, Refusal, negotiate
from syncd.daemon.operations import Backfills
from syncd.daemon.runtime import Runtime
from syncd.store import utcnow

log = structlog.get_logger("syncd.http")

COOKIE = "syncd_session"
SESSION_TTL = 12 * 3600.0
NO_TOKEN = ("admin actions are disabled: no admin token is configured. Set `admin_token = "
            "\"${SYNCD_ADMIN_TOKEN}\"` under [daemon] in config.toml and export SYNCD_ADMIN_TOKEN "
            "(e.g. `openssl rand -hex 32`), then restart syncd.")


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, default=_json_default, separators=(",", ":")).encode()


def _json_default(v: Any) -> Any:
    if isinstance(v, (dt.datetime, dt.date)):
        if isinstance(v, dt.datetime) and v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


class Redactor:
    """Replaces every configured secret (values read from `${ENV}`) and the admin token."""

    def __init__(self, secrets_: Iterable[str]) -> None:
        # longest first, so a secret containing another is replaced whole
        self.secrets = sorted({s for s in secrets_ if s and len(s) >= 4}, key=len, reverse=True)

    def text(self, s: str) -> str:
        for sec in self.secrets:
            if sec in s:
                s = s.replace(sec, "***")
        return s

    def data(self, v: Any) -> Any:
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            return {k: self.data(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [self.data(x) for x in v]
        if isinstance(v, bytes):
            return self.text(v.decode("utf-8", "replace"))
        return v


class _Sessions:
    """Browser sessions: random ids in memory, CSRF tokens derived from them."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._ids: dict[str, float] = {}
        self._lock = threading.Lock()

    def open(self) -> str:
        sid = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            for k in [k for k, exp in self._ids.items() if exp < now]:
                del self._ids[k]
            self._ids[sid] = now + SESSION_TTL
        return sid

    def valid(self, sid: str | None) -> bool:
        if not sid:
            return False
        with self._lock:
            exp = self._ids.get(sid)
        return exp is not None and exp > time.time()

    def close(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._ids.pop(sid, None)

    def csrf(self, sid: str) -> str:
        return hmac.new(self._key, b"csrf:" + sid.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, sid: str, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(self.csrf(sid), str(value))


def _truthy(v: Any) -> bool:
    return v is True or (isinstance(v, (str, int)) and str(v).strip().lower() in ("1", "true", "yes", "on"))


def _int(v: str) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _safe_next(v: Any) -> str:
    s = str(v or "/")
    if not s.startswith("/") or s.startswith("//") or "\\" in s:
        return "/"
    return s


class _Auth:
    NONE, BEARER = "none", "bearer"


Action = Callable[[dict[str, Any]], Any]
Done = Callable[[Any, Lang], str]

# The page loads nothing from elsewhere and runs no inline script or style.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
STATIC_TYPES = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}
TraceFn = Callable[[str], dict[str, Any]]


def _since(v: Any, tz: Any) -> dt.datetime:
    """The start of a backfill period: a date (midnight in the page's time zone) or an ISO time."""
    s = str(v or "").strip()
    if not s:
        raise Refusal(N_("give the start of the period (since)"))
    try:
        if len(s) == 10:
            d = dt.date.fromisoformat(s)
            return dt.datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(dt.UTC)
        when = dt.datetime.fromisoformat(s)
    except ValueError:
        raise Refusal(N_("not a date: {value} (expected YYYY-MM-DD)"), value=s[:40]) from None
    return (when if when.tzinfo else when.replace(tzinfo=tz)).astimezone(dt.UTC)


def _syncd_trace(rt: Runtime) -> TraceFn | None:
    """The record trace of `syncd.trace` (the scenarios issue's), when this build has it:
    `syncd.trace.api(runtime, query) -> {"query", "records": [...]}`."""
    try:
        from syncd import trace as mod  # type: ignore[attr-defined]
    except ImportError:
        return None
    fn = getattr(mod, "api", None)
    return (lambda q: fn(rt, q)) if callable(fn) else None


class Web:
    """The app's shared state and helpers, handed to each group of routes."""

    def __init__(self, runtime: Runtime, *, checks: Any = None, trace: TraceFn | None = None) -> None:
        self.rt = runtime
        self.d = runtime.settings.daemon
        self.token: str | None = self.d.admin_token or None
        self.redactor = Redactor([*runtime.settings.secrets, *([self.token] if self.token else [])])
        self.sessions = _Sessions()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatsCollector(runtime))
        self.backfills = Backfills(runtime)
        self.trace_fn = trace or _syncd_trace(runtime)
        self.checks = checks

    def jresp(self, content: Any, status: int = 200, **kw: Any) -> Response:
        return _JSON(self.redactor.data(content), status_code=status, **kw)

    def lang(self, request: Request) -> Lang:
        code = negotiate(configured=self.d.language, accept_language=request.headers.get("accept-language"),
                         chosen=request.cookies.get(LANG_COOKIE))
        return Lang(code, self.d.timezone)

    def page_resp(self, body: str, status: int = 200) -> Response:
        return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)

    # -- auth helpers ---------------------------------------------------------------------------
    def bearer(self, request: Request) -> str | None:
        """NONE (no header), BEARER (right token) or "bad"."""
        h = request.headers.get("authorization")
        if not h:
            return _Auth.NONE
        scheme, _, cred = h.partition(" ")
        if self.token and scheme.lower() == "bearer" and hmac.compare_digest(cred.strip().encode(),
                                                                              self.token.encode()):
            return _Auth.BEARER
        return "bad"

    def session_id(self, request: Request) -> str | None:
        sid = request.cookies.get(COOKIE)
        return sid if self.token and self.sessions.valid(sid) else None

    def wants_html(self, request: Request) -> bool:
        ctype = request.headers.get("content-type", "")
        accept = request.headers.get("accept", "")
        return ("application/x-www-form-urlencoded" in ctype or "multipart/form-data" in ctype
                or ("text/html" in accept and "application/json" not in accept))

    def unauthorized(self, request: Request, reason: str = "admin token required") -> Response:
        if self.wants_html(request) and not request.headers.get("authorization"):
            nxt = "/" if request.method != "GET" else request.url.path
            return RedirectResponse(f"/login?next={quote(nxt)}", status_code=303)
        return self.jresp({"error": reason, "hint": "send `Authorization: Bearer <admin token>`"}, 401,
                          headers={"WWW-Authenticate": 'Bearer realm="syncd"'})

    def no_token_page(self, t: Lang, status: int = 403) -> Response:
        return self.page_resp(page.message_page(t, t._("Admin login disabled"), t._(
            "Admin actions and the page's records are disabled: no admin token is configured. Set "
            "`admin_token = \"${SYNCD_ADMIN_TOKEN}\"` under [daemon] in config.toml, export SYNCD_ADMIN_TOKEN "
            "(e.g. `openssl rand -hex 32`), then restart syncd."), self.redactor.text), status)

    def no_token(self, request: Request) -> Response:
        if self.wants_html(request):
            return self.no_token_page(self.lang(request))
        return self.jresp({"error": NO_TOKEN}, 403)

    async def params(self, request: Request) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "")
        if "application/json" in ctype:
            body = await request.body()
            if not body.strip():
                return {}
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            return data
        if "form" in ctype:
            form = await request.form()
            out: dict[str, Any] = {}
            for k in form:
                vals = form.getlist(k)
                out[k] = vals if len(vals) > 1 else vals[0]
            return out
        return dict(request.query_params)

    async def admin_action(self, request: Request, action: Action, done: Done, anchor: str = "",
                           fail: Callable[[str, Lang], str] | None = None) -> Response:
        """Run an admin action: auth, CSRF, params, then JSON (API, the page's script) or 303 to the
        page with what happened (a form post)."""
        if not self.token:
            return self.no_token(request)
        b = self.bearer(request)
        if b == "bad":
            return self.unauthorized(request, "wrong admin token")
        sid = None if b == _Auth.BEARER else self.session_id(request)
        if b != _Auth.BEARER and sid is None:
            return self.unauthorized(request)
        try:
            p = await self.params(request)
        except (ValueError, UnicodeDecodeError) as exc:
            return self.jresp({"error": f"bad request body: {exc}"}, 400)
        if sid is not None:
            csrf = p.pop("csrf", None) or request.headers.get("x-csrf-token")
            if not self.sessions.check_csrf(sid, csrf if isinstance(csrf, str) else None):
                return self.jresp({"error": "missing or wrong CSRF token; reload the page"}, 403)
        else:
            p.pop("csrf", None)
        t = self.lang(request) if sid is not None else Lang("en", self.d.timezone)
        status, result, error = 200, None, None
        try:
            result = await run_in_threadpool(action, p)
        except Refusal as exc:
            status, error = exc.status, exc.translate(t)
        except KeyError as exc:
            status, error = 404, str(exc.args[0] if exc.args else exc)
        except ValueError as exc:
            status, error = 409 if "already" in str(exc) else 400, str(exc)
        log.info("admin_action", path=request.url.path, via=b if sid is None else "session",
                 status=status, error=error)
        if error and sid is not None and fail is not None:
            error = fail(error, t)
        if sid is not None and "application/json" not in request.headers.get("content-type", ""):
            # a form post from the page: back to the page, with what happened
            return RedirectResponse(page.redirect_target(None if error else done(result, t), error, anchor),
                                    status_code=303)
        if error:
            return self.jresp({"error": error}, status)
        out = {"ok": True, **(result if isinstance(result, dict) else {"result": result})}
        if sid is not None:
            out["notice"] = done(result, t)
        return self.jresp(out)

    def api_auth(self, request: Request) -> Response | None:
        if not self.token:
            return self.no_token(request)
        b = self.bearer(request)
        if b == "bad":
            return self.unauthorized(request, "wrong admin token")
        if b == _Auth.BEARER or self.session_id(request):
            return None
        return self.unauthorized(request)

    def stats(self) -> dict[str, Any]:
        st = self.rt.stats()
        st["instance"] = self.rt.instance
        st["uptime_seconds"] = max(0.0, (utcnow() - self.rt.started_at).total_seconds())
        if self.checks is not None:
            st["checks"] = self.checks.view()
        paused = self.rt.paused()
        for name, it in st.get("integrations", {}).items():
            it["paused"] = name in paused
        return st
