"""Sandbox state: portals, credentials, the leaky bucket, the request log, fault knobs, outbound events."""

from __future__ import annotations

import collections
import datetime as dt
import logging
import queue
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from syncd.sandbox.bitrix24.php import build_query

log = logging.getLogger("syncd.sandbox.bitrix24")

TZ = dt.timezone(dt.timedelta(hours=3))          # portal time zone (Moscow), as Bitrix prints it
RESERVED_NAMES = {"rest", "oauth", "_sandbox", ""}
ALL_SCOPES = ["crm", "task", "user", "user_brief", "im", "timeman", "department", "placement", "catalog",
              "telephony"]
DEFAULT_STAGES = [("NEW", "Новая", "P"), ("PREPARATION", "Подготовка документов", "P"),
                  ("PREPAYMENT_INVOICE", "Счёт на предоплату", "P"), ("EXECUTING", "В работе", "P"),
                  ("FINAL_INVOICE", "Финальный счёт", "P"), ("WON", "Сделка успешна", "S"),
                  ("LOSE", "Сделка провалена", "F")]


def now_bx(ts: float | None = None) -> str:
    """A datetime the way Bitrix prints it: ``2026-11-24T10:15:00+03:00``."""
    d = dt.datetime.fromtimestamp(time.time() if ts is None else ts, TZ).replace(microsecond=0)
    return d.isoformat()


class BxError(Exception):
    """A REST error: HTTP status + Bitrix error code + description."""

    def __init__(self, code: str, description: str = "", status: int = 400) -> None:
        super().__init__(code, description)
        self.code, self.description, self.status = code, description, status

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "error_description": self.description}


@dataclass
class Limits:
    enabled: bool = True
    leak_rate: float = 2.0          # requests drained per second
    burst: float = 50.0             # bucket size
    operating_limit: float = 480.0  # seconds of method "operating" time per 600 s window
    operating_window: float = 600.0
    operating_extra: float = 0.0    # seconds added to each call's operating time (to provoke 429)


@dataclass
class Faults:
    error_rate: float = 0.0              # share of requests answered with an error instead of processing
    error_statuses: tuple[int, ...] = (500, 503)
    error_html: bool = False             # answer errors with an HTML page (as a proxy does)
    latency: float = 0.0                 # seconds added to every REST answer
    timeout_rate: float = 0.0            # share of requests that sleep `timeout_sleep` before answering
    timeout_sleep: float = 65.0
    lost_answer_rate: float = 0.0        # the write is applied, then the answer is lost
    lost_answer_mode: str = "500"        # "500" (INTERNAL_SERVER_ERROR) or "drop" (truncated answer)
    fail_next: int = 0                   # deterministic: the next N requests get an error
    timeout_next: int = 0
    lost_next: int = 0
    access_denied: bool = False          # 403 ACCESS_DENIED (REST only on paid plans)
    methods: tuple[str, ...] = ()        # if set, faults apply only to requests carrying these (a batch too)
    seed: int | None = None


@dataclass
class Rejection:
    """A write the portal refuses until cleared (a validation rule, a locked record, a bad value).

    Matches calls of `method` (also inside `batch`) whose `id` is `record_id` (when given) and whose
    `fields` contain every pair of `fields` (values compared as text, keys case-insensitively).
    `times` None: every matching call until cleared; N: the next N matching calls.
    """

    id: int
    method: str
    record_id: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    status: int = 400
    error: str = "ERROR_CORE"
    description: str = "Поле заполнено неверно."
    times: int | None = None
    hits: int = 0

    def matches(self, method: str, params: dict[str, Any]) -> bool:
        if method.lower() != self.method.lower():
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        args = {str(k).lower(): v for k, v in params.items()}
        if self.record_id is not None:
            rid = args.get("id", args.get("taskid"))
            if str(rid) != self.record_id:
                return False
        if self.fields:
            given = args.get("fields")
            given = {str(k).upper(): v for k, v in given.items()} if isinstance(given, dict) else {}
            for k, v in self.fields.items():
                if str(given.get(k.upper(), "\0")) != str(v):
                    return False
        return True

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "method": self.method, "record_id": self.record_id, "fields": dict(self.fields),
                "status": self.status, "error": self.error, "error_description": self.description,
                "times": self.times, "hits": self.hits}


@dataclass
class Webhook:
    user_id: int
    code: str = field(repr=False)
    scopes: list[str]


@dataclass
class Token:
    user_id: int
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float
    scopes: list[str]
    refresh_valid: bool = True


