"""The canonical model: every entity type and field syncd knows, in one place.

A canonical record is a flat mapping of field name (``order.total``) to a typed value. Money is
`Decimal`, instants are timezone-aware `datetime`, links to other entities (`ref`) hold the
entity id of the target inside syncd. Structured values (order items, bank accounts, a company's
contacts) are tuples of frozen dicts so records stay hashable and comparable.

`normalize(entity, field, value)` turns what a mapping produced into the canonical type and
raises `BadInput` naming the field when it cannot; `encode`/`decode` move values to and from the
JSON stored in the database.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Callable, Mapping

from syncd.errors import BadInput

# -- field types -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A link to another entity as a *source system* knows it; the engine turns it into an id."""

    entity: str
    external_id: str


@dataclass(frozen=True)
class FieldSpec:
    name: str          # full name, "order.total"
    type: str          # str | text | decimal | int | bool | datetime | date | ref | strs | items | json
    ref: str | None = None          # target entity type for `ref` (and `items` member refs)
    item: Mapping[str, "FieldSpec"] | None = None   # members of an `items` element
    doc: str = ""


def _f(entity: str, name: str, type_: str, ref: str | None = None, doc: str = "",
       item: Mapping[str, FieldSpec] | None = None) -> FieldSpec:
    return FieldSpec(f"{entity}.{name}", type_, ref, item, doc)


def _item_spec(*members: tuple[str, str] | tuple[str, str, str]) -> Mapping[str, FieldSpec]:
    out = {}
    for m in members:
        name, type_ = m[0], m[1]
        out[name] = FieldSpec(name, type_, m[2] if len(m) > 2 else None)  # type: ignore[misc]
    return MappingProxyType(out)


ORDER_ITEM = _item_spec(
    ("product", "ref", "product"), ("name", "str"), ("sku", "str"), ("quantity", "decimal"),
    ("price", "decimal"), ("discount", "decimal"), ("vat_rate", "decimal"), ("vat_included", "bool"),
    ("sum", "decimal"), ("unit", "str"), ("kind", "str"),
)
BANK_ACCOUNT = _item_spec(("bik", "str"), ("account", "str"), ("corr_account", "str"),
                          ("bank_name", "str"), ("bank_address", "str"), ("currency", "str"))
COMPANY_CONTACT = _item_spec(("person", "ref", "person"), ("role", "str"), ("decision_maker", "bool"))

