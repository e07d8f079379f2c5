"""RetailCRM API v5 transport: the key header, PHP-bracket query strings, form writes with JSON-encoded
entities, the shared request budget and the error envelope.

Errors: "Limit of requests per second exceeded" (503/429) fills the budget and is retried here for any
method (the API did nothing); 5xx, timeouts and broken connections -> TransientError (GETs are retried
here a few times, a POST never: its effect may have happened — the writer looks its key up first);
``success: false`` 400 -> PermanentError with errorMsg and the per-field errors; 401/403 ->
PermanentError; 404 on a GET -> None when asked (`missing_ok`). The key is never logged.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
import structlog
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from connectors.retailcrm.settings import RetailCRMSettings
from syncd.errors import PermanentError, TransientError

log = structlog.get_logger("syncd.retailcrm")

LIMIT_MSG = "Limit of requests per second"
PAGE = 100                       # the largest list page the API gives


class Bucket(Protocol):
    def acquire(self) -> float: ...
    def fill(self) -> None: ...


class TokenBucket:
    """A local budget when the daemon gives none (tests, `syncd check`): `rate` a second, `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = float(rate), max(1.0, float(burst))
        self._tokens, self._ts = self.burst, time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._ts) * self.rate)
            self._ts = now
            self._tokens -= 1.0
            wait = max(0.0, -self._tokens / self.rate)
        if wait:
            time.sleep(wait)
        return wait

    def fill(self) -> None:
        with self._lock:                       # the account said "too many": nothing left for a second
            self._tokens, self._ts = min(self._tokens, 0.0), time.monotonic()


class _LimitHit(TransientError):
    """The API refused the call for its rate limit: nothing was done, any method may be sent again."""


class _Retryable(TransientError):
    """A failed GET worth another try inside the client."""


def php_params(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``filter[ids][]=1&filter[sinceId]=5``: nested mappings become bracket keys, lists ``[]``."""
    out: list[tuple[str, str]] = []

    def walk(value: Any, key: str) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{key}[{k}]")
        elif isinstance(value, (list, tuple, set, frozenset)):
            for v in value:
                walk(v, f"{key}[]")
        else:
            out.append((key, "1" if value is True else "0" if value is False else str(value)))

    for k, v in params.items():
        walk(v, str(k))
    return out


def _plain(v: Any) -> Any:
    """Decimals (money) as their exact text, dates as ISO text, tuples and sets as lists."""
    if isinstance(v, (tuple, set, frozenset)):
        return list(v)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def describe_error(data: Mapping[str, Any]) -> str:
    """errorMsg with the per-field errors ("Order is not loaded: email: This value is not valid")."""
    msg = str(data.get("errorMsg") or "error")
    errors = data.get("errors")
    if isinstance(errors, Mapping) and errors:
        msg += ": " + "; ".join(f"{k}: {v}" for k, v in errors.items())
    elif isinstance(errors, list) and errors:
        msg += ": " + "; ".join(str(e) for e in errors)
    return msg


class RetailCRMClient:
    def __init__(self, settings: RetailCRMSettings, *, name: str = "retailcrm", bucket: Bucket | None = None) -> None:
        self.settings, self.name = settings, name
        self.base = settings.url
        self.host = urlsplit(settings.url).netloc.lower()
        self.bucket: Bucket = bucket or TokenBucket(settings.rate, settings.burst)
        self.session = requests.Session()
        self.session.headers["X-API-KEY"] = settings.api_key.get_secret_value()
        self.session.headers["Accept"] = "application/json"
        self.limit_hits = 0

    # -- the two verbs ----------------------------------------------------------------------------
    def get(self, path: str, params: Mapping[str, Any] | None = None, *, missing_ok: bool = False
            ) -> dict[str, Any] | None:
        """A read (``orders``, ``reference/statuses``, ``/api/credentials``), retried when transient."""
        s = self.settings
        for attempt in Retrying(retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
                                stop=stop_after_attempt(1 + s.transient_retries),
                                wait=wait_exponential_jitter(multiplier=0.2, max=3.0, jitter=0.2), reraise=True):
            with attempt:
                return self._limited("GET", path, php_params(params or {}), None, missing_ok)
        raise AssertionError("unreachable")  # pragma: no cover

    def post(self, path: str, form: Mapping[str, Any], *, what: str = "") -> dict[str, Any]:
        """A write: a form whose entity fields are JSON (``order=<json>``), plus ``site`` when set.
        Never re-sent after a transient failure (only after the rate limit, which did nothing)."""
        data = {k: json.dumps(v, ensure_ascii=False, default=_plain) if isinstance(v, (Mapping, list)) else str(v)
                for k, v in form.items() if v is not None}
        if self.settings.site and "site" not in data:
            data["site"] = self.settings.site
        try:
            got = self._limited("POST", path, [], data, False, what=what)
        except _Retryable as exc:            # the caller decides: a write is looked up before it is sent again
            raise TransientError(str(exc), connector=self.name, code=exc.code) from None
        assert got is not None
        return got

    # -- one request, with the rate limit ---------------------------------------------------------
    def _limited(self, method: str, path: str, params: list[tuple[str, str]], data: dict[str, str] | None,
                 missing_ok: bool, what: str = "") -> dict[str, Any] | None:
        for attempt in Retrying(retry=retry_if_exception(lambda e: isinstance(e, _LimitHit)),
                                stop=stop_after_attempt(1 + self.settings.limit_retries),
                                wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.2), reraise=True):
            with attempt:
                return self._once(method, path, params, data, missing_ok, what)
        raise AssertionError("unreachable")  # pragma: no cover

    def url(self, path: str) -> str:
        return f"{self.base}{path}" if path.startswith("/api/") else f"{self.base}/api/v5/{path.lstrip('/')}"

    def _once(self, method: str, path: str, params: list[tuple[str, str]], data: dict[str, str] | None,
              missing_ok: bool, what: str) -> dict[str, Any] | None:
        label = f"{method} {path}" + (f" ({what})" if what else "")
        self.bucket.acquire()
        try:
            r = self.session.request(method, self.url(path), params=params or None, data=data,
                                     timeout=self.settings.timeout)
        except requests.Timeout:
            raise _Retryable(f"{label}: timeout after {self.settings.timeout}s", connector=self.name,
                             code="TIMEOUT") from None
        except requests.RequestException as exc:
            raise _Retryable(f"{label}: {type(exc).__name__} talking to {self.host}", connector=self.name,
                             code="CONNECTION") from None
        try:
            body = r.json()
            if not isinstance(body, dict):
                raise ValueError("not an object")  # noqa: TRY004 - handled just below
        except ValueError:
            if r.status_code >= 500 or r.status_code in (200, 429):
                raise _Retryable(f"{label}: HTTP {r.status_code}, not a JSON answer", connector=self.name,
                                 code=f"HTTP_{r.status_code}") from None
            raise PermanentError(f"{label}: HTTP {r.status_code}, not a JSON answer", connector=self.name,
                                 code=f"HTTP_{r.status_code}") from None
        if r.status_code < 400 and body.get("success") is not False:
            return body
        msg = describe_error(body)
        if r.status_code in (429, 503) and LIMIT_MSG in str(body.get("errorMsg") or ""):
            self.limit_hits += 1
            self.bucket.fill()
            raise _LimitHit(f"{label}: {msg}", retry_after=1.0, connector=self.name, code="LIMIT")
        if r.status_code >= 500 or r.status_code == 429:
            raise _Retryable(f"{label}: HTTP {r.status_code} {msg}", connector=self.name, code=str(r.status_code))
        if r.status_code == 404 and method == "GET" and missing_ok and msg == "Not found":
            return None
        if r.status_code == 400 and "Parameter 'site' is missing" in msg:
            msg += (" — the API key reaches several sites: set `site` in this system's settings "
                    "to the site code syncd writes to")
        raise PermanentError(f"{label}: {msg}", connector=self.name, code=str(r.status_code))

    # -- lists ------------------------------------------------------------------------------------
    def pages(self, path: str, name: str, params: Mapping[str, Any] | None = None
              ) -> Any:
        """Every page of a list (limit 100), yielding (rows, pagination)."""
        page = 1
        while True:
            got = self.get(path, {**(params or {}), "limit": PAGE, "page": page}) or {}
            rows = got.get(name) or []
            pag = got.get("pagination") or {}
            yield rows, pag
            if page >= int(pag.get("totalPageCount") or 0) or not rows:
                return
            page += 1

    def close(self) -> None:
        self.session.close()
