"""The CommerceML 2 HTTP exchange as 1C-Bitrix serves it (protocols.md §1), served by syncd to 1C.

One exchange at a time per integration: a session (cookie + sessid) is made by `checkauth` and kept in
the store, so a daemon restart does not break an exchange in progress; a second `checkauth` while an
unfinished exchange was active less than `lock_timeout` seconds ago gets `failure`. Every answer is
plain text (`success` / `progress` / `failure` + reason lines, `\\n`-separated) in the configured
encoding, without BOM or HTML; `mode=query` answers the orders XML.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from syncd.commerceml import Counterparty, Document, Offer, PriceType, Product, read_header, safe_unzip
from syncd.commerceml import Rejected as CmlRejected
from syncd.commerceml.reader import iter_records
from syncd.commerceml.safety import SCRIPT_EXTENSIONS, is_zip
from syncd.connector import Batch, RawRecord, Rejected
from syncd.errors import BadInput, ProtocolError

from . import convert

if TYPE_CHECKING:
    from .connector import OneCConnector

log = structlog.get_logger("syncd.onec")

COOKIE = "SYNCD1CSESSID"
SEEN_FILE = ".seen-products"           # product Ид read in this exchange (per session folder)
KNOWN_FILE = ".known-products"         # product Ид 1C ever sent (spool root; kept across exchanges)
MODES = {
    "catalog": {"checkauth", "init", "file", "import", "deactivate", "complete"},
    "sale": {"checkauth", "init", "file", "import", "query", "success", "info"},
}
_PREFIXES = re.compile(r"^(?:/?tmp/+|/?upload/1c/webdata/*)", re.IGNORECASE)


class Refused(Exception):
    """An answer `failure\\n<reason>` (or another status word)."""

    def __init__(self, reason: str, status: str = "failure") -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


def clean_filename(raw: str | None) -> str:
    """1C's `filename` -> a safe relative path inside the session folder (Bitrix rules + traversal)."""
    if not raw:
        raise Refused("filename is missing")
    name = raw.replace("\\", "/").strip()
    name = _PREFIXES.sub("", name)
    if (not name or name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\x00" in name
            or any(ord(c) < 32 for c in name)):
        raise Refused(f"filename {raw!r} is not allowed")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        raise Refused(f"filename {raw!r} is not allowed (path traversal)")
    if PurePosixPath(parts[-1]).suffix.lower() in SCRIPT_EXTENSIONS or parts[-1].lower() == ".htaccess":
        raise Refused(f"filename {raw!r} has a refused extension")
    return "/".join(parts)


def _now() -> float:
    return time.time()


