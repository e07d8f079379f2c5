"""The amoCRM API v4 sandbox checked for fidelity by two third-party clients running unchanged in their
own venv (`crm_clients.run`): amocrm-api 2.6.1 (``amocrm.v2``, synchronous, requests) and aioamocrm
0.1.1 (async, httpx). Whatever a client expects and the sandbox does not do is a sandbox bug. Direct
HTTP tests cover what the clients cannot show: 204 at the end of paging, leads/complex, webhooks posted
to a local receiver, the control API, faults and the request log.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
from crm_clients import run

from syncd.sandbox.amocrm import Account, start, ui_write
from syncd.sandbox.amocrm.records import create

# amocrm-api hardcodes https://{subdomain}.amocrm.ru (API calls through its module-level Session, the
# token endpoint through requests.post). Inside the script process only, requests is told to hand
# that origin to a transport adapter (requests' own extension point) that sends it to the sandbox.
AMOCRM_API = '''
import requests
from requests.adapters import HTTPAdapter
ORIGIN = "https://%s.amocrm.ru" % P["subdomain"]

class ToSandbox(HTTPAdapter):
    def send(self, request, **kwargs):
        request.url = P["url"] + request.url[len(ORIGIN):]
        return super().send(request, **kwargs)

_to_sandbox, _get_adapter = ToSandbox(), requests.Session.get_adapter
requests.Session.get_adapter = lambda self, url: (
    _to_sandbox if url.startswith(ORIGIN) else _get_adapter(self, url))

from amocrm.v2 import tokens, exceptions
storage = tokens.FileTokensStorage(P["token_dir"]) if P.get("token_dir") else tokens.MemoryTokensStorage()
tokens.default_token_manager(client_id=P["client_id"], client_secret=P["client_secret"],
                             subdomain=P["subdomain"], redirect_url=P["redirect_uri"], storage=storage)
if P.get("access"):
    storage.save_tokens(P["access"], P.get("refresh") or "no-refresh-token")
'''

# aioamocrm takes a base_url "for a proxy or a test server": nothing to redirect.
AIOAMOCRM = '''
import asyncio, time
from aioamocrm import *

def client(**kw):
    kw.setdefault("auth", LongLivedToken(P["access"]))
    kw.setdefault("retry", RetryPolicy(backoff_base=0.05, backoff_max=0.5))
    return AmoCRMClient(base_url=P["url"], **kw)
'''


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Any]:
    h = start()
    yield h
    h.stop()


@pytest.fixture
def amo(sandbox: Any) -> Any:
    """The sandbox, reset to its seed (credentials kept), rate limit on."""
    sandbox.extra["state"].reset()
    return sandbox


def acc_of(h: Any) -> Account:
    acc: Account = h.extra["state"]
    return acc


def no_limit(h: Any) -> Any:
    """amocrm-api has no client-side rate limiter: its tests (and the direct HTTP ones) run with the
    sandbox's limit off, except those about 429."""
    acc_of(h).limits.enabled = False
    return h


def params(h: Any, **extra: Any) -> dict[str, Any]:
    e = h.extra
    return {"url": h.url, "subdomain": e["subdomain"], "client_id": e["client_id"],
            "client_secret": e["client_secret"], "redirect_uri": e["redirect_uri"],
            "access": e["long_lived_token"], **extra}


def ctl(h: Any, method: str, path: str, body: Any = None, status: int | None = None) -> Any:
    r = requests.request(method, f"{h.url}/_sandbox/{path}", json=body, timeout=10)
    assert r.status_code == status if status else r.status_code < 300, (r.status_code, r.text)
    return r.json() if r.content else None


def api(h: Any, method: str, path: str, token: str | None = None, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token or h.extra['long_lived_token']}", **kw.pop("headers", {})}
    return requests.request(method, f"{h.url}/api/v4/{path}", headers=headers, timeout=10, **kw)


def api_log(h: Any, **match: Any) -> list[dict[str, Any]]:
    return [e for e in acc_of(h).log_view(kind="api") if all(e.get(k) == v for k, v in match.items())]


def field_named(acc: Account, name: str) -> Any:
    return next(f for f in acc.fields.values() if f.name == name)


