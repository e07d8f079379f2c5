"""Link a new lead or mail to the client it came from: the one known person with its e-mail or phone.

A form post or a mail names its sender only by e-mail and phone. When exactly one person syncd
knows has that e-mail or phone (the person match keys, `match_keys`), the record links to that
person (`lead.customer`, `message.person`): the CRM lead is bound to the contact, and the
assignment rule `keep` gives it to the client's own manager. None or several matches leave the
record unlinked — a sender is never guessed, never sent to review, and never becomes a new person
here (persons are born where `identity.person.origin` allows).

`link_senders` is called by the engine's identify step for the new records of a batch, with one
set-based query for the whole batch; the IMAP connector's mails go through the same function.
"""

from __future__ import annotations

import datetime as dt
import json
from email.utils import parseaddr
from typing import Any, Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.engine import Connection

from syncd import schema
from syncd.mapping.model import IdentityRule
from syncd.pipeline import match
from syncd.store import tables as t

CHUNK = 400


# entity type -> (the ref field set to the person, the field holding its e-mail, its phone field)
SENDER_FIELDS: Mapping[str, tuple[str, str | None, str | None]] = {
    "lead": ("lead.customer", "lead.email", "lead.phone"),
    # a chat message (connectors/messengers) names its sender by the phone shared, when shared
    "message": ("message.person", "message.sender", "message.phone"),
    # a deal made by a form (a CRM run without leads) names its visitor the same way
    "order": ("order.customer", "order.contact_email", "order.contact_phone"),
    # a PBX's call: the client's number is the caller's inbound, the called one outbound (see below)
    "call": ("call.person", None, "call.caller"),
}
# entity type -> (direction field, the value meaning "outgoing", the phone field then): a call's
# client is on the other end from the company, whichever end that is
OTHER_END: Mapping[str, tuple[str, str, str]] = {"call": ("call.direction", "out", "call.called")}


def _email(value: Any) -> str | None:
    """The address of an e-mail field; a mail's sender may be 'Name <addr>'."""
    if not value:
        return None
    addr = parseaddr(str(value))[1]
    return addr if "@" in addr else None


def sender_keys(entity: str, fields: Mapping[str, Any], identity: IdentityRule | None,
                region: str) -> set[str]:
    """The person match keys of a record's sender (empty when the type has no sender fields)."""
    spec = SENDER_FIELDS.get(entity)
    if spec is None or identity is None:
        return set()
    _ref, email_field, phone_field = spec
    person: dict[str, Any] = {}
    if email_field and (addr := _email(fields.get(email_field))):
        person["person.email"] = addr
    if entity in OTHER_END:
        direction, outgoing, other = OTHER_END[entity]
        if fields.get(direction) == outgoing:
            phone_field = other
    if phone_field and fields.get(phone_field):
        person["person.phone"] = fields[phone_field]
    if not person:
        return set()
    # match keys never raise on garbage: an unparsable phone or address simply gives no key
    return match.keys_for("person", person, identity, region)


def link_senders(conn: Connection, rows: Sequence[tuple[str, Mapping[str, Any]]],
                 identity: IdentityRule | None, region: str) -> list[str | None]:
    """For each (entity type, canonical fields): the id of the one person whose match keys its
    e-mail/phone give, or None (no sender fields, no match, or several persons match).

    `identity` is the person identity rule (`mapping.identity.get("person")`: which keys count);
    `region` the default phone region. One query for all rows. Records that already link to a
    person are the caller's business: this function only answers who the sender is.
    """
    keys = [sender_keys(entity, fields, identity, region) for entity, fields in rows]
    wanted = sorted({k for ks in keys for k in ks})
    owners: dict[str, set[str]] = {}
    for i in range(0, len(wanted), CHUNK):
        chunk = wanted[i:i + CHUNK]
        # (type, key) is the primary key's prefix: an index probe per key
        for key, eid in conn.execute(select(t.match_keys.c.key, t.match_keys.c.entity_id)
                                     .where(t.match_keys.c.type == "person", t.match_keys.c.key.in_(chunk))):
            owners.setdefault(key, set()).add(eid)
    out: list[str | None] = []
    for ks in keys:
        found: set[str] = set()
        for k in ks:
            found |= owners.get(k, set())
        # e-mail of one person and phone of another: ambiguous, so no link
        out.append(next(iter(found)) if len(found) == 1 else None)
    return out


def load_all_orders_linked(conn: Connection, link: str, target_id: str
                           ) -> dict[str, tuple[dict[str, Any], dict[str, Any], dt.datetime]]:
    """Orders whose `link` field (order.customer / order.company) is `target_id`."""
    pattern = f'%"{link}":"{target_id}"%'
    out = {}
    for eid, fields, versions, created in conn.execute(
            select(t.entities.c.id, t.entities.c.fields, t.entities.c.versions, t.entities.c.created_at)
            .where(t.entities.c.type == "order", t.entities.c.fields.like(pattern))):
        f = schema.decode(fields)
        if f.get(link) == target_id:
            out[eid] = (f, json.loads(versions or "{}"), created)
    return out


def open_order(conn: Connection, person_id: str, closed_stages: Sequence[str]) -> str | None:
    """The client's open deal: linked to them, stage not closed, not completed or canceled; the
    newest when there are several (mail and chats comment there)."""
    closed = {s.upper() for s in closed_stages}
    best: tuple[dt.datetime, str] | None = None
    for oid, (fields, _versions, created) in load_all_orders_linked(conn, "order.customer", person_id).items():
        stage = str(fields.get("order.stage") or "")
        if stage.rpartition(":")[2].upper() in closed:
            continue
        if fields.get("order.status") in ("completed", "canceled") or fields.get("order.canceled"):
            continue
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        key = (created or dt.datetime.min.replace(tzinfo=dt.UTC), oid)
        if best is None or key > best:
            best = key
    return best[1] if best else None


__all__ = ["OTHER_END", "SENDER_FIELDS", "link_senders", "sender_keys", "load_all_orders_linked", "open_order"]