@dataclass
class Handler:
    id: int
    event: str
    url: str
    application_token: str = field(repr=False)
    source: str = "outgoing_webhook"     # or "event.bind"
    auth_type: int = 0


class Portal:
    """One Bitrix24 portal: its data, credentials, limits, faults, handlers and request log."""

    def __init__(self, name: str, *, rate_limit: bool = True, domain: str | None = None,
                 leak_rate: float = 2.0, burst: float = 50.0) -> None:
        self.name = name
        self.domain = domain or f"{name}.bitrix24.ru"
        self.lock = threading.RLock()
        self.base_url = ""                   # last seen http(s)://host:port, for auth[client_endpoint]
        self.member_id = secrets.token_hex(16)
        self.client_id = f"local.{secrets.token_hex(7)}"
        self.client_secret = secrets.token_urlsafe(24)
        self.application_token = secrets.token_hex(16)   # the app's token (event.bind deliveries)
        self.limits = Limits(enabled=rate_limit, leak_rate=leak_rate, burst=burst)
        self.faults = Faults()
        self.rng = random.Random()
        self._bucket_level = 0.0
        self._bucket_ts = time.monotonic()
        self._operating: dict[tuple[str, str], collections.deque] = collections.defaultdict(collections.deque)
        self.log: collections.deque = collections.deque(maxlen=20000)
        self.per_second: collections.Counter = collections.Counter()
        self.limit_hits = 0
        self.requests_total = 0
        self.webhooks: list[Webhook] = []
        self.tokens: dict[str, Token] = {}           # access_token -> Token
        self.codes: dict[str, tuple[int, float, list[str]]] = {}   # authorization code -> (user, expiry, scopes)
        self.handlers: list[Handler] = []
        self._handler_seq = 0
        self.rejections: list[Rejection] = []
        self._rejection_seq = 0
        self.clock_offset = 0.0              # seconds the portal's clock is ahead of the real one
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self._stopping = False
        self.reset_data()
        self.users: dict[int, dict[str, Any]] = {}
        self.add_user("Администратор", "Портала", email=f"admin@{self.domain}", admin=True, online=True)
        self.webhooks.append(Webhook(1, secrets.token_hex(8), list(ALL_SCOPES)))

    # ---- data -------------------------------------------------------------------------------
    def reset_data(self) -> None:
        with self.lock:
            self.tables: dict[str, dict[int, dict[str, Any]]] = collections.defaultdict(dict)
            self.seq: collections.Counter = collections.Counter()
            self.product_rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
            self.categories: dict[int, dict[str, Any]] = {0: {"id": 0, "name": "Общая", "sort": 100,
                                                              "isDefault": "Y"}}
            self.stages: dict[int, list[dict[str, Any]]] = {0: [
                {"STATUS_ID": s, "NAME": n, "SEMANTICS": sem} for s, n, sem in DEFAULT_STAGES]}
            self.userfields: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
            self.notifications: list[dict[str, Any]] = []      # what users see (a tag replaces)
            self.notify_log: list[dict[str, Any]] = []         # every notice sent, replaced or not
            self.comments: list[dict[str, Any]] = []

    # ---- the portal's clock -------------------------------------------------------------------
    def now(self) -> float:
        """The portal's time (a test may move it: `clock_offset`); limits keep real time."""
        return time.time() + self.clock_offset

    def now_bx(self) -> str:
        return now_bx(self.now())

    def set_clock(self, *, offset: float | None = None, advance: float | None = None,
                  now: str | None = None) -> dict[str, Any]:
        with self.lock:
            if offset is not None:
                self.clock_offset = float(offset)
            if advance is not None:
                self.clock_offset += float(advance)
            if now is not None:
                d = dt.datetime.fromisoformat(now)
                d = d if d.tzinfo else d.replace(tzinfo=TZ)
                self.clock_offset = d.timestamp() - time.time()
            return {"now": self.now_bx(), "offset": round(self.clock_offset, 3)}

    # ---- permanent rejections ---------------------------------------------------------------
    def add_rejection(self, method: str, *, record_id: Any = None, fields: dict[str, Any] | None = None,
                      status: int = 400, error: str = "ERROR_CORE", description: str | None = None,
                      times: int | None = None) -> Rejection:
        with self.lock:
            self._rejection_seq += 1
            r = Rejection(self._rejection_seq, method, None if record_id is None else str(record_id),
                          {str(k).upper(): str(v) for k, v in (fields or {}).items()}, int(status), error,
                          description or "Поле заполнено неверно.", None if times is None else int(times))
            self.rejections.append(r)
            return r

    def check_rejection(self, method: str, params: dict[str, Any]) -> None:
        """Raise the configured error if a rejection matches this call (counted as a hit)."""
        with self.lock:
            for r in self.rejections:
                if r.matches(method, params):
                    r.hits += 1
                    raise BxError(r.error, r.description, r.status)

    def next_id(self, table: str) -> int:
        self.seq[table] += 1
        return self.seq[table]

    def add_user(self, name: str, last_name: str, *, email: str = "", position: str = "",
                 online: bool = False, workday: str = "CLOSED", active: bool = True,
                 admin: bool = False, phone_inner: str | None = None) -> dict[str, Any]:
        with self.lock:
            uid = max(self.users, default=0) + 1
            u = {"ID": str(uid), "ACTIVE": active, "NAME": name, "LAST_NAME": last_name, "SECOND_NAME": "",
                 "EMAIL": email or f"user{uid}@{self.domain}", "WORK_POSITION": position,
                 "UF_DEPARTMENT": [1], "UF_PHONE_INNER": phone_inner or None, "IS_ONLINE": "Y" if online else "N", "TIME_ZONE": "Europe/Moscow",
                 "USER_TYPE": "employee", "LAST_ACTIVITY_DATE": self.now_bx(), "DATE_REGISTER": self.now_bx(),
                 "_admin": admin, "_workday": workday,
                 "_workday_start": self.now_bx() if workday != "CLOSED" else None}
            self.users[uid] = u
            return u

    def set_presence(self, uid: int, *, online: bool | None = None, workday: str | None = None,
                     active: bool | None = None, phone_inner: Any = ...) -> dict[str, Any]:
        with self.lock:
            u = self.users[uid]
            if phone_inner is not ...:                   # the extension (UF_PHONE_INNER); None/"" clears it
                u["UF_PHONE_INNER"] = str(phone_inner) if phone_inner not in (None, "") else None
            if online is not None:
                u["IS_ONLINE"] = "Y" if online else "N"
                u["LAST_ACTIVITY_DATE"] = self.now_bx()
            if workday is not None:
                u["_workday"] = workday.upper()
                if u["_workday"] == "OPENED":
                    u["_workday_start"] = self.now_bx()
            if active is not None:
                u["ACTIVE"] = bool(active)
            return u

    def add_pipeline(self, name: str, stages: list[Any] | None = None, sort: int = 200) -> int:
        with self.lock:
            cid = max(self.categories) + 1
            self.categories[cid] = {"id": cid, "name": name, "sort": sort, "isDefault": "N"}
            rows = []
            for s in stages or [("NEW", "Новая", "P"), ("WON", "Сделка успешна", "S"),
                                ("LOSE", "Сделка провалена", "F")]:
                if isinstance(s, dict):
                    sid, sname, sem = s["id"], s.get("name", s["id"]), s.get("semantics", "P")
                else:
                    sid, sname, sem = s
                sid = sid.split(":", 1)[-1]
                rows.append({"STATUS_ID": f"C{cid}:{sid}", "NAME": sname, "SEMANTICS": sem})
            self.stages[cid] = rows
            return cid

    def add_userfield(self, entity: str, field_name: str, type_: str = "string", label: str = "",
                      multiple: bool = False, mandatory: bool = False) -> dict[str, Any]:
        with self.lock:
            entity = entity.lower()
            uf = {"ID": str(self.next_id("userfield")), "ENTITY_ID": f"CRM_{entity.upper()}",
                  "FIELD_NAME": field_name.upper(), "USER_TYPE_ID": type_, "XML_ID": None,
                  "SORT": "100", "MULTIPLE": "Y" if multiple else "N", "MANDATORY": "Y" if mandatory else "N",
                  "SHOW_FILTER": "E", "SHOW_IN_LIST": "Y", "EDIT_IN_LIST": "Y", "IS_SEARCHABLE": "N",
                  "SETTINGS": {}, "EDIT_FORM_LABEL": label or field_name, "LIST_COLUMN_LABEL": label or field_name,
                  "LIST_FILTER_LABEL": label or field_name}
            self.userfields[entity] = [u for u in self.userfields[entity] if u["FIELD_NAME"] != uf["FIELD_NAME"]]
            self.userfields[entity].append(uf)
            return uf

    # ---- credentials ------------------------------------------------------------------------
    def add_webhook(self, user_id: int = 1, scopes: list[str] | None = None) -> Webhook:
        with self.lock:
            w = Webhook(user_id, secrets.token_hex(8), list(scopes or ALL_SCOPES))
            self.webhooks.append(w)
            return w

    def find_webhook(self, user_id: str, code: str) -> Webhook | None:
        for w in self.webhooks:
            if str(w.user_id) == user_id and secrets.compare_digest(w.code, code):
                return w
        return None

    def issue_token(self, user_id: int = 1, scopes: list[str] | None = None, expires_in: float = 3600) -> Token:
        with self.lock:
            t = Token(user_id, secrets.token_hex(24), secrets.token_hex(24), time.time() + expires_in,
                      list(scopes or ALL_SCOPES))
            self.tokens[t.access_token] = t
            return t

    def token_answer(self, t: Token) -> dict[str, Any]:
        return {"access_token": t.access_token, "expires": int(t.expires_at),
                "expires_in": max(0, round(t.expires_at - time.time())), "scope": ",".join(t.scopes),
                "domain": self.domain, "server_endpoint": f"{self.base_url}/oauth/rest/",
                "client_endpoint": f"{self.base_url}{self.prefix}/rest/", "member_id": self.member_id,
                "user_id": t.user_id, "status": "L", "refresh_token": t.refresh_token}

    @property
    def prefix(self) -> str:
        return "" if self.name == "default" else f"/{self.name}"

    def expire_tokens(self) -> int:
        with self.lock:
            for t in self.tokens.values():
                t.expires_at = min(t.expires_at, time.time() - 1)
            return len(self.tokens)

    def refresh(self, refresh_token: str) -> Token | None:
        with self.lock:
            for t in list(self.tokens.values()):
                if t.refresh_valid and secrets.compare_digest(t.refresh_token, refresh_token):
                    t.refresh_valid = False
                    return self.issue_token(t.user_id, t.scopes)
            return None

    # ---- limits -----------------------------------------------------------------------------
    def bucket_admit(self) -> bool:
        """Leaky bucket: True if the request may pass (and then it fills the bucket by one)."""
        with self.lock:
            now = time.monotonic()
            lim = self.limits
            self._bucket_level = max(0.0, self._bucket_level - (now - self._bucket_ts) * lim.leak_rate)
            self._bucket_ts = now
            if not lim.enabled:
                return True
            if self._bucket_level + 1 > lim.burst:
                return False
            self._bucket_level += 1
            return True

    def operating_check(self, who: str, method: str) -> tuple[float, float]:
        """(operating seconds used in the window, reset-at) for this caller+method; raises 429 if over."""
        with self.lock:
            dq = self._operating[(who, method)]
            now = time.time()
            while dq and dq[0][0] < now - self.limits.operating_window:
                dq.popleft()
            used = sum(c for _, c in dq)
            reset_at = (dq[0][0] + self.limits.operating_window) if dq else now
            if self.limits.enabled and used >= self.limits.operating_limit:
                raise BxError("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", 429)
            return used, reset_at

    def operating_add(self, who: str, method: str, cost: float) -> tuple[float, float]:
        with self.lock:
            dq = self._operating[(who, method)]
            dq.append((time.time(), cost + self.limits.operating_extra))
            return sum(c for _, c in dq), dq[0][0] + self.limits.operating_window

    # ---- request log ------------------------------------------------------------------------
    def record(self, **entry: Any) -> None:
        with self.lock:
            entry.setdefault("ts", time.time())
            self.log.append(entry)
            if entry.get("kind", "rest") == "rest":
                self.requests_total += 1
                self.per_second[int(entry["ts"])] += 1
                if entry.get("error") == "QUERY_LIMIT_EXCEEDED":
                    self.limit_hits += 1

    def log_view(self, since: float = 0.0) -> dict[str, Any]:
        with self.lock:
            entries = [e for e in self.log if e["ts"] >= since]
            per = {str(k): v for k, v in sorted(self.per_second.items()) if k >= int(since)}
            return {"entries": entries, "per_second": per, "max_per_second": max(per.values(), default=0),
                    "requests": self.requests_total, "limit_hits": self.limit_hits,
                    "errors": collections.Counter(e["error"] for e in entries if e.get("error"))}

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()
            self.per_second.clear()
            self.limit_hits = 0
            self.requests_total = 0

    # ---- outbound events --------------------------------------------------------------------
    def add_handler(self, event: str, url: str, *, source: str = "outgoing_webhook",
                    application_token: str | None = None, auth_type: int = 0) -> Handler:
        with self.lock:
            self._handler_seq += 1
            h = Handler(self._handler_seq, event.upper(), url, application_token or self.application_token,
                        source, auth_type)
            self.handlers.append(h)
            return h

    def fire(self, event: str, entity_id: Any, extra: dict[str, Any] | None = None) -> None:
        """Queue deliveries of `event` to every handler bound to it (delivered from a background thread)."""
        with self.lock:
            targets = [h for h in self.handlers if h.event == event.upper()]
            if not targets:
                return
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._deliver_loop, name=f"b24-events:{self.name}",
                                                daemon=True)
                self._worker.start()
        fields = {"ID": str(entity_id), **(extra or {})}
        for h in targets:
            body = {"event": event.upper(), "event_handler_id": str(h.id), "data": {"FIELDS": fields},
                    "ts": str(int(self.now())),
                    "auth": {"domain": self.domain, "client_endpoint": f"{self.base_url}{self.prefix}/rest/",
                             "server_endpoint": f"{self.base_url}/oauth/rest/", "member_id": self.member_id,
                             "application_token": h.application_token}}
            if h.source == "event.bind":
                body["auth"].update({"scope": ",".join(ALL_SCOPES), "status": "L"})
            self._queue.put((h, body))

    def _deliver_loop(self) -> None:
        while not self._stopping:
            try:
                h, body = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            t0 = time.time()
            try:
                r = requests.post(h.url, data=build_query(body), timeout=10,
                                  headers={"Content-Type": "application/x-www-form-urlencoded",
                                           "User-Agent": "Bitrix24 Webhook Engine"})
                self.record(kind="event", ts=t0, event=body["event"], handler_id=h.id, url=h.url,
                            status=r.status_code, id=body["data"]["FIELDS"]["ID"])
            except Exception as e:  # noqa: BLE001 - a dead handler never takes the sandbox down
                self.record(kind="event", ts=t0, event=body["event"], handler_id=h.id, url=h.url,
                            status=None, error=type(e).__name__)
            finally:
                self._queue.task_done()

    def wait_events(self, timeout: float = 5.0) -> bool:
        """Block until queued deliveries are done (for tests)."""
        deadline = time.time() + timeout
        while self._queue.unfinished_tasks and time.time() < deadline:
            time.sleep(0.02)
        return not self._queue.unfinished_tasks

    def stop(self) -> None:
        self._stopping = True

    def info(self) -> dict[str, Any]:
        """Credentials and addresses; contains secrets — for the control API only, never logged."""
        w = self.webhooks[0]
        return {"portal": self.name, "domain": self.domain, "prefix": self.prefix,
                "user_id": w.user_id, "webhook_code": w.code,
                "webhook_path": f"{self.prefix}/rest/{w.user_id}/{w.code}/",
                "webhook_url": f"{self.base_url}{self.prefix}/rest/{w.user_id}/{w.code}/" if self.base_url else None,
                "application_token": self.application_token, "member_id": self.member_id,
                "client_id": self.client_id, "client_secret": self.client_secret,
                "token_url": f"{self.base_url}/oauth/token/" if self.base_url else "/oauth/token/"}


