"""Routing of mail (S5): what a new message becomes in the CRM. A pipeline stage, run by the engine
after identify/record and before rules, for the messages a batch created.

The connector only reads mail; the mailbox's settings (`[systems.NAME]` of type imap: target,
pipeline, stage, manager, source, exclude, own_domains, closed_stages) say where its mail goes:

1. excluded senders (robots, bounces), auto-replies (even inside a thread) and mail between two
   own addresses are ignored: recorded, counted as skipped, written nowhere, never quarantined;
   so is our own mail to somebody the CRM does not know;
2. a reply (In-Reply-To / References naming a mail syncd has) goes where its thread went: the
   same lead or deal, as a timeline comment — never a second lead;
3. a known client — the sender, or on an outgoing mail (from an own domain) a recipient — is the
   one person with that address (syncd/pipeline/link.py, the same lookup identify uses): the mail
   becomes a comment on their open deal (an order linked to them whose stage is not closed), else
   on the contact;
4. an open lead with that address (or the lead/deal an earlier mail of the same batch made) takes
   the mail as a comment (a second mail is not a second lead);
5. anyone else: a new lead with the mailbox's manager and source (or, for `target = "deal"`, a new
   contact and a deal in the mailbox's pipeline and stage); the mail is that record's text.

The decisions are changes like any other (origin `route:<system>`), planned through the outbox:
the new lead first, the comment once its owner exists in the CRM (the comment write waits for its
link), and the comment write is idempotent on the CRM side.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import structlog
from sqlalchemy import select
from sqlalchemy.engine import Connection

from syncd import schema
from syncd.keys.names import is_organisation, person_parts
from syncd.store import new_id
from syncd.store import tables as t

log = structlog.get_logger("syncd.route_mail")

CHUNK = 400


@dataclass(frozen=True)
class MailRoute:
    """One mailbox's routing settings."""

    target: str = "lead"                       # lead | deal
    pipeline: str | None = None
    stage: str | None = None
    manager: str | None = None
    source: str | None = "EMAIL"
    exclude: tuple[str, ...] = ()
    own_domains: tuple[str, ...] = ()
    closed_stages: tuple[str, ...] = ("WON", "LOSE", "APOLOGY")


def routes_from(settings: Any) -> dict[str, MailRoute]:
    """The routes of a config's imap systems (system name -> MailRoute)."""
    out = {}
    for name, sys_settings in settings.systems.items():
        if sys_settings.type != "imap":
            continue
        s = settings.connector_settings.get(name)
        if s is None:
            continue
        out[name] = MailRoute(target=s.target, pipeline=s.pipeline, stage=s.stage, manager=s.manager,
                              source=s.source, exclude=tuple(s.exclude), own_domains=tuple(s.own_domains),
                              closed_stages=tuple(s.closed_stages))
    return out


class Run(Protocol):
    """What the stage uses of the engine's batch run."""

    conn: Connection
    system: str
    counts: Any
    ms: Any

    def apply_decided(self, ents: dict[str, Any], eid: str | None, effects: Any, origin: str) -> set[str]: ...


# the person lookup: addresses -> the one person with that address (or None). syncd/pipeline/link.py
PersonLookup = Callable[[Connection, Sequence[str], Any, str], list[str | None]]


def link_people(conn: Connection, addresses: Sequence[str], identity: Any, region: str) -> list[str | None]:
    from syncd.pipeline.link import link_senders

    return link_senders(conn, [("message", {"message.sender": a}) for a in addresses], identity, region)


def domain(addr: str) -> str:
    return addr.rpartition("@")[2].lower()


def excluded(addr: str, route: MailRoute) -> bool:
    a = addr.lower()
    return any(fnmatch.fnmatchcase(a, p) for p in route.exclude) or not a


class MailRouter:
    """The engine's intake hook: routes the new messages of a batch read from a mailbox."""

    def __init__(self, routes: Mapping[str, MailRoute], lookup: PersonLookup = link_people) -> None:
        self.routes = dict(routes)
        self.lookup = lookup

    def __call__(self, run: Run, ents: dict[str, Any], new_ids: Sequence[str], region: str) -> set[str]:
        route = self.routes.get(run.system)
        if route is None:
            return set()
        msgs = [e for e in new_ids if ents[e].type == "message" and ents[e].golden and not ents[e].hold]
        if not msgs:
            return set()
        return _Routing(self, run, route, ents, region).decide_all(msgs)