class Exchange:
    """The protocol state machine of one 1C integration."""

    def __init__(self, conn: OneCConnector) -> None:
        self.c = conn
        self.s = conn.settings
        self.ctx = conn.ctx
        self.spool = Path(conn.spool_dir)
        self._lock = threading.Lock()
        self._iters: dict[tuple[str, str], tuple[Iterator[Any], int]] = {}

    # -- HTTP -----------------------------------------------------------------------------------
    async def endpoint(self, request: Request) -> Response:
        q = request.query_params
        typ, mode = (q.get("type") or "").lower(), (q.get("mode") or "").lower()
        body = b""
        if mode == "file":
            sess = self.ctx.state_get("session") or {}
            cookie = request.cookies.get(COOKIE) or ""
            if not sess or not secrets.compare_digest(cookie, sess.get("cookie", "")):
                return self._answer("failure", "not authorized: call mode=checkauth first")   # body unread
            try:
                body = await self._read_body(request)
            except ClientDisconnect:
                log.warning("onec_upload_dropped", filename=q.get("filename"))
                return self._answer("failure", "connection dropped during upload")
            except Refused as exc:
                return self._answer(exc.status, exc.reason)
        try:
            if typ not in MODES:
                raise Refused(f"unknown type {typ!r}")
            if mode not in MODES[typ]:
                raise Refused(f"unknown command {mode!r}")
            return await run_in_threadpool(self._handle, request, typ, mode, body)
        except Refused as exc:
            log.info("onec_refused", type=typ, mode=mode, reason=exc.reason)
            return self._answer(exc.status, exc.reason)
        except ProtocolError as exc:
            return self._answer("failure", str(exc))
        except Exception as exc:
            log.exception("onec_error", type=typ, mode=mode)
            return self._answer("failure", f"internal error: {type(exc).__name__}")

    async def _read_body(self, request: Request) -> bytes:
        cap = min(self.s.max_upload, max(4 * self.s.file_limit, 16 * 1024**2))   # 1C sends file_limit chunks
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise Refused(f"upload of {declared} bytes is over the limit of {cap}")
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > cap:
                raise Refused(f"upload is over the limit of {cap} bytes")
        if declared and declared.isdigit() and len(buf) < int(declared):
            raise ClientDisconnect()
        return bytes(buf)

    def _answer(self, status: str, *lines: str, cookie: tuple[str, str] | None = None) -> Response:
        text = "\n".join((status, *lines)) + "\n"
        enc = self.s.encoding
        resp = Response(text.encode(enc, errors="replace"), media_type=f"text/plain; charset={enc}")
        if cookie:
            resp.set_cookie(cookie[0], cookie[1], httponly=True, samesite="lax")
        return resp

    # -- dispatch -------------------------------------------------------------------------------
    def _handle(self, request: Request, typ: str, mode: str, body: bytes) -> Response:
        if mode == "checkauth" and not self._password_ok(request):
            time.sleep(0.2)          # a little friction for guessing (outside the lock)
            raise Refused("wrong login or password")
        with self._lock:
            if mode == "checkauth":
                return self._checkauth(request, typ)
            sess = self._session(request, mode, typ)
            sess["last"] = _now()
            try:
                return getattr(self, f"_m_{mode}")(request, typ, sess, body)
            finally:
                if self.ctx.state_get("session", {}).get("cookie") == sess["cookie"]:
                    self.ctx.state_set("session", sess)
                self.ctx.state_set("last_exchange", _now())

    def _password_ok(self, request: Request) -> bool:
        import base64
        import binascii

        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("basic "):
            return False
        try:
            raw = base64.b64decode(auth[6:].strip(), validate=True)
        except (ValueError, binascii.Error):
            return False
        want = f"{self.s.login}:{self.s.password.get_secret_value()}"
        # 1C sends UTF-8; older platforms the Windows code page
        return any(secrets.compare_digest(raw, want.encode(enc, errors="replace")) for enc in ("utf-8", "cp1251"))

    def _checkauth(self, request: Request, typ: str) -> Response:
        cur = self.ctx.state_get("session")
        now = _now()
        if cur and not cur.get("finished") and now - cur.get("last", 0) < self.s.lock_timeout:
            raise Refused("another exchange with 1C is in progress; try again later")
        sess = {"cookie": secrets.token_hex(16), "sessid": secrets.token_hex(16), "type": typ,
                "created": now, "last": now, "version": None, "dir": secrets.token_hex(6),
                "files": {}, "uploaded": 0, "unzipped": {}, "imports": {}, "finished": False,
                "timestamp": int(now)}
        self._clean_spool()
        (self.spool / sess["dir"]).mkdir(parents=True, exist_ok=True)
        self.ctx.state_set("session", sess)
        self._iters.clear()
        log.info("onec_session", type=typ)
        lines = [COOKIE, sess["cookie"], f"sessid={sess['sessid']}"]
        if typ == "catalog":
            lines.append(f"timestamp={sess['timestamp']}")
        return self._answer("success", *lines, cookie=(COOKIE, sess["cookie"]))

    def _clean_spool(self) -> None:
        if self.spool.is_dir():
            for p in self.spool.iterdir():
                if p.name == KNOWN_FILE:
                    continue
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def _session(self, request: Request, mode: str, typ: str) -> dict[str, Any]:
        sess = self.ctx.state_get("session")
        cookie = request.cookies.get(COOKIE)
        word = "error" if (typ, mode) == ("sale", "success") else "failure"
        if not cookie or not sess or not secrets.compare_digest(cookie, sess["cookie"]):
            raise Refused("not authorized: call mode=checkauth first", word)
        if _now() - sess["last"] > self.s.session_ttl:
            raise Refused("session expired: call mode=checkauth again", word)
        sessid = request.query_params.get("sessid")
        if sessid is not None:
            if not secrets.compare_digest(sessid, sess["sessid"]):
                raise Refused("source check failed: wrong sessid")
            if not self.ctx.state_get("sessid_required"):
                self.ctx.state_set("sessid_required", True)     # one-way, as Bitrix does
        elif self.ctx.state_get("sessid_required"):
            raise Refused("source check failed: sessid is required")
        return sess

    def _dir(self, sess: dict[str, Any]) -> Path:
        d = self.spool / sess["dir"]
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _path(self, sess: dict[str, Any], name: str) -> Path:
        base = self._dir(sess).resolve()
        p = (base / name).resolve()
        if not p.is_relative_to(base):
            raise Refused("filename is not allowed (path traversal)")
        return p

    # -- modes ----------------------------------------------------------------------------------
    def _m_init(self, request: Request, typ: str, sess: dict[str, Any], body: bytes) -> Response:
        shutil.rmtree(self._dir(sess), ignore_errors=True)
        self._dir(sess)
        sess.update(type=typ, files={}, uploaded=0, unzipped={}, imports={}, finished=False)
        self._iters.clear()
        lines = [f"zip={'yes' if self.s.zip else 'no'}", f"file_limit={self.s.file_limit}"]
        version = request.query_params.get("version")
        if version:
            sess["version"] = version
            lines += [f"sessid={sess['sessid']}", f"version={self.s.version}"]
        return self._answer(*lines)

    def _m_file(self, request: Request, typ: str, sess: dict[str, Any], body: bytes) -> Response:
        name = clean_filename(request.query_params.get("filename"))
        files = sess["files"]
        if name not in files and len(files) >= self.s.max_files:
            raise Refused(f"too many files in one exchange (limit {self.s.max_files})")
        if sess["uploaded"] + len(body) > self.s.max_upload:
            self._path(sess, name).unlink(missing_ok=True)      # the file is lost anyway: drop it
            gone = files.pop(name, None)
            sess["uploaded"] -= gone["size"] if gone else 0
            raise Refused(f"upload is over the limit of {self.s.max_upload} bytes per exchange")
        info = files.setdefault(name, {"size": 0, "last": None, "chunks": 0})
        digest = hashlib.sha256(body).hexdigest()
        if info["last"] == digest and info["chunks"] and len(body) > 0:
            # the same chunk again: 1C retried a request whose answer it lost; do not append twice
            log.info("onec_chunk_repeated", filename=name)
            return self._answer("success")
        path = self._path(sess, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(body)
        info.update(size=info["size"] + len(body), last=digest, chunks=info["chunks"] + 1)
        sess["uploaded"] += len(body)
        sess["finished"] = False
        sess["imports"].pop(name, None)
        sess["unzipped"].pop(name, None)
        if typ == "sale" and not sess.get("version") and not is_zip(path):
            # the old sale protocol (no `version` at init): the posted file is imported at once
            for _ in range(1_000_000):
                status, msg = self._import(sess, typ, name)
                if status == "success":
                    return self._answer("success", msg)
        return self._answer("success")

    def _m_import(self, request: Request, typ: str, sess: dict[str, Any], body: bytes) -> Response:
        return self._answer(*self._import(sess, typ, clean_filename(request.query_params.get("filename"))))

    def _import(self, sess: dict[str, Any], typ: str, name: str) -> tuple[str, str]:
        """One step of importing `name`: ("progress", msg) until done, then ("success", msg)."""
        # 1. unpack uploaded archives, one per call
        for fname in sorted(sess["files"]):
            if fname in sess["unzipped"]:
                continue
            p = self._path(sess, fname)
            if p.is_file() and is_zip(p):
                try:
                    out = safe_unzip(p, p.parent)
                except ProtocolError as exc:
                    sess["unzipped"][fname] = []
                    raise Refused(f"{fname}: {exc}") from None
                base = self._dir(sess).resolve()
                sess["unzipped"][fname] = sorted(str(x.resolve().relative_to(base)) for x in out)
                return "progress", f"unpacked {fname}: {len(out)} files"
            sess["unzipped"][fname] = None
        # 2. the XML files this call imports
        if sess["unzipped"].get(name):
            targets = [x for x in sess["unzipped"][name] if x.lower().endswith(".xml")]
        else:
            if not self._path(sess, name).is_file():
                raise Refused(f"file {name} was not uploaded in this exchange")
            targets = [name]
        for target in targets:
            st = sess["imports"].setdefault(target, {"done": 0, "finished": False, "seq": None,
                                                     "records": 0, "quarantined": 0, "full": False,
                                                     "price_types": {}})
            if st["finished"]:
                continue
            self._import_step(sess, typ, target, st)
            if not st["finished"]:
                return "progress", f"{target}: {st['done']} records read"
        total = sum(sess["imports"][t]["records"] for t in targets)
        bad = sum(sess["imports"][t]["quarantined"] for t in targets)
        unreadable = [sess["imports"][t]["unreadable"] for t in targets if sess["imports"][t].get("unreadable")]
        if unreadable or bad:
            # acknowledge only what was taken in whole: 1C shows this answer to its user
            why = unreadable or [r for t in targets for r in sess["imports"][t].get("reasons", [])]
            raise Refused(("; ".join(unreadable) if unreadable else
                           f"{bad} of {total} records could not be processed (kept in syncd's quarantine): "
                           + "; ".join(why[:3])))
        if all(v.get("finished") for v in sess["imports"].values()) and all(
                f in sess["imports"] or sess["unzipped"].get(f) for f in sess["files"]
                if not f.lower().endswith((".jpg", ".jpeg", ".png", ".gif", ".webp"))):
            sess["finished"] = typ == "sale"       # catalog waits for `complete`
        msg = f"imported {total} records" + (f", {bad} quarantined" if bad else "")
        return "success", msg

    def _import_step(self, sess: dict[str, Any], typ: str, target: str, st: dict[str, Any]) -> None:
        path = self._path(sess, target)
        if st["seq"] is None:
            seq = int(self.ctx.state_get("import_seq", 0)) + 1
            self.ctx.state_set("import_seq", seq)
            st["seq"] = seq
            try:
                h = read_header(path)
                st["full"] = h.section == "Каталог" and h.only_changes is False
            except ProtocolError:
                pass
        key = (sess["cookie"], target)
        it, pos = self._iters.pop(key, (None, 0))    # put back only after a step that went through
        if it is None or pos != st["done"]:
            it = iter_records(path)
            if st["done"]:
                for _ in itertools.islice(it, st["done"]):
                    pass                              # resume after a restart: skip what was ingested
            pos = st["done"]
        records: list[RawRecord | Rejected] = []
        n = 0
        try:
            for obj in it:
                n += 1
                records += self._convert(obj, st, pos + n, typ, sess)
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
            st["quarantined"] += getattr(counts, "quarantined", 0)
            st.setdefault("reasons", []).extend(r.reason for r in records if isinstance(r, Rejected))
            st["reasons"] = st["reasons"][:5]
        st["done"] = pos + n
        if not st["finished"]:
            self._iters[key] = (it, st["done"])

    def _convert(self, obj: Any, st: dict[str, Any], index: int, typ: str,
                 sess: dict[str, Any]) -> list[RawRecord | Rejected]:
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
                self._note_product(sess, obj.id)
                if st["full"]:
                    sess["full_catalog"] = True
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

    def _note_product(self, sess: dict[str, Any], pid: str) -> None:
        """Remember a catalog product id: in this exchange, and among all goods 1C ever sent."""
        for path in (self._dir(sess) / SEEN_FILE, self.spool / KNOWN_FILE):
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

    def _m_query(self, request: Request, typ: str, sess: dict[str, Any], body: bytes) -> Response:
        prev = self.ctx.state_get("served")
        if prev and prev.get("token"):
            # the previous answer was not confirmed (lost, or 1C asked again): give it back first,
            # so this answer carries those documents again
            self.ctx.release_writes(prev["token"])
        data, token, served = self.c.render_query()
        self.ctx.state_set("served", {"token": token, "ops": served} if served else {})
        if not served and token:
            self.ctx.release_writes(token)
        enc = self.s.encoding
        log.info("onec_query", documents=len(served))
        return Response(data, media_type=f"application/xml; charset={enc}")

    def _m_success(self, request: Request, typ: str, sess: dict[str, Any], body: bytes) -> Response:
        served = self.ctx.state_get("served") or {}
        n = 0
        if served.get("token"):
            counts = self.c.confirm_query(served["token"], served.get("ops") or [])
            n = getattr(counts, "pushed", 0)
            self.ctx.state_set("served", {})
        log.info("onec_acknowledged", documents=n)
        if not any(not v.get("finished") for v in sess["imports"].values()):
            sess["finished"] = True
        return self._answer("success")

    def _m_info(self, request: Request, typ: str, sess: dict[str, Any], body: bytes) -> Response:
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

    def _m_deactivate(self, request: Request, typ: str, sess: dict[str, Any], body: bytes) -> Response:
        if not request.query_params.get("timestamp"):
            raise Refused("timestamp is required")
        n = 0
        if sess.get("full_catalog"):
            # a full catalog (СодержитТолькоИзменения=false) was imported: goods 1C no longer lists
            seen = set(self._read_ids(self._dir(sess) / SEEN_FILE))
            known = set(self._read_ids(self.spool / KNOWN_FILE))
            gone = sorted(known - seen)
            for i in range(0, len(gone), 500):
                self.ctx.ingest(Batch("import:catalog", [RawRecord("product", pid, {"Ид": pid, "Активен": "false"})
                                                         for pid in gone[i:i + 500]]))
            (self.spool / KNOWN_FILE).write_text("".join(f"{x}\n" for x in sorted(seen)), "utf-8")
            n = len(gone)
        return self._answer("success", f"deactivated {n} products")

    def _m_complete(self, request: Request, typ: str, sess: dict[str, Any], body: bytes) -> Response:
        sess["finished"] = True
        return self._answer("success", "exchange complete")


_KINDS = {"order": "order", "counterparty": "counterparty", "product": "product", "offer": "product"}


def remove_tree(path: str | os.PathLike) -> None:
    shutil.rmtree(path, ignore_errors=True)
