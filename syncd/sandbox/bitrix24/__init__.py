"""A faithful Bitrix24 REST sandbox (cloud portal behaviour as in the design reference, protocols.md §3).

Start it::

    from syncd.sandbox.bitrix24 import start
    h = start(rate_limit=True, seed=True)          # -> ServerHandle; h.extra["state"] is the SandboxState
    info = h.extra["state"].portal().info()        # webhook_code, user_id, application_token, client_id/secret
    url = h.url + info["webhook_path"]              # http://127.0.0.1:PORT/rest/1/<code>/
    ...; h.stop()

or ``create_app(SandboxState())`` under any ASGI server. Plain http by default (fast-bitrix24 accepts
it); ``start(https=True)`` serves HTTPS on loopback, as the real cloud requires, with a throw-away
certificate authority (``syncd.sandbox.tls``, needs ``trustme``): ``h.url`` is ``https://127.0.0.1:PORT``
and ``h.extra["ca_bundle"]`` the CA file a client trusts (``REQUESTS_CA_BUNDLE`` for requests and the
official SDK b24pysdk, whose webhook is ``BitrixWebhook(domain="127.0.0.1:PORT", webhook_token="1/CODE")``
on the default portal; ``ca_bundle`` in syncd's connector settings).

Portals (multi-tenant by path prefix). A portal named ``default`` always exists and is served at the root;
any other portal ``<p>`` is served under ``/<p>``. Portals share nothing: data, ids, limits, faults,
webhooks, tokens, handlers and request logs are per portal. Names ``rest``, ``oauth``, ``_sandbox`` are
reserved.

REST URL forms::

    [/<p>]/rest/<USER_ID>/<WEBHOOK_CODE>/<method>[.json]      inbound webhook (wrong code -> 401 NO_AUTH_FOUND)
    [/<p>]/rest/<method>[.json]?auth=<access_token>           OAuth app (expired -> 401 expired_token)
    /oauth/token/  (or /<p>/oauth/token/)                      token server: grant_type=refresh_token|
                                                               authorization_code, client_id, client_secret

Bodies: JSON, ``application/x-www-form-urlencoded`` with PHP bracket keys, or GET query strings.
Envelope ``{"result", "next"?, "total"?, "time": {...operating}}``; errors ``{"error", "error_description"}``:
503 QUERY_LIMIT_EXCEEDED (leaky bucket, default leak 2/s burst 50, each request incl. batch counts once),
429 OPERATION_TIME_LIMIT (per caller+method operating time over 600 s), 401 NO_AUTH_FOUND / expired_token,
403 insufficient_scope / ACCESS_DENIED, 400 ERROR_CORE (validation), 404 ERROR_NOT_FOUND "Not found"
(legacy ``crm.*.get/update/delete``; ``crm.item.*`` answers 400 NOT_FOUND), 404 ERROR_METHOD_NOT_FOUND,
400 ERROR_BATCH_LENGTH_EXCEEDED; a nested ``batch`` inside batch gets ERROR_BATCH_METHOD_NOT_ALLOWED in
``result_error`` (the batch itself answers 200 as always). event.* with a webhook -> 401 WRONG_AUTH_TYPE.

Methods: CRM entities in the legacy UPPER_CASE API (``crm.deal|contact|company|lead|requisite|product.
add|update|get|list|delete|fields``, ``crm.requisite.bankdetail.*``, ``crm.address.*``, product rows of deals
and leads) and the universal ``crm.item.*``; ``crm.category.list``, ``crm.status.list``,
``crm.requisite.preset.list``, ``crm.*.userfield.list``; ``crm.timeline.comment.add|get|list|update|delete|
fields`` (timeline.py: list filters by ENTITY_ID + ENTITY_TYPE only, as the portal does);
``im.notify.system.add`` / ``im.notify.personal.add`` (im.py: a TAG replaces the user's earlier notice of
the same application — OAuth app, or ``CLIENT_ID`` when called through a webhook); ``tasks.task.add|update|
get|list`` (tasks.py: camelCase answers, filter/order/select by UPPER_CASE names, TITLE as a LIKE
pattern); ``user.get``, ``user.current``, ``profile``, ``scope``, ``timeman.status``; ``event.bind|unbind|
get`` (OAuth only); ``batch``; external telephony (telephony.py: ``telephony.externalCall.register|finish|
attachRecord|show|hide|searchCrmEntities``, ``voximplant.statistic.get``, the call activities in
``crm.activity.list|get``; register/finish only for OAuth apps unless the ``app_only`` knob is off).

Control API (JSON; everything a person does in the portal UI, plus faults). ``<p>`` is ``default`` for
the root portal. Bad bodies answer 400 ``{"error": "bad_request", "detail"}``, unknown ids 404
``{"error": "not_found"}``::

    GET    /_sandbox/portals                        list portal names
    POST   /_sandbox/portals                        {"name", "rate_limit"?, "leak_rate"?, "burst"?, "domain"?,
                                                    "seed"?} -> credentials (webhook_url, user_id, webhook_code,
                                                    application_token, client_id, client_secret, member_id)
    POST   /_sandbox/reset                          drop every portal, recreate an empty default
    GET    /_sandbox/<p>                            credentials and addresses of the portal
    DELETE /_sandbox/<p>                            delete the portal
    POST   /_sandbox/<p>/reset                      wipe data and request log (keeps credentials, knobs,
                                                    rejections and the clock)
    POST   /_sandbox/<p>/seed                       seed_demo() -> ids
    POST   /_sandbox/<p>/webhooks                   {"user_id", "scopes"} -> another inbound webhook
    POST   /_sandbox/<p>/oauth/tokens               {"user_id", "scopes", "expires_in"} -> access/refresh token
    POST   /_sandbox/<p>/oauth/code                 {"user_id"} -> authorization code (lives 30 s)
    POST   /_sandbox/<p>/oauth/expire               expire every access token now
    GET    /_sandbox/<p>/users                      users with presence
    POST   /_sandbox/<p>/users                      {"name", "last_name", "email", "position", "online", "workday",
                                                    "active"}
    PATCH  /_sandbox/<p>/users/<id>                 {"online": bool, "workday": OPENED|PAUSED|CLOSED, "active",
                                                    "phone_inner": extension (UF_PHONE_INNER) or null}
    GET    /_sandbox/<p>/users/<id>/notifications   the notices that user sees (a tagged notice replaced by a
                                                    newer one with the same tag is gone; REPLACED lists them)
    GET|POST /_sandbox/<p>/pipelines                {"name", "stages": [{"id", "name", "semantics": P|S|F}]}
    GET|POST /_sandbox/<p>/userfields               {"entity": deal|contact|company|lead, "field_name":
                                                    "UF_CRM_X", "type": string|boolean|double|..., "label",
                                                    "multiple", "mandatory"}
    GET|PATCH /_sandbox/<p>/faults                  error_rate, error_statuses, error_html, latency, timeout_rate,
                                                    timeout_sleep, lost_answer_rate, lost_answer_mode (500|drop),
                                                    fail_next, timeout_next, lost_next, access_denied, methods, seed
    GET|PATCH /_sandbox/<p>/limits                  enabled, leak_rate, burst, operating_limit, operating_window,
                                                    operating_extra
    GET    /_sandbox/<p>/log[?since=ts]             entries, per_second, max_per_second, requests, limit_hits, errors
    DELETE /_sandbox/<p>/log                        clear the request log
    GET|POST /_sandbox/<p>/outgoing_webhooks        {"url", "events": ["ONCRMDEALUPDATE", ...]} -> application_token
    DELETE /_sandbox/<p>/outgoing_webhooks/<id>
    POST   /_sandbox/<p>/events/wait                {"timeout"} wait until queued event deliveries are done
    POST   /_sandbox/<p>/ui/<entity>                {"fields", "user_id"} create as a manager (fires ...ADD)
    PATCH  /_sandbox/<p>/ui/<entity>/<id>           edit as a manager in the UI (fires ...UPDATE); PRODUCT_ROWS
                                                    in fields of a deal or lead are saved as its product rows
    DELETE /_sandbox/<p>/ui/<entity>/<id>
    GET    /_sandbox/<p>/notifications[?user_id=N][&all=1]   notices users see; all=1: every notice sent,
                                                    replaced ones included
    GET    /_sandbox/<p>/comments[?entity_type=deal&entity_id=N]   timeline comments
    GET    /_sandbox/<p>/tasks                      every task as stored (camelCase)
    GET|PATCH /_sandbox/<p>/telephony               {"leads_enabled", "app_only"} -> settings, active calls,
                                                    statistics, call activities (also /telephony/calls|
                                                    statistics|activities[?owner_type_id=&owner_id=])
    GET|PATCH /_sandbox/<p>/clock                   {"advance": s} | {"offset": s} | {"now": ISO} -> {"now", "offset"}:
                                                    the portal's clock (DATE_CREATE/DATE_MODIFY of new writes,
                                                    CREATED, task dates, event `ts`); limits keep real time
    PATCH  /_sandbox/<p>/dates/<entity>/<id>        {"DATE_CREATE", "DATE_MODIFY", "MOVED_TIME", ...}: back-date a
                                                    record's date fields; a data fix, no event fires
    GET    /_sandbox/<p>/rejections                 the refused writes with their hit counts
    POST   /_sandbox/<p>/rejections                 {"method": "crm.deal.add", "fields"?: {"UTM_SOURCE": "spam"},
                                                    "record_id"?: 7, "status"?: 400, "error"?: "ERROR_CORE",
                                                    "description"?, "times"?: N} -> refuse matching calls (alone or
                                                    inside a batch, then as that command's error) until cleared,
                                                    or the next N of them; nothing is written
    DELETE /_sandbox/<p>/rejections[/<id>]          clear one or all (the "fix" before a replay)

Faults that name methods (``"methods": [...]``) hit any request carrying one of them, alone or inside a
``batch``. ``lost_next`` / ``lost_answer_rate`` execute the call (every command of a batch) and then lose
its answer: ``lost_answer_mode`` "500" answers 500 INTERNAL_SERVER_ERROR, "drop" closes the connection
mid-answer. So "lose the answer of the next crm.timeline.comment.add after doing it" is
``PATCH faults {"methods": ["crm.timeline.comment.add"], "lost_next": 1}``; ``fail_next`` /
``error_rate`` answer an error *instead* of executing; ``timeout_next`` / ``timeout_rate`` sleep
``timeout_sleep`` seconds first.

Outbound events are POSTed form-encoded (``event``, ``event_handler_id``, ``data[FIELDS][ID]``, ``ts``,
``auth[domain|client_endpoint|server_endpoint|member_id|application_token]``) from a background thread
per portal; delivery results go to the request log (kind "event"). Secrets are never logged.

Sandbox choices where the docs are silent: product rows come back with numeric PRICE/QUANTITY (as in the
docs' examples); ``STAGE_ID`` not in the deal's pipeline -> ERROR_CORE; ``CATEGORY_ID`` is ignored on update;
undefined ``UF_*`` fields are ignored (define them through the control API); ``crm.item`` maps UF_CRM_X to
``ufCrmX``.
"""

