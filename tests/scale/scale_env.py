"""The scale run of tests/scale/test_scale.py: `syncd run` subprocesses against the sandbox shop and a
sandbox Bitrix24 portal at its real limit, with lost answers, latency and kill -9.

Everything is done the way users and their peers do it:

- the portal is set up through its control API (the admin's UI): three sales managers, present (ids 2,
  3, 4, which the example rules name), the «PRO.Leads» pipeline (id 1, named by the example rules), the
  deal user fields the example mapping writes; the existing client base is typed in by the managers
  (`/ui/contact`, each contact assigned to the manager who made it);
- the shop gets its catalogue and its customers' orders through its control API (the checkout);
- syncd is the example mappings unchanged (`mappings/sync.toml`, `shop.toml`, `bitrix24.toml`,
  `rules.toml` with the notice to the responsible on every new deal: this portal's ids are the
  examples'), one config file per instance, each instance with its own `state_dir` (so its own
  instance name), run as ``python -m syncd.cli -c CONFIG run``;
- what is checked afterwards is read through the peers' public faces (the portal's REST API, the
  shop's and the portal's control APIs) and syncd's database (the outbox, review, quarantine).
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = REPO / "mappings"
MAPPING_FILES = ("sync.toml", "shop.toml", "bitrix24.toml", "rules.toml")

# the sales team as the example rules name them: users 2, 3 and 4 (user 1 is the portal's admin,
# whose inbound webhook syncd uses)
MANAGERS = [("Анна", "Смирнова", "Менеджер по продажам"), ("Игорь", "Петров", "Старший менеджер"),
            ("Ольга", "Кузнецова", "Руководитель отдела продаж")]
BIG_ORDER_MANAGER = 4                       # rules.toml: "big orders" (order.total >= 100000)
PRO_LEADS = [("NEW", "Новая заявка", "P"), ("QUALIFIED", "Квалифицирован", "P"),
             ("READY", "Готов к первому заказу", "P"), ("WON", "Первый заказ оплачен", "S"),
             ("LOSE", "Отказ", "F")]

PRODUCTS = [  # xml_id, name, price, sku
    ("9f1c2a10-0000-4c1e-8a00-000000000001", "Кружка керамическая 350 мл", "490", "KR-350"),
    ("9f1c2a10-0000-4c1e-8a00-000000000002", "Чайник заварочный стеклянный 1 л", "1290", "CH-1000"),
    ("9f1c2a10-0000-4c1e-8a00-000000000003", "Набор ложек чайных (6 шт.)", "650", "LZ-6"),
    ("9f1c2a10-0000-4c1e-8a00-000000000004", "Термос стальной 0,75 л", "1890", "TR-075"),
    ("9f1c2a10-0000-4c1e-8a00-000000000005", "Скатерть льняная 140×180", "2450", "SK-140"),
    ("9f1c2a10-0000-4c1e-8a00-000000000006", "Поднос бамбуковый", "780", "PD-B"),
]
SAMOVAR = ("9f1c2a10-0000-4c1e-8a00-000000000009", "Самовар электрический 5 л", "125000", "SM-5")

FIRST = ["Иван", "Анна", "Дмитрий", "Екатерина", "Павел", "Мария", "Сергей", "Ольга", "Алексей", "Наталья",
         "Михаил", "Татьяна", "Андрей", "Елена", "Николай", "Ирина"]
LAST = ["Петров", "Смирнов", "Кузнецов", "Орлов", "Соколов", "Волков", "Морозов", "Новиков", "Лебедев",
        "Козлов", "Зайцев", "Павлов", "Семёнов", "Голубев", "Виноградов", "Богданов"]
DELIVERY_ROW = "Доставка"                  # the connector's delivery_row (bitrix24 settings default)


def money(v: Any) -> Decimal:
    return Decimal(str(v)).quantize(Decimal("0.01"))


def qty(v: Any) -> Decimal:
    return Decimal(str(v)).normalize()


def _phone(n: int, style: int) -> str:
    """A mobile number (unique per n) as people type it, in one of several spellings."""
    d = f"{9160000000 + n:010d}"
    return [f"+7 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}", f"8 {d[:3]} {d[3:6]} {d[6:8]} {d[8:]}", f"+7{d}",
            f"8({d[:3]}){d[3:]}"][style % 4]


# ---- HTTP faces of the peers ----------------------------------------------------------------------

class PeerError(AssertionError):
    pass


class Portal:
    """The sandbox portal: its admin's UI (control API) and, for checking, its REST API."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.ctl_base = handle.url + "/_sandbox/default"
        self.webhook_url = str(handle.extra["webhook_url"])
        self.http = requests.Session()
        self.application_token = str(self.ctl("GET", "").get("application_token", ""))

    def ctl(self, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(method, self.ctl_base + path, json=body, timeout=60)
        if r.status_code >= 300:
            raise PeerError(f"portal control {method} {path} -> {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None

    def rest(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.http.post(self.webhook_url + method + ".json", json=params or {}, timeout=60)
        body = r.json()
        if "error" in body:
            raise PeerError(f"portal REST {method}: {r.status_code} {body}")
        return body

    def list_all(self, method: str, select: list[str],
                 flt: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every record of a list method (ID ascending, `>ID` paging, start=-1: no counting)."""
        out: list[dict[str, Any]] = []
        last = 0
        while True:
            rows = self.rest(method, {"filter": {**(flt or {}), ">ID": last}, "select": select,
                                      "order": {"ID": "ASC"}, "start": -1})["result"]
            out += rows
            if len(rows) < 50:
                return out
            last = int(rows[-1]["ID"])

    def batch(self, cmds: dict[str, str]) -> dict[str, Any]:
        """`batch` calls of up to 50 commands; the results of all of them by key (errors raise)."""
        out: dict[str, Any] = {}
        items = list(cmds.items())
        for i in range(0, len(items), 50):
            res = self.rest("batch", {"halt": 0, "cmd": dict(items[i:i + 50])})["result"]
            if res.get("result_error"):
                raise PeerError(f"batch errors: {res['result_error']}")
            out.update(res.get("result") or {})
        return out


class Shop:
    """The sandbox shop: its admin's and its customers' browser (control API)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.base = handle.url + "/_sandbox"
        self.http = requests.Session()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(method, self.base + path, json=body, timeout=60)
        if r.status_code >= 300:
            raise PeerError(f"shop control {method} {path} -> {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None


# ---- the shop's customers and what they buy -------------------------------------------------------

@dataclass
class Buyer:
    index: int                           # makes the phone number
    form: dict[str, Any]                 # the checkout form (person)
    email: str                           # lower case: how syncd and the shop compare it
    contact_id: int | None = None        # an existing CRM contact (typed in by a manager)
    manager: int | None = None           # that contact's responsible


@dataclass
class OrderPlan:
    buyer: Buyer
    items: list[tuple[str, int]]
    delivery_price: int


def make_world_plan(rng: random.Random, n_orders: int) -> tuple[list[Buyer], list[OrderPlan]]:
    """Buyers and orders: ~15 % from clients the CRM already has (typed in by managers, the e-mail in
    another case and the phone in another spelling than at checkout), ~35 % from the shop's repeat
    customers (2–6 orders each), the rest from new one-off buyers. ~3 % of the orders are big (a
    samovar: ≥ 100,000 ₽, the "big orders" rule's)."""
    known_n = max(1, n_orders * 15 // 100 // 2)          # each known client orders ~2 times
    buyers: list[Buyer] = []

    def person(i: int, email: str) -> dict[str, Any]:
        return {"kind": "person", "last_name": LAST[i % len(LAST)],
                "first_name": FIRST[(i // 3) % len(FIRST)], "email": email, "phone": _phone(i, i),
                "address": f"Москва, ул. Лесная, д. {i % 90 + 1}"}

    known = []
    for j in range(known_n):
        email = f"client{j:04d}@mail.example"
        b = Buyer(j, person(j, email), email, manager=2 + j % 3)
        known.append(b)
        buyers.append(b)
    plan_buyers: list[Buyer] = []
    for b in known:
        plan_buyers += [b] * rng.choice([1, 2, 2, 3])
    nxt = known_n
    while len(plan_buyers) < n_orders * 50 // 100:      # repeat customers until ~half the orders
        email = f"repeat{nxt:05d}@example.ru"
        b = Buyer(nxt, person(nxt, email), email)
        buyers.append(b)
        plan_buyers += [b] * rng.randint(2, 6)
        nxt += 1
    while len(plan_buyers) < n_orders:                   # one-off new buyers
        email = f"buyer{nxt:05d}@example.ru"
        b = Buyer(nxt, person(nxt, email), email)
        buyers.append(b)
        plan_buyers.append(b)
        nxt += 1
    plan_buyers = plan_buyers[:n_orders]
    rng.shuffle(plan_buyers)
    orders = []
    for b in plan_buyers:
        picks = rng.sample(PRODUCTS, k=rng.randint(1, 3))
        items = [(p[0], rng.choice([1, 1, 1, 2, 3])) for p in picks]
        if rng.random() < 0.03:
            items.append((SAMOVAR[0], 1))
        orders.append(OrderPlan(b, items, rng.choice([0, 0, 300, 450])))
    return buyers, orders


# ---- syncd instances ------------------------------------------------------------------------------

ADMIN_TOKEN = "scale-admin-token-7f3a9c"


def write_config(state_dir: Path, database_url: str, shop_h: Any, portal: Portal, port: int) -> Path:
    """One instance's config.toml: the example mappings unchanged, the peers' addresses, an admin
    token (the operator's "poll now" at the end), config.example.toml's schedule for the CRM streams
    and the shop's orders every 10 s (a shop that wants its orders in the CRM quickly), everything
    else the defaults (push.claim_ttl 30 s, daemon.lease_ttl 120 s, rules_interval 60 s…)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    patterns = [str(MAPPINGS / n) for n in MAPPING_FILES]
    lines = ["[daemon]", f"database_url = {json.dumps(database_url)}", f'listen = "127.0.0.1:{port}"',
             f'admin_token = "{ADMIN_TOKEN}"',
             f"mappings = {json.dumps(patterns)}", f"state_dir = {json.dumps(str(state_dir))}",
             "push_interval = 2.0", 'log_format = "json"', 'log_level = "info"', "",
             "[systems.shop]", 'type = "shop"', f'url = "{shop_h.extra["exchange_url"]}"',
             f'login = "{shop_h.extra["login"]}"', f'password = "{shop_h.extra["password"]}"', "",
             "[systems.crm]", 'type = "bitrix24"', f'webhook_url = "{portal.webhook_url}"',
             f'application_token = "{portal.application_token}"', ""]
    for system, stream, every in (("shop", "orders", "10s"), ("crm", "deals", "2m"),
                                  ("crm", "contacts", "5m"), ("crm", "companies", "10m")):
        lines += ["[[jobs]]", f'system = "{system}"', f'stream = "{stream}"', f'every = "{every}"', ""]
    path = state_dir / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class Instance:
    """One `syncd run` process (restarted with the same config after each kill)."""

    def __init__(self, name: str, config: Path, port: int) -> None:
        self.name, self.config, self.url = name, config, f"http://127.0.0.1:{port}"
        self.log = config.parent / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ)
        paths = [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        with open(self.log, "ab") as out:
            out.write(f"--- start {self.starts + 1} at {dt.datetime.now().isoformat()} ---\n".encode())
            out.flush()
            self.proc = subprocess.Popen([sys.executable, "-m", "syncd.cli", "-c", str(self.config), "run"],
                                         cwd=str(self.config.parent), env=env, stdout=out, stderr=out)
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL if it does not end): the process's exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def poll(self, system: str, stream: str) -> bool:
        """The operator's "poll this stream now" (POST /admin/poll/…); False when it did not answer."""
        try:
            r = requests.post(f"{self.url}/admin/poll/{system}/{stream}", timeout=10,
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            return r.status_code < 300
        except requests.RequestException:
            return False

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def log_problems(self, limit: int = 15) -> list[str]:
        """Error and warning lines of the log (JSON lines), and tracebacks."""
        out = []
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return out
        for line in text:
            if '"level": "error"' in line or '"level":"error"' in line or "Traceback" in line:
                out.append(line[:400])
        return out[:limit]


# ---- syncd's database ---------------------------------------------------------------------------

class Db:
    """Read-only looks into syncd's database (what `/stats` counts), from the test process."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine

        from syncd.store.db import normalize_url

        self.url = url
        self.engine = create_engine(normalize_url(url), pool_pre_ping=True)

    strict = False                        # after the run: a failing query is an error, not "nothing"

    def q(self, sql: str, **kw: Any) -> list[tuple[Any, ...]]:
        from sqlalchemy import text

        try:
            with self.engine.connect() as c:
                return [tuple(r) for r in c.execute(text(sql), kw)]
        except Exception:  # noqa: BLE001 - not created or migrated yet, or SQLite busy this instant
            if self.strict:
                raise
            return []

    def outbox(self) -> dict[str, int]:
        return {f"{s}/{sy}/{t}": int(n) for s, sy, t, n in self.q(
            "SELECT status, system, entity_type, COUNT(*) FROM outbox GROUP BY status, system, entity_type")}

    def outbox_by_status(self) -> dict[str, int]:
        return {str(s): int(n) for s, n in self.q("SELECT status, COUNT(*) FROM outbox GROUP BY status")}

    def open_writes(self) -> int:
        r = self.q("SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'sending', 'blocked', 'dead')")
        return int(r[0][0]) if r else -1

    def orders_with_deals(self) -> tuple[int, int]:
        """(shop orders syncd has, of which bound to a CRM deal)."""
        a = self.q("SELECT COUNT(*) FROM bindings WHERE system = 'shop' AND type = 'order'")
        b = self.q("SELECT COUNT(*) FROM bindings s JOIN bindings c ON c.entity_id = s.entity_id "
                   "AND c.system = 'crm' AND c.type = 'order' WHERE s.system = 'shop' AND s.type = 'order'")
        return (int(a[0][0]) if a else 0, int(b[0][0]) if b else 0)

    def unsettled_detail(self, limit: int = 12) -> list[tuple[Any, ...]]:
        return self.q("SELECT id, status, system, entity_type, op, attempts, blocked_why, claimed_by, "
                      "substr(COALESCE(last_error, ''), 1, 300) FROM outbox WHERE status IN "
                      "('pending', 'sending', 'blocked', 'dead') ORDER BY id LIMIT :n", n=limit)

    def last_runs(self) -> dict[str, str]:
        """Per stream: when its last run started and how it stands (a stream not polled for long shows)."""
        rows = self.q("SELECT r.system, r.stream, r.started_at, r.status, r.instance FROM runs r JOIN "
                      "(SELECT system, stream, MAX(started_at) AS m FROM runs GROUP BY system, stream) x "
                      "ON x.system = r.system AND x.stream = r.stream AND x.m = r.started_at")
        return {f"{sy}/{st}": f"{str(at)[11:19]} {status} ({inst})" for sy, st, at, status, inst in rows}

    def last_run(self, system: str, stream: str) -> tuple[dt.datetime | None, bool, str, str]:
        """(started, finished, status, error) of a stream's latest run."""
        r = self.q("SELECT started_at, finished_at, status, COALESCE(error, '') FROM runs WHERE system = :s "
                   "AND stream = :st ORDER BY started_at DESC LIMIT 1", s=system, st=stream)
        if not r:
            return None, False, "", ""
        started, finished, status, error = r[0]
        if isinstance(started, str):
            started = dt.datetime.fromisoformat(started)
        if started is not None and started.tzinfo is None:
            started = started.replace(tzinfo=dt.timezone.utc)
        return started, finished is not None, str(status), str(error)

    def finished_since(self, system: str, stream: str, since: dt.datetime) -> bool:
        """Has a run of the stream that started at or after `since` finished?"""
        rows = self.q("SELECT started_at, finished_at FROM runs WHERE system = :s AND stream = :st "
                      "ORDER BY started_at DESC LIMIT 50", s=system, st=stream)
        for started, finished in rows:
            if isinstance(started, str):
                started = dt.datetime.fromisoformat(started)
            if started is not None and started.tzinfo is None:
                started = started.replace(tzinfo=dt.timezone.utc)
            if started is not None and started >= since and finished is not None:
                return True
        return False

    def open_items(self) -> dict[str, list[tuple[Any, ...]]]:
        return {"review": self.q("SELECT id, type, reason FROM review WHERE status = 'open'"),
                "quarantine": self.q("SELECT id, system, kind, reason FROM quarantine WHERE status = 'open'"),
                "conflicts": self.q("SELECT id, entity_id, field FROM conflicts WHERE status = 'open'")}

    def close(self) -> None:
        self.engine.dispose()


# ---- the run --------------------------------------------------------------------------------------

@dataclass
class Figures:
    database: str
    orders: int
    instances: int
    kills: list[str] = field(default_factory=list)
    seconds: float = 0.0
    placed_s: float = 0.0
    settled_s: float = 0.0
    requests: int = 0
    lost_answers: int = 0
    limit_hits: int = 0
    batch_commands: int = 0
    notices_sent: int = 0
    contacts: int = 0
    deals: int = 0
    stop_exit_codes: list[int | None] = field(default_factory=list)
    methods: dict[str, int] = field(default_factory=dict)      # portal requests by method (batch: its first)

    def line(self) -> str:
        settled = f"settled {self.settled_s:.0f} s after the start" if self.settled_s else "NOT settled"
        top = ", ".join(f"{m} {n}" for m, n in list(self.methods.items())[:6])
        return (f"scale [{self.database}]: {self.orders} orders -> {self.deals} deals, {self.contacts} "
                f"contacts; {self.instances} instance(s), {len(self.kills)} kill -9; {settled} "
                f"({self.seconds:.0f} s in all); portal: {self.requests} requests ({self.batch_commands} "
                f"commands in batches; {top}), {self.lost_answers} answers lost, {self.limit_hits} limit "
                f"hits; {self.notices_sent} notices sent")


class ScaleRun:
    """One database's run: peers, orders, instances, kills, then the checks."""

    def __init__(self, tmp: Path, database_url: str, *, label: str, instances: int, orders: int,
                 backlog: int, kills: int, seed: int = 20, kill_gap: tuple[float, float] = (6.0, 16.0),
                 order_rate: float = 12.0, deadline: float = 900.0) -> None:
        self.tmp, self.database_url, self.label = tmp, database_url, label
        self.n_instances, self.n_orders, self.backlog, self.n_kills = instances, orders, backlog, kills
        self.rng = random.Random(seed)
        self.kill_rng = random.Random(seed + 1)
        self.kill_gap, self.order_rate, self.deadline = kill_gap, order_rate, deadline
        self.not_settled: str | None = None       # the state when the work did not settle in time
        self.stop_requested = False               # the test is being torn down: stop driving
        self.fig = Figures(label, orders, instances)
        self.shop_h: Any = None
        self.b24_h: Any = None
        self.instances: list[Instance] = []
        self.db: Db | None = None

    # -- peers ----------------------------------------------------------------------------------
    def start_peers(self) -> None:
        from syncd.sandbox import bitrix24, shop

        self.t_begin = time.monotonic()
        self.b24_h = bitrix24.start(rate_limit=True)
        self.shop_h = shop.start()
        self.portal, self.shop = Portal(self.b24_h), Shop(self.shop_h)
        for name, last, position in MANAGERS:
            u = self.portal.ctl("POST", "/users", {"name": name, "last_name": last, "position": position,
                                                   "email": f"{name.lower()}@portal.example", "online": True,
                                                   "workday": "OPENED"})
            assert int(u["ID"]) == 2 + MANAGERS.index((name, last, position)), u
        pid = self.portal.ctl("POST", "/pipelines", {"name": "PRO.Leads", "stages": [
            {"id": i, "name": n, "semantics": s} for i, n, s in PRO_LEADS]})["id"]
        assert int(pid) == 1, pid
        for entity, fname, type_, label in (
                ("deal", "UF_CRM_FROM_SHOP", "boolean", "Магазин"),
                ("deal", "UF_CRM_SHOP_ORDER", "string", "Номер заказа в магазине")):
            self.portal.ctl("POST", "/userfields", {"entity": entity, "field_name": fname, "type": type_,
                                                    "label": label})
        for p in PRODUCTS + [SAMOVAR]:
            self.shop.call("POST", "/products", {"xml_id": p[0], "name": p[1], "price": p[2], "sku": p[3]})
        self.buyers, self.plan = make_world_plan(self.rng, self.n_orders)
        # the client base the managers typed in before syncd: e-mail in capitals, phone spelled otherwise
        for b in self.buyers:
            if b.manager is None:
                continue
            f = b.form
            typed = b.email.capitalize().replace("@mail", "@Mail")
            fields = {"NAME": f["first_name"], "LAST_NAME": f["last_name"], "OPENED": "Y",
                      "TYPE_ID": "CLIENT", "ASSIGNED_BY_ID": b.manager, "SOURCE_ID": "CALL",
                      "EMAIL": [{"VALUE": typed, "VALUE_TYPE": "WORK"}],
                      "PHONE": [{"VALUE": _phone(b.index, b.index + 1), "VALUE_TYPE": "MOBILE"}]}
            made = self.portal.ctl("POST", "/ui/contact", {"fields": fields, "user_id": b.manager})
            b.contact_id = int(made["id"])
        # the real cloud portal: 2 requests/s, a bucket of 50; 200 ms latency, 5 % answers lost after
        # the portal did the work
        self.portal.ctl("PATCH", "/limits", {"enabled": True, "leak_rate": 2.0, "burst": 50})
        self.portal.ctl("PATCH", "/faults", {"latency": 0.2, "lost_answer_rate": 0.05,
                                             "lost_answer_mode": "500", "seed": 7})
        self.portal.ctl("DELETE", "/log")

    def place(self, p: OrderPlan) -> None:
        body = {"user": p.buyer.form, "items": [{"product_id": x, "quantity": q} for x, q in p.items],
                "delivery_price": p.delivery_price}
        self.shop.call("POST", "/orders", body)

    # -- instances ------------------------------------------------------------------------------
    def start_instances(self) -> None:
        from syncd.sandbox.server import free_port

        for k in range(self.n_instances):
            port = free_port()
            cfg = write_config(self.tmp / f"instance-{k + 1}", self.database_url, self.shop_h, self.portal,
                               port)
            self.instances.append(Instance(f"instance-{k + 1}", cfg, port))
        for inst in self.instances:          # in the same second, on a database nobody made yet
            inst.start()
        self.db = Db(self.database_url)

    def _check_alive(self) -> None:
        if self.stop_requested:
            raise RuntimeError(f"[{self.label}] stopped: the test is being torn down")
        for inst in self.instances:
            if not inst.alive():
                code = inst.proc.returncode if inst.proc else None
                raise AssertionError(f"[{self.label}] {inst.name} exited by itself (code {code}); its log:\n"
                                     f"{inst.tail()}")

    def _kill_one(self) -> None:
        inst = self.kill_rng.choice(self.instances)
        assert self.db is not None
        sending = self.db.outbox_by_status().get("sending", 0)
        inst.kill9()
        self.fig.kills.append(f"{inst.name}@{time.monotonic() - self.t0:.0f}s(sending={sending})")
        time.sleep(self.kill_rng.uniform(0.0, 1.5))
        inst.start()

    POLLED = (("shop", "orders"), ("crm", "deals"), ("crm", "contacts"))

    def _poll_all(self, timeout: float = 180.0) -> None:
        """Poll every stream now and wait until a run of each that started after the request ended
        (asked of every instance: the one that holds a stream's lease at that moment runs it)."""
        assert self.db is not None
        since = dt.datetime.now(dt.timezone.utc)
        waiting = set(self.POLLED)
        deadline = time.monotonic() + timeout
        asked = 0.0
        while waiting:
            if time.monotonic() - asked > 60:
                # asked again only now and then: a poll asked while a run reads makes that run go
                # once more, so asking every few seconds would keep a slow stream running for ever
                for inst in self.instances:
                    for system, stream in waiting:
                        inst.poll(system, stream)
                asked = time.monotonic()
            time.sleep(1.0)
            for system, stream in list(waiting):
                # any run that started after the ask and ended (a later one may be running already)
                if self.db.finished_since(system, stream, since):
                    waiting.discard((system, stream))
            if time.monotonic() > deadline:
                self.not_settled = (f"streams {sorted(waiting)} not polled within {timeout:.0f} s of "
                                    f"asking: {self._state()}")
                return

    def _settled(self) -> bool:
        assert self.db is not None
        have, with_deal = self.db.orders_with_deals()
        return have == self.n_orders and with_deal == self.n_orders and self.db.open_writes() == 0

    def _state(self) -> str:
        assert self.db is not None
        have, with_deal = self.db.orders_with_deals()
        return (f"shop orders in syncd {have}/{self.n_orders}, with a deal {with_deal}; outbox "
                f"{self.db.outbox()}; first unsettled writes {self.db.unsettled_detail()}; open "
                f"{self.db.open_items()}; last run of each stream (UTC) {self.db.last_runs()}")

    def drive(self) -> None:
        """Place the backlog, start the instances, place the rest while they work and kill -9 one at
        random moments; then wait until everything settled (and stays so)."""
        for p in self.plan[:self.backlog]:
            self.place(p)
        self.t0 = time.monotonic()
        self.start_instances()
        rest = self.plan[self.backlog:]
        next_kill = self.t0 + self.kill_rng.uniform(*self.kill_gap)
        placed_at = self.t0
        while rest or len(self.fig.kills) < self.n_kills:
            now = time.monotonic()
            self._check_alive()
            due = int((now - placed_at) * self.order_rate)
            if rest and due:
                for p in rest[:due]:
                    self.place(p)
                rest = rest[due:]
                placed_at = now
                if not rest:
                    self.fig.placed_s = now - self.t0
            if len(self.fig.kills) < self.n_kills and now >= next_kill:
                self._kill_one()
                next_kill = time.monotonic() + self.kill_rng.uniform(*self.kill_gap)
            time.sleep(0.2)
        # every order placed, every kill done: wait until the work is done (at most until the deadline;
        # then the checks still run, so one run shows everything that went wrong)
        while not self._settled():
            self._check_alive()
            if time.monotonic() - self.t0 > self.deadline:
                errors = {i.name: i.log_problems(5) for i in self.instances}
                self.not_settled = (f"not settled {self.deadline:.0f} s after the start: {self._state()}; "
                                    f"instances' errors: {errors}")
                break
            time.sleep(1.0)
        else:
            self.fig.settled_s = time.monotonic() - self.t0
            # and it stays settled when every stream is read once more (the deals and contacts syncd
            # wrote read back: no echo, nothing new to write): the operator's "poll now"
            self._poll_all()
            self._check_alive()
            if not self.not_settled and not self._settled():
                self.not_settled = f"settled, then not any more after a poll of every stream: {self._state()}"
        for inst in self.instances:
            self.fig.stop_exit_codes.append(inst.stop())

    # -- checks ---------------------------------------------------------------------------------
    def check(self) -> None:
        """What a user checks, through the peers' public APIs and syncd's database. Every check runs;
        the test fails once, listing each that did not hold."""
        assert self.db is not None
        self.db.strict = True
        problems: list[str] = []

        def expect(ok: bool, what: str, details: list[str] | None = None) -> None:
            if not ok:
                details = details or []
                more = [f"… {len(details) - 20} more"] if len(details) > 20 else []
                problems.append("".join([what] + [f"\n      {d}" for d in details[:20] + more]))

        if self.not_settled:
            problems.append(self.not_settled)
        # the portal's own account of the run, before the checks' reads add to it
        log = self.portal.ctl("GET", "/log")
        self.fig.requests = int(log["requests"])
        self.fig.limit_hits = int(log["limit_hits"])
        entries = [e for e in log["entries"] if e.get("kind", "rest") == "rest"]
        self.fig.lost_answers = sum(1 for e in entries if e.get("fault") == "lost_answer")
        self.fig.batch_commands = sum(int(e.get("commands") or 0) for e in entries)
        self.fig.methods = dict(collections.Counter(
            e["method"] + (":" + e["batch_methods"][0] if e.get("batch_methods") else "") for e in entries
        ).most_common())
        # the checks read at full speed, without faults
        self.portal.ctl("PATCH", "/limits", {"enabled": False})
        self.portal.ctl("PATCH", "/faults", {"latency": 0, "lost_answer_rate": 0})

        # nothing waits in syncd: no write pending, sending, blocked or dead; no review, quarantine, conflict
        unsettled = {s: n for s, n in self.db.outbox_by_status().items() if s != "done"}
        expect(not unsettled, f"outbox not settled after the run: {self.db.outbox()}",
               [str(r) for r in self.db.unsettled_detail()])
        for kind, rows in self.db.open_items().items():
            expect(not rows, f"{len(rows)} open {kind} items after the run", [str(r) for r in rows])
        for system, stream in self.POLLED:
            _, _, status, error = self.db.last_run(system, stream)
            expect(status == "ok",
                   f"the last run of {system}/{stream} is {status or 'missing'}: {error[:300]}")
        expect(all(c == 0 for c in self.fig.stop_exit_codes),
               f"instances stopped with SIGTERM exited {self.fig.stop_exit_codes}, not 0")
        expect(self.fig.limit_hits == 0,
               f"the portal refused {self.fig.limit_hits} of {self.fig.requests} requests "
               f"(QUERY_LIMIT_EXCEEDED): the instances went over its 2 requests/s")

        orders = {str(o["xml_id"]): o for o in self.shop.call("GET", "/orders")}
        assert len(orders) == self.n_orders, (len(orders), self.n_orders)
        users = {int(u["id"]): u for u in self.shop.call("GET", "/users")}
        known = {b.email: b for b in self.buyers if b.contact_id is not None}
        email_of = {x: str(users[int(o["user_id"])]["email"]).strip().lower() for x, o in orders.items()}

        deals = self.portal.list_all("crm.deal.list", [
            "ID", "TITLE", "ORIGINATOR_ID", "ORIGIN_ID", "CONTACT_ID", "ASSIGNED_BY_ID", "OPPORTUNITY",
            "CATEGORY_ID", "STAGE_ID", "UF_CRM_SHOP_ORDER"])
        contacts = self.portal.list_all("crm.contact.list", ["ID", "NAME", "LAST_NAME", "EMAIL", "PHONE",
                                                             "ASSIGNED_BY_ID", "ORIGIN_ID"])
        self.fig.deals, self.fig.contacts = len(deals), len(contacts)

        # every order is exactly one deal (ORIGIN_ID = the order's Ид, the order number in its field)
        by_origin: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for d in deals:
            by_origin[str(d.get("ORIGIN_ID") or "")].append(d)
        missing = sorted((x for x in orders if x not in by_origin), key=int)
        doubled = {x: [d["ID"] for d in ds] for x, ds in by_origin.items() if x in orders and len(ds) > 1}
        strays = [f"deal {d['ID']} ORIGIN_ID={x!r}" for x, ds in by_origin.items() if x not in orders
                  for d in ds]
        expect(not missing, f"{len(missing)} orders have no deal", missing)
        expect(not doubled, f"{len(doubled)} orders have more than one deal",
               [f"order {x}: deals {ids}" for x, ids in doubled.items()])
        expect(not strays, f"{len(strays)} deals are no order's", strays)

        # contacts: one per e-mail; a client the CRM had is that contact, never a second one
        by_email: dict[str, list[str]] = collections.defaultdict(list)
        contact_emails: dict[str, set[str]] = {}
        for c in contacts:
            emails = {str(e.get("VALUE") if isinstance(e, dict) else e).strip().lower()
                      for e in c.get("EMAIL") or []}
            contact_emails[str(c["ID"])] = emails
            for e in emails:
                by_email[e].append(str(c["ID"]))
        shared = {e: ids for e, ids in by_email.items() if len(ids) > 1}
        expect(not shared, f"{len(shared)} e-mails are shared by several contacts (duplicate contacts)",
               [f"{e}: contacts {ids}" + (f" (the client's own is {known[e].contact_id})"
                                           if e in known else "") for e, ids in shared.items()])
        buyers_seen = set(email_of.values())
        expect(len(contacts) == len(buyers_seen | set(known)),
               f"{len(contacts)} contacts for {len(buyers_seen)} buyers and {len(known)} clients the CRM had "
               f"({len(buyers_seen | set(known))} people)")

        # rows, sums, contact and responsible of each deal
        rows = self.portal.batch({f"r{d['ID']}": f"crm.deal.productrows.get?id={d['ID']}" for d in deals})
        wrong_rows, wrong_sum, wrong_contact, wrong_resp, wrong_keys = [], [], [], [], []
        resp_of: dict[str, int] = {}
        for x, o in orders.items():
            if x not in by_origin:
                continue
            d = by_origin[x][0]
            num = str(o["number"])
            if str(d.get("UF_CRM_SHOP_ORDER") or "") != num or str(d.get("ORIGINATOR_ID")) != "shop":
                wrong_keys.append(f"order {num}: deal {d['ID']} UF_CRM_SHOP_ORDER="
                                  f"{d.get('UF_CRM_SHOP_ORDER')!r} ORIGINATOR_ID={d.get('ORIGINATOR_ID')!r}")
            want = collections.Counter((i["name"], money(i["price"]), qty(i["quantity"])) for i in o["items"])
            if money(o["delivery_price"]) > 0:
                want[(DELIVERY_ROW, money(o["delivery_price"]), qty(1))] += 1
            got = collections.Counter((r["PRODUCT_NAME"], money(r["PRICE"]), qty(r["QUANTITY"]))
                                      for r in rows.get(f"r{d['ID']}") or [])
            if got != want:
                wrong_rows.append(f"order {num}: deal {d['ID']} rows {sorted(got.items())} != lines "
                                  f"{sorted(want.items())}")
            if money(d.get("OPPORTUNITY") or 0) != money(o["total"]):
                wrong_sum.append(f"order {num}: deal {d['ID']} OPPORTUNITY {d.get('OPPORTUNITY')} != "
                                 f"{o['total']}")
            email = email_of[x]
            cid = str(d.get("CONTACT_ID") or "")
            if email in known:
                if cid != str(known[email].contact_id):
                    wrong_contact.append(f"order {num}: deal {d['ID']} contact {cid or '-'}, not the "
                                         f"client's existing contact {known[email].contact_id} ({email})")
            elif email not in contact_emails.get(cid, set()):
                wrong_contact.append(f"order {num}: deal {d['ID']} contact {cid or '-'} "
                                     f"({sorted(contact_emails.get(cid, set()))}) is not the buyer {email}")
            who = int(d.get("ASSIGNED_BY_ID") or 0)
            resp_of[num] = who
            if who not in (2, 3, 4):
                wrong_resp.append(f"order {num}: deal {d['ID']} responsible {who}, not one of the "
                                  f"managers 2, 3, 4")
            elif money(o["total"]) >= 100000 and who != BIG_ORDER_MANAGER:
                wrong_resp.append(f"order {num}: a big order ({o['total']}) with responsible {who}, not "
                                  f"{BIG_ORDER_MANAGER} (rule 'big orders')")
        expect(not wrong_keys, f"{len(wrong_keys)} deals lack the order's keys", wrong_keys)
        expect(not wrong_rows, f"{len(wrong_rows)} deals' product rows differ from their order's lines",
               wrong_rows)
        expect(not wrong_sum, f"{len(wrong_sum)} deals' OPPORTUNITY differs from their order's total",
               wrong_sum)
        expect(not wrong_contact, f"{len(wrong_contact)} deals' contact is not the buyer", wrong_contact)
        expect(not wrong_resp, f"{len(wrong_resp)} deals have a responsible the rules did not pick",
               wrong_resp)

        # every new deal's notice seen exactly once by its responsible, by nobody else
        seen = self.portal.ctl("GET", "/notifications")["notifications"]
        sent = self.portal.ctl("GET", "/notifications?all=1")["notifications"]
        self.fig.notices_sent = len(sent)
        shown: dict[str, list[int]] = collections.defaultdict(list)
        for n in seen:
            msg = str(n.get("MESSAGE") or "")
            a = msg.find("«Заказ №")
            if a >= 0:
                shown[msg[a + len("«Заказ №"):msg.find("»", a)]].append(int(n["USER_ID"]))
        wrong_notice = [f"order {num}: seen by users {sorted(shown.get(num, []))}, responsible {who}"
                        for num, who in resp_of.items() if shown.get(num, []) != [who]]
        expect(not wrong_notice, f"{len(wrong_notice)} new deals' notice was not seen exactly once by their "
                                 f"responsible", wrong_notice)
        stray_notices = sorted(set(shown) - set(resp_of))
        expect(not stray_notices and len(seen) == len(resp_of),
               f"{len(seen)} notices visible for {len(resp_of)} new deals", [f"notice of no deal: {x}"
                                                                             for x in stray_notices])
        self.fig.seconds = time.monotonic() - self.t_begin
        assert not problems, f"[{self.label}] {len(problems)} checks failed ({self.fig.line()}):\n  - " + \
            "\n  - ".join(problems)

    def summary(self) -> dict[str, Any]:
        return dict(vars(self.fig))

    def close(self) -> None:
        for inst in self.instances:
            if inst.alive():
                inst.stop(timeout=15)
        if self.db is not None:
            self.db.close()
        for h in (self.shop_h, self.b24_h):
            if h is not None:
                h.stop()
