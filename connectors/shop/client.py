"""The exchange client: syncd talks to the shop's `1c_exchange.php` the way 1C does (protocols.md §1).

Session: `checkauth` with HTTP Basic. Sites differ in how they hand out the session, so the client
takes whatever the answer carries: the cookie in the body (lines 2-3, Bitrix), in `Set-Cookie` only
(the body is just `success`), or both; `sessid` (a `sessid=` line, Bitrix) when given and never
required. A site that gives no cookie at all gets HTTP Basic on every request, and so does one that
answers 401 to the cookie after a fresh checkauth. Status lines are decoded by the answer's charset,
else UTF-8 when they are valid UTF-8, else windows-1251 (Bitrix converts every answer to 1251).

Errors name the step and what the site answered:
- no connection / timeout / 5xx / 429 / an HTML page -> `TransientError` ("query: HTTP 500 — the site
  failed: …"); only a connection that cannot be made is called unreachable;
- 401/403 to checkauth or `failure` to checkauth -> `PermanentError(code="auth")`
  ("checkauth: HTTP 401 — wrong login or password");
- HTTP 404/405/501, or `failure` whose reason says the command is unknown -> `Unsupported` (the site
  has no such mode: capability detection turns it into a one-line statement);
- a `failure`/401 on a later call -> `SessionLost`; `call()` retries once after a fresh checkauth.
The password is never logged or put into a message.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import requests
import structlog

from connectors.shop.settings import ShopSettings
from syncd.errors import PermanentError, TransientError

log = structlog.get_logger("syncd.shop")

# `failure` reasons that mean "this site has no such mode", in the wordings seen: Bitrix ("Неизвестная
# команда"), django-cml2 ("Unknown GET sequence"), generic PHP modules ("unknown mode", "not supported")
# ("Неизвестная ошибка", an unknown *error*, is not one of them)
_UNKNOWN_MODE = re.compile(
    r"unknown\s+(?:get\s+sequence|command|mode|request|operation)|неизвестн\w*\s+(?:команд|режим|запрос|операци)"
    r"|(?:mode|command|режим|команда)\b.{0,40}(?:not\s+(?:supported|implemented)|не\s+поддерж)"
    r"|unsupported\s+(?:mode|command)", re.I)
_UNSUPPORTED_HTTP = {404, 405, 501}


@dataclass(frozen=True)
class Session:
    cookies: tuple[tuple[str, str], ...]   # (name, value) pairs sent back as one Cookie header
    sessid: str | None = None
    timestamp: str | None = None
    basic: bool = False                    # send HTTP Basic on every request (no usable cookie)
    source: str = "body"                   # where the cookie came from: body | set-cookie | body+set-cookie | none

    @property
    def header(self) -> dict[str, str]:
        if not self.cookies:
            return {}
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies)}

    def describe(self) -> str:
        how = {"body": "session cookie from the answer body", "set-cookie": "session cookie from Set-Cookie",
               "body+set-cookie": "session cookie in the body and Set-Cookie",
               "none": "no session cookie"}.get(self.source, self.source)
        if self.basic:
            how += ", HTTP Basic on every request"
        return how + (", sessid" if self.sessid else ", no sessid")


@dataclass(frozen=True)
class Answer:
    word: str                   # success | progress | failure | error | "" (a body that is data)
    lines: list[str]
    body: bytes
    content_type: str
    status: int = 200
    cookies: tuple[tuple[str, str], ...] = ()

    @property
    def message(self) -> str:
        return " ".join(x for x in self.lines[1:] if x).strip()


class SessionLost(Exception):
    """`failure` or 401 on a call after checkauth: log in again."""


class Unsupported(Exception):
    """The site has no such mode (HTTP 404/405/501, or `failure` "unknown command")."""

    def __init__(self, mode: str, answer: str) -> None:
        super().__init__(f"{mode}: {answer}")
        self.mode, self.answer = mode, answer


def decode_text(body: bytes, content_type: str = "") -> str:
    m = re.search(r"charset=([\w.-]+)", content_type or "", re.I)
    if m:
        try:
            return body.decode(m.group(1), "replace")
        except LookupError:
            pass
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("cp1251", "replace")


def parse_status(body: bytes, content_type: str = "") -> tuple[str, list[str]]:
    text = decode_text(body, content_type).lstrip("\ufeff").replace("\r\n", "\n")
    lines = text.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    word = lines[0].strip().lower() if lines else ""
    return word, lines


def _snippet(body: bytes, content_type: str) -> str:
    """A short, single-line view of an error page: its <title> or first text, at most 120 characters."""
    text = decode_text(body[:4096], content_type)
    m = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
    if m:
        text = m.group(1)
    text = re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())
    return text[:120]


def is_unknown_mode(message: str) -> bool:
    return bool(_UNKNOWN_MODE.search(message))


class ExchangeClient:
    def __init__(self, settings: ShopSettings, system: str = "shop") -> None:
        self.s = settings
        self.system = system
        self.http = requests.Session()
        self.http.trust_env = False
        self.session: Session | None = None
        self.file_limit: int | None = 204800   # None: the site sets no limit (file_limit=0)
        self.zip = False
        self.server_version: str | None = None
        self.init_lines: list[str] = []
        self.lock = threading.RLock()
        self.host = urlsplit(settings.url).netloc

    # -- transport ------------------------------------------------------------------------------
    def _send(self, method: str, params: dict[str, Any], *, data: bytes | None = None,
              auth: bool = False, session: Session | None = None) -> Answer:
        mode = str(params.get("mode"))
        headers: dict[str, str] = {}
        if session is not None:
            headers.update(session.header)
            auth = auth or session.basic
        if data is not None:
            headers["Content-Type"] = "application/octet-stream"
        try:
            r = self.http.request(method, self.s.url, params=params, data=data, headers=headers,
                                  timeout=self.s.timeout,
                                  auth=(self.s.login, self.s.password.get_secret_value()) if auth else None)
            body = r.content
        except requests.Timeout:
            raise TransientError(f"shop: {mode}: no answer from {self.host} in {self.s.timeout:g} s",
                                 connector=self.system) from None
        except requests.ConnectionError as exc:
            raise TransientError(f"shop: {mode}: {self.host} unreachable ({_reason(exc)})",
                                 connector=self.system) from None
        except requests.RequestException as exc:
            raise TransientError(f"shop: {mode}: {type(exc).__name__}", connector=self.system) from None
        finally:
            self.http.cookies.clear()       # cookies go only where the session says (never a stale jar)
        ctype = r.headers.get("content-type", "")
        cookies = tuple((c.name, c.value or "") for c in r.cookies)
        code = r.status_code
        if code == 429 or code >= 500 and code != 501:
            ra = r.headers.get("Retry-After")
            what = "rate limited" if code == 429 else "the site failed"
            snip = _snippet(body, ctype)
            raise TransientError(f"shop: {mode}: HTTP {code} — {what}" + (f": {snip}" if snip else ""),
                                 connector=self.system, code=str(code),
                                 retry_after=float(ra) if ra and ra.isdigit() else None)
        if code in (401, 403):
            if mode == "checkauth":
                raise PermanentError(f"shop: checkauth: HTTP {code} — wrong login or password"
                                     + (" or no exchange rights" if code == 403 else ""),
                                     connector=self.system, code="auth")
            raise SessionLost(f"HTTP {code}")
        if code in _UNSUPPORTED_HTTP:
            raise Unsupported(mode, f"HTTP {code}")
        if code >= 400:
            snip = _snippet(body, ctype)
            raise PermanentError(f"shop: {mode}: HTTP {code}" + (f" — {snip}" if snip else ""),
                                 connector=self.system, code=str(code))
        head = body.lstrip().removeprefix(b"\xef\xbb\xbf")[:5].lower()
        if "xml" in ctype or head.startswith(b"<?xml") or \
                mode == "query" and head.startswith(b"<") and not head.startswith((b"<html", b"<!doc")):
            return Answer("", [], body, ctype, code, cookies)
        word, lines = parse_status(body, ctype)
        if word.startswith("<"):
            raise TransientError(f"shop: {mode}: HTTP {code} with an HTML page instead of a status line: "
                                 f"{_snippet(body, ctype)}", connector=self.system)
        return Answer(word, lines, body, ctype, code, cookies)

    # -- session --------------------------------------------------------------------------------
    def login(self, typ: str = "sale") -> Session:
        a = self._send("GET", {"type": typ, "mode": "checkauth"}, auth=True)
        if a.word != "success":
            reason = a.message or "no reason given"
            raise PermanentError(f"shop: checkauth: {a.word or 'empty answer'} — {reason}",
                                 connector=self.system, code="auth")
        body_cookie: tuple[str, str] | None = None
        if len(a.lines) >= 3 and a.lines[1].strip() and "=" not in a.lines[1] and a.lines[2].strip():
            body_cookie = (a.lines[1].strip(), a.lines[2].strip())
        sessid = ts = None
        for line in a.lines[1:]:
            if line.startswith("sessid="):
                sessid = line[len("sessid="):].strip() or None
            elif line.startswith("timestamp="):
                ts = line[len("timestamp="):].strip()
        cookies = [body_cookie] if body_cookie else []
        cookies += [c for c in a.cookies if not body_cookie or c[0] != body_cookie[0]]
        set_names = {c[0] for c in a.cookies}
        if body_cookie and body_cookie[0] in set_names:
            source = "body+set-cookie"
        elif body_cookie:
            source = "body"
        elif cookies:
            source = "set-cookie"
        else:
            source = "none"
        self.session = Session(tuple(cookies), sessid, ts, basic=not cookies, source=source)
        log.debug("shop_login", system=self.system, type=typ, session=source)
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

    def _checked(self, a: Answer, mode: str) -> Answer:
        if a.word == "failure":
            if is_unknown_mode(a.message):
                raise Unsupported(mode, f"failure \"{a.message[:80]}\"")
            raise SessionLost(a.message)
        return a

    def call(self, typ: str, mode: str, *, method: str = "GET", data: bytes | None = None,
             relogin: bool = True, session: Session | None = None, **params: Any) -> Answer:
        """One exchange call in the current session; `failure`/401 -> one fresh checkauth and a retry.

        With `relogin=False` (calls whose state lives in the session: file, import, success) a lost
        session raises `SessionLost` for the caller to restart its sequence.
        """
        sess = session or self.ensure(typ)
        try:
            return self._checked(self._send(method, self._params(sess, typ, mode, params), data=data,
                                            session=sess), mode)
        except SessionLost as exc:
            if str(exc).startswith("HTTP 40") and not sess.basic:
                # 401 to the cookie: a site that honours only HTTP Basic; from now on Basic on every request
                basic = replace(sess, basic=True)
                a = self._checked(self._send(method, self._params(basic, typ, mode, params), data=data,
                                             session=basic), mode)
                with self.lock:
                    if self.session == sess:
                        self.session = basic
                log.info("shop_basic_auth", system=self.system, mode=mode)
                return a
            if not relogin or session is not None:
                raise
            log.info("shop_relogin", system=self.system, mode=mode, reason=str(exc))
        with self.lock:
            sess = self.login(typ)
        try:
            a = self._send(method, self._params(sess, typ, mode, params), data=data, session=sess)
        except SessionLost:
            raise PermanentError(f"shop: {mode}: HTTP 401 right after a successful checkauth",
                                 connector=self.system, code="auth") from None
        if a.word == "failure":
            if is_unknown_mode(a.message):
                raise Unsupported(mode, f"failure \"{a.message[:80]}\"")
            raise PermanentError(f"shop: {mode}: failure — {a.message or 'no reason given'}",
                                 connector=self.system, code="failure")
        return a

    def init(self, typ: str = "sale", *, session: Session | None = None) -> Answer:
        a = self.call(typ, "init", version=self.s.version, session=session)
        self.init_lines = list(a.lines)
        for line in a.lines:
            key, _, value = line.partition("=")
            key, value = key.strip().lower(), value.strip()
            if key == "file_limit":
                try:
                    n = int(value)
                except ValueError:
                    continue
                self.file_limit = n if n > 0 else None       # 0 (django-cml2): no limit
            elif key == "zip":
                self.zip = value.lower() == "yes"
            elif key == "version":
                self.server_version = value
            elif key == "sessid" and self.session is not None and value and value != self.session.sessid:
                self.session = replace(self.session, sessid=value)
        return a

    def close(self) -> None:
        self.http.close()


def _reason(exc: Exception) -> str:
    text = str(exc)
    for hint in ("Connection refused", "Name or service not known", "No route to host", "timed out",
                 "Connection reset", "Remote end closed connection"):
        if hint in text:
            return hint.lower()
    return type(exc).__name__