_ENTITIES: dict[str, list[FieldSpec]] = {
    "person": [
        _f("person", "name", "str", doc="full name as one line"),
        _f("person", "first_name", "str"), _f("person", "last_name", "str"),
        _f("person", "middle_name", "str"),
        _f("person", "email", "str", doc="primary e-mail (normalized)"),
        _f("person", "emails", "strs"), _f("person", "phone", "str", doc="primary phone, E.164"),
        _f("person", "phones", "strs"), _f("person", "company", "ref", "company"),
        _f("person", "position", "str"), _f("person", "inn", "str"),
        _f("person", "responsible", "str", doc="manager key of the responsible user"),
        _f("person", "client_type", "str", doc="e.g. VIP"), _f("person", "source", "str"),
        _f("person", "comment", "text"), _f("person", "address", "text"),
        _f("person", "consent", "bool", doc="consent to personal-data processing was given (a deal form's consent field)"),
        _f("person", "consent_at", "datetime", doc="when the consent was given (the moment syncd took the post)"),
        _f("person", "consent_version", "str", doc="version of the consent text the person agreed to"),
        _f("person", "turnover", "decimal"), _f("person", "orders_count", "int"),
        _f("person", "first_order_at", "datetime"), _f("person", "last_order_at", "datetime"),
        _f("person", "average_order", "decimal"), _f("person", "won_count", "int"),
    ],
    "company": [
        _f("company", "name", "str"), _f("company", "full_name", "str"),
        _f("company", "inn", "str"), _f("company", "kpp", "str"), _f("company", "ogrn", "str"),
        _f("company", "okpo", "str"), _f("company", "director", "str"),
        _f("company", "email", "str"), _f("company", "emails", "strs"),
        _f("company", "phone", "str"), _f("company", "phones", "strs"),
        _f("company", "legal_address", "text"), _f("company", "postal_address", "text"),
        _f("company", "bank_accounts", "items", item=BANK_ACCOUNT),
        _f("company", "contacts", "items", item=COMPANY_CONTACT),
        _f("company", "responsible", "str"), _f("company", "client_type", "str"),
        _f("company", "comment", "text"),
        _f("company", "turnover", "decimal"), _f("company", "orders_count", "int"),
        _f("company", "first_order_at", "datetime"), _f("company", "last_order_at", "datetime"),
        _f("company", "average_order", "decimal"), _f("company", "won_count", "int"),
    ],
    "order": [
        _f("order", "number", "str"), _f("order", "date", "datetime"),
        _f("order", "status", "str", doc="canonical status, e.g. new, paid, ready_to_ship, completed"),
        _f("order", "paid", "bool"), _f("order", "paid_at", "datetime"),
        _f("order", "paid_percent", "decimal"), _f("order", "canceled", "bool"),
        _f("order", "shipped", "bool"), _f("order", "shipment_number", "str"),
        _f("order", "delivered", "bool"), _f("order", "posted", "bool"),
        _f("order", "signed", "bool", doc="documents signed (1C)"),
        _f("order", "onec_number", "str"), _f("order", "currency", "str"),
        _f("order", "total", "decimal"), _f("order", "comment", "text"),
        _f("order", "delivery_method", "str"), _f("order", "delivery_address", "text"),
        _f("order", "delivery_price", "decimal"),
        _f("order", "customer", "ref", "person"), _f("order", "company", "ref", "company"),
        _f("order", "items", "items", item=ORDER_ITEM),
        _f("order", "responsible", "str"), _f("order", "pipeline", "str"), _f("order", "stage", "str"),
        _f("order", "probability", "int"), _f("order", "opened", "bool"), _f("order", "source", "str"),
        _f("order", "title", "str"),
        _f("order", "from_shop", "bool", doc="CRM flag: a deal by phone that must become a shop order"),
        _f("order", "consent", "bool", doc="a form that makes deals: consent to personal-data processing was given"),
        _f("order", "consent_at", "datetime", doc="when the consent was given (the moment syncd took the post)"),
        _f("order", "consent_version", "str", doc="version of the consent text the visitor agreed to"),
        _f("order", "to_onec", "bool", doc="the deal goes to 1C"),
        _f("order", "contact_email", "str", doc="the e-mail a visitor typed into a form that makes deals: "
                                                 "links the deal to the one known person with it"),
        _f("order", "contact_phone", "str", doc="the phone a visitor typed into a form that makes deals: "
                                                 "links the deal to the one known person with it"),
    ],
    "lead": [
        _f("lead", "title", "str"), _f("lead", "name", "str"), _f("lead", "email", "str"),
        _f("lead", "phone", "str"), _f("lead", "comment", "text"), _f("lead", "source", "str"),
        _f("lead", "status", "str"), _f("lead", "responsible", "str"), _f("lead", "form", "str"),
        _f("lead", "mailbox", "str"),
        _f("lead", "company_name", "str", doc="the company a visitor typed into a form (a deal form: its company)"),
        _f("lead", "customer", "ref", "person",
           doc="the known client (contact) the lead came from: set when its e-mail/phone matches exactly "
               "one person (syncd/pipeline/link.py), never a new person"),
        _f("lead", "company", "ref", "company", doc="the client's company, when known"),
        _f("lead", "consent", "bool", doc="consent to personal-data processing was given (a form's consent field)"),
        _f("lead", "consent_at", "datetime", doc="when the consent was given (the moment syncd took the post)"),
        _f("lead", "consent_version", "str", doc="version of the consent text the person agreed to"),
        _f("lead", "converted_person", "ref", "person"),
        _f("lead", "converted_company", "ref", "company"),
        _f("lead", "converted_order", "ref", "order"),
    ],
    "product": [
        _f("product", "name", "str"), _f("product", "sku", "str"), _f("product", "price", "decimal"),
        _f("product", "currency", "str"), _f("product", "description", "text"),
        _f("product", "barcode", "str"), _f("product", "unit", "str"), _f("product", "group", "str"),
        _f("product", "vat_rate", "decimal"), _f("product", "active", "bool"),
        _f("product", "stock", "decimal"),
    ],
    "message": [
        _f("message", "subject", "str"), _f("message", "body", "text"),
        _f("message", "sender", "str"), _f("message", "recipients", "strs"),
        _f("message", "message_id", "str"), _f("message", "in_reply_to", "str"),
        _f("message", "received_at", "datetime"), _f("message", "person", "ref", "person"),
        _f("message", "order", "ref", "order"), _f("message", "lead", "ref", "lead"),
        _f("message", "references", "strs", doc="Message-IDs of the thread's earlier mails (References)"),
        _f("message", "sender_name", "str", doc="the sender's display name"),
        _f("message", "forwarded_by", "str", doc="who forwarded it to the CRM address (sender: the original)"),
        _f("message", "attachments", "json", doc="[{name, type, size}] (content only when the mailbox keeps it)"),
        _f("message", "auto", "bool", doc="a bounce, auto-reply or bulk mail"),
        _f("message", "mailbox", "str", doc="the mailbox (syncd system) it was read from"),
        _f("message", "route", "str", doc="set by routing: new (made a lead/deal), comment (attached to one), "
                                          "excluded (robots, bounces, auto-replies), internal, outgoing "
                                          "(ours to somebody unknown)"),
        _f("message", "comment", "text", doc="set by routing: the text of the CRM timeline comment"),
        # chats (connectors/messengers): what mail has no equivalent for
        _f("message", "channel", "str", doc="telegram | vk (absent on mail)"),
        _f("message", "chat", "str", doc="the conversation it belongs to (\"tg:<chat id>\", \"vk:<peer id>\"): "
                                         "a chat's later messages thread by it"),
        _f("message", "phone", "str", doc="the phone the sender shared (Telegram contact), E.164 when it parses"),
    ],
    "document": [
        _f("document", "kind", "str", doc="contract | invoice"), _f("document", "number", "str"),
        _f("document", "date", "date"), _f("document", "amount", "decimal"),
        _f("document", "company", "ref", "company"), _f("document", "order", "ref", "order"),
        _f("document", "file", "str", doc="file reference (URL or path)"),
    ],
    "notice": [
        _f("notice", "system", "str", doc="the system that delivers it (its map's only_when names it)"),
        _f("notice", "user", "str", doc="the user it is for (that system's user id)"),
        _f("notice", "text", "text"), _f("notice", "rule", "str", doc="the rule that sent it"),
        _f("notice", "subject", "str", doc="the entity it is about (syncd id)"),
        _f("notice", "on", "str", doc="\"created\": sent only once syncd has created its subject in that "
                                       "system (a record adopted there is not new, nor is one read again "
                                       "after a re-install)"),
    ],
    # a phone call from a PBX (connectors/calls): one entity per call, however many events it took
    "call": [
        _f("call", "id", "str", doc="the PBX's own call id (Zadarma pbx_call_id, Asterisk linkedid)"),
        _f("call", "direction", "str", doc="in | out"),
        _f("call", "caller", "str", doc="the calling number as the PBX gave it"),
        _f("call", "called", "str", doc="the number dialled (the company's line inbound, the client's outbound)"),
        _f("call", "extension", "str", doc="the company's extension on the call (who answered or dialled)"),
        _f("call", "started_at", "datetime"),
        _f("call", "duration", "int", doc="talk time, seconds (0 when nobody answered)"),
        _f("call", "status", "str", doc="answered | missed | busy | failed (set when the call ended)"),
        _f("call", "recording", "str", doc="URL of the call's recording"),
        _f("call", "person", "ref", "person",
           doc="the known client on the line: the one person with the client's number "
               "(syncd/pipeline/link.py), never a new person"),
        _f("call", "responsible", "str", doc="the user the call belongs to (CRM user id)"),
        _f("call", "source", "str", doc="the PBX system's name (syncd system)"),
    ],
    "task": [
        _f("task", "title", "str"), _f("task", "description", "text"),
        _f("task", "responsible", "str"), _f("task", "deadline", "datetime"),
        _f("task", "order", "ref", "order"), _f("task", "person", "ref", "person"),
        _f("task", "company", "ref", "company"), _f("task", "rule", "str"),
    ],
}

