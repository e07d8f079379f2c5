"""Routing of chat messages (issue 25): what a new Telegram / VK message becomes in the CRM. The
sibling of the mail routing stage (syncd/pipeline/route_mail.py), run by the same intake hook for
the systems of type telegram and vk, for the messages a batch created.

A chat has no subject and no In-Reply-To: a conversation is its chat (`message.chat`, "tg:<chat
id>" / "vk:<peer id>"), and a sender is known by the phone he shares or by what his chat was bound to
before. For each new message, in order:

1. a known person — the one person whose phone is the one this message shares (set by identify,
   syncd/pipeline/link.py, any spelling of the number), else the person the chat was bound to by an
   earlier message — gets it as a timeline comment on his open deal (an order linked to him whose
   stage is not closed), else on his contact. A chat that had a lead and now shares the phone of a
   known person moves to that person; the lead gets the phone and is linked to him;
2. a chat bound to a lead or deal by an earlier message (stored, or earlier in this batch) threads
   into it: a comment there, never a second lead. A phone shared now is put on that lead;
3. anyone else: a new lead with the channel's manager and source (or, for `target = "deal"`, a new
   contact and a deal in the channel's pipeline and stage); the message is that record's text.

A message's decision is stored on it (message.person / message.lead / message.order, as mail's),
so "the chat's binding" is the newest routed message of that chat. Like mail, the decisions are
changes with origin `route:<system>`, planned through the outbox: the CRM being down loses
nothing — the message is in the store and the outbox sends the lead, then the comment, later.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select

from syncd import schema
from syncd.keys.names import person_parts
from syncd.store import new_id
from syncd.store import tables as t

log = structlog.get_logger("syncd.route_chat")

CHUNK = 400
CHAT_TYPES = ("telegram", "vk")
CHANNEL_NAMES = {"telegram": "Telegram", "vk": "ВКонтакте"}
REFS = ("message.order", "message.lead", "message.person")


@dataclass(frozen=True)
class ChatRoute:
    """One chat channel's routing settings (connectors/messengers/settings.py ChatRouting)."""

    channel: str = "telegram"                  # telegram | vk: names the channel in titles and comments
    target: str = "lead"                       # lead | deal
    pipeline: str | None = None
    stage: str | None = None
    manager: str | None = None
    source: str | None = "OTHER"
    title: str | None = None
    closed_stages: tuple[str, ...] = ("WON", "LOSE", "APOLOGY")


def chat_routes_from(settings: Any) -> dict[str, ChatRoute]:
    """The routes of a config's telegram and vk systems (system name -> ChatRoute)."""
    out = {}
    for name, sys_settings in settings.systems.items():
        if sys_settings.type not in CHAT_TYPES:
            continue
        s = settings.connector_settings.get(name)
        if s is None:
            continue
        out[name] = ChatRoute(channel=sys_settings.type, target=s.target, pipeline=s.pipeline, stage=s.stage,
                              manager=s.manager, source=s.source, title=s.title,
                              closed_stages=tuple(s.closed_stages))
    return out


