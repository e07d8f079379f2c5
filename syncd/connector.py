"""What the engine knows of a connector: streams, batches, write operations, health.

The engine never sees URLs, XML or REST verbs. A connector reads *system* records (its own object
kinds and field names, values decoded from the wire) in batches with a cursor, and writes
operations whose fields the mapping layer has already turned into its field names.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class StreamSpec:
    """A readable stream of one object kind (``deals``, ``orders``)."""

    name: str
    kinds: tuple[str, ...]             # system object kinds the stream yields
    doc: str = ""
    default_interval: float = 60.0     # seconds between polls unless the config says otherwise


@dataclass(frozen=True)
class RawRecord:
    """One object as the source system holds it."""

    kind: str                          # the system's object type: "deal", "contact", "order"
    external_id: str
    fields: Mapping[str, Any]          # system field names -> decoded values
    version: str | None = None         # monotonic per object at the source (timestamp or counter)
    source_time: dt.datetime | None = None
    deleted: bool = False
    raw: str | bytes | None = None     # kept for quarantine when the record cannot be processed
    stamp: str | None = None           # the external key found on it (Ид, ORIGIN_ID), maybe syncd's
    partial: bool = False              # read before it was complete: what it lacks says nothing
    # the record it was made from, as the record says (Bitrix24 ORIGINATOR_ID/ORIGIN_ID decoded to a
    # syncd system name and that system's record id): binds it to that record's entity — a deal the
    # shop's own integration made before syncd is adopted, not duplicated
    origin: tuple[str, str] | None = None
    # held for an operator before it goes anywhere (a form in review mode): a record syncd does not
    # know yet waits in identify review with this reason, settled like any review (`syncd review`,
    # the status page); a record already known is taken in as usual
    hold: str | None = None
    # says who somebody is rather than being that system's record of them (a form visitor: every
    # post states the same person again): it joins the entity it matches even when that entity
    # already has a record of this system — as an alias — instead of going to identity review
    statement: bool = False


@dataclass(frozen=True)
class Rejected:
    """A record the connector could not decode; it goes to quarantine, the batch goes on."""

    reason: str
    kind: str | None = None
    external_id: str | None = None
    line: int | None = None
    raw: str | bytes | None = None


@dataclass
class Batch:
    """Records plus the cursor to save with them; `ack` tells the source after the commit."""

    stream: str
    records: list[RawRecord | Rejected]
    cursor: str | None = None
    ack: Callable[[], None] | None = None
    total: int | None = None           # records this read will yield in all, when the source says


@dataclass(frozen=True)
class WriteOp:
    """One write, decided when the pusher claimed it: what differs between syncd's record and what
    the target holds (`fields`), and the whole record as the target should hold it (`full`)."""

    op_id: str
    system: str
    kind: str
    op: str                            # create | update | delete
    entity: str                        # canonical entity type
    entity_id: str
    external_id: str | None
    fields: Mapping[str, Any]          # system field names -> values: what changed (all on create)
    external_key: str                  # stamped on create (ORIGIN_ID, Ид, externalId), looked up first
    attempt: int = 0
    # the record this entity came from (syncd system name, that system's record id): the natural key
    # a connector stamps where its protocol names a source (ORIGINATOR_ID/ORIGIN_ID); None for records
    # syncd made itself (rules' tasks), which carry syncd's own key
    origin: tuple[str, str] | None = None
    also_known_as: tuple[str, ...] = ()   # keys earlier versions of syncd stamped: looked up too
    # a create never sent before (no attempt, not taken over from a claim in flight) to a system whose
    # streams of this kind syncd has read through: a record there with its key is one syncd has
    # read and bound (made by a previous install, or by the vendor's integration before that read),
    # so a connector may skip the look-up by key before creating. Only for a write sent once: a
    # connector that retries inline must look up again.
    unsent: bool = False
    full: Mapping[str, Any] = field(default_factory=dict)   # every pushable field of the record
    # an update of a record that came from this system, naming the record syncd made from it in
    # another system (that system's name, the record's key there): a deal a manager made by phone
    # names its shop order (Bitrix24 ORIGINATOR_ID/ORIGIN_ID), as the vendor's own integration does.
    # Only for `names_sources` connectors; None when it names it already
    names: tuple[str, str] | None = None
    # records this one links to, for protocols that embed them (a CommerceML order carries its
    # buyer): the target's id (or key) -> (kind, full fields); filled for `embeds_links` connectors
    links: Mapping[str, tuple[str, Mapping[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteResult:
    external_id: str
    fields: Mapping[str, Any] = field(default_factory=dict)   # as applied, when the peer says
    version: str | None = None
    # a create that found the record already there by its key (made earlier by syncd, by a previous
    # install or by the vendor's own integration): adopted, not created now
    found: bool = False


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


@dataclass
class LiveSchema:
    """What the live system has, for checking mappings and rules against it."""

    kinds: dict[str, set[str]] = field(default_factory=dict)           # kind -> field names
    values: dict[str, set[str]] = field(default_factory=dict)          # "deal.STAGE_ID" -> ids
    users: dict[str, dict[str, Any]] = field(default_factory=dict)     # user id -> {name, active, present}
    pipelines: dict[str, list[str]] = field(default_factory=dict)      # pipeline -> ordered stages
    # what a person calls things, for config values given by name (syncd.names): "pipeline",
    # "stage:<pipeline id>", "source", "user" -> display name (or e-mail) -> id
    names: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """An HTTP route a connector contributes to the daemon's ASGI app."""

    path: str
    endpoint: Callable[..., Any]       # a Starlette endpoint (async def endpoint(request))
    methods: tuple[str, ...] = ("GET", "POST")


