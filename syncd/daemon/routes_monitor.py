"""Monitoring: `/healthz` (the process and its peers), `/stats` (JSON) and `/metrics` (Prometheus).
Open without a login: counts and states only, never records."""

from __future__ import annotations

from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from syncd.daemon.web import Web

log = structlog.get_logger("syncd.http")


def routes(web: Web) -> list[StarletteRoute]:
    """The monitoring endpoints."""
    rt = web.rt
    checks = web.checks
    registry = web.registry
    redactor = web.redactor
    jresp = web.jresp
    _stats = web.stats

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

    return [
        StarletteRoute("/healthz", healthz, methods=["GET"]),
        StarletteRoute("/stats", stats, methods=["GET"]),
        StarletteRoute("/metrics", metrics, methods=["GET"]),
    ]