class _Routing:
    def __init__(self, router: MailRouter, run: Run, route: MailRoute, ents: dict[str, Any], region: str) -> None:
        self.router, self.run, self.route, self.ents, self.region = router, run, route, ents, region
        self.conn = run.conn
        self.origin = f"route:{run.system}"
        self.by_mid: dict[str, dict[str, Any]] = {}     # Message-ID -> refs decided in this batch
        self.new_refs: dict[str, dict[str, str]] = {}  # address -> the lead / deal made in this batch
        self.leads: dict[str, str] = {}                # address -> open lead stored before

    def decide_all(self, msgs: list[str]) -> set[str]:
        from syncd.pipeline.batch import RuleEffects

        parents = self._stored_parents(msgs)
        touched: set[str] = set()
        people = self._people(msgs)
        self.leads = self._open_leads(msgs)
        for eid in msgs:
            g = self.ents[eid].golden
            decision, creates = self._decide(eid, g, parents, people)
            eff = RuleEffects(updates=decision, creates=creates)
            touched |= self.run.apply_decided(self.ents, eid, eff, self.origin)
            mid = g.get("message.message_id")
            if mid:
                self.by_mid[str(mid)] = {k: decision.get(k, g.get(k)) for k in
                                         ("message.order", "message.lead", "message.person")}
        return touched

    # -- decisions -------------------------------------------------------------------------------------
    def _counterparts(self, g: Mapping[str, Any]) -> tuple[str, list[str]]:
        """("in" | "out" | "internal", the client addresses of the mail)."""
        sender = str(g.get("message.sender") or "").lower()
        own = set(self.route.own_domains)
        if domain(sender) not in own:
            return "in", [sender]
        others = [r.lower() for r in (g.get("message.recipients") or ()) if domain(r) not in own]
        return ("out", others) if others else ("internal", [])

    def _decide(self, eid: str, g: Mapping[str, Any], parents: Mapping[str, dict[str, Any]],
                people: Mapping[str, str | None]) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
        direction, clients = self._counterparts(g)
        sender = str(g.get("message.sender") or "").lower()
        skip = None
        if direction == "in" and excluded(sender, self.route):
            skip = "excluded"
        elif direction == "internal":
            skip = "internal"
        elif direction == "in" and g.get("message.auto"):
            skip = "auto"               # bounces and auto-replies are noise even inside a thread
        if skip:
            self._count_skipped(eid, skip)
            return {"message.route": "internal" if skip == "internal" else "excluded"}, []
        # 2. the thread
        for mid in _thread_ids(g):
            refs = self.by_mid.get(mid) or parents.get(mid)
            if refs and any(refs.values()):
                return self._comment(g, direction, refs), []
        # 3. a known client
        person = g.get("message.person") if direction == "in" else None
        if person is None:
            person = next((people.get(a) for a in clients if people.get(a)), None)
        if person is not None:
            order = self._open_order(str(person))
            return self._comment(g, direction, {"message.person": person, "message.order": order}), []
        if direction == "out":
            # our own mail to somebody the CRM does not know: nothing to attach it to
            self._count_skipped(eid, "outgoing_unknown")
            return {"message.route": "outgoing"}, []
        # 4. an open lead of this sender (or the lead / deal an earlier mail of this batch made)
        made = self.new_refs.get(sender)
        if made is not None:
            return self._comment(g, direction, made), []
        lead = self.leads.get(sender)
        if lead is not None:
            return self._comment(g, direction, {"message.lead": lead}), []
        # 5. new
        return self._new(g, sender)

    def _count_skipped(self, eid: str, why: str) -> None:
        c = self.run.counts
        c.created = max(0, c.created - 1)       # recorded, but not a record for anybody
        c.skipped += 1
        log.info("mail_not_routed", system=self.run.system, entity_id=eid, why=why)

    def _comment(self, g: Mapping[str, Any], direction: str, refs: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"message.route": "comment", "message.comment": comment_text(g, direction)}
        for k in ("message.order", "message.lead", "message.person"):
            if refs.get(k):
                out[k] = refs[k]
        return out

    def _new(self, g: Mapping[str, Any], sender: str) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
        r = self.route
        name = str(g.get("message.sender_name") or "")
        subject = str(g.get("message.subject") or "").strip()
        title = subject or f"Письмо от {name or sender}"
        body = str(g.get("message.body") or "")
        if r.target == "deal":
            oid = new_id()
            order = {"order.title": title, "order.pipeline": r.pipeline, "order.stage": r.stage,
                     "order.responsible": r.manager, "order.source": r.source, "order.comment": body or None}
            if name and is_organisation(name):
                # «ООО Ромашка» <office@…>: the deal's client is a company of that name
                cid = new_id()
                company = {"company.name": name, "company.email": sender, "company.emails": (sender,),
                           }
                order["order.company"] = cid
                self.new_refs[sender] = {"message.order": oid}
                return ({"message.route": "new", "message.order": oid},
                        [("company", _drop_none(company), cid), ("order", _drop_none(order), oid)])
            pid = new_id()
            # the display name as the CRM keeps a person's: given name, surname, patronymic
            parts = {f"person.{k}": v for k, v in person_parts(name).items()}
            person = {"person.email": sender, "person.emails": (sender,), "person.name": name or None,
                      "person.source": r.source, **parts}
            order["order.customer"] = pid
            self.new_refs[sender] = {"message.order": oid, "message.person": pid}
            return ({"message.route": "new", "message.order": oid, "message.person": pid},
                    [("person", _drop_none(person), pid), ("order", _drop_none(order), oid)])
        lid = new_id()
        self.new_refs[sender] = {"message.lead": lid}
        lead = {"lead.title": title, "lead.name": name or None, "lead.email": sender, "lead.comment": body or None,
                "lead.source": r.source, "lead.responsible": r.manager, "lead.mailbox": self.run.system,
                "lead.status": "new"}
        return {"message.route": "new", "message.lead": lid}, [("lead", _drop_none(lead), lid)]

    # -- look-ups (set-based) ----------------------------------------------------------------------------
    def _people(self, msgs: list[str]) -> dict[str, str | None]:
        """Outgoing mails' recipients -> the one person with that address (one query)."""
        addrs: list[str] = []
        for eid in msgs:
            direction, clients = self._counterparts(self.ents[eid].golden)
            if direction == "out":
                addrs += [a for a in clients if a not in addrs]
        if not addrs:
            return {}
        found = self.router.lookup(self.conn, addrs, self.run.ms.identity.get("person"), self.region)
        return dict(zip(addrs, found))

    def _stored_parents(self, msgs: list[str]) -> dict[str, dict[str, Any]]:
        """Message-ID -> (order, lead, person) of the stored messages the new ones reply to."""
        wanted = sorted({m for eid in msgs for m in _thread_ids(self.ents[eid].golden)})
        if not wanted:
            return {}
        ids: dict[str, str] = {}
        for i in range(0, len(wanted), CHUNK):
            chunk = wanted[i:i + CHUNK]
            # mail records are keyed by their Message-ID: the bindings' primary key finds them
            for ext, eid in self.conn.execute(select(t.bindings.c.external_id, t.bindings.c.entity_id).where(
                    t.bindings.c.system.in_(sorted(self.router.routes)), t.bindings.c.type == "message",
                    t.bindings.c.external_id.in_(chunk))):
                ids[ext] = eid
        out: dict[str, dict[str, Any]] = {}
        if not ids:
            return out
        rows = {}
        eids = sorted(set(ids.values()))
        for i in range(0, len(eids), CHUNK):
            for eid, fields in self.conn.execute(select(t.entities.c.id, t.entities.c.fields)
                                                 .where(t.entities.c.id.in_(eids[i:i + CHUNK]))):
                rows[eid] = schema.decode(fields)
        for mid, eid in ids.items():
            f = rows.get(eid) or (self.ents[eid].golden if eid in self.ents else {})
            out[mid] = {k: f.get(k) for k in ("message.order", "message.lead", "message.person")}
        return out

    def _open_order(self, person_id: str) -> str | None:
        from syncd.pipeline.link import open_order

        return open_order(self.conn, person_id, self.route.closed_stages)

    def _open_leads(self, msgs: list[str]) -> dict[str, str]:
        """Address -> its open lead (not converted, not junk; the newest), for the batch's senders
        that may need one (incoming, not excluded, not a known person): one query per 400. The
        lead's e-mail lives inside its stored fields: read with the database's JSON functions
        (SQLite json_extract, PostgreSQL ->>), else by LIKE."""
        addrs = set()
        for e in msgs:
            g = self.ents[e].golden
            sender = str(g.get("message.sender") or "").lower()
            if (sender and g.get("message.person") is None and not g.get("message.auto")
                    and domain(sender) not in self.route.own_domains and not excluded(sender, self.route)):
                addrs.add(sender)
        best: dict[str, tuple[str, str]] = {}
        ordered = sorted(addrs)
        for i in range(0, len(ordered), 400):
            chunk = ordered[i:i + 400]
            q = (select(t.entities.c.id, t.entities.c.fields, t.entities.c.created_at)
                 .where(t.entities.c.type == "lead", t.entities.c.hold.is_(None), self._lead_email_in(chunk)))
            wanted = set(chunk)
            for eid, fields, created in self.conn.execute(q):
                f = schema.decode(fields)
                addr = str(f.get("lead.email") or "").lower()
                if addr not in wanted or f.get("lead.status") in ("converted", "junk"):
                    continue
                key = (str(created), eid)
                if addr not in best or key > best[addr]:
                    best[addr] = key
        return {a: k[1] for a, k in best.items()}

    def _lead_email_in(self, addrs: list[str]) -> Any:
        from sqlalchemy import JSON, cast, func, or_, type_coerce
        from sqlalchemy.dialects.postgresql import JSONB

        dialect = self.conn.dialect.name
        if dialect == "sqlite":
            email = type_coerce(t.entities.c.fields, JSON)["lead.email"].as_string()
        elif dialect == "postgresql":
            email = cast(t.entities.c.fields, JSONB)["lead.email"].astext
        else:
            pats = ["%" + json.dumps({"lead.email": a}, ensure_ascii=False, separators=(",", ":"))[1:-1] + "%"
                    for a in addrs]
            return or_(*[t.entities.c.fields.like(p) for p in pats])
        return func.lower(email).in_(addrs)


