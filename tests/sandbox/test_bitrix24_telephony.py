"""The sandbox's external telephony (telephony.externalCall.*, voximplant.statistic.get, the call
activities in crm.activity.list) over HTTPS, through the official SDK b24pysdk unchanged (its typed
wrappers ``client.telephony.external_call.*`` / ``client.voximplant.statistic.get``) as an OAuth
application — register and finish work only in an application's context — and through plain REST."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from b24pysdk import BitrixApp, BitrixToken, BitrixWebhook, Client
from b24pysdk.errors import BitrixAPIError

from syncd.sandbox.bitrix24 import start

CONTACT_PHONE = "+7 (912) 345-67-01"          # as the manager typed it into the contact


@pytest.fixture(scope="module")
def portal() -> Iterator[Any]:
    h = start(rate_limit=False, https=True)
    yield h
    h.stop()


@pytest.fixture
def env(portal: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A clean default portal (data wiped, telephony knobs back to the portal's defaults)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", portal.extra["ca_bundle"])
    ctl_base = f"{portal.url}/_sandbox/default"
    assert requests.post(ctl_base + "/reset", timeout=10).status_code == 200
    requests.patch(ctl_base + "/telephony", json={"leads_enabled": True, "app_only": True}, timeout=10)
    for u in requests.get(ctl_base + "/users", timeout=10).json()["users"]:   # users outlive a reset
        requests.patch(f"{ctl_base}/users/{u['ID']}", json={"phone_inner": None, "active": u["ID"] == "1"}, timeout=10)
    tok = requests.post(ctl_base + "/oauth/tokens", json={"user_id": 1}, timeout=10).json()
    info = portal.extra["state"].portal().info()
    domain = f"127.0.0.1:{portal.port}"
    app = Client(BitrixToken(domain=domain, auth_token=tok["access_token"],
                             bitrix_app=BitrixApp(client_id=tok["client_id"], client_secret=tok["client_secret"])))
    hook = Client(BitrixWebhook(domain=domain, webhook_token=f"{info['user_id']}/{info['webhook_code']}"))
    return {"url": portal.url, "ctl": ctl_base, "app": app, "hook": hook, "token": tok["access_token"],
            "webhook_url": portal.extra["webhook_url"]}


def ctl(env: dict[str, Any], method: str, path: str, body: Any = None) -> Any:
    r = requests.request(method, env["ctl"] + path, json=body, timeout=10)
    assert r.status_code < 300, (r.status_code, r.text)
    return r.json()


def rest(env: dict[str, Any], method: str, params: dict[str, Any], *, oauth: bool = True) -> requests.Response:
    if oauth:
        return requests.post(f"{env['url']}/rest/{method}.json", json={**params, "auth": env["token"]}, timeout=10)
    return requests.post(env["webhook_url"] + method + ".json", json=params, timeout=10)


def manager(env: dict[str, Any], inner: str = "101") -> int:
    u = ctl(env, "POST", "/users", {"name": "Анна", "last_name": "Смирнова", "workday": "OPENED",
                                     "phone_inner": inner})
    return int(u["ID"])


def contact(env: dict[str, Any], owner: int, phone: str = CONTACT_PHONE) -> int:
    return env["hook"].crm.contact.add(fields={"NAME": "Дмитрий", "LAST_NAME": "Волков", "ASSIGNED_BY_ID": owner,
                                               "PHONE": [{"VALUE": phone, "VALUE_TYPE": "MOBILE"}]}).result


def activities(env: dict[str, Any], **flt: Any) -> list[dict[str, Any]]:
    return env["hook"].crm.activity.list(filter=flt or {"TYPE_ID": 2}).result


# -- users and their extensions -----------------------------------------------------------------------
def test_uf_phone_inner_is_read_and_filtered_through_user_get(env: dict[str, Any]) -> None:
    anna = manager(env, "101")
    igor = int(ctl(env, "POST", "/users", {"name": "Игорь", "last_name": "Петров"})["ID"])
    found = env["hook"].user.get(filter={"UF_PHONE_INNER": "101"}).result
    assert [(u["ID"], u["UF_PHONE_INNER"]) for u in found] == [(str(anna), "101")]
    ctl(env, "PATCH", f"/users/{igor}", {"phone_inner": "102"})
    assert env["hook"].user.get(filter={"ID": igor}).result[0]["UF_PHONE_INNER"] == "102"
    ctl(env, "PATCH", f"/users/{igor}", {"phone_inner": None})
    assert env["hook"].user.get(filter={"ID": igor}).result[0]["UF_PHONE_INNER"] is None


# -- a known caller -----------------------------------------------------------------------------------
def test_incoming_call_from_a_known_contact_in_another_spelling_is_bound_and_logged(env: dict[str, Any]) -> None:
    anna = manager(env, "101")
    cid = contact(env, anna)
    reg = env["app"].telephony.external_call.register(
        phone_number="8 912 345 67 01", call_type=2, user_phone_inner="101",
        call_start_date="2026-03-10T11:19:38+03:00", crm_create=1, line_number="74951234567",
        external_call_id="asterisk-1.1").result
    assert reg["CALL_ID"].startswith("externalCall.")
    assert (reg["CRM_ENTITY_TYPE"], reg["CRM_ENTITY_ID"], reg["CRM_CREATED_LEAD"], reg["CRM_CREATED_ENTITIES"]) == \
        ("CONTACT", cid, None, [])
    assert env["hook"].crm.lead.list().result == []                 # a known client: no lead
    # the activity is written when the call is finished (docs: register alone makes none)
    assert activities(env) == []
    active = ctl(env, "GET", "/telephony/calls")["calls"]
    assert [(c["CALL_ID"], c["USER_ID"], c["SHOWN_TO"]) for c in active] == [(reg["CALL_ID"], anna, [anna])]

    fin = env["app"].telephony.external_call.finish(
        call_id=reg["CALL_ID"], user_id=anna, duration=95, status_code="200", vote=5,
        record_url="https://records.example.com/2026/03/call-1.mp3").result
    assert (fin["CALL_DURATION"], fin["CALL_STATUS"], fin["CALL_FAILED_CODE"], fin["INCOMING"]) == (95, 1, "200", "2")
    assert (fin["PORTAL_USER_ID"], fin["CRM_ENTITY_TYPE"], fin["CRM_ENTITY_ID"]) == (anna, "CONTACT", cid)
    assert (fin["PORTAL_NUMBER"], fin["EXTERNAL_CALL_ID"], fin["CALL_START_DATE"]) == ("74951234567", "asterisk-1.1", {})
    [act] = activities(env, OWNER_TYPE_ID=3, OWNER_ID=cid)
    assert act["ID"] == str(fin["CRM_ACTIVITY_ID"])
    assert (act["TYPE_ID"], act["PROVIDER_ID"], act["DIRECTION"], act["COMPLETED"], act["RESPONSIBLE_ID"]) == \
        ("2", "VOXIMPLANT_CALL", "1", "Y", str(anna))
    assert act["ORIGIN_ID"] == "VI_" + reg["CALL_ID"]
    start_, end = dt.datetime.fromisoformat(act["START_TIME"]), dt.datetime.fromisoformat(act["END_TIME"])
    assert start_ == dt.datetime.fromisoformat("2026-03-10T11:19:38+03:00") and (end - start_).total_seconds() == 95
    assert [f["url"] for f in act["FILES"]] == ["https://records.example.com/2026/03/call-1.mp3"]
    [stat] = env["app"].voximplant.statistic.get(filter={"CALL_ID": reg["CALL_ID"]}).result
    assert (stat["CALL_DURATION"], stat["CALL_TYPE"], stat["CALL_VOTE"], stat["CALL_RECORD_URL"]) == \
        ("95", "2", "5", "https://records.example.com/2026/03/call-1.mp3")
    # the call is over: a second finish finds nothing, as on the portal (the call row is deleted)
    with pytest.raises(BitrixAPIError) as again:
        _ = env["app"].telephony.external_call.finish(call_id=reg["CALL_ID"], user_id=anna, duration=95).result
    assert again.value.error == "ERROR_CORE"
    assert again.value.error_description == "Call is not found (call should be registered prior to finishing"
    assert len(env["app"].voximplant.statistic.get().result) == 1


def test_search_crm_entities_finds_the_contact_and_its_responsible(env: dict[str, Any]) -> None:
    anna = manager(env, "101")
    cid = contact(env, anna)
    company = env["hook"].crm.company.add(fields={"TITLE": "ООО «СтройМонтаж»", "ASSIGNED_BY_ID": 1,
                                                  "PHONE": [{"VALUE": "+7 495 777-10-00", "VALUE_TYPE": "WORK"}]}).result
    found = env["hook"].telephony.external_call.search_crm_entities(phone_number="79123456701").result
    assert found == [{"CRM_ENTITY_TYPE": "CONTACT", "CRM_ENTITY_ID": cid, "ASSIGNED_BY_ID": anna,
                      "NAME": "Дмитрий Волков",
                      "ASSIGNED_BY": {"ID": str(anna), "TIMEMAN_STATUS": "OPENED", "USER_PHONE_INNER": "101",
                                      "WORK_PHONE": None, "PERSONAL_PHONE": None, "PERSONAL_MOBILE": None}}]
    other = env["hook"].telephony.external_call.search_crm_entities(phone_number="8(495)7771000").result
    assert [(x["CRM_ENTITY_TYPE"], x["CRM_ENTITY_ID"], x["NAME"]) for x in other] == \
        [("COMPANY", company, "ООО «СтройМонтаж»")]
    assert env["hook"].telephony.external_call.search_crm_entities(phone_number="+1 555 0100").result == []
    r = rest(env, "telephony.externalCall.searchCrmEntities", {"PHONE_NUMBER": ""}, oauth=False)
    assert (r.status_code, r.json()["error"], r.json()["error_description"]) == (400, "ERROR_CORE",
                                                                                  "PHONE_NUMBER is empty")


# -- an unknown caller --------------------------------------------------------------------------------
def test_unknown_number_with_crm_create_makes_one_lead_with_that_phone(env: dict[str, Any]) -> None:
    anna = manager(env, "101")
    reg = rest(env, "telephony.externalcall.register",
               {"USER_ID": anna, "PHONE_NUMBER": "+7 903 111-22-33", "TYPE": 2, "CRM_CREATE": 1,
                "CRM_SOURCE": "WEB", "SHOW": 0}).json()["result"]
    lead_id = reg["CRM_CREATED_LEAD"]
    assert (reg["CRM_ENTITY_TYPE"], reg["CRM_ENTITY_ID"]) == ("LEAD", lead_id)
    assert reg["CRM_CREATED_ENTITIES"] == [{"ENTITY_TYPE": "LEAD", "ENTITY_ID": lead_id}]
    [lead] = env["hook"].crm.lead.list(select=["ID", "TITLE", "PHONE", "SOURCE_ID", "ASSIGNED_BY_ID"]).result
    assert lead["ID"] == str(lead_id) and lead["TITLE"] == "+7 903 111-22-33 - Входящий звонок"
    assert [p["VALUE"] for p in lead["PHONE"]] == ["+79031112233"] and lead["SOURCE_ID"] == "WEB"
    # the same call registered again within 30 minutes gets the same CALL_ID and no second lead
    again = rest(env, "telephony.externalcall.register",
                 {"USER_ID": anna, "PHONE_NUMBER": "+7 903 111-22-33", "TYPE": 2, "CRM_CREATE": 1}).json()["result"]
    assert again["CALL_ID"] == reg["CALL_ID"] and again["CRM_CREATED_LEAD"] == lead_id
    assert len(env["hook"].crm.lead.list().result) == 1
    # finished by another manager: the created lead goes to them
    igor = manager(env, "102")
    fin = rest(env, "telephony.externalcall.finish",
               {"CALL_ID": reg["CALL_ID"], "USER_PHONE_INNER": "102", "DURATION": 30}).json()["result"]
    assert (fin["PORTAL_USER_ID"], fin["CALL_FAILED_CODE"], fin["CRM_ENTITY_TYPE"]) == (igor, "200", "LEAD")
    assert env["hook"].crm.lead.get(bitrix_id=lead_id).result["ASSIGNED_BY_ID"] == str(igor)
    [act] = activities(env, OWNER_TYPE_ID=1, OWNER_ID=lead_id)
    assert act["COMPLETED"] == "Y" and act["RESPONSIBLE_ID"] == str(igor)


def test_no_leads_mode_makes_a_deal_with_a_contact(env: dict[str, Any]) -> None:
    assert ctl(env, "PATCH", "/telephony", {"leads_enabled": False})["settings"]["leads_enabled"] is False
    anna = manager(env, "101")
    reg = env["app"].telephony.external_call.register(phone_number="+7 999 000-11-22", call_type=2, user_id=anna,
                                                      crm_create=1).result
    created = {e["ENTITY_TYPE"]: e["ENTITY_ID"] for e in reg["CRM_CREATED_ENTITIES"]}
    assert set(created) == {"CONTACT", "DEAL"} and reg["CRM_CREATED_LEAD"] is None
    assert (reg["CRM_ENTITY_TYPE"], reg["CRM_ENTITY_ID"]) == ("CONTACT", created["CONTACT"])
    assert env["hook"].crm.lead.list().result == []
    deal = env["hook"].crm.deal.get(bitrix_id=created["DEAL"]).result
    assert deal["CONTACT_ID"] == str(created["CONTACT"]) and deal["TITLE"] == "+7 999 000-11-22 - Входящий звонок"
    person = env["hook"].crm.contact.get(bitrix_id=created["CONTACT"]).result
    assert [p["VALUE"] for p in person["PHONE"]] == ["+79990001122"]
    env["app"].telephony.external_call.finish(call_id=reg["CALL_ID"], user_id=anna, duration=12).result
    [act] = activities(env, OWNER_TYPE_ID=2, OWNER_ID=created["DEAL"])          # bound to the deal too
    assert (act["OWNER_TYPE_ID"], act["OWNER_ID"]) == ("3", str(created["CONTACT"]))


# -- a missed call ------------------------------------------------------------------------------------
def test_missed_call_is_recorded_with_304_and_an_open_activity(env: dict[str, Any]) -> None:
    anna = manager(env, "101")
    cid = contact(env, anna)
    reg = env["app"].telephony.external_call.register(phone_number="79123456701", call_type=2,
                                                      user_phone_inner="101").result
    fin = env["app"].telephony.external_call.finish(call_id=reg["CALL_ID"], user_phone_inner="101").result
    assert (fin["CALL_FAILED_CODE"], fin["CALL_STATUS"], fin["CALL_DURATION"]) == ("304", 0, 0)  # DURATION 0 -> 304
    [act] = activities(env, OWNER_TYPE_ID=3, OWNER_ID=cid)
    assert (act["COMPLETED"], act["STATUS"], act["SETTINGS"]) == ("N", "1", {"MISSED_CALL": True})
    assert act["START_TIME"] == act["END_TIME"]
    missed = env["app"].voximplant.statistic.get(filter={"CALL_FAILED_CODE": "304"}).result
    assert [(s["CALL_ID"], s["PHONE_NUMBER"], s["CRM_ACTIVITY_ID"]) for s in missed] == \
        [(reg["CALL_ID"], "79123456701", act["ID"])]
    # a declined outgoing call: given STATUS_CODE wins, the activity (outgoing) is completed
    out = env["app"].telephony.external_call.register(phone_number="79123456701", call_type=1, user_id=anna).result
    fin2 = env["app"].telephony.external_call.finish(call_id=out["CALL_ID"], user_id=anna, status_code="603",
                                                     failed_reason="Declined").result
    assert (fin2["CALL_FAILED_CODE"], fin2["CALL_FAILED_REASON"], fin2["INCOMING"]) == ("603", "Declined", "1")
    by_phone = env["app"].voximplant.statistic.get(filter={"PHONE_NUMBER": "79123456701"}, sort="ID",
                                                   order="DESC").result
    assert [s["CALL_FAILED_CODE"] for s in by_phone] == ["603", "304"]
    out_act = [a for a in activities(env) if a["ID"] == str(fin2["CRM_ACTIVITY_ID"])][0]
    assert (out_act["DIRECTION"], out_act["COMPLETED"]) == ("2", "Y")


# -- records, card, errors ----------------------------------------------------------------------------
def test_attach_record_needs_a_finished_call_and_replaces_the_earlier_record(env: dict[str, Any]) -> None:
    anna = manager(env, "101")
    contact(env, anna)
    reg = env["app"].telephony.external_call.register(phone_number="79123456701", call_type=2, user_id=anna).result
    with pytest.raises(BitrixAPIError) as early:
        _ = env["hook"].telephony.external_call.attach_record(call_id=reg["CALL_ID"], filename="a.mp3",
                                                              file_content="SUQz").result
    assert early.value.error_description == "Call is not found in the statistic table. Looks like it is not " \
                                            "finished yet."
    assert env["app"].telephony.external_call.hide(call_id=reg["CALL_ID"], user_id=anna).result is True
    assert ctl(env, "GET", "/telephony/calls")["calls"][0]["SHOWN_TO"] == []
    assert env["app"].telephony.external_call.show(call_id=reg["CALL_ID"], user_id=[anna, 1]).result is True
    assert ctl(env, "GET", "/telephony/calls")["calls"][0]["SHOWN_TO"] == [1, anna]
    fin = env["app"].telephony.external_call.finish(call_id=reg["CALL_ID"], user_id=anna, duration=40).result
    assert env["app"].telephony.external_call.show(call_id=reg["CALL_ID"]).result is False    # call is over
    first = env["hook"].telephony.external_call.attach_record(
        call_id=reg["CALL_ID"], filename="call-001.mp3",
        file_content=base64.b64encode(b"ID3\x03fake-mp3").decode()).result
    second = env["hook"].telephony.external_call.attach_record(
        call_id=reg["CALL_ID"], record_url="https://records.example.com/call-001.wav").result
    assert isinstance(first["FILE_ID"], int) and second["FILE_ID"] > first["FILE_ID"]
    act = env["hook"].crm.activity.get(bitrix_id=fin["CRM_ACTIVITY_ID"]).result
    assert [(f["id"], f["name"]) for f in act["FILES"]] == [(second["FILE_ID"], "call-001.wav")]
    upload = env["hook"].telephony.external_call.attach_record(call_id=reg["CALL_ID"], filename="x.mp3").result
    assert upload["fieldName"] == "file" and "/rest/upload.json" in upload["uploadUrl"]
    errs = {}
    for name, params in {"ext": {"FILENAME": "a.ogg", "FILE_CONTENT": "SUQz"},
                         "b64": {"FILENAME": "a.mp3", "FILE_CONTENT": "not base64!"},
                         "none": {},
                         "local": {"RECORD_URL": "http://127.0.0.1:8080/rec.mp3"}}.items():
        r = rest(env, "telephony.externalCall.attachRecord", {"CALL_ID": reg["CALL_ID"], **params}, oauth=False)
        errs[name] = (r.status_code, r.json()["error"], r.json()["error_description"])
    assert errs == {
        "ext": (400, "ERROR_CORE", "Wrong file extension. Only wav and mp3 are allowed"),
        "b64": (400, "ERROR_CORE", "File content is not properly encoded. Base64 encoding is expected."),
        "none": (400, "", "Required parameters are not set. Request should contain either URL or FILENAME parameter"),
        "local": (400, "", "Record URL resolves to a non-public address and was blocked.")}


def test_register_and_finish_errors_as_the_portal_answers(env: dict[str, Any]) -> None:
    anna = manager(env, "101")
    # an inbound webhook is not an application: register/finish refuse it
    r = rest(env, "telephony.externalcall.register", {"USER_ID": anna, "PHONE_NUMBER": "79123456701", "TYPE": 2},
             oauth=False)
    assert (r.status_code, r.json()["error"]) == (401, "WRONG_AUTH_TYPE")
    cases = {"no user": {"PHONE_NUMBER": "79123456701", "TYPE": 2},
             "unknown inner": {"USER_PHONE_INNER": "999", "PHONE_NUMBER": "79123456701", "TYPE": 2},
             "type": {"USER_ID": anna, "PHONE_NUMBER": "79123456701", "TYPE": 9},
             "date": {"USER_ID": anna, "PHONE_NUMBER": "79123456701", "TYPE": 2, "CALL_START_DATE": "вчера"},
             "phone": {"USER_ID": anna, "PHONE_NUMBER": "abc", "TYPE": 2},
             "inactive": {"USER_ID": 77, "PHONE_NUMBER": "79123456701", "TYPE": 2}}
    got = {k: rest(env, "telephony.externalcall.register", v).json()["error_description"] for k, v in cases.items()}
    assert got == {"no user": "USER_ID or USER_PHONE_INNER should be set",
                   "unknown inner": "USER_ID or USER_PHONE_INNER should be set", "type": "Unknown TYPE",
                   "date": "CALL_START_DATE should be in the ISO-8601 format",
                   "phone": "Unsupported phone number format", "inactive": "User is not found or is not active"}
    unknown = rest(env, "telephony.externalcall.finish", {"CALL_ID": "externalCall.nope.1", "USER_ID": anna})
    assert (unknown.status_code, unknown.json()["error"]) == (400, "ERROR_CORE")
    assert unknown.json()["error_description"].startswith("Call is not found")
    no_id = rest(env, "telephony.externalcall.finish", {"USER_ID": anna})
    assert (no_id.json()["error"], no_id.json()["error_description"]) == ("INVALID_ARGUMENT", "CALL_ID must be a string")
    # a number that is a portal user's extension is an internal call: no lead, no CRM binding
    internal = rest(env, "telephony.externalcall.register",
                    {"USER_ID": 1, "PHONE_NUMBER": "101", "TYPE": 1, "CRM_CREATE": 1}).json()["result"]
    assert (internal["CRM_ENTITY_TYPE"], internal["CRM_CREATED_LEAD"]) == ("", None)
    fin = rest(env, "telephony.externalcall.finish", {"CALL_ID": internal["CALL_ID"], "USER_ID": 1,
                                                      "DURATION": 5}).json()["result"]
    assert fin["CRM_ACTIVITY_ID"] is None and "ACTIVITY_CREATION" in fin["ERRORS"]
    # with the knob off, webhooks may register (for portals/setups where that is how it is used)
    ctl(env, "PATCH", "/telephony", {"app_only": False})
    ok = rest(env, "telephony.externalcall.register", {"USER_ID": anna, "PHONE_NUMBER": "79123456701", "TYPE": 2},
              oauth=False)
    assert ok.status_code == 200 and ok.json()["result"]["CALL_ID"].startswith("externalCall.")
    view = ctl(env, "GET", "/telephony")
    assert view["settings"] == {"leads_enabled": True, "app_only": False}
    assert len(view["calls"]) == 1 and len(view["statistics"]) == 1 and view["activities"] == []
