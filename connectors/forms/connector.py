"""The `forms` connector: site forms post to `POST /hooks/forms/<form>`; each post becomes a lead.

Push-based: nothing to poll and nothing to write. A post passes, in this order: the per-IP rate
limit (429), the form's token (401), the size limit (413, told from Content-Length or counted
while reading, never reading more than the limit), the signature (403), the body's parsing
(400/415), the honeypot, the field checks (400 naming the field), the duplicate window; then it is
committed to the store with its outbox rows (connectors/forms/intake.py) and only then answered
200 `{"ok": true, "id": ...}`. The CRM write follows from the outbox: the site never waits on the CRM.

Tokens, signatures, field values and client addresses are never logged: a log line names the
form, the outcome and, for a refusal, the field's name.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

import structlog

from connectors.forms import convert
from connectors.forms.errors import FormError
from connectors.forms.intake import Intake, Post, submission_id
from connectors.forms.parse import parse_body
from connectors.forms.settings import FormSettings, FormsSettings
from syncd.connector import BaseConnector, ConnectorContext, Health, Route
from syncd.store import utcnow

log = structlog.get_logger("syncd.forms")

PATH = "/hooks/forms/"
TOKEN_HEADER = "X-Syncd-Token"


def form_url(base: str, form: str, token: str) -> str:
    """The address a site posts a form to, token included (what `syncd demo` prints)."""
    return f"{base.rstrip('/')}{PATH}{form}?token={token}"


class RateLimit:
    """Posts per window per (form, client address), in this process (a sliding window)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], collections.deque[float]] = {}
        self._sweep = time.monotonic()

    def allow(self, form: str, ip: str, limit: int, window: float) -> bool:
        if limit <= 0:
            return True
        now = time.monotonic()
        if now - self._sweep > 60.0:              # forget addresses that went quiet
            self._seen = {k: q for k, q in self._seen.items() if q and now - q[-1] < 3600.0}
            self._sweep = now
        q = self._seen.setdefault((form, ip), collections.deque())
        while q and now - q[0] >= window:
            q.popleft()
        if len(q) >= limit:
            return False
        q.append(now)
        return True


def _answer(body: dict[str, Any], status: int = 200) -> Any:
    from starlette.responses import Response

    return Response(json.dumps(body, ensure_ascii=False), status_code=status,
                    media_type="application/json; charset=utf-8")


class FormsConnector(BaseConnector):
    def __init__(self, name: str, settings: FormsSettings, ctx: ConnectorContext) -> None:
        self.name, self.settings, self.ctx = name, settings, ctx
        self.streams = {}
        self.writes = frozenset()
        self.intake = Intake(name, ctx)
        self.limits = RateLimit()
        mapper = getattr(ctx, "mapper", None)
        self.region = getattr(getattr(mapper, "ms", None), "region", None) or "RU"

    # -- connector protocol ---------------------------------------------------------------------
    def health(self) -> Health:
        return Health(True, f"{len(self.settings.form)} form(s) at {PATH}<name>")

    def http_routes(self) -> Sequence[Route]:
        return tuple(Route(PATH + form, self._endpoint_for(form), ("POST",)) for form in self.settings.form)

    def close(self) -> None:
        self.intake.close()

    # -- a post ---------------------------------------------------------------------------------
    def _endpoint_for(self, form: str) -> Any:
        async def endpoint(request: Any) -> Any:
            try:
                return await self.handle(form, request)
            except FormError as exc:
                log.info("form_post_refused", system=self.name, form=form, status=exc.status,
                         field=exc.field, reason=exc.detail)
                return _answer(exc.body(), exc.status)
        return endpoint

    def _client_ip(self, fs: FormSettings, request: Any) -> str:
        if fs.client_ip_header:
            fwd = request.headers.get(fs.client_ip_header, "")
            if fwd.strip():
                return fwd.split(",")[0].strip()
        return request.client.host if request.client else "?"

    async def _read(self, fs: FormSettings, request: Any) -> bytes:
        """The body, refused with 413 as soon as it is known to be over the limit."""
        length = request.headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise FormError(400, None, "Неверный заголовок Content-Length", "bad Content-Length") from None
            if declared > fs.max_body:
                raise FormError(413, None, "Слишком большой запрос", f"body over {fs.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > fs.max_body:
                raise FormError(413, None, "Слишком большой запрос", f"body over {fs.max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _check_token(fs: FormSettings, request: Any) -> None:
        got = request.headers.get(TOKEN_HEADER) or request.query_params.get("token") or ""
        if not got or not secrets.compare_digest(got.encode(), fs.token.get_secret_value().encode()):
            raise FormError(401, None, "Доступ запрещён: неверный токен формы",
                            f"missing or wrong token ({TOKEN_HEADER} header or ?token=)")

    @staticmethod
    def _check_signature(fs: FormSettings, request: Any, body: bytes) -> None:
        if fs.signature_secret is None:
            return
        got = (request.headers.get(fs.signature_header) or "").strip().lower()
        got = got.removeprefix("sha256=")
        want = hmac.new(fs.signature_secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
        if not got or not hmac.compare_digest(got, want):
            raise FormError(403, None, "Доступ запрещён: неверная подпись",
                            f"missing or wrong HMAC-SHA256 signature in {fs.signature_header}")

    async def handle(self, form: str, request: Any) -> Any:
        fs = self.settings.form[form]
        if not self.limits.allow(form, self._client_ip(fs, request), fs.rate_limit, fs.rate_window):
            raise FormError(429, None, "Слишком много заявок, попробуйте позже", "rate limit")
        self._check_token(fs, request)
        body = await self._read(fs, request)
        self._check_signature(fs, request, body)
        values = parse_body(request.headers.get("content-type", ""), body)
        fp = convert.fingerprint(form, fs, values)
        if fs.honeypot and (values.get(fs.honeypot) or "").strip():
            # A bot that filled the hidden field is answered exactly like a person (200 and an id
            # of the same shape): told it was caught, it would learn to skip the field. Nothing is
            # stored and no lead is made.
            log.info("form_post_honeypot", system=self.name, form=form)
            return _answer({"ok": True, "id": submission_id(fp, time.time())})
        kind, fields = convert.to_fields(form, fs, values, now=utcnow(), region=self.region)
        hold = f"form {form}: held for review (mode = \"review\")" if fs.mode == "review" else None
        person = convert.visitor(fs, values, now=utcnow(), region=self.region)
        firm = convert.company(fs, values, now=utcnow(), region=self.region)
        post = Post(form, kind, fields, fp, fs.duplicate_window, hold, person=person, company=firm)
        try:
            sid, duplicate = await asyncio.wrap_future(self.intake.submit(post))
        except Exception as exc:  # noqa: BLE001 - not committed: the site must try again
            log.error("form_post_failed", system=self.name, form=form, error=type(exc).__name__)
            return _answer({"ok": False, "error": "Временная ошибка, повторите отправку",
                            "field": None, "detail": "not stored; try again"}, 503)
        log.info("form_post", system=self.name, form=form, id=sid, duplicate=duplicate, mode=fs.mode)
        return _answer({"ok": True, "id": sid})
