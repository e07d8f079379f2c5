"""`syncd demo`: the daemon against the sandbox peers, on SQLite, with nothing to configure.

Starts on loopback a Bitrix24 portal (with its 2 req/s limit on), a 1C-Bitrix shop exchange
endpoint and — once the 1C exchange connector is present — a 1C client that calls syncd the way
1C does; seeds them; writes a config.toml and runs the daemon with the example mappings. It
prints where to look. With --until-synced it exits 0 once the seeded work has flowed and prints
the final /stats JSON as its last line.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import requests

from syncd import demo_forms

DEMO_TOKEN = "demo-admin-token"


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def _mappings_dir() -> Path:
    from syncd.resources import MAPPINGS, data_path

    try:
        return data_path(MAPPINGS)
    except FileNotFoundError as exc:
        raise SystemExit(f"syncd demo: {exc}") from None


class Peers:
    """The sandbox peers of one demo run. `crm`: bitrix24 (with the portal's story before syncd and
    the mailbox), or amocrm / retailcrm (syncd.demo_crm)."""

    def __init__(self, *, shop_orders: int = 5, crm: str = "bitrix24") -> None:
        from syncd.sandbox import shop

        self.crm_type = crm
        self.b24: Any = None
        self.story: Any = None
        self.other: Any = None                  # a DemoCrm when the CRM is not Bitrix24
        self.calls: Any = None                  # the PBX and the Telegram bot (syncd.demo_calls), Bitrix24 only
        self.shop = shop.start(seed=shop_orders)
        if crm == "bitrix24":
            from syncd.demo_story import prepare
            from syncd.sandbox import bitrix24
            from syncd.sandbox.bitrix24 import seed_demo

            self.b24 = bitrix24.start(rate_limit=True)
            seed_demo(self.b24.extra["state"], deals=False)     # managers, the lead pipeline, user fields
            # the portal as the company had it before syncd (a known buyer, a deal made by the shop's own
            # integration, a deal taken by phone), made through its REST API as its managers would
            self.story = prepare(self.b24_webhook, self.shop.extra["state"])
            # a phone system and a Telegram bot beside the shop: calls and chats become CRM activity
            from syncd import demo_calls

            self.calls = demo_calls.start(self.b24, self.story.contact_phone)
        else:
            from syncd import demo_crm

            self.other = demo_crm.start(crm)
        self.onec: Any = None
        self.onec_stop = threading.Event()
        self.mailbox: Any = None               # a local Dovecot when it is installed (start_mailbox)

    @property
    def b24_webhook(self) -> str:
        return str(self.b24.extra["webhook_url"])

    def stop(self) -> None:
        self.onec_stop.set()
        for h in (self.shop, self.b24, self.other, self.calls):
            if h is not None:
                h.stop()
        if self.mailbox is not None:
            self.mailbox.stop()


# -- the demo's mailbox (S5) -------------------------------------------------------------------------

DEMO_MAILS = [
    # somebody new asks for a price: a lead for the mailbox's manager
    ("Ирина Волкова <irina.volkova@chaihana.example>", "Запрос цены на самовары",
     "Добрый день! Пришлите, пожалуйста, цены на электрические самовары 5 л, нужно 6 штук."),
    # a bounce: ignored, counted
    ("MAILER-DAEMON@mx.chaihana.example", "Undelivered Mail Returned to Sender", "550 5.1.1 user unknown"),
]


def start_mailbox(state_dir: Path) -> Any:
    """A local IMAP server (Debian's dovecot-imapd) with a couple of mails, when it is installed;
    None otherwise (the demo then runs without a mailbox and says so)."""
    from email.header import Header
    from email.utils import format_datetime, localtime, make_msgid

    from syncd.sandbox import dovecot

    if not dovecot.available():
        return None
    server = dovecot.Dovecot(state_dir / "imap").start()
    for sender, subject, body in DEMO_MAILS:
        name, _, addr = sender.rpartition(" <")
        frm = f"{Header(name, 'utf-8').encode()} <{addr}" if name else sender
        raw = (f"From: {frm}\r\nTo: sales@demo-shop.example\r\nSubject: {Header(subject, 'utf-8').encode()}\r\n"
               f"Message-ID: {make_msgid(domain='demo.example')}\r\nDate: {format_datetime(localtime())}\r\n"
               "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
               "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + body.encode() + b"\r\n"
        server.append("INBOX", raw)
    return server


def mailbox_config(server: Any) -> list[str]:
    """The demo's [systems.mail]: plain IMAP on loopback (tls = "none" is refused anywhere else)."""
    return ["[systems.mail]", 'type = "imap"', f'host = "{server.host}"', f"port = {server.port}", 'tls = "none"',
            f'username = "{server.user}"', f'password = "{server.password}"', 'own_domains = ["demo-shop.example"]',
            'source = "EMAIL"', "poll_interval = 5.0", ""]


def _has_onec() -> bool:
    """The 1C side of the demo; a missing dependency is an error, never a silently smaller demo."""
    try:
        import connectors.onec  # noqa: F401
        import syncd.sandbox.onec  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"syncd demo: the 1C exchange cannot run: {exc} (reinstall syncd with its "
                         f"dependencies)") from None
    return True


