"""A faithful RetailCRM API v5 sandbox (one account), for testing a syncd RetailCRM connector.
Protocol notes: protocols.md §5. Checked against the vendor's Python client ``retailcrm`` 5.3.0, run
unchanged (tests/sandbox/test_retailcrm_sandbox.py). Shares no code with any connector.

Start it::

    from syncd.sandbox.retailcrm import start
    h = start()                       # -> ServerHandle; rate limit on (start(rate_limit=False) to switch off)
    client = retailcrm.v5(h.url, h.extra["api_key"])      # the crm_url: the API lives under /api/v5
    sb = h.extra["state"]             # the Sandbox: sb.orders, sb.customers, sb.history, sb.log, ...
    ...; h.stop()

or ``create_app(Sandbox())`` under any ASGI server.

API (``/api/v5``; ``/api/api-versions`` and ``/api/credentials`` have no version). The key comes in the
``X-API-KEY`` header or an ``apiKey`` parameter. Writes are POST ``application/x-www-form-urlencoded``
with JSON-encoded entity fields (``order=<json>``, ``customer=<json>``, ``customerCorporate=<json>``,
``payment=<json>``) plus ``site`` and ``by`` (``externalId`` default, or ``id``); a JSON request body is
not read. GET parameters use PHP bracket keys (``filter[ids][]=1``, ``filter[ids][0]=1``)::

    GET  orders            filter: ids externalIds numbers customerId customerExternalId customer (name/email/
                           phone substring) email extendedStatus (status or group codes) sites managers
                           orderMethods createdAtFrom/To statusUpdatedAtFrom/To customFields[code]; newest
                           first (v5 has no statuses[] or updatedAt filters: extendedStatus, history)
    POST orders/create     201 {"success", "id", "order"}       GET orders/{externalId|id}?by=&site=
    POST orders/{x}/edit   200 {"success", "id", "order"}       GET orders/statuses?ids[]=&externalIds[]=
    GET  orders/history    filter: sinceId (exclusive) startDate endDate orderId orderExternalId; oldest first
    POST orders/payments/create  201 {"success", "id"}          POST orders/payments/{x}/edit (by=...)
    GET  customers, customers/{x}, customers/history; POST customers/create (201 {"success","id"}), .../edit
    GET  customers-corporate, customers-corporate/{x}, .../{x}/companies, customers-corporate/history;
    POST customers-corporate/create, .../{x}/edit (parameter customerCorporate)
    GET  reference/sites|statuses|status-groups|order-methods|order-types|payment-types|payment-statuses|
         delivery-types (maps keyed by code);  GET users, users/{id}
    GET  tasks             filter: performers creators order (number) customer (name/email/phone substring)
                           status (completed|performing) text (substring) dateFrom dateTo; newest first
    POST tasks/create      task={text, commentary, datetime "Y-m-d H:i", performerId (required), complete,
                           order {id|externalId}, customer {id|externalId}} (+ site for externalIds)
                           -> 201 {"success", "id"};   POST tasks/{id}/edit -> 200;   GET tasks/{id} -> "task"
    GET  custom-fields     filter: entity code type name -> "customFields": [{code, name, entity, type, ...}]

Telephony (telephony.py)::

    POST integration-modules/{code}/edit  integrationModule={integrationCode, name, clientId, active?,
                           integrations {telephony {...}}} -> 201 new / 200 changed {"success", "info"}
    GET  integration-modules/{code}       -> {"success", "integrationModule"}
    POST telephony/calls/upload           calls=[{date "Y-m-d H:i:s", type in|out, phone, code, userId?,
                           result answered|busy|failed|no answer|not allowed|unknown, duration, externalId,
                           recordUrl, externalPhone, site, clientId}] (50 at most) -> {"success",
                           "processedCallsCount", "duplicateCalls"?: [externalId...]}
    A call with an externalId uploaded before is not saved again: listed in duplicateCalls, not counted.
    A saved call is bound to the (oldest) customer with its phone (last 10 digits) and to the user whose
    ``code`` is its code (users get a code through the control API). Sources: retailcrm/api-client-php
    (src/Model/Entity/Telephony/Call.php, src/Enum/Telephony/CallResult.php,
    src/Model/Response/Telephony/CallsUploadResponse.php, tests/src/ResourceGroup/TelephonyTest.php,
    src/Model/Entity/Integration/Telephony/TelephonyConfiguration.php), retailcrm/api-client-python
    (telephony_calls_upload: calls as a JSON form field), retailcrm/api-client-dotnet (50 calls at most).
    Assumptions: that an upload needs an active module with integrations.telephony, and its error text
    (400 "Telephony module is not enabled"); that duplicateCalls lists externalIds and processedCallsCount
    counts only new calls; that a bad call refuses the whole upload (400 "Errors in the entity format");
    the 201/200 split of module edit and its empty ``info``.

Lists: ``limit`` in 20/50/100 (default 20), ``page`` from 1; ``pagination {limit, totalCount, currentPage,
totalPageCount}`` (totalPageCount 0 when empty). A filter the sandbox does not implement answers 400
"Errors in the filter", so a connector never takes an unfiltered list for a filtered one.

Entities (as printed in the vendor PHP client's fixtures, which are real answers): orders carry id/slug,
number ("<id><site letter>", "12A"; or as given), site, status, statusUpdatedAt, createdAt, orderMethod,
orderType, names, email, phone, comments, managerId, items [{id, offer{externalId,...}, productName,
initialPrice, quantity, prices, status}], delivery {code, cost, netCost, address{text}}, payments keyed by
payment id, summ (goods), totalSumm (goods + delivery), prepaySum (payments in a paymentComplete status),
customer (the full customer), customFields (a map; ``[]`` when empty — PHP's empty array), fromApi.
Tasks: id, text, commentary, datetime, createdAt, complete, performer (user id), performerType "user",
creator (UI tasks), order {id, externalId, number}, customer {id, externalId, site}; no task history here.
An order without ``customer {id|externalId}`` gets a new customer made from its contact data. ``items``
in an edit is the whole composition (items left out are removed). Empty values are left out of answers.

History (one sequence per entity kind): a create is one record with ``created: true`` and the full entity
(orders: field ``status``, newValue {"code"}; customers: field ``id``); each changed field of an edit is
one record with field names in snake_case (``first_name``, ``manager_comment``, ``delivery_cost``,
``delivery_type`` {"code"}, ``manager`` {"id"}, ``custom_<code>``, ``order_product.quantity`` with
``item``, ``payments`` / ``payments.status`` with ``payment``, ``phones`` one number per record) and a
short entity ref {id, externalId, managerId, site, status}. ``source`` is "api" with ``apiKey {"current":
true}`` for the key that asks (false for another key) — how a client skips its own writes — or "user"
with ``user {"id"}`` for control-API "UI" writes, which carry no apiKey.

Errors ``{"success": false, "errorMsg", "errors"?}``: 403 '"apiKey" is missing.' / 'Wrong "apiKey"
value.'; 400 "Parameter 'order' is missing"; 400 "Order is not loaded" with errors per field for order
validation (a duplicate externalId per site, unknown status/method/delivery code, bad email, unknown
customer: "Customer with externalId=X not found."); 400 "Errors in the entity format" for customers and
payments; 404 "Not found"; 404 "API method not found"; 405 "Method Not Allowed"; 403 "Access denied."
for a site outside the key's; 400 "Parameter 'site' is missing" for a write without ``site`` when the key
reaches several sites. Rate limit: a token bucket per key (10 req/s, burst 10), excess -> 503 (or
``start(limit_status=429)``) '{"success": false, "errorMsg": "Limit of requests per second exceeded"}'.

Control API (JSON; 400 {"error": "bad_request", "detail"}, 404 {"error": "not_found"})::

    GET    /_sandbox                         api_key, keys, now, counts
    POST   /_sandbox/reset                   {"references"?: true} wipe data, history, log, faults
    POST   /_sandbox/seed                    {"orders": N, "customers": N, "site"?} made by a manager
    POST   /_sandbox/api-keys                {"key"?, "sites"?: [...]} another key (sites: selective access)
    POST   /_sandbox/reference/<kind>        {"code", "name", ...} a site, status ({"group"}), status group,
                                             order method/type, payment type/status, delivery type
    POST   /_sandbox/users                   {"firstName", "lastName", "email", "isManager"?, "code"?} -> user
                                             (code: the manager's internal telephony number)
    POST   /_sandbox/custom-fields           {"entity": order|customer|customer_corporate, "code", "type"}
    GET|PATCH /_sandbox/faults               fail_next + fail_status (500|503...) + html (nginx page),
                                             drop_next (connection closed, nothing done), lose_next (done,
                                             then the connection closes), latency, path (prefix filter)
    GET|PATCH /_sandbox/limits               enabled, rate, burst, status (503|429)
    GET|PATCH /_sandbox/clock                {"advance": s} | {"now": "Y-m-d H:i:s"} -> {"now", "offset"}
    GET|DELETE /_sandbox/log                 entries {ts, method, path, key, status, error?, fault?}
    POST   /_sandbox/ui/orders|customers|customers-corporate|tasks
                                             {"order"|"customer"|"customerCorporate"|"task": {...}, "site"?,
                                             "user_id"?} as a manager
    PATCH  /_sandbox/ui/orders|customers|customers-corporate|tasks/<id>   {<entity>: {...}, "user_id"?}
    GET    /_sandbox/tasks                   every task, as the API prints it
    GET    /_sandbox/calls                   every uploaded call {id, date, type, phone, result, duration,
                                             externalId, recordUrl, externalPhone, code, userId, customerId,
                                             site, clientId, createdAt}
    DELETE /_sandbox/ui/orders/<id>          history record with ``deleted: true``

Seed: site "shop" (Moscow time, RUB); statuses new, client-confirmed, assembling, delivering, complete,
cancel-other in groups new/approval/assembling/delivery/complete/cancel; order methods shopping-cart
(API default), phone (UI default), one-click; payment types cash/bank-card/bank-transfer; payment
statuses not-paid (default)/paid/invoice; delivery types courier/self-delivery/russian-post; users 1
(admin), 2 and 3 (managers). Custom fields: none until defined (undefined codes in writes are ignored).

Confirmed from the vendor's sources: header X-API-KEY, form+JSON writes, the messages '"apiKey" is
missing.', 'Wrong "apiKey" value.', "Not found", "Access denied.", "Errors in the entity format",
"Parameter '...' is missing" (PHP client's exception factory); 503 as the rate-limit status (PHP client's
pagination example retries on 503); history records, field names, ``apiKey.current`` and ``source``
(PHP client fixtures, retailcrm plugins that skip ``apiKey.current`` records); "Order is not loaded" with
"customer.externalId" errors (a retailcrm/1C-configuration PR quoting a live answer).
Assumptions (not confirmed): the 403 status of key errors; the rate-limit message and the bucket shape
(10/s, burst 10); the exact texts of per-field errors (duplicate externalId, unknown codes, bad email,
limit); newest-first list order; "Errors in the filter" for unsupported filters; one created record per
create (live accounts may add records for fields set on create); item add/remove records (field
``order_product``); that undefined custom fields are ignored; the 405/404 texts. retailcrm 5.3.0's
``customer_corporate_edit`` sends ``customersCorporate`` (not ``customerCorporate``): the sandbox
answers it as the API would, 400 "Parameter 'customerCorporate' is missing".
"""

from __future__ import annotations

from typing import Any

from syncd.sandbox.retailcrm.app import create_app
from syncd.sandbox.retailcrm.state import ApiError, Sandbox
from syncd.sandbox.server import ServerHandle, serve_in_thread

__all__ = ["ApiError", "Sandbox", "create_app", "start"]


def start(host: str = "127.0.0.1", port: int = 0, *, sandbox: Sandbox | None = None, rate_limit: bool = True,
          limit_status: int = 503, api_key: str | None = None, **uvicorn_opts: Any) -> ServerHandle:
    """Serve a sandbox in a daemon thread; ``handle.extra`` has ``state`` (the Sandbox), ``app``,
    ``api_key`` and ``api_url`` (``handle.url + "/api/v5"``). The client's crm_url is ``handle.url``."""
    sb = sandbox or Sandbox(rate_limit=rate_limit, api_key=api_key, limit_status=limit_status)
    app = create_app(sb)
    handle = serve_in_thread(app, host, port, **uvicorn_opts)
    handle.extra.update(state=sb, app=app, api_key=sb.api_key, api_url=handle.url + "/api/v5")
    return handle
