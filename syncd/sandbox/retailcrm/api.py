"""The API v5 methods: routing table, parameters, filters, pagination and the answers' shapes."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from syncd.sandbox.retailcrm import entities as E
from syncd.sandbox.retailcrm import telephony as T
from syncd.sandbox.retailcrm.state import REF_KINDS, Actor, ApiError, ApiKey, Sandbox

Row = dict[str, Any]
Answer = tuple[int, dict[str, Any]]
Match = Callable[[Sandbox, Row, Any], bool]
NOT_FOUND = "Not found"


@dataclass
class Ctx:
    sb: Sandbox
    key: ApiKey
    params: dict[str, Any]
    ident: str = ""

    @property
    def actor(self) -> Actor:
        return Actor("api", api_key=self.key.key)

    def sites(self) -> list[str]:
        """The sites this call may see: the key's, narrowed by `site=` when given."""
        mine, site = self.sb.site_codes(self.key), self.params.get("site")
        if site in (None, ""):
            return mine
        if site not in self.sb.ref("sites"):
            raise ApiError(400, f'Site with code "{site}" not found.')
        if site not in mine:
            raise ApiError(403, "Access denied.")
        return [str(site)]

    def write_site(self) -> str:
        """`site` may be left out only when the key reaches a single site."""
        sites = self.sites()
        if len(sites) != 1:
            raise ApiError(400, "Parameter 'site' is missing")
        return sites[0]

    def entity(self, name: str) -> Row:
        """A JSON-encoded form field (order=..., customer=...), as every write method takes them."""
        raw = self.params.get(name)
        if raw in (None, ""):
            raise ApiError(400, f"Parameter '{name}' is missing")
        try:
            value = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise ApiError(400, E.ENTITY_INVALID, {name: "This value should be a JSON object."})
        return value

    def find(self, rows: dict[int, Row]) -> Row:
        """The entity named in the path, by externalId (default) or id, among the visible sites."""
        by, sites = self.params.get("by") or "externalId", self.sites()
        if by not in ("externalId", "id"):
            raise ApiError(400, f"Value '{by}' of parameter 'by' is not valid")
        for r in rows.values():
            if r["site"] in sites and str(r["id"] if by == "id" else r.get("externalId")) == self.ident:
                return r
        raise ApiError(404, NOT_FOUND)


# ---- lists ---------------------------------------------------------------------------------------
def as_list(v: Any) -> list[str]:
    if isinstance(v, dict):                        # ids[0]=1&ids[1]=2
        return [str(x) for x in v.values()]
    return [str(x) for x in v] if isinstance(v, list) else [] if v is None else [str(v)]


def _in(get: Callable[[Row], Any]) -> Match:
    return lambda sb, r, v: str(get(r)) in as_list(v)


def _eq(get: Callable[[Row], Any]) -> Match:
    return lambda sb, r, v: str(get(r)) == str(v)


def _flag(key: str) -> Match:
    return lambda sb, r, v: r[key] == (str(v).lower() in ("1", "true"))


def _since(get: Callable[[Row], Any], end: bool = False) -> Match:
    """Date filters take "Y-m-d" (a whole day) or "Y-m-d H:i:s"."""
    def day(v: Any) -> str:
        return str(v) if len(str(v)) > 10 else f"{v} {'23:59:59' if end else '00:00:00'}"
    return (lambda sb, r, v: get(r) <= day(v)) if end else (lambda sb, r, v: get(r) >= day(v))


def _text(r: Row) -> str:
    words = [r.get(k) or "" for k in ("firstName", "lastName", "patronymic", "email", "nickName", "phone")]
    return " ".join(words + [p["number"] for p in r.get("phones", [])]).lower()


def _custom(sb: Sandbox, r: Row, want: Any) -> bool:
    have = r.get("customFields") or {}
    return not isinstance(want, dict) or all(str(have.get(k)) == str(v) for k, v in want.items())


def _cust(sb: Sandbox, o: Row) -> Row:
    return sb.customers.get((o.get("customer") or {}).get("id", 0)) or {}


