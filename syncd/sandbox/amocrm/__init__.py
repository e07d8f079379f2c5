"""A faithful amoCRM API v4 sandbox (protocols.md §4), for testing syncd's amoCRM connector.

Checked by two third-party clients running unchanged (tests/sandbox/test_amocrm_sandbox.py):
``amocrm-api`` 2.6.1 (``amocrm.v2``) and ``aioamocrm`` 0.1.1. Shares no code with any connector.

Start it::

    from syncd.sandbox.amocrm import start
    h = start()                       # -> ServerHandle; rate limit on, seeded account "example"
    h.url                             # http://127.0.0.1:PORT; the API is at h.url + "/api/v4/"
    h.extra["state"]                  # the Account (state.py); h.extra["long_lived_token"], ["client_id"],
                                      # ["client_secret"], ["redirect_uri"], ["subdomain"], ["account_id"]
    ...; h.stop()

or ``create_app(Account())`` under any ASGI server. In-process, a test can act as a manager in the UI
with ``ui_write(acc, "leads", {...}, record_id=…)`` / ``ui_delete`` (webhooks fire), or seed in bulk with
``records.create(acc, "leads", [...], user_id)`` under ``acc.lock``.

Reaching it with the clients (neither is modified):
  * aioamocrm: ``AmoCRMClient(base_url=h.url, auth=...)`` — its documented setting for a test server;
    ``_links.next.href`` is built from the request's own host, so its pager follows the links.
  * amocrm-api hardcodes ``https://{subdomain}.amocrm.ru`` (API and ``/oauth2/access_token``, the latter
    through ``requests.post``). The test *script* (never the package) patches ``requests.Session.
    get_adapter`` so that this origin goes to a transport adapter — requests' extension point — which
    rewrites it to ``h.url``. Its ``get_account_info()`` cannot work against any server (its Manager
    calls a ``get_all`` that ``AccountInteraction`` lacks); ``AccountInteraction().get()`` does.

Auth. ``Authorization: Bearer <token>``; unknown or expired (by the account's clock) -> 401
``{"title": "Unauthorized", "type": "https://httpstatus.es/401", "status": 401, "detail": "Неверный логин
или пароль"}`` (body as in amocrm-api-php issue #333). Access tokens are JWTs (HS256 here, RS256 at amo)
with ``exp``, ``aud`` = client_id, ``sub`` = user id, ``account_id``, ``api_domain``: amocrm-api reads
``exp`` to decide to refresh. ``POST /oauth2/access_token`` (JSON or form) with client_id, client_secret,
grant_type=authorization_code (code, redirect_uri) | refresh_token -> ``{token_type: "Bearer",
expires_in: 86400, access_token, refresh_token}``. Codes (20 min) and refresh tokens (3 months,
unconfirmed) work ONCE; a used refresh token -> 401 ``{"hint": "Token has been revoked", "title":
"Некорректный запрос", "type": ".../OAuthProblemJson", ...}`` (amocrm-api-php #123, #315); a used code ->
400 "Authorization code has been revoked"; bad client/secret -> 401 "Client authentication failed".
Old access tokens stay valid until they expire (assumed). Long-lived tokens: same JWTs, no refresh.

Endpoints (``/api/v4/``): ``account`` (with=amojo_id,uuid,version,task_types,users_groups), ``users[/id]``,
``leads/pipelines[/id[/statuses[/id]]]`` (every pipeline has "Неразобранное" (type 1), its statuses, 142
won and 143 lost), ``{leads|contacts|companies}``: GET list, GET ``/{id}``, POST (array ≤ 250, each may
carry ``request_id``, echoed in ``_embedded.<type>[i].request_id``, else its index), PATCH (array with
ids) and PATCH ``/{id}``; ``/custom_fields[/id]`` (GET; fields are added through the control API),
``/tags``, ``/notes``, ``/{id}/notes[/id]`` (note_type common, call_in/call_out with params phone and
source, …; PATCH ``/notes``, ``/{id}/notes``, ``/{id}/notes/{id}`` edits notes — amoCRM's "Редактирование
примечаний", https://www.amocrm.ru/developers/content/crm_platform/events-and-notes#notes-edit — as a
call integration updates its call note's duration and link), ``/{id}/link``, ``/unlink``, ``/links``;
``leads/complex`` (≤ 50 leads, one contact and one company each, answers ``[{id, contact_id, company_id,
request_id: [..], merged: false}]``); ``tasks[/id]`` (GET, POST, PATCH; filter entity_type, entity_id,
is_completed, responsible_user_id, task_type, updated_at); ``webhooks`` (GET, POST {destination,
settings}, DELETE {destination}).

Lists: ``page`` (from 1), ``limit`` (default 50; over 250 served as 250 — assumed, not an error),
``with=contacts`` (leads), ``with=leads`` (contacts, companies), ``filter[id][]``/``filter[id][0]``,
``filter[updated_at|created_at|closed_at|price][from|to]`` (inclusive), ``filter[responsible_user_id|
pipeline_id|name]``, ``filter[statuses][0][pipeline_id|status_id]``, ``query=`` (substring of name and
field values; digits also match formatted phones), ``order[id|created_at|updated_at]=asc|desc`` (default
id asc — assumed). HAL: ``{"_page", "_links": {self, next?, first?, prev?}, "_embedded": {...}}``.
``next`` is linked when the page is full (assumed), so a walk whose total is a multiple of the limit
ends with **204 No Content** (empty body), as does any empty list. GET of an unknown id -> 204 (both
clients treat that as "not found"). Unknown paths -> 404, empty body.

Records: leads carry pipeline_id/status_id (none -> main pipeline, first open status; a status alone
picks its pipeline; 142/143 set closed_at), price (int), responsible_user_id, custom_fields_values
``[{field_id|field_code, values: [{value, enum_id|enum_code}]}]`` (answered with field_name, field_code,
field_type; multitext PHONE/EMAIL values always carry enum_id and enum_code, WORK by default),
``_embedded`` {tags, contacts (with is_main), companies}. A lead's first linked contact is its main
contact. Contacts without a name get "first_name last_name". Unknown keys in a write are ignored;
floats are accepted for Unix times and truncated (amocrm-api sends ``datetime.timestamp()``; assumed).
updated_at moves (and webhooks fire) only when a write changes something (assumed).

Errors. A write is all or nothing: 400 problem+json ``{"title": "Bad Request", "type":
"https://httpstatus.es/400", "status": 400, "detail": "Request validation failed", "validation-errors":
[{"request_id": "0", "errors": [{"code": "NotSupportedChoice", "path": "status_id", "detail": ...}]}]}``;
codes used: NotSupportedChoice, InvalidType, NotBlank, NotFound (PATCH of an unknown id, assumed),
InvalidUrl. 402 ``Payment Required`` problem when the account is unpaid (control: paid=false). Rate limit:
a token bucket per integration, 7 requests/s with bursts of 7 (``start(rate_limit=False)`` turns it
off); over it -> 429 with an nginx HTML body and no Retry-After (assumed: the official SDK raises its
429 exception only for a non-JSON body); optionally ``block_after`` refusals in a row lock the
integration out with 403 (nginx HTML) for ``block_seconds``.

Unconfirmed, chosen here (each noted where it applies): a batch write is all or nothing; PATCH of an
unknown id is 400 NotFound; ``limit`` > 250 is served as 250; ``next`` iff the page is full; default order
by id; ≤ 50 leads per leads/complex; refresh tokens live 3 months and old access tokens stay valid after a
refresh; 429 body is nginx HTML without Retry-After; 402 detail text; a call note needs params phone and
source; a note PATCH replaces ``params`` whole, cannot change ``note_type`` and sends no webhook; POST
/webhooks answers 200 with the hook, an empty GET /webhooks 204; a status change posts
``update`` and ``status`` in one webhook body; webhooks are not retried or disabled after failures.
Confirmed (protocols.md §4, the clients' source, amocrm-api-php issues): the 400 shape, 401 body, OAuth
error body and single-use refresh tokens, 204 for empty lists, 142/143, PHONE/EMAIL enum codes, 7 req/s.

Webhooks (hooks.py): on every change by the API or the UI, a form-encoded POST (User-Agent
``amoCRM-WebHook-client/1.0``) to each destination subscribed to the action (add_lead, update_lead,
status_lead, responsible_lead, delete_lead, note_lead, the same for contact and company):
``leads[status][0][id]=…&leads[status][0][old_status_id]=…&…[custom_fields][0][values][0][value]=…&
account[subdomain]=example&account[id]=…``, sent from a background thread, best effort, each attempt
in the request log (kind "webhook").

Control API (JSON; not part of amoCRM; control.py)::

    GET|PATCH  /_sandbox/account          credentials; {"paid": false} -> every API call answers 402
    POST       /_sandbox/reset            data, clock, faults, limits, log back to the seed (credentials kept)
    POST       /_sandbox/users            {"name", "email", "is_admin"}
    POST       /_sandbox/pipelines        {"name", "statuses": ["…" | {"name", "color"}], "is_main"}
    POST       /_sandbox/custom_fields    {"entity_type", "name", "type", "code", "enums": ["…"]}
    POST       /_sandbox/integrations     {"name", "redirect_uri"} -> client_id, client_secret (own bucket)
    POST       /_sandbox/tokens           {"client_id"?, "user_id"?, "expires_in"?} -> a long-lived token
    POST       /_sandbox/oauth/code       {"client_id"?, "user_id"?} -> an authorization code
    POST       /_sandbox/oauth/tokens     {"client_id"?, "user_id"?, "expires_in"?} -> a token pair
    GET|PATCH  /_sandbox/clock            {"advance": s} | {"offset": s}: timestamps and token expiry
    GET|PATCH  /_sandbox/faults           {"count": N, "status": 500|502|504, "mode": "error"|"drop"|"lost",
                                          "paths": ["/api/v4/leads"], "methods": ["POST"]}
    GET|PATCH  /_sandbox/limits           {"enabled", "rate", "burst", "block_after", "block_seconds"}
    GET|DELETE /_sandbox/log[?since=&kind=api|oauth|webhook]
    POST       /_sandbox/webhooks/wait    {"timeout"} -> {"done": bool}
    POST       /_sandbox/ui/<type>        {"fields", "user_id"}: a manager creates a record in the UI
    PATCH      /_sandbox/ui/<type>/<id>   {"fields", "user_id"}: … edits it (status, price: webhooks fire)
    DELETE     /_sandbox/ui/<type>/<id>   … deletes it (delete_* webhooks)

Fault modes: "error" answers the status (nginx HTML) instead of doing the call, "drop" closes the
connection without doing it, "lost" does the call and then closes the connection.

Seed (state.seed): account "example" (id 29000001), users Администратор (admin), Анна Смирнова, Борис
Петров; pipeline "Воронка": Неразобранное, Первичный контакт, Переговоры, Принимают решение, 142, 143;
lead fields "Номер заказа" (text, ORDER_NO) and "Источник" (select: Сайт, Телефон, Магазин); contact
fields Должность (POSITION), Телефон (PHONE: WORK, WORKDD, MOB, FAX, HOME, OTHER), Email (EMAIL: WORK,
PRIV, OTHER); company fields Телефон, Email, Web (WEB), Адрес (ADDRESS). Ids use separate large ranges
per kind, so an id of the wrong kind is never valid.
"""

from __future__ import annotations

from typing import Any

from syncd.sandbox.amocrm.app import create_app
from syncd.sandbox.amocrm.control import ui_delete, ui_write
from syncd.sandbox.amocrm.state import Account, AmoError
from syncd.sandbox.server import ServerHandle, serve_in_thread

__all__ = ["Account", "AmoError", "create_app", "start", "ui_delete", "ui_write"]


def start(host: str = "127.0.0.1", port: int = 0, *, account: Account | None = None, rate_limit: bool = True,
          subdomain: str = "example", **uvicorn_opts: Any) -> ServerHandle:
    """Serve a sandbox in a daemon thread; ``handle.extra`` has ``state`` (the Account), ``app`` and the
    account's credentials (subdomain, account_id, client_id, client_secret, redirect_uri,
    long_lived_token, user_id)."""
    acc = account or Account(subdomain, rate_limit=rate_limit)
    app = create_app(acc)
    handle = serve_in_thread(app, host, port, **uvicorn_opts)
    acc.base_url = handle.url
    handle.extra.update(state=acc, app=app, **acc.credentials)
    return handle
