"""The CommerceML 2 HTTP exchange as 1C-Bitrix serves it (protocols.md §1), served by syncd to 1C.

Every `checkauth` opens a session of its own (cookie + sessid, kept in the store: see
sessions.py), so 1C clients that send `sessid` and those that do not (older configurations,
third-party exchange processors) are served side by side, by any instance sharing the database,
across restarts. A session that sent `sessid` once must send it on every later call (Bitrix's
"source check"), but that is the session's own rule, never a switch for everyone.

A `checkauth` alone locks nothing: the upload lock is taken by the session that uploads or
imports, and released when its import is done (sale) or at `complete` (catalog); see
`Sessions.take_lock` for who may take over a lock left behind.

Every answer is plain text (`success` / `progress` / `failure` + a reason line, `\\n`-separated)
in the configured encoding, without BOM or HTML; reasons are in Russian, for 1C shows them to its
user. `mode=query` answers the orders XML. A file that cannot be taken in whole is answered
`failure` with the reason (the records that were fine are taken in; the rest are in quarantine).
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import itertools
import os
import re
import secrets
import shutil
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from syncd.commerceml import Counterparty, Document, Offer, PriceType, Product, read_header, safe_unzip
from syncd.commerceml import Rejected as CmlRejected
from syncd.commerceml.reader import iter_records
from syncd.commerceml.safety import SCRIPT_EXTENSIONS, is_zip
from syncd.connector import Batch, ConnectorContext, RawRecord, Rejected
from syncd.errors import BadInput, ProtocolError

from . import convert
from .sessions import Busy, LockHeld, Lost, Session, Sessions
from .settings import OneCSettings


class Owner(Protocol):
    """What the exchange needs of its connector (OneCConnector): its settings and the writes it
    serves on `query` — named here so the exchange does not import the connector that holds it."""

    name: str
    settings: OneCSettings
    ctx: ConnectorContext
    spool_dir: str

    def remember(self, ext: str, kind: str, number: str | None) -> None: ...

    def kind_of(self, ext: str) -> str | None: ...

    def by_number(self, number: str) -> str | None: ...

    def render_query(self) -> tuple[bytes, str | None, list[str]]: ...

    def confirm_query(self, token: str, served: Sequence[str]) -> Any: ...

log = structlog.get_logger("syncd.onec")

COOKIE = "SYNCD1CSESSID"
SEEN_FILE = ".seen-products"           # product Ид read in this exchange (per session folder)
KNOWN_FILE = ".known-products"         # product Ид 1C ever sent (spool root; kept across exchanges)
MODES = {
    "catalog": {"checkauth", "init", "file", "import", "deactivate", "complete"},
    "sale": {"checkauth", "init", "file", "import", "query", "success", "info"},
}
LOCKED = {"file", "import"}            # modes that need the upload lock
ROOT_CLOSE = "</КоммерческаяИнформация>"
IMAGES = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")
_PREFIXES = re.compile(r"^(?:/?tmp/+|/?upload/1c/webdata/*)", re.IGNORECASE)
_ITERS_KEPT = 8                        # open XML iterators a process keeps (a cache, see _import_step)

# what 1C shows its user (Russian); technical details after a colon stay as they are
NOT_AUTHORIZED = "не авторизован: сначала выполните mode=checkauth"
SPOOL_NOT_SHARED = ("файл {name} принят другим экземпляром syncd и здесь не найден: экземпляры, "
                    "обслуживающие 1С, должны делить каталог spool_dir")


class Refused(Exception):
    """An answer `failure\\n<reason>` (or another status word)."""

    def __init__(self, reason: str, status: str = "failure") -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


def clean_filename(raw: str | None) -> str:
    """1C's `filename` -> a safe relative path inside the session folder (Bitrix rules + traversal)."""
    if not raw:
        raise Refused("не указано имя файла (filename)")
    name = raw.replace("\\", "/").strip()
    name = _PREFIXES.sub("", name)
    if (not name or name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\x00" in name
            or any(ord(c) < 32 for c in name)):
        raise Refused(f"недопустимое имя файла {raw!r}")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        raise Refused(f"недопустимое имя файла {raw!r}: выход за пределы каталога обмена")
    if PurePosixPath(parts[-1]).suffix.lower() in SCRIPT_EXTENSIONS or parts[-1].lower() == ".htaccess":
        raise Refused(f"недопустимое расширение файла {raw!r}")
    return "/".join(parts)


