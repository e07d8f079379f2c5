"""Mail intake throughput: mails per second through the imap connector against a real Dovecot.

Task: N mails (default 2000) in one folder of a local Dovecot (Debian's dovecot-imapd, started on
loopback in a temp dir), a realistic mix: plain UTF-8, windows-1251 bodies with koi8-r encoded
subjects, HTML-only mails, replies threaded on earlier ones, a few with attachments.

Ours: `Syncer.pull("mail", "mail")` — the connector reads the folder (UID SEARCH, UID FETCH
BODY.PEEK[] in batches), parses each mail (stdlib email + the charset/HTML/attachment handling),
and the engine ingests each batch into a SQLite store (canonical, identify, record, the routing
stage making leads and comments, plan) and commits it with its cursor.

Anchor: a bare imapclient loop over the same folder in the same run — login, select, UID SEARCH
ALL, UID FETCH BODY.PEEK[] in chunks of the same size — i.e. only moving the bytes. The anchor is
run once untimed first so both timed runs find Dovecot's index and the page cache warm.
Goal: ours >= 0.5 x the anchor.

Usage: python bench/intake_mail.py [--n 2000] [--batch 200]
The last line of output is one JSON object. `run(args)` returns the same dict (bench/intake.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from email.header import Header
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
GOAL = 0.5
FIRST = ["Иван", "Анна", "Пётр", "Ольга", "Сергей", "Мария", "Алексей", "Елена"]
GOODS = ["самовар", "чайник", "термос", "кружку", "заварник", "поднос"]


def make_mail(i: int) -> bytes:
    """Mail number i of the mix (deterministic)."""
    sender = f"client{i % 700}@buyers{i % 13}.example"
    name = Header(FIRST[i % 8] + " Покупатель", "utf-8").encode()
    good = GOODS[i % len(GOODS)]
    kind = i % 10
    head = [f"From: {name} <{sender}>", "To: sales@teaclub-shop.example", f"Message-ID: <bench-{i}@buyers.example>",
            "Date: Tue, 01 Dec 2026 10:00:00 +0300", "MIME-Version: 1.0"]
    text = (f"Здравствуйте! Хочу купить {good}, {i % 5 + 1} шт. Доставка в Тверь, оплата по счёту.\n"
            "Реквизиты пришлю отдельно. С уважением, покупатель.\n") * 3
    if kind in (1, 2, 3):        # windows-1251 body, koi8-r subject
        head += [f"Subject: {Header(f'Заявка на {good} N {i}', 'koi8-r').encode()}",
                 "Content-Type: text/plain; charset=windows-1251", "Content-Transfer-Encoding: 8bit"]
        body = text.encode("cp1251")
    elif kind == 4:              # HTML only
        head += [f"Subject: {Header(f'Вопрос про {good}', 'utf-8').encode()}",
                 "Content-Type: text/html; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
        body = ("<html><body><p>" + text.replace("\n", "</p><p>") + "</p><script>x()</script></body></html>").encode()
    elif kind == 5 and i >= 10:  # a reply to an earlier mail of the run
        head += [f"Subject: {Header(f'Re: Заявка на {good}', 'utf-8').encode()}",
                 f"In-Reply-To: <bench-{i - 10}@buyers.example>", f"References: <bench-{i - 10}@buyers.example>",
                 "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
        body = ("Спасибо, жду счёт.\n> " + text.replace("\n", "\n> ")).encode()
    elif kind == 6:              # with an attachment (metadata only)
        import base64

        head += [f"Subject: {Header(f'Реквизиты для {good}', 'utf-8').encode()}",
                 "Content-Type: multipart/mixed; boundary=BENCH"]
        att = base64.encodebytes(b"%PDF-1.4 " + bytes(range(256)) * 20).decode()
        body = ("--BENCH\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text +
                "\r\n--BENCH\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=rekv.pdf\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n" + att + "--BENCH--\r\n").encode()
    else:
        head += [f"Subject: {Header(f'Заказ: {good}', 'utf-8').encode()}",
                 "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
        body = text.encode()
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def fill(server: Any, folder: str, n: int) -> int:
    c = server.client()
    try:
        if not c.folder_exists(folder):
            c.create_folder(folder)
        total = 0
        for i in range(0, n, 100):
            msgs = [make_mail(j) for j in range(i, min(n, i + 100))]
            total += sum(len(m) for m in msgs)
            c.multiappend(folder, msgs)
        return total
    finally:
        c.logout()


def anchor(server: Any, folder: str, chunk: int, keep: list[bytes] | None = None) -> tuple[float, int, int]:
    """The bare imapclient loop: (seconds, mails, bytes)."""
    t0 = time.perf_counter()
    c = server.client()
    c.select_folder(folder, readonly=True)
    uids = sorted(c.search(["ALL"]))
    n = size = 0
    for i in range(0, len(uids), chunk):
        got = c.fetch(uids[i:i + chunk], ["BODY.PEEK[]"])
        for item in got.values():
            size += len(item[b"BODY[]"])
            n += 1
            if keep is not None:
                keep.append(item[b"BODY[]"])
    c.logout()
    return time.perf_counter() - t0, n, size


def parse_only(raws: list[bytes]) -> float:
    """Seconds to parse the mails alone (no IMAP, no store): where the time of ours goes."""
    from connectors.imap.parse import parse

    t0 = time.perf_counter()
    for r in raws:
        parse(r)
    return time.perf_counter() - t0


def ours(server: Any, folder: str, batch: int, tmp: Path) -> tuple[float, Any]:
    from connectors.imap import ImapConnector, ImapSettings
    from syncd.mapping import Mapper, load_mappings
    from syncd.pipeline.route_mail import MailRoute, MailRouter
    from syncd.store import Store
    from syncd.sync import Syncer

    sync_toml = tmp / "sync.toml"
    sync_toml.write_text('region = "RU"\n[identity.person]\nkeys = ["email", "phone"]\norigin = ["crm", "mail"]\n',
                         encoding="utf-8")
    mapper = Mapper(load_mappings([str(sync_toml), str(REPO / "mappings" / "bitrix24.toml"),
                                   str(REPO / "mappings" / "mail.toml")]))
    store = Store(f"sqlite:///{tmp}/bench.db")
    settings = ImapSettings(**server.settings(folders=[folder], batch=batch, idle=False, first_days=3650))
    conn = ImapConnector("mail", settings)
    router = MailRouter({"mail": MailRoute(manager="7", own_domains=("teaclub-shop.example",),
                                           exclude=tuple(settings.exclude))})
    syncer = Syncer(store, mapper, {"mail": conn}, intake=router)
    t0 = time.perf_counter()
    counts = syncer.pull("mail", "mail")
    secs = time.perf_counter() - t0
    store.close()
    return secs, counts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="mails in the folder (default 2000)")
    ap.add_argument("--batch", type=int, default=200, help="mails per fetch and per committed batch")
    return ap.parse_args(argv)


def run(args: argparse.Namespace | None = None) -> dict[str, Any]:
    """Fill a fresh Dovecot, time the anchor and ours; the figures as a dict."""
    from syncd.sandbox.dovecot import Dovecot, available

    args = args or parse_args([])
    if not available():
        raise SystemExit("bench/intake_mail.py needs Debian's dovecot-imapd (apt-get install dovecot-imapd)")
    with tempfile.TemporaryDirectory(prefix="syncd-bench-mail-") as d:
        tmp = Path(d)
        with Dovecot(tmp / "dovecot") as server:
            t0 = time.perf_counter()
            fill(server, "Bench", args.n)
            fill_s = time.perf_counter() - t0
            raws: list[bytes] = []
            anchor(server, "Bench", args.batch, raws)               # warm Dovecot's index and the cache
            p_s = parse_only(raws)
            a_s, a_n, a_bytes = anchor(server, "Bench", args.batch)
            o_s, counts = ours(server, "Bench", args.batch, tmp)
    if a_n != args.n:
        raise SystemExit(f"anchor read {a_n} mails of {args.n}")
    read = counts.created + counts.skipped + counts.updated + counts.quarantined
    if counts.failed or read < args.n:
        raise SystemExit(f"ours did not take every mail in: {counts.as_dict()}")
    anchor_rate, our_rate = a_n / a_s, args.n / o_s
    return {"mails": args.n, "bytes": a_bytes, "batch": args.batch, "fill_seconds": round(fill_s, 2),
            "anchor_seconds": round(a_s, 3), "anchor_mails_per_s": round(anchor_rate, 1),
            "seconds": round(o_s, 3), "mails_per_s": round(our_rate, 1), "ratio": round(our_rate / anchor_rate, 3),
            "goal_ratio": GOAL, "meets_goal": our_rate / anchor_rate >= GOAL,
            "parse_only_mails_per_s": round(args.n / p_s, 1),
            "store_ms_per_mail": round((o_s - p_s - a_s) / args.n * 1000, 3),
            "created": counts.created, "skipped": counts.skipped, "planned": counts.planned}


def main(argv: list[str] | None = None) -> None:
    r = run(parse_args(argv))
    print(f"{r['mails']} mails, {r['bytes'] / 2**20:.1f} MiB, batches of {r['batch']} (filled in {r['fill_seconds']} s)")
    print(f"anchor (bare imapclient UID FETCH BODY.PEEK[]): {r['anchor_mails_per_s']:>8} mails/s "
          f"({r['anchor_seconds']} s)")
    print(f"ours (read + parse + ingest + route, committed): {r['mails_per_s']:>8} mails/s ({r['seconds']} s)")
    print(f"  of which: parsing alone {r['parse_only_mails_per_s']} mails/s; the store (ingest, route, plan, "
          f"commit) about {r['store_ms_per_mail']} ms a mail")
    print(f"ratio {r['ratio']} (goal >= {GOAL}): {'met' if r['meets_goal'] else 'NOT met'}; "
          f"{r['created']} records created, {r['planned']} writes planned")
    print(json.dumps(r, ensure_ascii=False))


if __name__ == "__main__":
    main()