def write_config(state_dir: Path, port: int, peers: Peers, onec: bool) -> Path:
    maps = _mappings_dir()
    patterns = [str(maps / n) for n in ("sync.toml", "shop.toml", f"{peers.crm_type}.toml")]
    if onec:
        patterns.append(str(maps / "onec.toml"))
    patterns += demo_forms.mapping_file(maps)
    if peers.calls is not None:
        from syncd import demo_calls

        patterns += demo_calls.mapping_files(maps)
    if (maps / "rules.toml").exists():
        patterns.append(peers.other.rules(maps, state_dir) if peers.other is not None else str(maps / "rules.toml"))
    if peers.mailbox is not None:
        patterns.append(str(maps / "mail.toml"))
    lines = [
        "# written by `syncd demo`: the daemon against the sandbox peers",
        "[daemon]",
        f'database_url = "sqlite:///{state_dir}/syncd.db"',
        f'listen = "127.0.0.1:{port}"',
        f'admin_token = "{DEMO_TOKEN}"',
        f"mappings = {json.dumps(patterns)}",
        f'state_dir = "{state_dir}"',
        "push_interval = 1.0",
        "rules_interval = 10.0",
        "",
        "[systems.shop]",
        'type = "shop"',
        f'url = "{peers.shop.extra["exchange_url"]}"',
        f'login = "{peers.shop.extra["login"]}"',
        f'password = "{peers.shop.extra["password"]}"',
        "",
    ]
    if peers.b24 is not None:
        from syncd import demo_calls

        # the portal's application (telephony.externalcall.* serve applications only, as on the cloud)
        lines += demo_calls.crm_lines(peers.b24) + demo_calls.config_lines(peers.calls)
    else:
        lines += peers.other.config_lines()
    if onec:
        lines += ["[systems.onec]", 'type = "onec"', 'login = "onec"', 'password = "demo-1c-password"',
                  f'spool_dir = "{state_dir}/1c-spool"', ""]
    # a CRM without leads takes the form's post as a deal (no-leads mode)
    lines += demo_forms.config_lines(deal=peers.b24 is None)
    if peers.mailbox is not None:
        lines += mailbox_config(peers.mailbox)
    crm_jobs = peers.other.jobs() if peers.other is not None else (("deals", "3s"), ("contacts", "5s"),
                                                                   ("companies", "10s"))
    for system, stream, every in (("shop", "orders", "3s"),) + tuple(("crm", s_, e) for s_, e in crm_jobs):
        lines += ["[[jobs]]", f'system = "{system}"', f'stream = "{stream}"', f'every = "{every}"', ""]
    path = state_dir / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _synced(rt: Any, peers: Peers) -> bool:
    """Every seeded shop order is a CRM deal, and nothing is waiting in the outbox."""
    snap = peers.shop.extra["state"].snapshot()
    for o in snap["orders"]:
        ext = str(o.get("xml_id") or o.get("id"))
        eid = rt.store.find_entity("shop", "order", ext)
        if not eid or not rt.store.external_id(eid, "crm"):
            return False
    if peers.onec is not None:
        # S6: every paid shop order is a document in the 1C client's database
        have = {getattr(d, "number", None) for d in peers.onec.db.orders.values()}
        for o in snap["orders"]:
            if o.get("paid") and str(o.get("number")) not in have:
                return False
    if peers.mailbox is not None and not mail_summary(rt, peers)[0].startswith("  mail -> lead"):
        return False                       # the demo's mailbox: its new sender's lead is in the portal
    from syncd.demo_story import settled

    if peers.story is not None and not settled(rt, peers.story, peers.shop.extra["state"], peers.onec):
        return False
    if peers.calls is not None:
        from syncd import demo_calls

        if not demo_calls.settled(peers.calls):
            return False
    stats = rt.stats()
    return stats["totals"]["outbox_pending"] == 0


