"""The exchange client: syncd talks to the shop's `1c_exchange.php` the way 1C does (protocols.md §1).

Session: `checkauth` with HTTP Basic -> cookie (lines 2-3) and `sessid` (line 4); both are sent on every
later call (the cookie as given, never from Set-Cookie; `sessid` as a GET parameter, because once any
client sent it Bitrix refuses calls without it). Status lines are decoded as windows-1251.

Errors: connection errors, timeouts, 5xx/429 and a dropped answer -> `TransientError`; `failure` to
`checkauth` (wrong login, no rights) -> `PermanentError(code="auth")`; other 4xx -> `PermanentError`.
A `failure`/401 on a later call is retried once after a fresh `checkauth` by the caller
(`ExchangeClient.call(..., relogin=True)`); the password is never logged or put into a message.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import requests
import structlog

from connectors.shop.settings import ShopSettings
from syncd.errors import PermanentError, TransientError

log = structlog.get_logger("syncd.shop")


@dataclass(frozen=True)
class Session:
    cookie_name: str
    cookie_value: str
    sessid: str | None
    timestamp: str | None = None

    @property
    def header(self) -> dict[str, str]:
        return {"Cookie": f"{self.cookie_name}={self.cookie_value}"}


@dataclass(frozen=True)
class Answer:
    word: str                   # success | progress | failure | error | "" (a body that is data)
    lines: list[str]
    body: bytes
    content_type: str

    @property
    def message(self) -> str:
        return " ".join(x for x in self.lines[1:] if x).strip()


class SessionLost(Exception):
    """`failure` or 401 on a call after checkauth: log in again."""


def parse_status(body: bytes) -> tuple[str, list[str]]:
    text = body.decode("cp1251", "replace").replace("\r\n", "\n")
    lines = text.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    word = lines[0].strip().lower() if lines else ""
    return word, lines


class ExchangeClient:
    def __init__(self, settings: ShopSettings, system: str = "shop") -> None:
        self.s = settings
        self.system = system
        self.http = requests.Session()
        self.http.trust_env = False
        self.session: Session | None = None
        self.file_limit = 204800
        self.zip = False
        self.server_version: str | None = None
        self.lock = threading.RLock()

    # -- transport ------------------------------------------------------------------------------
    def _send(self, method: str, params: dict[str, Any], *, data: bytes | None = None,
              auth: bool = False, session: Session | None = None) -> Answer:
        headers: dict[str, str] = {}
        if session is not None:
            headers.update(session.header)
        if data is not None:
            headers["Content-Type"] = "application/octet-stream"
        try:
            r = self.http.request(method, self.s.url, params=params, data=data, headers=headers,
                                  timeout=self.s.timeout,
                                  auth=(self.s.login, self.s.password.get_secret_value()) if auth else None)
            body = r.content
        except requests.Timeout:
            raise TransientError(f"shop: {params.get('mode')}: timeout", connector=self.system) from None
        except requests.RequestException as exc:
            raise TransientError(f"shop: {params.get('mode')}: {type(exc).__name__}",
                                 connector=self.system) from None
        mode = params.get("mode")
        if r.status_code in (429,) or r.status_code >= 500:
            ra = r.headers.get("Retry-After")
            raise TransientError(f"shop: {mode}: HTTP {r.status_code}", connector=self.system,
                                 code=str(r.status_code), retry_after=float(ra) if ra and ra.isdigit() else None)
        if r.status_code in (401, 403) and not auth:
            raise SessionLost(f"HTTP {r.status_code}")
        if r.status_code >= 400:
            raise PermanentError(f"shop: {mode}: HTTP {r.status_code}", connector=self.system,
                                 code=str(r.status_code))
        ctype = r.headers.get("content-type", "")
        if "xml" in ctype or body.lstrip()[:5] in (b"<?xml", b"\xef\xbb\xbf<?"):
            return Answer("", [], body, ctype)
        word, lines = parse_status(body)
        if word.startswith("<"):
            raise TransientError(f"shop: {mode}: HTML instead of a status line", connector=self.system)
        return Answer(word, lines, body, ctype)

    # -- session --------------------------------------------------------------------------------
    def login(self, typ: str = "sale") -> Session:
        a = self._send("GET", {"type": typ, "mode": "checkauth"}, auth=True)
        if a.word != "success":
            reason = a.message or a.word or "empty answer"
            raise PermanentError(f"shop refused checkauth: {reason}", connector=self.system, code="auth")
        if len(a.lines) < 3:
            raise PermanentError("shop: checkauth answer without a cookie", connector=self.system, code="auth")
        sessid = ts = None
        for line in a.lines[3:]:
            if line.startswith("sessid="):
                sessid = line[len("sessid="):].strip()
            elif line.startswith("timestamp="):
                ts = line[len("timestamp="):].strip()
        self.session = Session(a.lines[1].strip(), a.lines[2].strip(), sessid, ts)
        log.debug("shop_login", system=self.system, type=typ)
        return self.session

    def ensure(self, typ: str = "sale") -> Session:
        with self.lock:
            return self.session or self.login(typ)

    def _params(self, sess: Session, typ: str, mode: str, extra: dict[str, Any]) -> dict[str, Any]:
        p: dict[str, Any] = {"type": typ, "mode": mode}
        p.update({k: v for k, v in extra.items() if v is not None})
        if sess.sessid:
            p["sessid"] = sess.sessid
        return p

    def call(self, typ: str, mode: str, *, method: str = "GET", data: bytes | None = None,
             relogin: bool = True, session: Session | None = None, **params: Any) -> Answer:
        """One exchange call in the current session; `failure`/401 -> one fresh checkauth and a retry.

        With `relogin=False` (calls whose state lives in the session: file, import) a lost session
        raises `SessionLost` for the caller to restart its sequence.
        """
        sess = session or self.ensure(typ)
        try:
            a = self._send(method, self._params(sess, typ, mode, params), data=data, session=sess)
            if a.word == "failure":
                raise SessionLost(a.message)
            return a
        except SessionLost as exc:
            if not relogin or session is not None:
                raise
            log.info("shop_relogin", system=self.system, mode=mode, reason=str(exc))
            with self.lock:
                sess = self.login(typ)
            a = self._send(method, self._params(sess, typ, mode, params), data=data, session=sess)
            if a.word == "failure":
                raise PermanentError(f"shop: {mode}: failure: {a.message}", connector=self.system,
                                     code="failure") from None
            return a

    def init(self, typ: str = "sale", *, session: Session | None = None) -> Answer:
        a = self.call(typ, "init", version=self.s.version, session=session)
        for line in a.lines:
            if line.startswith("file_limit="):
                try:
                    self.file_limit = max(1024, int(line.split("=", 1)[1]))
                except ValueError:
                    pass
            elif line.startswith("zip="):
                self.zip = line.split("=", 1)[1].strip() == "yes"
            elif line.startswith("version="):
                self.server_version = line.split("=", 1)[1].strip()
            elif line.startswith("sessid=") and self.session is not None:
                sid = line.split("=", 1)[1].strip()
                if sid and sid != self.session.sessid:
                    self.session = Session(self.session.cookie_name, self.session.cookie_value, sid,
                                           self.session.timestamp)
        return a

    def close(self) -> None:
        self.http.close()
