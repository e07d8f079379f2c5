"""Bitrix24 REST client: URLs (webhook and OAuth), the envelope, errors, the leaky bucket, `batch`.

Error classification (protocols.md §3.8):

- retryable -> `TransientError`: 503 QUERY_LIMIT_EXCEEDED (first retried here with exponential
  backoff + jitter), 429/503 OPERATION_TIME_LIMIT (`retry_after` from `operating_reset_at`),
  OVERLOAD_LIMIT, 500/502/503/504, timeouts, connection errors, HTML instead of JSON;
- permanent -> `PermanentError`: ACCESS_DENIED, insufficient_scope, NO_AUTH_FOUND,
  INVALID_CREDENTIALS, NOT_FOUND/ERROR_NOT_FOUND, ERROR_CORE, ERROR_METHOD_NOT_FOUND, other 4xx;
- 401 `expired_token` (OAuth) -> one refresh through the token endpoint, tokens persisted through
  `state_set("oauth", …)`, then the call is repeated.

Nothing here logs or puts into an exception message a URL, a token or a webhook code.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import structlog
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from connectors.bitrix24.settings import Bitrix24Settings
from syncd.errors import PermanentError, TransientError

log = structlog.get_logger("syncd.bitrix24")

PAGE = 50          # rows per list page, commands per batch
READ_SUFFIXES = (".list", ".get", ".fields", ".current", ".status")
READ_METHODS = {"profile", "user.get", "user.current", "server.time", "methods", "scope", "app.info",
                "crm.category.list", "crm.status.list", "timeman.status"}

TRANSIENT_CODES = {"QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT", "OVERLOAD_LIMIT", "INTERNAL_SERVER_ERROR",
                   "ERROR_UNEXPECTED_ANSWER", "ERROR_SERVER", "TIMEOUT"}
PERMANENT_CODES = {"ACCESS_DENIED", "insufficient_scope", "INSUFFICIENT_SCOPE", "NO_AUTH_FOUND",
                   "INVALID_CREDENTIALS", "user_access_error", "NOT_FOUND", "ERROR_NOT_FOUND", "ERROR_CORE",
                   "ERROR_METHOD_NOT_FOUND", "INVALID_REQUEST", "ERROR_BATCH_LENGTH_EXCEEDED",
                   "ERROR_BATCH_METHOD_NOT_ALLOWED", "PORTAL_DELETED", "invalid_token", "invalid_grant",
                   "invalid_client", "ERROR_ARGUMENT", "ENTITY_TYPE_NOT_SUPPORTED", "PAYMENT_REQUIRED"}


# -- PHP-style query strings ----------------------------------------------------------------------

def php_query(params: Mapping[str, Any]) -> str:
    """`http_build_query`: nested dicts/lists become ``fields[TITLE]=…&filter[>ID]=5&select[0]=ID``.

    `$result[key]` references are left unescaped so the portal can substitute them in `batch`.
    """
    out: list[str] = []

    def enc(s: str) -> str:
        if "$result[" in s:
            # keep `$result[a][b]` readable for the portal's substitution; escape the rest
            return "".join(part if part.startswith("$result[") else quote(part, safe="")
                           for part in _split_refs(s))
        return quote(s, safe="")

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping):
            if not value:
                return
            for k, v in value.items():
                walk(v, f"{key}[{k}]")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")
        else:
            if value is None:
                value = ""
            elif value is True:
                value = "1"
            elif value is False:
                value = "0"
            elif hasattr(value, "isoformat"):
                value = value.isoformat()
            out.append(f"{quote(key, safe='[]')}={enc(str(value))}")

    for k, v in params.items():
        walk(v, str(k))
    return "&".join(out)


def _split_refs(s: str) -> list[str]:
    parts, i = [], 0
    while True:
        j = s.find("$result[", i)
        if j < 0:
            parts.append(s[i:])
            return [p for p in parts if p]
        parts.append(s[i:j])
        k = j + len("$result")
        while k < len(s) and s[k] == "[":
            e = s.find("]", k)
            if e < 0:
                break
            k = e + 1
        parts.append(s[j:k])
        i = k


def ref(key: str, *path: str) -> str:
    """A `$result[key][field]` reference to an earlier command of the same batch."""
    return f"$result[{key}]" + "".join(f"[{p}]" for p in path)


# -- the leaky bucket -----------------------------------------------------------------------------

class LeakyBucket:
    """Client-side mirror of the portal's bucket: each request fills one unit, `rate` leak per second.

    `acquire()` reserves a slot and sleeps until the request may go out; thread-safe and fair in
    reservation order. `fill()` marks the bucket full (after the portal said QUERY_LIMIT_EXCEEDED).
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.burst = float(rate), max(1.0, float(burst))
        self._clock, self._sleep = clock, sleep
        self._level = 0.0
        self._ts = clock()
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
    """The burst syncd allows itself: the portal's, less a margin for clock skew and latency."""
    return max(1.0, burst - min(5.0, max(1.0, burst * 0.05)))