ENTITY_TYPES: tuple[str, ...] = tuple(_ENTITIES)
FIELDS: Mapping[str, Mapping[str, FieldSpec]] = MappingProxyType(
    {e: MappingProxyType({s.name: s for s in specs}) for e, specs in _ENTITIES.items()})


_ALL: dict[str, FieldSpec] = {s.name: s for specs in _ENTITIES.values() for s in specs}
_WITH_REFS = frozenset(s.name for s in _ALL.values() if s.type == "ref" or (
    s.type == "items" and s.item is not None and any(m.type == "ref" for m in s.item.values())))


def field_spec(name: str) -> FieldSpec:
    try:
        return _ALL[name]
    except KeyError:
        raise KeyError(f"unknown canonical field {name!r}") from None


def is_field(name: str) -> bool:
    return name in _ALL


# -- normalization -----------------------------------------------------------------------------

_TRUE = {"true", "1", "y", "yes", "да", "on", "t"}
_FALSE = {"false", "0", "n", "no", "нет", "off", "f", ""}


def to_decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise ValueError("boolean is not a number")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    s = str(value).strip().replace("\u00a0", "").replace(" ", "").replace(",", ".")
    try:
        d = Decimal(s)
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not d.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return d


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, Decimal)):
        return bool(value)
    s = str(value).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def to_datetime(value: Any, default_tz: dt.tzinfo = dt.timezone.utc) -> dt.datetime:
    if isinstance(value, dt.datetime):
        d = value
    elif isinstance(value, dt.date):
        d = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, dt.timezone.utc)
    else:
        s = str(value).strip()
        if s.endswith("Z"):
            s = s[:-1] + "+00:00"
        try:
            d = dt.datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(f"not a date-time: {value!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=default_tz)
    return d


def to_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise ValueError(f"not a date: {value!r}") from None


def _norm_scalar(type_: str, value: Any) -> Any:
    if type_ in ("str", "text", "ref"):
        s = str(value)
        return s.strip() if type_ != "text" else s.strip("\ufeff")
    if type_ == "decimal":
        return to_decimal(value)
    if type_ == "int":
        if isinstance(value, bool):
            raise ValueError("boolean is not an integer")
        d = to_decimal(value)
        if d != d.to_integral_value():
            raise ValueError(f"not an integer: {value!r}")
        return int(d)
    if type_ == "bool":
        return to_bool(value)
    if type_ == "datetime":
        return to_datetime(value)
    if type_ == "date":
        return to_date(value)
    if type_ == "strs":
        if isinstance(value, str):
            value = [value]
        return tuple(str(v).strip() for v in value if v is not None and str(v).strip())
    if type_ == "json":
        return value
    raise ValueError(f"unknown type {type_}")


class FrozenDict(dict):  # type: ignore[type-arg]
    """A dict that hashes, used for members of `items` fields."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: kv[0])))

    def _ro(self, *a: Any, **k: Any) -> None:
        raise TypeError("FrozenDict is read-only")

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _ro  # type: ignore


def _norm_items(spec: FieldSpec, value: Any) -> tuple[FrozenDict, ...]:
    assert spec.item is not None
    out = []
    for i, element in enumerate(value or ()):
        if not isinstance(element, Mapping):
            raise ValueError(f"element {i} is not a mapping")
        clean = {}
        for k, v in element.items():
            member = spec.item.get(k)
            if member is None:
                raise ValueError(f"element {i}: unknown member {k!r}")
            if v is None:
                continue
            if member.type == "ref" and isinstance(v, Ref):
                clean[k] = v
            else:
                try:
                    clean[k] = _norm_scalar(member.type, v)
                except ValueError as exc:
                    raise ValueError(f"element {i}.{k}: {exc}") from None
        out.append(FrozenDict(clean))
    return tuple(out)


def normalize(name: str, value: Any) -> Any:
    """Canonical value of field `name`; raises BadInput naming the field."""
    spec = field_spec(name)
    if value is None:
        return None
    try:
        if spec.type == "items":
            return _norm_items(spec, value)
        if spec.type == "ref" and isinstance(value, Ref):
            return value
        if spec.type in ("str", "ref") and value == "":
            return None
        return _norm_scalar(spec.type, value)
    except ValueError as exc:
        raise BadInput(f"{name}: {exc}") from None


def normalize_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: normalize(k, v) for k, v in fields.items()}


# -- JSON encoding for the store ----------------------------------------------------------------

def _enc(type_: str, v: Any) -> Any:
    if v is None:
        return None
    if type_ == "decimal":
        return str(v)
    if type_ in ("datetime", "date"):
        return v.isoformat()
    if type_ == "strs":
        return list(v)
    if isinstance(v, Ref):
        return {"$ref": [v.entity, v.external_id]}
    return v


def _dec(type_: str, v: Any) -> Any:
    if v is None:
        return None
    if type_ == "decimal":
        return Decimal(v)
    if type_ == "datetime":
        return dt.datetime.fromisoformat(v)
    if type_ == "date":
        return dt.date.fromisoformat(v)
    if type_ == "strs":
        return tuple(v)
    if isinstance(v, dict) and "$ref" in v:
        return Ref(*v["$ref"])
    return v


def encode_value(name: str, value: Any) -> Any:
    spec = field_spec(name)
    if spec.type == "items" and value is not None:
        assert spec.item is not None
        return [{k: _enc(spec.item[k].type, v) for k, v in el.items()} for el in value]
    return _enc(spec.type, value)


def decode_value(name: str, value: Any) -> Any:
    spec = field_spec(name)
    if spec.type == "items" and value is not None:
        assert spec.item is not None
        return tuple(FrozenDict({k: _dec(spec.item[k].type, v) for k, v in el.items()}) for el in value)
    return _dec(spec.type, value)


# Not a field: the key, in a shadow, of the record the target's record names as the one it belongs
# to ("shop:crm-15", Bitrix24 ORIGINATOR_ID/ORIGIN_ID) — what it says, so it is told once (WriteOp.names)
NAMED_SOURCE = "@source"


def named_source(system: str, key: str) -> str:
    return f"{system}:{key}"


_PLAIN = {"str", "text", "ref", "int", "bool", "json"}
_PLAIN_FIELDS = frozenset(s.name for specs in _ENTITIES.values() for s in specs if s.type in _PLAIN) | {NAMED_SOURCE}
_dumps = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode


def encode(fields: Mapping[str, Any]) -> str:
    # hot path (several encodes per record): plain values go straight to JSON
    return _dumps({k: v if (k in _PLAIN_FIELDS and not isinstance(v, Ref)) else encode_value(k, v)
                   for k, v in fields.items()})


def decode(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    return {k: v if k == NAMED_SOURCE else decode_value(k, v) for k, v in json.loads(text).items()}


def jsonable(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Fields as plain JSON values (for stats, CLI --json, review payloads)."""
    return {k: encode_value(k, v) if is_field(k) else v for k, v in fields.items()}


def refs_of(name: str, value: Any) -> list[Any]:
    """Every reference value inside a field (a ref, or refs inside items)."""
    spec = field_spec(name)
    if value is None:
        return []
    if spec.type == "ref":
        return [value]
    if spec.type == "items" and spec.item:
        ref_members = [k for k, m in spec.item.items() if m.type == "ref"]
        return [el[k] for el in value for k in ref_members if el.get(k) is not None]
    return []


def map_refs(name: str, value: Any, fn: Callable[[str, Any], Any]) -> Any:
    """Replace every reference inside a field by fn(target_entity, ref)."""
    spec = field_spec(name)
    if value is None:
        return None
    if spec.type == "ref":
        assert spec.ref
        return fn(spec.ref, value)
    if spec.type == "items" and spec.item:
        ref_members = {k: m.ref for k, m in spec.item.items() if m.type == "ref"}
        if not ref_members:
            return value
        return tuple(FrozenDict({k: (fn(ref_members[k], v) if k in ref_members and v is not None else v)
                                 for k, v in el.items()}) for el in value)
    return value


# Members of a list field are the same member when these agree (the first one present counts).
LIST_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "order.items": ("product", "sku", "name"),
    "company.bank_accounts": ("account",),
    "company.contacts": ("person",),
})