ORDER_FILTERS: dict[str, Match] = {
    "ids": _in(lambda o: o["id"]), "externalIds": _in(lambda o: o.get("externalId")),
    "numbers": _in(lambda o: o["number"]), "email": _eq(lambda o: o.get("email")),
    "customerId": lambda sb, o, v: str(_cust(sb, o).get("id")) == str(v),
    "customerExternalId": lambda sb, o, v: str(_cust(sb, o).get("externalId")) == str(v),
    "customer": lambda sb, o, v: str(v).lower() in _text(o) + " " + _text(_cust(sb, o)),
    "extendedStatus": lambda sb, o, v: bool({o["status"], sb.ref("statuses")[o["status"]]["group"]}
                                            & set(as_list(v))),
    "sites": _in(lambda o: o["site"]), "managers": _in(lambda o: o.get("managerId")),
    "orderMethods": _in(lambda o: o.get("orderMethod")),
    "createdAtFrom": _since(lambda o: o["createdAt"]), "createdAtTo": _since(lambda o: o["createdAt"], True),
    "statusUpdatedAtFrom": _since(lambda o: o["statusUpdatedAt"]),
    "statusUpdatedAtTo": _since(lambda o: o["statusUpdatedAt"], True),
    "customFields": _custom,
}
CUSTOMER_FILTERS: dict[str, Match] = {
    "ids": _in(lambda c: c["id"]), "externalIds": _in(lambda c: c.get("externalId")),
    "email": _eq(lambda c: c.get("email")), "name": lambda sb, c, v: str(v).lower() in _text(c),
    "sites": _in(lambda c: c["site"]), "managers": _in(lambda c: c.get("managerId")),
    "dateFrom": _since(lambda c: c["createdAt"]), "dateTo": _since(lambda c: c["createdAt"], True),
    "customFields": _custom,
}
CORPORATE_FILTERS: dict[str, Match] = {
    **CUSTOMER_FILTERS,
    "nickName": lambda sb, c, v: any(n.lower() in c.get("nickName", "").lower() for n in as_list(v)),
    "contragentInn": lambda sb, c, v: any(x["contragent"].get("INN") == str(v)
                                          for x in c.get("_companies", [])),
}
USER_FILTERS: dict[str, Match] = {
    "ids": _in(lambda u: u["id"]), "email": _eq(lambda u: u["email"]),
    "active": _flag("active"), "isManager": _flag("isManager"),
}


def select(ctx: Ctx, rows: Any, table: dict[str, Match], sites: bool = True) -> list[Row]:
    """filter[...] applied (the official client sends ``filter=None`` when there is none). A filter the
    sandbox does not implement is refused: a connector never takes an unfiltered list for a filtered one."""
    f = ctx.params.get("filter")
    f = {k: v for k, v in f.items() if v not in ("", None, [])} if isinstance(f, dict) else {}
    bad = sorted(k for k in f if k not in table)
    if bad:
        raise ApiError(400, "Errors in the filter",
                       {f"filter[{k}]": "This filter is not supported." for k in bad})
    visible = ctx.sites() if sites else []
    return [r for r in rows
            if (not sites or r["site"] in visible) and all(table[k](ctx.sb, r, v) for k, v in f.items())]


def paginate(ctx: Ctx, rows: list[Any]) -> tuple[list[Any], dict[str, int]]:
    try:
        limit, page = int(ctx.params.get("limit") or 20), int(ctx.params.get("page") or 1)
    except ValueError:
        raise ApiError(400, E.ENTITY_INVALID, {"limit": "This value should be of type int."}) from None
    if limit not in (20, 50, 100):
        raise ApiError(400, E.ENTITY_INVALID, {"limit": "The value you selected is not a valid choice."})
    if page < 1:
        raise ApiError(400, E.ENTITY_INVALID, {"page": "This value should be greater than or equal to 1."})
    pagination = {"limit": limit, "totalCount": len(rows), "currentPage": page,
                  "totalPageCount": math.ceil(len(rows) / limit)}
    return rows[(page - 1) * limit: page * limit], pagination


def listing(ctx: Ctx, name: str, rows: list[Row], render: Callable[[Row], Row]) -> Answer:
    page, pagination = paginate(ctx, rows)
    return 200, {"success": True, "pagination": pagination, name: [render(r) for r in page]}


def newest(rows: Any) -> list[Row]:
    return sorted(rows, key=lambda r: -r["id"])


# ---- methods -------------------------------------------------------------------------------------
def api_versions(ctx: Ctx) -> Answer:
    return 200, {"success": True, "versions": ["3.0", "4.0", "5.0"]}


