"""Side effects: tasks, timeline comments and notices — each looked up or keyed so that a write
retried after a lost answer leaves one task, one comment, one visible notice."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.bitrix24.client import PAGE, Bitrix24Client
from connectors.bitrix24.settings import Bitrix24Settings
from connectors.bitrix24.values import ORIGINATOR, result_rows
from syncd.connector import WriteOp, WriteResult
from syncd.errors import PermanentError, TransientError


class SideEffects:
    client: Bitrix24Client
    settings: Bitrix24Settings
    _me: str | None

    # -- one by one (a retry after a lost answer looks the side effect up before adding it) -----------
    def _write_task(self, op: WriteOp) -> WriteResult:
        c = self.client
        if op.external_id is not None:
            # tasks are created by rules and not edited back; an update is a no-op here
            return WriteResult(str(op.external_id), dict(op.fields))
        fields, flt, want = self._task_fields(op)
        start = 0
        while True:
            env = c.call("tasks.task.list", self._task_list(flt, start))
            found = self._task_match(result_rows(env.result), fields, want)
            if found is not None:
                return found
            if env.next is None:
                break
            start = int(env.next)
        return self._task_added(c.call("tasks.task.add", {"fields": fields}).result)

    def _write_comment(self, op: WriteOp) -> WriteResult:
        """A timeline comment, looked up before it is added.

        Bitrix24 gives a timeline comment no external id (no XML_ID / ORIGIN_ID) and
        `crm.timeline.comment.list` filters by its owner only (ENTITY_ID + ENTITY_TYPE; CREATED and
        the text cannot be filtered on), and a marker in the text would be read by every manager.
        So the key is the owner + the exact text + our own user as the author: the owner's
        comments are read (newest first) and an equal one written by us is taken as this op's, so
        a create retried after a lost answer never adds a second comment. Two side effects that
        should both stay must therefore differ in text (the rules put the date or the reason in it).
        """
        c = self.client
        f, owner, text, author = self._comment_fields(op)
        start = 0
        while True:
            env = c.call("crm.timeline.comment.list", self._comment_list(owner, start))
            found = self._comment_match(result_rows(env.result), f, text, author)
            if found is not None:
                return found
            if env.next is None:
                break
            start = int(env.next)
        cid = c.call("crm.timeline.comment.add", {"fields": f}, retry=False).result
        return WriteResult(str(cid), f)

    def _write_notify(self, op: WriteOp) -> WriteResult:
        params = self._notify_op(op)
        nid = self.client.call("im.notify.system.add", params, retry=False).result
        return WriteResult(str(nid), params)

    # -- many at once: look-ups in `batch` calls, then the adds in `batch` calls ---------------------
    def side_effects_many(self, ops: Sequence[tuple[int, WriteOp]]) -> dict[int, WriteResult | Exception]:
        """New tasks, comments and notices, 50 commands a call: first every look-up (a task by its
        title and links, a comment by its owner's newest comments), then every add of what was not
        found. A look-up whose first page is full without a match falls back to the paging
        one-by-one write. Each result is its own: one refused command fails only its write."""
        out: dict[int, WriteResult | Exception] = {}
        adds: dict[int, tuple[str, dict[str, Any], Any]] = {}      # i -> (method, params, how to read)
        looks: dict[int, tuple[str, dict[str, Any], Any]] = {}
        for i, op in ops:
            try:
                if op.kind == "notify":
                    params = self._notify_op(op)
                    adds[i] = ("im.notify.system.add", params, lambda r, p=params: WriteResult(str(r), p))
                elif op.kind == "comment":
                    f, owner, text, author = self._comment_fields(op)
                    looks[i] = ("crm.timeline.comment.list", self._comment_list(owner, 0),
                                lambda rows, f=f, text=text, author=author: self._comment_match(rows, f, text, author))
                    adds[i] = ("crm.timeline.comment.add", {"fields": f}, lambda r, f=f: WriteResult(str(r), f))
                else:
                    fields, flt, want = self._task_fields(op)
                    looks[i] = ("tasks.task.list", self._task_list(flt, 0),
                                lambda rows, fields=fields, want=want: self._task_match(rows, fields, want))
                    adds[i] = ("tasks.task.add", {"fields": fields}, self._task_added)
            except (PermanentError, TransientError) as exc:
                out[i] = exc
        by_i = dict(ops)
        if looks:
            for i, res in self._batched({f"l{i}": (m, p) for i, (m, p, _) in looks.items()}, read=True).items():
                i = int(i[1:])
                if isinstance(res, Exception):
                    out[i] = res
                    continue
                rows = result_rows(res)
                found = looks[i][2](rows)
                if found is not None:
                    out[i] = found
                elif len(rows) >= PAGE:
                    try:
                        out[i] = self.write(by_i[i])        # more than a page to look through
                    except (PermanentError, TransientError) as exc:
                        out[i] = exc
        todo = {f"a{i}": (m, p) for i, (m, p, _) in adds.items() if i not in out}
        for key, res in self._batched(todo, read=False).items():
            i = int(key[1:])
            out[i] = res if isinstance(res, Exception) else adds[i][2](res)
        return out

    def _batched(self, cmds: dict[str, tuple[str, dict[str, Any]]], *, read: bool
                 ) -> dict[str, Any | Exception]:
        """Each command's result, or its error (a failed call fails the commands it carried)."""
        out: dict[str, Any | Exception] = {}
        items = list(cmds.items())
        for k in range(0, len(items), PAGE):
            chunk = dict(items[k:k + PAGE])
            try:
                res = self.client.batch(chunk, halt=0, retry=read)
            except (PermanentError, TransientError) as exc:
                out.update({key: exc for key in chunk})
                continue
            for key in chunk:
                try:
                    out[key] = res.get(key, connector=getattr(self, "name", "bitrix24"))
                except (PermanentError, TransientError) as exc:
                    out[key] = exc
        return out

    # -- the pieces both ways share -------------------------------------------------------------------
    def _task_fields(self, op: WriteOp) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        fields = dict(op.fields)
        uf = fields.get("UF_CRM_TASK")
        uf = [uf] if isinstance(uf, str) else list(uf or [])
        for pseudo, prefix in (("DEAL_ID", "D"), ("CONTACT_ID", "C"), ("COMPANY_ID", "CO"), ("LEAD_ID", "L")):
            v = fields.pop(pseudo, None)
            if v not in (None, "", 0, "0"):
                uf.append(f"{prefix}_{v}")
        if uf:
            fields["UF_CRM_TASK"] = uf
        if isinstance(fields.get("DEADLINE"), dt.datetime):
            fields["DEADLINE"] = fields["DEADLINE"].isoformat(timespec="seconds")
        # look the task up first (a create retried after a lost answer must find it): the portal
        # filters TITLE as a LIKE pattern (`%`, `_`), so the title is compared exactly here too
        flt: dict[str, Any] = {"TITLE": fields.get("TITLE")}
        if fields.get("RESPONSIBLE_ID"):
            flt["RESPONSIBLE_ID"] = fields["RESPONSIBLE_ID"]
        return fields, flt, sorted(str(x) for x in fields.get("UF_CRM_TASK") or [])

    @staticmethod
    def _task_list(flt: dict[str, Any], start: int) -> dict[str, Any]:
        return {"filter": flt, "select": ["ID", "TITLE", "UF_CRM_TASK"], "order": {"ID": "ASC"}, "start": start}

    @staticmethod
    def _task_match(rows: list[dict[str, Any]], fields: dict[str, Any], want: list[str]) -> WriteResult | None:
        for t in rows:
            same = str(t.get("title") or t.get("TITLE") or "") == str(fields.get("TITLE") or "")
            if same and sorted(str(x) for x in (t.get("ufCrmTask") or t.get("UF_CRM_TASK") or [])) == want:
                return WriteResult(str(t.get("id") or t.get("ID")), dict(t))
        return None

    @staticmethod
    def _task_added(res: Any) -> WriteResult:
        res = res or {}
        task = res.get("task", res) if isinstance(res, Mapping) else {}
        return WriteResult(str(task.get("id") or task.get("ID")), dict(task))

    def _comment_fields(self, op: WriteOp) -> tuple[dict[str, Any], dict[str, Any], str, str]:
        f = dict(op.fields)
        # the owner named by link pseudo-fields (a mail's comment: its deal, else lead, else contact)
        links = {k: f.pop(k, None) for k in ("DEAL_ID", "LEAD_ID", "CONTACT_ID", "COMPANY_ID")}
        links.update({k: v for k, v in (op.full or {}).items() if k in links and v not in (None, "", 0, "0")
                      and links.get(k) in (None, "", 0, "0")})
        if not f.get("ENTITY_ID"):
            for key, etype in (("DEAL_ID", "deal"), ("LEAD_ID", "lead"), ("CONTACT_ID", "contact"),
                               ("COMPANY_ID", "company")):
                if links.get(key) not in (None, "", 0, "0"):
                    f["ENTITY_TYPE"], f["ENTITY_ID"] = etype, links[key]
                    break
        if not f.get("ENTITY_ID"):
            raise PermanentError(f"comment {op.entity_id}: no owner (ENTITY_ID, DEAL_ID, LEAD_ID or CONTACT_ID)",
                                 connector=getattr(self, "name", "bitrix24"), op_id=op.op_id)
        f["ENTITY_TYPE"] = str(f.get("ENTITY_TYPE") or "deal").lower()
        text = " ".join(str(f.get("COMMENT") or "").split())     # as the portal may trim or re-wrap it
        author = str(f.get("AUTHOR_ID") or self._own_user())
        return f, {"ENTITY_ID": f.get("ENTITY_ID"), "ENTITY_TYPE": f["ENTITY_TYPE"]}, text, author

    @staticmethod
    def _comment_list(owner: dict[str, Any], start: int) -> dict[str, Any]:
        return {"filter": owner, "select": ["ID", "COMMENT", "AUTHOR_ID"], "order": {"ID": "DESC"}, "start": start}

    @staticmethod
    def _comment_match(rows: list[dict[str, Any]], f: dict[str, Any], text: str, author: str) -> WriteResult | None:
        for row in rows:
            if " ".join(str(row.get("COMMENT") or "").split()) == text and str(row.get("AUTHOR_ID") or "") == author:
                return WriteResult(str(row["ID"]), f)
        return None

    def _notify_op(self, op: WriteOp) -> dict[str, Any]:
        f = dict(op.fields)
        return self._notify_params(f.get("USER_ID"), str(f.get("MESSAGE") or ""), str(f.get("TAG") or op.external_key))

    def _own_user(self) -> str:
        """The portal user syncd writes as: the webhook's user, or the OAuth token's (`profile`)."""
        if self._me is None:
            hook = self.settings.webhook_url
            m = re.search(r"/rest/(\d+)/", hook.get_secret_value()) if hook is not None else None
            self._me = m.group(1) if m else str((self.client.call("profile").result or {}).get("ID") or "")
        return self._me

    def _notify_params(self, user: Any, text: str, tag: str | None) -> dict[str, Any]:
        """`im.notify.system.add` with TAG: "when adding a notification with an existing tag, other
        notifications will be removed" — so a notice re-sent after a lost answer replaces the first
        one instead of showing twice. The tag is unique within the application; through a webhook
        the docs ask for it "with CLIENT_ID", so the connector names itself (a stable value: the
        tag of a retry must land in the same namespace)."""
        params: dict[str, Any] = {"USER_ID": int(user) if str(user).isdigit() else user, "MESSAGE": text}
        if tag:
            params["TAG"] = tag
            if self.settings.is_webhook:
                params["CLIENT_ID"] = ORIGINATOR
        return params

    def notify(self, user: str, text: str, tag: str | None = None) -> str:
        """A system notice to a portal user (`im.notify.system.add`); what the rules engine calls
        to tell the responsible about a new deal or a timer. With `tag` (the side effect's key) a
        repeated notice replaces the earlier one. Returns the notice id."""
        return str(self.client.call("im.notify.system.add", self._notify_params(user, text, tag), retry=False).result)
