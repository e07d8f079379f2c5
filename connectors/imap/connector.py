"""The `imap` connector: one mailbox's folders as one stream of mails.

Cursor, per folder: (UIDVALIDITY, last UID committed). A batch's cursor is the last UID of that
batch, saved by the engine in the same transaction as the mails, so a crash between the fetch and
the commit re-reads those mails next time (the records are keyed by Message-ID: a re-read mail is
the same record, never a second one). A changed UIDVALIDITY voids the stored UIDs: the folder is
read again for the first-start period, and the Message-ID keys absorb what was already taken in.

What a mail *means* for the CRM (a lead, a comment on a deal, ignored) is not decided here: the
connector yields records of kind ``mail`` (and ``vcard`` for the contacts a mail carries) with the
fields below, and the routing stage (syncd/pipeline/route_mail.py) decides, with the mailbox's
routing settings.

Record fields (kind ``mail``): ``Subject``, ``Body`` (text; HTML-only mails as extracted text),
``From`` / ``FromName`` (a mail forwarded to the CRM address: the original sender, and
``ForwardedBy`` who forwarded it), ``To``, ``Cc`` (lists), ``MessageId``, ``InReplyTo``,
``References`` (list), ``Date``, ``Folder``, ``Uid``, ``Attachments`` (list of {name, type, size}),
``Recipients`` (To and Cc), ``Html``, ``Auto`` (bounce / auto-reply / bulk), ``Mailbox`` (the
system name). Kind ``vcard``: ``Name``, ``FirstName``,
``LastName``, ``MiddleName``, ``Email``, ``Emails``, ``Phone``, ``Phones``, ``Position``,
``Company``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from collections.abc import Iterator
from typing import Any

import structlog

from connectors.imap.parse import MailError, ParsedMail, parse
from connectors.imap.settings import ImapSettings
from connectors.imap.transport import Fetched, FolderState, Session
from syncd.connector import (
    BaseConnector,
    Batch,
    ConnectorContext,
    Health,
    LiveSchema,
    RawRecord,
    Rejected,
    StreamSpec,
)
from syncd.errors import PermanentError, TransientError

log = structlog.get_logger("syncd.imap")

STREAM = "mail"
# the fields each record kind carries (describe(): `syncd check` finds a mapping's typo)
MAIL_FIELDS = frozenset({"Subject", "Body", "From", "FromName", "ForwardedBy", "To", "Cc", "Recipients", "MessageId",
                         "InReplyTo", "References", "Date", "Folder", "Uid", "Attachments", "Html", "Auto",
                         "Mailbox"})
VCARD_FIELDS = frozenset({"Name", "FirstName", "LastName", "MiddleName", "Email", "Emails", "Phone", "Phones",
                          "Position", "Company"})


def load_cursor(cursor: str | None) -> dict[str, dict[str, int]]:
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
        return {str(f): {"uidvalidity": int(v["uidvalidity"]), "last": int(v["last"])}
                for f, v in (data.get("folders") or {}).items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        log.warning("imap_cursor_unreadable_rescan")
        return {}


def dump_cursor(folders: dict[str, dict[str, int]]) -> str:
    return json.dumps({"folders": folders}, sort_keys=True)


class ImapConnector(BaseConnector):
    delivery = "push"

    def __init__(self, name: str, settings: ImapSettings, ctx: ConnectorContext | None = None) -> None:
        self.name, self.settings, self.ctx = name, settings, ctx
        self.streams = {STREAM: StreamSpec(STREAM, ("mail", "vcard"),
                                           f"mails of folders {', '.join(settings.folders)} by UIDVALIDITY + UID",
                                           default_interval=settings.poll_interval)}
        self.writes = frozenset()
        self._stop = threading.Event()
        self._watchers: list[threading.Thread] = []
        self._watch_lock = threading.Lock()
        self._idling: list[Session] = []       # the watchers' sessions (a stop shuts their sockets)
        self.now = lambda: dt.datetime.now(dt.UTC)     # tests move the clock

    # -- protocol ------------------------------------------------------------------------------------
    def health(self) -> Health:
        try:
            with Session(self.settings, self.name) as s:
                states = [s.select(f) for f in self.settings.folders]
                idle = s.capable("IDLE")
        except (TransientError, PermanentError) as exc:
            return Health(False, str(exc))
        folders = ", ".join(f"{st.folder} ({st.exists} mails)" for st in states)
        return Health(True, f"{self.settings.username}@{self.settings.host}: {folders}; "
                            f"{'IDLE' if idle and self.settings.idle else 'polling'}")

    def describe(self) -> LiveSchema:
        return LiveSchema(kinds={"mail": set(MAIL_FIELDS), "vcard": set(VCARD_FIELDS)})

    def read(self, stream: str, cursor: str | None, *, since: dt.datetime | None = None) -> Iterator[Batch]:
        if stream != STREAM:
            raise KeyError(f"mailbox {self.name!r} has no stream {stream!r} (streams: {STREAM})")
        self.start_watch()
        folders = load_cursor(cursor)
        with Session(self.settings, self.name) as s:
            for folder in self.settings.folders:
                yield from self._read_folder(s, folder, folders, since)

    def _read_folder(self, s: Session, folder: str, folders: dict[str, dict[str, int]],
                     since: dt.datetime | None) -> Iterator[Batch]:
        st = s.select(folder)
        prev = folders.get(folder)
        cutoff: dt.datetime | None = None
        if since is not None or prev is None or prev["uidvalidity"] != st.uidvalidity:
            if prev is not None and prev["uidvalidity"] != st.uidvalidity and since is None:
                log.warning("imap_uidvalidity_changed", mailbox=self.name, folder=folder,
                            old=prev["uidvalidity"], new=st.uidvalidity)
            cutoff = since or (self.now() - dt.timedelta(days=self.settings.first_days))
            uids = s.uids_since(folder, cutoff.date())
        else:
            uids = s.new_uids(folder, prev["last"])
        if not uids:
            if prev is None or prev["uidvalidity"] != st.uidvalidity:
                # nothing to read yet: remember where the folder stands, so only newer mail comes
                last = (st.uidnext - 1) if st.uidnext else 0
                folders[folder] = {"uidvalidity": st.uidvalidity, "last": max(last, 0)}
                yield Batch(STREAM, [], cursor=dump_cursor(folders))
            return
        size = self.settings.batch
        for i in range(0, len(uids), size):
            chunk = uids[i:i + size]
            records: list[RawRecord | Rejected] = []
            taken: list[int] = []
            for f in s.fetch(folder, chunk):
                if cutoff is not None and f.internaldate is not None and f.internaldate < cutoff:
                    continue          # SINCE is by day: the first day's earlier mails are older
                records.extend(self.records(folder, f))
                taken.append(f.uid)
            folders[folder] = {"uidvalidity": st.uidvalidity, "last": chunk[-1]}
            yield Batch(STREAM, records, cursor=dump_cursor(folders), ack=self._after_commit(s, folder, taken),
                        total=len(uids) if i == 0 else None)

    def _after_commit(self, s: Session, folder: str, uids: list[int]) -> Any:
        """Flag or move the committed mails (only after the commit; never a delete)."""
        mode = self.settings.after_commit
        if mode == "none" or not uids:
            return None

        def ack() -> None:
            try:
                if mode == "flag":
                    s.mark(folder, uids, self.settings.flag)
                else:
                    s.move(folder, uids, self.settings.move_to or "")
                s.select(folder)          # back to read-only for the next batch
            except Exception as exc:  # noqa: BLE001 - the mails are committed; a missed flag is cosmetic
                log.warning("imap_after_commit_failed", mailbox=self.name, folder=folder, action=mode,
                            uids=f"{uids[0]}..{uids[-1]}", error=f"{type(exc).__name__}: {exc}")
        return ack

    # -- records -------------------------------------------------------------------------------------
    def records(self, folder: str, f: Fetched) -> list[RawRecord | Rejected]:
        """One fetched mail -> its record (and its vCards' contacts), or a Rejected with the reason."""
        st = self.settings
        where = f"mailbox {self.name!r} folder {folder!r} UID {f.uid}"
        try:
            m = parse(f.raw, keep_content=st.keep_attachments, max_attachment=st.max_attachment)
        except MailError as exc:
            return [Rejected(f"{where}: {exc.reason}", kind="mail", raw=f.raw)]
        return [self._mail_record(folder, f, m)] + self._vcard_records(m)

    def _mail_record(self, folder: str, f: Fetched, m: ParsedMail) -> RawRecord:
        sender, name, forwarded_by = m.sender, m.sender_name, None
        st = self.settings
        if (m.forwarded_from is not None and st.crm_address
                and (st.crm_address in m.to or st.crm_address in m.cc)):
            # forwarded to the CRM address by an employee: the mail is the original sender's
            forwarded_by = m.sender
            sender, name = m.forwarded_from
        attachments = [{"name": a.name, "type": a.content_type, "size": a.size,
                        **({"content": base64.b64encode(a.content).decode()} if a.content is not None else {})}
                       for a in m.attachments]
        fields: dict[str, Any] = {
            "Subject": m.subject, "Body": m.text, "From": sender, "FromName": name, "ForwardedBy": forwarded_by,
            "To": list(m.to), "Cc": list(m.cc), "MessageId": m.key, "InReplyTo": m.in_reply_to,
            "References": list(m.references), "Date": (m.date or f.internaldate), "Folder": folder,
            "Uid": f.uid, "Attachments": attachments, "Html": m.html, "Auto": m.auto,
            "Recipients": list(dict.fromkeys(m.to + m.cc)), "Mailbox": self.name,
        }
        return RawRecord("mail", m.key, fields, source_time=m.date or f.internaldate, raw=None)

    def _vcard_records(self, m: ParsedMail) -> list[RawRecord | Rejected]:
        out: list[RawRecord | Rejected] = []
        for i, p in enumerate(m.vcards):
            out.append(RawRecord("vcard", f"{m.key}#vcard{i + 1}", {
                "Name": p.name, "FirstName": p.first_name or None, "LastName": p.last_name or None,
                "MiddleName": p.middle_name or None, "Email": p.emails[0] if p.emails else None,
                "Emails": list(p.emails), "Phone": p.phones[0] if p.phones else None, "Phones": list(p.phones),
                "Position": p.position or None, "Company": p.company or None}, source_time=m.date))
        return out

    # -- IDLE ----------------------------------------------------------------------------------------
    def start_watch(self) -> bool:
        """Watch the folders with IDLE (the daemon's trigger on new mail); False when not watching."""
        if self.ctx is None or not self.settings.idle:
            return False
        with self._watch_lock:
            if self._watchers or self._stop.is_set():
                return bool(self._watchers)
            for folder in self.settings.folders:
                t = threading.Thread(target=self._watch, args=(folder,), daemon=True,
                                     name=f"imap-idle-{self.name}-{folder}")
                self._watchers.append(t)
                t.start()
        return True

    def _watch(self, folder: str) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                with Session(self.settings, self.name) as s:
                    with self._watch_lock:
                        self._idling.append(s)
                    if not s.capable("IDLE"):
                        log.info("imap_no_idle_polling", mailbox=self.name, folder=folder,
                                 every=self.settings.poll_interval)
                        return
                    delay = 1.0
                    while not self._stop.is_set():
                        # re-issued every idle_renew seconds (RFC 2177: before 29 minutes); a stop
                        # shuts the socket, which ends the wait at once
                        if s.idle_wait(folder, self.settings.idle_renew):
                            log.debug("imap_new_mail", mailbox=self.name, folder=folder)
                            assert self.ctx is not None
                            self.ctx.trigger(STREAM)
            except (TransientError, PermanentError, OSError) as exc:
                if self._stop.is_set():
                    return                   # closed under it: the stop, not a fault
                log.warning("imap_idle_reconnect", mailbox=self.name, folder=folder, error=str(exc)[:200],
                            retry_in=delay)
            except Exception as exc:  # noqa: BLE001 - a watcher never dies silently; polling goes on
                if self._stop.is_set():
                    return
                log.warning("imap_idle_failed", mailbox=self.name, folder=folder,
                            error=f"{type(exc).__name__}: {str(exc)[:200]}", retry_in=delay)
            finally:
                with self._watch_lock:
                    self._idling = [x for x in self._idling if x.client is not None]
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, 300.0)

    def close(self) -> None:
        self._stop.set()
        with self._watch_lock:
            idling = list(self._idling)
        for s in idling:
            s.interrupt()
        for t in self._watchers:
            t.join(timeout=10)


def folder_state(settings: ImapSettings, name: str, folder: str) -> FolderState:
    """UIDVALIDITY, UIDNEXT and count of one folder (for `syncd check` and tests)."""
    with Session(settings, name) as s:
        return s.select(folder)