class SandboxState:
    """All portals of one sandbox. Thread-safe; a portal named ``default`` always exists."""

    def __init__(self, *, rate_limit: bool = True) -> None:
        self.lock = threading.RLock()
        self.portals: dict[str, Portal] = {}
        self.defaults = {"rate_limit": rate_limit}
        self.create_portal("default", rate_limit=rate_limit)

    def create_portal(self, name: str, **opts: Any) -> Portal:
        if name in RESERVED_NAMES or "/" in name:
            raise ValueError(f"portal name {name!r} is reserved")
        with self.lock:
            if name in self.portals:
                raise ValueError(f"portal {name!r} exists")
            opts.setdefault("rate_limit", self.defaults.get("rate_limit", True))
            p = Portal(name, **opts)
            self.portals[name] = p
            return p

    def portal(self, name: str = "default") -> Portal:
        with self.lock:
            return self.portals[name]

    def get(self, name: str) -> Portal | None:
        with self.lock:
            return self.portals.get(name)

    def delete_portal(self, name: str) -> None:
        with self.lock:
            p = self.portals.pop(name)
            p.stop()

    def find_token(self, access_token: str) -> tuple[Portal, Token] | None:
        with self.lock:
            for p in self.portals.values():
                t = p.tokens.get(access_token)
                if t:
                    return p, t
            return None

    def reset(self) -> None:
        with self.lock:
            for p in self.portals.values():
                p.stop()
            self.portals.clear()
            self.create_portal("default", rate_limit=self.defaults.get("rate_limit", True))
