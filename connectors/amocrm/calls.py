"""Write kind `call`: a PBX's call logged in amoCRM as amoCRM's own telephony integrations log it —
a call note (`note_type` call_in for an incoming call, call_out for an outgoing one) on the client's
contact, with params uniq, duration, source, link (the recording: amoCRM shows a player), phone,
call_status and call_result (https://www.amocrm.ru/developers/content/crm_platform/events-and-notes,
the note types' params; the official PHP SDK's CallInNote sets the same six).

call_status is amoCRM's code (amocrm/amocrm-api-php, src/AmoCRM/Models/Interfaces/CallInterface.php;
the same codes as POST /api/v4/calls, https://www.amocrm.ru/developers/content/crm_platform/calls-api):
1 оставил сообщение, 2 перезвонить позже, 3 нет на месте, 4 разговор состоялся, 5 неверный номер,
6 не дозвонился, 7 номер занят, 8 не определён. syncd's statuses: answered -> 4, missed -> 6,
busy -> 7, failed -> 8; call_result is that status in words.

The record's fields (mappings/calls-amocrm.toml, the CRM's call map) are pseudo-fields: direction
(in|out), caller, called (the client's number is the caller's inbound, the called one outbound),
started_at (the note's created_at), duration, status, link, responsible_user_id, contact_id (the
known client's contact, its amoCRM id given by the engine). The note's id is the record's id here.

Idempotence: uniq is the op's key (its source record, "calls:<PBX call id>"). Before adding, the
contact's call notes are listed and the one with that uniq is taken — so a write retried after a
lost answer, or a call's events sent twice, never make a second note. A later change of the call
(the end after the start, the recording) updates the note: PATCH contacts/notes with its id
(amoCRM's "Редактирование примечаний", .../events-and-notes#notes-edit), params sent whole.

An unknown caller (no contact_id: nobody in syncd has the number): a contact with the number and a
lead in the main pipeline's first status (no pipeline/status given: amoCRM puts it there) with the
contact as its main contact, then the note on the contact. Both are stamped with the call's key in
the key field and looked up by it first, so a retry makes neither twice; a contact with that number
already in amoCRM (made there before syncd read it) takes the note and no lead is made.
Not the "unsorted" way (POST /api/v4/leads/unsorted/sip, https://www.amocrm.ru/developers/content/
crm_platform/unsorted-api): its metadata needs the service_code of a telephony widget installed in
the account — syncd is none — and an unsorted lead's contact is hidden from the contacts list (and
so from syncd's contacts stream) until a manager accepts it: the call's note and the client could
not be bound.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.amocrm.client import AmoClient, Invalid
from connectors.amocrm.meta import Catalog
from connectors.amocrm.settings import AmoCRMSettings
from connectors.amocrm.values import stamp_of, to_unix
from syncd.connector import WriteOp, WriteResult
from syncd.errors import BadInput, PermanentError

# pseudo-fields of the call kind (describe() lists them for the mapping check)
CALL_FIELDS = ("direction", "caller", "called", "started_at", "duration", "status", "link",
               "responsible_user_id", "contact_id")
NOTE_TYPES = {"in": "call_in", "out": "call_out"}
# syncd's status -> amoCRM's call_status (CallInterface) and its words, as amoCRM shows them
CALL_STATUS = {"answered": 4, "missed": 6, "busy": 7, "failed": 8}
CALL_RESULT = {"answered": "Разговор состоялся", "missed": "Не дозвонился", "busy": "Номер занят",
               "failed": "Не определён"}
SOURCE = "syncd"
LEAD_NAMES = {"in": "Входящий звонок {phone}", "out": "Исходящий звонок {phone}"}


def _digits(v: Any) -> str:
    return re.sub(r"\D", "", str(v or ""))


class Calls:
    client: AmoClient
    catalog: Catalog
    settings: AmoCRMSettings
    name: str

    # Writes
    lookup: Any
    _keys: Any
    _post: Any

    def _write_call(self, op: WriteOp) -> WriteResult:
        f: dict[str, Any] = {**dict(op.full or {}), **dict(op.fields)}
        direction = str(f.get("direction") or "in")
        if direction not in NOTE_TYPES:
            raise BadInput(f"amoCRM call.direction: {direction!r} is not in or out", record=op.entity_id)
        phone = f.get("called") if direction == "out" else f.get("caller")
        if not phone:
            raise PermanentError(f"call {op.entity_id}: no client number", connector=self.name, op_id=op.op_id)
        uniq = stamp_of(op.origin, op.external_key)
        note = {"note_type": NOTE_TYPES[direction], "params": self._call_params(op, f, uniq, str(phone))}
        if op.external_id is not None:
            try:
                self.client.request("PATCH", "contacts/notes", json=[{"id": int(op.external_id), **note}],
                                    what=f"update call note {op.external_id}")
                return WriteResult(str(op.external_id), dict(op.fields))
            except Invalid:
                pass                  # the note is gone (deleted by a manager): logged again below
        contact = self._call_contact(op, f, str(phone), direction)
        for n in self.client.all(f"contacts/{contact}/notes", "notes",
                                 {"filter[note_type][0]": "call_in", "filter[note_type][1]": "call_out"}):
            if str((n.get("params") or {}).get("uniq") or "") == uniq:
                if n.get("params") != note["params"]:
                    self.client.request("PATCH", f"contacts/{contact}/notes/{n['id']}", json=note,
                                        what=f"update call note {n['id']}")
                return WriteResult(str(n["id"]), dict(op.fields), found=True)
        body: dict[str, Any] = {**note, "request_id": "0"}
        if (started := self._call_value(op, "started_at", to_unix, f.get("started_at"))) is not None:
            body["created_at"] = started
        if f.get("responsible_user_id") not in (None, ""):
            body["responsible_user_id"] = self._call_value(op, "responsible_user_id", int, f["responsible_user_id"])
        ans = self.client.request("POST", f"contacts/{contact}/notes", json=[body],
                                  what=f"add call note to contact {contact}")
        got = ((ans.data or {}).get("_embedded") or {}).get("notes") or []
        return WriteResult(str(got[0]["id"]), dict(op.fields), found=False)

    def _call_value(self, op: WriteOp, field: str, fn: Any, v: Any) -> Any:
        if v in (None, ""):
            return None
        try:
            return fn(v)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"amoCRM call.{field}: {exc}", record=op.entity_id) from None

    def _call_params(self, op: WriteOp, f: Mapping[str, Any], uniq: str, phone: str) -> dict[str, Any]:
        params: dict[str, Any] = {"uniq": uniq, "duration": self._call_value(op, "duration", int, f.get("duration")) or 0,
                                  "source": SOURCE, "phone": phone}
        if f.get("link"):
            params["link"] = str(f["link"])
        status = f.get("status")
        if status not in (None, ""):
            if status not in CALL_STATUS:
                raise BadInput(f"amoCRM call.status: {status!r} (known: {', '.join(CALL_STATUS)})",
                               record=op.entity_id)
            params["call_status"] = CALL_STATUS[str(status)]
            params["call_result"] = CALL_RESULT[str(status)]
        return params

    # -- the client --------------------------------------------------------------------------------
    def _call_contact(self, op: WriteOp, f: Mapping[str, Any], phone: str, direction: str) -> int:
        """The contact the note goes on: the known client's, else one made for the caller (with a lead)."""
        if f.get("contact_id") not in (None, "", 0, "0"):
            return int(self._call_value(op, "contact_id", int, f["contact_id"]))
        keys: Sequence[str] = self._keys(op)
        found = self.lookup("contact", keys)
        if found is None:
            by_phone = self._contact_by_phone(phone)
            if by_phone is not None:
                return by_phone             # made in amoCRM before syncd read it: his, no lead
        stamp = stamp_of(op.origin, op.external_key)
        owner: dict[str, Any] = {}
        if f.get("responsible_user_id") not in (None, ""):
            owner["responsible_user_id"] = self._call_value(op, "responsible_user_id", int, f["responsible_user_id"])
        if found is None:
            phone_f = self.catalog.field("contact", "PHONE")
            cfs = [{"field_id": self.catalog.key_field("contact", self.settings.key_field).id,
                    "values": [{"value": stamp}]}]
            if phone_f is not None:
                cfs.append({"field_id": phone_f.id, "values": [{"value": phone, "enum_code": "WORK"}]})
            new = self._post("contact", [{"name": phone, **owner, "custom_fields_values": cfs, "request_id": "0"}], op)
            found = new["0"]
        if self.lookup("lead", keys) is None:
            kf = self.catalog.key_field("lead", self.settings.key_field)
            self._post("lead", [{"name": LEAD_NAMES[direction].format(phone=phone), **owner,
                                 "custom_fields_values": [{"field_id": kf.id, "values": [{"value": stamp}]}],
                                 "_embedded": {"contacts": [{"id": int(found), "is_main": True}]},
                                 "request_id": "0"}], op)
        return int(found)

    def _contact_by_phone(self, phone: str) -> int | None:
        """The one contact whose phone is this number (the last 10 digits compared), else None."""
        tail = _digits(phone)[-10:]
        if len(tail) < 5:
            return None
        hits = set()
        for c in self.client.all("contacts", "contacts", {"query": tail}):
            for e in c.get("custom_fields_values") or []:
                if e.get("field_code") == "PHONE" and any(_digits(v.get("value")).endswith(tail)
                                                          for v in e.get("values") or []):
                    hits.add(int(c["id"]))
        return hits.pop() if len(hits) == 1 else None
