"""Side effects: tasks, timeline comments and notices — each looked up or keyed so that a write
retried after a lost answer leaves one task, one comment, one visible notice."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from connectors.bitrix24.client import Bitrix24Client
from connectors.bitrix24.settings import Bitrix24Settings
from connectors.bitrix24.values import ORIGINATOR, result_rows
from syncd.connector import WriteOp, WriteResult
from syncd.errors import PermanentError


class SideEffects:
    client: Bitrix24Client
    settings: Bitrix24Settings
    _me: str | None

    def _write_task(self, op: WriteOp) -> WriteResult:
        c = self.client
        fields = dict(op.fields)
        if op.external_id is not None:
            # tasks are created by rules and not edited back; an update is a no-op here
            return WriteResult(str(op.external_id), fields)
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
        want = sorted(str(x) for x in fields.get("UF_CRM_TASK") or [])
        start = 0
        while True:
            env = c.call("tasks.task.list", {"filter": flt, "select": ["ID", "TITLE", "UF_CRM_TASK"],
                                             "order": {"ID": "ASC"}, "start": start})
            for t in result_rows(env.result):
                same = str(t.get("title") or t.get("TITLE") or "") == str(fields.get("TITLE") or "")
                if same and sorted(str(x) for x in (t.get("ufCrmTask") or t.get("UF_CRM_TASK") or [])) == want:
                    return WriteResult(str(t.get("id") or t.get("ID")), dict(t))
            if env.next is None:
                break
            start = int(env.next)
        res = c.call("tasks.task.add", {"fields": fields}).result or {}
        task = res.get("task", res) if isinstance(res, Mapping) else {}
        return WriteResult(str(task.get("id") or task.get("ID")), dict(task))

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
        owner = {"ENTITY_ID": f.get("ENTITY_ID"), "ENTITY_TYPE": f["ENTITY_TYPE"]}
        start = 0
        while True:
            env = c.call("crm.timeline.comment.list", {"filter": owner, "select": ["ID", "COMMENT", "AUTHOR_ID"],
                                                       "order": {"ID": "DESC"}, "start": start})
            for row in result_rows(env.result):
                if " ".join(str(row.get("COMMENT") or "").split()) == text and str(row.get("AUTHOR_ID") or "") == author:
                    return WriteResult(str(row["ID"]), f)
            if env.next is None:
                break
            start = int(env.next)
        cid = c.call("crm.timeline.comment.add", {"fields": f}, retry=False).result
        return WriteResult(str(cid), f)

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

    def _write_notify(self, op: WriteOp) -> WriteResult:
        f = dict(op.fields)
        params = self._notify_params(f.get("USER_ID"), str(f.get("MESSAGE") or ""), str(f.get("TAG") or op.external_key))
        nid = self.client.call("im.notify.system.add", params, retry=False).result
        return WriteResult(str(nid), params)

    def notify(self, user: str, text: str, tag: str | None = None) -> str:
        """A system notice to a portal user (`im.notify.system.add`); what the rules engine calls
        to tell the responsible about a new deal or a timer. With `tag` (the side effect's key) a
        repeated notice replaces the earlier one. Returns the notice id."""
        return str(self.client.call("im.notify.system.add", self._notify_params(user, text, tag), retry=False).result)