def _now() -> float:
    return time.time()


def _one_line(text: str, limit: int = 1000) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


class Exchange:
    """The protocol state machine of one 1C integration.

    Per process: only a cache of open XML iterators (an import step resumes from the position
    kept in the store when its iterator is not here). Everything else is in the store.
    """

    def __init__(self, conn: Owner) -> None:
        self.c = conn
        self.s = conn.settings
        self.ctx = conn.ctx
        self.spool = Path(conn.spool_dir)
        self.sessions = Sessions(self.ctx, self.s, self.spool)
        self._iters: collections.OrderedDict[tuple[str, str, int], tuple[Iterator[Any], int]] = \
            collections.OrderedDict()
        self._iters_lock = threading.Lock()

    # -- HTTP -----------------------------------------------------------------------------------
    async def endpoint(self, request: Request) -> Response:
        params: dict[str, str] = dict(request.query_params)
        mode = (params.get("mode") or "").lower()
        if request.method == "POST" and mode != "file" and request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"):
            # third-party exchange processors post `mode=query&sessid=…` as a form
            form = await request.form()
            params = {**{k: str(v) for k, v in form.items()}, **params}
            mode = (params.get("mode") or "").lower()
        typ = (params.get("type") or "").lower()
        if request.method == "GET" and not typ and not mode:
            return self._about(request)       # a person opened the URL in a browser, not 1C
        body = b""
        if mode == "file":
            # the body is read only for a session that exists
            if not self.sessions.get(request.cookies.get(COOKIE) or ""):
                return self._answer("failure", NOT_AUTHORIZED)
            try:
                body = await self._read_body(request)
            except ClientDisconnect:
                log.warning("onec_upload_dropped", filename=params.get("filename"))
                return self._answer("failure", "соединение оборвалось во время загрузки файла")
            except Refused as exc:
                return self._answer(exc.status, exc.reason)
        try:
            if typ not in MODES:
                raise Refused(f"неизвестный тип обмена type={typ!r}")
            if mode not in MODES[typ]:
                raise Refused(f"неизвестная команда {mode!r}")
            return await run_in_threadpool(self._handle, request, typ, mode, body, params)
        except Refused as exc:
            log.info("onec_refused", type=typ, mode=mode, reason=exc.reason)
            return self._answer(exc.status, exc.reason)
        except Exception as exc:
            log.exception("onec_error", type=typ, mode=mode)
            return self._answer("failure", f"внутренняя ошибка syncd: {type(exc).__name__}")

    def _about(self, request: Request) -> Response:
        """What this address is, for a person who opened it in a browser (1C always sends `type` and
        `mode`): where to put it in 1C. No login, password or data is shown."""
        from html import escape

        url = escape(str(request.url.replace(query="")))
        name = escape(self.c.name)
        body = f"""<!doctype html><html lang="ru"><meta charset="utf-8"><title>syncd: обмен с 1С</title>
<body style="font-family:sans-serif;max-width:40em;margin:2em auto">
<h1>Адрес обмена 1С с syncd</h1>
<p>Это адрес для обмена 1С:Предприятия с syncd (система «{name}») по протоколу CommerceML, как обмен
с сайтом 1С-Битрикс. Его открывает не браузер, а сама 1С.</p>
<p>В 1С: <i>Администрирование → Обмен данными → Обмен с сайтом</i> (или «Узлы обмена с сайтом»):
адрес сайта <code>{url}</code>, пользователь и пароль — из настроек системы «{name}» в конфигурации
syncd (<code>login</code>, <code>password</code>).</p>
<p>Проверить, что обмен работает: <code>syncd check</code>; что пришло и ушло — страница состояния syncd.</p>
</body></html>
"""
        return Response(body, media_type="text/html; charset=utf-8")

    async def _read_body(self, request: Request) -> bytes:
        cap = min(self.s.max_upload, max(4 * self.s.file_limit, 16 * 1024**2))   # 1C sends file_limit chunks
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise Refused(f"файл больше допустимого: {declared} байт при пределе {cap}")
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > cap:
                raise Refused(f"файл больше допустимого предела {cap} байт")
        if declared and declared.isdigit() and len(buf) < int(declared):
            raise ClientDisconnect()
        return bytes(buf)

    def _answer(self, status: str, *lines: str, cookie: tuple[str, str] | None = None) -> Response:
        # one reason per line: a line break inside a reason would make its rest another line
        text = "\n".join((status, *(_one_line(x) for x in lines))) + "\n"
        enc = self.s.encoding
        resp = Response(text.encode(enc, errors="replace"), media_type=f"text/plain; charset={enc}")
        if cookie:
            resp.set_cookie(cookie[0], cookie[1], httponly=True, samesite="lax")
        return resp

    # -- dispatch -------------------------------------------------------------------------------
    def _handle(self, request: Request, typ: str, mode: str, body: bytes, params: dict[str, str]) -> Response:
        now = _now()
        if mode == "checkauth":
            login = self._login(request)
            if login is None:
                time.sleep(0.2)          # a little friction for guessing
                raise Refused("неверный логин или пароль")
            return self._checkauth(login, typ, now)
        word = "error" if (typ, mode) == ("sale", "success") else "failure"   # as Bitrix answers
        found = self.sessions.get(request.cookies.get(COOKIE) or "")
        if found is None:
            raise Refused(NOT_AUTHORIZED, word)
        key, rec = found
        if self.sessions.expired(rec, now):
            self.sessions.drop(key, rec, self._forget)
            raise Refused("сессия истекла: повторите mode=checkauth", word)
        sessid = params.get("sessid") or None          # an empty one is none, as Bitrix reads it
        if sessid is not None:
            if not secrets.compare_digest(sessid.encode(), rec["sessid"].encode()):
                raise Refused("проверка источника не пройдена: неверный sessid")
        elif rec.get("sessid_used"):
            # this session sent sessid before: a request without it is no longer its own
            raise Refused("проверка источника не пройдена: эта сессия передавала sessid, а теперь нет")
        try:
            sess = self.sessions.begin(key, rec, now)
        except Lost:
            raise Refused(NOT_AUTHORIZED, word) from None
        except Busy:
            if mode == "import":
                return self._answer("progress", "предыдущий шаг загрузки ещё выполняется")
            raise Refused("предыдущий запрос этой сессии ещё выполняется; повторите позже") from None
        sess.rec.update(last=now, used=True)
        if sessid is not None:
            sess.rec["sessid_used"] = True
        failed = True
        try:
            if mode in LOCKED:
                self._take_lock(sess, now)
            resp = getattr(self, f"_m_{mode}")(typ, sess, body, params)
            failed = False
        except Refused as exc:
            log.info("onec_refused", type=typ, mode=mode, reason=exc.reason)
            resp = self._answer(exc.status, exc.reason)
        except ProtocolError as exc:
            resp = self._answer("failure", str(exc))
        except Exception as exc:
            log.exception("onec_error", type=typ, mode=mode)
            resp = self._answer("failure", f"внутренняя ошибка syncd: {type(exc).__name__}")
        if failed and mode in LOCKED:
            self.sessions.release_lock(key)      # 1C ends an exchange that got `failure`
        if not self.sessions.finish(sess):
            # the record was taken from under this request (it ran past busy_ttl, or was swept)
            log.warning("onec_session_lost", type=typ, mode=mode)
            if mode == "query" and (sess.rec.get("served") or {}).get("token"):
                self.ctx.release_writes(sess.rec["served"]["token"])
            resp = self._answer("failure", "сессия обмена изменена другим запросом; повторите обмен")
        self.ctx.state_set("last_exchange", now)
        return resp

    def _login(self, request: Request) -> str | None:
        """The login whose password the Basic auth carries (1C sends UTF-8; older platforms and
        third-party processors the Windows code page), or None."""
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("basic "):
            return None
        try:
            raw = base64.b64decode(auth[6:].strip(), validate=True)
        except (ValueError, binascii.Error):
            return None
        found = None
        for login, password in self.s.credentials().items():
            for enc in ("utf-8", "cp1251"):
                try:
                    want = f"{login}:{password}".encode(enc)
                except UnicodeEncodeError:
                    continue
                if secrets.compare_digest(raw, want):
                    found = login
        return found

    def _checkauth(self, login: str, typ: str, now: float) -> Response:
        cookie, rec = self.sessions.open(login, typ, now)
        self.sessions.sweep(now, self._forget)        # after: this session supersedes older ones
        (self.spool / rec["dir"]).mkdir(parents=True, exist_ok=True)
        log.info("onec_session", type=typ, login=login)
        lines = [COOKIE, cookie, f"sessid={rec['sessid']}"]
        if typ == "catalog":
            lines.append(f"timestamp={rec['timestamp']}")
        return self._answer("success", *lines, cookie=(COOKIE, cookie))

    def _forget(self, rec: Mapping[str, Any]) -> None:
        """A session is dropped: what 1C downloaded in it and never confirmed is given back."""
        token = (rec.get("served") or {}).get("token")
        if token:
            self.ctx.release_writes(token)

    def _take_lock(self, sess: Session, now: float) -> None:
        over = "этот обмен прерван: его продолжила более новая сессия того же логина; повторите обмен"
        if sess.rec.get("taken_over"):
            raise Refused(over)
        try:
            taken = self.sessions.take_lock(sess.key, sess.rec, now)
        except LockHeld as exc:
            h = exc.holder
            if h["login"] == sess.rec["login"] and sess.rec.get("had_lock"):
                raise Refused(over) from None
            raise Refused(f"идёт другой обмен с 1С (логин {h['login']}, {h['type']}, начат в "
                          f"{_clock(h['since'])}); повторите позже") from None
        if taken:
            log.warning("onec_lock_taken_over", login=sess.rec["login"], holder_login=taken["login"],
                        idle=round(now - taken["last"], 1))
            if taken["login"] == sess.rec["login"]:
                self.sessions.mark_taken_over(taken["session"])
        sess.rec["had_lock"] = True

    def _dir(self, rec: Mapping[str, Any]) -> Path:
        d = self.spool / rec["dir"]
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _path(self, rec: Mapping[str, Any], name: str) -> Path:
        base = self._dir(rec).resolve()
        p = (base / name).resolve()
        if not p.is_relative_to(base):
            raise Refused(f"недопустимое имя файла {name!r}: выход за пределы каталога обмена")
        return p

    # -- modes ----------------------------------------------------------------------------------
    def _m_init(self, typ: str, sess: Session, body: bytes, params: dict[str, str]) -> Response:
        r = sess.rec
        # sessions this 1C gave up are swept now that this one is more than a checkauth
        self.sessions.sweep(r["last"], self._forget, current=sess)
        shutil.rmtree(self._dir(r), ignore_errors=True)
        self._dir(r)
        self.sessions.release_lock(sess.key)     # a new start of this session's exchange
        r.update(type=typ, files={}, uploaded=0, unzipped={}, imports={}, finished=False, full_catalog=False)
        lines = [f"zip={'yes' if self.s.zip else 'no'}", f"file_limit={self.s.file_limit}"]
        version = params.get("version")
        r["version"] = version or None        # no version: the old sale protocol (import at mode=file)
        if version:
            lines += [f"sessid={r['sessid']}", f"version={self.s.version}"]
        return self._answer(*lines)

    def _m_file(self, typ: str, sess: Session, body: bytes, params: dict[str, str]) -> Response:
        r = sess.rec
        name = clean_filename(params.get("filename"))
        files = r["files"]
        if name not in files and len(files) >= self.s.max_files:
            raise Refused(f"за один обмен можно загрузить не более {self.s.max_files} файлов")
        if r["uploaded"] + len(body) > self.s.max_upload:
            self._path(r, name).unlink(missing_ok=True)      # the file is lost anyway: drop it
            gone = files.pop(name, None)
            r["uploaded"] -= gone["size"] if gone else 0
            raise Refused(f"за один обмен можно загрузить не более {self.s.max_upload} байт")
        info = files.setdefault(name, {"size": 0, "last": None, "chunks": 0})
        digest = hashlib.sha256(body).hexdigest()
        if info["last"] == digest and info["chunks"] and len(body) > 0:
            # the same chunk again: 1C retried a request whose answer it lost; do not append twice
            log.info("onec_chunk_repeated", filename=name)
            return self._answer("success")
        path = self._path(r, name)
        self._append(path, name, info["size"], body)
        info.update(size=info["size"] + len(body), last=digest, chunks=info["chunks"] + 1)
        r["uploaded"] += len(body)
        r["finished"] = False
        # the file changed: it (and what it unpacked to) is imported afresh
        members = r["unzipped"].pop(name, None)
        members = members if isinstance(members, list) else []
        r["imports"] = {k: v for k, v in r["imports"].items() if k != name and k not in members}
        if typ == "sale" and not r.get("version"):
            return self._old_sale_file(sess, name, path, len(body))
        return self._answer("success")

    def _append(self, path: Path, name: str, acknowledged: int, body: bytes) -> None:
        """Append a chunk after the bytes already acknowledged to 1C: what a request that died
        between writing and answering left behind is cut off first, never appended twice."""
        path.parent.mkdir(parents=True, exist_ok=True)
        have = path.stat().st_size if path.exists() else 0
        if have < acknowledged:
            raise Refused(SPOOL_NOT_SHARED.format(name=name))
        with open(path, "r+b" if path.exists() else "wb") as f:
            f.truncate(acknowledged)
            f.seek(acknowledged)
            f.write(body)

    def _old_sale_file(self, sess: Session, name: str, path: Path, size: int) -> Response:
        """The old sale protocol (no `version` at init): 1C never calls `mode=import`, the posted
        file is imported at once and the answer carries the result. A chunked upload is imported
        when its last chunk arrived (shorter than file_limit, or the file is whole)."""
        if size >= self.s.file_limit and not self._looks_whole(path):
            return self._answer("success")
        for _ in range(10_000_000):
            status, msg = self._import(sess, "sale", name)
            if status == "success":
                self.sessions.release_lock(sess.key)
                return self._answer("success", msg)
        raise Refused(f"{name}: загрузка не завершилась")

    @staticmethod
    def _looks_whole(path: Path) -> bool:
        if is_zip(path):
            return zipfile.is_zipfile(path)
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 512))
            tail = f.read().rstrip(b" \t\r\n\x00")
        return any(tail.endswith(ROOT_CLOSE.encode(enc)) for enc in ("utf-8", "cp1251"))

    def _m_import(self, typ: str, sess: Session, body: bytes, params: dict[str, str]) -> Response:
        status, msg = self._import(sess, typ, clean_filename(params.get("filename")))
        if status == "success" and typ == "sale" and sess.rec["finished"]:
            self.sessions.release_lock(sess.key)     # catalog holds it until `complete`
        return self._answer(status, msg)

    def _check_spool(self, r: Mapping[str, Any], name: str, path: Path) -> None:
        info = r["files"].get(name)
        if info is None:
            raise Refused(f"файл {name} не загружался в этом обмене")
        if not path.is_file() or path.stat().st_size < info["size"]:
            raise Refused(SPOOL_NOT_SHARED.format(name=name))

    def _import(self, sess: Session, typ: str, name: str) -> tuple[str, str]:
        """One step of importing `name`: ("progress", msg) until done, then ("success", msg);
        Refused when the file, or a record of it, could not be taken in."""
        r = sess.rec
        # 1. unpack uploaded archives, one per call
        for fname in sorted(r["files"]):
            done = r["unzipped"].get(fname, False)
            if isinstance(done, dict):
                # it could not be unpacked: the exchange it belongs to cannot be taken in
                raise Refused(done["error"])
            if done is not False:
                continue
            p = self._path(r, fname)
            self._check_spool(r, fname, p)
            if not is_zip(p):
                r["unzipped"][fname] = None
                continue
            try:
                out = safe_unzip(p, p.parent)
            except Exception as exc:   # noqa: BLE001 - a broken archive is 1C's to know, whatever broke
                why = f"архив {fname} не распакован: {exc}"
                r["unzipped"][fname] = {"error": why}
                log.info("onec_unzip_failed", filename=fname, error=str(exc))
                raise Refused(why) from None
            base = self._dir(r).resolve()
            r["unzipped"][fname] = sorted(str(x.resolve().relative_to(base)) for x in out)
            return "progress", f"архив {fname} распакован: файлов {len(out)}"
        # 2. the XML files this call imports
        if r["unzipped"].get(name):
            targets = [x for x in r["unzipped"][name] if x.lower().endswith(".xml")]
            if not targets:
                raise Refused(f"в архиве {name} нет XML-файлов")
        else:
            if name not in r["files"] and not any(name in (v or []) for v in r["unzipped"].values()
                                                  if isinstance(v, list)):
                raise Refused(f"файл {name} не загружался в этом обмене")
            if name in r["files"]:
                self._check_spool(r, name, self._path(r, name))
            targets = [name]
        for target in targets:
            st = r["imports"].setdefault(target, {"done": 0, "finished": False, "seq": None,
                                                  "records": 0, "quarantined": 0, "full": False,
                                                  "price_types": {}})
            if st["finished"]:
                continue
            self._import_step(sess, typ, target, st)
            if not st["finished"]:
                return "progress", f"{target}: прочитано записей: {st['done']}"
        total = sum(r["imports"][t]["records"] for t in targets)
        bad = sum(r["imports"][t]["quarantined"] for t in targets)
        unreadable = [r["imports"][t]["unreadable"] for t in targets if r["imports"][t].get("unreadable")]
        self._mark_finished(r)
        if unreadable:
            # what was read before the fault is taken in; 1C is told the file was not
            raise Refused("; ".join(f"файл не прочитан до конца: {u}" for u in unreadable))
        if bad:
            why = [x for t in targets for x in r["imports"][t].get("reasons", [])]
            raise Refused(f"не приняты записи: {bad} из {total} (оставлены в карантине syncd): " + "; ".join(why[:3]))
        return "success", f"принято записей: {total}"

    def _mark_finished(self, r: dict[str, Any]) -> None:
        """A sale exchange is over when every uploaded file is imported (catalog: at `complete`)."""
        if all(v.get("finished") for v in r["imports"].values()) and all(
                f in r["imports"] or r["unzipped"].get(f) for f in r["files"]
                if not f.lower().endswith(IMAGES)):
            r["finished"] = r["type"] == "sale"

    def _import_step(self, sess: Session, typ: str, target: str, st: dict[str, Any]) -> None:
        r = sess.rec
        path = self._path(r, target)
        if st["seq"] is None:
            st["seq"] = self.sessions.next_seq()
            try:
                h = read_header(path)
                st["full"] = h.section == "Каталог" and h.only_changes is False
            except ProtocolError:
                pass
        key = (sess.key, target, st["seq"])
        with self._iters_lock:
            it, pos = self._iters.pop(key, (None, 0))    # put back only after a step that went through
        if it is None or pos != st["done"]:
            # not here (a restart, another instance answered the last step): skip what was ingested
            it = iter_records(path)
            if st["done"]:
                for _ in itertools.islice(it, st["done"]):
                    pass
            pos = st["done"]
        records: list[RawRecord | Rejected] = []
        n = 0
        try:
            for obj in it:
                n += 1
                records += self._convert(obj, st, pos + n, typ, r)
                if n >= self.s.import_step:
                    break
            else:
                st["finished"] = True
        except ProtocolError as exc:
            # the rest of the file cannot be read: what was read is taken in, the file is refused
            st["unreadable"] = f"{target}: {exc}"       # str(exc) starts with "line N" when known
            st["finished"] = True
        if records:
            counts = self.ctx.ingest(Batch(f"import:{typ}", records))
            st["records"] += len(records)
            quarantined = getattr(counts, "quarantined", 0)
            st["quarantined"] += quarantined
            reasons = [x.reason for x in records if isinstance(x, Rejected)]
            if quarantined > len(reasons):            # the engine refused some (a bad ИНН…)
                reasons += self._quarantine_reasons(records, quarantined - len(reasons))
            st["reasons"] = (st.get("reasons", []) + reasons)[:5]
        st["done"] = pos + n
        if not st["finished"]:
            with self._iters_lock:
                self._iters[key] = (it, st["done"])
                while len(self._iters) > _ITERS_KEPT:
                    self._iters.popitem(last=False)

    def _quarantine_reasons(self, records: list[RawRecord | Rejected], n: int) -> list[str]:
        """Why the engine quarantined records of this batch (1C's user reads it in the answer)."""
        store = getattr(self.ctx, "store", None)
        ids = {x.external_id for x in records if isinstance(x, RawRecord)}
        if store is None:
            return ["причина — в карантине syncd (syncd quarantine)"]
        rows = [q for q in store.list_quarantine(limit=max(50, 2 * n))
                if q.get("system") == self.ctx.system and q.get("external_id") in ids]
        return [f"{q['external_id']}: {q['reason']}" for q in rows[:n]]

    def _convert(self, obj: Any, st: dict[str, Any], index: int, typ: str,
                 r: dict[str, Any]) -> list[RawRecord | Rejected]:
        version = f"{st['seq']:08d}{index:08d}"
        try:
            if isinstance(obj, CmlRejected):
                # the line goes into the reason too: the quarantine keeps reason and raw
                return [Rejected(f"line {obj.line}: {obj.reason}" if obj.line else obj.reason,
                                 kind=_KINDS.get(obj.kind, obj.kind), external_id=obj.record_id,
                                 line=obj.line, raw=obj.raw)]
            if isinstance(obj, Document):
                return self._document(obj, version)
            if isinstance(obj, Counterparty):
                return [convert.counterparty_record(obj, version, self._known_kind)]
            if isinstance(obj, Product):
                self._note_product(r, obj.id)
                if st["full"]:
                    r["full_catalog"] = True
                return [convert.product_record(obj, version)]
            if isinstance(obj, PriceType):
                st["price_types"][obj.id] = obj.name or ""
                return []
            if isinstance(obj, Offer):
                return [convert.offer_record(obj, version, self.s.price_type, st["price_types"])]
            return []                                 # groups, properties, warehouses
        except BadInput as exc:
            return [Rejected(exc.reason, kind=type(obj).__name__.lower(),
                             external_id=getattr(obj, "id", None), line=getattr(exc, "line", None))]

    def _document(self, doc: Document, version: str) -> list[RawRecord | Rejected]:
        linked = convert.linked_fields(doc)
        if linked is not None:
            base = (doc.base or "").strip()
            order_id = None
            if base:
                order_id = base if self.c.kind_of(base) == "order" else self.c.by_number(base)
            if not order_id:
                return [Rejected(f"{doc.operation} {doc.number or doc.id}: Основание {base!r} is no order "
                                 "known to this exchange", kind="order", external_id=doc.id,
                                 raw=repr(doc)[:2000])]
            return [RawRecord("order", order_id, linked, version=version, stamp=order_id)]
        cps, order = convert.order_record(doc, version, self._known_kind)
        self.c.remember(doc.id, "order", doc.number)
        return [*cps, order]

    def _note_product(self, r: Mapping[str, Any], pid: str) -> None:
        """Remember a catalog product id: in this exchange, and among all goods 1C ever sent."""
        for path in (self._dir(r) / SEEN_FILE, self.spool / KNOWN_FILE):
            with open(path, "a", encoding="utf-8") as f:
                f.write(pid.replace("\n", " ") + "\n")

    @staticmethod
    def _read_ids(path: Path) -> list[str]:
        try:
            return [x for x in path.read_text("utf-8").splitlines() if x]
        except FileNotFoundError:
            return []

    def _known_kind(self, ext: str) -> str | None:
        kind = self.c.kind_of(ext)
        return kind if kind in ("counterparty", "person") else None

    def _m_query(self, typ: str, sess: Session, body: bytes, params: dict[str, str]) -> Response:
        r = sess.rec
        prev = r.get("served") or {}
        if prev.get("token"):
            # this session's previous answer was not confirmed (lost, or 1C asked again): give it
            # back first, so this answer carries those documents again
            self.ctx.release_writes(prev["token"])
        r["served"] = None
        # an older session of the same login that never confirmed its query: 1C gave it up
        for key, other in self.sessions.of_login(r["login"]):
            token = (other.get("served") or {}).get("token")
            if key != sess.key and token and other["created"] < r["created"] and self.sessions.clear_served(key, other):
                self.ctx.release_writes(token)
        data, token, served = self.c.render_query()
        r["served"] = {"token": token, "ops": served} if served else None
        if not served and token:
            self.ctx.release_writes(token)
        enc = self.s.encoding
        log.info("onec_query", documents=len(served))
        return Response(data, media_type=f"application/xml; charset={enc}")

    def _m_success(self, typ: str, sess: Session, body: bytes, params: dict[str, str]) -> Response:
        r = sess.rec
        served = r.get("served") or {}
        n = 0
        if served.get("token"):
            counts = self.c.confirm_query(served["token"], served.get("ops") or [])
            n = getattr(counts, "pushed", 0)
            r["served"] = None
        log.info("onec_acknowledged", documents=n)
        if not any(not v.get("finished") for v in r["imports"].values()):
            r["finished"] = True
        return self._answer("success")

    def _m_info(self, typ: str, sess: Session, body: bytes, params: dict[str, str]) -> Response:
        from lxml import etree

        root = etree.Element("Справочник")
        st = etree.SubElement(root, "Статусы")
        for code, name in self.s.statuses.items():
            el = etree.SubElement(st, "Элемент")
            etree.SubElement(el, "Ид").text = code
            etree.SubElement(el, "Название").text = name
        etree.SubElement(root, "ПлатежныеСистемы")
        etree.SubElement(root, "СлужбыДоставки")
        data = etree.tostring(root, xml_declaration=True, encoding=self.s.encoding)
        return Response(data, media_type=f"application/xml; charset={self.s.encoding}")

    def _m_deactivate(self, typ: str, sess: Session, body: bytes, params: dict[str, str]) -> Response:
        r = sess.rec
        if not params.get("timestamp"):
            raise Refused("не указан timestamp (mode=deactivate)")
        n = 0
        if r.get("full_catalog"):
            # a full catalog (СодержитТолькоИзменения=false) was imported: goods 1C no longer lists
            self._take_lock(sess, r["last"])
            seen = set(self._read_ids(self._dir(r) / SEEN_FILE))
            known = set(self._read_ids(self.spool / KNOWN_FILE))
            gone = sorted(known - seen)
            for i in range(0, len(gone), 500):
                self.ctx.ingest(Batch("import:catalog", [RawRecord("product", pid, {"Ид": pid, "Активен": "false"})
                                                         for pid in gone[i:i + 500]]))
            (self.spool / KNOWN_FILE).write_text("".join(f"{x}\n" for x in sorted(seen)), "utf-8")
            n = len(gone)
        return self._answer("success", f"снято с публикации товаров: {n}")

    def _m_complete(self, typ: str, sess: Session, body: bytes, params: dict[str, str]) -> Response:
        sess.rec["finished"] = True
        self.sessions.release_lock(sess.key)
        return self._answer("success", "обмен завершён")


_KINDS = {"order": "order", "counterparty": "counterparty", "product": "product", "offer": "product"}


def remove_tree(path: str | os.PathLike) -> None:
    shutil.rmtree(path, ignore_errors=True)
