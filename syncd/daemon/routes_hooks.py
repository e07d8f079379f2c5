"""Connector routes (the 1C exchange, form posts, CRM events under `/hooks/…`): mounted as the
connectors give them, each keeping its own auth, ahead of the daemon's own routes."""

from __future__ import annotations

from typing import Any

import structlog
from starlette.routing import Route as StarletteRoute

from syncd.daemon.runtime import Runtime

log = structlog.get_logger("syncd.http")


def mount(rt: Runtime, routes: list[StarletteRoute]) -> list[StarletteRoute]:
    """The connectors' routes ahead of `routes` (the daemon's own)."""
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
    return own + routes

