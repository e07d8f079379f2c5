"""The `calls` connector: a PBX's calls become `call` records.

Push-based, nothing to poll and nothing written to it:
* `POST /hooks/calls/<system>`: the cloud PBX's webhooks (the vendor's adapter table, vendors.py)
  or syncd's own JSON (events.py). Signature checked (403), the event stored (ctx.ingest) and only
  then answered 200 — a 200 is never lost to a crash. `GET` with the vendor's echo parameter
  answers its URL check (Zadarma's zd_echo).
* Zadarma's NOTIFY_RECORD names the recording only by ids: once stored and answered, its link is
  asked of Zadarma's API in the background (zadarma_api.py, with `api_key`/`api_secret`) and stored
  as a new event of the call (`recording`), through the same store path.
* Asterisk's AMI (ami.py): a background thread, started here and stopped in close().
* `GET /hooks/calls/route?caller=…`: the caller's manager's extension (routing.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import structlog

from connectors.calls.ami import AmiClient, AmiEvents
from connectors.calls.events import BadEvent, CallEvent, Calls, from_json
from connectors.calls.routing import Staff, extension_for
from connectors.calls.settings import CallsSettings
from connectors.calls.vendors import VENDORS, signature_ok, to_event
from connectors.calls.zadarma_api import RecordFetcher, RecordJob, ZadarmaApi
from syncd.commit_queue import CommitQueue
from syncd.connector import Batch, BaseConnector, ConnectorContext, Health, LiveSchema, RawRecord, Route

log = structlog.get_logger("syncd.calls")

PATH = "/hooks/calls/"
ROUTE_PATH = PATH + "route"
JSON_SIGNATURE = "X-Syncd-Signature"
MAX_BODY = 64 * 1024


def _text(body: str, status: int = 200) -> Any:
    from starlette.responses import PlainTextResponse

    return PlainTextResponse(body, status_code=status)


class CallsConnector(BaseConnector):
    # the routing endpoint is one for the daemon: a second PBX system's claim on it is no error
    optional_paths = (ROUTE_PATH,)

    def __init__(self, name: str, settings: CallsSettings, ctx: ConnectorContext) -> None:
        if name == "route":
            raise ValueError("a calls system cannot be named \"route\" (that is the routing endpoint)")
        self.name, self.settings, self.ctx = name, settings, ctx
        self.streams = {}
        self.writes = frozenset()
        self.tz = ZoneInfo(settings.timezone)
        self.calls = Calls(name)
        self._ingest_lock = threading.Lock()
        # events that arrive while a commit runs are committed together with the next one
        self._writer: CommitQueue[CallEvent] = CommitQueue(f"calls-{name}", self.store)
        self.staff = Staff(self._crm_users, settings.presence_ttl, name)
        self.records: RecordFetcher | None = None
        if settings.vendor == "zadarma":
            if settings.api_key and settings.api_secret:
                self.records = RecordFetcher(
                    ZadarmaApi(settings.api_key, settings.api_secret.get_secret_value(), settings.api_url),
                    self._store_record, system=name, retries=settings.api_retries,
                    backoff=settings.api_backoff, backoff_max=settings.api_backoff_max, state=ctx)
            else:
                log.info("call_records_not_fetched", system=name,
                         reason="no api_key/api_secret: Zadarma's recordings (NOTIFY_RECORD) are not fetched")
        self.ami: AmiClient | None = None
        if settings.ami_host and settings.ami_user and settings.ami_secret:
            self.ami = AmiClient(settings.ami_host, settings.ami_port, settings.ami_user,
                                 settings.ami_secret.get_secret_value(),
                                 AmiEvents(self.tz, settings.extension_digits), self._from_ami,
                                 backoff=settings.ami_backoff, backoff_max=settings.ami_backoff_max,
                                 name=name).start()

    # -- connector protocol ---------------------------------------------------------------------
    def health(self) -> Health:
        if self.ami is not None and not self.ami.connected.is_set():
            return Health(False, f"AMI {self.settings.ami_host}:{self.settings.ami_port} not connected"
                                 f"{': ' + self.ami.last_error if self.ami.last_error else ''}")
        return Health(True, f"webhooks at {PATH}{self.name}" + (" and AMI" if self.ami else ""))

    def http_routes(self) -> Sequence[Route]:
        return (Route(PATH + self.name, self.hook, ("GET", "POST")), Route(ROUTE_PATH, self.route, ("GET",)))

    def close(self) -> None:
        if self.ami is not None:
            self.ami.stop()
        if self.records is not None:
            self.records.close()
        self._writer.close()

    # -- storing ---------------------------------------------------------------------------------
    def store(self, events: Sequence[CallEvent]) -> None:
        """Commit the events' records (the engine's one transaction); raises when not committed.
        Events of one call in the batch are one record: the call's fields so far, at its newest
        event's version."""
        if not events:
            return
        with self._ingest_lock:          # records of one call are merged in arrival order
            by_call: dict[str, RawRecord] = {}
            for ev in events:
                rec = self.calls.record(ev)
                prev = by_call.get(ev.call_id)
                if prev is not None and (prev.version or "") > (rec.version or ""):
                    rec = dataclasses.replace(rec, version=prev.version, source_time=prev.source_time)
                by_call[ev.call_id] = rec
            self.ctx.ingest(Batch("calls", list(by_call.values())))

    def _store_record(self, ev: CallEvent) -> None:
        """The recording link fetched by RecordFetcher: committed like a webhook's event (raises when not)."""
        self._writer.submit(ev).result(timeout=60)

    def _from_ami(self, ev: CallEvent) -> None:
        try:
            self.store([ev])
        except Exception as exc:  # noqa: BLE001 - the AMI thread must go on; this event is lost
            log.error("ami_event_not_stored", system=self.name, call_id=ev.call_id,
                      error=f"{type(exc).__name__}: {exc}")

    # -- webhooks --------------------------------------------------------------------------------
    async def hook(self, request: Any) -> Any:
        vendor = VENDORS.get(self.settings.vendor)
        if request.method == "GET":
            token = request.query_params.get(vendor.echo_param) if vendor and vendor.echo_param else None
            return _text(token or "", 200 if token else 404)
        body = await request.body()
        if len(body) > MAX_BODY:
            return _text("too large", 413)
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        now = dt.datetime.now(dt.UTC)
        form: dict[str, str] = {}
        try:
            if ctype == "application/json" or vendor is None:
                ev = self._json_event(request, body, now)
            else:
                form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
                secret = self.settings.secret
                if secret is not None and not signature_ok(vendor, form, request.headers.get(vendor.signature_header, ""),
                                                           secret.get_secret_value()):
                    log.info("call_hook_refused", system=self.name, reason="bad signature")
                    return _text("bad signature", 403)
                ev = to_event(vendor, form, self.tz, now)
        except PermissionError:
            log.info("call_hook_refused", system=self.name, reason="bad signature")
            return _text("bad signature", 403)
        except (BadEvent, UnicodeDecodeError, ValueError) as exc:
            return _text(f"bad event: {exc}", 400)
        if ev is None:
            return _text("ignored")
        job = None
        if ev.stage == "record" and vendor is not None and ctype != "application/json":
            job = RecordJob(ev.call_id, (form.get("call_id_with_rec") or "").strip() or None)
        try:
            await asyncio.wrap_future(self._writer.submit(ev))
        except Exception as exc:  # noqa: BLE001 - not committed: the PBX must send it again
            log.error("call_event_not_stored", system=self.name, error=f"{type(exc).__name__}: {exc}")
            return _text("not stored; try again", 503)
        log.info("call_event", system=self.name, call_id=ev.call_id, stage=ev.stage)
        if job is not None and self.records is not None:
            self.records.submit(job)          # after the commit; the 200 does not wait for it
        return _text("ok")

    def _json_event(self, request: Any, body: bytes, now: dt.datetime) -> CallEvent:
        secret = self.settings.secret
        if secret is not None:
            got = (request.headers.get(JSON_SIGNATURE) or "").strip().lower().removeprefix("sha256=")
            want = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
            if not got or not hmac.compare_digest(got, want):
                raise PermissionError("bad signature")
        doc = json.loads(body.decode("utf-8"))
        if not isinstance(doc, dict):
            raise BadEvent("the body must be a JSON object")
        return from_json(doc, self.tz, now)

    # -- routing ---------------------------------------------------------------------------------
    def _crm_users(self) -> LiveSchema:
        peer = getattr(self.ctx, "peer", None)
        crm = peer(self.settings.crm) if peer is not None else None
        return crm.describe() if crm is not None else LiveSchema()

    async def route(self, request: Any) -> Any:
        caller = request.query_params.get("caller", "")
        try:
            ext = await asyncio.to_thread(extension_for, self.ctx, self.staff, caller)
        except Exception as exc:  # noqa: BLE001 - a routing answer is never an error: the queue takes it
            log.warning("call_route_failed", system=self.name, error=f"{type(exc).__name__}: {exc}")
            ext = ""
        return _text(ext)
