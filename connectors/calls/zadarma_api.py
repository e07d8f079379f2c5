"""Zadarma's API, the one method the calls connector needs: a call's recording link.

A NOTIFY_RECORD webhook carries only the call's ids (`pbx_call_id`, `call_id_with_rec`); the
recording itself is asked for with `GET /v1/pbx/record/request/?call_id=<call_id_with_rec>` (or
`?pbx_call_id=…`), answered `{"status": "success", "link": …, "lifetime_till": …}` (`links`, a
list, for pbx_call_id). That is done here, off the webhook's hot path: the NOTIFY_RECORD post is
stored and answered at once (connector.py), then `RecordFetcher`'s own thread asks the API and
stores the link as a new `record` event of the call (`recording` = the link), through the
connector's one store path, so the CRM write attaches it (Bitrix24: attachRecord).

Request signing, as the vendor's official PHP client does it (zadarma/user-api-v1, lib/Client.php,
`call()` and `_getAuthHeader()`): `format=json` is added to the params; the params are sorted by
key (`ksort`) and url-encoded (`http_build_query(..., PHP_QUERY_RFC1738)`: spaces as `+`, `~` as
`%7E`); then

    Authorization: <key>:base64(hex(HMAC-SHA1(secret, <method path> + <params> + md5hex(<params>))))

PHP's `hash_hmac` returns the hex digest, and that hex text is what is base64-encoded; the method
path is e.g. `/v1/pbx/record/request/`. The API key and secret are never logged.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote_plus

import requests
import structlog

from connectors.calls.events import CallEvent

log = structlog.get_logger("syncd.calls")

RECORD_METHOD = "/v1/pbx/record/request/"


def params_string(params: Mapping[str, Any]) -> str:
    """PHP's http_build_query(ksort(params), RFC1738) for flat params."""
    return "&".join(f"{quote_plus(str(k)).replace('~', '%7E')}={quote_plus(str(v)).replace('~', '%7E')}"
                    for k, v in sorted(params.items()))


def signature(method: str, params: Mapping[str, Any], secret: str) -> str:
    qs = params_string(params)
    signed = method + qs + hashlib.md5(qs.encode()).hexdigest()
    digest = hmac.new(secret.encode(), signed.encode(), hashlib.sha1).hexdigest()   # PHP hash_hmac: hex
    return base64.b64encode(digest.encode()).decode()


def auth_header(key: str, secret: str, method: str, params: Mapping[str, Any]) -> dict[str, str]:
    return {"Authorization": f"{key}:{signature(method, params, secret)}"}


class ApiError(RuntimeError):
    """A failed API call; its message never holds the key or the secret."""


