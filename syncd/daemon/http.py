"""The daemon's one ASGI app: health, stats, metrics (routes_monitor.py), the status page and login
(routes_page.py), admin actions and JSON lists (routes_admin.py), and the routes connectors
contribute — 1C exchange, form posts, CRM events under `/hooks/…` (routes_hooks.py). What they
share (auth, sessions, redaction, answers) is syncd/daemon/web.py.

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

from typing import Any

from starlette.applications import Starlette

from syncd.daemon import routes_admin, routes_hooks, routes_monitor, routes_page
from syncd.daemon.runtime import Runtime
from syncd.daemon.web import TraceFn, Web


def create_app(runtime: Runtime, *, checks: Any = None, trace: TraceFn | None = None) -> Starlette:
    """The app over `runtime`; `checks` (a `LiveCheck`, when the daemon runs one) adds each
    system's live-check state to /healthz, /stats and the page; `trace` answers `/api/trace`
    (default: syncd.trace when present)."""
    web = Web(runtime, checks=checks, trace=trace)
    own = routes_monitor.routes(web) + routes_page.routes(web) + routes_admin.routes(web)
    app = Starlette(routes=routes_hooks.mount(runtime, own))
    app.state.runtime = runtime
    app.state.registry = web.registry
    app.state.backfills = web.backfills
    return app


__all__ = ["create_app"]
