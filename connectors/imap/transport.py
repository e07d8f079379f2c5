"""The IMAP side of a mailbox, over imapclient: connect (TLS modes), select, new UIDs, fetch with
BODY.PEEK[] (reading never sets \\Seen), flag or move after commit, and IDLE.

Errors name the mailbox and folder, never the password or a mail's content. Network failures and
timeouts are `TransientError` (the run is retried at the next poll); a refused login is a
`PermanentError` (fix the credentials).
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from connectors.imap.settings import ImapSettings
from syncd.errors import PermanentError, TransientError

log = structlog.get_logger("syncd.imap")

FETCH_ITEMS = ["BODY.PEEK[]", "INTERNALDATE", "RFC822.SIZE"]


@dataclass(frozen=True)
class FolderState:
    folder: str
    uidvalidity: int
    uidnext: int | None
    exists: int


@dataclass(frozen=True)
class Fetched:
    uid: int
    raw: bytes
    internaldate: dt.datetime | None


def _network_errors() -> tuple[type[BaseException], ...]:
    import imaplib

    from imapclient import exceptions as ex

    return (OSError, socket.timeout, ssl.SSLError, imaplib.IMAP4.abort, ex.IMAPClientAbortError)


class Session:
    """One logged-in connection to a mailbox (not thread-safe: one per reader)."""

    def __init__(self, settings: ImapSettings, mailbox: str) -> None:
        self.s, self.mailbox = settings, mailbox
        self.client: Any = None
        self.selected: str | None = None
        self._exists = 0                    # messages in the selected folder, as IDLE last told

    def where(self, folder: str | None = None) -> str:
        return f"mailbox {self.mailbox!r} ({self.s.username}@{self.s.host}:{self.s.effective_port})" + (
            f" folder {folder!r}" if folder else "")

    # -- connection ----------------------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.s.ca_bundle) if self.s.ca_bundle else ssl.create_default_context()
        return ctx

    def connect(self) -> "Session":
        from imapclient import IMAPClient
        from imapclient import exceptions as ex

        try:
            implicit = self.s.tls == "implicit"
            c = IMAPClient(self.s.host, port=self.s.effective_port, use_uid=True, ssl=implicit,
                           ssl_context=self._ssl_context() if implicit else None, timeout=self.s.timeout)
            if self.s.tls == "starttls":
                c.starttls(self._ssl_context())
        except _network_errors() as exc:
            raise TransientError(f"{self.where()}: cannot connect: {type(exc).__name__}: {exc}",
                                 connector=self.mailbox) from None
        except ex.IMAPClientError as exc:
            raise PermanentError(f"{self.where()}: {exc}", connector=self.mailbox) from None
        try:
            c.login(self.s.username, self.s.password.get_secret_value())
        except ex.LoginError:
            # the server's answer may echo what was sent: not repeated here
            raise PermanentError(f"{self.where()}: login refused (check username and password)",
                                 connector=self.mailbox) from None
        except _network_errors() as exc:
            raise TransientError(f"{self.where()}: login failed: {type(exc).__name__}", connector=self.mailbox) \
                from None
        self.client = c
        return self

    def close(self) -> None:
        c, self.client, self.selected = self.client, None, None
        if c is None:
            return
        try:
            c.logout()
        except Exception:  # noqa: BLE001 - closing a dead connection
            try:
                c.shutdown()
            except Exception:  # noqa: BLE001
                pass

    def interrupt(self) -> None:
        """End a wait in IDLE from another thread: shut the socket (the waiting thread then sees the
        connection closed and leaves)."""
        c = self.client
        if c is None:
            return
        try:
            c.socket().shutdown(socket.SHUT_RDWR)
        except Exception:  # noqa: BLE001 - already closed
            pass

    def __enter__(self) -> "Session":
        return self.connect() if self.client is None else self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def capable(self, name: str) -> bool:
        try:
            return bool(self.client.has_capability(name))
        except Exception:  # noqa: BLE001
            return False

    # -- reading -------------------------------------------------------------------------------------
    def select(self, folder: str, *, readonly: bool = True) -> FolderState:
        try:
            info = self.client.select_folder(folder, readonly=readonly)
        except _network_errors() as exc:
            raise TransientError(f"{self.where(folder)}: select failed: {type(exc).__name__}: {exc}",
                                 connector=self.mailbox) from None
        except Exception as exc:  # noqa: BLE001 - IMAPClientError: no such folder, no rights
            raise PermanentError(f"{self.where(folder)}: cannot select: {exc}", connector=self.mailbox) from None
        self.selected = folder
        uv = info.get(b"UIDVALIDITY")
        if uv is None:
            raise PermanentError(f"{self.where(folder)}: the server gave no UIDVALIDITY", connector=self.mailbox)
        nxt = info.get(b"UIDNEXT")
        return FolderState(folder, int(uv), int(nxt) if nxt is not None else None, int(info.get(b"EXISTS", 0)))

    def new_uids(self, folder: str, after: int) -> list[int]:
        """UIDs above `after`. `UID n:*` always matches the last mail even when its UID is lower
        (RFC 3501): filtered here."""
        return [u for u in self._search(folder, ["UID", f"{after + 1}:*"]) if u > after]

    def uids_since(self, folder: str, since: dt.date) -> list[int]:
        """Mails that arrived on or after `since` (the server's INTERNALDATE, day precision)."""
        return self._search(folder, ["SINCE", since])

    def _search(self, folder: str, criteria: list[Any]) -> list[int]:
        try:
            return sorted(int(u) for u in self.client.search(criteria))
        except _network_errors() as exc:
            raise TransientError(f"{self.where(folder)}: search failed: {type(exc).__name__}: {exc}",
                                 connector=self.mailbox) from None

    def fetch(self, folder: str, uids: list[int], chunk: int = 100) -> Iterator[Fetched]:
        """Each mail's bytes, in UID order, without setting \\Seen (BODY.PEEK[])."""
        for i in range(0, len(uids), chunk):
            part = uids[i:i + chunk]
            try:
                got = self.client.fetch(part, FETCH_ITEMS)
            except _network_errors() as exc:
                raise TransientError(f"{self.where(folder)}: fetch of UIDs {part[0]}..{part[-1]} failed: "
                                     f"{type(exc).__name__}: {exc}", connector=self.mailbox) from None
            for uid in part:
                item = got.get(uid)
                if item is None:
                    continue      # expunged between SEARCH and FETCH
                raw = item.get(b"BODY[]")
                when = item.get(b"INTERNALDATE")
                if isinstance(when, dt.datetime) and when.tzinfo is None:
                    when = when.astimezone(dt.UTC)    # imapclient's naive dates are local time
                yield Fetched(uid, bytes(raw or b""), when if isinstance(when, dt.datetime) else None)

    # -- after commit ----------------------------------------------------------------------------------
    def mark(self, folder: str, uids: list[int], flag: str) -> None:
        self.select(folder, readonly=False)
        self.client.add_flags(uids, [flag.encode()])

    def move(self, folder: str, uids: list[int], target: str) -> None:
        self.select(folder, readonly=False)
        if not self.client.folder_exists(target):
            self.client.create_folder(target)
        if self.capable("MOVE"):
            self.client.move(uids, target)
        else:
            # COPY then \Deleted + UID EXPUNGE of just these: the mail is in the target before it
            # leaves here (a server without MOVE; never a plain delete)
            self.client.copy(uids, target)
            self.client.delete_messages(uids)
            if self.capable("UIDPLUS"):
                self.client.uid_expunge(uids)

    # -- waiting -------------------------------------------------------------------------------------
    def idle_wait(self, folder: str, timeout: float) -> bool:
        """IDLE on `folder` up to `timeout` seconds; True when the folder got new mail since the
        previous call (the server's `* n EXISTS`, or a larger count at a re-select)."""
        if self.selected != folder:
            self._exists = self.select(folder).exists
        try:
            self.client.idle()
            responses = list(self.client.idle_check(timeout=timeout))
            responses += list(self.client.idle_done()[1] or [])
        except _network_errors() as exc:
            self.selected = None
            raise TransientError(f"{self.where(folder)}: connection lost while idle: {type(exc).__name__}",
                                 connector=self.mailbox) from None
        grew = False
        for r in responses:
            if len(r) >= 2 and r[1] == b"EXISTS" and isinstance(r[0], int):
                grew = grew or r[0] > self._exists
                self._exists = r[0]
            elif len(r) >= 2 and r[1] == b"EXPUNGE":
                self._exists = max(0, self._exists - 1)
        return grew