class Receiver:
    """A local webhook destination: keeps every POST's headers and form body."""

    def __init__(self) -> None:
        got: list[tuple[dict[str, str], str]] = []
        self.got = got

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                got.append((dict(self.headers), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-42"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forms(self) -> list[dict[str, str]]:
        return [dict(parse_qsl(body)) for _, body in self.got]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


# -- amocrm-api 2.6.1 ----------------------------------------------------------------------------------
def test_amocrm_api_reads_account_users_pipelines_and_fields(amo: Any) -> None:
    out = run(AMOCRM_API + '''
from amocrm.v2 import Lead, Contact, Pipeline, Status, User
from amocrm.v2.account import Account, AccountInteraction
from amocrm.v2.entity.custom_field import CustomFieldModel
account = Account(data=AccountInteraction().get(include=["amojo_id", "version"]))
pipes = list(Pipeline.objects.all())
print(json.dumps({
    "account": [account.name, account.subdomain, account.country, account.version],
    "users": [[u.id, u.name, u.is_admin, u.is_active] for u in User.objects.all()],
    "pipelines": [[p.id, p.name, p.is_main, [[s.id, s.name, s.type] for s in p.statuses]] for p in pipes],
    "talks": Status.get_for(pipes[0]).get(query="Переговоры").id,
    "lead_fields": [[f.id, f.name, f.code, f.type] for f in CustomFieldModel.get_for(Lead())],
    "contact_fields": {f.code: [e["value"] for e in f.enums or []]
                       for f in CustomFieldModel.get_for(Contact())},
}))
''', **params(no_limit(amo)))
    acc = acc_of(amo)
    assert out["account"] == ["Пример", "example", "RU", 11]
    assert [u[1:] for u in out["users"]] == [["Администратор", True, True], ["Анна Смирнова", False, True],
                                             ["Борис Петров", False, True]]
    [(pid, name, is_main, statuses)] = out["pipelines"]
    assert (pid, name, is_main) == (acc.main_pipeline().id, "Воронка", True)
    assert [s[1] for s in statuses] == ["Неразобранное", "Первичный контакт", "Переговоры",
                                        "Принимают решение", "Успешно реализовано",
                                        "Закрыто и не реализовано"]
    assert [s[0] for s in statuses][-2:] == [142, 143] and statuses[0][2] == 1
    assert out["talks"] == statuses[2][0]
    assert [f[1:] for f in out["lead_fields"]] == [["Номер заказа", "ORDER_NO", "text"],
                                                   ["Источник", None, "select"]]
    assert out["contact_fields"]["PHONE"] == ["WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER"]
    assert out["contact_fields"]["EMAIL"] == ["WORK", "PRIV", "OTHER"]


def test_amocrm_api_creates_reads_and_updates_leads_with_custom_fields(amo: Any) -> None:
    acc = acc_of(no_limit(amo))
    talks = acc.main_pipeline().statuses[2].id
    out = run(AMOCRM_API + '''
from amocrm.v2 import Lead, custom_field

class Deal(Lead):
    order_no = custom_field.TextCustomField("Номер заказа", code="ORDER_NO")
    source = custom_field.SelectCustomField("Источник")

d = Deal(name="Заказ 1001", price=1500)
d.order_no = "A-1001"
d.source = "Сайт"
d.save()
got = Deal.objects.get(d.id)
first = [got.name, got.price, got.order_no, got.source.value, got.source.id, got.status.name,
         got.pipeline.name, got.responsible_user.name, got.created_at.year > 2000]
got.price = 2500
got.status = P["talks"]
got.save()
Lead.objects.update(d.id, {"name": "Заказ 1001 (изменён)"})
again = Deal.objects.get(d.id)
try:
    Lead.objects.create({"name": "Плохая", "status_id": 12345})
    refused = None
except exceptions.ValidationError as e:
    refused = e.args[0]
try:
    Lead.objects.get(999)
    missing = False
except exceptions.NotFound:
    missing = True
print(json.dumps({"id": d.id, "first": first, "refused": refused, "missing": missing,
                  "again": [again.name, again.price, again.status.name, again.order_no]}))
''', talks=talks, **params(amo))
    site = field_named(acc, "Источник").enum(value="Сайт").id
    assert out["first"] == ["Заказ 1001", 1500, "A-1001", "Сайт", site, "Первичный контакт", "Воронка",
                            "Администратор", True]
    assert out["again"] == ["Заказ 1001 (изменён)", 2500, "Переговоры", "A-1001"]
    rec = acc.records["leads"][out["id"]]
    assert rec["status_id"] == talks and rec["price"] == 2500
    assert out["refused"]["status"] == 400 and out["refused"]["validation-errors"] == [
        {"request_id": "0", "errors": [{"code": "NotSupportedChoice", "path": "status_id",
                                        "detail": "The value you selected is not a valid choice."}]}]
    assert out["missing"] is True
    assert len(acc.records["leads"]) == 1                 # the refused lead was not saved


def test_amocrm_api_pages_through_500_leads_and_stops_at_204(amo: Any) -> None:
    acc = acc_of(no_limit(amo))
    with acc.lock:
        for first in (0, 250):
            create(acc, "leads", [{"name": f"Пакет {i}"} for i in range(first, first + 250)], min(acc.users))
        create(acc, "leads", [{"name": "Другая"}], min(acc.users))
    ids = sorted(acc.records["leads"])
    out = run(AMOCRM_API + '''
from amocrm.v2 import Lead
from amocrm.v2.filters import SingleListFilter
names = [l.name for l in Lead.objects.filter(query="Пакет")]
picked = [l.id for l in Lead.objects.filter(filters=[SingleListFilter("id")(P["pick"])])]
print(json.dumps({"names": names, "picked": picked}))
''', pick=[ids[3], ids[500]], **params(amo))
    assert out["names"] == [f"Пакет {i}" for i in range(500)]
    assert out["picked"] == [ids[3], ids[500]]
    walk = [e for e in api_log(amo, path="/api/v4/leads") if "query=" in e["query"]]
    assert [(e["status"], f"page={n}" in e["query"]) for n, e in enumerate(walk, 1)] == [
        (200, True), (200, True), (204, True)]                  # 250 + 250, then the empty page


def test_amocrm_api_contacts_phones_links_notes_and_tasks(amo: Any) -> None:
    acc = acc_of(no_limit(amo))
    lead = ui_write(acc, "leads", {"name": "Сделка для связей"})
    out = run(AMOCRM_API + '''
from datetime import datetime, timedelta
from amocrm.v2 import Contact, Lead, Task, custom_field

class Person(Contact):
    phone = custom_field.ContactPhoneField("Телефон")
    mobile = custom_field.ContactPhoneField("Телефон", enum_code="MOB")
    email = custom_field.ContactEmailField("Email")

c = Person(name="Иван Петров")
c.phone = "+7 495 111-22-33"
c.mobile = "+7 916 000-11-22"
c.email = "ivan@example.com"
c.save()
person = Person.objects.get(c.id)
lead = Lead.objects.get(P["lead"])
lead.contacts.append(person)
linked = [x.name for x in Lead.objects.get(P["lead"]).contacts]
lead.notes(text="Перезвонить после 18:00").save()
lead.notes(phone="+74951112233", duration=65, source="syncd", uniq="call-1").save()
notes = [[n.note_type, n._data["params"]] for n in lead.notes.objects.all()]
task = Task(text="Позвонить клиенту", complete_till=datetime.now() + timedelta(days=1), entity_id=P["lead"],
            entity_type="leads", responsible_user=P["manager"])
task.save()
tasks = list(lead.tasks)
tasks[0].is_completed = True
tasks[0].save()
print(json.dumps({"contact": [person.id, person.name, person.phone, person.mobile, person.email],
                  "linked": linked, "notes": notes,
                  "tasks": [[t.text, t.entity_type, t.entity_id, t.responsible_user.name] for t in tasks],
                  "done": Task.objects.get(task.id).is_completed}))
''', lead=lead["id"], manager=sorted(acc.users)[1], **params(amo))
    cid = out["contact"][0]
    assert out["contact"][1:] == ["Иван Петров", "+7 495 111-22-33", "+7 916 000-11-22", "ivan@example.com"]
    phones = acc.records["contacts"][cid]["custom_fields_values"][0]
    assert phones["field_code"] == "PHONE" and [v["enum_code"] for v in phones["values"]] == ["WORK", "MOB"]
    assert out["linked"] == ["Иван Петров"]
    assert out["notes"] == [
        ["common", {"text": "Перезвонить после 18:00"}],
        ["call_in", {"phone": "+74951112233", "duration": 65, "source": "syncd", "uniq": "call-1"}]]
    assert out["tasks"] == [["Позвонить клиенту", "leads", lead["id"], "Анна Смирнова"]]
    assert out["done"] is True


def test_amocrm_api_oauth_code_refresh_rotation_and_expired_token(amo: Any, tmp_path: Any) -> None:
    no_limit(amo)
    code = ctl(amo, "POST", "oauth/code", {})["code"]
    expired = ctl(amo, "POST", "oauth/tokens", {"expires_in": 0})
    out = run(AMOCRM_API + '''
from amocrm.v2.account import AccountInteraction
# 1. the authorization code, traded by the client's own init()
tokens.default_token_manager.init(code=P["code"])
by_code = AccountInteraction().get()["current_user_id"]
try:
    tokens.default_token_manager.init(code=P["code"])
    reused_code = None
except Exception as e:
    reused_code = str(e)
# 2. an expired access token (the JWT's exp): the client refreshes and saves the new pair in its files
storage.save_tokens(P["expired"]["access_token"], P["expired"]["refresh_token"])
after_refresh = AccountInteraction().get()["id"]
saved = [storage.get_access_token(), storage.get_refresh_token()]
# 3. a second process still holding the spent refresh token: refused
other = tokens.TokenManager()
other(P["client_id"], P["client_secret"], P["subdomain"], P["redirect_uri"], tokens.MemoryTokensStorage())
other._storage.save_tokens(P["expired"]["access_token"], P["expired"]["refresh_token"])
try:
    other.get_access_token()
    reused_refresh = None
except EnvironmentError as e:
    reused_refresh = str(e)
print(json.dumps({"by_code": by_code, "reused_code": reused_code, "after_refresh": after_refresh,
                  "saved": saved, "reused_refresh": reused_refresh}))
''', code=code, expired=expired, token_dir=str(tmp_path), **{**params(amo), "access": None})
    assert out["by_code"] == amo.extra["user_id"] and out["after_refresh"] == amo.extra["account_id"]
    assert out["reused_code"] == "Authorization code has been revoked"
    access, refresh = out["saved"]
    assert refresh != expired["refresh_token"] and access != expired["access_token"]
    assert (tmp_path / "refresh_token.txt").read_text() == refresh       # persisted, so a restart goes on
    assert "Token has been revoked" in out["reused_refresh"] and "401" in out["reused_refresh"]
    # the sandbox's clock moves past the token's 24 h: the next call is 401 and amocrm-api raises
    ctl(amo, "PATCH", "clock", {"advance": 86400 + 60})
    out = run(AMOCRM_API + '''
from amocrm.v2.account import AccountInteraction
try:
    AccountInteraction().get()
    print(json.dumps("no error"))
except exceptions.UnAuthorizedException:
    print(json.dumps("401"))
''', **{**params(amo), "access": access})
    assert out == "401"
    assert api_log(amo)[-1]["status"] == 401


def test_amocrm_api_burst_gets_429_then_recovers(amo: Any) -> None:
    out = run(AMOCRM_API + '''
import time
from amocrm.v2.account import AccountInteraction
results = []
for _ in range(12):
    try:
        AccountInteraction().get()
        results.append("ok")
    except exceptions.AmoApiException as e:
        results.append("429" if "Wrong status 429" in str(e) else str(e))
time.sleep(1.2)
AccountInteraction().get()
print(json.dumps({"burst": results, "after": "ok"}))
''', **params(amo))
    assert out["burst"][:7] == ["ok"] * 7 and "429" in out["burst"][7:]
    assert set(out["burst"]) == {"ok", "429"} and out["after"] == "ok"
    statuses = [e["status"] for e in api_log(amo)]
    assert statuses.count(429) == out["burst"].count("429") and statuses[-1] == 200


# -- aioamocrm 0.1.1 (its own 7 requests/s limiter; the sandbox's limit stays on) ----------------------
def test_aioamocrm_reads_account_users_pipelines_and_fields(amo: Any) -> None:
    out = run(AIOAMOCRM + '''
async def main():
    async with client() as amo:
        account = await amo.account.get(with_=["amojo_id", "task_types"])
        users = [u async for u in amo.users.iterate()]
        [pipe] = await amo.pipelines.list()
        statuses = await amo.pipelines.statuses(pipe.id)
        lead_fields = [f async for f in amo.leads.custom_fields.iterate()]
        [phone] = [f async for f in amo.contacts.custom_fields.iterate() if f.code == "PHONE"]
        company_codes = [f.code async for f in amo.companies.custom_fields.iterate()]
        one = await amo.users.get(users[1].id)
        task_types = [t["code"] for t in account.embedded["task_types"]]
        return {"account": [account.id, account.subdomain, account.current_user_id,
                            account.amojo_id is not None, task_types],
                "users": [[u.name, u.email, u.rights["is_admin"]] for u in users], "one": one.name,
                "pipeline": [pipe.name, pipe.is_main, [s.id for s in pipe.statuses] == [s.id for s in
                             statuses], pipe.status(142).name, pipe.status(143).is_editable],
                "lead_fields": [[f.name, f.type, f.code, [e.value for e in f.enums or []]]
                                for f in lead_fields],
                "phone": [phone.type, phone.enum_id("MOB") is not None], "company_codes": company_codes}
print(json.dumps(asyncio.run(main())))
''', **params(amo))
    assert out["account"] == [29000001, "example", amo.extra["user_id"], True, ["FOLLOW_UP", "MEETING"]]
    assert out["users"][0] == ["Администратор", "admin@example.com", True] and len(out["users"]) == 3
    assert out["one"] == "Анна Смирнова"
    assert out["pipeline"] == ["Воронка", True, True, "Успешно реализовано", False]
    assert out["lead_fields"] == [["Номер заказа", "text", "ORDER_NO", []],
                                  ["Источник", "select", None, ["Сайт", "Телефон", "Магазин"]]]
    assert out["phone"] == ["multitext", True]
    assert out["company_codes"] == ["PHONE", "EMAIL", "WEB", "ADDRESS"]


def test_aioamocrm_creates_with_request_ids_gets_lists_pages_and_filters(amo: Any) -> None:
    out = run(AIOAMOCRM + '''
async def main():
    async with client() as amo:
        leads = []
        for i in range(6):
            lead = Lead(name=f"Заявка {i}", price=100 * i, request_id=f"order-{i}")
            lead.set_field("ORDER_NO", f"N-{i}")
            leads.append(lead)
        refs = await amo.leads.create(leads, batch_size=4)
        walked = [l async for l in amo.leads.iterate(limit=3, query="Заявка")]
        empty = await amo.leads.get_page(3, limit=3, query="Заявка")
        picked = await amo.leads.get_page(filter={"id": [refs[0].id, refs[4].id]})
        contact = Contact(first_name="Мария", last_name="Иванова")
        contact.set_field("PHONE", "+7 916 555-44-33", enum_code="MOB")
        contact.set_field("EMAIL", "maria@example.com", enum_code="WORK")
        [cref] = await amo.contacts.create([contact])
        got = await amo.contacts.get(cref.id)
        found = [c.id async for c in amo.contacts.iterate(query="79165554433")]
        since = (await amo.leads.get(refs[5].id)).updated_at
        recent = await amo.leads.get_page(filter={"updated_at": {"from": since, "to": since}})
        return {"refs": [[r.id, r.request_id] for r in refs],
                "walked": [[l.name, l.field_value("ORDER_NO")] for l in walked],
                "empty": [len(empty), empty.has_next], "picked": [l.id for l in picked],
                "contact": [got.name, got.field_value("PHONE", enum_code="MOB"), got.field_value("EMAIL"),
                            got.field("PHONE").field_name],
                "found": found, "cid": cref.id, "since": since, "recent": [l.id for l in recent]}
print(json.dumps(asyncio.run(main())))
''', **params(amo))
    ids = [r[0] for r in out["refs"]]
    assert [r[1] for r in out["refs"]] == [f"order-{i}" for i in range(6)] and ids == sorted(ids)
    assert out["walked"] == [[f"Заявка {i}", f"N-{i}"] for i in range(6)]
    walk = [e for e in api_log(amo, path="/api/v4/leads", method="GET") if "query=" in e["query"]][:3]
    assert [e["status"] for e in walk] == [200, 200, 204]        # 6 leads by 3: the third page is empty
    assert out["empty"] == [0, False] and out["picked"] == [ids[0], ids[4]]
    assert out["contact"] == ["Мария Иванова", "+7 916 555-44-33", "maria@example.com", "Телефон"]
    assert out["found"] == [out["cid"]]
    leads = acc_of(amo).records["leads"].values()
    assert out["recent"] == [r["id"] for r in leads if r["updated_at"] == out["since"]]
    assert ids[5] in out["recent"]
    assert not api_log(amo, status=429)


def test_aioamocrm_updates_statuses_and_fields(amo: Any) -> None:
    acc = acc_of(amo)
    a = ui_write(acc, "leads", {"name": "Первая", "price": 10})
    b = ui_write(acc, "leads", {"name": "Вторая"})
    source = field_named(acc, "Источник")
    acc.offset += 5          # so that updated_at visibly moves
    out = run(AIOAMOCRM + '''
async def main():
    async with client() as amo:
        won = Lead(id=P["a"], status_id=142, price=990)
        won.set_field(P["source"], "Сайт", enum_id=P["site"])
        refs = await amo.leads.update([won, Lead(id=P["b"], status_id=143)])
        a, b = await amo.leads.get(P["a"]), await amo.leads.get(P["b"])
        again = await amo.leads.update([Lead(id=P["a"], price=990)])     # nothing changes
        return {"refs": [[r.id, r.updated_at] for r in refs], "again": again[0].updated_at,
                "a": [a.status_id, a.price, a.closed_at is not None, a.field_value(P["source"]),
                      a.field(P["source"]).values[0].enum_id],
                "b": [b.status_id, b.pipeline_id, b.closed_at is not None]}
print(json.dumps(asyncio.run(main())))
''', a=a["id"], b=b["id"], source=source.id, site=source.enum(value="Сайт").id, **params(amo))
    assert [r[0] for r in out["refs"]] == [a["id"], b["id"]] and out["refs"][0][1] >= a["updated_at"] + 5
    assert out["again"] == out["refs"][0][1]
    assert out["a"] == [142, 990, True, "Сайт", source.enum(value="Сайт").id]
    assert out["b"] == [143, acc.main_pipeline().id, True]


def test_aioamocrm_complex_links_notes_and_tasks(amo: Any) -> None:
    other = ui_write(acc_of(amo), "leads", {"name": "Повторная"})
    out = run(AIOAMOCRM + '''
async def main():
    async with client() as amo:
        person = Contact(first_name="Ольга", last_name="Ким")
        person.set_field("PHONE", "+79160001122", enum_code="MOB")
        company = Company(name="ООО Ромашка")
        lead = Lead(name="С сайта", price=5000, embedded=Embedded(contacts=[person], companies=[company]))
        lead.embedded.tags.append(Tag(name="сайт"))
        [res] = await amo.leads.create_complex([lead])
        got = await amo.leads.get(res.id, with_=["contacts"])
        links = await amo.contacts.link(res.contact_id, "leads", P["other"])
        listed = await amo.contacts.links(res.contact_id, filter={"to_entity_type": "leads"})
        call = {"uniq": "c-1", "duration": 42, "source": "syncd", "phone": "+79160001122"}
        refs = await amo.leads.notes.create([Note.common(res.id, "Перезвонить после 18:00"),
                                             Note(entity_id=res.id, note_type="call_out", params=call)])
        notes = [[n.note_type, n.text, n.params.get("duration")]
                 async for n in amo.leads.notes.iterate(entity_id=res.id)]
        one = await amo.leads.notes.get(refs[1].id, entity_id=res.id)
        [tref] = await amo.tasks.create([Task(text="Перезвонить", complete_till=int(time.time()) + 3600,
                                              entity_id=res.id, entity_type="leads", task_type_id=1)])
        flt = {"entity_type": "leads", "entity_id": [res.id], "is_completed": 0}
        mine = [t.id async for t in amo.tasks.iterate(filter=flt)]
        await amo.tasks.complete(tref.id, result="Договорились")
        done = await amo.tasks.get(tref.id)
        open_after = [t.id async for t in amo.tasks.iterate(filter={"is_completed": 0})]
        return {"res": [res.id, res.contact_id, res.company_id, res.request_id, res.merged],
                "got": [got.name, [c.id for c in got.embedded.contacts], got.embedded.contacts[0].is_main,
                        [c.id for c in got.embedded.companies], [t.name for t in got.embedded.tags]],
                "links": [[l.entity_id, l.to_entity_type, l.to_entity_id] for l in links],
                "listed": len(listed), "notes": notes, "note_refs": [r.entity_id for r in refs],
                "one": one.note_type,
                "task": [tref.id, mine, done.is_completed, done.result.text, open_after]}
print(json.dumps(asyncio.run(main())))
''', other=other["id"], **params(amo))
    acc = acc_of(amo)
    lead_id, contact_id, company_id, rids, merged = out["res"]
    assert rids == ["0"] and merged is False
    assert acc.records["contacts"][contact_id]["name"] == "Ольга Ким"
    assert acc.records["companies"][company_id]["name"] == "ООО Ромашка"
    assert out["got"] == ["С сайта", [contact_id], True, [company_id], ["сайт"]]
    assert out["links"] == [[contact_id, "leads", other["id"]]] and out["listed"] == 2
    assert out["notes"] == [["common", "Перезвонить после 18:00", None], ["call_out", None, 42]]
    assert out["note_refs"] == [lead_id, lead_id] and out["one"] == "call_out"
    tid, mine, completed, result, open_after = out["task"]
    assert mine == [tid] and completed is True and result == "Договорились" and open_after == []


def test_aioamocrm_validation_errors_name_the_item_and_field(amo: Any) -> None:
    out = run(AIOAMOCRM + '''
async def main():
    async with client() as amo:
        errors = []
        pager = {"field_code": "PHONE", "values": [{"value": "+7 900", "enum_code": "PAGER"}]}
        for call in (
            amo.leads.create([{"name": "Хорошая"}, {"name": "Плохая", "status_id": 1, "request_id": "r-2"}]),
            amo.contacts.create([{"name": "Без кода", "custom_fields_values": [pager]}]),
            amo.leads.create([{"name": "Цена строкой", "price": "100"}]),
            amo.leads.update([{"id": 1, "name": "Нет такой"}]),
            amo.tasks.create([{"text": "", "complete_till": 1}]),
        ):
            try:
                await call
                errors.append(None)
            except ValidationError as e:
                issues = [[i.request_id, i.code, i.path] for i in e.errors]
                errors.append([e.status_code, e.title, e.detail] + issues)
        leads = await amo.leads.get_page()
        return {"errors": errors, "leads": len(leads)}
print(json.dumps(asyncio.run(main())))
''', **params(amo))
    head = [400, "Bad Request", "Request validation failed"]
    assert out["errors"] == [
        head + [["r-2", "NotSupportedChoice", "status_id"]],
        head + [["0", "NotSupportedChoice", "custom_fields_values.0.values.0.enum_code"]],
        head + [["0", "InvalidType", "price"]],
        head + [["0", "NotFound", "id"]],
        head + [["0", "NotBlank", "text"]],
    ]
    assert out["leads"] == 0                   # all or nothing: "Хорошая" was not saved either


def test_aioamocrm_oauth_refreshes_after_401_and_a_spent_refresh_token_is_refused(amo: Any,
                                                                                  tmp_path: Any) -> None:
    code = ctl(amo, "POST", "oauth/code", {})["code"]
    out = run(AIOAMOCRM + '''
import httpx, json as j
async def main():
    path = P["store"]
    oauth = OAuth2(P["client_id"], P["client_secret"], P["redirect_uri"], JsonFileTokenStorage(path))
    async with client(auth=oauth) as amo:
        first = await amo.exchange_code(P["code"])
        try:
            await amo.exchange_code(P["code"])
            reused_code = None
        except AuthError as e:
            reused_code = [e.status_code, e.body["hint"]]
        me = (await amo.account.get()).current_user_id
        # the sandbox's clock jumps past the 24 h: amo answers 401, the client refreshes once and retries
        httpx.patch(P["url"] + "/_sandbox/clock", json={"advance": 86400 + 60})
        again = (await amo.account.get()).id
        stored = j.load(open(path))
        spent = OAuth2(P["client_id"], P["client_secret"], P["redirect_uri"], MemoryTokenStorage(first))
        try:
            await spent.refresh(amo._endpoint)
            refused = None
        except AuthError as e:
            refused = [e.status_code, e.body["hint"], e.body["type"]]
        return {"me": me, "again": again, "rotated": stored["refresh_token"] != first.refresh_token,
                "access_changed": stored["access_token"] != first.access_token, "reused_code": reused_code,
                "refused": refused}
print(json.dumps(asyncio.run(main())))
''', code=code, store=str(tmp_path / "tokens.json"), **params(amo))
    assert out["me"] == amo.extra["user_id"] and out["again"] == amo.extra["account_id"]
    assert out["rotated"] and out["access_changed"]
    assert out["reused_code"] == [400, "Authorization code has been revoked"]
    assert out["refused"] == [401, "Token has been revoked",
                              "https://developers.amocrm.ru/v3/errors/OAuthProblemJson"]
    grants = [(e["grant_type"], e["status"]) for e in acc_of(amo).log_view(kind="oauth")]
    assert grants == [("authorization_code", 200), ("authorization_code", 400), ("refresh_token", 200),
                      ("refresh_token", 401)]
    assert [e["status"] for e in api_log(amo, path="/api/v4/account")] == [200, 401, 200]


def test_aioamocrm_burst_without_its_limiter_gets_429_and_with_it_none(amo: Any) -> None:
    out = run(AIOAMOCRM + '''
async def main():
    async with client(rate_limit=None, retry=RetryPolicy(max_attempts=1)) as amo:
        burst = await asyncio.gather(*(amo.account.get() for _ in range(12)), return_exceptions=True)
        await asyncio.sleep(1.2)
        after = (await amo.account.get()).id
    mark = time.time()
    async with client() as amo:            # the client's own limiter: 7 requests/s, as documented
        paced = await asyncio.gather(*(amo.users.get_page() for _ in range(14)), return_exceptions=True)
    return {"burst": [type(r).__name__ for r in burst], "after": after,
            "retry_after": [r.retry_after for r in burst if isinstance(r, RateLimitError)][:1],
            "paced": [type(r).__name__ for r in paced], "seconds": time.time() - mark}
print(json.dumps(asyncio.run(main())))
''', **params(amo))
    ok = out["burst"].count("Account")      # 12 at once: the bucket holds 7 (one more refills in 1/7 s)
    assert ok in (7, 8) and out["burst"].count("RateLimitError") == 12 - ok
    assert out["retry_after"] == [None] and out["after"] == 29000001
    assert out["paced"] == ["Page"] * 14 and out["seconds"] >= 1.5         # 13 gaps of 1/7 s
    assert not api_log(amo, path="/api/v4/users", status=429)


def test_aioamocrm_retries_gateway_errors_and_dropped_connections_on_reads_only(amo: Any) -> None:
    ui_write(acc_of(amo), "leads", {"name": "Есть"})
    out = run(AIOAMOCRM + '''
import httpx
def fault(**body):
    httpx.patch(P["url"] + "/_sandbox/faults", json=body).raise_for_status()

async def main():
    out = {}
    async with client() as amo:
        fault(count=2, status=502, paths=["/api/v4/leads"])
        out["502"] = len(await amo.leads.get_page())
        fault(count=1, mode="drop", paths=["/api/v4/leads"])
        out["drop"] = len(await amo.leads.get_page())
        for mode in ("error", "lost"):
            fault(count=1, mode=mode, status=500, paths=["/api/v4/leads"], methods=["POST"])
            try:
                await amo.leads.create([{"name": f"Запись {mode}"}])
                out[mode] = None
            except (ServerError, NetworkError) as e:
                out[mode] = type(e).__name__
        out["names"] = [l.name async for l in amo.leads.iterate()]
    return out
print(json.dumps(asyncio.run(main())))
''', **params(amo))
    assert out["502"] == 1 and out["drop"] == 1
    # a write is never resent: "error" did nothing, "lost" did the write and lost the answer
    assert out["error"] == "ServerError" and out["lost"] == "NetworkError"
    assert out["names"] == ["Есть", "Запись lost"]
    faults = [(e["method"], e["fault"], e["status"]) for e in api_log(amo) if e.get("fault")]
    assert faults == [("GET", "error", 502), ("GET", "error", 502), ("GET", "drop", None),
                      ("POST", "error", 500), ("POST", "lost", None)]


def test_webhooks_parse_with_aioamocrm(amo: Any, receiver: Receiver) -> None:
    acc = acc_of(amo)
    hook = {"destination": receiver.url, "settings": ["add_lead", "status_lead"]}
    r = api(amo, "POST", "webhooks", json=hook)
    assert r.status_code == 200 and r.json()["settings"] == ["add_lead", "status_lead"]
    lead = ui_write(acc, "leads", {"name": "Вебхук", "price": 700, "custom_fields_values": [
        {"field_code": "ORDER_NO", "values": [{"value": "W-1"}]}]})
    talks = acc.main_pipeline().statuses[2].id
    manager = sorted(acc.users)[2]
    ui_write(acc, "leads", {"status_id": talks}, record_id=lead["id"], user_id=manager)
    assert ctl(amo, "POST", "webhooks/wait", {})["done"]
    out = run('''
from aioamocrm import parse_webhook
hooks = [parse_webhook(body) for body in P["bodies"]]
print(json.dumps([[h.subdomain, h.account_id] + [
    [e.entity, e.action, e.id, e.payload.get("status_id"), e.payload.get("old_status_id"),
     e.field_value("ORDER_NO"), e.payload.get("modified_user_id")] for e in h.events] for h in hooks]))
''', bodies=[body for _, body in receiver.got])
    first, admin = lead["status_id"], min(acc.users)
    assert out == [
        ["example", 29000001, ["leads", "add", lead["id"], str(first), None, "W-1", str(admin)]],
        ["example", 29000001, ["leads", "status", lead["id"], str(talks), str(first), "W-1", str(manager)]]]


# -- direct HTTP ---------------------------------------------------------------------------------------
def test_empty_lists_and_the_end_of_paging_answer_204_with_no_body(amo: Any) -> None:
    no_limit(amo)
    r = api(amo, "GET", "leads")
    assert r.status_code == 204 and r.content == b"" and "json" not in r.headers.get("content-type", "")
    r = api(amo, "POST", "leads", json=[{"name": f"Л{i}"} for i in range(5)])
    assert r.status_code == 200 and [x["request_id"] for x in r.json()["_embedded"]["leads"]] == list("01234")
    pages = [api(amo, "GET", "leads", params={"limit": 2, "page": n}) for n in (1, 2, 3, 4)]
    assert [p.status_code for p in pages] == [200, 200, 200, 204]
    body = pages[1].json()
    assert body["_page"] == 2 and [x["name"] for x in body["_embedded"]["leads"]] == ["Л2", "Л3"]
    assert body["_links"]["next"]["href"] == f"{amo.url}/api/v4/leads?limit=2&page=3"
    assert "next" not in pages[2].json()["_links"] and len(pages[2].json()["_embedded"]["leads"]) == 1
    assert api(amo, "GET", "leads", params={"limit": 5}).json()["_links"]["next"]["href"].endswith("page=2")
    assert api(amo, "GET", "leads", params={"limit": 5, "page": 2}).status_code == 204
    assert api(amo, "GET", "leads", params={"query": "нет такого"}).status_code == 204
    assert api(amo, "GET", "leads/20999999").status_code == 204
    nowhere = api(amo, "GET", "nowhere")
    assert nowhere.status_code == 404 and nowhere.content == b""


def test_leads_complex_creates_and_links_lead_contact_and_company(amo: Any) -> None:
    no_limit(amo)
    r = api(amo, "POST", "companies", json=[{"name": "ООО Старая"}])
    existing = r.json()["_embedded"]["companies"][0]["id"]
    email = {"field_code": "EMAIL", "values": [{"value": "petr@example.com", "enum_code": "PRIV"}]}
    r = api(amo, "POST", "leads/complex", json=[
        {"name": "Заказ с сайта", "price": 3000, "request_id": "site-1", "_embedded": {
            "contacts": [{"name": "Пётр", "custom_fields_values": [email]}],
            "companies": [{"id": existing}]}},
        {"name": "Только сделка"}])
    assert r.status_code == 200
    first, second = r.json()
    assert first["request_id"] == ["site-1"] and first["company_id"] == existing and first["merged"] is False
    assert second["contact_id"] is None and second["company_id"] is None and second["request_id"] == ["1"]
    contact = api(amo, "GET", f"contacts/{first['contact_id']}", params={"with": "leads"}).json()
    assert [x["id"] for x in contact["_embedded"]["leads"]] == [first["id"]]
    assert [x["id"] for x in contact["_embedded"]["companies"]] == [existing]
    [value] = contact["custom_fields_values"][0]["values"]
    assert value == {"value": "petr@example.com", "enum_id": value["enum_id"], "enum_code": "PRIV"}
    lead = api(amo, "GET", f"leads/{first['id']}", params={"with": "contacts"}).json()
    assert lead["_embedded"]["contacts"][0]["is_main"] is True and lead["price"] == 3000
    refused = api(amo, "POST", "leads/complex", json=[
        {"name": "Две", "_embedded": {"contacts": [{"name": "a"}, {"name": "b"}]}},
        {"name": "x", "_embedded": {"contacts": [{"name": 5}]}}])
    assert refused.status_code == 400
    assert [e["errors"][0]["path"] for e in refused.json()["validation-errors"]] == [
        "_embedded.contacts", "_embedded.contacts.0.name"]
    too_many = api(amo, "POST", "leads/complex", json=[{"name": str(i)} for i in range(51)])
    assert too_many.status_code == 400 and len(acc_of(amo).records["leads"]) == 2


def test_webhooks_are_posted_for_api_and_ui_changes(amo: Any, receiver: Receiver) -> None:
    acc = acc_of(no_limit(amo))
    r = api(amo, "POST", "webhooks", json={"destination": receiver.url, "settings": [
        "add_lead", "update_lead", "status_lead", "add_contact", "delete_lead", "note_lead"]})
    assert r.status_code == 200 and r.json()["is_disabled"] is False
    assert api(amo, "GET", "webhooks").json()["_embedded"]["webhooks"][0]["destination"] == receiver.url
    r = api(amo, "POST", "leads", json=[{"name": "Р1"}, {"name": "Р2"}])
    ids = [x["id"] for x in r.json()["_embedded"]["leads"]]
    api(amo, "PATCH", f"leads/{ids[0]}", json={"status_id": 142})
    api(amo, "POST", f"leads/{ids[0]}/notes", json=[{"note_type": "common", "params": {"text": "Оплачено"}}])
    acc.offset += 10
    manager = sorted(acc.users)[1]
    edited = ctl(amo, "PATCH", f"ui/leads/{ids[1]}", {"fields": {"price": 777}, "user_id": manager})
    ctl(amo, "POST", "ui/companies", {"fields": {"name": "Не подписана"}})     # no subscription: not sent
    ctl(amo, "DELETE", f"ui/leads/{ids[1]}", status=204)
    assert ctl(amo, "POST", "webhooks/wait", {"timeout": 5})["done"]
    forms = receiver.forms()
    assert len(forms) == 5
    assert {k: v for k, v in forms[0].items() if k.endswith("[id]") or k.startswith("account")} == {
        "leads[add][0][id]": str(ids[0]), "leads[add][1][id]": str(ids[1]), "account[subdomain]": "example",
        "account[id]": "29000001", "account[_links][self]": amo.url}
    assert forms[1]["leads[update][0][id]"] == forms[1]["leads[status][0][id]"] == str(ids[0])
    assert forms[1]["leads[status][0][status_id]"] == "142"
    assert "leads[update][0][old_status_id]" not in forms[1]
    assert forms[1]["leads[status][0][old_status_id]"] == str(acc.main_pipeline().first_status().id)
    assert forms[2]["leads[note][0][note][element_id]"] == str(ids[0])
    assert forms[2]["leads[note][0][note][text]"] == "Оплачено"
    assert forms[3]["leads[update][0][price]"] == "777"
    assert forms[3]["leads[update][0][modified_user_id]"] == str(manager)
    assert edited["updated_at"] >= edited["created_at"] + 10 and edited["price"] == 777
    assert forms[4]["leads[delete][0][id]"] == str(ids[1])
    assert {k.split("]")[0] for k in forms[4] if k.startswith("leads[")} == {"leads[delete"}
    assert {(h["User-Agent"], h["Content-Type"]) for h, _ in receiver.got} == {
        ("amoCRM-WebHook-client/1.0", "application/x-www-form-urlencoded")}
    assert [e["status"] for e in acc.log_view(kind="webhook")] == [200] * 5
    assert api(amo, "DELETE", "webhooks", json={"destination": receiver.url}).status_code == 204
    assert api(amo, "GET", "webhooks").status_code == 204


def test_control_api_adds_users_pipelines_fields_and_integrations(amo: Any) -> None:
    no_limit(amo)
    user = ctl(amo, "POST", "users", {"name": "Вера Новикова", "email": "vera@example.com"}, status=201)
    invoice_status = {"name": "Счёт", "color": "#fffeb2"}
    pipe = ctl(amo, "POST", "pipelines", {"name": "Опт", "statuses": ["Заявка", invoice_status]}, status=201)
    field = ctl(amo, "POST", "custom_fields", {"entity_type": "leads", "name": "Канал", "type": "select",
                                               "code": "CHANNEL", "enums": ["Авито", "Сайт"]}, status=201)
    assert [s["id"] for s in pipe["_embedded"]["statuses"]][-2:] == [142, 143] and pipe["is_main"] is False
    assert [u["name"] for u in api(amo, "GET", "users").json()["_embedded"]["users"]][-1] == "Вера Новикова"
    statuses = api(amo, "GET", f"leads/pipelines/{pipe['id']}/statuses").json()["_embedded"]["statuses"]
    assert statuses[2]["color"] == "#fffeb2"
    assert api(amo, "GET", f"leads/custom_fields/{field['id']}").json()["code"] == "CHANNEL"
    invoice = pipe["_embedded"]["statuses"][2]["id"]
    channel = {"field_code": "CHANNEL", "values": [{"value": "авито"}]}
    wholesale = {"name": "Опт", "status_id": invoice, "custom_fields_values": [channel],
                 "responsible_user_id": user["id"]}
    r = api(amo, "POST", "leads", json=[wholesale])
    lead = api(amo, "GET", f"leads/{r.json()['_embedded']['leads'][0]['id']}").json()
    assert (lead["pipeline_id"], lead["status_id"], lead["responsible_user_id"]) == (pipe["id"], invoice,
                                                                                     user["id"])
    assert lead["custom_fields_values"][0]["values"][0]["value"] == "Авито"
    app = ctl(amo, "POST", "integrations", {"name": "второе", "redirect_uri": "https://b.example/cb"},
              status=201)
    body = {"client_id": app["client_id"], "user_id": user["id"]}
    token = ctl(amo, "POST", "tokens", body, status=201)["access_token"]
    assert api(amo, "GET", "account", token).json()["current_user_id"] == user["id"]
    assert ctl(amo, "POST", "users", {}, status=400)["error"] == "bad_request"
    info = ctl(amo, "GET", "account")
    assert info["client_id"] == amo.extra["client_id"] and info["paid"] is True


def test_clock_expires_oauth_tokens_and_an_unpaid_account_answers_402(amo: Any) -> None:
    no_limit(amo)
    pair = ctl(amo, "POST", "oauth/tokens", {})
    assert pair["token_type"] == "Bearer" and pair["expires_in"] == 86400
    assert api(amo, "GET", "account", pair["access_token"]).status_code == 200
    ctl(amo, "PATCH", "clock", {"advance": 86400})
    r = api(amo, "GET", "account", pair["access_token"])
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert r.json() == {"title": "Unauthorized", "type": "https://httpstatus.es/401", "status": 401,
                        "detail": "Неверный логин или пароль"}
    assert api(amo, "GET", "account").status_code == 200              # the long-lived token lives a year
    ctl(amo, "PATCH", "account", {"paid": False})
    r = api(amo, "GET", "leads")
    assert r.status_code == 402 and r.json()["title"] == "Payment Required"


def test_oauth_endpoint_codes_and_refresh_tokens_work_once(amo: Any) -> None:
    no_limit(amo)
    e = amo.extra
    url = f"{amo.url}/oauth2/access_token"
    code = ctl(amo, "POST", "oauth/code", {})["code"]
    body = {"client_id": e["client_id"], "client_secret": e["client_secret"],
            "grant_type": "authorization_code", "code": code, "redirect_uri": e["redirect_uri"]}
    first = requests.post(url, data=body, timeout=10)                 # form-encoded is accepted too
    assert first.status_code == 200
    assert set(first.json()) == {"token_type", "expires_in", "access_token", "refresh_token"}
    refresh = {**body, "grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]}
    second = requests.post(url, json=refresh, timeout=10)
    assert second.status_code == 200 and second.json()["refresh_token"] != refresh["refresh_token"]
    again = requests.post(url, json=refresh, timeout=10)
    assert again.status_code == 401 and again.json()["hint"] == "Token has been revoked"
    wrong = requests.post(url, json={**refresh, "client_secret": "nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["hint"] == "Client authentication failed"
    stale = ctl(amo, "POST", "oauth/code", {})["code"]
    ctl(amo, "PATCH", "clock", {"advance": 21 * 60})
    expired = requests.post(url, json={**body, "code": stale}, timeout=10)
    assert expired.status_code == 400 and expired.json()["hint"] == "Authorization code has expired"
    # both access tokens still work (the old one lives out its 24 h), and they are JWTs
    for pair in (first.json(), second.json()):
        assert api(amo, "GET", "account", pair["access_token"]).status_code == 200
        assert pair["access_token"].count(".") == 2


def test_rate_limit_is_per_integration_recovers_and_can_lock_out(amo: Any) -> None:
    app = ctl(amo, "POST", "integrations", {"name": "другое"})
    other = ctl(amo, "POST", "tokens", {"client_id": app["client_id"]})["access_token"]
    burst = [api(amo, "GET", "account") for _ in range(12)]
    assert [r.status_code for r in burst[:7]] == [200] * 7
    refused = [r for r in burst if r.status_code == 429]
    assert len(refused) >= 3 and all(r.status_code in (200, 429) for r in burst)
    assert "text/html" in refused[0].headers["content-type"] and "Retry-After" not in refused[0].headers
    assert b"429 Too Many Requests" in refused[0].content
    assert api(amo, "GET", "account", other).status_code == 200        # another integration, another bucket
    time.sleep(0.3)
    assert api(amo, "GET", "account").status_code == 200                # 7 per second come back
    ctl(amo, "PATCH", "limits", {"rate": 1, "burst": 1, "block_after": 2, "block_seconds": 30})
    assert [api(amo, "GET", "account").status_code for _ in range(5)] == [200, 429, 429, 403, 403]
    ctl(amo, "PATCH", "limits", {"enabled": False})
    assert [api(amo, "GET", "account").status_code for _ in range(20)] == [200] * 20


def test_faults_and_the_request_log(amo: Any) -> None:
    no_limit(amo)
    ctl(amo, "PATCH", "faults", {"count": 2, "status": 504, "mode": "error"})
    assert [api(amo, "GET", "users").status_code for _ in range(3)] == [504, 504, 200]
    ctl(amo, "PATCH", "faults", {"count": 1, "mode": "drop", "methods": ["POST"]})
    with pytest.raises(requests.exceptions.RequestException):
        api(amo, "POST", "contacts", json=[{"name": "Не дошёл"}])
    assert api(amo, "GET", "contacts").status_code == 204                # dropped before it was done
    ctl(amo, "PATCH", "faults", {"count": 1, "mode": "lost", "paths": ["/api/v4/contacts"]})
    with pytest.raises(requests.exceptions.RequestException):
        api(amo, "POST", "contacts", json=[{"name": "Дошёл", "request_id": "c-1"}])
    assert [c["name"] for c in api(amo, "GET", "contacts").json()["_embedded"]["contacts"]] == ["Дошёл"]
    assert ctl(amo, "GET", "faults")["count"] == 0
    log = ctl(amo, "GET", "log?kind=api")["entries"]
    users, contacts = "/api/v4/users", "/api/v4/contacts"
    assert [(e["method"], e["path"], e["status"], e.get("fault")) for e in log] == [
        ("GET", users, 504, "error"), ("GET", users, 504, "error"), ("GET", users, 200, None),
        ("POST", contacts, None, "drop"), ("GET", contacts, 204, None),
        ("POST", contacts, None, "lost"), ("GET", contacts, 200, None)]
    assert log[5]["body"] == [{"name": "Дошёл", "request_id": "c-1"}]
    assert (log[2]["user_id"], log[2]["client_id"]) == (amo.extra["user_id"], amo.extra["client_id"])
    assert "Bearer" not in str(log) and amo.extra["long_lived_token"] not in str(log)
    ctl(amo, "DELETE", "log")
    assert ctl(amo, "GET", "log")["entries"] == []


def test_validation_error_shape_and_paths(amo: Any) -> None:
    no_limit(amo)
    r = api(amo, "POST", "leads", json=[
        {"name": "ok"},
        {"name": "bad", "price": "100", "pipeline_id": 1, "request_id": "b-1"},
        {"custom_fields_values": [{"field_id": 1, "values": [{"value": "x"}]}],
         "responsible_user_id": 30000001},
        {"_embedded": {"contacts": [{"id": 20000001}]}}])
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert {k: v for k, v in r.json().items() if k != "validation-errors"} == {
        "title": "Bad Request", "type": "https://httpstatus.es/400", "status": 400,
        "detail": "Request validation failed"}
    problems = [(e["request_id"], [(x["code"], x["path"]) for x in e["errors"]])
                for e in r.json()["validation-errors"]]
    assert problems == [
        ("b-1", [("InvalidType", "price"), ("NotSupportedChoice", "pipeline_id")]),
        ("2", [("NotSupportedChoice", "responsible_user_id"),
               ("NotSupportedChoice", "custom_fields_values.0.field_id")]),
        ("3", [("NotFound", "_embedded.contacts.0.id")])]
    assert api(amo, "GET", "leads").status_code == 204
    assert api(amo, "POST", "leads", json={"name": "not an array"}).status_code == 400
    assert api(amo, "POST", "leads", json=[{"name": str(i)} for i in range(251)]).status_code == 400
    broken = api(amo, "POST", "leads", data="{broken", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.json()["detail"] == "Request body is not valid JSON"


def test_filters_query_and_ui_edits_move_updated_at(amo: Any) -> None:
    acc = acc_of(no_limit(amo))
    t0 = acc.ts()
    a = ui_write(acc, "contacts", {"first_name": "Анна", "last_name": "Ли", "custom_fields_values": [
        {"field_code": "PHONE", "values": [{"value": "+7 (916) 123-45-67"}]}]})
    b = ui_write(acc, "leads", {"name": "Старая", "responsible_user_id": sorted(acc.users)[1]})
    c = ui_write(acc, "leads", {"name": "Нетронутая"})
    acc.offset += 100
    edited = ui_write(acc, "leads", {"price": 50}, record_id=b["id"])
    assert a["name"] == "Анна Ли" and a["custom_fields_values"][0]["values"][0]["enum_code"] == "WORK"
    assert edited["updated_at"] >= t0 + 100 and edited["created_at"] < t0 + 100
    since = api(amo, "GET", "leads", params={"filter[updated_at][from]": t0 + 100}).json()
    assert [x["id"] for x in since["_embedded"]["leads"]] == [b["id"]]
    before = api(amo, "GET", "leads", params={"filter[updated_at][to]": t0 + 50}).json()["_embedded"]["leads"]
    assert [x["id"] for x in before] == [c["id"]]
    phones = api(amo, "GET", "contacts", params={"query": "9161234567"}).json()["_embedded"]["contacts"]
    assert [x["id"] for x in phones] == [a["id"]]
    mine = api(amo, "GET", "leads", params={"filter[responsible_user_id][]": sorted(acc.users)[1],
                                            "filter[statuses][0][pipeline_id]": b["pipeline_id"],
                                            "filter[statuses][0][status_id]": b["status_id"]})
    assert [x["id"] for x in mine.json()["_embedded"]["leads"]] == [b["id"]]
    ordered = api(amo, "GET", "leads", params={"order[updated_at]": "desc"}).json()["_embedded"]["leads"]
    assert [x["id"] for x in ordered] == [b["id"], c["id"]]