from __future__ import annotations

from typing import Any

from syncd.sandbox.bitrix24.app import create_app
from syncd.sandbox.bitrix24.portal import BxError, Portal, SandboxState
from syncd.sandbox.bitrix24.seed import seed_demo
from syncd.sandbox.server import ServerHandle, serve_in_thread

__all__ = ["BxError", "Portal", "SandboxState", "create_app", "seed_demo", "start"]


def start(host: str = "127.0.0.1", port: int = 0, *, state: SandboxState | None = None, rate_limit: bool = True,
          seed: bool = False, https: bool = False, **uvicorn_opts: Any) -> ServerHandle:
    """Serve a sandbox in a daemon thread; ``handle.extra`` has ``state``, ``app`` and ``webhook_url``
    (and ``ca_bundle`` with ``https=True``)."""
    if state is None:
        state = SandboxState(rate_limit=rate_limit)
        if seed:
            seed_demo(state, "default")
    app = create_app(state)
    tls = None
    if https:
        from syncd.sandbox.tls import local_tls
        tls = local_tls()
        uvicorn_opts.update(ssl_certfile=tls.certfile, ssl_keyfile=tls.keyfile)
    handle = serve_in_thread(app, host, port, **uvicorn_opts)
    p = state.portal()
    p.base_url = handle.url
    handle.extra.update(state=state, app=app, webhook_url=handle.url + p.info()["webhook_path"])
    if tls is not None:
        handle.extra.update(ca_bundle=tls.ca_bundle, tls_dir=str(tls.dir))
    return handle