def summary(rt: Any, peers: Peers) -> list[str]:
    """What flowed, in words: shop orders as deals with their managers, documents in 1C."""
    if peers.b24 is not None:
        portal = peers.b24.extra["state"].portal()
        users = {str(u["ID"]): f"{u['NAME']} {u.get('LAST_NAME', '')}".strip() for u in portal.users.values()}
    else:
        users = peers.other.users()
    noun = "deal" if peers.crm_type != "retailcrm" else "order"
    where = "" if peers.b24 is not None else f"{peers.crm_type} "     # Bitrix24's lines stay as they were
    lines = []
    for o in peers.shop.extra["state"].snapshot()["orders"]:
        eid = rt.store.find_entity("shop", "order", str(o.get("xml_id") or o.get("id")))
        deal_id = rt.store.external_id(eid, "crm") if eid else None
        fields = rt.store.entity(eid)["fields"] if eid else {}
        who = users.get(str(fields.get("order.responsible")), "nobody")
        lines.append(f"  shop order {o['number']} ({o['total']} руб, {'paid' if o.get('paid') else 'unpaid'}) -> "
                     f"{where}{noun} {deal_id or '-'}, stage {fields.get('order.stage', '-')}, manager {who}"
                     + (", in 1C" if eid and rt.store.external_id(eid, "onec") else ""))
    if peers.onec is not None:
        lines.append(f"  1C received {len(peers.onec.db.orders)} order(s) and "
                     f"{len(peers.onec.db.counterparties)} counterpart(ies)")
    if peers.story is not None:
        from syncd.demo_story import tell

        lines += tell(rt, peers.story, peers.shop.extra["state"], peers.onec)
    if peers.calls is not None:
        from syncd import demo_calls

        lines += demo_calls.summary(peers.calls)
    return lines


def mail_summary(rt: Any, peers: Peers) -> list[str]:
    """The leads the demo's mailbox made and the CRM id each has (from syncd's store: the portal's
    2 requests/s are the sync's, not the demo's)."""
    if peers.mailbox is None:
        return []
    from sqlalchemy import select

    from syncd import schema
    from syncd.store import tables as t

    out = []
    with rt.store.begin() as c:
        rows = c.execute(select(t.entities.c.id, t.entities.c.fields).where(t.entities.c.type == "lead")).all()
        for eid, fields in rows:
            f = schema.decode(fields)
            if f.get("lead.mailbox") != "mail":
                continue
            crm = c.execute(select(t.bindings.c.external_id).where(
                t.bindings.c.entity_id == eid, t.bindings.c.system == "crm")).scalar()
            if crm:
                out.append(f"  mail -> lead {crm} «{f.get('lead.title')}» ({f.get('lead.email')})")
    return out or ["  mailbox: no lead yet"]


def _say_mailbox(server: Any) -> None:
    if server is None:
        _say("  mailbox          (none: install dovecot-imapd for the demo's IMAP mailbox)")
        return
    _say(f"  mailbox          imap://{server.host}:{server.port}   ({server.user} / {server.password}; "
         f"{len(DEMO_MAILS)} mails: new senders become leads, robots are ignored)")


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _tell_writes(daemon: Any) -> None:
    """One line per write that landed, every second, until the demo stops."""
    from syncd.demo_feed import Feed

    feed = Feed(last=0)          # the demo's database is new: everything it wrote, from its start
    crms = frozenset(n for n, sy in daemon.rt.settings.systems.items() if sy.type in ("bitrix24", "amocrm", "retailcrm"))
    while not daemon.stop_event.wait(1.0):
        try:
            with daemon.rt.store.read() as c:
                for line in feed.lines(c, crms):
                    _say(line)
        except Exception as exc:  # noqa: BLE001 - the feed is for show; the demo goes on without it
            _say(f"  (лента записей остановлена: {type(exc).__name__}: {exc})")
            return


