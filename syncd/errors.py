"""The exception tree of syncd.

Every error raised by syncd code is a `SyncdError`. The families decide what the engine does:

- `ConfigError`      stop at start-up, naming file, key and reason;
- `BadInput`         the record goes to quarantine with its raw input; the batch goes on;
- `NeedsReview`      the record (or one field of it) is parked for a human;
- `TransientError`   the write or pull is retried with backoff and jitter;
- `PermanentError`   the write goes to the dead-letter state, replayable from the CLI.

Foreign errors (requests, lxml, sqlalchemy) are translated at the edge where they happen.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of every syncd error."""


class ConfigError(SyncdError):
    """A config or mapping file is invalid; carries where (file, key) and why."""

    def __init__(self, reason: str, *, file: str | None = None, key: str | None = None) -> None:
        self.reason, self.file, self.key = reason, file, key
        where = ": ".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {reason}" if where else reason)


class MapMismatch(ConfigError):
    """A mapping names a stage, status, user or field the live system does not have."""


class BadInput(SyncdError):
    """A malformed record: bad XML/JSON, wrong encoding, unknown status, invalid ИНН."""

    def __init__(self, reason: str, *, record: str | None = None, line: int | None = None,
                 raw: bytes | str | None = None) -> None:
        self.reason, self.record, self.line, self.raw = reason, record, line, raw
        parts = [reason]
        if record:
            parts.insert(0, f"record {record}")
        if line is not None:
            parts.insert(0, f"line {line}")
        super().__init__(": ".join(parts))


class ProtocolError(BadInput):
    """The peer's protocol was violated (CommerceML structure, exchange sequence, unsafe XML)."""


class NeedsReview(SyncdError):
    """An ambiguous match or a `review` conflict: parked for a human decision."""


class ConnectorError(SyncdError):
    """An error talking to an external system."""

    def __init__(self, msg: str, *, connector: str = "", op_id: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(msg)
        self.connector, self.op_id, self.code = connector, op_id, code


class TransientError(ConnectorError):
    """Retry with backoff: timeout, 429, 5xx, QUERY_LIMIT_EXCEEDED."""

    def __init__(self, msg: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(msg, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """Will not succeed as is (validation 4xx, access denied): goes to dead letters."""


__all__ = [
    "SyncdError", "ConfigError", "MapMismatch", "BadInput", "ProtocolError", "NeedsReview",
    "ConnectorError", "TransientError", "PermanentError",
]