class ConnectorContext(Protocol):
    """What the daemon hands a connector: its own state, and ways to feed the engine."""

    system: str

    def state_get(self, key: str, default: Any = None) -> Any: ...
    def state_set(self, key: str, value: Any) -> None: ...
    # compare-and-set (expected/value None: absent/delete): state several instances hand over
    def state_swap(self, key: str, expected: Any, value: Any) -> bool: ...
    def ingest(self, batch: Batch) -> Any: ...          # push connectors: store what arrived
    def trigger(self, stream: str) -> None: ...         # webhooks: poll this stream now
    # a peer's request rate shared by every instance (acquire() before a request, fill() when the
    # peer refused one for its limit): N instances together stay under a portal's limit
    def rate_budget(self, key: str, rate: float, burst: float) -> Any: ...
    # download connectors (the peer fetches its writes): claim what is ready, decided now; settle
    # it when the peer confirms; give it back when it does not
    def take_writes(self, limit: int | None = None) -> "WriteClaim": ...
    def settle_writes(self, token: str, results: Mapping[str, "WriteResult | Exception"]) -> Any: ...
    def release_writes(self, token: str, op_ids: Sequence[str] | None = None) -> None: ...


@dataclass(frozen=True)
class WriteClaim:
    """Writes claimed for a peer that downloads them; only this token can settle them."""

    token: str
    ops: list[WriteOp]
    blocked: int = 0                   # writes held back (waiting for a record they link to)


@runtime_checkable
class Connector(Protocol):
    name: str
    streams: Mapping[str, StreamSpec]
    writes: frozenset[str]             # system kinds it can create/update

    def health(self) -> Health: ...
    def describe(self) -> LiveSchema: ...
    def read(self, stream: str, cursor: str | None, *, since: dt.datetime | None = None
             ) -> Iterator[Batch]: ...
    def write(self, op: WriteOp) -> WriteResult: ...
    def http_routes(self) -> Sequence[Route]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Traits:
    delivery: str = "push"
    whole_records: bool = False
    keys_are_ids: bool = False
    embeds_links: bool = False
    embedded_kinds: frozenset[str] = frozenset()
    # its records' ids are documents' own ids (CommerceML Ид) that other document systems keep as
    # they are (the site's order Ид in 1C, as the vendor's exchange does); others are named with
    # their system's name ("crm-15"), so ids of two systems never meet
    natural_ids: bool = False
    # kind -> the streams that read that kind: a create of it waits until each has been read
    # through once (first contact: a contact a manager typed is bound, never made a second time)
    first_read: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # kind -> the streams that read that kind (all kinds; see WriteOp.unsent)
    reads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # kinds whose records can name the record they belong to in another system (WriteOp.names)
    names_sources: frozenset[str] = frozenset()