# -- results --------------------------------------------------------------------------------------

@dataclass
class Envelope:
    result: Any
    next: int | None = None
    total: int | None = None
    time: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchResult:
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)   # key -> {error, error_description}
    totals: dict[str, Any] = field(default_factory=dict)
    nexts: dict[str, Any] = field(default_factory=dict)
    time_start: str | None = None      # the portal's `time.date_start` of the first call

    def get(self, key: str, *, connector: str = "bitrix24") -> Any:
        """The result of one command, or its error raised as Transient/PermanentError."""
        if key in self.errors:
            e = self.errors[key]
            raise classify(e.get("error", ""), e.get("error_description", ""), 200, connector=connector,
                           what=f"batch command {key!r}")
        return self.results.get(key)


def classify(code: str, description: str, status: int, *, connector: str = "bitrix24", what: str = "",
             time_info: Mapping[str, Any] | None = None) -> Exception:
    """A Bitrix24 error as TransientError or PermanentError (never echoes URLs or tokens)."""
    msg = f"{what + ': ' if what else ''}{code or 'HTTP ' + str(status)}" + (f" ({description})" if description else "")
    if code == "OPERATION_TIME_LIMIT":
        reset = (time_info or {}).get("operating_reset_at")
        retry_after = max(1.0, float(reset) - time.time()) if reset else 60.0
        return TransientError(msg, retry_after=retry_after, connector=connector, code=code)
    if code == "QUERY_LIMIT_EXCEEDED":
        return TransientError(msg, retry_after=1.0, connector=connector, code=code)
    if code == "OVERLOAD_LIMIT":
        return TransientError(msg, retry_after=300.0, connector=connector, code=code)
    if code in PERMANENT_CODES:
        return PermanentError(msg, connector=connector, code=code)
    if code in TRANSIENT_CODES or status in (500, 502, 503, 504) or status == 429:
        return TransientError(msg, connector=connector, code=code or str(status))
    return PermanentError(msg, connector=connector, code=code or str(status))


def _json_default(v: Any) -> Any:
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)      # Decimal and friends: as text, the way Bitrix prints numbers


def _is_read(method: str) -> bool:
    return method in READ_METHODS or method.endswith(READ_SUFFIXES)


class _LimitHit(TransientError):
    """QUERY_LIMIT_EXCEEDED: the request was refused before processing, always safe to resend."""


class _Retryable(TransientError):
    """A transient failure of a read-only call: safe to resend."""


# -- the client -----------------------------------------------------------------------------------

