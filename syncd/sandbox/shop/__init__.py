"""A sandbox 1C-Bitrix shop: the CommerceML exchange endpoint (protocols.md §1) and an order book.

Start it::

    from syncd.sandbox.shop import start, seed_demo
    h = start(seed=10)                      # -> ServerHandle; h.extra["state"] is the ShopState
    url = h.extra["exchange_url"]           # http://127.0.0.1:PORT/bitrix/admin/1c_exchange.php
    # login/password: h.extra["login"], h.extra["password"] (default 1c_exchange / secret)
    ...; h.stop()

or ``create_app(ShopState(...))`` under any ASGI server.

Exchange (``/bitrix/admin/1c_exchange.php``), status answers as ``text/html; charset=windows-1251``,
lines joined by ``\\n``, no BOM:

- ``type=sale|catalog&mode=checkauth`` with HTTP Basic -> ``success\\nPHPSESSID\\n<id>\\nsessid=<md5>\\n``
  (+ ``timestamp=<unix>`` for catalog) and a ``Set-Cookie``; wrong credentials -> ``failure\\n<reason>``.
- Every later call needs the cookie (else ``failure``). ``sessid`` ratchet: once any call carried a valid
  ``sessid`` for a type, calls without it answer ``failure`` "source check"; a wrong one always does.
- ``mode=init[&version=V]`` -> ``zip=no\\nfile_limit=<n>`` (+ ``sessid=…`` and ``version=2.09`` when
  ``version`` was sent); cleans the session's uploaded files of that type.
- ``type=sale&mode=query`` -> the orders changed since the last committed export (and not last changed
  by an exchange import, Bitrix's ``UPDATED_1C``), CommerceML in windows-1251
  (``Content-Type: application/xml; charset=windows-1251``). Without ``mode=success`` the same orders
  come again.
- ``type=sale&mode=success`` commits the point the session's last query reached; ``error`` when the
  cookie is not a known session.
- ``mode=file&filename=F`` appends the body. Sandbox extension: with ``&offset=<bytes already sent>``
  a retried identical chunk is recognised and not appended twice (real Bitrix ignores the parameter
  and appends; a client without it must not retry a chunk, but restart with ``init``).
  Old protocol (sale, no ``version`` at init): the file is imported at once.
- ``mode=import&filename=F`` answers ``progress`` ``import_steps`` times (default 2), then applies the
  file and answers ``success\\nИмпорт завершен`` (or ``success\\nИмпорт завершен с ошибками: …``);
  an unreadable file -> ``failure``. Sale: documents are matched on ``Ид`` (the order's XML_ID) — the
  same ``Ид`` again updates, never duplicates; an unknown ``Ид`` with ``ХозОперация`` "Заказ товара"
  creates an order. Applied: items/quantities/prices (``ORDER_DELIVERY`` line = delivery price),
  comment, ``Статус заказа`` (``[N] …``, ``N`` or the name), ``Заказ оплачен``, ``Сумма оплаты``,
  ``Дата оплаты``, ``Отменен``, ``Причина отмены``, ``Номер по 1С``, ``Дата по 1С``, ``Проведен``,
  ``Номер отгрузки``, ``Адрес доставки``; counterparties (in the document or root ``Контрагенты``) update
  the buyer's requisites, matched by Ид, then ИНН+КПП, then e-mail. Catalog: ``import.xml`` /
  ``offers.xml`` update the products (name, SKU, price, stock). Uploads are read by the sandbox's own
  parser (``cml_in``, lxml directly), never by syncd's CommerceML reader: the shop checks syncd's
  writer, so the two share no code. A document or counterparty a rejection matches (``/rejections``)
  is not applied; the import answers ``success\nИмпорт завершен с ошибками: Документ <Ид>: <message>``.
- ``type=sale&mode=info`` -> XML of statuses, pay systems, delivery services;
  ``type=catalog&mode=deactivate&timestamp=…`` and ``mode=complete`` -> ``success``.

Other sites (``/_sandbox/peer``, `state.Peer`): the same shop can behave like other CommerceML
implementations, one knob per habit — ``session`` (``bitrix``: cookie in the body and Set-Cookie plus
``sessid``; ``body``: body only; ``cookie``: Set-Cookie only, the body just ``success``; ``basic``: no
session, HTTP Basic on every request; ``basic-cookie``: a cookie is handed out but only Basic is
honoured), ``init_minimal`` (init answers ``zip=``/``file_limit=`` only, sessid never checked),
``query_content_type`` / ``export_encoding`` / ``schema_version`` / ``xmlns`` (how the export is labelled
and written), ``address`` (``bitrix`` | ``plain`` ``<Адрес>`` | ``beside``: directly under
``<Контрагенты>``), ``company_inn`` (``comment``: no ИНН/КПП elements, the ИНН in an XML comment),
``missing_modes`` (answered HTTP 404), ``file_writes`` (``overwrite``: each ``mode=file`` POST replaces
the file, as django-cml2 does), ``export_prefix`` (a PHP warning before the XML: the export cannot be
read at all). With ``zip`` on (``PATCH /_sandbox/settings``) an uploaded zip is unpacked at ``import``
(one ``progress``), as Bitrix does.

Export extras (not in Bitrix, documented as sandbox choices): requisite ``Сумма оплаты`` (paid so far,
for partial payments), ``Дата изменения``; statuses N/P/G/S/D/F/C (names in ``state.STATUSES``).

Control API (JSON; what customers and the admin do in the browser, plus faults)::

    GET    /_sandbox/state                      the whole order book, users, products, export point, clock,
                                                rejections
    POST   /_sandbox/reset                      empty shop (settings, faults, rejections and the clock kept)
    POST   /_sandbox/seed            {"n", "seed"?}   seed_demo(): products, buyers, n orders
    GET    /_sandbox/orders                     orders
    POST   /_sandbox/orders                     place an order: {"user_id" | "user": {kind: person|company,
                                                last_name, first_name, middle_name, email, phone, address |
                                                company_name, full_name, inn, kpp, ogrn, legal_address,
                                                contact_person, bank_accounts: [{account, bik, corr_account,
                                                bank_name}]}, "items": [{"product_id", "quantity", "price"?,
                                                "name"?, "discount"?}], "delivery"?, "delivery_price"?,
                                                "delivery_address"?, "comment"?, "pay_system"?,
                                                "created"?, "number"?, "xml_id"?, "status"?}
                                                `created` (ISO date or date-time, shop time MSK when it has no
                                                offset) places a past order: its status and change dates are
                                                that time too; `number` its Номер (unique, default its id; 409
                                                when taken), `xml_id` its Ид (default its id), `status` where
                                                it stands (N P G S D F C). A buyer given as "user" is the
                                                registered user with that e-mail or phone (any spelling), else
                                                a new one. A bad date or status is a 400 and places nothing.
    GET    /_sandbox/orders/<id>                one order (with updated_at, status_changed);
    GET    /_sandbox/orders/<id>/xml            the order as exported
    PATCH  /_sandbox/orders/<id>                admin edit: status, items, comment, canceled, cancel_reason,
                                                delivery_price, delivery_address
    POST   /_sandbox/orders/<id>/pay {"amount"?}     pay fully (no amount) or partly
    POST   /_sandbox/orders/<id>/status {"status"}   change status (N P G S D F C)
    PATCH  /_sandbox/orders/<id>/dates {"created"?, "updated_at"?, "status_changed"?, "paid_at"?}
                                                back-date an order (ISO; null clears all but created): a data
                                                fix, not a change the shop exports again
    POST   /_sandbox/orders/<id>/break {"what": "date"|"sum"|"byte"}   export this order malformed (plugin
                                                bug; "byte": a vertical tab, which XML forbids, in the comment)
    GET    /_sandbox/users | POST /_sandbox/users    buyers; register one
    GET    /_sandbox/users/<id> | PATCH /_sandbox/users/<id>   the user edits profile / requisites
    GET    /_sandbox/products | POST /_sandbox/products {"xml_id", "name", "price", "sku"?}
    GET|PATCH /_sandbox/faults                  latency, error_rate (503 HTML), failure_rate (`failure`),
                                                drop_rate (connection dropped), fail_next, failure_next,
                                                drop_next, modes (limit to these modes), seed
    GET|PATCH /_sandbox/settings                login, password, file_limit, import_steps, zip
    GET|PATCH /_sandbox/peer                    how this site differs from Bitrix (see "Other sites")
    GET|PATCH /_sandbox/clock                   {"advance": s} | {"offset": s} | {"now": ISO} -> {"now", "offset"}:
                                                the shop's clock (new orders' dates, status and payment dates,
                                                Дата изменения, the export's ДатаФормирования); sessions keep
                                                real time
    GET    /_sandbox/rejections                 the refused imports with their hit counts
    POST   /_sandbox/rejections                 {"kind"?: order|user|company|counterparty|any (default order),
                                                "number"?, "xml_id"?, "order_id"?, "inn"?, "email"?,
                                                "requisites"?: {"Статус заказа": "[F] Выполнен"}, "message"?,
                                                "times"?: N} -> refuse every imported document / counterparty
                                                matching all the given keys (number: the document's Номер or
                                                the number of the order its Ид names) until cleared, or the next
                                                N of them; nothing of it is applied, the rest of the file is
    DELETE /_sandbox/rejections[/<id>]          clear one or all (the "fix" before a replay)
    GET    /_sandbox/log[?since=n]              exchange request log: n, ts, type, mode, filename, http,
                                                answer (first line), cookie_ok, sessid_sent, exported, fault
    DELETE /_sandbox/log
    GET    /_sandbox/imports                    files imported: created/updated/refused Ид, counterparties
                                                (user ids), errors
"""