class ZadarmaApi:
    def __init__(self, key: str, secret: str, url: str = "https://api.zadarma.com",
                 timeout: float = 10.0) -> None:
        self._key, self._secret = key, secret
        self.url, self.timeout = url.rstrip("/"), timeout
        self.session = requests.Session()

    def get(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        params = {**params, "format": "json"}
        try:
            r = self.session.get(self.url + method + "?" + params_string(params), timeout=self.timeout,
                                 headers=auth_header(self._key, self._secret, method, params))
        except requests.RequestException as exc:
            raise ApiError(f"{method}: {type(exc).__name__}") from None
        try:
            doc = r.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or r.status_code >= 300 or doc.get("status") != "success":
            msg = doc.get("message") if isinstance(doc, dict) else None
            raise ApiError(f"{method}: HTTP {r.status_code}" + (f": {str(msg)[:200]}" if msg else ""))
        return doc

    def record_link(self, call_id_with_rec: str | None, pbx_call_id: str | None) -> str:
        """The recording's URL: by call_id_with_rec when known (one `link`), else by pbx_call_id
        (`links`: the first)."""
        if call_id_with_rec:
            doc = self.get(RECORD_METHOD, {"call_id": call_id_with_rec})
        elif pbx_call_id:
            doc = self.get(RECORD_METHOD, {"pbx_call_id": pbx_call_id})
        else:
            raise ApiError("no call id to ask the recording of")
        link = doc.get("link")
        if not link and isinstance(doc.get("links"), list) and doc["links"]:
            link = doc["links"][0]
        if not isinstance(link, str) or not link:
            raise ApiError(f"{RECORD_METHOD}: no link in the answer")
        return link


@dataclasses.dataclass(frozen=True)
class RecordJob:
    pbx_call_id: str                 # the call's id: the record event's call
    call_id_with_rec: str | None


class RecordFetcher:
    """A small queue and one thread: each job asks the API for the link and stores it through
    `store` (which raises when not committed). A failure (API or store) is retried `retries` times,
    the pause doubling from `backoff` up to `backoff_max`; then logged and left for the next start.
    A job seen before (a NOTIFY_RECORD delivered twice) is not asked again. The jobs not done yet are
    kept in the connector's state (`state`: get/set), so a restart or a kill takes them up again:
    Zadarma does not send a NOTIFY_RECORD it was answered for twice."""

    STATE_KEY = "zadarma:records"

    def __init__(self, api: ZadarmaApi, store: Callable[[CallEvent], None], *, system: str,
                 retries: int = 4, backoff: float = 1.0, backoff_max: float = 60.0,
                 keep: int = 10_000, state: Any = None) -> None:
        self.api, self._store, self.system, self.state = api, store, system, state
        self.retries, self.backoff, self.backoff_max, self.keep = retries, backoff, backoff_max, keep
        self._q: queue.Queue[RecordJob | None] = queue.Queue()
        self._seen: OrderedDict[RecordJob, None] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"calls-{system}-records", daemon=True)
        self._started = False
        self.fetched = 0               # links stored (for health and tests)
        self.failed = 0                # jobs given up until the next start
        for pbx_call_id, with_rec in self._saved():
            self.submit(RecordJob(pbx_call_id, with_rec), remember=False)

    def _saved(self) -> list[list[Any]]:
        got = self.state.state_get(self.STATE_KEY, []) if self.state is not None else []
        return [list(x) for x in got or [] if isinstance(x, (list, tuple)) and len(x) == 2]

    def _remember(self, job: RecordJob, pending: bool) -> None:
        if self.state is None:
            return
        with self._lock:
            jobs = [x for x in self._saved() if x != [job.pbx_call_id, job.call_id_with_rec]]
            if pending:
                jobs.append([job.pbx_call_id, job.call_id_with_rec])
            self.state.state_set(self.STATE_KEY, jobs)

    def submit(self, job: RecordJob, *, remember: bool = True) -> None:
        with self._lock:
            if job in self._seen:
                return
            self._seen[job] = None
            while len(self._seen) > self.keep:
                self._seen.popitem(last=False)
            if not self._started:
                self._thread.start()
                self._started = True
        if remember:
            self._remember(job, True)
        self._q.put(job)

    def pending(self) -> int:
        return self._q.qsize()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._started:
            self._q.put(None)
            self._thread.join(timeout)
        left = self._q.qsize()
        if left:
            log.warning("call_records_not_fetched", system=self.system, jobs=left, reason="closing")

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is None or self._stop.is_set():
                return
            self._run(job)

    def _run(self, job: RecordJob) -> None:
        pause = self.backoff
        for attempt in range(1, self.retries + 2):
            try:
                link = self.api.record_link(job.call_id_with_rec, job.pbx_call_id)
                # a moment after the NOTIFY_RECORD's own event: the newest state of the call
                now = dt.datetime.now(dt.UTC)
                self._store(CallEvent(job.pbx_call_id, "record", now, {"recording": link}))
            except Exception as exc:  # noqa: BLE001 - retried, then logged; the thread goes on
                error = str(exc) if isinstance(exc, ApiError) else type(exc).__name__
                last = attempt > self.retries
                log.warning("call_record_fetch_failed", system=self.system, call_id=job.pbx_call_id,
                            attempt=attempt, error=error, giving_up=last)
                if last:
                    self.failed += 1             # kept in the state: asked again at the next start
                    return
                if self._stop.wait(pause):
                    return
                pause = min(pause * 2, self.backoff_max)
                continue
            self.fetched += 1
            self._remember(job, False)
            log.info("call_record_fetched", system=self.system, call_id=job.pbx_call_id, attempt=attempt)
            return