def is_list(name: str) -> bool:
    return field_spec(name).type in ("items", "strs")


# Lists that are a document's lines: meaningful only whole (an order's positions with their
# quantities). A partial copy of them is not more members: at first contact with a record another
# integration made, one side's lines are taken whole, never merged member by member.
DOCUMENT_LINES = frozenset({"order.items"})

# Values systems compute from other fields of the record (a deal's sum from its rows): read together
# with a change of what they are computed from, they are that change's result and count; read alone
# they are the system's own arithmetic, not an edit (engine: _without_derived).
DERIVED_FROM: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "order.total": ("order.items", "order.delivery_price", "order.discount"),
})


def _member_key(name: str, member: Any) -> Any:
    if isinstance(member, Mapping):
        for k in LIST_KEYS.get(name, ()):
            v = member.get(k)
            if v not in (None, ""):
                return (k, str(v).strip().lower())
        return ("=", member)
    s = str(member).strip().lower()
    digits = "".join(c for c in s if c.isdigit())
    # phones in any spelling are one member: compare their last ten digits
    if name.endswith(".phones") and len(digits) >= 10:
        return digits[-10:]
    return s


def merge_lists(name: str, current: Any, incoming: Any) -> Any:
    """`current` with `incoming`'s members added or updated; nothing removed."""
    if current is None:
        return incoming
    if incoming is None:
        return current
    out = list(current)
    index = {_member_key(name, m): i for i, m in enumerate(out)}
    for m in incoming:
        k = _member_key(name, m)
        if k in index:
            out[index[k]] = m
        else:
            index[k] = len(out)
            out.append(m)
    return tuple(out)