def credentials(ctx: Ctx) -> Answer:
    paths = sorted({p.pattern.strip("^$").replace(_ID, "{id}") for _, p, _ in ROUTES})
    return 200, {"success": True, "scopes": ["order_read", "order_write", "customer_read", "customer_write",
                                             "task_read", "task_write", "custom_fields_read",
                                             "reference_read", "user_read"], "credentials": paths,
                 "siteAccess": "access_full" if ctx.key.sites is None else "access_selective",
                 "sitesAvailable": ctx.sb.site_codes(ctx.key)}


def reference(kind: str) -> Callable[[Ctx], Answer]:
    def handler(ctx: Ctx) -> Answer:
        codes = ctx.sb.site_codes(ctx.key) if kind == "sites" else None
        return 200, {"success": True, REF_KINDS[kind]: ctx.sb.render_ref(kind, codes)}
    return handler


def users(ctx: Ctx) -> Answer:
    return listing(ctx, "users", select(ctx, ctx.sb.users.values(), USER_FILTERS, sites=False), dict)


def user(ctx: Ctx) -> Answer:
    u = ctx.sb.users.get(int(ctx.ident)) if ctx.ident.isdigit() else None
    if u is None:
        raise ApiError(404, NOT_FOUND)
    return 200, {"success": True, "user": u}


def orders(ctx: Ctx) -> Answer:
    rows = newest(select(ctx, ctx.sb.orders.values(), ORDER_FILTERS))
    return listing(ctx, "orders", rows, lambda o: E.render_order(ctx.sb, o))


def order_get(ctx: Ctx) -> Answer:
    return 200, {"success": True, "order": E.render_order(ctx.sb, ctx.find(ctx.sb.orders))}


def order_create(ctx: Ctx) -> Answer:
    o = E.create_order(ctx.sb, ctx.actor, ctx.entity("order"), ctx.write_site())
    return 201, {"success": True, "id": o["id"], "order": E.render_order(ctx.sb, o)}


def order_edit(ctx: Ctx) -> Answer:
    data = ctx.entity("order")
    o = E.edit_order(ctx.sb, ctx.actor, ctx.find(ctx.sb.orders), data)
    return 200, {"success": True, "id": o["id"], "order": E.render_order(ctx.sb, o)}


def order_statuses(ctx: Ctx) -> Answer:
    ids, ext, sites = as_list(ctx.params.get("ids")), as_list(ctx.params.get("externalIds")), ctx.sites()
    rows = [{"id": o["id"], **{k: o[k] for k in ("externalId",) if k in o}, "status": o["status"],
             "group": ctx.sb.ref("statuses")[o["status"]]["group"]} for o in ctx.sb.orders.values()
            if o["site"] in sites and (str(o["id"]) in ids or o.get("externalId") in ext)]
    return 200, {"success": True, "orders": rows}


def history(entity: str) -> Callable[[Ctx], Answer]:
    """orders/history, customers/history, customers-corporate/history: oldest first, `sinceId` exclusive."""
    key, ref = ("order", "order") if entity == "order" else ("customer", "customer")
    table: dict[str, Match] = {
        "sinceId": lambda sb, e, v: e["id"] > int(v),
        "startDate": _since(lambda e: e["createdAt"]), "endDate": _since(lambda e: e["createdAt"], True),
        f"{ref}Id": _eq(lambda e: e[key]["id"]), f"{ref}ExternalId": _eq(lambda e: e[key].get("externalId"))}

    def handler(ctx: Ctx) -> Answer:
        mine = ctx.sb.site_codes(ctx.key)
        rows = [e for e in select(ctx, ctx.sb.history[entity], table, sites=False) if e[key]["site"] in mine]
        page, pagination = paginate(ctx, rows)
        return 200, {"success": True, "generatedAt": ctx.sb.now_s(),
                     "history": [E.render_history(e, ctx.key.key) for e in page], "pagination": pagination}
    return handler


def payment_create(ctx: Ctx) -> Answer:
    p = E.create_payment(ctx.sb, ctx.actor, ctx.entity("payment"), ctx.sites())
    return 201, {"success": True, "id": p["id"]}


