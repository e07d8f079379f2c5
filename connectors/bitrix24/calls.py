"""Write kind `call`: a PBX's call shown in the portal as its own telephony does it —
`telephony.externalcall.register` when it starts, `finish` when it ended (that makes the call
activity on the client's timeline, with its duration and status), `attachRecord` when the
recording's URL is known.

The record's fields (mappings/calls.toml, the CRM's call map) are pseudo-fields named after the
methods' parameters: CALLER, CALLED, DIRECTION (in|out), USER_PHONE_INNER (the extension),
USER_ID (the responsible), CALL_START_DATE, DURATION, STATUS (answered|missed|busy|failed),
RECORD_URL, CONTACT_ID (the known client). The portal's CALL_ID is the record's id here.

Idempotence: register is sent with EXTERNAL_CALL_ID = the op's key; the portal answers a repeat
within 30 minutes with the same call while it is active, and a finished call is found in
`voximplant.statistic.get` by that key first — so a write retried after a lost answer, or a
call's events sent twice, never make a second call (nor a second activity or lead).
register/finish work only in an application's context (OAuth settings), as on the real portal.
CRM_CREATE (setting `call_crm_create`) lets the portal make the lead (or, without leads, the
contact and deal) of an unknown caller itself; syncd reads it through its leads stream.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from connectors.bitrix24.client import Bitrix24Client
from connectors.bitrix24.settings import Bitrix24Settings
from connectors.bitrix24.values import result_rows
from syncd.connector import WriteOp, WriteResult
from syncd.errors import PermanentError

# pseudo-fields of the call kind (describe() lists them for the mapping check)
CALL_FIELDS = ("CALLER", "CALLED", "DIRECTION", "USER_PHONE_INNER", "USER_ID", "CALL_START_DATE", "DURATION",
               "STATUS", "RECORD_URL", "CONTACT_ID")
# telephony.externalcall.finish STATUS_CODE (SIP-like codes the portal documents): 304 is a missed
# call, which the portal marks on the activity (SETTINGS.MISSED_CALL) and leaves to be done
STATUS_CODES = {"answered": "200", "missed": "304", "busy": "486", "failed": "603"}
TYPES = {"in": 2, "out": 1}          # TYPE: 1 outgoing, 2 incoming


def _iso(v: Any) -> str | None:
    if v in (None, ""):
        return None
    if isinstance(v, dt.datetime):
        return v.isoformat(timespec="seconds")
    return str(v)


class Calls:
    client: Bitrix24Client
    settings: Bitrix24Settings
    name: str

    _own_user: Callable[[], str]        # SideEffects: the user syncd works as

    def _write_call(self, op: WriteOp) -> WriteResult:
        f = {**dict(op.full or {}), **dict(op.fields)}
        direction = str(f.get("DIRECTION") or "in")
        phone = f.get("CALLED") if direction == "out" else f.get("CALLER")
        if not phone:
            raise PermanentError(f"call {op.entity_id}: no client number", connector=self.name, op_id=op.op_id)
        user = self._call_user(f)
        stat = None
        call_id = str(op.external_id) if op.external_id else None
        if call_id is None:
            stat = self._call_stat({"EXTERNAL_CALL_ID": op.external_key})
            if stat is not None:
                call_id = str(stat["CALL_ID"])
            else:
                call_id = self._register(op, f, str(phone), direction, user)
        else:
            stat = self._call_stat({"CALL_ID": call_id})
        status = f.get("STATUS")
        if stat is None and status:
            stat = self._finish(call_id, f, user, str(status))
        record = f.get("RECORD_URL")
        if stat is not None and record and stat.get("CALL_RECORD_URL") != record:
            self.client.call("telephony.externalcall.attachRecord", {"CALL_ID": call_id, "RECORD_URL": record})
        return WriteResult(call_id, dict(op.fields))

    def _call_user(self, f: dict[str, Any]) -> dict[str, Any]:
        """Whose call it is: the extension on it (who answered or dialled), else the responsible,
        else the user syncd works as (the portal needs one)."""
        if f.get("USER_PHONE_INNER"):
            return {"USER_PHONE_INNER": str(f["USER_PHONE_INNER"])}
        return {"USER_ID": str(f.get("USER_ID") or self._own_user())}

    def _call_stat(self, flt: dict[str, Any]) -> dict[str, Any] | None:
        rows = result_rows(self.client.call("voximplant.statistic.get", {"FILTER": flt}).result)
        return rows[0] if rows else None

    def _register(self, op: WriteOp, f: dict[str, Any], phone: str, direction: str, user: dict[str, Any]) -> str:
        params: dict[str, Any] = {**user, "PHONE_NUMBER": phone, "TYPE": TYPES.get(direction, 2), "SHOW": 0,
                                  "EXTERNAL_CALL_ID": op.external_key}
        if start := _iso(f.get("CALL_START_DATE")):
            params["CALL_START_DATE"] = start
        if f.get("CONTACT_ID") not in (None, "", 0, "0"):
            # the known client (matched by syncd, any spelling): bound, never a new lead
            params.update(CRM_ENTITY_TYPE="CONTACT", CRM_ENTITY_ID=f["CONTACT_ID"], CRM_CREATE=0)
        else:
            params["CRM_CREATE"] = 1 if self.settings.call_crm_create else 0
        try:
            res = self.client.call("telephony.externalcall.register", params).result
        except PermanentError as exc:
            if "USER_PHONE_INNER" not in params or "user" not in str(exc).lower():
                raise
            # an extension that is nobody's in the portal: the call is the responsible's (or ours)
            params.pop("USER_PHONE_INNER")
            params["USER_ID"] = str(f.get("USER_ID") or self._own_user())
            user.clear()
            user.update(USER_ID=params["USER_ID"])
            res = self.client.call("telephony.externalcall.register", params).result
        return str((res or {}).get("CALL_ID") or "")

    def _finish(self, call_id: str, f: dict[str, Any], user: dict[str, Any], status: str) -> dict[str, Any] | None:
        params: dict[str, Any] = {**user, "CALL_ID": call_id, "DURATION": int(f.get("DURATION") or 0),
                                  "STATUS_CODE": STATUS_CODES.get(status, "603")}
        try:
            self.client.call("telephony.externalcall.finish", params, retry=False)
        except PermanentError as exc:
            # finished already (an answer lost on the way): the statistics have it
            found = self._call_stat({"CALL_ID": call_id})
            if found is None:
                raise exc
            return found
        return self._call_stat({"CALL_ID": call_id}) or {"CALL_ID": call_id}