class Bitrix24Client:
    def __init__(self, settings: Bitrix24Settings, *, name: str = "bitrix24",
                 state_get: Callable[[str, Any], Any] | None = None,
                 state_set: Callable[[str, Any], None] | None = None,
                 session: requests.Session | None = None, bucket: Any = None) -> None:
        self.settings, self.name = settings, name
        self._state_set = state_set
        self.session = session or requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": "syncd-bitrix24"})
        # a bucket shared by every instance writing to this portal (the daemon's, kept in its
        # database), else this process's own; a little under the portal's so clock skew never tips it
        self.bucket = bucket or LeakyBucket(settings.rate, safe_burst(settings.burst))
        self._refresh_lock = threading.Lock()
        self._verify: bool | str = settings.ca_bundle or True
        self.calls = 0                     # HTTP requests sent (for the benchmark and tests)
        self.limit_hits = 0
        self.operating: dict[str, dict[str, Any]] = {}   # method -> last `time` info
        self._access = settings.access_token.get_secret_value() if settings.access_token else None
        self._refresh = settings.refresh_token.get_secret_value() if settings.refresh_token else None
        saved = state_get("oauth", None) if state_get else None
        if isinstance(saved, Mapping) and not settings.is_webhook:
            self._access = saved.get("access_token") or self._access
            self._refresh = saved.get("refresh_token") or self._refresh

    # -- URLs -------------------------------------------------------------------------------------
    def url(self, method: str) -> str:
        s = self.settings
        if s.webhook_url is not None:
            base = s.webhook_url.get_secret_value()
            return base.rstrip("/") + "/" + method + ".json"
        assert s.portal_url is not None
        return s.portal_url.rstrip("/") + "/rest/" + method + ".json"

    @property
    def host(self) -> str:
        s = self.settings
        u = s.webhook_url.get_secret_value() if s.webhook_url else (s.portal_url or "")
        return urlsplit(u).netloc

    # -- one call ---------------------------------------------------------------------------------
    def call(self, method: str, params: Mapping[str, Any] | None = None, *, retry: bool | None = None) -> Envelope:
        """One REST call; QUERY_LIMIT_EXCEEDED is retried here, 5xx too for read-only methods."""
        read = _is_read(method) if retry is None else retry
        s = self.settings

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, _LimitHit) or (read and isinstance(exc, _Retryable))

        attempts = 1 + max(s.limit_retries, s.transient_retries if read else 0)
        retrying = Retrying(retry=retry_if_exception(retryable), stop=stop_after_attempt(attempts),
                            wait=wait_exponential_jitter(multiplier=0.5, max=8.0, jitter=0.5), reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    return self._call_once(method, dict(params or {}))
        except (_LimitHit, _Retryable) as exc:
            raise TransientError(str(exc), retry_after=exc.retry_after, connector=self.name,
                                 code=exc.code) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _call_once(self, method: str, params: dict[str, Any], *, refreshed: bool = False) -> Envelope:
        body = dict(params)
        if not self.settings.is_webhook:
            if self._access is None:
                self._refresh_tokens()
            body["auth"] = self._access
        self.bucket.acquire()
        self.calls += 1
        try:
            r = self.session.post(self.url(method), data=json.dumps(body, ensure_ascii=False, default=_json_default)
                                  .encode("utf-8"), headers={"Content-Type": "application/json"},
                                  timeout=self.settings.timeout, verify=self._verify)
        except requests.exceptions.SSLError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "hostname" in str(exc).lower():
                # the portal's certificate is not trusted here: a setting to fix, not a fault to retry
                raise PermanentError(f"{method}: the TLS certificate of {self.host} is not trusted (set ca_bundle "
                                     f"or REQUESTS_CA_BUNDLE to its CA)", connector=self.name,
                                     code="TLS_UNTRUSTED") from None
            raise _Retryable(f"{method}: TLS error talking to {self.host}", connector=self.name,
                             code="CONNECTION") from None
        except requests.Timeout:
            raise _Retryable(f"{method}: timeout after {self.settings.timeout}s", connector=self.name,
                             code="TIMEOUT") from None
        except requests.RequestException as exc:
            raise _Retryable(f"{method}: {type(exc).__name__} talking to {self.host}", connector=self.name,
                             code="CONNECTION") from None
        try:
            data = r.json()
            if not isinstance(data, dict):
                raise ValueError("not an object")  # noqa: TRY004 - handled just below
        except ValueError:
            if r.status_code == 200 or r.status_code >= 500 or r.status_code == 429:
                raise _Retryable(f"{method}: HTTP {r.status_code}, not a JSON answer "
                                 f"({r.headers.get('Content-Type', '?')})", connector=self.name,
                                 code=f"HTTP_{r.status_code}") from None
            raise PermanentError(f"{method}: HTTP {r.status_code}, not a JSON answer", connector=self.name,
                                 code=f"HTTP_{r.status_code}") from None
        code = data.get("error")
        if code is None and r.status_code < 400:
            env = Envelope(data.get("result"), data.get("next"), data.get("total"), data.get("time") or {})
            if env.time:
                self.operating[method] = env.time
            return env
        code = str(code or "")
        desc = str(data.get("error_description") or "")
        if r.status_code == 401 and code in ("expired_token", "invalid_token") and not self.settings.is_webhook \
                and not refreshed:
            self._refresh_tokens(expired=self._access)
            return self._call_once(method, params, refreshed=True)
        if code == "QUERY_LIMIT_EXCEEDED":
            self.limit_hits += 1
            self.bucket.fill()
            raise _LimitHit(f"{method}: QUERY_LIMIT_EXCEEDED", retry_after=1.0, connector=self.name, code=code)
        err = classify(code, desc, r.status_code, connector=self.name, what=method,
                       time_info=data.get("time") or self.operating.get(method))
        if isinstance(err, TransientError) and code not in ("OPERATION_TIME_LIMIT", "OVERLOAD_LIMIT"):
            raise _Retryable(str(err), retry_after=err.retry_after, connector=self.name, code=err.code)
        raise err

    # -- OAuth --------------------------------------------------------------------------------------
    def _refresh_tokens(self, expired: str | None = None) -> None:
        """Renew the access token once (serialised: a concurrent refresh would rotate twice)."""
        s = self.settings
        with self._refresh_lock:
            if expired is not None and self._access != expired:
                return          # another thread refreshed meanwhile
            if not self._refresh:
                raise PermanentError("OAuth access token expired and no refresh token is set",
                                     connector=self.name, code="expired_token")
            assert s.client_id and s.client_secret
            try:
                r = self.session.get(s.oauth_url, params={
                    "grant_type": "refresh_token", "client_id": s.client_id,
                    "client_secret": s.client_secret.get_secret_value(), "refresh_token": self._refresh},
                    timeout=s.timeout,
                    # a private CA is the portal's; the cloud's token server has a public certificate
                    verify=self._verify if urlsplit(s.oauth_url).netloc == self.host else True)
            except requests.RequestException as exc:
                raise TransientError(f"token refresh: {type(exc).__name__}", connector=self.name) from None
            try:
                data = r.json()
            except ValueError:
                raise TransientError(f"token refresh: HTTP {r.status_code}, not JSON", connector=self.name) from None
            if "access_token" not in data:
                code = str(data.get("error") or f"HTTP {r.status_code}")
                exc_t = TransientError if r.status_code >= 500 else PermanentError
                raise exc_t(f"token refresh failed: {code} ({data.get('error_description', '')})",
                            connector=self.name, code=code)
            self._access = data["access_token"]
            self._refresh = data.get("refresh_token") or self._refresh
            if self._state_set is not None:
                self._state_set("oauth", {"access_token": self._access, "refresh_token": self._refresh,
                                          "expires_at": time.time() + float(data.get("expires_in") or 3600)})
            log.info("oauth_refreshed", system=self.name)

    # -- batch ----------------------------------------------------------------------------------------
    def batch(self, cmds: Mapping[str, tuple[str, Mapping[str, Any]]], halt: int = 0,
              *, retry: bool | None = None) -> BatchResult:
        """Run commands `key -> (method, params)`, 50 per `batch` call (larger sets are split).

        Per-command results and errors come back separately; a `$result[key]` reference works
        within one chunk of 50 (keep dependent commands together: `chunks()` helps).
        """
        out = BatchResult()
        items = list(cmds.items())
        for i in range(0, len(items), PAGE):
            chunk = items[i:i + PAGE]
            read = all(_is_read(m) for _, (m, _) in chunk) if retry is None else retry
            env = self.call("batch", {"halt": halt, "cmd": {k: f"{m}?{php_query(p)}" if p else m
                                                              for k, (m, p) in chunk}}, retry=read)
            res = env.result or {}
            if out.time_start is None:
                out.time_start = (env.time or {}).get("date_start")
            for name, target in (("result", out.results), ("result_error", out.errors),
                                 ("result_total", out.totals), ("result_next", out.nexts)):
                part = res.get(name) or {}
                if isinstance(part, list):       # PHP empty array / list-shaped answers
                    part = {str(j): v for j, v in enumerate(part)} if part else {}
                target.update(part)
            for k, t in (res.get("result_time") or {}).items():
                if isinstance(t, dict) and k in dict(chunk):
                    self.operating[dict(chunk)[k][0]] = t
        return out

    # -- lists ------------------------------------------------------------------------------------------
    def list_all(self, method: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Fast full scan: order ID ASC, filter >ID last, start=-1, until a page has < 50 rows."""
        p = dict(params or {})
        base_filter = dict(p.pop("filter", None) or {})
        p.setdefault("select", ["*", "UF_*"])
        last = 0
        while True:
            q = dict(p, order={"ID": "ASC"}, filter={**base_filter, ">ID": last}, start=-1)
            rows = self.call(method, q).result or []
            if isinstance(rows, dict):           # crm.item.list and friends: {"items": [...]}
                rows = next((v for v in rows.values() if isinstance(v, list)), [])
            yield from rows
            if len(rows) < PAGE:
                return
            last = int(rows[-1].get("ID") or rows[-1].get("id"))

    def close(self) -> None:
        self.session.close()


def chunks(groups: list[dict[str, tuple[str, Mapping[str, Any]]]], size: int = PAGE
           ) -> Iterator[dict[str, tuple[str, Mapping[str, Any]]]]:
    """Pack groups of dependent commands into batches of at most `size`, never splitting a group."""
    cur: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for g in groups:
        if cur and len(cur) + len(g) > size:
            yield cur
            cur = {}
        cur.update(g)
    if cur:
        yield cur


def jitter(base: float) -> float:
    return base * random.uniform(0.5, 1.0)
