"""The status page, its parts and static files, the language switch, and logging in and out.
Records are shown only to a logged-in session (see syncd/daemon/web.py)."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route as StarletteRoute

from syncd.daemon import glance, page
from syncd.daemon.i18n import COOKIE as LANG_COOKIE
from syncd.daemon.i18n import LANGUAGES, Lang
from syncd.daemon.web import COOKIE, SESSION_TTL, STATIC_TYPES, Web, _safe_next
from syncd.store import utcnow

log = structlog.get_logger("syncd.http")


def routes(web: Web) -> list[StarletteRoute]:
    """The page's endpoints."""
    rt = web.rt
    d = web.d
    token = web.token
    sessions = web.sessions
    backfills = web.backfills
    redact = web.redactor.text
    jresp = web.jresp
    lang = web.lang
    page_resp = web.page_resp
    session_id = web.session_id
    no_token_page = web.no_token_page
    _stats = web.stats

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
                "The database cannot be read; see the daemon's log."), redact), 503)
        ctx.update(_base(request, t, sid))
        if sid is not None:
            # what an action reported (the page's own redirect), shown once; never without a login
            ctx.update(notice=request.query_params.get("notice"), error=request.query_params.get("error"))
        return page_resp(page.status_page(t, ctx, redact))

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
        body = page.glance(t, ctx, redact) if name == "glance" else page.runs(t, ctx, redact)
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
        return page_resp(page.login_page(t, redact, next_url=_safe_next(request.query_params.get("next")),
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
            return page_resp(page.login_page(t, redact, next_url=nxt, error=t._("Wrong token."), instance=rt.instance),
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

    return [
        StarletteRoute("/", index, methods=["GET"]),
        StarletteRoute("/part/{name}", part, methods=["GET"]),
        StarletteRoute("/static/{name}", static, methods=["GET"]),
        StarletteRoute("/lang/{code}", set_language, methods=["GET"]),
        StarletteRoute("/login", login_form, methods=["GET"]),
        StarletteRoute("/login", login, methods=["POST"]),
        StarletteRoute("/logout", logout, methods=["POST"]),
    ]