class ChatRouting:
    """One batch's chat messages of one channel."""

    def __init__(self, run: Any, route: ChatRoute, ents: dict[str, Any], systems: Sequence[str]) -> None:
        self.run, self.route, self.ents = run, route, ents
        self.conn = run.conn
        self.systems = sorted(systems)                  # every chat system: chat ids carry their channel
        self.origin = f"route:{run.system}"
        self.bound: dict[str, dict[str, Any]] = {}      # chat -> refs decided in this batch

    def decide_all(self, msgs: list[str]) -> set[str]:
        from syncd.pipeline.batch import RuleEffects

        chats = sorted({str(self.ents[e].golden.get("message.chat")) for e in msgs
                        if self.ents[e].golden.get("message.chat")})
        stored = self._stored_bindings(chats, set(msgs))
        touched: set[str] = set()
        for eid in msgs:
            g = self.ents[eid].golden
            chat = str(g.get("message.chat") or f"?{eid}")
            prior = self.bound.get(chat) or stored.get(chat) or {}
            decision, creates, fixes = self._decide(g, prior)
            touched |= self.run.apply_decided(self.ents, eid, RuleEffects(updates=decision, creates=creates),
                                              self.origin)
            for target_id, updates in fixes.items():
                touched |= self._update(target_id, updates)
            self.bound[chat] = {k: decision.get(k, g.get(k)) for k in REFS}
        return touched

    # -- decisions -------------------------------------------------------------------------------------
    def _decide(self, g: Mapping[str, Any], prior: Mapping[str, Any]
                ) -> tuple[dict[str, Any], list[tuple[Any, ...]], dict[str, dict[str, Any]]]:
        phone = g.get("message.phone")
        fixes: dict[str, dict[str, Any]] = {}
        matched = g.get("message.person")           # identify: the one person with the shared phone
        person = matched or prior.get("message.person")
        if person:
            lead = prior.get("message.lead")
            if lead and phone:
                # the chat's lead learns who it is: the phone, and the contact it belongs to
                fixes[str(lead)] = {"lead.phone": phone, **({"lead.customer": matched} if matched else {})}
            if phone and not matched:
                fixes[str(person)] = {"person.phone": phone}        # the chat's own new contact
            order = self._open_order(str(person))
            return self._comment(g, {"message.person": person, "message.order": order}), [], fixes
        if prior.get("message.lead") or prior.get("message.order"):
            if phone and prior.get("message.lead"):
                fixes[str(prior["message.lead"])] = {"lead.phone": phone}
            return self._comment(g, prior), [], fixes
        decision, creates = self._new(g)
        return decision, creates, fixes

    def _comment(self, g: Mapping[str, Any], refs: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"message.route": "comment", "message.comment": comment_text(g, self.route)}
        for k in REFS:
            if refs.get(k):
                out[k] = refs[k]
        return out

    def _new(self, g: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
        r = self.route
        name = str(g.get("message.sender_name") or "").strip()
        channel = CHANNEL_NAMES.get(r.channel, r.channel)
        title = f"{r.title or channel}: {name or g.get('message.sender') or 'новый клиент'}"
        text = body_text(g) or None
        phone = g.get("message.phone")
        if r.target == "deal":
            pid, oid = new_id(), new_id()
            parts = {f"person.{k}": v for k, v in person_parts(name).items()} if name else {}
            person = {"person.name": name or None, "person.phone": phone, "person.phones": (phone,) if phone else None,
                      "person.source": r.source, **parts}
            order = {"order.title": title, "order.pipeline": r.pipeline, "order.stage": r.stage,
                     "order.responsible": r.manager, "order.source": r.source, "order.comment": text,
                     "order.customer": pid}
            return ({"message.route": "new", "message.order": oid, "message.person": pid},
                    [("person", _drop_none(person), pid), ("order", _drop_none(order), oid)])
        lid = new_id()
        lead = {"lead.title": title, "lead.name": name or None, "lead.phone": phone, "lead.comment": text,
                "lead.source": r.source, "lead.responsible": r.manager, "lead.status": "new"}
        return {"message.route": "new", "message.lead": lid}, [("lead", _drop_none(lead), lid)]

    def _update(self, eid: str, updates: dict[str, Any]) -> set[str]:
        """Fields the chat taught syncd about its lead or contact (a phone): only what it lacks."""
        from syncd.pipeline.batch import RuleEffects

        if eid not in self.ents:
            self.ents.update(self.run.load_entities([eid]))
        ent = self.ents.get(eid)
        if ent is None or ent.hold:
            return set()
        upd = {k: v for k, v in updates.items() if v and not ent.golden.get(k)}
        if not upd:
            return set()
        return self.run.apply_decided(self.ents, eid, RuleEffects(updates=upd), self.origin)

    # -- look-ups (set-based) ----------------------------------------------------------------------------
    def _stored_bindings(self, chats: list[str], new: set[str]) -> dict[str, dict[str, Any]]:
        """Chat -> the refs of its newest routed message stored before this batch."""
        best: dict[str, tuple[str, str, dict[str, Any]]] = {}
        for i in range(0, len(chats), CHUNK):
            chunk = chats[i:i + CHUNK]
            q = (select(t.entities.c.id, t.entities.c.fields, t.entities.c.created_at)
                 .where(t.entities.c.type == "message", self._chat_in(chunk)))
            wanted = set(chunk)
            for eid, fields, created in self.conn.execute(q):
                if eid in new:
                    continue
                f = schema.decode(fields)
                chat = str(f.get("message.chat") or "")
                if chat not in wanted or not any(f.get(k) for k in REFS):
                    continue
                key = (str(created), str(f.get("message.received_at") or ""))
                if chat not in best or key > best[chat][:2]:
                    best[chat] = (*key, {k: f.get(k) for k in REFS})
        return {c: v[2] for c, v in best.items()}

    def _chat_in(self, chats: list[str]) -> Any:
        """message.chat IN chats, read inside the stored fields with the database's JSON functions
        (SQLite json_extract, PostgreSQL ->>), else by LIKE."""
        from sqlalchemy import JSON, cast, or_, type_coerce
        from sqlalchemy.dialects.postgresql import JSONB

        dialect = self.conn.dialect.name
        if dialect == "sqlite":
            return type_coerce(t.entities.c.fields, JSON)["message.chat"].as_string().in_(chats)
        if dialect == "postgresql":
            return cast(t.entities.c.fields, JSONB)["message.chat"].astext.in_(chats)
        pats = ["%" + json.dumps({"message.chat": c}, ensure_ascii=False, separators=(",", ":"))[1:-1] + "%"
                for c in chats]
        return or_(*[t.entities.c.fields.like(p) for p in pats])

    def _open_order(self, person_id: str) -> str | None:
        from syncd.pipeline.link import open_order

        return open_order(self.conn, person_id, self.route.closed_stages)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def body_text(g: Mapping[str, Any]) -> str:
    """The message's text with its attachments as links (a new lead's text)."""
    body = str(g.get("message.body") or "").strip()
    links = _links(g)
    return "\n".join([body] + links if body else links)


def _links(g: Mapping[str, Any]) -> list[str]:
    out = []
    for a in g.get("message.attachments") or ():
        if isinstance(a, Mapping) and a.get("url"):
            out.append(f"{a.get('name') or 'файл'}{_size(a.get('size'))}: {a['url']}")
    return out


def _size(n: Any) -> str:
    try:
        n = int(n)
    except (TypeError, ValueError):
        return ""
    return f" ({n} Б)" if n < 1024 else f" ({n / 1024:.0f} КБ)" if n < 2**20 else f" ({n / 2**20:.1f} МБ)"


def comment_text(g: Mapping[str, Any], route: ChatRoute) -> str:
    """The timeline comment a manager reads: the channel, who, when, then the text and the links."""
    channel = CHANNEL_NAMES.get(str(g.get("message.channel") or route.channel), route.channel)
    name = str(g.get("message.sender_name") or "")
    sender = str(g.get("message.sender") or "")
    head = [f"{channel}: {name} ({sender})" if name else f"{channel}: {sender}"]
    when = g.get("message.received_at")
    # the message's own number and the second: a CRM finds a comment it wrote by its text (a retry
    # never adds a second), so two messages with the same words must read differently
    mid = str(g.get("message.message_id") or "").rpartition(":")[2]
    if isinstance(when, dt.datetime):
        head.append(f"Дата: {when.strftime('%d.%m.%Y %H:%M:%S %z')}" + (f", сообщение №{mid}" if mid else ""))
    elif mid:
        head.append(f"Сообщение №{mid}")
    body = body_text(g)
    return "\n".join(head) + ("\n\n" + body if body else "")