def _thread_ids(g: Mapping[str, Any]) -> list[str]:
    """The Message-IDs a mail answers, nearest first: In-Reply-To, then References newest first."""
    out: list[str] = []
    if g.get("message.in_reply_to"):
        out.append(str(g["message.in_reply_to"]))
    for m in reversed(list(g.get("message.references") or ())):
        if m not in out:
            out.append(str(m))
    return out


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _size(n: Any) -> str:
    try:
        n = int(n)
    except (TypeError, ValueError):
        return "?"
    return f"{n} Б" if n < 1024 else f"{n / 1024:.0f} КБ" if n < 2**20 else f"{n / 2**20:.1f} МБ"


def comment_text(g: Mapping[str, Any], direction: str) -> str:
    """The timeline comment a manager reads: who, when, subject, attachments, then the text."""
    sender = str(g.get("message.sender") or "")
    name = str(g.get("message.sender_name") or "")
    who = f"{name} <{sender}>" if name else sender
    head = [f"Письмо от {who}" if direction != "out"
            else f"Письмо клиенту от {who} для {', '.join(g.get('message.recipients') or ())}"]
    when = g.get("message.received_at")
    if isinstance(when, dt.datetime):
        head.append(f"Дата: {when.strftime('%d.%m.%Y %H:%M %z')}")
    if g.get("message.subject"):
        head.append(f"Тема: {g['message.subject']}")
    if g.get("message.forwarded_by"):
        head.append(f"Переслал: {g['message.forwarded_by']}")
    atts = g.get("message.attachments") or []
    if atts:
        head.append("Вложения: " + ", ".join(f"{a.get('name')} ({_size(a.get('size'))})" for a in atts
                                             if isinstance(a, Mapping)))
    body = str(g.get("message.body") or "").strip()
    return "\n".join(head) + ("\n\n" + body if body else "")
