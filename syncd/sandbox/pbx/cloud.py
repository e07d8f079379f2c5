"""The cloud PBX face of the sandbox: Zadarma's call notifications ("webhooks"), POSTed form-encoded to a
URL with the ``Signature`` header. Field lists and signature strings: the package docstring."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from syncd.sandbox.pbx.scenario import INBOUND, Call, Pbx

# NotifyEnd.disposition values; Q.931 status_code
DISPOSITION = {"answered": "answered", "noanswer": "no answer", "busy": "busy"}
STATUS_CODE = {"answered": "16", "noanswer": "19", "busy": "17"}


def zadarma_signature(signed: str, secret: str) -> str:
    """base64_encode(hash_hmac('sha1', signed, secret)): PHP's hash_hmac gives the HEX digest, and that
    hex text is what is base64-encoded (user-api-v1 examples, django-crm's check)."""
    digest = hmac.new(secret.encode(), signed.encode(), hashlib.sha1).hexdigest()
    return base64.b64encode(digest.encode()).decode()


def signed_string(form: dict[str, str]) -> str:
    """The string each notification signs (user-api-v1 lib/Webhook/*::getSignatureString)."""
    event = form["event"]
    if event in ("NOTIFY_START", "NOTIFY_INTERNAL", "NOTIFY_END"):
        return form["caller_id"] + form["called_did"] + form["call_start"]
    if event == "NOTIFY_ANSWER":
        return form["caller_id"] + form["destination"] + form["call_start"]
    if event in ("NOTIFY_OUT_START", "NOTIFY_OUT_END"):
        return form["internal"] + form["destination"] + form["call_start"]
    if event == "NOTIFY_RECORD":
        return form["pbx_call_id"] + form["call_id_with_rec"]
    raise ValueError(f"unknown event {event!r}")


def notifications(pbx: Pbx, call: Call) -> list[dict[str, str]]:
    """The notifications of one call, in the order Zadarma sends them; every value is a string."""
    assert call.start is not None
    ids = call.ids
    start = pbx.local(call.start).strftime("%Y-%m-%d %H:%M:%S")
    pid, ext = ids["pbx_call_id"], call.extension
    rec = ids.get("call_id_with_rec", "")
    end_common = {"duration": str(call.talk), "disposition": DISPOSITION[call.outcome],
                  "status_code": STATUS_CODE[call.outcome], "is_recorded": "1" if rec else "0",
                  "call_id_with_rec": rec}
    out: list[dict[str, str]] = []
    if call.direction == INBOUND:
        base = {"call_start": start, "pbx_call_id": pid, "caller_id": call.from_number, "called_did": call.did}
        out.append({"event": "NOTIFY_START", **base})
        out.append({"event": "NOTIFY_INTERNAL", **base, "internal": ext})
        if call.answered:
            out.append({"event": "NOTIFY_ANSWER", "caller_id": call.from_number, "destination": ext,
                        "call_start": start, "pbx_call_id": pid, "internal": ext})
        out.append({"event": "NOTIFY_END", **base, "internal": ext, **end_common})
    else:
        out.append({"event": "NOTIFY_OUT_START", "call_start": start, "pbx_call_id": pid, "internal": ext,
                    "destination": call.to_extension})
        out.append({"event": "NOTIFY_OUT_END", "call_start": start, "pbx_call_id": pid,
                    "caller_id": pbx.did, "destination": call.to_extension, "internal": ext, **end_common})
    if rec:
        out.append({"event": "NOTIFY_RECORD", "call_id_with_rec": rec, "pbx_call_id": pid})
    return out


@dataclass
class CloudFaults:
    """``duplicate``: event names delivered twice (the same body and signature); ``swap``: pairs of event
    names whose deliveries trade places; ``retries``: further attempts after a non-2xx answer or a
    connection error, ``retry_delay`` seconds apart (Zadarma's own retry policy is not documented)."""

    duplicate: list[str] = field(default_factory=list)
    swap: list[tuple[str, str]] = field(default_factory=list)
    retries: int = 0
    retry_delay: float = 0.2


class CloudSender:
    """Posts each placed call's notifications to ``url`` (nothing when ``url`` is None)."""

    def __init__(self, pbx: Pbx, url: str | None = None, *, secret: str | None = "zadarma-secret",
                 timeout: float = 5.0, background: bool = False) -> None:
        self.pbx, self.url, self.secret, self.timeout = pbx, url, secret, timeout
        self.background = background
        self.faults = CloudFaults()
        self.log: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "Zadarma"   # assumed; the real agent string is not documented

    def attach(self) -> CloudSender:
        self.pbx.listeners.append(self)
        return self

    def detach(self) -> None:
        if self in self.pbx.listeners:
            self.pbx.listeners.remove(self)

    def verify_url(self, url: str | None = None) -> bool:
        """Zadarma checks a notification URL before saving it: GET url?zd_echo=<random>, expects it echoed."""
        token = secrets.token_hex(8)
        try:
            r = self.session.get(url or self.url or "", params={"zd_echo": token}, timeout=self.timeout)
        except requests.RequestException:
            return False
        ok = r.status_code == 200 and r.text.strip() == token
        self._record({"event": "zd_echo", "status": r.status_code, "ok": ok})
        return ok

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.log.append({"t": time.time(), **entry})

    def planned(self, call: Call) -> list[dict[str, str]]:
        forms = notifications(self.pbx, call)
        out: list[dict[str, str]] = []
        for f in forms:
            out.append(f)
            if f["event"] in self.faults.duplicate:
                out.append(f)
        for x, y in self.faults.swap:
            ix = next((i for i, f in enumerate(out) if f["event"] == x), None)
            iy = next((i for i, f in enumerate(out) if f["event"] == y), None)
            if ix is not None and iy is not None:
                out[ix], out[iy] = out[iy], out[ix]
        return out

    def emit(self, call: Call) -> None:
        if not self.url:
            return
        forms = self.planned(call)
        if self.background:
            t = threading.Thread(target=self._deliver_all, args=(forms,), name="pbx-cloud", daemon=True)
            self._threads.append(t)
            t.start()
        else:
            self._deliver_all(forms)

    def wait(self, timeout: float = 10.0) -> None:
        """Wait for background deliveries to finish."""
        for t in list(self._threads):
            t.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _deliver_all(self, forms: list[dict[str, str]]) -> None:
        for form in forms:
            self.deliver(form)

    def deliver(self, form: dict[str, str]) -> int | None:
        headers = {}
        if self.secret:
            headers["Signature"] = zadarma_signature(signed_string(form), self.secret)
        status: int | None = None
        for attempt in range(1, self.faults.retries + 2):
            error = None
            try:
                r = self.session.post(self.url or "", data=form, headers=headers, timeout=self.timeout)
                status = r.status_code
            except requests.RequestException as e:
                status, error = None, type(e).__name__
            self._record({"event": form["event"], "pbx_call_id": form.get("pbx_call_id"), "form": dict(form),
                          "headers": headers, "status": status, "error": error, "attempt": attempt,
                          "url": self.url})
            if status is not None and 200 <= status < 300:
                break
            if attempt <= self.faults.retries:
                time.sleep(self.faults.retry_delay)
        return status