def payment_edit(ctx: Ctx) -> Answer:
    data, sites = ctx.entity("payment"), ctx.sites()
    by = "id" if ctx.params.get("by") == "id" else "externalId"
    for o in ctx.sb.orders.values():
        for p in o["payments"].values():
            if o["site"] in sites and str(p.get(by)) == ctx.ident:
                E.edit_payment(ctx.sb, ctx.actor, o, p, data)
                return 200, {"success": True, "id": p["id"]}
    raise ApiError(404, NOT_FOUND)


def customer_routes(corporate: bool) -> list[tuple[str, str, Callable[[Ctx], Answer]]]:
    """customers/... and customers-corporate/...: the same methods over two kinds of customer."""
    name, param = ("customersCorporate", "customerCorporate") if corporate else ("customers", "customer")

    def rows(ctx: Ctx) -> dict[int, Row]:
        return ctx.sb.corporate if corporate else ctx.sb.customers

    def listed(ctx: Ctx) -> Answer:
        found = newest(select(ctx, rows(ctx).values(), CORPORATE_FILTERS if corporate else CUSTOMER_FILTERS))
        return listing(ctx, name, found, lambda c: E.render_customer(ctx.sb, c))

    def get(ctx: Ctx) -> Answer:
        return 200, {"success": True, param: E.render_customer(ctx.sb, ctx.find(rows(ctx)))}

    def create(ctx: Ctx) -> Answer:
        c = E.create_customer(ctx.sb, ctx.actor, ctx.entity(param), ctx.write_site(), corporate=corporate)
        return 201, {"success": True, "id": c["id"]}

    def edit(ctx: Ctx) -> Answer:
        # The API reads `customerCorporate`; retailcrm 5.3.0's customer_corporate_edit sends
        # `customersCorporate` and so gets "Parameter 'customerCorporate' is missing", as it would live.
        data = ctx.entity(param)
        c = E.edit_customer(ctx.sb, ctx.actor, ctx.find(rows(ctx)), data)
        return 200, {"success": True, "id": c["id"]}

    base = "/api/v5/customers-corporate" if corporate else "/api/v5/customers"
    return [("GET", base, listed), ("POST", f"{base}/create", create),
            ("GET", f"{base}/history", history("customer_corporate" if corporate else "customer")),
            ("POST", f"{base}/{_ID}/edit", edit), ("GET", f"{base}/{_ID}", get)]


def companies(ctx: Ctx) -> Answer:
    c = ctx.find(ctx.sb.corporate)
    page, pagination = paginate(ctx, c.get("_companies") or [])
    return 200, {"success": True, "companies": [E.render_company(c, x) for x in page],
                 "pagination": pagination}


def _task_customer(sb: Sandbox, t: Row) -> Row:
    return sb.customers.get((t.get("customer") or {}).get("id", 0)) or {}


TASK_FILTERS: dict[str, Match] = {
    "performers": _in(lambda t: t.get("performer")), "creators": _in(lambda t: t.get("creator")),
    "order": lambda sb, t, v: str((t.get("order") or {}).get("number")) == str(v),     # the order's number
    "customer": lambda sb, t, v: str(v).lower() in _text(_task_customer(sb, t)),
    "status": lambda sb, t, v: t["complete"] == (str(v) == "completed") if str(v) in ("completed", "performing")
    else _bad_status(v),
    "text": lambda sb, t, v: str(v).lower() in (t.get("text") or "").lower(),
    "dateFrom": _since(lambda t: t.get("datetime") or ""), "dateTo": _since(lambda t: t.get("datetime") or "", True),
}


def _bad_status(v: Any) -> bool:
    raise ApiError(400, "Errors in the filter", {"filter[status]": "The value you selected is not a valid choice."})


def tasks(ctx: Ctx) -> Answer:
    rows = newest(select(ctx, ctx.sb.tasks.values(), TASK_FILTERS, sites=False))
    return listing(ctx, "tasks", rows, E.render_task)


def _task(ctx: Ctx) -> Row:
    t = ctx.sb.tasks.get(int(ctx.ident)) if ctx.ident.isdigit() else None
    if t is None:
        raise ApiError(404, NOT_FOUND)
    return t


def _task_site(ctx: Ctx) -> str | None:
    """`site` only resolves an order's or customer's externalId; it is checked like any other site."""
    return ctx.sites()[0] if ctx.params.get("site") not in (None, "") else None