def traits(connector: Any) -> Traits:
    """How a connector takes writes (defaults for connectors not built on BaseConnector)."""
    out = {f: getattr(connector, f, getattr(Traits, f)) for f in
           ("delivery", "whole_records", "keys_are_ids", "embeds_links", "embedded_kinds",
            "names_sources")}
    kinds = getattr(connector, "read_before_create", frozenset())
    streams = getattr(connector, "streams", {}) or {}
    out["first_read"] = {k: tuple(s for s, spec in streams.items() if k in spec.kinds) for k in kinds}
    out["reads"] = {k: tuple(s for s, spec in streams.items() if k in spec.kinds)
                    for k in {k for spec in streams.values() for k in spec.kinds}}
    return Traits(**out)


@dataclass(frozen=True)
class ConnectorType:
    """Registered under the `syncd.connectors` entry point: settings model and factory."""

    type: str
    settings: type                     # a pydantic model (extra="forbid")
    factory: Callable[[str, Any, ConnectorContext], Connector]
    doc: str = ""
    # "download": the peer fetches syncd's writes when it connects (1C's mode=query); until then
    # they wait for the peer, which is not a write that is late (stats count them apart)
    delivery: str = "push"


class BaseConnector:
    """Defaults for the optional parts of the protocol."""

    name: str = ""
    streams: Mapping[str, StreamSpec] = {}
    writes: frozenset[str] = frozenset()
    # How the engine writes to this system (read with `traits(connector)`):
    delivery: str = "push"             # push: syncd calls write(); download: the peer fetches the
                                       # writes (1C's `mode=query`) through ConnectorContext.take_writes
    whole_records: bool = False        # a write sends the whole record (a document), not changed fields
    keys_are_ids: bool = False         # a record syncd creates there is known by the key it stamped
    embeds_links: bool = False         # a write carries the records it links to (WriteOp.links)
    # kinds created there only inside another record (1C gets a new counterparty inside its first
    # order): a create of one alone is not sent; the record that embeds it creates it there
    embedded_kinds: frozenset[str] = frozenset()
    # kinds whose records can name the record they belong to in another system, and are told it
    # once syncd has made that record (WriteOp.names): Bitrix24's ORIGINATOR_ID/ORIGIN_ID
    names_sources: frozenset[str] = frozenset()

    # writes handed to `write_many` at a time (each part settled as soon as its answers are in, so a
    # restart resends at most the part in flight); a connector whose calls carry more sets more
    write_part: int = 25

    # kinds whose creates wait until syncd has read the streams that yield them once through (the
    # records people made there before syncd are identified first; see Traits.first_read)
    read_before_create: frozenset[str] = frozenset()

    # `syncd audit` reads records back by their ids: the kinds `fetch` can read (none: the audit
    # lists the system as unreadable, with `unreadable_why`)
    fetchable: frozenset[str] = frozenset()
    unreadable_why: str = "its connector cannot read a record back by its id"

    def fetch(self, kind: str, external_ids: list[str]) -> Iterator[RawRecord]:
        """The current state of these records, as `read` would give them (missing ones left out)."""
        raise NotImplementedError(f"{self.name} cannot read {kind} records back")

    def describe(self) -> LiveSchema:
        return LiveSchema()

    def http_routes(self) -> Sequence[Route]:
        return ()

    def close(self) -> None:
        return None

    def read(self, stream: str, cursor: str | None, *, since: dt.datetime | None = None
             ) -> Iterator[Batch]:
        return iter(())
