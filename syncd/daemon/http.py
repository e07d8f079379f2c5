"""The daemon's one ASGI app: health, stats, metrics, the status page, admin actions, and the
routes connectors contribute (1C exchange, form posts, CRM events under `/hooks/…`).

Connector routes are matched before the daemon's own, so a peer's correctly signed webhook always
reaches its connector; "poll this stream now" is the admin action `POST /admin/poll/{system}/{stream}`.

Admin auth: the configured `daemon.admin_token`, either as `Authorization: Bearer <token>`
(scripts, JSON answers) or a browser session opened by `POST /login`. The session cookie holds a
random id kept in this process's memory (never the token); form posts also carry a CSRF field,
an HMAC of the session id with a random per-process key (the page's script sends it as
`X-CSRF-Token`).

The status page (`/`, syncd/daemon/page.py) shows customer data — review records, conflict values,
quarantined records, run errors, traces — only to a logged-in session; without one it shows the
login form, and the integrations' counts only when `daemon.public_stats` is on. `/stats` and
`/metrics` are the monitoring endpoints (counts and states) and stay open as before.

The operator's actions (admin, CSRF-protected): resolve conflicts and reviews (`/api/entities`
finds the entity to bind to by name, phone, e-mail, ИНН or any id), release quarantine, replay
dead letters, and per integration a connection check, a backfill for a period (in the background;
`/api/backfill/{id}` is its progress), run now, pause and resume. `/api/trace?q=` is a record's
story across systems.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route as StarletteRoute

from syncd.daemon import glance, page
from syncd.daemon.i18n import COOKIE as LANG_COOKIE
from syncd.daemon.i18n import LANGUAGES, N_, Conflict, Lang, NotFound, Refusal, negotiate
from syncd.daemon.operations import Backfills, check_all, check_system, run_now
from syncd.daemon.runtime import Runtime
from syncd.daemon.search import search as search_entities
from syncd.errors import BadInput
from syncd.pipeline import settle
from syncd.store import tables as t
from syncd.store import utcnow
from syncd.store.stats import COUNT_KEYS

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


class StatsCollector(Collector):
    """Prometheus view of `runtime.stats()`, computed at scrape time."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("syncd_up", "1 when the daemon can read its database")
        try:
            st = self.rt.stats()
        except Exception as exc:  # noqa: BLE001 - a scrape reports, it does not raise
            log.warning("metrics_stats_failed", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        uptime = GaugeMetricFamily("syncd_uptime_seconds", "Seconds since the daemon started")
        uptime.add_metric([], max(0.0, (utcnow() - self.rt.started_at).total_seconds()))
        yield uptime
        info = GaugeMetricFamily("syncd_instance_info", "The instance name", labels=["instance"])
        info.add_metric([self.rt.instance], 1)
        yield info

        integ = st.get("integrations", {})
        records = CounterMetricFamily("syncd_records", "Records by result since the daemon started",
                                      labels=["integration", "result"])
        day = GaugeMetricFamily("syncd_records_last_24h", "Records by result in the last 24 hours",
                                labels=["integration", "result"])
        pending = GaugeMetricFamily("syncd_outbox_pending", "Writes waiting in the outbox", labels=["integration"])
        dead = GaugeMetricFamily("syncd_outbox_dead", "Dead-lettered writes", labels=["integration"])
        blocked = GaugeMetricFamily("syncd_outbox_blocked", "Writes waiting for a record they link to",
                                    labels=["integration"])
        waiting = GaugeMetricFamily("syncd_outbox_waiting_peer",
                                    "Writes waiting for their system to fetch them (1C's next exchange)",
                                    labels=["integration"])
        lag = GaugeMetricFamily("syncd_lag_seconds", "Age of the oldest pending write (0 when in step)",
                                labels=["integration"])
        quar = GaugeMetricFamily("syncd_quarantine_open", "Open quarantine items", labels=["integration"])
        review = GaugeMetricFamily("syncd_review_open", "Open identify reviews", labels=["integration"])
        last = GaugeMetricFamily("syncd_last_run_timestamp_seconds", "When the last run finished (or started)",
                                 labels=["integration"])
        last_ok = GaugeMetricFamily("syncd_last_success_timestamp_seconds", "When the last successful run ended",
                                    labels=["integration"])
        last_failed = GaugeMetricFamily("syncd_last_run_failed", "1 when the last run failed",
                                        labels=["integration"])
        for name, it in integ.items():
            for k in COUNT_KEYS:
                records.add_metric([name, k], float(it.get("counts", {}).get(k, 0)))
                day.add_metric([name, k], float(it.get("last_24h", {}).get(k, 0)))
            ob = it.get("outbox", {})
            pending.add_metric([name], float(ob.get("pending", 0)))
            dead.add_metric([name], float(ob.get("dead", 0)))
            blocked.add_metric([name], float(ob.get("blocked", 0)))
            if "waiting" in ob:
                waiting.add_metric([name], float(ob["waiting"]))
            if it.get("lag_seconds") is not None:
                lag.add_metric([name], float(it["lag_seconds"]))
            quar.add_metric([name], float(it.get("quarantine_open", 0)))
            review.add_metric([name], float(it.get("review_open", 0)))
            lr = it.get("last_run")
            if lr:
                ts = _ts(lr.get("finished_at") or lr.get("started_at"))
                if ts is not None:
                    last.add_metric([name], ts)
                last_failed.add_metric([name], 1.0 if lr.get("result") == "failed" else 0.0)
            ts = _ts(it.get("last_ok_at"))
            if ts is not None:
                last_ok.add_metric([name], ts)
        yield from (records, day, pending, blocked, dead, waiting, lag, quar, review, last, last_ok, last_failed)
        conflicts = GaugeMetricFamily("syncd_conflicts_open", "Open field conflicts")
        conflicts.add_metric([], float(st.get("totals", {}).get("conflicts_open", 0)))
        yield conflicts
        stale = GaugeMetricFamily("syncd_outbox_blocked_stale",
                                  "Writes blocked on a record that exists (0 unless a wake-up was missed)")
        stale.add_metric([], float(st.get("totals", {}).get("outbox_blocked_stale", 0)))
        yield stale
        drift = GaugeMetricFamily("syncd_drift_records",
                                  "Records the last audit found out of step with a system", labels=["integration"])
        for name, it in st.get("integrations", {}).items():
            drift.add_metric([name], float(it.get("drift_records", 0)))
        yield drift
        repaired = CounterMetricFamily("syncd_outbox_blocked_stale_repaired",
                                       "Blocked writes the outbox sweep woke since the daemon started")
        repaired.add_metric([], float(st.get("totals", {}).get("outbox_blocked_stale_repaired", 0)))
        yield repaired


def _ts(v: Any) -> float | None:
    if not v:
        return None
    if isinstance(v, str):
        try:
            v = dt.datetime.fromisoformat(v)
        except ValueError:
            return None
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        return v.timestamp()
    return None


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


def create_app(runtime: Runtime, *, checks: Any = None, trace: TraceFn | None = None) -> Starlette:
    """The app over `runtime`; `checks` (a `LiveCheck`, when the daemon runs one) adds each
    system's live-check state to /healthz, /stats and the page; `trace` answers `/api/trace`
    (default: syncd.trace when present)."""
    rt = runtime
    d = rt.settings.daemon
    token: str | None = d.admin_token or None
    redactor = Redactor([*rt.settings.secrets, *([token] if token else [])])
    sessions = _Sessions()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(rt))
    backfills = Backfills(rt)
    trace_fn = trace or _syncd_trace(rt)

    def esc(v: Any) -> str:
        return "" if v is None else html.escape(redactor.text(str(v)), quote=True)

    def jresp(content: Any, status: int = 200, **kw: Any) -> Response:
        return _JSON(redactor.data(content), status_code=status, **kw)

    def lang(request: Request) -> Lang:
        code = negotiate(configured=d.language, accept_language=request.headers.get("accept-language"),
                         chosen=request.cookies.get(LANG_COOKIE))
        return Lang(code, d.timezone)

    def page_resp(body: str, status: int = 200) -> Response:
        return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)

    # -- auth helpers ---------------------------------------------------------------------------
    def bearer(request: Request) -> str | None:
        """NONE (no header), BEARER (right token) or "bad"."""
        h = request.headers.get("authorization")
        if not h:
            return _Auth.NONE
        scheme, _, cred = h.partition(" ")
        if token and scheme.lower() == "bearer" and hmac.compare_digest(cred.strip().encode(), token.encode()):
            return _Auth.BEARER
        return "bad"

    def session_id(request: Request) -> str | None:
        sid = request.cookies.get(COOKIE)
        return sid if token and sessions.valid(sid) else None

    def wants_html(request: Request) -> bool:
        ctype = request.headers.get("content-type", "")
        accept = request.headers.get("accept", "")
        return ("application/x-www-form-urlencoded" in ctype or "multipart/form-data" in ctype
                or ("text/html" in accept and "application/json" not in accept))

    def unauthorized(request: Request, reason: str = "admin token required") -> Response:
        if wants_html(request) and not request.headers.get("authorization"):
            nxt = "/" if request.method != "GET" else request.url.path
            return RedirectResponse(f"/login?next={quote(nxt)}", status_code=303)
        return jresp({"error": reason, "hint": "send `Authorization: Bearer <admin token>`"}, 401,
                     headers={"WWW-Authenticate": 'Bearer realm="syncd"'})

    def no_token_page(t: Lang, status: int = 403) -> Response:
        return page_resp(page.message_page(t, t._("Admin login disabled"), t._(
            "Admin actions and the page's records are disabled: no admin token is configured. Set "
            "`admin_token = \"${SYNCD_ADMIN_TOKEN}\"` under [daemon] in config.toml, export SYNCD_ADMIN_TOKEN "
            "(e.g. `openssl rand -hex 32`), then restart syncd."), esc), status)

    def no_token(request: Request) -> Response:
        if wants_html(request):
            return no_token_page(lang(request))
        return jresp({"error": NO_TOKEN}, 403)

    async def params(request: Request) -> dict[str, Any]:
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

    async def admin_action(request: Request, action: Action, done: Done, anchor: str = "",
                           fail: Callable[[str, Lang], str] | None = None) -> Response:
        """Run an admin action: auth, CSRF, params, then JSON (API, the page's script) or 303 to the
        page with what happened (a form post)."""
        if not token:
            return no_token(request)
        b = bearer(request)
        if b == "bad":
            return unauthorized(request, "wrong admin token")
        sid = None if b == _Auth.BEARER else session_id(request)
        if b != _Auth.BEARER and sid is None:
            return unauthorized(request)
        try:
            p = await params(request)
        except (ValueError, UnicodeDecodeError) as exc:
            return jresp({"error": f"bad request body: {exc}"}, 400)
        if sid is not None:
            csrf = p.pop("csrf", None) or request.headers.get("x-csrf-token")
            if not sessions.check_csrf(sid, csrf if isinstance(csrf, str) else None):
                return jresp({"error": "missing or wrong CSRF token; reload the page"}, 403)
        else:
            p.pop("csrf", None)
        t = lang(request) if sid is not None else Lang("en", d.timezone)
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
            return jresp({"error": error}, status)
        out = {"ok": True, **(result if isinstance(result, dict) else {"result": result})}
        if sid is not None:
            out["notice"] = done(result, t)
        return jresp(out)

    def api_auth(request: Request) -> Response | None:
        if not token:
            return no_token(request)
        b = bearer(request)
        if b == "bad":
            return unauthorized(request, "wrong admin token")
        if b == _Auth.BEARER or session_id(request):
            return None
        return unauthorized(request)

    # -- public endpoints -----------------------------------------------------------------------
    async def healthz(request: Request) -> Response:
        try:
            ok = await run_in_threadpool(rt.store.ping)
        except Exception as exc:  # noqa: BLE001
            log.warning("healthz_db_failed", error=type(exc).__name__)
            ok = False
        body: dict[str, Any] = {"status": "ok" if ok else "error", "db": bool(ok), "instance": rt.instance}
        if checks is not None:
            # the process is alive and serving (200) while a peer is down or still being checked;
            # `status` says so: starting (a check pending), degraded (a peer unreachable), error
            body["checks"] = checks.view()
            if ok:
                body["status"] = {"ok": "ok", "pending": "starting", "unreachable": "degraded",
                                  "mismatch": "error"}[checks.summary()]
        return jresp(body, 200 if ok else 503)

    def _stats() -> dict[str, Any]:
        st = rt.stats()
        st["instance"] = rt.instance
        st["uptime_seconds"] = max(0.0, (utcnow() - rt.started_at).total_seconds())
        if checks is not None:
            st["checks"] = checks.view()
        paused = rt.paused()
        for name, it in st.get("integrations", {}).items():
            it["paused"] = name in paused
        return st

    async def stats(request: Request) -> Response:
        try:
            st = await run_in_threadpool(_stats)
        except Exception as exc:  # noqa: BLE001
            log.error("stats_failed", error=type(exc).__name__)
            return jresp({"error": "statistics unavailable (database?)", "instance": rt.instance}, 503)
        return jresp(st)

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(redactor.text(body.decode("utf-8")), media_type=CONTENT_TYPE_LATEST)

    # -- the page -------------------------------------------------------------------------------
    def _glance_ctx() -> dict[str, Any]:
        st = _stats()
        systems = list(st.get("integrations", {}))
        now = utcnow()
        return {"stats": st, "now": now, "throughput": glance.throughput(rt.store, systems, now),
                "lag_history": glance.lag_history(rt.store, systems, now),
                "exchanges": glance.last_exchanges(rt.store, systems), "paused": rt.paused(),
                "streams": {n: list(c.streams) for n, c in rt.connectors.items()},
                "types": {n: s.type for n, s in rt.settings.systems.items()},
                "backfills": {n: j.view() for n, j in backfills.latest().items()}}

    def _page_ctx(logged_in: bool) -> dict[str, Any]:
        ctx: dict[str, Any] = {"stats": {}}
        if logged_in or d.public_stats:
            ctx.update(_glance_ctx())
        if logged_in:
            ctx.update(runs=glance.fold_runs(rt.store.recent_runs(200)), conflicts=rt.store.list_conflicts(),
                       quarantine=rt.store.list_quarantine(), review=rt.store.list_review(),
                       dead=rt.store.list_outbox("dead"))
        return ctx

    def _base(request: Request, t: Lang, sid: str | None) -> dict[str, Any]:
        return {"instance": rt.instance, "uptime": (utcnow() - rt.started_at).total_seconds(),
                "csrf": sessions.csrf(sid) if sid else None, "logged_in": sid is not None,
                "admin_enabled": bool(token), "public_stats": d.public_stats, "path": request.url.path}

    async def index(request: Request) -> Response:
        t = lang(request)
        sid = session_id(request)
        try:
            ctx = await run_in_threadpool(_page_ctx, sid is not None)
        except Exception as exc:  # noqa: BLE001
            log.error("status_page_failed", error=type(exc).__name__)
            return page_resp(page.message_page(t, t._("Status unavailable"), t._(
                "The database cannot be read; see the daemon's log."), esc), 503)
        ctx.update(_base(request, t, sid))
        if sid is not None:
            # what an action reported (the page's own redirect), shown once; never without a login
            ctx.update(notice=request.query_params.get("notice"), error=request.query_params.get("error"))
        return page_resp(page.status_page(t, ctx, esc))

    async def part(request: Request) -> Response:
        """One section's body, for the page's auto-refresh."""
        name = request.path_params["name"]
        t = lang(request)
        sid = session_id(request)
        if name not in ("glance", "runs"):
            return page_resp("", 404)
        if sid is None and not (name == "glance" and d.public_stats):
            return page_resp("", 401)
        if name == "glance":
            ctx = await run_in_threadpool(_glance_ctx)
        else:
            ctx = {"runs": await run_in_threadpool(lambda: glance.fold_runs(rt.store.recent_runs(200)))}
        ctx.update(_base(request, t, sid))
        body = page.glance(t, ctx, esc) if name == "glance" else page.runs(t, ctx, esc)
        return page_resp(body)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_TYPES:
            return Response("not found", status_code=404)
        body = (page.STATIC / name).read_bytes()
        return Response(body, media_type=STATIC_TYPES[name],
                        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})

    async def set_language(request: Request) -> Response:
        code = request.path_params["code"]
        resp = RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
        if code in LANGUAGES:
            resp.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, httponly=True, samesite="lax", path="/")
        return resp

    # -- login ----------------------------------------------------------------------------------
    async def login_form(request: Request) -> Response:
        t = lang(request)
        if not token:
            return no_token_page(t)
        return page_resp(page.login_page(t, esc, next_url=_safe_next(request.query_params.get("next")),
                                         instance=rt.instance))

    async def login(request: Request) -> Response:
        t = lang(request)
        if not token:
            return no_token_page(t)
        form = await request.form()
        given = str(form.get("token") or "")
        nxt = _safe_next(form.get("next"))
        if not hmac.compare_digest(given.encode(), token.encode()):
            log.warning("admin_login_failed", client=request.client.host if request.client else None)
            await asyncio.sleep(0.5)      # slows down guessing; the token itself should be long
            return page_resp(page.login_page(t, esc, next_url=nxt, error=t._("Wrong token."), instance=rt.instance),
                             401)
        old = request.cookies.get(COOKIE)
        sessions.close(old)
        sid = sessions.open()
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(COOKIE, sid, max_age=int(SESSION_TTL), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
        log.info("admin_login")
        return resp

    async def logout(request: Request) -> Response:
        sid = session_id(request)
        if sid:
            form = await request.form()
            csrf = form.get("csrf")
            if not sessions.check_csrf(sid, csrf if isinstance(csrf, str) else None):
                return jresp({"error": "missing or wrong CSRF token"}, 403)
            sessions.close(sid)
        resp = RedirectResponse("/", status_code=303)
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return resp

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

    routes: list[StarletteRoute] = [
        StarletteRoute("/healthz", healthz, methods=["GET"]),
        StarletteRoute("/stats", stats, methods=["GET"]),
        StarletteRoute("/metrics", metrics, methods=["GET"]),
        StarletteRoute("/", index, methods=["GET"]),
        StarletteRoute("/part/{name}", part, methods=["GET"]),
        StarletteRoute("/static/{name}", static, methods=["GET"]),
        StarletteRoute("/lang/{code}", set_language, methods=["GET"]),
        StarletteRoute("/login", login_form, methods=["GET"]),
        StarletteRoute("/login", login, methods=["POST"]),
        StarletteRoute("/logout", logout, methods=["POST"]),
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
    ]

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

    routes += [
        _api("/api/conflicts", lambda r: rt.store.list_conflicts(r.query_params.get("status", "open"), _limit(r))),
        _api("/api/quarantine", lambda r: rt.store.list_quarantine(r.query_params.get("status", "open"), _limit(r))),
        _api("/api/quarantine/{id}", _quarantine_item),
        _api("/api/review", lambda r: rt.store.list_review(r.query_params.get("status", "open"), _limit(r))),
        _api("/api/dead", lambda r: rt.store.list_outbox("dead", _limit(r))),
        _api("/api/entities", _entities),
        _api("/api/trace", _trace),
        _api("/api/backfill/{id}", lambda r: backfills.get(r.path_params["id"]).view()),
    ]

    # -- connector routes: mounted as they are, each keeps its own auth, and ahead of ours -------
    # A peer's webhook (Bitrix24 events under /hooks/…, the 1C exchange, form posts) must reach
    # its connector whatever our own routes look like, so connector routes are matched first; a
    # connector route that one of ours would also match is a configuration error, not a silent
    # shadowing either way.
    # A connector may name some of its paths optional (`optional_paths`: the 1C exchange's
    # default alias /bitrix/admin/1c_exchange.php): one that another connector also serves goes to
    # the connector that asked for it explicitly, or to the first, with a warning; two explicit
    # claims on one path are a configuration error.
    claims: dict[tuple[str, str], tuple[str, bool]] = {}
    wanted: list[tuple[str, Any, list[str], bool]] = []
    for name, conn in rt.connectors.items():
        optional = set(getattr(conn, "optional_paths", ()) or ())
        for r in conn.http_routes() or ():
            methods = [m.upper() for m in r.methods]
            soft = r.path in optional
            for builtin in routes:
                if builtin.path_regex.match(r.path) and set(methods) & set(builtin.methods or ()):
                    raise ValueError(f"connector {name!r} route {r.path} collides with the daemon's own "
                                     f"route {builtin.path}")
            for m in methods:
                held = claims.get((r.path, m))
                if held is None or (held[1] and not soft):
                    claims[(r.path, m)] = (name, soft)
                elif not soft:
                    raise ValueError(f"connector {name!r} route {m} {r.path} is already taken by "
                                     f"{held[0]!r}; give one of them another path in its [systems] table")
            wanted.append((name, r, methods, soft))
    own: list[StarletteRoute] = []
    for name, r, methods, soft in wanted:
        mine = [m for m in methods if claims[(r.path, m)][0] == name]
        if len(mine) < len(methods):
            log.warning("route_not_mounted", system=name, path=r.path,
                        served_by=claims[(r.path, methods[0])][0])
        if mine:
            own.append(StarletteRoute(r.path, r.endpoint, methods=mine, name=f"{name}:{r.path}"))
    routes = own + routes

    app = Starlette(routes=routes)
    app.state.runtime = rt
    app.state.registry = registry
    app.state.backfills = backfills
    return app
