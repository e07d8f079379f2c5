"""Account webhooks: amoCRM POSTs a form body (``leads[update][0][id]=…&account[subdomain]=…``) to
``/hooks/amocrm/<system>``; the streams it names are polled now (`ctx.trigger`). The answer is
immediate: amoCRM waits for it only a couple of seconds.

Register the URL in amoCRM (Настройки -> Интеграции -> Web hooks, or POST /api/v4/webhooks) for
add/update/status/responsible/delete of leads, contacts and companies; with `webhook_secret` set,
append ``?token=<secret>`` to it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

import structlog

from connectors.amocrm.settings import AmoCRMSettings
from syncd.connector import ConnectorContext, Route

log = structlog.get_logger("syncd.amocrm")

ENTITY_KEY = re.compile(r"^(leads|contacts|companies|customers|tasks|unsorted|catalogs|talk|message)"
                        r"\[(\w+)\]\[\d+\]")
STREAM_OF = {"leads": "leads", "contacts": "contacts", "companies": "companies"}


def streams_named(form: Sequence[tuple[str, str]]) -> tuple[list[str], bool]:
    """(streams an amoCRM webhook body names, is it an amoCRM webhook body at all)."""
    named: list[str] = []
    entity_keys = False
    for key, _ in form:
        m = ENTITY_KEY.match(key)
        if m:
            entity_keys = True
            stream = STREAM_OF.get(m.group(1))
            if stream and stream not in named:
                named.append(stream)
    has_account = any(k == "account[subdomain]" or k == "account[id]" for k, _ in form)
    return named, entity_keys and has_account


class Hooks:
    name: str
    settings: AmoCRMSettings
    ctx: ConnectorContext | None

    def http_routes(self) -> Sequence[Route]:
        return (Route(f"/hooks/amocrm/{self.name}", self._hook, ("POST",)),)

    async def _hook(self, request: Any) -> Any:
        from starlette.responses import JSONResponse
        secret = self.settings.webhook_secret
        if secret is not None:
            got = request.query_params.get("token") or ""
            if not secrets.compare_digest(got.encode(), secret.get_secret_value().encode()):
                log.warning("webhook_rejected", system=self.name, reason="token mismatch")
                return JSONResponse({"error": "forbidden"}, status_code=403)
        raw = (await request.body()).decode("utf-8", "replace")
        try:
            form = parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw))
        except ValueError:
            form = []
        streams, ok = streams_named(form)
        if not ok:
            return JSONResponse({"error": "not an amoCRM webhook: expected a form body with leads[…], "
                                          "contacts[…] or companies[…] entries and account[subdomain]"},
                                status_code=400)
        for stream in streams:
            if self.ctx is not None:
                try:
                    self.ctx.trigger(stream)
                except Exception as exc:  # noqa: BLE001 - a failed trigger waits for the next poll
                    log.warning("trigger_failed", system=self.name, stream=stream, error=str(exc))
        log.info("amocrm_webhook", system=self.name, streams=streams)
        return JSONResponse({"ok": True, "streams": streams})