def task_get(ctx: Ctx) -> Answer:
    return 200, {"success": True, "task": E.render_task(_task(ctx))}


def task_create(ctx: Ctx) -> Answer:
    t = E.create_task(ctx.sb, ctx.actor, ctx.entity("task"), _task_site(ctx))
    return 201, {"success": True, "id": t["id"]}


def task_edit(ctx: Ctx) -> Answer:
    data = ctx.entity("task")
    t = E.edit_task(ctx.sb, _task(ctx), data, _task_site(ctx))
    return 200, {"success": True, "id": t["id"]}


CUSTOM_FIELD_FILTERS: dict[str, Match] = {
    "entity": _eq(lambda f: f["entity"]), "code": _eq(lambda f: f["code"]), "type": _eq(lambda f: f["type"]),
    "name": lambda sb, f, v: str(v).lower() in f["name"].lower(),
}


def custom_fields(ctx: Ctx) -> Answer:
    """GET custom-fields: every defined field, {code, name, entity, type, ...}, by entity then code."""
    rows = [{"name": f["name"], "code": code, "required": False, "inFilter": True, "inList": True,
             "inGroupActions": False, "type": f["type"], "entity": entity, "ordering": 50,
             "displayArea": "customer" if entity != "order" else "main", "viewMode": "editable"}
            for entity, defined in ctx.sb.custom_fields.items() for code, f in defined.items()]
    return listing(ctx, "customFields", select(ctx, rows, CUSTOM_FIELD_FILTERS, sites=False), dict)


def module_edit(ctx: Ctx) -> Answer:
    return T.module_edit(ctx.sb, ctx.ident, ctx.entity("integrationModule"))


def module_get(ctx: Ctx) -> Answer:
    return 200, {"success": True, "integrationModule": T.module_get(ctx.sb, ctx.ident)}


def calls_upload(ctx: Ctx) -> Answer:
    return 200, T.upload(ctx.sb, ctx.params.get("calls"), ctx.sites())


# ---- routing -------------------------------------------------------------------------------------
_ID = "(?P<ident>[^/]+)"
_R: list[tuple[str, str, Callable[[Ctx], Answer]]] = [
    ("GET", "/api/api-versions", api_versions), ("GET", "/api/credentials", credentials),
    ("GET", "/api/v5/orders", orders), ("POST", "/api/v5/orders/create", order_create),
    ("GET", "/api/v5/orders/history", history("order")), ("GET", "/api/v5/orders/statuses", order_statuses),
    ("POST", "/api/v5/orders/payments/create", payment_create),
    ("POST", f"/api/v5/orders/payments/{_ID}/edit", payment_edit),
    ("POST", f"/api/v5/orders/{_ID}/edit", order_edit), ("GET", f"/api/v5/orders/{_ID}", order_get),
    *customer_routes(False), ("GET", f"/api/v5/customers-corporate/{_ID}/companies", companies),
    *customer_routes(True),
    *[("GET", f"/api/v5/reference/{k}", reference(k)) for k in REF_KINDS],
    ("GET", "/api/v5/users", users), ("GET", f"/api/v5/users/{_ID}", user),
    ("GET", "/api/v5/tasks", tasks), ("POST", "/api/v5/tasks/create", task_create),
    ("POST", f"/api/v5/tasks/{_ID}/edit", task_edit), ("GET", f"/api/v5/tasks/{_ID}", task_get),
    ("GET", "/api/v5/custom-fields", custom_fields),
    ("POST", f"/api/v5/integration-modules/{_ID}/edit", module_edit),
    ("GET", f"/api/v5/integration-modules/{_ID}", module_get),
    ("POST", "/api/v5/telephony/calls/upload", calls_upload),
]
ROUTES = [(m, re.compile(f"^{p}$"), h) for m, p, h in _R]


def route(method: str, path: str) -> tuple[Callable[[Ctx], Answer], str]:
    """The handler and its path id. Fixed paths come first, so GET orders/create is 405 as on the real
    API rather than a lookup of the order "create"."""
    for m, pat, h in ROUTES:
        match = pat.match(path)
        if match is not None:
            if m != method:
                raise ApiError(405, "Method Not Allowed")
            return h, match.groupdict().get("ident") or ""
    raise ApiError(404, "API method not found")
