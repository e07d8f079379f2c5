"""What the Telegram and VK connectors share: storing what arrived before answering, reading a
bounded body, the record a chat message becomes, phone numbers.

A message is committed to the store (`ctx.ingest`: the engine's one transaction, with the routing
decision and its outbox rows) before the platform gets its 200: a 200 the platform has seen is a
message syncd has, whatever happens to the process or to the CRM afterwards. A failure to store is
answered 500, and the platform posts the update again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from syncd.connector import Batch, ConnectorContext, RawRecord

log = structlog.get_logger("syncd.messengers")

KIND = "chat"               # the record kind both connectors yield (mappings/messengers.toml)
# the fields a `chat` record carries (system field names; describe() lets `syncd check` find typos)
FIELDS = ("Body", "From", "FromName", "Username", "MessageId", "Date", "Attachments", "Chat", "Channel",
          "Phone")


class TooLarge(Exception):
    """The body is over the connector's max_body."""


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def e164(phone: Any, region: str) -> str | None:
    """A shared phone as E.164. Telegram clients send the user's own number with or without "+":
    digits alone are tried as international first (79161234567 is +7 916…), then in `region`."""
    from syncd.keys.match import normalize_phone

    s = str(phone or "").strip()
    if not s:
        return None
    if not s.startswith("+") and s.isdigit() and len(s) > 10:
        found = normalize_phone("+" + s, region)
        if found:
            return found
    return normalize_phone(s, region)


def chat_record(*, external_id: str, body: str, sender: str, sender_name: str | None, username: str | None,
                message_id: str, when: dt.datetime, chat: str, channel: str,
                attachments: Sequence[Mapping[str, Any]] = (), phone: str | None = None) -> RawRecord:
    fields: dict[str, Any] = {"Body": body, "From": sender, "FromName": sender_name or None,
                              "Username": username or None, "MessageId": message_id, "Date": when,
                              "Attachments": [dict(a) for a in attachments] or None, "Chat": chat,
                              "Channel": channel, "Phone": phone}
    return RawRecord(KIND, external_id, {k: v for k, v in fields.items() if v is not None},
                     version=str(int(when.timestamp())), source_time=when)


class Store:
    """Commits what a webhook brought, one ingest at a time per connector (the engine takes a
    batch in one transaction; the webhook's event loop must not wait on it)."""

    def __init__(self, system: str, ctx: ConnectorContext, stream: str) -> None:
        self.system, self.ctx, self.stream = system, ctx, stream
        self._lock = threading.Lock()

    def _ingest(self, records: list[RawRecord]) -> None:
        with self._lock:
            self.ctx.ingest(Batch(self.stream, records))

    async def put(self, records: list[RawRecord]) -> None:
        if records:
            await asyncio.to_thread(self._ingest, records)


def size_text(n: Any) -> str:
    try:
        n = int(n)
    except (TypeError, ValueError):
        return ""
    return f"{n} Б" if n < 1024 else f"{n / 1024:.0f} КБ" if n < 2**20 else f"{n / 2**20:.1f} МБ"


def utc(ts: Any) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(int(ts), dt.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return dt.datetime.now(dt.timezone.utc)