from __future__ import annotations

from typing import Any

from syncd.sandbox.server import ServerHandle, serve_in_thread
from syncd.sandbox.shop.app import EXCHANGE_PATH, create_app
from syncd.sandbox.shop.seed import seed_demo
from syncd.sandbox.shop.state import STATUSES, Order, ShopError, ShopState, User

__all__ = [
    "EXCHANGE_PATH",
    "STATUSES",
    "Order",
    "ShopError",
    "ShopState",
    "User",
    "create_app",
    "seed_demo",
    "start",
]


def start(host: str = "127.0.0.1", port: int = 0, *, state: ShopState | None = None, seed: int | bool = 0,
          log_level: str = "warning", **opts: Any) -> ServerHandle:
    """Serve a sandbox shop in a daemon thread.

    `opts` go to `ShopState` (login, password, file_limit, import_steps, rng_seed). ``handle.extra`` has
    ``state``, ``app``, ``exchange_url``, ``login`` and ``password``.
    """
    if state is None:
        state = ShopState(**opts)
        if seed:
            seed_demo(state, n=10 if seed is True else int(seed))
    app = create_app(state)
    handle = serve_in_thread(app, host, port, log_level=log_level)
    handle.extra.update(state=state, app=app, exchange_url=handle.url + EXCHANGE_PATH, login=state.login,
                        password=state.password)
    return handle
