"""amoCRM API v4 transport: bearer auth, the shared rate budget, errors, paging.

Error classification:

- 429 (nginx page, before the call is done) -> the budget is marked full and the call is resent
  here, whatever its method; 5xx, timeouts and connection errors -> resent here only for GETs;
  a POST/PATCH that may have been applied raises `TransientError` (the write is retried by its
  caller, which looks its key up first); whatever is left after the retries is a `TransientError`;
- 401 -> one token refresh (auth.Tokens), then the call once more;
- 400 with ``validation-errors`` -> `PermanentError` naming each refused item and field path (the
  exception carries them in `.invalid`, request_id -> messages); other 4xx, 402 (unpaid) and a JSON
  403 -> `PermanentError`; a 403 nginx page (locked out after too many 429s) -> `TransientError`;
- 204 -> no content (an empty list, an unknown id).
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import structlog
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from connectors.amocrm.auth import MemoryState, Tokens
from connectors.amocrm.settings import AmoCRMSettings
from syncd.errors import PermanentError, TransientError

log = structlog.get_logger("syncd.amocrm")


class TokenBucket:
    """This process's mirror of amoCRM's limit (used when the daemon gives no shared budget):
    each request fills one unit, `rate` leak per second; `acquire()` sleeps while it is full."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.burst = float(rate), max(1.0, float(burst))
        self._clock, self._sleep = clock, sleep
        self._level, self._ts = 0.0, clock()
        self._lock = threading.Lock()

    def _leak(self) -> None:
        now = self._clock()
        self._level = max(0.0, self._level - (now - self._ts) * self.rate)
        self._ts = now

    def acquire(self) -> float:
        with self._lock:
            self._leak()
            self._level += 1.0
            wait = max(0.0, (self._level - self.burst) / self.rate)
        if wait > 0:
            self._sleep(wait)
        return wait

    def fill(self) -> None:
        with self._lock:
            self._leak()
            self._level = max(self._level, self.burst)


def safe_burst(burst: float) -> float:
    """One request under the account's burst: clock skew between us and amoCRM never tips it."""
    return max(1.0, burst - 1.0)


class Invalid(PermanentError):
    """400 validation-errors: `.invalid` maps each refused item's request_id to its messages."""

    def __init__(self, msg: str, invalid: dict[str, list[str]], **kw: Any) -> None:
        super().__init__(msg, **kw)
        self.invalid = invalid


class _Resend(TransientError):
    """Refused before it was done (429), or a GET: safe to send again."""


@dataclass
class Answer:
    status: int
    data: Any                          # parsed JSON, None for 204
    date: float | None = None          # the server's Date header (unix seconds), for the streams


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def describe_invalid(data: Mapping[str, Any], what: str) -> tuple[str, dict[str, list[str]]]:
    per: dict[str, list[str]] = {}
    for item in data.get("validation-errors") or []:
        rid = str(item.get("request_id"))
        for e in item.get("errors") or []:
            per.setdefault(rid, []).append(f"{e.get('path') or '(item)'}: {e.get('code')} ({e.get('detail')})")
    parts = [f"record {rid}: " + "; ".join(msgs) for rid, msgs in per.items()]
    return f"{what}: validation failed — " + " | ".join(parts or [str(data.get("detail"))]), per


