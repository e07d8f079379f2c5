"""Write kind `call`: a PBX's call in RetailCRM's calls history, as RetailCRM's telephony integrations
put it there — ``POST /api/v5/telephony/calls/upload`` with the form field ``calls`` = a JSON list of
{date "Y-m-d H:i:s", type in|out, phone (the client's number), code (the manager's internal number),
result, duration, externalId, recordUrl, externalPhone, site, clientId}
(retailcrm/api-client-php: src/Model/Entity/Telephony/Call.php, tests/src/ResourceGroup/TelephonyTest.php;
retailcrm/api-client-python: ``telephony_calls_upload``). The answer is {"success", "processedCallsCount",
"duplicateCalls"?: [externalId, ...]} (src/Model/Response/Telephony/CallsUploadResponse.php).
RetailCRM attaches the call to the customer with that phone and to the manager with that code itself.

result is RetailCRM's (src/Enum/Telephony/CallResult.php): answered | busy | failed | no answer |
not allowed | unknown. syncd's statuses: answered -> answered, missed -> no answer, busy -> busy,
failed -> failed.

Idempotence: externalId is the op's key (its source record: ``calls-<PBX call id>``). A call uploaded again with the same
externalId is reported in duplicateCalls and not saved twice, so a retried write (an answer lost) or a
call's events sent twice never make a second call. The record's id in RetailCRM is that externalId
(the upload returns no id).

The upload is once: RetailCRM has no method to change an uploaded call. So a call is uploaded when it
has ended (its status is known); a write before that (the start event alone) sends nothing, and the
write after the end uploads it. A recording arriving after the upload is not sent (it would be a
duplicate): PBXs that post the record URL with the end event have it uploaded.

Telephony module: the upload needs an active integration module with ``integrations.telephony``
(``POST /api/v5/integration-modules/{code}/edit``, src/Model/Entity/Integration/Telephony/
TelephonyConfiguration.php). The settings' ``telephony_module`` names its code; if the account has no
such module, the connector registers it (name "syncd", clientId = the code, no call events: syncd
only uploads history). Calls carry its clientId.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from typing import Any

from connectors.retailcrm.client import RetailCRMClient
from connectors.retailcrm.settings import RetailCRMSettings
from syncd.connector import WriteOp, WriteResult
from syncd.errors import BadInput, PermanentError

# pseudo-fields of the call kind (describe() lists them for the mapping check)
CALL_FIELDS = ("direction", "caller", "called", "extension", "started_at", "duration", "status", "recordUrl")
RESULTS = {"answered": "answered", "missed": "no answer", "busy": "busy", "failed": "failed"}
TYPES = ("in", "out")


class Calls:
    client: RetailCRMClient
    settings: RetailCRMSettings
    name: str
    _telephony_client: str | None = None

    def _write_call(self, op: WriteOp, preset: str | None) -> WriteResult:
        f: dict[str, Any] = {**dict(op.full or {}), **dict(op.fields)}
        key = op.external_key
        status = f.get("status")
        if status in (None, ""):
            return WriteResult(key, dict(op.fields))        # not ended yet: uploaded at its end
        if status not in RESULTS:
            raise BadInput(f"RetailCRM call.status: {status!r} (known: {', '.join(RESULTS)})", record=op.entity_id)
        direction = str(f.get("direction") or "in")
        if direction not in TYPES:
            raise BadInput(f"RetailCRM call.direction: {direction!r} is not in or out", record=op.entity_id)
        phone, ours = (f.get("called"), f.get("caller")) if direction == "out" else (f.get("caller"), f.get("called"))
        if not phone:
            raise PermanentError(f"call {op.entity_id}: no client number", connector=self.name, op_id=op.op_id)
        call: dict[str, Any] = {"date": self._call_date(op, f.get("started_at")), "type": direction,
                                "phone": str(phone), "result": RESULTS[str(status)],
                                "duration": self._call_int(op, f.get("duration")), "externalId": key,
                                "clientId": self._telephony()}
        if f.get("extension") not in (None, ""):
            call["code"] = str(f["extension"])
        if ours not in (None, ""):
            call["externalPhone"] = str(ours)
        if f.get("recordUrl"):
            call["recordUrl"] = str(f["recordUrl"])
        if self.settings.site:
            call["site"] = self.settings.site
        got = self.client.post("telephony/calls/upload", {"calls": [call]}, what=f"call {key} (op {op.op_id})")
        dup = key in [str(x) for x in got.get("duplicateCalls") or []]
        return WriteResult(key, dict(op.fields), found=dup)

    def _telephony(self) -> str:
        """The clientId of the telephony module named in the settings, registered if it is not there."""
        if self._telephony_client is not None:
            return self._telephony_client
        code = self.settings.telephony_module
        if not code:
            raise PermanentError("RetailCRM calls need `telephony_module` in this system's settings (the code "
                                 "of the telephony integration module the calls are uploaded for)",
                                 connector=self.name)
        got = self.client.get(f"integration-modules/{code}", missing_ok=True)
        module = (got or {}).get("integrationModule") or {}
        if not module or not module.get("active") or not (module.get("integrations") or {}).get("telephony"):
            body = {"code": code, "integrationCode": module.get("integrationCode") or code,
                    "name": module.get("name") or "syncd", "clientId": module.get("clientId") or code,
                    "active": True,
                    "integrations": {**(module.get("integrations") or {}), "telephony": {
                        "inputEventSupported": False, "outputEventSupported": False,
                        "hangupEventSupported": False, "allowEdit": False}}}
            self.client.post(f"integration-modules/{code}/edit", {"integrationModule": body},
                             what=f"telephony module {code}")
            module = body
        self._telephony_client = str(module.get("clientId") or code)
        return self._telephony_client

    def _call_date(self, op: WriteOp, v: Any) -> str:
        """The account's local time, "Y-m-d H:i:s" (now when the PBX gave no start)."""
        tz = zoneinfo.ZoneInfo(self.settings.timezone)
        try:
            if v in (None, ""):
                t = dt.datetime.now(tz)
            elif isinstance(v, dt.datetime):
                t = v
            elif isinstance(v, (int, float)):
                t = dt.datetime.fromtimestamp(v, tz)
            else:
                t = dt.datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        except (TypeError, ValueError) as exc:
            raise BadInput(f"RetailCRM call.started_at: {exc}", record=op.entity_id) from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        return t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")

    @staticmethod
    def _call_int(op: WriteOp, v: Any) -> int:
        if v in (None, ""):
            return 0
        try:
            return int(float(v))
        except (TypeError, ValueError):
            raise BadInput(f"RetailCRM call.duration: {v!r} is not a number", record=op.entity_id) from None


def call_kind() -> Mapping[str, set[str]]:
    return {"call": set(CALL_FIELDS)}