def run_demo(*, until_synced: bool = False, port: int = 8787, state_dir: str | None = None,
             timeout: float = 180.0, shop_orders: int = 5,
             on_ready: Callable[[Any, Peers], None] | None = None, onec_client: bool = True,
             crm: str = "bitrix24") -> int:
    """`onec_client`: run the demo's own 1C client, which takes every document every 3 s (off: an
    outside 1C pointed at the printed URL takes them). `crm`: bitrix24, amocrm or retailcrm."""
    from syncd.config import load_settings
    from syncd.daemon.main import Daemon
    from syncd.logs import configure_logging

    # SIGTERM (systemd, `kill`), SIGHUP (a terminal closing) end the demo as Ctrl-C does (SIGINT too,
    # even where the shell that started it ignores it): every process it
    # started (Dovecot, the peers) is stopped and its folder removed, never left behind
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, _interrupt)
    tmp = None
    if state_dir is None:
        tmp = tempfile.mkdtemp(prefix="syncd-demo-")
        state_dir = tmp
    sd = Path(state_dir)
    sd.mkdir(parents=True, exist_ok=True)
    configure_logging("json" if until_synced else "console", "warning", stream=sys.stderr)
    peers: Peers | None = None
    daemon: Any = None
    try:
        peers = Peers(shop_orders=shop_orders, crm=crm)
        # the demo's mail routes to Bitrix24's leads and timelines; with another CRM it is left out
        peers.mailbox = start_mailbox(sd) if crm == "bitrix24" else None
        onec = _has_onec()
        cfg = write_config(sd, port, peers, onec)
        settings = load_settings(cfg)
        daemon = Daemon(settings)
        daemon.start()
    except BaseException:
        # stopped (or failed) while starting: what did start is stopped all the same
        if daemon is not None:
            daemon.stop()
        if peers is not None:
            peers.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    url = daemon.url
    if peers.calls is not None:
        from syncd import demo_calls

        demo_calls.after_start(peers.calls, url)
    own_onec = onec_client
    onec_client = None
    if onec and own_onec:
        from syncd.sandbox.onec import OneCClient

        onec_client = OneCClient(url + "/1c/exchange", "onec", "demo-1c-password")
        peers.onec = onec_client

        def _onec_loop() -> None:
            while not peers.onec_stop.wait(3.0):
                try:
                    onec_client.run_cycle()
                    # the accountant pays the first order 1C received: the payment goes back to the deal
                    if onec_client.db.orders and not onec_client.db.payments:
                        first = next(iter(onec_client.db.orders.values()))
                        onec_client.pay(first.number, first.total)
                except Exception as exc:  # noqa: BLE001 - the demo's 1C keeps calling, as 1C does
                    _say(f"1C exchange failed: {exc}")
        threading.Thread(target=_onec_loop, daemon=True, name="1c-client").start()

    _say("syncd demo is running against the sandbox peers (SQLite: " + str(sd / "syncd.db") + ")")
    _say(f"  status page      {url}/          (admin token: {DEMO_TOKEN})")
    _say(f"  statistics       {url}/stats     metrics: {url}/metrics")
    if onec:
        who = ("the demo's own 1C client takes its documents every 3 s; --no-1c-client leaves them to yours"
               if own_onec else "no 1C client of the demo's: point your 1C here, it takes the documents")
        _say(f"  1C exchange      {url}/1c/exchange   (login onec / demo-1c-password; {who})")
    if peers.b24 is not None:
        _say(f"  Bitrix24 portal  {peers.b24_webhook}   (REST inbound webhook; try …/crm.deal.list.json)")
    else:
        _say(f"  {peers.other.name:<16} {peers.other.address}")
        _say("                   (the Bitrix24 demo's story of a portal filled before syncd and its mailbox "
             "run only with --crm bitrix24)")
    _say(f"  shop exchange    {peers.shop.extra['exchange_url']}   "
         f"({peers.shop.extra['login']} / {peers.shop.extra['password']})")
    _say(f"  shop control API {peers.shop.url}/_sandbox/state   (place an order: POST /_sandbox/orders)")
    for line in demo_forms.announce(url):
        _say(line)
    if peers.b24 is not None:
        _say_mailbox(peers.mailbox)
    if peers.calls is not None:
        _say(f"  phone system     {peers.calls.pbx.url}/_sandbox/calls   (Zadarma's webhooks to {url}/hooks/calls/calls; "
             f"place a call: POST {{\"from_number\": \"+79161112233\", \"to_extension\": \"101\"}})")
        _say(f"  call routing     {url}/hooks/calls/route?caller=NUMBER   (the client's manager's extension)")
        _say(f"  Telegram bot     {peers.calls.tg.url}   (its updates go to {url}/hooks/telegram/telegram)")
    _say(f"  config           {cfg}")
    if on_ready:
        on_ready(daemon, peers)
    code = 0
    try:
        if until_synced:
            deadline = time.monotonic() + timeout
            while not _synced(daemon.rt, peers):
                if time.monotonic() > deadline:
                    _say("demo: the seeded work did not flow in time")
                    code = 1
                    break
                time.sleep(0.5)
        else:
            _say("Ctrl-C to stop. What syncd writes, as it lands:")
            threading.Thread(target=_tell_writes, args=(daemon,), daemon=True, name="demo-feed").start()
            daemon.stop_event.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stats = None
        if until_synced:
            peers.onec_stop.set()          # 1C stops calling; what is in flight settles before the last word
            settle = time.monotonic() + 30
            while True:
                stats = requests.get(url + "/stats", timeout=10).json()
                if stats["totals"]["outbox_pending"] == 0 or time.monotonic() > settle:
                    break
                time.sleep(0.5)
            for line in summary(daemon.rt, peers) + mail_summary(daemon.rt, peers):
                _say(line)
        daemon.stop()
        peers.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if stats is not None:
        _say(json.dumps(stats, ensure_ascii=False))
    return code