class AmoClient:
    def __init__(self, settings: AmoCRMSettings, *, name: str = "amocrm", ctx: Any = None,
                 session: requests.Session | None = None) -> None:
        self.settings, self.name = settings, name
        self.session = session or requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": "syncd-amocrm"})
        budget = getattr(ctx, "rate_budget", None)
        # one budget per account, shared by every instance and system that calls it
        self.bucket = budget(f"amocrm:{settings.host}", settings.rate, safe_burst(settings.burst)) \
            if budget else TokenBucket(settings.rate, safe_burst(settings.burst))
        state = ctx if ctx is not None and hasattr(ctx, "state_swap") else MemoryState()
        self.tokens = Tokens(settings, name, state, self.session)
        self.calls = 0                     # requests sent (tests, benchmark)
        self.limit_hits = 0                # 429s met
        self.last_date: float | None = None

    @property
    def host(self) -> str:
        return self.settings.host

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, what: str = "") -> Answer:
        """One call to ``/api/v4/<path>``; 429 resent for any method, failures resent for GETs."""
        read = method == "GET"
        s = self.settings
        retrying = Retrying(retry=retry_if_exception(lambda e: isinstance(e, _Resend)),
                            stop=stop_after_attempt(1 + max(s.retries, 5)),
                            wait=wait_exponential_jitter(multiplier=0.2, max=4.0, jitter=0.2), reraise=True)
        what = what or f"{method} {path}"
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(method, path, params, json, what, read)
        except _Resend as exc:
            raise TransientError(str(exc), retry_after=exc.retry_after, connector=self.name,
                                 code=exc.code) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, method: str, path: str, params: Mapping[str, Any] | None, body: Any, what: str,
              read: bool, *, refreshed: bool = False) -> Answer:
        s = self.settings
        token = self.tokens.access()
        self.bucket.acquire()
        self.calls += 1
        try:
            r = self.session.request(method, f"{s.origin}/api/v4/{path.lstrip('/')}", params=params, json=body,
                                     headers={"Authorization": f"Bearer {token}"}, timeout=s.timeout)
        except requests.Timeout:
            err = f"{what}: timeout after {s.timeout}s"
            raise (_Resend if read else TransientError)(err, connector=self.name, code="TIMEOUT") from None
        except requests.RequestException as exc:
            # for a write: it may have been done with the answer lost — never resent blindly
            err = f"{what}: {type(exc).__name__} talking to {self.host}"
            raise (_Resend if read else TransientError)(err, connector=self.name, code="CONNECTION") from None
        date = _http_date(r.headers.get("Date"))
        if date is not None:
            self.last_date = date
        if r.status_code == 204:
            return Answer(204, None, date)
        try:
            data = r.json() if r.content else None
        except ValueError:
            data = None
        if r.status_code < 300:
            if data is None and r.content:
                raise (_Resend if read else TransientError)(f"{what}: HTTP {r.status_code}, not JSON",
                                                            connector=self.name, code="NOT_JSON")
            return Answer(r.status_code, data, date)
        status = r.status_code
        if status == 401 and not refreshed:
            self.tokens.refresh(token)
            return self._once(method, path, params, body, what, read, refreshed=True)
        if status == 429:
            self.limit_hits += 1
            self.bucket.fill()
            raise _Resend(f"{what}: 429 Too Many Requests", retry_after=1.0, connector=self.name, code="429")
        if status >= 500:
            raise (_Resend if read else TransientError)(f"{what}: HTTP {status}", connector=self.name,
                                                        code=f"HTTP_{status}")
        if status == 403 and not isinstance(data, dict):
            # nginx's page: the integration is locked out for a while after too many 429s
            raise TransientError(f"{what}: 403 (locked out for exceeding the rate limit)", retry_after=60.0,
                                 connector=self.name, code="LOCKED")
        detail = str((data or {}).get("detail") or (data or {}).get("title") or "") if isinstance(data, dict) else ""
        if status == 400 and isinstance(data, dict) and data.get("validation-errors"):
            msg, per = describe_invalid(data, what)
            raise Invalid(msg, per, connector=self.name, code="VALIDATION")
        if status == 401:
            raise PermanentError(f"{what}: 401 after a token refresh ({detail})", connector=self.name,
                                 code="UNAUTHORIZED")
        if status == 402:
            raise PermanentError(f"{what}: 402 Payment Required — the amoCRM account is not paid ({detail})",
                                 connector=self.name, code="PAYMENT_REQUIRED")
        raise PermanentError(f"{what}: HTTP {status}" + (f" ({detail})" if detail else ""), connector=self.name,
                             code=f"HTTP_{status}")

    # -- helpers ----------------------------------------------------------------------------------
    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params).data

    def pages(self, path: str, key: str, params: Mapping[str, Any] | None = None,
              limit: int | None = None) -> Iterator[list[dict[str, Any]]]:
        """Every page of a list until a short page or 204."""
        lim = limit or self.settings.page_limit
        page = 1
        while True:
            data = self.get(path, {**(params or {}), "limit": lim, "page": page})
            rows = list(((data or {}).get("_embedded") or {}).get(key) or [])
            if rows:
                yield rows
            if len(rows) < lim:
                return
            page += 1

    def all(self, path: str, key: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return [r for rows in self.pages(path, key, params) for r in rows]

    def close(self) -> None:
        self.session.close()
