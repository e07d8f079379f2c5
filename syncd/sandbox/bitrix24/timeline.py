"""`crm.timeline.comment.*` as the portal answers them (b24restdocs `api-reference/crm/timeline/comments/`).

A comment: `ID`, `ENTITY_ID`, `ENTITY_TYPE` (deal, lead, contact, company), `CREATED`, `AUTHOR_ID`,
`COMMENT`, `FILES` (always `{}` here). `add` fires ONCRMTIMELINECOMMENTADD.

`list` needs `filter` with `ENTITY_ID` and `ENTITY_TYPE` — those are the only filter fields the
method has (nothing else filters, as on the real portal: a comment cannot be found by its text on
the server); `order` by `ID`, `CREATED` or `AUTHOR_ID`; `select` (empty or `*` = all); 50 per page
with `total`/`next`. Sandbox choice where the docs are silent: without `order`, oldest first (ID).

Errors as the docs show them: `add` on a missing owner 400 `NOT_FOUND` "Not found.", empty comment
400 `INVALID_ARG_VALUE`, missing owner fields 400 `100`; `get`/`update`/`delete` of a missing comment
400 with an empty error code and "Not found."; `list` without its owner 400 with an empty code.
"""

from __future__ import annotations

from typing import Any

from syncd.sandbox.bitrix24.common import Ctx, Page, arg, paginate
from syncd.sandbox.bitrix24.portal import BxError

OWNERS = ("deal", "lead", "contact", "company")
FIELDS = ("ID", "CREATED", "ENTITY_ID", "ENTITY_TYPE", "AUTHOR_ID", "COMMENT", "FILES")
ORDER = {"ID": "integer", "CREATED": "datetime", "AUTHOR_ID": "integer"}


def _owner(ctx: Ctx, f: dict[str, Any], *, required_code: str = "100") -> tuple[str, int]:
    etype = str(f.get("ENTITY_TYPE") or "").lower()
    try:
        eid = int(f.get("ENTITY_ID"))
    except (TypeError, ValueError):
        eid = 0
    if not etype or eid <= 0:
        raise BxError(required_code, "Required fields ENTITY_ID and ENTITY_TYPE are not set.", 400)
    if etype not in OWNERS:
        raise BxError("NOT_FOUND", "Not found.", 400)
    return etype, eid


def _find(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    v = arg(params, "id")
    try:
        cid = int(v)
    except (TypeError, ValueError):
        raise BxError("", "ID is not defined or invalid.", 400)
    for c in ctx.portal.comments:
        if int(c["ID"]) == cid:
            return c
    raise BxError("", "Not found.", 400)


def _out(c: dict[str, Any], select: Any = None) -> dict[str, Any]:
    names = list(select.values()) if isinstance(select, dict) else list(select or [])
    names = [str(n).upper() for n in names]
    if not names or "*" in names:
        names = list(FIELDS)
    out = {k: (dict(c["FILES"]) if k == "FILES" else c.get(k)) for k in FIELDS if k in names}
    out.setdefault("ID", c["ID"])
    return out


def add(ctx: Ctx, params: dict[str, Any]) -> int:
    p = ctx.portal
    f = {str(k).upper(): v for k, v in (arg(params, "fields") or {}).items()}
    etype, eid = _owner(ctx, f)
    text = str(f.get("COMMENT") or "")
    if not text.strip():
        raise BxError("INVALID_ARG_VALUE", "Empty comment", 400)
    author = f.get("AUTHOR_ID") or ctx.user_id
    with p.lock:
        if eid not in p.tables[etype]:
            raise BxError("NOT_FOUND", "Not found.", 400)
        cid = p.next_id("comment")
        p.comments.append({"ID": str(cid), "ENTITY_ID": str(eid), "ENTITY_TYPE": etype, "CREATED": p.now_bx(),
                           "AUTHOR_ID": str(author), "COMMENT": text, "FILES": {}})
    p.fire("ONCRMTIMELINECOMMENTADD", cid)
    return cid


def get(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.portal.lock:
        return _out(_find(ctx, params))


def update(ctx: Ctx, params: dict[str, Any]) -> int:
    p = ctx.portal
    f = {str(k).upper(): v for k, v in (arg(params, "fields") or {}).items()}
    with p.lock:
        c = _find(ctx, params)
        if "COMMENT" in f:
            if not str(f["COMMENT"] or "").strip():
                raise BxError("INVALID_ARG_VALUE", "Empty comment", 400)
            c["COMMENT"] = str(f["COMMENT"])
        cid = int(c["ID"])
    p.fire("ONCRMTIMELINECOMMENTUPDATE", cid)
    return cid


def delete(ctx: Ctx, params: dict[str, Any]) -> None:
    p = ctx.portal
    with p.lock:
        c = _find(ctx, params)
        p.comments.remove(c)
    p.fire("ONCRMTIMELINECOMMENTDELETE", c["ID"])


def fields() -> dict[str, Any]:
    def d(t: str, ro: bool = False, imm: bool = False, req: bool = False, multi: bool = False) -> dict[str, Any]:
        return {"type": t, "isRequired": req, "isReadOnly": ro, "isImmutable": imm, "isMultiple": multi,
                "isDynamic": False}
    return {"ID": d("integer", ro=True), "CREATED": d("datetime", ro=True),
            "ENTITY_ID": d("integer", imm=True, req=True), "ENTITY_TYPE": d("string", imm=True, req=True),
            "AUTHOR_ID": d("user", imm=True), "COMMENT": d("string"), "FILES": d("attached_diskfile", multi=True)}


def list_(ctx: Ctx, params: dict[str, Any]) -> Page:
    p = ctx.portal
    flt = {str(k).upper(): v for k, v in (arg(params, "filter") or {}).items()}
    try:
        etype, eid = _owner(ctx, flt, required_code="")
    except BxError as e:
        raise BxError("", "Access denied." if e.code == "NOT_FOUND" else e.description, 400)
    with p.lock:
        rows = [c for c in p.comments if c["ENTITY_TYPE"] == etype and int(c["ENTITY_ID"]) == eid]
    order = {str(k).upper(): str(v).upper() for k, v in (arg(params, "order") or {}).items()
             if str(k).upper() in ORDER} or {"ID": "ASC"}
    for name, direction in reversed(list(order.items())):
        if name == "CREATED":
            rows = sorted(rows, key=lambda c: (c["CREATED"], int(c["ID"])), reverse=direction == "DESC")
        else:
            rows = sorted(rows, key=lambda c, n=name: int(c[n]), reverse=direction == "DESC")
    page = paginate(rows, arg(params, "start"))
    page.rows = [_out(c, arg(params, "select")) for c in page.rows]
    return page
