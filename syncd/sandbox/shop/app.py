"""The sandbox shop's ASGI app: the 1C exchange endpoint (protocols.md §1) and the control API."""

from __future__ import annotations

import functools

import asyncio
import base64
import json
import time
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syncd.sandbox.shop.cml_in import Unreadable
from syncd.sandbox.shop.seed import seed_demo
from syncd.sandbox.shop.state import ShopError, ShopState
from syncd.sandbox.shop.xml import export_orders
from syncd.sandbox.server import DroppedResponse, quiet_dropped_answers

EXCHANGE_PATH = "/bitrix/admin/1c_exchange.php"
COOKIE = "PHPSESSID"
TEXT_TYPE = "text/html; charset=windows-1251"
SCRIPT_EXT = {".php", ".php3", ".php4", ".php5", ".phtml", ".phar", ".pl", ".py", ".cgi", ".sh", ".exe", ".js",
              ".htaccess"}


# the dropped-answer fault: an answer started as this peer starts it, cut short
_dropped = functools.partial(DroppedResponse, TEXT_TYPE, b"succ")


def text(*lines: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A status answer: lines joined by \\n, trailing \\n, windows-1251, no BOM."""
    body = "\n".join(lines) + "\n"
    return Response(body.encode("cp1251", "replace"), status_code=status,
                    headers={"Content-Type": TEXT_TYPE, **(headers or {})})


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False, default=str), status_code=status,
                    headers={"Content-Type": "application/json; charset=utf-8"})


def _clean_filename(name: str) -> str | None:
    """Strip the temp-dir / upload/1c/webdata prefixes 1C on Linux sends; refuse traversal and scripts."""
    name = name.replace("\\", "/")
    for prefix in ("upload/1c/webdata/", "/upload/1c/webdata/"):
        name = name.removeprefix(prefix)
    name = name.removeprefix("tmp/")
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or p.suffix.lower() in SCRIPT_EXT:
        return None
    return str(p)


class Exchange:
    def __init__(self, st: ShopState) -> None:
        self.st = st

    async def handle(self, request: Request) -> Response:
        st = self.st
        q = dict(request.query_params)
        body = await request.body()
        typ, mode = q.get("type", ""), q.get("mode", "")
        if request.method == "POST" and mode != "file" and body and \
                "x-www-form-urlencoded" in request.headers.get("content-type", ""):
            from urllib.parse import parse_qsl
            q.update(dict(parse_qsl(body.decode("cp1251", "replace"))))
        entry: dict[str, Any] = {"ts": time.time(), "method": request.method, "type": typ, "mode": mode,
                                 "filename": q.get("filename"), "sessid_sent": "sessid" in q,
                                 "bytes_in": len(body)}
        try:
            resp = await self._faults(mode, entry)
            if resp is None:
                resp = self._handle(request, q, body, typ, mode, entry)
        except Exception as e:  # noqa: BLE001 - a sandbox bug answers like PHP would, and is logged
            entry["exception"] = repr(e)
            resp = Response(b"<html><body>Internal Server Error</body></html>", 500,
                            headers={"Content-Type": "text/html"})
        entry["http"] = resp.status_code
        if "answer" not in entry and isinstance(resp, Response) and not isinstance(resp, DroppedResponse):
            head = bytes(resp.body[:40]) if resp.body else b""
            entry["answer"] = head.split(b"\n", 1)[0].decode("cp1251", "replace")
        entry["duration"] = round(time.time() - entry["ts"], 5)
        st.log_request(entry)
        return resp

    async def _faults(self, mode: str, entry: dict[str, Any]) -> Response | None:
        f = self.st.faults
        if f.modes and mode not in f.modes:
            return None
        if f.latency:
            await asyncio.sleep(f.latency)
        rng = self.st.rng
        with self.st.lock:
            if f.fail_next > 0 or (f.error_rate and rng.random() < f.error_rate):
                f.fail_next = max(0, f.fail_next - 1)
                entry.update(fault="error", answer="HTTP 503")
                return Response(b"<html><head><title>503 Service Temporarily Unavailable</title></head>"
                                b"<body><h1>503</h1><hr>nginx</body></html>", 503,
                                headers={"Content-Type": "text/html"})
            if f.failure_next > 0 or (f.failure_rate and rng.random() < f.failure_rate):
                f.failure_next = max(0, f.failure_next - 1)
                entry.update(fault="failure")
                return text("failure", "Ошибка сервера: повторите обмен позже")
            if f.drop_next > 0 or (f.drop_rate and rng.random() < f.drop_rate):
                f.drop_next = max(0, f.drop_next - 1)
                entry.update(fault="drop", answer="DROPPED")
                return _dropped()
        return None

    def _handle(self, request: Request, q: dict[str, str], body: bytes, typ: str, mode: str,
                entry: dict[str, Any]) -> Response:
        st = self.st
        if typ not in ("sale", "catalog"):
            return text("failure", "Неизвестный тип обмена")
        peer = st.peer
        if mode in peer.missing_modes:
            entry["missing_mode"] = True
            return Response(b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>",
                            404, headers={"Content-Type": "text/html"})
        if mode == "checkauth":
            return self._checkauth(request, typ, entry)
        if peer.session in ("basic", "basic-cookie"):
            # no session at all: every request carries HTTP Basic; one exchange state per login
            login = self._basic_login(request)
            if login is None:
                entry["auth"] = "denied"
                return Response(b"", 401, headers={"WWW-Authenticate": 'Basic realm="1c"'})
            sess = st.basic_session(login)
        else:
            sess = st.sessions.get(request.cookies.get(COOKIE, ""))
        entry["cookie_ok"] = sess is not None
        if typ == "sale" and mode == "success" and sess is None:
            # the one place Bitrix answers `error` (not `failure`): the cookie is not the stored session
            return text("error")
        if sess is None:
            return text("failure", "Ошибка авторизации: сессия не найдена, выполните checkauth")
        if peer.session != "bitrix" or peer.init_minimal:
            pass                              # sites without sessid never check it
        elif "sessid" in q:
            if q["sessid"] != sess.sessid:
                return text("failure", "Ошибка проверки источника (source check)")
            with st.lock:
                st.secure[typ] = True         # the one-way ratchet (secure_1c_exchange=Y)
        elif st.secure[typ]:
            return text("failure", "Ошибка проверки источника (source check)")
        handler = getattr(self, f"_{typ}_{mode}", None) or getattr(self, f"_any_{mode}", None)
        if handler is None:
            return text("failure", f"Неизвестная команда: {mode}")
        return handler(sess, q, body, typ, entry)

    # ---- modes ------------------------------------------------------------------------------------
    def _basic_login(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        login = password = ""
        if auth.lower().startswith("basic "):
            try:
                login, _, password = base64.b64decode(auth[6:]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                login = ""
        return login if login and self.st.check_password(login, password) else None

    def _checkauth(self, request: Request, typ: str, entry: dict[str, Any]) -> Response:
        login = self._basic_login(request)
        if login is None:
            entry["auth"] = "denied"
            if self.st.peer.session in ("basic", "basic-cookie"):
                return Response(b"", 401, headers={"WWW-Authenticate": 'Basic realm="1c"'})
            return text("failure", "Неверный логин или пароль")
        entry["auth"] = "ok"
        how = self.st.peer.session
        if how == "basic":
            self.st.basic_session(login)
            return text("success")
        if how == "basic-cookie":            # a cookie is handed out, but only HTTP Basic is honoured
            self.st.basic_session(login)
            return text("success", COOKIE, "ignored", headers={"Set-Cookie": f"{COOKIE}=ignored; path=/"})
        s = self.st.new_session(login)
        cookie = {"Set-Cookie": f"{COOKIE}={s.cookie}; path=/; HttpOnly"}
        if how == "cookie":
            return text("success", headers=cookie)
        lines = ["success", COOKIE, s.cookie]
        if not self.st.peer.init_minimal:
            lines.append(f"sessid={s.sessid}")
        if typ == "catalog":
            lines.append(f"timestamp={int(time.time())}")
        return text(*lines, headers=cookie if how == "bitrix" else None)

    def _any_init(self, sess: Any, q: dict[str, str], body: bytes, typ: str, entry: dict[str, Any]) -> Response:
        st = self.st
        with st.lock:
            for k in [k for k in sess.files if k.startswith(typ + ":")]:   # clean the exchange folder
                del sess.files[k]
            sess.import_steps.clear()
            if q.get("version"):
                sess.version[typ] = q["version"]
            else:
                sess.version.pop(typ, None)
        lines = [f"zip={'yes' if st.zip else 'no'}", f"file_limit={st.file_limit}"]
        if q.get("version") and st.peer.session in ("bitrix", "body") and not st.peer.init_minimal:
            lines += [f"sessid={sess.sessid}", "version=2.09"]
        return text(*lines)

    def _sale_query(self, sess: Any, q: dict[str, str], body: bytes, typ: str, entry: dict[str, Any]) -> Response:
        enc = self.st.peer.export_encoding
        xml = export_orders(self.st, sess, encoding=enc)
        entry["answer"] = "<xml>"
        entry["exported"] = xml.count("<Документ>".encode(enc)) + xml.count("<Документ ".encode(enc))
        return Response(xml, headers={"Content-Type": self.st.peer.query_content_type})

    def _sale_success(self, sess: Any, q: dict[str, str], body: bytes, typ: str, entry: dict[str, Any]) -> Response:
        self.st.commit_export(sess)
        return text("success")

    def _any_file(self, sess: Any, q: dict[str, str], body: bytes, typ: str, entry: dict[str, Any]) -> Response:
        name = _clean_filename(q.get("filename", ""))
        if name is None:
            return text("failure", "Недопустимое имя файла")
        key = f"{typ}:{name}"
        st = self.st
        with st.lock:
            if st.peer.file_writes == "overwrite":     # each POST replaces the file (django-cml2: "wb")
                sess.files[key] = bytearray(body)
                entry["file_size"] = len(body)
                return text("success")
            buf = sess.files.setdefault(key, bytearray())
            if "offset" in q:              # sandbox extension: idempotent chunk retries
                try:
                    off = int(q["offset"])
                except ValueError:
                    return text("failure", "Неверное смещение")
                if off < len(buf):
                    if bytes(buf[off:off + len(body)]) == body and off + len(body) <= len(buf):
                        entry["duplicate_chunk"] = True
                        return text("success")
                    return text("failure", f"Часть файла не совпадает с уже полученной (смещение {off})")
                if off > len(buf):
                    return text("failure", f"Пропущена часть файла: ожидалось смещение {len(buf)}")
            buf.extend(body)
            entry["file_size"] = len(buf)
        if typ == "sale" and "sale" not in sess.version:
            # old protocol (no `version` at init): the file is imported at once
            return self._do_import(sess, key, typ)
        return text("success")

    def _any_import(self, sess: Any, q: dict[str, str], body: bytes, typ: str, entry: dict[str, Any]) -> Response:
        name = _clean_filename(q.get("filename", ""))
        if name is None:
            return text("failure", "Недопустимое имя файла")
        key = f"{typ}:{name}"
        st = self.st
        with st.lock:
            if key not in sess.files and self._unzip(sess, typ):
                return text("progress", "Распаковка архива")
            if key not in sess.files:
                return text("failure", f"Файл {name} не найден")
            step = sess.import_steps.get(key, 0) + 1
            sess.import_steps[key] = step
        if step <= st.import_steps:
            return text("progress", f"Шаг {step}: чтение файла {name}")
        with st.lock:
            sess.import_steps.pop(key, None)
        return self._do_import(sess, key, typ, entry)

    def _unzip(self, sess: Any, typ: str) -> bool:
        """Unpack the zip files 1C sent (zip=yes) into the exchange folder, as Bitrix does on import."""
        import io
        import zipfile
        done = False
        for key in [k for k, v in sess.files.items() if k.startswith(typ + ":") and bytes(v[:4]) == b"PK\x03\x04"]:
            try:
                with zipfile.ZipFile(io.BytesIO(bytes(sess.files[key]))) as z:
                    members = [m for m in z.infolist() if not m.is_dir()]
                    if sum(m.file_size for m in members) > 64 * 1024 * 1024:
                        continue                  # left in place: the import answers "not found"
                    for m in members:
                        name = _clean_filename(m.filename)
                        if name is not None:
                            sess.files[f"{typ}:{name}"] = bytearray(z.read(m))
            except zipfile.BadZipFile:
                continue
            del sess.files[key]
            done = True
        return done

    def _do_import(self, sess: Any, key: str, typ: str, entry: dict[str, Any] | None = None) -> Response:
        from syncd.sandbox.shop.xml import import_catalog, import_orders
        data = bytes(self.st.sessions[sess.cookie].files[key])
        try:
            if typ == "sale":
                res = import_orders(self.st, data)
            else:
                res = import_catalog(self.st, data)
        except Unreadable as e:
            return text("failure", f"Ошибка разбора файла: {e}")
        with self.st.lock:
            self.st.imports.append({"file": key, **res})
        if entry is not None:
            entry["imported"] = {k: v for k, v in res.items() if k != "errors"}
        if res["errors"]:
            return text("success", "Импорт завершен с ошибками: " + "; ".join(res["errors"]))
        return text("success", "Импорт завершен")

    def _sale_info(self, sess: Any, q: dict[str, str], body: bytes, typ: str, entry: dict[str, Any]) -> Response:
        from syncd.sandbox.shop.xml import info_document
        entry["answer"] = "<xml>"
        return Response(info_document(), headers={"Content-Type": "application/xml; charset=windows-1251"})

    def _catalog_deactivate(self, sess: Any, q: dict[str, str], body: bytes, typ: str,
                            entry: dict[str, Any]) -> Response:
        if not q.get("timestamp"):
            return text("failure", "Не указан timestamp")
        return text("success", "Деактивация завершена")

    def _catalog_complete(self, sess: Any, q: dict[str, str], body: bytes, typ: str,
                          entry: dict[str, Any]) -> Response:
        return text("success", "Обмен завершен")


# ---- control API -----------------------------------------------------------------------------------

class Control:
    def __init__(self, st: ShopState) -> None:
        self.st = st

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise ShopError("invalid JSON body") from None
        if not isinstance(data, dict):
            raise ShopError("JSON object expected")
        return data

    async def dispatch(self, request: Request) -> Response:
        parts = [p for p in request.path_params["path"].split("/") if p]
        m = request.method
        try:
            data = await self._body(request) if m in ("POST", "PATCH", "PUT") else {}
            st = self.st
            match (m, parts):
                case ("GET", ["state"]):
                    return _json(st.snapshot())
                case ("POST", ["reset"]):
                    with st.lock:
                        st.users.clear(), st.orders.clear(), st.products.clear(), st.sessions.clear()
                        st.log.clear(), st.imports.clear()
                        st.export_point = 0
                        st.secure = {"sale": False, "catalog": False}
                    return _json({"ok": True})
                case ("POST", ["seed"]):
                    return _json(seed_demo(st, n=int(data.get("n", 10)), seed=data.get("seed")))
                case ("GET", ["orders"]):
                    return _json([o.public() for o in st.orders.values()])
                case ("POST", ["orders"]):
                    o = st.place_order(**data)
                    return _json(o.public(), 201)
                case ("GET", ["orders", oid]):
                    return _json(st.order(int(oid)).public())
                case ("PATCH", ["orders", oid]):
                    return _json(st.edit_order(int(oid), **data).public())
                case ("POST", ["orders", oid, "pay"]):
                    return _json(st.pay(int(oid), data.get("amount")).public())
                case ("POST", ["orders", oid, "status"]):
                    return _json(st.set_status(int(oid), str(data.get("status", ""))).public())
                case ("PATCH", ["orders", oid, "dates"]):
                    return _json(st.backdate(int(oid), **data).public())
                case ("POST", ["orders", oid, "break"]):
                    return _json(st.edit_order(int(oid), broken=str(data.get("what", "date"))).public())
                case ("GET", ["orders", oid, "xml"]):
                    from syncd.sandbox.shop.xml import orders_document
                    return Response(orders_document(st, [st.order(int(oid))]),
                                    headers={"Content-Type": "application/xml; charset=windows-1251"})
                case ("GET", ["users"]):
                    return _json([u.public() for u in st.users.values()])
                case ("POST", ["users"]):
                    return _json(st.add_user(**data).public(), 201)
                case ("GET", ["users", uid]):
                    return _json(st.user(int(uid)).public())
                case ("PATCH", ["users", uid]):
                    return _json(st.edit_user(int(uid), **data).public())
                case ("GET", ["products"]):
                    return _json(st.snapshot()["products"])
                case ("POST", ["products"]):
                    p = st.add_product(str(data.pop("xml_id")), str(data.pop("name")), data.pop("price", 0),
                                       **data)
                    return _json({"xml_id": p.xml_id, "name": p.name, "price": str(p.price)}, 201)
                case ("GET", ["faults"]):
                    return _json(vars(st.faults))
                case ("PATCH", ["faults"]):
                    with st.lock:
                        for k, v in data.items():
                            if not hasattr(st.faults, k):
                                raise ShopError(f"unknown fault knob {k!r}")
                            setattr(st.faults, k, v)
                        if data.get("seed") is not None:
                            st.rng.seed(data["seed"])
                    return _json(vars(st.faults))
                case ("GET", ["settings"]):
                    return _json({"login": st.login, "file_limit": st.file_limit, "zip": st.zip,
                                  "import_steps": st.import_steps, "exchange_path": EXCHANGE_PATH})
                case ("PATCH", ["settings"]):
                    with st.lock:
                        for k in ("login", "password", "file_limit", "import_steps", "zip"):
                            if k in data:
                                setattr(st, k, data[k])
                    return _json({"ok": True})
                case ("GET", ["peer"]):
                    return _json(vars(st.peer))
                case ("PATCH", ["peer"]):
                    return _json(vars(st.set_peer(**data)))
                case ("GET", ["clock"]):
                    return _json(st.set_clock())
                case ("PATCH", ["clock"]):
                    bad = set(data) - {"offset", "advance", "now"}
                    if bad:
                        raise ShopError(f"unknown clock keys: {sorted(bad)} (offset, advance, now)")
                    return _json(st.set_clock(**data))
                case ("GET", ["rejections"]):
                    with st.lock:
                        return _json([r.view() for r in st.rejections])
                case ("POST", ["rejections"]):
                    return _json(st.add_rejection(**data).view(), 201)
                case ("DELETE", ["rejections"]):
                    return _json({"cleared": st.clear_rejections()})
                case ("DELETE", ["rejections", rid]):
                    n = st.clear_rejections(int(rid))
                    if not n:
                        raise ShopError(f"rejection {rid} not found", 404)
                    return _json({"cleared": n})
                case ("GET", ["log"]):
                    since = int(request.query_params.get("since", 0))
                    with st.lock:
                        return _json([e for e in st.log if e["n"] > since])
                case ("DELETE", ["log"]):
                    with st.lock:
                        st.log.clear()
                    return _json({"ok": True})
                case ("GET", ["imports"]):
                    with st.lock:
                        return _json(list(st.imports))
            raise ShopError(f"no such control call: {m} /_sandbox/{'/'.join(parts)}", 404)
        except ShopError as e:
            return _json({"error": str(e)}, e.status)
        except (TypeError, ValueError, KeyError) as e:
            return _json({"error": f"bad request: {e}"}, 400)


def create_app(state: ShopState | None = None) -> Starlette:
    """The sandbox shop as an ASGI app; the state is at ``app.state.shop``."""
    state = state or ShopState()
    quiet_dropped_answers()
    ex = Exchange(state)
    ctl = Control(state)
    app = Starlette(routes=[
        Route(EXCHANGE_PATH, ex.handle, methods=["GET", "POST"]),
        Route("/_sandbox/{path:path}", ctl.dispatch, methods=["GET", "POST", "PATCH", "DELETE"]),
    ])
    app.state.shop = state
    return app


__all__ = ["EXCHANGE_PATH", "Decimal", "create_app"]