def keep_uncarried(name: str, current: Any, incoming: Any, carried: frozenset[str]) -> Any:
    """`incoming`'s members with what its system does not carry (members outside `carried`: a
    CRM's line without the shop's product link) taken from the member of `current` it matches by
    the members it does carry. A system cannot contradict what it cannot hold."""
    if not current or not incoming:
        return incoming
    keys = tuple(k for k in LIST_KEYS.get(name, ()) if k in carried)
    if not keys:
        return incoming

    def key(m: Any) -> Any:
        for k in keys:
            v = m.get(k) if isinstance(m, Mapping) else None
            if v not in (None, ""):
                return (k, str(v).strip().lower())
        return None

    by_key: dict[Any, Mapping[str, Any]] = {}
    for c in current:
        if isinstance(c, Mapping) and key(c) is not None:
            by_key.setdefault(key(c), c)
    out = []
    for m in incoming:
        c = by_key.get(key(m)) if isinstance(m, Mapping) else None
        extra = {k: v for k, v in (c or {}).items() if k not in carried and k not in m}
        out.append(FrozenDict({**extra, **m}) if extra else m)
    return tuple(out)


def has_refs(name: str) -> bool:
    if name not in _ALL:
        raise KeyError(f"unknown canonical field {name!r}")
    return name in _WITH_REFS
